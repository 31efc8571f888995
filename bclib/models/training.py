"""Training: seeds, balanced class weights, ``fit`` with early stopping on validation AUC.

:func:`fit` keeps the weights of the best validation epoch (in memory, and in
``<out_dir>/best.weights.h5`` when ``out_dir`` is given), restores them at the end whether or
not training stopped early, and writes ``history.csv`` (one row per epoch run).
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

CHECKPOINT_FILE = "best.weights.h5"
HISTORY_FILE = "history.csv"


def set_seeds(seed: int = 0, deterministic_ops: bool = False) -> None:
    """Seed Python, NumPy and Keras/TensorFlow; optionally make TF ops deterministic (slower)."""
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    if deterministic_ops:
        tf.config.experimental.enable_op_determinism()


def _integer_labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:  # one-hot
        return labels.argmax(axis=1)
    return np.rint(labels.reshape(-1)).astype("int64")


def balanced_class_weights(labels) -> dict[int, float]:
    """``{class: n_samples / (n_classes * n_class)}`` over the classes present (sklearn's 'balanced').

    Accepts integer labels, float ``(n, 1)`` labels or one-hot rows.
    """
    labels = _integer_labels(labels)
    if labels.size == 0:
        raise ValueError("cannot compute class weights from an empty label array")
    classes, counts = np.unique(labels, return_counts=True)
    return {int(c): float(labels.size / (len(classes) * n)) for c, n in zip(classes, counts)}


class BestWeights(keras.callbacks.Callback):
    """Track the best epoch on ``monitor`` (higher is better), checkpoint it, restore it at the end."""

    def __init__(self, monitor: str = "val_auc", checkpoint_path: str | Path | None = None):
        super().__init__()
        self.monitor = monitor
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.best_value = -math.inf
        self.best_epoch = 0  # 1-based; 0: no epoch finished with a finite value
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(f"monitor {self.monitor!r} not in the logged metrics {sorted(logs)}")
        value = float(logs[self.monitor])
        if math.isfinite(value) and value > self.best_value:
            self.best_value, self.best_epoch = value, epoch + 1
            self.best_weights = self.model.get_weights()
            if self.checkpoint_path is not None:
                self.model.save_weights(str(self.checkpoint_path))

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class PreciseBatchNorm(keras.callbacks.Callback):
    """Re-estimate trainable BatchNorm statistics on training images before each validation.

    BatchNorm's moving averages trail the weights: after a few hundred steps they still carry
    their initial values, and the model in inference mode gives nearly the same output for every
    image (validation AUC then reads as chance although the ranking is learnt). One forward pass in
    training mode over a fixed sample of training images, with momentum 0, replaces the moving
    statistics by the current ones ("precise BatchNorm"); no weight is trained by it.
    """

    def __init__(self, images):
        super().__init__()
        self.images = images
        self.validated = False

    def _calibrate(self) -> None:
        layers = [layer for layer in self.model._flatten_layers()
                  if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
        if not layers:
            return
        momenta = [layer.momentum for layer in layers]
        try:
            for layer in layers:
                layer.momentum = 0.0
            self.model(self.images, training=True)
        finally:
            for layer, momentum in zip(layers, momenta):
                layer.momentum = momentum

    def on_train_begin(self, logs=None):
        self.validated = False

    def on_test_begin(self, logs=None):
        self.validated = True
        self._calibrate()

    def on_train_end(self, logs=None):
        if not self.validated:  # no validation data: calibrate the final weights once
            self._calibrate()


def batchnorm_sample(train_ds, max_images: int = 512):
    """Up to ``max_images`` training inputs (first batches of ``train_ds``) for :class:`PreciseBatchNorm`."""
    batches, count = [], 0
    for batch in train_ds:
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        batches.append(inputs)
        count += int(inputs.shape[0])
        if count >= max_images:
            break
    return tf.concat(batches, axis=0)[:max_images] if batches else None


def _has_trainable_batchnorm(model: keras.Model) -> bool:
    return any(isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
               for layer in model._flatten_layers())


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


@dataclass
class TrainResult:
    """``history``: one row per epoch run (``epoch`` 1-based, the logged metrics, ``seconds``);
    ``best_epoch``: the epoch whose weights the model now holds; ``seconds``: total wall time."""

    history: pd.DataFrame
    best_epoch: int
    seconds: float
    checkpoint_path: Path | None
    monitor: str = "val_auc"
    best_value: float | None = None
    epochs_requested: int = 0

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    @property
    def stopped_early(self) -> bool:
        return self.epochs_run < self.epochs_requested


def fit(
    model: keras.Model,
    train_ds,
    val_ds,
    epochs: int,
    out_dir: str | Path | None = None,
    class_weight: dict | None = None,
    patience: int = 3,
    monitor: str = "val_auc",
    verbose: int | str = 2,
    seed: int | None = 0,
    callbacks: list | None = None,
) -> TrainResult:
    """Train a compiled model; keep the weights of the best ``monitor`` epoch (higher is better).

    Stops after ``patience`` epochs without improvement. ``verbose=2`` prints one line per
    epoch (readable in papermill HTML); ``1`` a progress bar; ``0`` nothing. ``seed`` seeds
    everything first (``None`` leaves the generators alone). ``class_weight``: e.g.
    :func:`balanced_class_weights`. With ``out_dir``: ``best.weights.h5`` and ``history.csv``.
    """
    if getattr(model, "optimizer", None) is None:
        raise ValueError("the model is not compiled; call bclib.models.builders.compile_model(model, ...) first")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if val_ds is None and monitor.startswith("val_"):
        raise ValueError(f"monitor {monitor!r} needs validation data; pass val_ds or a training metric such as 'auc'")
    if seed is not None:
        set_seeds(seed)
    checkpoint_path = None
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        checkpoint_path = out_dir / CHECKPOINT_FILE
    precise: list[keras.callbacks.Callback] = []
    if _has_trainable_batchnorm(model):
        sample = batchnorm_sample(train_ds)
        if sample is not None:
            precise.append(PreciseBatchNorm(sample))
    best = BestWeights(monitor, checkpoint_path)
    timer = EpochTimer()
    stopper = keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=patience, restore_best_weights=False)
    if class_weight is not None:
        class_weight = {int(key): float(value) for key, value in class_weight.items()}
    start = time.perf_counter()
    keras_history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=epochs,
        class_weight=class_weight,
        callbacks=[timer, *precise, best, stopper, *(callbacks or [])],
        verbose=verbose,
        shuffle=False,  # the tf.data pipeline shuffles the training set itself
    )
    seconds = time.perf_counter() - start
    history = pd.DataFrame(keras_history.history)
    history.insert(0, "epoch", np.arange(1, len(history) + 1))
    history["seconds"] = timer.seconds[: len(history)]
    if out_dir is not None:
        history.to_csv(out_dir / HISTORY_FILE, index=False)
    best_epoch = best.best_epoch or len(history)
    if best.best_epoch == 0 and checkpoint_path is not None:  # metric never finite: keep the last weights
        model.save_weights(str(checkpoint_path))
    return TrainResult(
        history=history,
        best_epoch=best_epoch,
        seconds=seconds,
        checkpoint_path=checkpoint_path,
        monitor=monitor,
        best_value=best.best_value if best.best_epoch else None,
        epochs_requested=epochs,
    )


def _inputs_only(dataset: tf.data.Dataset) -> tf.data.Dataset:
    spec = dataset.element_spec
    if isinstance(spec, tuple) and len(spec) >= 2:
        return dataset.map(lambda *items: items[0])
    return dataset


def predict_probabilities(model: keras.Model, data, batch_size: int = 256) -> np.ndarray:
    """Predicted probabilities, in the data's order: ``(N,)`` P(label 1) for a sigmoid model, else ``(N, C)``.

    ``data``: a non-shuffled ``tf.data.Dataset`` of ``(images, labels)`` or images (never a
    training dataset: its order changes every epoch), or an image array.
    """
    if isinstance(data, tf.data.Dataset):
        probabilities = model.predict(_inputs_only(data), verbose=0)
    else:
        probabilities = model.predict(np.asarray(data), batch_size=batch_size, verbose=0)
    probabilities = np.asarray(probabilities, dtype="float32")
    if probabilities.ndim == 2 and probabilities.shape[1] == 1:
        probabilities = probabilities[:, 0]
    return probabilities
