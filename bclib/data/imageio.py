"""Decode one image file (or bytes, or a stored array) into an RGB ``uint8`` array, whatever its mode.

Every conversion a user's files may need happens here, once: grayscale, 16-bit, float,
palette, RGBA (composited on white), CMYK, and a memory bound (:data:`MAX_PIXELS`).
"""
from __future__ import annotations

import io
import math
import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageFile

#: File name endings treated as images when a folder is walked.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".pgm", ".ppm", ".gif", ".webp"})

#: Images with more pixels than this are refused before decoding (a JPEG counts at the size it
#: reduces to while decoding, see MAX_SIDE): decoding one needs up to about 12 bytes per pixel.
MAX_PIXELS = 25_000_000

#: Images with more pixels than this decode one at a time, all on one thread (whose memory is reused),
#: so however many threads call :func:`read_image`, one large image is in memory at once.
LARGE_PIXELS = 1_000_000

#: Images with a longer side than this are downscaled (JPEG while decoding, by up to 8x a side).
MAX_SIDE = 4096

_HIGH_BIT_DEPTH_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}


class ImageReadError(ValueError):
    """An image could not be decoded; the message says why, in words a user understands."""


def is_image_file(path: str | os.PathLike) -> bool:
    """True when the file name ends like an image this package can read (hidden files never do)."""
    name = os.path.basename(path)
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB without losing the visible content."""
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        array = np.asarray(image, dtype=np.float32)  # one working copy, scaled in place
        low, high = float(array.min()), float(array.max())
        if image.mode.startswith("I;16") and low >= 0 and 255 < high <= 65535:
            array /= 257.0
        else:
            array -= low
            array *= 255.0 / (high - low) if high > low else 0.0
        np.clip(np.rint(array, out=array), 0, 255, out=array)
        return Image.fromarray(array.astype(np.uint8), mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, "white")
        canvas.paste(rgba, mask=rgba)
        return canvas
    return image if image.mode == "RGB" else image.convert("RGB")


def _start_large_image_decoder() -> None:
    global _large_image_decoder
    _large_image_decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bclib-large-image")


_start_large_image_decoder()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_start_large_image_decoder)  # a forked child has none of our threads


def _finish(image: Image.Image, max_side: int, transform: Callable | None):
    image.load()
    rgb = _to_rgb(image)
    if rgb is not image:
        image.close()  # the decoded pixels are not needed any more
    if max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    array = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
    del rgb
    return transform(array) if transform else array


def _decode(opened: str | os.PathLike | io.BytesIO, label: str, max_side: int, transform: Callable | None):
    with Image.open(opened) as image:
        width, height = image.size
        longest = max(width, height)
        if longest > max_side:  # JPEG only: decoded at 1/2, 1/4 or 1/8 of its size
            image.draft("RGB", (max(1, width * max_side // longest), max(1, height * max_side // longest)))
        pixels = math.prod(image.size)  # what is decoded
        if pixels > MAX_PIXELS:
            raise ImageReadError(f"{label}: {width}x{height} pixels is over the {MAX_PIXELS:,}-pixel cap "
                                 "(bclib.data.imageio.MAX_PIXELS, bounds memory); crop or downscale it first")
        work = partial(_finish, image, max_side, transform)
        return _large_image_decoder.submit(work).result() if pixels > LARGE_PIXELS else work()


def read_image(source: str | os.PathLike | bytes, max_side: int = MAX_SIDE,
               transform: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Decode ``source`` (a path or raw bytes) into an ``H x W x 3`` RGB ``uint8`` array.

    Raises :class:`ImageReadError` for a missing or empty file, bytes that are not an image, a
    truncated file, or an image over :data:`MAX_PIXELS`. Images whose longer side exceeds
    ``max_side`` are downscaled (aspect kept). ``transform`` (e.g. fitting to a square) runs on the
    decoded array before the next large image decodes, and its result is returned instead.
    """
    if isinstance(source, (bytes, bytearray)):
        label, opened, empty = "<bytes>", io.BytesIO(source), not source
    else:
        label, opened = str(source), source
        if not Path(source).is_file():
            raise ImageReadError(f"{label}: no such file")
        empty = Path(source).stat().st_size == 0
    if empty:
        raise ImageReadError(f"{label}: the file is empty (0 bytes)")
    truncated_setting, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        return _decode(opened, label, max_side, transform)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageReadError(f"{label}: too many pixels (decompression-bomb guard): {error}") from None
    except Image.UnidentifiedImageError:
        raise ImageReadError(f"{label}: not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"{label}: truncated or corrupt image ({error})") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated_setting


def array_to_rgb(array: np.ndarray, label: str) -> np.ndarray:
    """A stored ``H x W``, ``H x W x 1`` or ``H x W x 3`` image array as RGB ``uint8`` (gray replicated)."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3):
        raise ImageReadError(f"{label}: image array has shape {array.shape}, expected HxW, HxWx1 or HxWx3")
    rgb = np.broadcast_to(array, (*array.shape[:2], 3))
    return np.ascontiguousarray(rgb if rgb.dtype == np.uint8 else np.clip(rgb, 0, 255).astype(np.uint8))


def fit_to_square(image: np.ndarray, size: int) -> np.ndarray:
    """Place ``image`` in a ``size x size`` canvas without stretching.

    Smaller images are padded at the bottom and right with white (the slide background); larger
    ones are downscaled with their aspect ratio kept, then padded.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {image.shape}")
    height, width = image.shape[:2]
    if height > size or width > size:
        scale = size / max(height, width)
        new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = np.asarray(Image.fromarray(image).resize(new_size, Image.Resampling.BILINEAR))
        height, width = image.shape[:2]
    if height == size and width == size:
        return image
    canvas = np.full((size, size, 3), 255, dtype=np.uint8)
    canvas[:height, :width] = image
    return canvas
