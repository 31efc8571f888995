"""tf.data pipeline: order, labels, shuffling, augmentation, resizing, memmap input."""
from __future__ import annotations

import numpy as np
import pytest

from bclib.data.augment import standard_augmentation
from bclib.data.pipeline import encode_labels, make_dataset, resize_images


@pytest.fixture(scope="module")
def memmap_images(tmp_path_factory):
    """A memory-mapped uint8 cache like bclib.data.cache writes (30 images, 12x12); image i is filled with i."""
    path = tmp_path_factory.mktemp("pipeline") / "images.npy"
    images = np.lib.format.open_memmap(path, mode="w+", dtype="uint8", shape=(30, 12, 12, 3))
    images[:] = np.arange(30, dtype="uint8")[:, None, None, None]
    images.flush()
    del images
    labels = np.arange(30) % 3
    return np.load(path, mmap_mode="r"), labels


def _collect(dataset):
    xs, ys = zip(*[(x, y) for x, y in dataset.as_numpy_iterator()])
    return np.concatenate(xs), np.concatenate(ys)


def test_eval_order_equals_positions(memmap_images):
    images, labels = memmap_images
    positions = np.array([17, 3, 29, 0, 11, 5, 5, 22])
    x, y = _collect(make_dataset(images, labels % 2, positions=positions, batch_size=3))
    assert x.dtype == np.float32 and y.dtype == np.float32
    assert y.shape == (len(positions), 1)
    np.testing.assert_array_equal(y[:, 0], (labels % 2)[positions])
    np.testing.assert_array_equal(x[:, 0, 0, 0], positions.astype("float32"))


def test_multiclass_labels_are_one_hot(memmap_images):
    images, labels = memmap_images
    _, y = _collect(make_dataset(images, labels, batch_size=8, num_classes=3))
    assert y.shape == (30, 3)
    np.testing.assert_array_equal(y.sum(axis=1), 1.0)
    np.testing.assert_array_equal(y.argmax(axis=1), labels)


def test_training_shuffles_every_epoch_deterministically(memmap_images):
    images, labels = memmap_images
    dataset = make_dataset(images, labels % 2, batch_size=7, training=True, seed=4)
    first, _ = _collect(dataset)
    second, _ = _collect(dataset)
    again, _ = _collect(make_dataset(images, labels % 2, batch_size=7, training=True, seed=4))
    ids_first, ids_second, ids_again = (a[:, 0, 0, 0].astype(int) for a in (first, second, again))
    assert sorted(ids_first) == list(range(30))  # every image exactly once, the last partial batch kept
    assert not np.array_equal(ids_first, np.arange(30))
    assert not np.array_equal(ids_first, ids_second)
    np.testing.assert_array_equal(ids_first, ids_again)


def test_training_keeps_images_and_labels_paired(memmap_images):
    images, labels = memmap_images
    x, y = _collect(make_dataset(images, labels, batch_size=4, training=True, num_classes=3, seed=1))
    np.testing.assert_array_equal(labels[x[:, 0, 0, 0].astype(int)], y.argmax(axis=1))


def test_resize_and_augment_only_when_training(memmap_images):
    images, labels = memmap_images
    augmenter = standard_augmentation(seed=0, stain_jitter=0.2, brightness=0.3)
    x_eval, _ = _collect(make_dataset(images, labels % 2, batch_size=8, image_size=20, augmenter=augmenter))
    assert x_eval.shape == (30, 20, 20, 3)
    np.testing.assert_allclose(x_eval[:, 5, 5, 0], np.arange(30), atol=1e-3)  # constant images stay constant
    x_train, _ = _collect(make_dataset(images, labels % 2, batch_size=8, training=True, image_size=8,
                                       augmenter=augmenter))
    assert x_train.shape == (30, 8, 8, 3)
    assert x_train.min() >= 0 and x_train.max() <= 255
    assert np.ptp(x_train.reshape(30, -1), axis=1).max() > 1.0  # brightness and stains changed the flat images


def test_resize_images_matches_the_pipeline(memmap_images):
    images, labels = memmap_images
    x, _ = _collect(make_dataset(images, labels % 2, batch_size=8, image_size=7))
    np.testing.assert_allclose(resize_images(np.asarray(images), 7), x, atol=1e-4)
    assert resize_images(np.asarray(images), 12).dtype == np.float32


def test_validation(memmap_images):
    images, labels = memmap_images
    assert len(list(make_dataset(images, labels % 2, batch_size=7))) == 5
    with pytest.raises(ValueError, match="labels must be in"):
        make_dataset(images, labels, num_classes=2)
    with pytest.raises(ValueError, match="positions"):
        make_dataset(images, labels % 2, positions=[0, 30])
    with pytest.raises(ValueError, match="labels"):
        make_dataset(images, labels[:5] % 2)
    with pytest.raises(ValueError, match="empty"):
        make_dataset(images, labels % 2, positions=[])
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset(images, labels % 2, batch_size=0)
    with pytest.raises(ValueError, match="num_classes"):
        encode_labels(np.zeros(3, int), num_classes=1)


def _symmetry_index(candidate: np.ndarray, image: np.ndarray) -> int:
    turns = [np.rot90(image, k) for k in range(4)]
    matches = [k for k, s in enumerate(turns + [np.fliplr(t) for t in turns]) if np.array_equal(candidate, s)]
    assert len(matches) == 1
    return matches[0]


def test_seeded_augmenter_gives_new_draws_every_epoch_and_the_same_run_every_time():
    base = np.arange(6 * 6 * 3, dtype="uint8").reshape(6, 6, 3)
    images = np.repeat(base[None], 40, axis=0)
    labels = np.arange(40) % 2

    def flips_only(seed: int):
        return standard_augmentation(zoom=0, stain_jitter=0, brightness=0, contrast=0, seed=seed)

    dataset = make_dataset(images, labels, batch_size=8, training=True, seed=3, augmenter=flips_only(0))
    first, _ = _collect(dataset)
    second, _ = _collect(dataset)
    again, _ = _collect(make_dataset(images, labels, batch_size=8, training=True, seed=3, augmenter=flips_only(0)))
    kinds_first = [_symmetry_index(x.astype("uint8"), base) for x in first]
    kinds_second = [_symmetry_index(x.astype("uint8"), base) for x in second]
    assert len(set(kinds_first)) >= 5  # 40 draws over the 8 symmetries
    assert kinds_first != kinds_second  # new draws every epoch
    np.testing.assert_array_equal(first, again)  # and the same run for the same seeds
    evaluation, _ = _collect(make_dataset(images, labels, batch_size=8, augmenter=flips_only(0)))
    np.testing.assert_array_equal(evaluation, images.astype("float32"))  # never outside training


def test_any_callable_augmenter_gets_float_training_batches_only(memmap_images):
    images, labels = memmap_images
    seen = []

    def augmenter(batch, training):
        seen.append((batch.dtype, training))
        return batch * 0.0 + 7.0

    x, _ = _collect(make_dataset(images, labels % 2, batch_size=8, training=True, augmenter=augmenter))
    np.testing.assert_array_equal(x, 7.0)
    assert seen and all(dtype == "float32" and training is True for dtype, training in seen)
    calls = len(seen)
    x_eval, _ = _collect(make_dataset(images, labels % 2, batch_size=8, training=False, augmenter=augmenter))
    np.testing.assert_array_equal(x_eval[:, 0, 0, 0], np.arange(30))
    assert len(seen) == calls  # never called outside training


def test_with_a_gpu_the_augmenter_still_touches_training_batches_only(memmap_images, monkeypatch):
    import tensorflow as tf

    images, labels = memmap_images
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["a GPU"] if kind == "GPU" else [])
    x, _ = _collect(make_dataset(images, labels % 2, batch_size=8, training=True,
                                 augmenter=lambda batch, training: batch * 0.0 + 7.0))
    np.testing.assert_array_equal(x, 7.0)
    x_eval, _ = _collect(make_dataset(images, labels % 2, batch_size=8, augmenter=lambda batch, training: batch * 0.0))
    np.testing.assert_array_equal(x_eval[:, 0, 0, 0], np.arange(30))
