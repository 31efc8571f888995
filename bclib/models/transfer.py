"""Transfer learning as notebook 05 writes it out, kept here for notebook 06, the benchmark and tests.

Phase 1 trains the model's own head on backbone features computed once (:func:`train_head`); phase 2
unfreezes the top of the backbone, BatchNorm frozen, and trains end to end at a lower learning rate
(:func:`fine_tune`); :func:`keep_better` keeps the phase with the higher validation AUC. The ``*_text``
functions word the notebooks' conclusions from this run's numbers.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from bclib import paths
from bclib.data.cache import mark_used
from bclib.data.pipeline import encode_labels
from bclib.evaluation.bootstrap import paired_bootstrap_difference
from bclib.evaluation.conclusions import ci_text
from bclib.evaluation.conclusions import conclude as show_conclusion
from bclib.evaluation.metrics import positive_probability
from bclib.evaluation.modelcard import weights_description
from bclib.models.builders import (calibrate_batchnorm, compile_model, feature_extractor, get_backbone,
                                   head_model, output_classes, unfreeze_top)
from bclib.models.training import EpochTimer, predict_in_order, standard_callbacks
from bclib.models.weights import WeightsChoice


def extract_features(extractor: keras.Model, data, batch_size: int = 128, cache_key: str | None = None,
                     cache_dir: str | Path | None = None) -> np.ndarray:
    """Features of every image in the data's order, ``(N, D)`` float32.

    ``data``: an image array or a non-shuffled ``tf.data.Dataset``. With ``cache_key`` the result is
    stored as ``<cache_dir>/<cache_key>.npy`` (default ``<cache>/features``) and read back next time;
    the key must change whenever the model, its weights, the input size or the rows change.
    """
    cache_file = None
    if cache_key is not None:
        cache_file = Path(cache_dir or paths.cache_dir() / "features") / f"{cache_key}.npy"
        if cache_file.is_file():
            mark_used(cache_file)
            return np.load(cache_file)
    features = predict_in_order(extractor, data, batch_size)
    features = features.reshape(len(features), -1)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache_file.with_name(cache_file.stem + ".tmp.npy")
        np.save(temporary, features)
        temporary.replace(cache_file)
    return features


def cached_features(session: Any, extractor: keras.Model, split: str, image_size: int, batch_size: int,
                    weights_used: str) -> np.ndarray:
    """Backbone features of one split, computed once per model, weights, size, packed data and rows.

    ``weights_used``: the weights choice's ``used`` (``"imagenet"``, ``"file:..."`` or ``"random"``).
    Features of a randomly initialised backbone are never cached (they differ from build to build).
    """
    key = None
    if weights_used != "random":
        digest = hashlib.sha256(np.asarray(session.positions(split), dtype=np.int64).tobytes())
        parts = [extractor.name, weights_used, int(image_size), session.cache.directory.name]
        digest.update(json.dumps(parts).encode())
        key = digest.hexdigest()[:20]
    data = session.dataset(split, image_size=image_size, batch_size=batch_size, training=False)
    return extract_features(extractor, data, batch_size=batch_size, cache_key=key)


def calibrate_random_backbone(session: Any, model: keras.Model, image_size: int, count: int = 256) -> int:
    """BatchNorm statistics of a random backbone from ``count`` training patches (see ``calibrate_batchnorm``)."""
    images, _ = next(iter(session.dataset("train", image_size=image_size, batch_size=count, training=False)))
    return calibrate_batchnorm(get_backbone(model), model.get_layer("preprocess")(images))


def time_epochs(model: keras.Model, inputs, labels=None, batch_size: int = 128, epochs: int = 6,
                warmup: int = 1) -> float:
    """Median seconds of a compiled model's training epochs after ``warmup`` untimed ones (tracing).

    The median of several epochs, so one epoch slowed by other work on a shared machine does not
    decide the number. ``inputs``: a dataset, or an array with ``labels``. This trains ``model``:
    time a copy if its weights matter.
    """
    if epochs <= warmup:
        raise ValueError(f"epochs ({epochs}) must exceed warmup ({warmup})")
    timer = EpochTimer()
    model.fit(inputs, labels, batch_size=None if labels is None else batch_size, epochs=epochs,
              callbacks=[timer], verbose=0, shuffle=False)
    return float(np.median(timer.seconds[warmup:]))


def speedup_table(session: Any, model: keras.Model, train_features: np.ndarray, image_size: int,
                  batch_size: int, images: int | None = None) -> tuple[pd.DataFrame, float]:
    """Seconds per head-training epoch through the frozen backbone vs on cached features.

    Both time the same first ``images`` training patches (the profile's ``speedup_images``) on
    copies, so ``model`` is unchanged; each is the median of five epochs after a warm-up epoch
    (:func:`time_epochs`). Returns the table and the speed-up factor.
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
        "ms per patch": [1000 * backbone_seconds / count, 1000 * features_seconds / count],
    }, index=pd.Index(["through the frozen backbone", "on cached features"], name=f"{count} training patches"))
    return table, factor


def speedup_text(table: pd.DataFrame, factor: float) -> str:
    """The conclusion of :func:`speedup_table`: how much faster phase 1 is on cached features."""
    backbone_seconds, features_seconds = table["seconds per epoch"]
    measured = (f"one epoch of head training on {table.index.name} took {features_seconds:.3f} s on cached features "
                f"against {backbone_seconds:.2f} s through the frozen backbone (medians of five epochs)")
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
              max_images: int | None = None, verbose: int = 2, callbacks: list | None = None):
    """Phase 2 of notebook 05: unfreeze the top ``layers`` (BatchNorm frozen), recompile, train.

    ``max_images`` trains on a seeded subset of the training split; validation uses all of it.
    Early stopping restores the best epoch; the epochs go to ``history.csv``; ``callbacks`` are added
    (a timer, say). Returns the History.
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
        callbacks=standard_callbacks(None, session.out_dir, patience, verbose=min(verbose, 1)) + list(callbacks or []),
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

    ``phase1_weights``: ``model.get_weights()`` saved right after phase 1. Returns the phase whose
    weights the model now holds, ``"phase 1"`` or ``"phase 2"``.
    """
    if phase2_auc >= phase1_auc:
        return "phase 2"
    model.set_weights(phase1_weights)
    return "phase 1"


def paired_auc(session: Any, probabilities_a, probabilities_b, split: str = "val") -> dict:
    """ROC-AUC of two models' predictions of ``split``, and the paired patient-bootstrap interval of b - a.

    Two classes: :func:`~bclib.evaluation.bootstrap.paired_bootstrap_difference` with the profile's
    resamples. More classes: the macro one-vs-rest AUCs, without an interval (``ci`` is ``None``).
    """
    labels = session.labels(split)
    if session.num_classes > 2:
        from sklearn.metrics import roc_auc_score

        a, b = (float(roc_auc_score(labels, np.asarray(p), multi_class="ovr")) for p in (probabilities_a, probabilities_b))
        return {"metric": "roc_auc", "a": a, "b": b, "difference": b - a, "ci": None, "excludes_zero": False,
                "n_patients": len(set(session.patient_ids(split)))}
    positive = int(session.positive_label)
    a, b = (positive_probability(np.asarray(p).reshape(len(labels), -1)[:, -1], positive)
            for p in (probabilities_a, probabilities_b))
    return paired_bootstrap_difference(labels, a, b, session.patient_ids(split), metric="roc_auc",
                                       n_boot=int(session.settings["n_boot"]), seed=session.seed,
                                       positive_label=positive)


def paired_auc_text(result: dict) -> str:
    """``0.646 -> 0.662 (+0.016, 95 % CI ... over 35 patients, includes zero: no clear difference)``.

    The difference is printed from the rounded values shown beside it.
    """
    a, b = round(result["a"], 3), round(result["b"], 3)
    text = f"{a:.3f} -> {b:.3f} ({b - a:+.3f}"
    if result.get("ci") is None:
        return text + ", no interval)"
    verdict = ("includes zero: no clear difference" if not result["excludes_zero"] else
               "excludes zero only just: a real but borderline difference"
               if borderline(result) else "excludes zero: a real difference")
    return text + f", {ci_text(*result['ci'], signed=True)} over {result['n_patients']} patients, {verdict})"


def borderline(result: dict) -> bool:
    """True when an interval excludes zero but its end nearer zero is within 0.0005 of it."""
    return bool(result["excludes_zero"]) and min(abs(bound) for bound in result["ci"]) < 0.0005


def keep_better_text(comparison: dict, kept: str) -> str:
    """The conclusion of the keep-the-better step: what fine-tuning did, how sure that is, which weights stay.

    ``comparison``: :func:`paired_auc` of phase 1 (a) against phase 2 (b) on validation.
    """
    a, b = round(comparison["a"], 3), round(comparison["b"], 3)
    changed = b != a and (comparison.get("ci") is None or bool(comparison["excludes_zero"]))
    verb = ("raised" if b > a else "lowered") if changed else "did not change"
    noise = " beyond noise" if b != a and not changed else ""
    reason = ("the fine-tuned model is kept" if kept == "phase 2" else
              "the phase-1 weights go back in and the fine-tuned ones are dropped")
    sure = ("The two phases differ on these patients, but only just" if comparison["excludes_zero"] and
            borderline(comparison) else "The two phases really differ on these patients" if comparison["excludes_zero"] else
            "On these patients the two phases cannot be told apart: the choice is close to a coin toss"
            if comparison.get("ci") is not None else "Without an interval, how sure this is cannot be said")
    return (f"fine-tuning {verb} the validation AUC{noise}: {paired_auc_text(comparison)}. {sure}, and {reason}. Both numbers "
            "come from the same validation split, on which each phase's epoch had already been picked as its best, so "
            "each flatters its own phase a little; the test split plays no part.")


def not_transfer_note(weights: WeightsChoice) -> str:
    """``""`` with pretrained weights; else a sentence saying the backbone was random, so not transfer learning."""
    if weights.is_pretrained:
        return ""
    started = (weights_description({"weights": weights.to_card()}) if weights.requested is not None else
               "random weights (`weights = None`)")
    return f" The backbone started from {started}: this is not transfer learning."


def conclude(weights: WeightsChoice, *sentences: str) -> None:
    """Show a conclusion of a transfer notebook: the sentences, then :func:`not_transfer_note`."""
    show_conclusion(" ".join(sentence.strip() for sentence in sentences if sentence) + not_transfer_note(weights))


def training_scores(model: keras.Model, train_features: np.ndarray, labels) -> dict[str, float]:
    """Loss and AUC of the model's head on its training features, scored like validation.

    Inference mode (no dropout) and no class weights, with the head's current weights.
    """
    head = compile_model(head_model(model))   # the model's own head layers; compiling it leaves the model as it was
    scores = head.evaluate(train_features, encode_labels(labels, output_classes(model)), verbose=0, return_dict=True)
    return {"loss": float(scores["loss"]), "auc": float(scores["auc"])}


def curves_text(history: Any, class_weight: dict | None = None, training_as_validation: dict | None = None,
                val_probabilities=None) -> str:
    """Why a transfer model's validation curves can look better than its training curves, from the log.

    ``training_as_validation``: :func:`training_scores` at the restored epoch; ``val_probabilities``:
    the model's validation P(positive class), to say how many lie near the log's threshold 0.5.
    """
    logs = pd.DataFrame(getattr(history, "history", history))
    if not {"loss", "val_loss"} <= set(logs):
        return ""
    epochs = len(logs)
    lower_loss = int((logs["val_loss"] < logs["loss"]).sum())
    higher_auc = int((logs["val_auc"] > logs["auc"]).sum()) if {"auc", "val_auc"} <= set(logs) else 0
    sentences = []
    if lower_loss or higher_auc:
        how = "with dropout active" + (" and with class weights" if class_weight else "")
        seen = (f"The validation loss was below the training loss in {lower_loss} of {epochs} epochs, and the "
                f"validation AUC above the training AUC in {higher_auc}" if epochs > 1 else
                f"In its one epoch the validation {'loss was below' if lower_loss else 'AUC was above'} the training one")
        sentences.append(f"{seen}: the training numbers are computed {how} and averaged over an epoch while the weights "
                         "still change, the validation numbers without either, at the epoch's end.")
    if training_as_validation and "val_auc" in logs:
        best = int(np.nanargmax(logs["val_auc"].to_numpy(dtype=float)))
        loss, auc = training_as_validation["loss"], training_as_validation["auc"]
        val_loss, val_auc = float(logs["val_loss"].iloc[best]), float(logs["val_auc"].iloc[best])
        verdict = ("on equal terms the model does better on its training patches, as expected" if auc > val_auc + 0.02
                   else "even on equal terms the validation patients come out easier for this model than the training "
                   "ones: a property of this split, not of training" if auc < val_auc - 0.02 else
                   "on equal terms the two AUCs are within 0.02, so the gap in the log comes from how its numbers are "
                   "computed")
        sentences.append(f"Scored like validation (no dropout, no class weights) at the restored epoch, the training "
                         f"patches give loss {loss:.3f} and AUC {auc:.3f}, against {val_loss:.3f} and {val_auc:.3f} on "
                         f"validation: {verdict}.")
    if "val_accuracy" in logs and epochs > 1:
        low, high = float(logs["val_accuracy"].min()), float(logs["val_accuracy"].max())
        if high - low >= 0.1:
            text = (f"The log's accuracy is taken at the threshold 0.5, not at the threshold chosen later, and the "
                    f"validation accuracy ranged from {low:.3f} to {high:.3f} over the epochs")
            if val_probabilities is not None:
                scores = np.asarray(val_probabilities, dtype=float).reshape(-1)
                near = float(np.mean(np.abs(scores - 0.5) < 0.1))
                text += (f": {near:.0%} of the validation patches get a probability between 0.4 and 0.6, so a small "
                         "shift of the output moves many of them across 0.5").replace("%", " %")
            sentences.append(text + ".")
    return " ".join(sentences)


def at_half_text(card: dict) -> str:
    """The card's validation sensitivity and specificity at the fixed threshold 0.5, beside the chosen one's."""
    at_half = card.get("metrics", {}).get("val", {}).get("at_0_5")
    if not at_half:
        return ""
    return (f"At the fixed threshold 0.5 instead, the same probabilities give sensitivity {at_half['sensitivity']:.3f} "
            f"and specificity {at_half['specificity']:.3f} (the model card keeps both under `at_0_5`).")


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
