"""95 % intervals that resample patients: one model's metrics, or the difference between two models.

A resample draws patients with replacement and keeps all their images, so one patient's many images
never count as independent evidence. Each resample is a row of per-image weights (how often the
image's patient was drawn) and all rows are scored in one vectorised pass: scikit-learn scores one
resample per call, far more slowly, so the weighted metrics are written out here (the tests check
them against scikit-learn). Percentile intervals; resamples where a metric is undefined (one class
drawn) are left out of its interval, and a metric undefined in every resample gets ``None``.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from bclib.evaluation.metrics import (
    THRESHOLD_METRICS, binary_metrics, binary_truth, checked_scores, threshold_metrics_from_counts,
)

#: Metrics that :func:`bootstrap_ci` and :func:`paired_bootstrap_difference` can resample.
BOOTSTRAP_METRICS = (
    "roc_auc", "pr_auc", "brier", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision", "f1",
)


# --------------------------------------------------------------------------- weighted metrics
# Undefined values come out of 0/0 as NaN: the callers run under np.errstate(invalid="ignore").
def _weighted_roc_auc(truth: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC (tied scores count one half) for each row of ``weights``."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores, sorted_truth = scores[order], truth[order]
    tie_starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    w = weights[:, order]
    negatives = np.add.reduceat(w * ~sorted_truth, tie_starts, axis=1)
    positives = np.add.reduceat(w * sorted_truth, tie_starts, axis=1)
    negatives_below = np.cumsum(negatives, axis=1) - negatives
    pairs_won = (positives * (negatives_below + 0.5 * negatives)).sum(axis=1)
    return pairs_won / (positives.sum(axis=1) * negatives.sum(axis=1))


def _weighted_average_precision(truth: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision (recall steps times precision, as scikit-learn) for each row of ``weights``."""
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_truth = scores[order], truth[order]
    tie_ends = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])
    w = weights[:, order]
    true_positives = np.cumsum(w * sorted_truth, axis=1)[:, tie_ends]
    predicted_positives = np.cumsum(w, axis=1)[:, tie_ends]
    all_positives = true_positives[:, -1:]
    precision = np.nan_to_num(true_positives / predicted_positives)  # 0/0 before the first drawn image
    recall = true_positives / all_positives
    return (np.diff(recall, axis=1, prepend=0.0) * precision).sum(axis=1)


def weighted_metrics(truth: np.ndarray, scores: np.ndarray, weights: np.ndarray, threshold: float | None,
                     names: Sequence[str]) -> dict[str, np.ndarray]:
    """Each named metric for each row of ``weights`` (resamples x images); NaN where undefined.

    ``truth`` is boolean (True = positive class), ``scores`` P(positive class).
    """
    truth = np.asarray(truth, dtype=bool)
    unknown = [name for name in names if name not in BOOTSTRAP_METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(BOOTSTRAP_METRICS)}")
    needing_threshold = [name for name in names if name in THRESHOLD_METRICS]
    if needing_threshold and threshold is None:
        raise ValueError(f"metrics {needing_threshold} need a threshold")
    out: dict[str, np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        if "roc_auc" in names:
            out["roc_auc"] = _weighted_roc_auc(truth, scores, weights)
        if "pr_auc" in names:
            out["pr_auc"] = _weighted_average_precision(truth, scores, weights)
        if "brier" in names:
            out["brier"] = weights @ (scores - truth) ** 2 / weights.sum(axis=1)
    if needing_threshold:
        decided = scores >= threshold
        counts = (weights @ (truth & decided), weights @ (~truth & decided),
                  weights @ (truth & ~decided), weights @ (~truth & ~decided))
        rates = threshold_metrics_from_counts(*counts)
        out.update({name: rates[name] for name in needing_threshold})
    return out


# --------------------------------------------------------------------------- resampling
def patient_codes(patient_ids, n_images: int) -> tuple[np.ndarray, int]:
    """``(code per image, number of patients)``; without ``patient_ids`` every image is its own patient."""
    if patient_ids is None:
        return np.arange(n_images), n_images
    ids = np.asarray(patient_ids)
    if len(ids) != n_images:
        raise ValueError(f"patient_ids has {len(ids)} entries for {n_images} images")
    codes, uniques = pd.factorize(pd.Series(ids).astype(str))
    return codes, len(uniques)


def _resample_weights(codes: np.ndarray, n_patients: int, n_boot: int, seed: int,
                      chunk_size: int = 100) -> Iterator[np.ndarray]:
    """Per-image weights of ``n_boot`` patient resamples, ``chunk_size`` rows at a time (memory stays bounded)."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, chunk_size):
        size = min(chunk_size, n_boot - start)
        draws = rng.multinomial(n_patients, np.full(n_patients, 1.0 / n_patients), size=size)
        yield draws[:, codes].astype(float)


def percentile_interval(values: np.ndarray) -> tuple[float, float] | None:
    """The central 95 % percentile interval of the finite ``values``; ``None`` if there are none."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def _check_n_boot(n_boot: int) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")


def interval_end(value: float, signed: bool = False) -> str:
    """One end of an interval with 3 decimals, or a fourth where it would round to zero, so an interval that
    excludes zero never reads as touching it; ``signed`` for the ends of a difference."""
    sign = "+" if signed else ""
    return f"{value:{sign}.4f}" if 0 < abs(value) < 0.0005 else f"{value:{sign}.3f}"


def format_interval(interval: Sequence[float] | None) -> str:
    """``"[low, high]"`` (ends by :func:`interval_end`); ``""`` for a missing interval."""
    return "" if not interval else f"[{interval_end(interval[0])}, {interval_end(interval[1])}]"


# --------------------------------------------------------------------------- one model
def bootstrap_ci(y_true, prob, patient_ids=None, metrics: Sequence[str] | str = BOOTSTRAP_METRICS,
                 n_boot: int = 1000, seed: int = 0, threshold: float | None = 0.5,
                 positive_label: int = 1) -> dict[str, tuple[float, float] | None]:
    """Percentile intervals ``{metric: (low, high) or None}``, resampling **patients** (all their images).

    ``metrics`` names metrics from :data:`BOOTSTRAP_METRICS`; threshold metrics use ``threshold``.
    Without ``patient_ids`` images are resampled one by one.
    """
    _check_n_boot(n_boot)
    truth = binary_truth(y_true, positive_label)
    scores = checked_scores(prob, len(truth))
    if len(truth) == 0:
        raise ValueError("no images to resample")
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    codes, n_patients = patient_codes(patient_ids, len(truth))
    collected: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for weights in _resample_weights(codes, n_patients, n_boot, seed):
        for name, values in weighted_metrics(truth, scores, weights, threshold, names).items():
            collected[name].append(values)
    return {name: percentile_interval(np.concatenate(chunks)) for name, chunks in collected.items()}


def binary_metrics_with_ci(y_true, scores, patient_ids, threshold: float, positive_label: int = 1,
                           class_names: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0,
                           metrics: Sequence[str] | str = BOOTSTRAP_METRICS) -> dict:
    """:func:`~bclib.evaluation.metrics.binary_metrics` plus ``ci`` (of ``metrics``) from :func:`bootstrap_ci`.

    ``ci`` is empty when ``n_boot`` is 0 or the images come from one patient (with a note then).
    """
    if patient_ids is None:
        raise ValueError("patient_ids is required: the intervals resample patients")
    result = binary_metrics(y_true, scores, threshold, positive_label, class_names, patient_ids)
    result["ci"] = {}
    if n_boot and result["n_patients"] > 1:
        result["ci"] = bootstrap_ci(y_true, scores, patient_ids, metrics=metrics, n_boot=int(n_boot), seed=seed,
                                    threshold=threshold, positive_label=positive_label)
    elif n_boot:
        result["notes"].append("one patient only: no patient bootstrap interval")
    return result


def sanity_notes(result: dict) -> list[str]:
    """Warnings a reader must see: an AUC at chance level, or below it (inverted scores?).

    ``result`` is a :func:`~bclib.evaluation.metrics.binary_metrics` dict, optionally with ``ci``.
    """
    auc = result.get("roc_auc")
    if auc is None:
        return []
    interval = (result.get("ci") or {}).get("roc_auc")
    if interval is not None and interval[0] <= 0.5 <= interval[1]:
        return [f"ROC-AUC {auc:.3f} with an interval [{interval[0]:.3f}, {interval[1]:.3f}] that includes 0.5: "
                "the model is not distinguishable from chance on these patients"]
    if (interval is not None and interval[1] < 0.5) or (interval is None and auc < 0.4):
        return [f"ROC-AUC {auc:.3f} is below chance: the scores rank the classes the wrong way round; "
                "check positive_label and the class order (or the model's preprocessing)"]
    if interval is None and abs(auc - 0.5) < 0.05:
        return [f"ROC-AUC {auc:.3f} is close to chance level (0.5)"]
    return []


# --------------------------------------------------------------------------- two models
def paired_bootstrap_difference(y_true, scores_a, scores_b, patient_ids, metric: str = "roc_auc",
                                n_boot: int = 1000, seed: int = 0, positive_label: int = 1,
                                threshold_a: float | None = None, threshold_b: float | None = None) -> dict:
    """Model b minus model a on the same images, with a 95 % patient-bootstrap interval.

    Both models are scored on the **same** patient resamples, so what the patients have in common
    (easy or hard slides) cancels out of the difference. Threshold metrics use ``threshold_a`` /
    ``threshold_b`` (default 0.5). ``difference`` and ``ci`` are ``None`` where undefined (a metric
    undefined on all images; fewer than two patients, or no resample defining the metric).
    """
    if metric not in BOOTSTRAP_METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {list(BOOTSTRAP_METRICS)}")
    _check_n_boot(n_boot)
    truth = binary_truth(y_true, positive_label)
    a = checked_scores(scores_a, len(truth), "scores_a")
    b = checked_scores(scores_b, len(truth), "scores_b")
    if truth.all() or not truth.any():
        raise ValueError("comparing two models needs images of both classes; these are all one class")
    if patient_ids is None:
        raise ValueError("patient_ids is required: the comparison resamples patients")
    codes, n_patients = patient_codes(patient_ids, len(truth))
    thresholds = [0.5 if value is None else float(value) for value in (threshold_a, threshold_b)]
    for name, value in zip(("threshold_a", "threshold_b"), thresholds):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value}")
    # point estimates are the reported metrics themselves (model cards, tables)
    value_a, value_b = (binary_metrics(truth.astype(int), scores, threshold)[metric]
                        for scores, threshold in ((a, thresholds[0]), (b, thresholds[1])))
    interval = None
    if n_patients > 1:
        differences = [
            weighted_metrics(truth, b, weights, thresholds[1], [metric])[metric]
            - weighted_metrics(truth, a, weights, thresholds[0], [metric])[metric]
            for weights in _resample_weights(codes, n_patients, n_boot, seed)
        ]
        interval = percentile_interval(np.concatenate(differences))
    return {
        "metric": metric,
        "a": value_a,
        "b": value_b,
        "difference": None if value_a is None or value_b is None else value_b - value_a,
        "ci": None if interval is None else list(interval),
        "excludes_zero": interval is not None and (interval[0] > 0 or interval[1] < 0),
        "confidence": 0.95,
        "n_boot": int(n_boot),
        "n_patients": n_patients,
        "n_images": int(len(truth)),
    }
