"""Training-time augmentation: Keras 3 preprocessing layers applied to whole batches.

Images stay RGB float values in ``0..255`` throughout (the models rescale inside), so every
layer here works on that range. Two custom layers are defined and registered for saving:

* :class:`RandomRot90` rotates each image by ``k * 90`` degrees (``k`` drawn per image), the
  natural symmetry of a histology patch (no interpolation, no border filling);
* :class:`RandomStainJitter` perturbs the haematoxylin / eosin / DAB concentrations of each
  image in optical-density space (Ruifrok & Johnston 2001 stain vectors; Tellez et al. 2018
  "HED jitter"), mimicking the colour variation between labs and scanners.

:func:`build_augmenter` assembles the usual stack. Random layers only act with
``training=True``; the tf.data pipeline calls the augmenter that way on training batches only.
"""
from __future__ import annotations

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


@keras.saving.register_keras_serializable(package="bclib")
class RandomRot90(keras.layers.Layer):
    """Rotate each image of a batch by ``k * 90`` degrees, ``k`` uniform in {0, 1, 2, 3}.

    Needs square images (a 90-degree turn of a non-square image changes its shape).
    Inputs: ``(batch, size, size, channels)``; identity when ``training`` is False.
    """

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=True):
        if not training:
            return inputs
        shape = ops.shape(inputs)
        if len(inputs.shape) != 4:
            raise ValueError(f"RandomRot90 expects a batch (batch, height, width, channels), got shape {inputs.shape}")
        if inputs.shape[1] is not None and inputs.shape[2] is not None and inputs.shape[1] != inputs.shape[2]:
            raise ValueError(f"RandomRot90 needs square images, got {inputs.shape[1]}x{inputs.shape[2]}")
        turns = keras.random.randint((shape[0], 1, 1, 1), 0, 4, seed=self.seed_generator)
        # One quarter turn counter-clockwise: transpose height/width, then flip the rows.
        rot90 = ops.flip(ops.transpose(inputs, (0, 2, 1, 3)), axis=1)
        rot180 = ops.flip(ops.flip(inputs, axis=1), axis=2)
        rot270 = ops.flip(ops.transpose(inputs, (0, 2, 1, 3)), axis=2)
        outputs = ops.where(turns == 1, rot90, inputs)
        outputs = ops.where(turns == 2, rot180, outputs)
        return ops.where(turns == 3, rot270, outputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="bclib")
class RandomStainJitter(keras.layers.Layer):
    """H&E stain jitter in optical-density space, per image.

    RGB ``I`` (0..255) -> optical density ``OD = -log((I + 1) / 256)`` -> stain concentrations
    ``C = OD @ inv(M)`` (``M``: Ruifrok-Johnston H/E/DAB vectors) -> ``C * alpha + beta`` with
    ``alpha ~ U(1 - strength, 1 + strength)`` and ``beta ~ U(-strength, strength)`` drawn per
    image and per stain -> back to RGB, clipped to 0..255. ``strength=0`` is the identity.
    """

    def __init__(self, strength: float = 0.05, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.strength = _check_strength("strength", strength)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        rgb_from_hed, hed_from_rgb = stain_matrices()
        self._rgb_from_hed = rgb_from_hed
        self._hed_from_rgb = hed_from_rgb

    def call(self, inputs, training=True):
        if not training or self.strength == 0.0:
            return inputs
        if len(inputs.shape) != 4 or inputs.shape[-1] != 3:
            raise ValueError(f"RandomStainJitter expects RGB batches (batch, h, w, 3), got shape {inputs.shape}")
        dtype = inputs.dtype
        images = ops.cast(inputs, "float32")
        batch = ops.shape(images)[0]
        optical_density = -ops.log((images + 1.0) / 256.0)
        concentrations = ops.matmul(optical_density, ops.convert_to_tensor(self._hed_from_rgb))
        scale = keras.random.uniform(
            (batch, 1, 1, 3), 1.0 - self.strength, 1.0 + self.strength, seed=self.seed_generator
        )
        shift = keras.random.uniform((batch, 1, 1, 3), -self.strength, self.strength, seed=self.seed_generator)
        concentrations = concentrations * scale + shift
        optical_density = ops.matmul(concentrations, ops.convert_to_tensor(self._rgb_from_hed))
        rgb = 256.0 * ops.exp(-optical_density) - 1.0
        return ops.cast(ops.clip(rgb, 0.0, 255.0), dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "strength": self.strength, "seed": self.seed}


def build_augmenter(
    flips: bool = True,
    rot90: bool = True,
    zoom: float = 0.1,
    brightness: float = 0.1,
    contrast: float = 0.1,
    stain_jitter: float = 0.05,
    seed: int = 0,
) -> keras.Sequential:
    """The training augmentation stack, for batches of RGB values in 0..255.

    Each strength of 0 (or ``False``) leaves that layer out; with everything off the result is
    an identity model. Each layer gets its own seed derived from ``seed``, so two augmenters
    built with the same arguments produce the same sequence of transformations.
    Call it as ``augmenter(batch, training=True)``.
    """
    zoom = _check_strength("zoom", zoom)
    brightness = _check_strength("brightness", brightness)
    contrast = _check_strength("contrast", contrast)
    stain_jitter = _check_strength("stain_jitter", stain_jitter)
    layers: list[keras.layers.Layer] = []
    if flips:
        layers.append(keras.layers.RandomFlip("horizontal_and_vertical", seed=seed, name="flip"))
    if rot90:
        layers.append(RandomRot90(seed=seed + 1, name="rot90"))
    if zoom > 0:
        layers.append(keras.layers.RandomZoom((-zoom, zoom), fill_mode="reflect", seed=seed + 2, name="zoom"))
    if stain_jitter > 0:
        layers.append(RandomStainJitter(stain_jitter, seed=seed + 3, name="stain_jitter"))
    if brightness > 0:
        layers.append(
            keras.layers.RandomBrightness(brightness, value_range=(0, 255), seed=seed + 4, name="brightness")
        )
    if contrast > 0:
        layers.append(keras.layers.RandomContrast(contrast, value_range=(0, 255), seed=seed + 5, name="contrast"))
    if not layers:
        layers.append(keras.layers.Identity(name="identity"))
    return keras.Sequential(layers, name="augmenter")
