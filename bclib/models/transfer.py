"""Transfer learning as notebook 05 writes it out, kept here for notebook 06, the benchmark and tests.

Phase 1: with the backbone frozen, its pooled features of a patch never change, so they are
computed once (:func:`cached_features`, stored as ``.npy`` under a key of model, weights, size,
data and rows) and the model's own head trains on them (:func:`train_head`). :func:`speedup_table`
measures, in the run, an epoch on cached features against one through the frozen backbone.
Phase 2 (:func:`fine_tune`): the top of the backbone is unfrozen with BatchNorm kept frozen,
the model recompiled at a lower learning rate and trained end to end. :func:`keep_better` puts
the phase-1 weights back when fine-tuning lowered the validation AUC.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from bclib import paths
from bclib.data.cache import mark_used
from bclib.data.pipeline import encode_labels
from bclib.models.builders import (calibrate_batchnorm, compile_model, feature_extractor, get_backbone,
                                   head_model, output_classes, unfreeze_top)
from bclib.models.training import EpochTimer, images_only, standard_callbacks


def features_cache_dir() -> Path:
    """``<cache>/features``: where :func:`extract_features` keeps ``<key>.npy`` files."""
    return paths.cache_dir() / "features"


def feature_key(**parts) -> str:
    """A short stable key from JSON-able parts (model, weights used, input size, data key, rows...)."""
    text = json.dumps(parts, sort_keys=True, default=lambda value: np.asarray(value).tolist())
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def extract_features(extractor: keras.Model, data, batch_size: int = 128, cache_key: str | None = None,
                     cache_dir: str | Path | None = None) -> np.ndarray:
    """Features of every image in the data's order, ``(N, D)`` float32.

    ``data``: an image array or a non-shuffled ``tf.data.Dataset``. With ``cache_key`` the result is
    stored as ``<cache_dir>/<cache_key>.npy`` and read back next time; the key must change whenever
    the model, its weights, the input size or the rows change (:func:`feature_key`).
    """
    cache_file = None
    if cache_key is not None:
        cache_file = Path(cache_dir or features_cache_dir()) / f"{cache_key}.npy"
        if cache_file.is_file():
            mark_used(cache_file)
            return np.load(cache_file)
    if isinstance(data, tf.data.Dataset):
        features = extractor.predict(images_only(data), verbose=0)
    else:
        features = extractor.predict(np.asarray(data), batch_size=batch_size, verbose=0)
    features = np.asarray(features, dtype="float32").reshape(len(features), -1)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache_file.with_name(cache_file.stem + ".tmp.npy")
        np.save(temporary, features)
        temporary.replace(cache_file)
    return features


def cached_features(session: Any, extractor: keras.Model, split: str, image_size: int, batch_size: int,
                    weights_used: str) -> np.ndarray:
    """Backbone features of one split, computed once per model, weights, size and rows.

    ``weights_used``: the weights choice's ``used`` (``"imagenet"``, ``"file:..."`` or ``"random"``).
    Features of a randomly initialised backbone are never cached (they differ from build to build).
    """
    positions = session.positions(split)
    key = None
    if weights_used != "random":
        rows = hashlib.sha256(np.asarray(positions, dtype=np.int64).tobytes()).hexdigest()[:12]
        key = feature_key(model=extractor.name, weights=weights_used, size=int(image_size),
                          cache=str(getattr(session.cache, "key", "")), rows=rows)
    data = session.dataset(split, image_size=image_size, batch_size=batch_size, training=False)
    return extract_features(extractor, data, batch_size=batch_size, cache_key=key)


def calibrate_random_backbone(session: Any, model: keras.Model, image_size: int, count: int = 256) -> int:
    """BatchNorm statistics of a random backbone from ``count`` training patches (see ``calibrate_batchnorm``)."""
    images, _ = next(iter(session.dataset("train", image_size=image_size, batch_size=count, training=False)))
    return calibrate_batchnorm(get_backbone(model), model.get_layer("preprocess")(images))


def time_epochs(model: keras.Model, inputs, labels=None, batch_size: int = 128, epochs: int = 3,
                warmup: int = 1) -> float:
    """Seconds of the fastest training epoch of a compiled model, after ``warmup`` epochs (tracing).

    The fastest, not the mean: on a shared machine other work only ever adds time. ``inputs``: a
    dataset, or an array with ``labels``. This trains ``model``: time a copy if its weights matter.
    """
    if epochs <= warmup:
        raise ValueError(f"epochs ({epochs}) must exceed warmup ({warmup})")
    timer = EpochTimer()
    model.fit(inputs, labels, batch_size=None if labels is None else batch_size, epochs=epochs,
              callbacks=[timer], verbose=0, shuffle=False)
    return float(min(timer.seconds[warmup:]))


def speedup_table(session: Any, model: keras.Model, train_features: np.ndarray, image_size: int,
                  batch_size: int, images: int | None = None) -> tuple[pd.DataFrame, float]:
    """Seconds per head-training epoch through the frozen backbone vs on cached features.

    Both time the same first ``images`` training patches (the profile's ``speedup_images``) on
    copies, so ``model`` is unchanged. Returns the table and the speed-up factor.
    """
    images = int(images or session.settings["speedup_images"])
    batches = max(1, images // batch_size)
    data = session.dataset("train", image_size=image_size, batch_size=batch_size, training=False).take(batches)
    count = int(sum(int(batch_labels.shape[0]) for _, batch_labels in data))
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    get_backbone(copy).trainable = False
    backbone_seconds = time_epochs(compile_model(copy), data)
    head = compile_model(keras.models.clone_model(head_model(model)))
    labels = encode_labels(session.labels("train")[:count], output_classes(model))
    features_seconds = time_epochs(head, train_features[:count], labels, batch_size=batch_size)
    factor = backbone_seconds / max(features_seconds, 1e-9)
    table = pd.DataFrame({
        "seconds per epoch": [backbone_seconds, features_seconds],
        "images per second": [count / max(backbone_seconds, 1e-9), count / max(features_seconds, 1e-9)],
    }, index=pd.Index(["through the frozen backbone", "on cached features"], name=f"{count} training patches"))
    return table, factor


def speedup_text(table: pd.DataFrame, factor: float) -> str:
    """The conclusion of :func:`speedup_table`: how much faster phase 1 is on cached features."""
    backbone_seconds, features_seconds = table["seconds per epoch"]
    measured = (f"one epoch of head training on {table.index.name} took {features_seconds:.3f} s on cached features "
                f"against {backbone_seconds:.2f} s through the frozen backbone")
    if factor <= 1:
        return (f"{measured}: no faster here, because with so few patches the fixed cost of each epoch dominates; "
                "the gain appears with more patches.")
    return (f"{measured}: {factor:.0f}x faster, measured in this run. The features cost one pass through the "
            "backbone, paid once; every further epoch of phase 1 is almost free.")


def train_head(session: Any, model: keras.Model, image_size: int, epochs: int, learning_rate: float,
               batch_size: int, patience: int, class_weight: dict | None = None, verbose: int = 2):
    """Phase 1 of notebook 05: features once, the model's own head trained on them.

    Returns ``(history, train_features)``; ``model.bclib_weights`` says which weights the backbone has.
    """
    extractor = feature_extractor(model)
    weights_used = model.bclib_weights.used
    train_features = cached_features(session, extractor, "train", image_size, batch_size, weights_used)
    val_features = cached_features(session, extractor, "val", image_size, batch_size, weights_used)
    head = compile_model(head_model(model), learning_rate)
    classes = output_classes(model)
    history = head.fit(
        train_features, encode_labels(session.labels("train"), classes),
        validation_data=(val_features, encode_labels(session.labels("val"), classes)),
        epochs=epochs, batch_size=batch_size, class_weight=class_weight, verbose=verbose,
        callbacks=[keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=patience,
                                                 restore_best_weights=True, verbose=min(verbose, 1))],
    )
    return history, train_features


def fine_tune(session: Any, model: keras.Model, image_size: int, epochs: int, learning_rate: float,
              layers: int, batch_size: int, patience: int, class_weight: dict | None = None,
              max_images: int | None = None, verbose: int = 2):
    """Phase 2 of notebook 05: unfreeze the top ``layers`` (BatchNorm frozen), recompile, train.

    ``max_images`` trains on a seeded subset of the training split; validation uses all of it.
    Early stopping restores the best epoch; the epochs go to ``history.csv``. Returns the History.
    """
    trainable = unfreeze_top(model, int(layers))
    compile_model(model, learning_rate)
    positions = fine_tune_positions(session, max_images)
    print(f"top {layers} of the backbone's {len(get_backbone(model).layers)} layers unfrozen: {trainable} of them "
          f"have weights that now train (BatchNorm stays frozen); {len(positions):,} training patches, "
          f"learning rate {learning_rate:g}")
    train_ds = session.dataset("train", image_size=image_size, batch_size=batch_size, positions=positions)
    return model.fit(
        train_ds, validation_data=session.dataset("val", image_size=image_size, batch_size=batch_size),
        epochs=epochs, class_weight=class_weight, verbose=verbose,
        callbacks=standard_callbacks(None, session.out_dir, patience, verbose=min(verbose, 1)),
    )


def fine_tune_positions(session: Any, max_images: int | None) -> np.ndarray:
    """The training patches phase 2 uses: all, or a seeded subset of ``max_images``, in split order."""
    positions = session.positions("train")
    if max_images and len(positions) > int(max_images):
        rng = np.random.default_rng(session.seed)
        positions = np.sort(rng.choice(positions, size=int(max_images), replace=False))
    return positions


def keep_better(model: keras.Model, phase1_weights: list, phase1_auc: float, phase2_auc: float) -> str:
    """Notebook 05's last step: back to the phase-1 weights when fine-tuning lowered the validation AUC.

    ``phase1_weights``: ``model.get_weights()`` saved before phase 2. Returns the phase whose
    weights the model now holds, ``"phase 1"`` or ``"phase 2"``.
    """
    if phase2_auc >= phase1_auc:
        return "phase 2"
    model.set_weights(phase1_weights)
    return "phase 1"


def keep_better_text(phase1_auc: float, phase2_auc: float, kept: str) -> str:
    """The conclusion of :func:`keep_better`: what fine-tuning did to validation AUC and which weights stay."""
    change = phase2_auc - phase1_auc
    if change == 0:
        effect = f"left the validation AUC at {phase1_auc:.3f}"
    else:
        effect = (f"{'raised' if change > 0 else 'lowered'} the validation AUC from {phase1_auc:.3f} (after phase 1) "
                  f"to {phase2_auc:.3f} ({change:+.3f})")
    reason = ("the fine-tuned model is kept" if kept == "phase 2" else
              "the fine-tuned weights are dropped and the head trained on frozen features is kept")
    return (f"fine-tuning {effect}, so {reason} ({kept} weights). These are validation numbers: choosing between "
            "the two models on them is what the validation split is for; the test split plays no part in the choice.")


#: The notebooks that train the CNN from scratch, in series order.
CNN_NOTEBOOKS = ("02_baseline_cnn", "03_class_weighting", "04_augmentation")


def best_cnn(session: Any) -> tuple[str, pd.DataFrame]:
    """The CNN notebook of this run with the highest validation ROC-AUC, and their table.

    When none has run, the name is the last of :data:`CNN_NOTEBOOKS` (a comparison then says so)
    and the table is empty.
    """
    from bclib.evaluation.experiment import run_card

    rows = {}
    for notebook in CNN_NOTEBOOKS:
        card = run_card(session, notebook)
        if card is not None:
            values = card["metrics"]["val"]
            low, high = (values.get("ci") or {}).get("roc_auc") or (float("nan"), float("nan"))
            rows[notebook] = {"validation ROC-AUC": values.get("roc_auc"), "95% CI": f"[{low:.3f}, {high:.3f}]"}
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("notebook")
    if table.empty:
        return CNN_NOTEBOOKS[-1], table
    return str(table["validation ROC-AUC"].astype(float).idxmax()), table
