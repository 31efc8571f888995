"""Augmentation layers: shapes, ranges, identity at zero strength, stain jitter, seeds."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from bclib.augment import RandomRot90, RandomStainJitter, build_augmenter, stain_matrices


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


def test_full_augmenter_keeps_shape_dtype_and_range(batch):
    augmented = np.asarray(build_augmenter(seed=1)(batch, training=True))
    assert augmented.shape == batch.shape
    assert augmented.dtype == np.float32
    assert augmented.min() >= 0.0 and augmented.max() <= 255.0
    assert not np.allclose(augmented, batch)


def test_zero_strengths_are_the_identity(batch):
    augmenter = build_augmenter(flips=False, rot90=False, zoom=0, brightness=0, contrast=0, stain_jitter=0)
    np.testing.assert_array_equal(np.asarray(augmenter(batch, training=True)), batch)
    np.testing.assert_allclose(np.asarray(RandomStainJitter(0.0)(batch, training=True)), batch)


def test_not_training_is_the_identity(batch):
    np.testing.assert_array_equal(np.asarray(build_augmenter(seed=3)(batch, training=False)), batch)


def test_same_seed_same_result_other_seed_differs(batch):
    first = np.asarray(build_augmenter(seed=7)(batch, training=True))
    second = np.asarray(build_augmenter(seed=7)(batch, training=True))
    other = np.asarray(build_augmenter(seed=8)(batch, training=True))
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first, other)


def test_rot90_gives_exact_quarter_turns(batch):
    rotated = np.asarray(RandomRot90(seed=0)(np.repeat(batch[:1], 16, axis=0), training=True))
    turns = []
    for image in rotated:
        matches = [k for k in range(4) if np.array_equal(image, np.rot90(batch[0], k))]
        assert len(matches) == 1
        turns.append(matches[0])
    assert len(set(turns)) >= 3  # 16 draws of a fair 4-sided die


def test_rot90_rejects_non_square():
    with pytest.raises(ValueError, match="square"):
        RandomRot90()(np.zeros((2, 8, 6, 3), "float32"), training=True)


def test_stain_matrices_are_inverse():
    rgb_from_hed, hed_from_rgb = stain_matrices()
    np.testing.assert_allclose(rgb_from_hed @ hed_from_rgb, np.eye(3), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(rgb_from_hed, axis=1), 1.0, atol=1e-6)


def test_stain_jitter_changes_colour_but_keeps_structure(batch):
    jittered = np.asarray(RandomStainJitter(0.1, seed=0)(batch, training=True))
    assert jittered.min() >= 0 and jittered.max() <= 255
    mean_colour_shift = np.abs(jittered.mean(axis=(1, 2)) - batch.mean(axis=(1, 2))).max()
    assert mean_colour_shift > 1.0
    for original, changed in zip(batch, jittered):
        intensity_original, intensity_changed = original.mean(-1).ravel(), changed.mean(-1).ravel()
        assert np.corrcoef(intensity_original, intensity_changed)[0, 1] > 0.9


def test_invalid_strength_is_rejected():
    with pytest.raises(ValueError, match="zoom"):
        build_augmenter(zoom=1.5)
    with pytest.raises(ValueError, match="strength"):
        RandomStainJitter(-0.1)


def test_custom_layers_serialise_round_trip(batch):
    layer = RandomStainJitter(0.2, seed=5, name="jitter")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, RandomStainJitter)
    assert restored.strength == 0.2 and restored.seed == 5
    rot = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(RandomRot90(seed=2)))
    assert isinstance(rot, RandomRot90) and rot.seed == 2


def test_augmenter_runs_inside_tf_data(batch):
    import tensorflow as tf

    augmenter = build_augmenter(seed=0)
    dataset = tf.data.Dataset.from_tensor_slices(batch).batch(3).map(lambda x: augmenter(x, training=True))
    outputs = [np.asarray(x) for x in dataset]
    assert [x.shape for x in outputs] == [(3, 16, 16, 3), (3, 16, 16, 3)]
    assert all(x.min() >= 0 and x.max() <= 255 for x in outputs)
