"""Training-time augmentation layers for histology patches (RGB values 0..255 in and out).

Each layer is one fused computation per batch, computes in float32 even under a mixed-precision
policy, and acts only with ``training=True``. Notebook 04 stacks them in a ``keras.Sequential``;
:func:`standard_augmentation` is the same stack for the benchmark and the tests.
"""
from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

#: Ruifrok & Johnston (2001) stain optical-density vectors (rows: haematoxylin, eosin, DAB; RGB).
RUIFROK_JOHNSTON_STAINS = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]],
    dtype="float64",
)


def stain_matrices() -> tuple[np.ndarray, np.ndarray]:
    """``(rgb_from_hed, hed_from_rgb)``: unit-length stain vectors and their inverse (float32)."""
    rgb_from_hed = RUIFROK_JOHNSTON_STAINS / np.linalg.norm(RUIFROK_JOHNSTON_STAINS, axis=1, keepdims=True)
    hed_from_rgb = np.linalg.inv(rgb_from_hed)
    return rgb_from_hed.astype("float32"), hed_from_rgb.astype("float32")


def _check_strength(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


class _RandomImageLayer(keras.layers.Layer):
    """What the augmentation layers share: float32 compute, a seeded generator, the input shape kept,
    a config holding the seed and each name of ``settings``, and the identity when not training or
    when every setting is 0. Subclasses write ``augment(inputs, batch_size)``."""

    settings: tuple[str, ...] = ()

    def __init__(self, seed: int | None = None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=True):
        if not training or (self.settings and not any(getattr(self, name) for name in self.settings)):
            return inputs
        if len(inputs.shape) != 4 or inputs.shape[-1] != 3:
            raise ValueError(f"{type(self).__name__} expects RGB batches (batch, height, width, 3), "
                             f"got shape {inputs.shape}")
        return self.augment(inputs, ops.shape(inputs)[0])

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), **{name: getattr(self, name) for name in self.settings}, "seed": self.seed}


@keras.saving.register_keras_serializable(package="bclib")
class RandomDihedral(_RandomImageLayer):
    """One of the 8 symmetries of the square per image: the 4 quarter-turns and 4 mirrors.

    Three independent coin flips per image (transpose, flip rows, flip columns) give each
    symmetry with probability 1/8. Pixels are moved, never interpolated. Non-square images are
    only mirrored (a transpose would change their shape).
    """

    def augment(self, inputs, batch):
        coins = keras.random.uniform((3, batch, 1, 1, 1), seed=self.seed_generator) < 0.5
        images = inputs
        if inputs.shape[1] is not None and inputs.shape[1] == inputs.shape[2]:
            images = ops.where(coins[0], ops.transpose(images, (0, 2, 1, 3)), images)
        images = ops.where(coins[1], ops.flip(images, axis=1), images)
        return ops.where(coins[2], ops.flip(images, axis=2), images)


def bilinear_weights(start, length, n_in: int, n_out: int):
    """Per-image 1-D bilinear resampling matrices, ``(batch, n_out, n_in)``.

    Output pixel ``i`` samples input coordinate ``start + (i + 0.5) * length / n_out - 0.5``
    (pixel centres, as ``tf.image.resize``), clamped to the image; ``start`` and ``length``
    are ``(batch,)`` tensors in input pixels. Multiplying an image by these matrices along
    its rows and its columns crops and resizes it in two batched matrix products.
    """
    steps = ops.arange(n_out, dtype="float32")
    coords = start[:, None] + (steps[None, :] + 0.5) * (length[:, None] / n_out) - 0.5
    coords = ops.clip(coords, 0.0, n_in - 1.0)
    pixels = ops.arange(n_in, dtype="float32")
    return ops.maximum(0.0, 1.0 - ops.abs(coords[:, :, None] - pixels[None, None, :]))


@keras.saving.register_keras_serializable(package="bclib")
class RandomZoomCrop(_RandomImageLayer):
    """Zoom in by a factor up to ``1 / (1 - zoom)`` at a random place, per image.

    Each image is cropped to a square of side ``s * size`` with ``s ~ U(1 - zoom, 1)`` at a
    uniformly random position, and resized back (bilinear) to the input size. No border is
    invented (zooming out would have to fill the edges with reflected or constant tissue).
    The crop-and-resize is two batched matrix products (see :func:`bilinear_weights`).
    """

    settings = ("zoom",)

    def __init__(self, zoom: float = 0.1, seed: int | None = None, **kwargs):
        super().__init__(seed, **kwargs)
        self.zoom = _check_strength("zoom", zoom)

    def augment(self, inputs, batch):
        height, width = inputs.shape[1], inputs.shape[2]
        if height is None or width is None:
            raise ValueError("RandomZoomCrop needs a known image height and width")
        side = keras.random.uniform((batch,), 1.0 - self.zoom, 1.0, seed=self.seed_generator)
        corner = keras.random.uniform((batch, 2), 0.0, 1.0, seed=self.seed_generator) * (1.0 - side[:, None])
        rows = bilinear_weights(corner[:, 0] * height, side * height, height, height)
        columns = bilinear_weights(corner[:, 1] * width, side * width, width, width)
        channels_first = ops.transpose(ops.cast(inputs, "float32"), (0, 3, 1, 2))  # (batch, 3, h, w)
        zoomed = ops.matmul(channels_first, ops.transpose(columns, (0, 2, 1))[:, None])
        zoomed = ops.matmul(rows[:, None], zoomed)
        return ops.cast(ops.transpose(zoomed, (0, 2, 3, 1)), inputs.dtype)


def jitter_stains(images, scale, shift):
    """Scale and shift each image's H, E and DAB concentrations: float32 RGB in 0..255.

    ``images`` (batch, h, w, 3) RGB in 0..255; ``scale`` and ``shift`` (batch, 3), one value
    per image and stain. In optical density ``OD = -log((I + 1) / 256)`` the concentrations are
    ``C = OD @ inv(M)`` (``M``: Ruifrok-Johnston stain vectors); the result is
    ``RGB(((C * scale) + shift) @ M)``. The three linear
    steps are fused into one 3x3 matrix and one offset per image.
    """
    rgb_from_hed, hed_from_rgb = (ops.convert_to_tensor(m) for m in stain_matrices())
    scale, shift = ops.cast(scale, "float32"), ops.cast(shift, "float32")
    mixing = ops.einsum("cs,bs,sd->bcd", hed_from_rgb, scale, rgb_from_hed)
    offset = ops.matmul(shift, rgb_from_hed)[:, None, None, :]
    optical_density = -ops.log((ops.cast(images, "float32") + 1.0) * (1.0 / 256.0))
    optical_density = ops.einsum("bhwc,bcd->bhwd", optical_density, mixing) + offset
    return ops.clip(256.0 * ops.exp(-optical_density) - 1.0, 0.0, 255.0)


@keras.saving.register_keras_serializable(package="bclib")
class RandomStainJitter(_RandomImageLayer):
    """H&E stain jitter per image (:func:`jitter_stains`): each stain's concentration scaled by
    ``U(1 - strength, 1 + strength)`` and shifted by ``U(-strength, strength)``; 0 is the identity."""

    settings = ("strength",)

    def __init__(self, strength: float = 0.05, seed: int | None = None, **kwargs):
        super().__init__(seed, **kwargs)
        self.strength = _check_strength("strength", strength)

    def augment(self, inputs, batch):
        scale = keras.random.uniform((batch, 3), 1.0 - self.strength, 1.0 + self.strength, seed=self.seed_generator)
        shift = keras.random.uniform((batch, 3), -self.strength, self.strength, seed=self.seed_generator)
        return ops.cast(jitter_stains(inputs, scale, shift), inputs.dtype)


@keras.saving.register_keras_serializable(package="bclib")
class RandomBrightnessContrast(_RandomImageLayer):
    """Per image: ``(x - mean) * c + mean + 255 * b``, clipped to 0..255.

    ``c ~ U(1 - contrast, 1 + contrast)`` scales around each channel's mean (as
    ``tf.image.adjust_contrast``); ``b ~ U(-brightness, brightness)`` shifts all channels.
    """

    settings = ("brightness", "contrast")

    def __init__(self, brightness: float = 0.1, contrast: float = 0.1, seed: int | None = None, **kwargs):
        super().__init__(seed, **kwargs)
        self.brightness = _check_strength("brightness", brightness)
        self.contrast = _check_strength("contrast", contrast)

    def augment(self, inputs, batch):
        images = ops.cast(inputs, "float32")
        factor = keras.random.uniform((batch, 1, 1, 1), 1.0 - self.contrast, 1.0 + self.contrast,
                                      seed=self.seed_generator)
        delta = keras.random.uniform((batch, 1, 1, 1), -self.brightness, self.brightness,
                                     seed=self.seed_generator) * 255.0
        mean = ops.mean(images, axis=(1, 2), keepdims=True)
        adjusted = (images - mean) * factor + (mean + delta)
        return ops.cast(ops.clip(adjusted, 0.0, 255.0), inputs.dtype)


def standard_augmentation(zoom: float = 0.1, stain_jitter: float = 0.05, brightness: float = 0.1,
                          contrast: float = 0.1, seed: int = 0) -> keras.Sequential:
    """The augmentation stack notebook 04 builds in its cell (kept here for the benchmark and tests)."""
    return keras.Sequential([
        RandomDihedral(seed=seed),
        RandomZoomCrop(zoom, seed=seed + 1),
        RandomStainJitter(stain_jitter, seed=seed + 2),
        RandomBrightnessContrast(brightness, contrast, seed=seed + 3),
    ], name="augmentation")


def describe_layers(stack: keras.Sequential) -> list[dict[str, Any]]:
    """Each layer's class and settings (no names or dtypes): what a model card records."""
    skipped = {"name", "trainable", "dtype"}
    return [{"layer": type(layer).__name__, **{key: value for key, value in layer.get_config().items()
                                              if key not in skipped}}
            for layer in stack.layers]
