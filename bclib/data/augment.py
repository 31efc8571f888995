"""Training-time augmentation, split into a cheap geometric stage and a photometric stage.

Images are RGB in ``0..255`` throughout (the models rescale inside). An :class:`Augmenter`
has two stages, so that the tf.data pipeline can run each where it costs least:

* **geometric** (:meth:`Augmenter.dihedral`): each image gets one of the 8 symmetries of the
  square (identity, 90/180/270-degree turns, 4 mirrors), the natural symmetry of a histology
  patch. Exact pixel permutations, done in NumPy on the uint8 batch while it is gathered from
  the cache: about 1 ms per batch of 64 50x50 patches, against about 23 ms of CPU time for
  Keras' ``RandomFlip`` plus a quarter-turn layer on float32 tensors (measured on 2 CPU cores).
* **photometric** (:attr:`Augmenter.layers`, Keras layers on float32 batches):
  :class:`RandomZoomCrop` (zoom in by up to ``zoom``, at a random place: a crop resized back,
  no border filling), :class:`RandomStainJitter` (H&E concentrations in optical-density space,
  Ruifrok & Johnston 2001 stain vectors, Tellez et al. 2018 "HED jitter") and
  :class:`RandomBrightnessContrast`. Each is one fused computation per batch.

Calling an augmenter, ``augmenter(batch, training=True)``, runs both stages (for figures and
tests); :func:`bclib.data.pipeline.make_dataset` runs them separately. Random layers only act with
``training=True``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
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


def _check_strength(name: str, value: float, upper: float = 1.0) -> float:
    value = float(value)
    if not 0.0 <= value < upper:
        raise ValueError(f"{name} must be in [0, {upper}), got {value}")
    return value


def _check_batch(layer: str, inputs: Any) -> None:
    if len(inputs.shape) != 4 or inputs.shape[-1] != 3:
        raise ValueError(f"{layer} expects RGB batches (batch, height, width, 3), got shape {inputs.shape}")


def random_dihedral(batch: np.ndarray, rng: np.random.Generator, flips: bool = True,
                    turns: bool = True) -> np.ndarray:
    """A copy of ``batch`` (N, H, W, C) with one random symmetry of the square per image.

    ``flips`` and ``turns``: any of the 8 symmetries (4 turns, 4 mirrors), equally likely.
    ``turns`` only: a 0/90/180/270-degree turn. ``flips`` only: a vertical and/or horizontal
    mirror. Turns need square images. Works on any dtype: pixels are moved, never changed.
    """
    batch = np.asarray(batch)
    if batch.ndim != 4:
        raise ValueError(f"random_dihedral expects a batch (N, H, W, C), got shape {batch.shape}")
    if turns and batch.shape[1] != batch.shape[2]:
        raise ValueError(f"90-degree turns need square images, got {batch.shape[1]}x{batch.shape[2]}")
    out = batch.copy()
    if not len(out) or not (flips or turns):
        return out
    if turns and not flips:
        quarter_turns = rng.integers(0, 4, size=len(out))
        for k in (1, 2, 3):
            chosen = quarter_turns == k
            out[chosen] = np.rot90(out[chosen], k, axes=(1, 2))
        return out
    codes = rng.integers(0, 8 if turns else 4, size=len(out))  # bits: flip rows, flip columns, transpose
    if turns:
        chosen = (codes & 4) > 0
        out[chosen] = out[chosen].transpose(0, 2, 1, 3)
    chosen = (codes & 1) > 0
    out[chosen] = out[chosen, ::-1]
    chosen = (codes & 2) > 0
    out[chosen] = out[chosen, :, ::-1]
    return out


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
class RandomZoomCrop(keras.layers.Layer):
    """Zoom in by a factor up to ``1 / (1 - zoom)`` at a random place, per image.

    Each image is cropped to a square of side ``s * size`` with ``s ~ U(1 - zoom, 1)`` at a
    uniformly random position, and resized back (bilinear) to the input size. No border is
    invented (zooming out would have to fill the edges with reflected or constant tissue).
    The crop-and-resize is two batched matrix products (see :func:`bilinear_weights`).
    """

    def __init__(self, zoom: float = 0.1, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.zoom = _check_strength("zoom", zoom)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=True):
        if not training or self.zoom == 0.0:
            return inputs
        _check_batch("RandomZoomCrop", inputs)
        height, width = inputs.shape[1], inputs.shape[2]
        if height is None or width is None:
            raise ValueError("RandomZoomCrop needs a known image height and width")
        batch = ops.shape(inputs)[0]
        side = keras.random.uniform((batch,), 1.0 - self.zoom, 1.0, seed=self.seed_generator)
        corner = keras.random.uniform((batch, 2), 0.0, 1.0, seed=self.seed_generator) * (1.0 - side[:, None])
        rows = bilinear_weights(corner[:, 0] * height, side * height, height, height)
        columns = bilinear_weights(corner[:, 1] * width, side * width, width, width)
        channels_first = ops.transpose(ops.cast(inputs, "float32"), (0, 3, 1, 2))  # (batch, 3, h, w)
        zoomed = ops.matmul(channels_first, ops.transpose(columns, (0, 2, 1))[:, None])
        zoomed = ops.matmul(rows[:, None], zoomed)
        return ops.cast(ops.transpose(zoomed, (0, 2, 3, 1)), inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "zoom": self.zoom, "seed": self.seed}


def jitter_stains(images, scale, shift):
    """Scale and shift each image's H, E and DAB concentrations: float32 RGB in 0..255.

    ``images`` (batch, h, w, 3) RGB in 0..255; ``scale`` and ``shift`` (batch, 3), one value
    per image and stain. In optical density ``OD = -log((I + 1) / 256)`` the concentrations are
    ``C = OD @ inv(M)``; the result is ``RGB(((C * scale) + shift) @ M)``. The three linear
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
class RandomStainJitter(keras.layers.Layer):
    """H&E stain jitter in optical-density space, per image.

    RGB ``I`` (0..255) -> optical density ``OD = -log((I + 1) / 256)`` -> stain concentrations
    ``C = OD @ inv(M)`` (``M``: Ruifrok-Johnston H/E/DAB vectors) -> ``C * alpha + beta`` with
    ``alpha ~ U(1 - strength, 1 + strength)`` and ``beta ~ U(-strength, strength)`` drawn per
    image and per stain -> back to RGB, clipped to 0..255 (:func:`jitter_stains`).
    ``strength=0`` is the identity.
    """

    def __init__(self, strength: float = 0.05, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.strength = _check_strength("strength", strength)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=True):
        if not training or self.strength == 0.0:
            return inputs
        _check_batch("RandomStainJitter", inputs)
        batch = ops.shape(inputs)[0]
        scale = keras.random.uniform((batch, 3), 1.0 - self.strength, 1.0 + self.strength, seed=self.seed_generator)
        shift = keras.random.uniform((batch, 3), -self.strength, self.strength, seed=self.seed_generator)
        return ops.cast(jitter_stains(inputs, scale, shift), inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "strength": self.strength, "seed": self.seed}


@keras.saving.register_keras_serializable(package="bclib")
class RandomBrightnessContrast(keras.layers.Layer):
    """Per image: ``(x - mean) * c + mean + 255 * b``, clipped to 0..255.

    ``c ~ U(1 - contrast, 1 + contrast)`` scales around each channel's mean (as
    ``tf.image.adjust_contrast``); ``b ~ U(-brightness, brightness)`` shifts all channels.
    """

    def __init__(self, brightness: float = 0.1, contrast: float = 0.1, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.brightness = _check_strength("brightness", brightness)
        self.contrast = _check_strength("contrast", contrast)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=True):
        if not training or (self.brightness == 0.0 and self.contrast == 0.0):
            return inputs
        _check_batch("RandomBrightnessContrast", inputs)
        batch = ops.shape(inputs)[0]
        images = ops.cast(inputs, "float32")
        factor = keras.random.uniform((batch, 1, 1, 1), 1.0 - self.contrast, 1.0 + self.contrast,
                                      seed=self.seed_generator)
        delta = keras.random.uniform((batch, 1, 1, 1), -self.brightness, self.brightness,
                                     seed=self.seed_generator) * 255.0
        mean = ops.mean(images, axis=(1, 2), keepdims=True)
        adjusted = (images - mean) * factor + (mean + delta)
        return ops.cast(ops.clip(adjusted, 0.0, 255.0), inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "brightness": self.brightness, "contrast": self.contrast,
                "seed": self.seed}


@dataclass
class Augmenter:
    """The training augmentation: a NumPy geometric stage and a Keras photometric stage.

    Build it with :func:`build_augmenter`. ``augmenter(batch, training=True)`` runs both stages
    and returns float32 values in 0..255; the tf.data pipeline instead calls
    :meth:`dihedral` on the uint8 batch it gathers and :attr:`layers` on the float batch.
    """

    flips: bool = True
    turns: bool = True
    zoom: float = 0.1
    brightness: float = 0.1
    contrast: float = 0.1
    stain_jitter: float = 0.05
    seed: int = 0
    layers: keras.Sequential = field(init=False, repr=False)
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("zoom", "brightness", "contrast", "stain_jitter"):
            setattr(self, name, _check_strength(name, getattr(self, name)))
        stack: list[keras.layers.Layer] = []
        float32 = {"dtype": "float32"}  # pixel arithmetic stays float32 under a mixed-precision policy
        if self.zoom > 0:
            stack.append(RandomZoomCrop(self.zoom, seed=self.seed + 2, name="zoom", **float32))
        if self.stain_jitter > 0:
            stack.append(RandomStainJitter(self.stain_jitter, seed=self.seed + 3, name="stain_jitter", **float32))
        if self.brightness > 0 or self.contrast > 0:
            stack.append(RandomBrightnessContrast(self.brightness, self.contrast, seed=self.seed + 4,
                                                  name="brightness_contrast", **float32))
        if not stack:
            stack.append(keras.layers.Identity(name="identity", **float32))
        self.layers = keras.Sequential(stack, name="photometric")
        self._rng = np.random.default_rng(self.seed)

    @property
    def geometric(self) -> bool:
        """Whether :meth:`dihedral` moves any pixel."""
        return self.flips or self.turns

    def dihedral(self, batch: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """The geometric stage: one random symmetry of the square per image (any dtype).

        Non-square images get mirrors only (a quarter turn would change their shape).
        """
        turns = self.turns and np.shape(batch)[1] == np.shape(batch)[2]
        return random_dihedral(batch, self._rng if rng is None else rng, flips=self.flips, turns=turns)

    def __call__(self, batch: Any, training: bool = True) -> Any:
        """Both stages on a batch (array or eager tensor); the identity when not training."""
        if not training:
            return batch
        moved = self.dihedral(np.asarray(batch))
        return self.layers(np.asarray(moved, dtype="float32"), training=True)

    def config(self) -> dict[str, Any]:
        """The settings, for model cards and run parameters."""
        return {"flips": self.flips, "turns": self.turns, "zoom": self.zoom, "brightness": self.brightness,
                "contrast": self.contrast, "stain_jitter": self.stain_jitter, "seed": self.seed}


def build_augmenter(
    flips: bool = True,
    rot90: bool = True,
    zoom: float = 0.1,
    brightness: float = 0.1,
    contrast: float = 0.1,
    stain_jitter: float = 0.05,
    seed: int = 0,
) -> Augmenter:
    """The training augmentation, for batches of RGB values in 0..255.

    ``flips``/``rot90`` select the mirrors and the 90-degree turns; each strength of 0 leaves
    that photometric layer out, and with everything off the augmenter is the identity. Two
    augmenters built with the same arguments produce the same sequence of transformations.
    """
    return Augmenter(flips=bool(flips), turns=bool(rot90), zoom=zoom, brightness=brightness,
                     contrast=contrast, stain_jitter=stain_jitter, seed=int(seed))
