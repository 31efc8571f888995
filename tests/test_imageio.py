"""Image decoding: every mode becomes RGB uint8; broken files raise ImageReadError."""
from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from bclib.data import imageio
from bclib.data.imageio import ImageReadError, fit_to_square, is_image_file, read_image


def png_bytes(image: Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def test_rgb_round_trip(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(array).save(path)
    decoded = read_image(path)
    assert decoded.dtype == np.uint8 and decoded.shape == (7, 9, 3)
    np.testing.assert_array_equal(decoded, array)
    np.testing.assert_array_equal(read_image(path.read_bytes()), array)


def test_grayscale_becomes_three_equal_channels():
    gray = Image.fromarray(np.arange(50, dtype=np.uint8).reshape(5, 10), mode="L")
    decoded = read_image(png_bytes(gray))
    assert decoded.shape == (5, 10, 3)
    assert (decoded[..., 0] == decoded[..., 1]).all() and (decoded[..., 1] == decoded[..., 2]).all()
    np.testing.assert_array_equal(decoded[..., 0], np.asarray(gray))


def test_rgba_is_composited_on_white():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half transparent
    decoded = read_image(png_bytes(Image.fromarray(rgba, mode="RGBA")))
    assert decoded.shape == (4, 4, 3)
    np.testing.assert_array_equal(decoded[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(decoded[3, 3], [255, 255, 255])


def test_sixteen_bit_and_palette_and_cmyk():
    sixteen = Image.fromarray(np.array([[0, 65535], [32896, 1000]], dtype=np.uint16))
    decoded = read_image(png_bytes(sixteen))
    assert decoded.dtype == np.uint8 and decoded[0, 1, 0] == 255 and decoded[0, 0, 0] == 0
    palette = Image.fromarray(np.random.default_rng(1).integers(0, 256, (6, 6, 3), dtype=np.uint8)).convert("P")
    assert read_image(png_bytes(palette)).shape == (6, 6, 3)
    cmyk = Image.new("CMYK", (3, 2), (0, 255, 255, 0))
    decoded = read_image(png_bytes(cmyk, "JPEG"))
    assert decoded.shape == (2, 3, 3) and decoded[..., 0].mean() > 200 and decoded[..., 1].mean() < 60


def test_broken_inputs_raise_clear_errors(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        read_image(empty)
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "missing.png")
    text = tmp_path / "text.png"
    text.write_bytes(b"hello, not an image")
    with pytest.raises(ImageReadError, match="not an image"):
        read_image(text)
    whole = png_bytes(Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 40, 3), dtype=np.uint8)))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ImageReadError, match="truncated or corrupt"):
        read_image(truncated)
    assert issubclass(ImageReadError, ValueError)


def test_max_side_and_the_pixel_cap_as_documented(tmp_path, monkeypatch):
    data = png_bytes(Image.new("RGB", (120, 60), (10, 20, 30)))
    decoded = read_image(data, max_side=30)
    assert max(decoded.shape[:2]) == 30 and decoded.shape[1] == 2 * decoded.shape[0]
    cap = imageio.MAX_PIXELS  # the documented constant itself: a one-row image exactly at it decodes
    Image.new("L", (cap, 1), 90).save(tmp_path / "at_cap.png")
    assert read_image(tmp_path / "at_cap.png").shape == (1, imageio.MAX_SIDE, 3)
    Image.new("L", (cap + 1, 1), 90).save(tmp_path / "over.png")
    with pytest.raises(ImageReadError) as refused:
        read_image(tmp_path / "over.png")
    message = str(refused.value)  # names the file, its size and the cap
    assert str(tmp_path / "over.png") in message and f"{cap + 1}x1" in message and f"{cap:,}-pixel cap" in message
    monkeypatch.setattr(imageio, "MAX_PIXELS", 100 * 100)  # a JPEG counts at the size it decodes to
    jpeg = png_bytes(Image.new("RGB", (200, 200), (200, 60, 120)), "JPEG")
    assert read_image(jpeg, max_side=100).shape == (100, 100, 3)
    with pytest.raises(ImageReadError, match="200x200 pixels is over"):
        read_image(png_bytes(Image.new("RGB", (200, 200))), max_side=100)


def test_large_images_decode_one_at_a_time_in_bounded_memory(tmp_path):
    """A 10-megapixel RGBA PNG read eight times by four threads: memory grows by one decoding, not four."""
    rgba = np.full((2500, 4000, 4), (230, 200, 220, 255), np.uint8)
    rgba[800:1200, 1000:2000] = (150, 60, 120, 128)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "large.png")
    script = (
        "import resource, sys; from concurrent.futures import ThreadPoolExecutor\n"
        "from bclib.data.imageio import read_image\n"
        "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "before = peak()\n"
        "with ThreadPoolExecutor(4) as pool:\n"
        "    shapes = set(pool.map(lambda _: read_image(sys.argv[1]).shape, range(8)))\n"
        "print(shapes == {(2500, 4000, 3)}, peak() - before)\n"
    )
    completed = subprocess.run([sys.executable, "-c", script, str(tmp_path / "large.png")],
                               capture_output=True, text=True, check=True)
    all_decoded, growth_mb = completed.stdout.split()
    assert all_decoded == "True"
    assert float(growth_mb) < 200, f"peak memory grew by {growth_mb} MB decoding 10-megapixel images"


def test_fit_to_square_pads_small_and_shrinks_large_without_stretching():
    small = np.zeros((30, 20, 3), dtype=np.uint8)
    fitted = fit_to_square(small, 50)
    assert fitted.shape == (50, 50, 3)
    assert (fitted[:30, :20] == 0).all() and (fitted[30:] == 255).all() and (fitted[:, 20:] == 255).all()
    large = np.zeros((100, 50, 3), dtype=np.uint8)
    fitted = fit_to_square(large, 40)
    assert fitted.shape == (40, 40, 3)
    assert (fitted[:, :20] == 0).all() and (fitted[:, 20:] == 255).all()
    same = np.full((16, 16, 3), 7, dtype=np.uint8)
    np.testing.assert_array_equal(fit_to_square(same, 16), same)
    with pytest.raises(ValueError, match="HxWx3"):
        fit_to_square(np.zeros((5, 5), dtype=np.uint8), 8)


def test_is_image_file():
    assert is_image_file("a/b/c.PNG") and is_image_file("x.tif")
    assert not is_image_file("notes.txt") and not is_image_file("._c.png") and not is_image_file(".DS_Store")
