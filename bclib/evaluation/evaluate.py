"""``bclib evaluate``: a saved model (``model.keras`` + its card) on a dataset folder, honestly.

The split is re-made with the card's method and seed and checked against the card's patient hash
(or every image is taken, for a folder the model has never seen); metrics are computed at the card's
validation-chosen threshold, with patient-bootstrap intervals and notes for whatever inflates them.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bclib import DISCLAIMER
from bclib.evaluation import metrics, modelcard
from bclib.evaluation.bootstrap import BOOTSTRAP_METRICS, binary_metrics_with_ci, format_interval, sanity_notes
from bclib.evaluation.explain import model_input_size
from bclib.data.imageio import fit_to_square

SPLIT_CHOICES = ("test", "val", "all", "official:test", "official:val")
#: Metrics shown again at the card's benchmark threshold.
BENCHMARK_METRICS = ("balanced_accuracy", "f1", "sensitivity", "specificity")


def _decode_batch(index, positions: range, image_size: int, pool: ThreadPoolExecutor) -> np.ndarray:
    images = pool.map(lambda position: fit_to_square(index.load_image(position), image_size), positions)
    return np.stack(list(images))


def predict_index(model, index, image_size: int, batch_size: int = 256, progress: bool = True) -> np.ndarray:
    """Probabilities for every row of ``index``, in row order.

    Each image is decoded and placed in an ``image_size`` square as the training cache packs it
    (:func:`~bclib.data.imageio.fit_to_square`), then resized to the model's input by training's
    :func:`~bclib.data.pipeline.resize_batch`; the next batch decodes while the current one is
    predicted. Returns ``(N,)`` P(label 1) for a one-sigmoid model, ``(N, C)`` otherwise.
    """
    import tensorflow as tf
    from tqdm.auto import tqdm

    from bclib.data.pipeline import resize_batch

    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if len(index) == 0:
        raise ValueError("the index holds no images to predict")
    target = model_input_size(model)
    batches = [range(start, min(start + batch_size, len(index))) for start in range(0, len(index), batch_size)]
    outputs = []
    with ThreadPoolExecutor(min(8, os.cpu_count() or 2)) as pool, ThreadPoolExecutor(1) as prefetch, \
            tqdm(total=len(index), desc="predict", unit="img", disable=not progress) as bar:
        pending = prefetch.submit(_decode_batch, index, batches[0], image_size, pool)
        for number in range(len(batches)):
            batch = pending.result()
            if number + 1 < len(batches):
                pending = prefetch.submit(_decode_batch, index, batches[number + 1], image_size, pool)
            tensor = resize_batch(batch, target[0]) if target else tf.convert_to_tensor(batch, tf.float32)
            outputs.append(np.asarray(model(tensor, training=False), dtype=np.float32))
            bar.update(len(batch))
    probabilities = np.concatenate(outputs)
    return probabilities[:, 0] if probabilities.ndim == 2 and probabilities.shape[1] == 1 else probabilities


def _same_path(a: Any, b: Any) -> bool:
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


def _select(index, card: dict, split: str, seed: int | None, notes: list[str]) -> tuple[np.ndarray, dict]:
    """Row positions of the chosen split's patients, and a description of the selection."""
    if split not in SPLIT_CHOICES:
        raise ValueError(f"unknown split {split!r}; choose one of {list(SPLIT_CHOICES)}")
    card_split = card.get("split") or {}
    if split == "all":
        trained_on = (card.get("dataset") or {}).get("root")
        if card.get("dataset", {}).get("name") == index.name and (
            _same_path(trained_on, index.root) or _same_path(trained_on, Path(index.root).parent)
        ):
            notes.append(
                "split='all' on the folder the model was trained on includes its training and validation "
                "patients: these metrics are optimistic; use split='test'"
            )
        return np.arange(len(index)), {"split": "all", "split_method": None, "seed": None, "split_matches_card": None}
    from bclib.data.splits import make_split, official_patients

    card_method = card_split.get("method") or "patient"
    used_seed = int(card_split.get("seed", 0) if seed is None else seed)
    split_index = index
    max_images = card_split.get("max_images")
    if card_method != "official" and max_images:
        from bclib.session import subsample_patients

        split_index = subsample_patients(index, int(max_images), used_seed)
    if split.startswith("official:"):
        method, name = card_method, split.split(":", 1)[1]   # the model's split, whose patients are checked below
        patients = set(official_patients(index, name))
        matches, honest = None, card_method == "official" and name == "test"
        if card_method == "benchmark":  # its test patients are one official list, whole: never trained or chosen on
            made = make_split(split_index, card_method, seed=used_seed)
            honest = made.benchmark_list == name
            matches = (card_split.get("patients_hash") == made.patients_hash()) if card_split.get("patients_hash") else None
        if card_method == "official" and name == "val":
            notes.append("the model's threshold and epochs were chosen on the official validation patients: these are "
                         "validation numbers, optimistic by construction")
        elif not honest:
            notes.append(f"the model was trained on a {card_method!r} split whose test set is not these patients: "
                         f"official {name} patients may have been in its training or validation data")
    else:
        method, name = card_method, split
        made = make_split(split_index, method, seed=used_seed)
        patients = set(made.patients(name))
        stored_hash = card_split.get("patients_hash")
        matches = (stored_hash == made.patients_hash()) if stored_hash else None
    positions = np.flatnonzero(index.frame["patient_id"].isin(patients).to_numpy())
    if method == "image":
        notes.append("the card's split is image-level: patients leak between train and test, metrics are inflated")
    if matches is False:
        notes.append(
            "the re-made split's patients differ from those recorded in the model card (other data, seed or "
            "max_images): some of these patients may have been used for training; treat the metrics as optimistic"
        )
    if max_images and card_method != "official":
        notes.append(f"all images of the {len(patients)} {name} patients are evaluated "
                     f"(training used a subsample of {max_images} images)")
    return positions, {"split": split, "split_method": method, "seed": used_seed, "split_matches_card": matches}


def evaluate_model(model_path: str | os.PathLike, dataset: str = "idc", data: str | os.PathLike | None = None,
                   split: str = "test", seed: int | None = None, n_boot: int = 1000, batch_size: int = 256,
                   progress: bool = False) -> dict:
    """Metrics of a saved model on ``dataset`` at the card's threshold, with patient bootstrap CIs.

    ``split``: ``"test"`` / ``"val"`` (the card's split method, re-made with ``seed`` or the
    card's seed), ``"official:test"`` / ``"official:val"`` (the published test or validation patients), or
    ``"all"`` (every image: for a folder the model has never seen). Raises :class:`bclib.evaluation.modelcard.ModelLoadError` for a
    missing/corrupt model or card, :class:`bclib.data.datasets.DatasetError` for bad data.
    Returns the flat metric dict of :func:`bclib.evaluation.metrics.binary_metrics` (or
    :func:`~bclib.evaluation.metrics.multiclass_metrics`) plus ``ci``, the selection, and ``notes``.
    """
    from bclib.data.datasets import DatasetError, scan

    started = time.perf_counter()
    model, card = modelcard.load_model(model_path)
    class_names = list(card["class_names"])
    options = (card.get("dataset") or {}).get("options") or {}
    if (card.get("dataset") or {}).get("name") not in (None, dataset):
        options = {}
    index = scan(dataset, data, **options)
    if list(index.class_names) != class_names:
        raise DatasetError(
            f"the model's classes {class_names} differ from the {dataset!r} classes {list(index.class_names)}; "
            "evaluate it on the kind of data it was trained on"
        )
    notes: list[str] = []
    positions, selection = _select(index, card, split, seed, notes)
    if len(positions) == 0:
        raise DatasetError(f"split {split!r} selects no image of {str(index.root)!r}")
    subset = index.subset(positions)
    pack_size = int(card.get("pack_size") or card["input_size"])  # a card made outside the notebooks: input_size
    probabilities = predict_index(model, subset, pack_size, batch_size=batch_size, progress=progress)
    labels = subset.labels
    patients = subset.frame["patient_id"].to_numpy()
    threshold = card["threshold"]
    if len(class_names) > 2:
        result = metrics.multiclass_metrics(labels, probabilities, class_names, patients)
    else:
        positive_label = 1 if card.get("positive_label") is None else int(card["positive_label"])
        scores = metrics.positive_probability(probabilities, positive_label)
        result = binary_metrics_with_ci(labels, scores, patients, float(threshold["value"]), positive_label,
                                        class_names, n_boot=int(n_boot), seed=selection["seed"] or 0)
        benchmark = card.get("benchmark_threshold")
        if benchmark:  # the operating point published benchmarks report (Youden's J on validation)
            at = binary_metrics_with_ci(labels, scores, patients, float(benchmark["value"]), positive_label,
                                        class_names, n_boot=int(n_boot), seed=selection["seed"] or 0,
                                        metrics=BENCHMARK_METRICS)
            result["benchmark_threshold"] = {
                "value": float(benchmark["value"]), "method": benchmark.get("method"),
                **{name: at.get(name) for name in BENCHMARK_METRICS},
                "ci": {name: (at.get("ci") or {}).get(name) for name in BENCHMARK_METRICS},
            }
    if modelcard.imagenet_missing(card):
        notes.append("this transfer model started from random weights (its ImageNet weights were missing)")
    if index.synthetic:
        notes.append("synthetic data: the numbers test the code, they say nothing about cancer detection")
    elif (card.get("dataset") or {}).get("synthetic"):
        notes.append("the model was trained on synthetic data: expect nothing useful on real images")
    if "roc_auc" in result:
        notes.extend(sanity_notes(result))
    result["notes"] = list(result.get("notes", [])) + notes
    result.update(
        selection,
        model=str(model_path),
        model_name=card.get("model_name"),
        dataset=dataset,
        data=str(index.root),
        threshold_method=threshold.get("method"),
        threshold_chosen_on=threshold.get("chosen_on"),
        class_names=class_names,
        seconds=round(time.perf_counter() - started, 2),
    )
    return result


def format_table(result: dict) -> str:
    """A readable text table: metric, value, 95 % CI, then counts and notes."""
    ci = result.get("ci") or {}
    names = list(BOOTSTRAP_METRICS)
    if "roc_auc_macro" in result:
        names = ["accuracy", "balanced_accuracy", "roc_auc_macro", "roc_auc_micro", "f1_macro"]
    lines = [
        f"model     {result.get('model')} ({result.get('model_name')})",
        f"data      {result.get('dataset')} at {result.get('data')}, split {result.get('split')}"
        + (f" ({result.get('split_method')}, seed {result.get('seed')})" if result.get("split_method") else ""),
        f"images    {result.get('n_images')} from {result.get('n_patients')} patients",
    ]
    if "threshold" in result and result.get("threshold") is not None:
        lines.append(f"threshold {result['threshold']:.4f} ({result.get('threshold_method')}, chosen on "
                     f"{result.get('threshold_chosen_on')}); positive class: {result.get('positive_class')}")
    def metric_line(name: str, value: float | None, interval: Any) -> str:
        return f"{name:<20}{'n/a' if value is None else f'{value:.3f}':>8}   {format_interval(interval)}"

    lines += ["", f"{'metric':<20}{'value':>8}   95% CI (patients resampled)", "-" * 58]
    lines += [metric_line(name, result.get(name), ci.get(name)) for name in names]
    benchmark = result.get("benchmark_threshold")
    if benchmark:
        lines += ["", f"at the benchmark threshold {benchmark['value']:.4f} ({benchmark.get('method')}, chosen on val), "
                      "to compare with published numbers:"]
        lines += [metric_line(name, benchmark.get(name), benchmark["ci"].get(name)) for name in BENCHMARK_METRICS]
    matrix = result.get("confusion_matrix")
    if matrix is not None and len(matrix) == 2:
        (tn, fp), (fn, tp) = matrix
        lines += ["", f"confusion (rows = truth): TN {tn}  FP {fp}  FN {fn}  TP {tp}"]
    lines += [f"note: {note}" for note in result.get("notes") or []]
    return "\n".join([*lines, DISCLAIMER])
