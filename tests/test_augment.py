"""Augmentation layers: exact symmetries, zoom-crop geometry, stain jitter algebra, ranges, seeds, dtypes."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from bclib.data import augment
from bclib.data.augment import (
    RandomBrightnessContrast,
    RandomDihedral,
    RandomStainJitter,
    RandomZoomCrop,
    bilinear_weights,
    jitter_stains,
    stain_matrices,
    standard_augmentation,
)


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    """Smooth H&E-like images: a pink background with purple blobs (structure to keep)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:16, 0:16]
    images = np.empty((6, 16, 16, 3), dtype="float32")
    for i in range(len(images)):
        cy, cx = rng.integers(4, 12, size=2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 12.0)[..., None]
        background = np.array([235.0, 170.0, 200.0])
        nucleus = np.array([90.0, 50.0, 140.0])
        images[i] = background * (1 - blob) + nucleus * blob + rng.normal(0, 3, (16, 16, 3))
    return np.clip(images, 0, 255)


def _asymmetric_image(size: int = 5) -> np.ndarray:
    """An image whose 8 symmetries are all different (distinct values everywhere)."""
    return np.arange(size * size * 3, dtype="uint8").reshape(size, size, 3)


def _symmetries(image: np.ndarray) -> list[np.ndarray]:
    turns = [np.rot90(image, k) for k in range(4)]
    return turns + [np.fliplr(t) for t in turns]


def _which_symmetry(candidate: np.ndarray, image: np.ndarray) -> int:
    matches = [k for k, s in enumerate(_symmetries(image)) if np.array_equal(candidate, s)]
    assert len(matches) == 1, "not exactly one symmetry of the square"
    return matches[0]


# ----- dihedral ------------------------------------------------------------------------------

def _dihedral_kinds(layer: RandomDihedral, image: np.ndarray, copies: int) -> list[int]:
    moved = np.asarray(layer(np.repeat(image[None], copies, axis=0).astype("float32"), training=True))
    assert moved.shape == (copies, *image.shape)
    return [_which_symmetry(m.astype("uint8"), image) for m in moved]


def test_dihedral_gives_each_of_the_8_symmetries_and_only_them():
    counts = np.bincount(_dihedral_kinds(RandomDihedral(seed=0), _asymmetric_image(), 400), minlength=8)
    assert len(counts) == 8  # _which_symmetry fails on anything but an exact symmetry
    assert counts.min() >= 25  # 400 draws of a fair 8-sided die: expected 50 each


def test_dihedral_only_mirrors_a_non_square_image():
    image = np.arange(4 * 6 * 3, dtype="uint8").reshape(4, 6, 3)
    moved = np.asarray(RandomDihedral(seed=1)(np.repeat(image[None], 64, axis=0).astype("float32"), training=True))
    mirrors = [image, image[::-1], image[:, ::-1], image[::-1, ::-1]]
    kinds = {next(k for k, m in enumerate(mirrors) if np.array_equal(candidate.astype("uint8"), m)) for candidate in moved}
    assert kinds == {0, 1, 2, 3}


def test_dihedral_is_determined_by_its_seed():
    image = _asymmetric_image()
    first = _dihedral_kinds(RandomDihedral(seed=7), image, 32)
    assert first == _dihedral_kinds(RandomDihedral(seed=7), image, 32)
    assert first != _dihedral_kinds(RandomDihedral(seed=8), image, 32)
    layer = RandomDihedral(seed=7)
    assert _dihedral_kinds(layer, image, 32) != _dihedral_kinds(layer, image, 32)  # new draws on every call


def test_dihedral_rejects_what_is_not_an_rgb_batch():
    with pytest.raises(ValueError, match="RGB batches"):
        RandomDihedral()(np.zeros((8, 8, 3), "float32"), training=True)


# ----- zoom ----------------------------------------------------------------------------------

def test_bilinear_weights_identity_and_partition_of_unity():
    import tensorflow as tf

    identity = np.asarray(bilinear_weights(tf.zeros(2), tf.fill((2,), 12.0), 12, 12))
    np.testing.assert_allclose(identity, np.broadcast_to(np.eye(12), (2, 12, 12)), atol=1e-6)
    crop = np.asarray(bilinear_weights(tf.constant([1.5]), tf.constant([9.0]), 12, 20))
    np.testing.assert_allclose(crop.sum(axis=-1), 1.0, atol=1e-6)
    assert crop.min() >= 0.0
    sampled = crop[0] @ np.arange(12.0)  # resampling a ramp gives the sampled coordinates
    np.testing.assert_allclose(sampled, 1.5 + (np.arange(20) + 0.5) * 9.0 / 20 - 0.5, atol=1e-5)


def test_zoom_crop_magnifies_within_its_range():
    ramp = np.broadcast_to(np.arange(40, dtype="float32")[None, :, None] * 5.0, (40, 40, 3))
    images = np.repeat(ramp[None], 32, axis=0)
    zoomed = np.asarray(RandomZoomCrop(0.2, seed=0)(images, training=True))
    assert zoomed.shape == images.shape and zoomed.dtype == np.float32
    # Magnified by 1/s, the ramp climbs s times as fast per pixel: s in [1 - zoom, 1].
    slopes = (zoomed[:, 20, 30, 0] - zoomed[:, 20, 10, 0]) / 20.0 / 5.0
    assert slopes.min() >= 0.8 - 1e-4 and slopes.max() <= 1.0 + 1e-4
    assert slopes.max() - slopes.min() > 0.05  # the factor is drawn per image
    assert zoomed.min() >= images.min() and zoomed.max() <= images.max()  # crops, no invented border


def test_zoom_crop_zero_and_not_training_are_the_identity(batch):
    np.testing.assert_array_equal(np.asarray(RandomZoomCrop(0.0)(batch, training=True)), batch)
    np.testing.assert_array_equal(np.asarray(RandomZoomCrop(0.3)(batch, training=False)), batch)


# ----- photometric ---------------------------------------------------------------------------

def test_stain_matrices_are_inverse():
    rgb_from_hed, hed_from_rgb = stain_matrices()
    np.testing.assert_allclose(rgb_from_hed @ hed_from_rgb, np.eye(3), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(rgb_from_hed, axis=1), 1.0, atol=1e-6)


def test_fused_stain_jitter_equals_the_three_step_formula(batch):
    rng = np.random.default_rng(3)
    scale = rng.uniform(0.8, 1.2, (len(batch), 3)).astype("float32")
    shift = rng.uniform(-0.2, 0.2, (len(batch), 3)).astype("float32")
    rgb_from_hed, hed_from_rgb = stain_matrices()
    concentrations = (-np.log((batch.astype("float64") + 1.0) / 256.0)) @ hed_from_rgb
    concentrations = concentrations * scale[:, None, None, :] + shift[:, None, None, :]
    expected = np.clip(256.0 * np.exp(-(concentrations @ rgb_from_hed)) - 1.0, 0, 255)
    np.testing.assert_allclose(np.asarray(jitter_stains(batch, scale, shift)), expected, atol=0.05)
    identity = np.asarray(jitter_stains(batch, np.ones_like(scale), np.zeros_like(shift)))
    np.testing.assert_allclose(identity, batch, atol=0.05)


def test_stain_jitter_changes_colour_but_keeps_structure(batch):
    jittered = np.asarray(RandomStainJitter(0.1, seed=0)(batch, training=True))
    assert jittered.min() >= 0 and jittered.max() <= 255
    mean_colour_shift = np.abs(jittered.mean(axis=(1, 2)) - batch.mean(axis=(1, 2))).max()
    assert mean_colour_shift > 1.0
    for original, changed in zip(batch, jittered):
        intensity_original, intensity_changed = original.mean(-1).ravel(), changed.mean(-1).ravel()
        assert np.corrcoef(intensity_original, intensity_changed)[0, 1] > 0.9
    np.testing.assert_allclose(np.asarray(RandomStainJitter(0.0)(batch, training=True)), batch)


def test_brightness_shifts_and_contrast_scales_around_the_mean():
    rng = np.random.default_rng(0)
    images = rng.uniform(100, 150, (16, 8, 8, 3)).astype("float32")  # far from the clipping range
    brighter = np.asarray(RandomBrightnessContrast(brightness=0.1, contrast=0.0, seed=1)(images, training=True))
    shift = brighter - images  # one constant per image, within +-25.5
    np.testing.assert_allclose(shift, shift[:, :1, :1, :1] * np.ones_like(shift), atol=1e-3)
    assert np.abs(shift).max() <= 25.5 + 1e-3 and np.ptp(shift[:, 0, 0, 0]) > 1.0
    contrasted = np.asarray(RandomBrightnessContrast(brightness=0.0, contrast=0.3, seed=2)(images, training=True))
    np.testing.assert_allclose(contrasted.mean(axis=(1, 2)), images.mean(axis=(1, 2)), atol=1e-3)
    spread = contrasted.std(axis=(1, 2)) / images.std(axis=(1, 2))
    assert spread.min() >= 0.7 - 1e-4 and spread.max() <= 1.3 + 1e-4 and np.ptp(spread) > 0.05


# ----- the whole stack -----------------------------------------------------------------------

def test_invalid_strength_is_rejected():
    with pytest.raises(ValueError, match="zoom"):
        standard_augmentation(zoom=1.5)
    with pytest.raises(ValueError, match="contrast"):
        standard_augmentation(contrast=-0.1)
    with pytest.raises(ValueError, match="strength"):
        RandomStainJitter(-0.1)


def test_custom_layers_serialise_round_trip():
    for layer, attribute, value in ((RandomStainJitter(0.2, seed=5), "strength", 0.2),
                                    (RandomZoomCrop(0.15, seed=5), "zoom", 0.15),
                                    (RandomBrightnessContrast(0.05, 0.2, seed=5), "contrast", 0.2),
                                    (RandomDihedral(seed=5), "seed", 5)):
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert type(restored) is type(layer)
        assert getattr(restored, attribute) == value and restored.seed == 5


def test_stack_keeps_shape_dtype_and_range(batch):
    augmented = np.asarray(standard_augmentation(seed=1)(batch, training=True))
    assert augmented.shape == batch.shape
    assert augmented.dtype == np.float32
    assert augmented.min() >= 0.0 and augmented.max() <= 255.0
    assert not np.allclose(augmented, batch)


def test_zero_strengths_leave_only_the_exact_symmetries(batch):
    stack = standard_augmentation(zoom=0, stain_jitter=0, brightness=0, contrast=0, seed=0)
    augmented = np.asarray(stack(batch, training=True))
    for original, moved in zip(batch, augmented):
        assert any(np.array_equal(moved, symmetry) for symmetry in _symmetries(original))


def test_not_training_is_the_identity(batch):
    np.testing.assert_array_equal(np.asarray(standard_augmentation(seed=3)(batch, training=False)), batch)
    for layer in standard_augmentation(seed=3).layers:
        np.testing.assert_array_equal(np.asarray(layer(batch, training=False)), batch)


def test_same_seed_same_result_other_seed_differs(batch):
    first = np.asarray(standard_augmentation(seed=7)(batch, training=True))
    second = np.asarray(standard_augmentation(seed=7)(batch, training=True))
    other = np.asarray(standard_augmentation(seed=8)(batch, training=True))
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first, other)


def test_stack_computes_in_float32_under_mixed_precision(batch):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        stack = standard_augmentation(seed=2)
        augmented = stack(batch, training=True)
    finally:
        keras.config.set_dtype_policy(previous)
    assert all(layer.compute_dtype == "float32" for layer in stack.layers)
    assert keras.backend.standardize_dtype(augmented.dtype) == "float32"
    augmented = np.asarray(augmented)
    assert augmented.min() >= 0.0 and augmented.max() <= 255.0


def test_describe_layers_records_each_layer_and_its_settings():
    described = augment.describe_layers(standard_augmentation(zoom=0.2, stain_jitter=0.1, brightness=0.05,
                                                              contrast=0.0, seed=4))
    assert [entry["layer"] for entry in described] == [
        "RandomDihedral", "RandomZoomCrop", "RandomStainJitter", "RandomBrightnessContrast"]
    assert described[1]["zoom"] == 0.2 and described[2]["strength"] == 0.1
    assert described[3]["brightness"] == 0.05 and described[3]["contrast"] == 0.0
    assert [entry["seed"] for entry in described] == [4, 5, 6, 7]
    assert all("name" not in entry and "dtype" not in entry for entry in described)


# ----- the figure ------------------------------------------------------------------------------

def test_augmentation_figure_has_a_column_per_transform_and_rows_by_class(batch):
    import matplotlib

    matplotlib.use("Agg")
    from bclib.plots.data import augmentation_examples

    stack = standard_augmentation(seed=3)
    examples = {"non-IDC": batch[:2].astype("uint8"), "IDC": batch[2:5].astype("uint8")}
    before = np.asarray(standard_augmentation(seed=3)(batch, training=True))
    figure = augmentation_examples(examples, stack)
    axes = np.asarray(figure.axes).reshape(5, len(stack.layers) + 2)
    titles = [ax.get_title() for ax in axes[0]]
    assert titles[0] == "original" and titles[-1] == "all together"
    assert [title.split("\n")[0] for title in titles[1:-1]] == ["Dihedral", "ZoomCrop", "StainJitter", "BrightnessContrast"]
    assert "zoom 0.1" in titles[2]
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["non-IDC"] * 2 + ["IDC"] * 3
    np.testing.assert_array_equal(np.asarray(stack(batch, training=True)), before)  # training's draws untouched
    with pytest.raises(ValueError, match="no images"):
        augmentation_examples({"IDC": batch[:0]}, stack)
