"""Decode one image file (or bytes) into an RGB ``uint8`` array, whatever its mode.

Every conversion a user's files may need happens here, once: grayscale, 16-bit, float,
palette, RGBA (composited on white), CMYK, and a guard against decompression bombs.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

#: File name endings treated as images when a folder is walked.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".pgm", ".ppm", ".gif", ".webp"})

#: Images with more pixels than this are refused (a decompression bomb guard).
MAX_PIXELS = 200_000_000

#: Images with a longer side than this are downscaled while decoding (memory stays bounded).
MAX_SIDE = 4096


class ImageReadError(ValueError):
    """An image could not be decoded; the message says why, in words a user understands."""


def is_image_file(path: str | os.PathLike) -> bool:
    """True when the file name ends like an image this package can read."""
    name = Path(path).name
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB without losing the visible content."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}:
        array = np.asarray(image, dtype=np.float64)
        low, high = float(np.min(array)), float(np.max(array))
        if mode.startswith("I;16") and low >= 0 and high <= 65535 and high > 255:
            scaled = array / 257.0
        elif high > low:
            scaled = (array - low) / (high - low) * 255.0
        else:
            scaled = np.zeros_like(array)
        gray = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
        return gray.convert("RGB")
    if mode in {"RGBA", "LA", "PA"} or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "CMYK":
        return image.convert("RGB")
    return image.convert("RGB")


def read_image(source: str | os.PathLike | bytes, max_side: int = MAX_SIDE) -> np.ndarray:
    """Decode ``source`` (a path or raw bytes) into an ``H x W x 3`` RGB ``uint8`` array.

    Raises :class:`ImageReadError` for an empty file, bytes that are not an image, a
    truncated file, or an image over :data:`MAX_PIXELS`. Images whose longer side exceeds
    ``max_side`` are downscaled (aspect kept), so a huge upload cannot exhaust memory.
    """
    label = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageReadError(f"{label}: no such file")
        data = path.read_bytes()
    if not data:
        raise ImageReadError(f"{label}: the file is empty (0 bytes)")
    previous_truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ImageReadError(
                        f"{label}: {width}x{height} pixels is over the {MAX_PIXELS:,}-pixel limit "
                        "(decompression-bomb guard); crop or downscale the image first"
                    )
                if width < 1 or height < 1:
                    raise ImageReadError(f"{label}: the image has no pixels ({width}x{height})")
                if max(width, height) > max_side:
                    image.draft("RGB", (max_side, max_side))
                image.load()
                if getattr(image, "n_frames", 1) > 1:
                    image.seek(0)
                rgb = _to_rgb(image)
                if max(rgb.size) > max_side:
                    rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
                array = np.asarray(rgb, dtype=np.uint8)
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageReadError(f"{label}: too many pixels (decompression-bomb guard): {error}") from None
    except Image.UnidentifiedImageError:
        raise ImageReadError(f"{label}: not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"{label}: truncated or corrupt image ({error})") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous_truncated
    if array.ndim != 3 or array.shape[2] != 3:
        raise ImageReadError(f"{label}: unexpected decoded shape {array.shape}")
    return np.ascontiguousarray(array)


def fit_to_square(image: np.ndarray, size: int, fill: int = 255) -> np.ndarray:
    """Place ``image`` in a ``size x size`` canvas without stretching.

    Smaller images are padded at the bottom and right with ``fill`` (white, the slide
    background); larger ones are downscaled with their aspect ratio kept, then padded.
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
    canvas = np.full((size, size, 3), fill, dtype=np.uint8)
    canvas[:height, :width] = image
    return canvas
