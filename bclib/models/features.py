"""Phase 1 of transfer learning: frozen-backbone features computed once, a head trained on them.

With the backbone frozen, every epoch of ordinary training pushes every image through the
whole backbone again although its output never changes. Computing the pooled features once
(:func:`extract_features`, cacheable as ``.npy``) and training the small head on them
(:func:`train_head_on_features`) gives the same head in a fraction of the time;
:func:`attach_head` then puts the trained head back into the full model for fine-tuning,
saving and Grad-CAM. :func:`compare_epoch_times` measures the speed-up for the notebooks.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from bclib import paths
from bclib.data.cache import mark_used
from bclib.models.builders import build_head, compile_model, freeze_backbone, output_classes
from bclib.data.pipeline import encode_labels
from bclib.models.training import EpochTimer, TrainResult, fit


def features_cache_dir() -> Path:
    """``<cache>/features``: where :func:`extract_features` keeps ``<key>.npy`` files."""
    return paths.cache_dir() / "features"


def feature_key(**parts) -> str:
    """A short stable key from JSON-able parts (model, weights used, input size, data key, rows...)."""
    text = json.dumps(parts, sort_keys=True, default=lambda value: np.asarray(value).tolist())
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def _images_only(data: tf.data.Dataset) -> tf.data.Dataset:
    if isinstance(data.element_spec, tuple) and len(data.element_spec) >= 2:
        return data.map(lambda *items: items[0])
    return data


def extract_features(
    feature_model: keras.Model,
    data,
    batch_size: int = 128,
    cache_key: str | None = None,
    cache_dir: str | Path | None = None,
) -> np.ndarray:
    """Features of every image, in the data's order: an ``(N, D)`` float32 array.

    ``feature_model``: images -> features (e.g. the extractor of
    :func:`bclib.models.builders.backbone_and_head`). ``data``: an image array or a non-shuffled
    ``tf.data.Dataset`` of images or ``(images, labels)``. With ``cache_key`` the result is
    stored as ``<cache_dir>/<cache_key>.npy`` and read back on the next call (the key must
    change whenever the model, its weights, the input size or the rows change: see
    :func:`feature_key`).
    """
    cache_file = None
    if cache_key is not None:
        cache_file = Path(cache_dir or features_cache_dir()) / f"{cache_key}.npy"
        if cache_file.is_file():
            mark_used(cache_file)
            return np.load(cache_file)
    if isinstance(data, tf.data.Dataset):
        features = feature_model.predict(_images_only(data), verbose=0)
    else:
        features = feature_model.predict(np.asarray(data), batch_size=batch_size, verbose=0)
    features = np.asarray(features, dtype="float32").reshape(len(features), -1)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache_file.with_name(cache_file.stem + ".tmp.npy")
        np.save(temporary, features)
        temporary.replace(cache_file)
    return features


def feature_dataset(
    features: np.ndarray,
    labels: np.ndarray,
    batch_size: int = 256,
    training: bool = False,
    seed: int = 0,
    num_classes: int = 2,
) -> tf.data.Dataset:
    """Batches of ``(features, encoded labels)``; shuffled every epoch when ``training``."""
    features = np.asarray(features, dtype="float32")
    if len(features) != len(labels):
        raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
    dataset = tf.data.Dataset.from_tensor_slices((features, encode_labels(np.asarray(labels), num_classes)))
    if training:
        dataset = dataset.shuffle(len(features), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


@dataclass
class HeadResult:
    """The trained head and how its training went (:class:`bclib.models.training.TrainResult`)."""

    head: keras.Model
    training: TrainResult

    @property
    def history(self):
        return self.training.history

    @property
    def seconds_per_epoch(self) -> float:
        return float(self.training.history["seconds"].mean())


def train_head_on_features(
    features: np.ndarray,
    labels: np.ndarray,
    val_features: np.ndarray,
    val_labels: np.ndarray,
    epochs: int = 20,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    num_classes: int = 2,
    dropout: float = 0.3,
    class_weight: dict | None = None,
    patience: int = 3,
    seed: int = 0,
    out_dir: str | Path | None = None,
    verbose: int | str = 2,
) -> HeadResult:
    """Train a fresh head (dropout + output layer) on cached features, best epoch on val AUC."""
    keras.utils.set_random_seed(seed)
    head = compile_model(
        build_head(int(np.shape(features)[1]), num_classes, dropout, seed), learning_rate, num_classes
    )
    train_ds = feature_dataset(features, labels, batch_size, training=True, seed=seed, num_classes=num_classes)
    val_ds = feature_dataset(val_features, val_labels, batch_size, num_classes=num_classes)
    result = fit(
        head,
        train_ds,
        val_ds,
        epochs,
        out_dir=out_dir,
        class_weight=class_weight,
        patience=patience,
        verbose=verbose,
        seed=seed,
    )
    return HeadResult(head=head, training=result)


def attach_head(full_model: keras.Model, head: keras.Model) -> keras.Model:
    """Copy the head's weights into the layers of the same names in ``full_model``; returns it.

    Afterwards ``full_model(images)`` equals ``head(features of images)``.
    """
    copied = 0
    for layer in head.layers:
        if not layer.weights:
            continue
        try:
            target = full_model.get_layer(layer.name)
        except ValueError:
            raise ValueError(f"the full model has no layer {layer.name!r} to receive the head's weights") from None
        source = layer.get_weights()
        if [w.shape for w in source] != [w.shape for w in target.get_weights()]:
            raise ValueError(
                f"layer {layer.name!r}: head weights {[w.shape for w in source]} do not fit the model's "
                f"{[w.shape for w in target.get_weights()]} (other backbone or number of classes?)"
            )
        target.set_weights(source)
        copied += 1
    if copied == 0:
        raise ValueError("the head has no weights to copy")
    return full_model


def time_epochs(model: keras.Model, dataset: tf.data.Dataset, epochs: int = 2, warmup: int = 1) -> float:
    """Mean seconds per training epoch of a compiled model, leaving out ``warmup`` epochs (tracing).

    This trains ``model``: time a copy if its weights matter.
    """
    if epochs <= warmup:
        raise ValueError(f"epochs ({epochs}) must exceed warmup ({warmup})")
    timer = EpochTimer()
    model.fit(dataset, epochs=epochs, callbacks=[timer], verbose=0, shuffle=False)
    return float(np.mean(timer.seconds[warmup:]))


def compare_epoch_times(
    model: keras.Model,
    image_dataset: tf.data.Dataset,
    features: np.ndarray,
    labels: np.ndarray,
    batch_size: int = 64,
    max_batches: int | None = None,
    epochs: int = 2,
) -> dict:
    """Seconds per epoch training the head through the frozen backbone vs on cached features.

    Both run on the same images (the first ``max_batches`` batches when given) and on copies,
    so ``model`` is unchanged. Returns ``{"images", "backbone_seconds_per_epoch",
    "features_seconds_per_epoch", "speedup"}``.
    """
    if max_batches is not None:
        image_dataset = image_dataset.take(max_batches)
    n_images = int(sum(int(tf.shape(batch[1])[0]) for batch in image_dataset))
    num_classes = output_classes(model)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    freeze_backbone(copy)
    compile_model(copy, num_classes=num_classes)
    backbone_seconds = time_epochs(copy, image_dataset, epochs=epochs)
    head = compile_model(build_head(int(np.shape(features)[1]), num_classes), num_classes=num_classes)
    feature_ds = feature_dataset(
        features[:n_images], np.asarray(labels)[:n_images], batch_size, training=True, num_classes=num_classes
    )
    features_seconds = time_epochs(head, feature_ds, epochs=epochs)
    return {
        "images": n_images,
        "backbone_seconds_per_epoch": backbone_seconds,
        "features_seconds_per_epoch": features_seconds,
        "speedup": backbone_seconds / max(features_seconds, 1e-9),
    }
