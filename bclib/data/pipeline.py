"""tf.data input pipeline over the packed uint8 image cache (a memmap or any numpy array).

The dataset is built over *row positions*: positions are (shuffled when training and) batched, and
each batch is gathered from the array in one numpy call as float32 0..255 (models rescale inside),
so a cache larger than memory streams from the memory map. Casting in numpy keeps uint8 out of the
graph, where TensorFlow would move flips and transposes onto a slow uint8 path. Then, per batch:
augment (training only), resize, prefetch.

Seeded random layers draw in the order batches reach them, so on a CPU the augmenter runs in order
and a seeded run repeats exactly; with a GPU (not bit-reproducible anyway) it runs in parallel.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


def encode_labels(labels: np.ndarray, num_classes: int = 2) -> np.ndarray:
    """Integer labels -> float32 ``(n, 1)`` for two classes (sigmoid output, binary cross-entropy),
    else one-hot ``(n, num_classes)`` (categorical cross-entropy; it also lets the AUC metric work)."""
    labels = np.asarray(labels)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D array of integers, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in 0..{num_classes - 1}, got values {labels.min()}..{labels.max()}")
    if num_classes == 2:
        return labels.astype("float32").reshape(-1, 1)
    return np.eye(num_classes, dtype="float32")[labels.astype("int64")]


def _check_inputs(images, labels, positions) -> np.ndarray:
    if getattr(images, "ndim", None) != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be an (N, H, W, 3) array, got shape {getattr(images, 'shape', None)}")
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if positions is None:
        return np.arange(len(images), dtype="int64")
    positions = np.asarray(positions, dtype="int64").reshape(-1)
    if positions.size and (positions.min() < 0 or positions.max() >= len(images)):
        raise ValueError(f"positions must be in 0..{len(images) - 1}, got {positions.min()}..{positions.max()}")
    return positions


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    positions: np.ndarray | None = None,
    batch_size: int = 64,
    training: bool = False,
    image_size: int | None = None,
    augmenter: Callable | None = None,
    seed: int = 0,
    num_classes: int = 2,
) -> tf.data.Dataset:
    """Batches ``(images float32 0..255, labels)`` of the rows ``positions`` (default: all), labels
    as :func:`encode_labels` gives them.

    ``training``: reshuffle every epoch (deterministic for ``seed``) and apply
    ``augmenter(batch, training=True)`` if given. Otherwise the order is ``positions`` order, so
    predictions line up with ``labels[positions]``. ``image_size``: resize square (bilinear,
    antialiased when shrinking).
    """
    positions = _check_inputs(images, labels, positions)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(positions) == 0:
        raise ValueError("no rows selected (positions is empty)")
    encoded = encode_labels(np.asarray(labels), num_classes)
    height, width = int(images.shape[1]), int(images.shape[2])
    label_width = encoded.shape[1]

    def gather(batch_positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if training:  # order inside a shuffled batch is irrelevant; sorted reads are faster
            batch_positions = np.sort(batch_positions)
        return np.asarray(images[batch_positions], dtype=np.float32), encoded[batch_positions]

    def gather_batch(batch_positions):
        batch_images, batch_labels = tf.numpy_function(
            gather, [batch_positions], [tf.float32, tf.float32], stateful=False
        )
        batch_images.set_shape([None, height, width, 3])
        batch_labels.set_shape([None, label_width])
        return batch_images, batch_labels

    dataset = tf.data.Dataset.from_tensor_slices(positions)
    if training:
        dataset = dataset.shuffle(len(positions), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(gather_batch, num_parallel_calls=AUTOTUNE, deterministic=True)
    if training and augmenter is not None:
        # On a CPU in order, so the augmenter's seeded draws repeat from run to run; a GPU needs the parallel feed.
        parallel = {"num_parallel_calls": AUTOTUNE, "deterministic": True} if tf.config.list_physical_devices("GPU") else {}
        dataset = dataset.map(lambda images, labels: (augmenter(images, training=True), labels), **parallel)
    if image_size is not None and not int(image_size) == height == width:
        dataset = dataset.map(lambda images, labels: (resize_batch(images, int(image_size)), labels),
                              num_parallel_calls=AUTOTUNE, deterministic=True)
    return dataset.prefetch(AUTOTUNE)


def resize_batch(images, size: int) -> tf.Tensor:
    """A batch ``(N, H, W, 3)`` as the model's float32 0..255 input, ``size`` x ``size``.

    The one resize used by training, evaluation, ``bclib predict`` and Grad-CAM (bilinear,
    antialiased when shrinking), so a model sees the same pixels wherever its input comes from.
    """
    images = tf.cast(images, tf.float32)
    height, width = int(images.shape[1]), int(images.shape[2])
    if height == width == size:
        return images
    resized = tf.image.resize(images, (size, size), method="bilinear", antialias=size < max(height, width))
    return tf.clip_by_value(resized, 0.0, 255.0)  # the antialiasing kernel can overshoot 255 by a rounding error


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """:func:`resize_batch` in RAM: a numpy batch in, a float32 numpy batch out."""
    return resize_batch(np.asarray(images), size).numpy()
