"""Decode one image file (or bytes, or a stored array) into an RGB ``uint8`` array, whatever its mode.

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
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        if image.mode.startswith("I;16") and low >= 0 and 255 < high <= 65535:
            scaled = array / 257.0
        else:
            scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return image.convert("RGB")


def _decode(data: bytes, label: str, max_side: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageReadError(
                    f"{label}: {width}x{height} pixels is over the {MAX_PIXELS:,}-pixel limit "
                    "(decompression-bomb guard); crop or downscale the image first"
                )
            if max(width, height) > max_side:
                image.draft("RGB", (max_side, max_side))
            image.load()
            rgb = _to_rgb(image)
    if max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def read_image(source: str | os.PathLike | bytes, max_side: int = MAX_SIDE) -> np.ndarray:
    """Decode ``source`` (a path or raw bytes) into an ``H x W x 3`` RGB ``uint8`` array.

    Raises :class:`ImageReadError` for a missing or empty file, bytes that are not an image, a
    truncated file, or an image over :data:`MAX_PIXELS`. Images whose longer side exceeds
    ``max_side`` are downscaled (aspect kept), so a huge upload cannot exhaust memory.
    """
    if isinstance(source, (bytes, bytearray)):
        label, data = "<bytes>", bytes(source)
    else:
        label = str(source)
        if not Path(source).is_file():
            raise ImageReadError(f"{label}: no such file")
        data = Path(source).read_bytes()
    if not data:
        raise ImageReadError(f"{label}: the file is empty (0 bytes)")
    truncated_setting, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        return _decode(data, label, max_side)
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
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
