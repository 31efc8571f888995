"""Training helpers the notebooks show once and reuse: seeds, class weights, callbacks, timers, predictions.

Notebook 02 writes its callbacks out (:class:`PreciseBatchNorm`, ``EarlyStopping`` restoring the best
epoch, ``CSVLogger``); :func:`standard_callbacks` is the same list for later notebooks. Notebook 03
computes class weights with scikit-learn; :func:`balanced_class_weights` is that cell.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from bclib.models.builders import calibrate_batchnorm

HISTORY_FILE = "history.csv"


def set_seeds(seed: int = 0) -> None:
    """Seed Python, NumPy and TensorFlow (``keras.utils.set_random_seed`` seeds all three)."""
    keras.utils.set_random_seed(seed)


def balanced_class_weights(labels) -> dict[int, float]:
    """Notebook 03's class weights: ``n_images / (n_classes * n_images_of_class)`` per class present."""
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.asarray(labels).reshape(-1)
    if labels.size == 0:
        raise ValueError("cannot compute class weights from an empty label array")
    classes = np.unique(labels)
    weights = compute_class_weight("balanced", classes=classes, y=labels)
    return {int(label): float(weight) for label, weight in zip(classes, weights)}


def images_only(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """The images of a dataset of ``(images, labels)`` batches (unchanged if it holds images only)."""
    if isinstance(dataset.element_spec, tuple) and len(dataset.element_spec) >= 2:
        return dataset.map(lambda images, *rest: images)
    return dataset


class PreciseBatchNorm(keras.callbacks.Callback):
    """Re-estimate trainable BatchNorm statistics on training images before each validation.

    BatchNorm's moving averages trail the weights: after a few hundred steps they still carry
    their initial values, and in inference mode the model then gives nearly the same output for
    every image (validation AUC reads as chance although the ranking is learnt). ``calibrate_batchnorm``
    on a fixed sample of training images replaces them by the current ones ("precise BatchNorm").
    """

    def __init__(self, train_dataset: tf.data.Dataset, max_images: int = 512):
        super().__init__()
        self.images = next(iter(images_only(train_dataset).unbatch().batch(max_images)))
        self.validated = False

    def on_train_begin(self, logs=None):
        self.validated = False

    def on_test_begin(self, logs=None):
        self.validated = True
        calibrate_batchnorm(self.model, self.images, trainable_only=True)

    def on_train_end(self, logs=None):
        if not self.validated:  # no validation data: calibrate the final weights once
            calibrate_batchnorm(self.model, self.images, trainable_only=True)


def standard_callbacks(train_dataset: tf.data.Dataset | None, out_dir: str | Path | None, patience: int,
                       monitor: str = "val_auc", verbose: int = 1) -> list[keras.callbacks.Callback]:
    """Notebook 02's callbacks: precise BatchNorm, early stopping that restores the best epoch, a CSV log.

    ``train_dataset=None`` leaves precise BatchNorm out: fine-tuning keeps every BatchNorm layer
    frozen, so there is nothing to re-estimate.
    """
    callbacks: list[keras.callbacks.Callback] = [] if train_dataset is None else [PreciseBatchNorm(train_dataset)]
    callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=patience,
                                                   restore_best_weights=True, verbose=verbose))
    if out_dir is not None:
        callbacks.append(keras.callbacks.CSVLogger(str(Path(out_dir) / HISTORY_FILE)))
    return callbacks


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds of each epoch (training and validation)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


class StepTimer(keras.callbacks.Callback):
    """Wall-clock intervals between consecutive training steps, the first ``skip`` of each
    epoch left out (while the input pipeline fills)."""

    def __init__(self, skip: int = 2):
        super().__init__()
        self.skip = skip
        self.intervals: list[float] = []
        self._last: float | None = None
        self._step = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._last, self._step = None, 0

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self._last is not None and self._step > self.skip:
            self.intervals.append(now - self._last)
        self._last, self._step = now, self._step + 1


def milliseconds_per_patch(networks: dict[Any, tuple[keras.Model, np.ndarray]], batch_size: int,
                           repeats: int = 5) -> dict[Any, float]:
    """Median milliseconds per image of each ``network.predict`` over its images, in batches of ``batch_size``.

    ``networks``: ``{name: (network, images)}``. Each network makes one untimed call first (it traces the
    graph); then the timed calls take turns, network by network, ``repeats`` times, so a spell of other
    work on the machine slows them all alike instead of one of them.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for network, images in networks.values():
        network.predict(np.asarray(images), batch_size=batch_size, verbose=0)
    seconds: dict[str, list[float]] = {name: [] for name in networks}
    for _ in range(repeats):
        for name, (network, images) in networks.items():
            started = time.perf_counter()
            network.predict(np.asarray(images), batch_size=batch_size, verbose=0)
            seconds[name].append(time.perf_counter() - started)
    return {name: 1000 * float(np.median(seconds[name])) / len(networks[name][1]) for name in networks}


def predict_in_order(model: keras.Model, data, batch_size: int = 256) -> np.ndarray:
    """``model.predict`` in the data's order, as float32.

    ``data``: a non-shuffled ``tf.data.Dataset`` of ``(images, labels)`` or images (never a
    training dataset: its order changes every epoch), or an image array.
    """
    if isinstance(data, tf.data.Dataset):
        return np.asarray(model.predict(images_only(data), verbose=0), dtype="float32")
    return np.asarray(model.predict(np.asarray(data), batch_size=batch_size, verbose=0), dtype="float32")


def predict_probabilities(model: keras.Model, data, batch_size: int = 256) -> np.ndarray:
    """Predicted probabilities (:func:`predict_in_order`): ``(N,)`` P(label 1) for a sigmoid model, else ``(N, C)``."""
    probabilities = predict_in_order(model, data, batch_size)
    return probabilities[:, 0] if probabilities.ndim == 2 and probabilities.shape[1] == 1 else probabilities
