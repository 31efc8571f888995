"""Metrics from predicted probabilities, decision thresholds chosen on validation, per-patient tables.

Conventions: ``positive_label`` names the disease class (BreastMNIST's is 0) and score arguments are
P(positive class) (:func:`positive_probability` gets it from model outputs); an image is positive when
its score is ``>= threshold``; a metric undefined on the data (an AUC with one class) is ``None`` with a
``notes`` entry. Hard labels are not scores: integer scores raise ``ValueError``, float scores that are
all 0 or 1 warn (:class:`HardLabelWarning`). The computing is scikit-learn's; intervals over patients
are in :mod:`bclib.evaluation.bootstrap`.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

#: Metrics that depend on the decision threshold.
THRESHOLD_METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision", "f1")


class HardLabelWarning(UserWarning):
    """Scores take only the values 0 and 1: they look like hard labels, not probabilities."""


# --------------------------------------------------------------------------- inputs
def binary_truth(y_true, positive_label: int = 1) -> np.ndarray:
    """``y_true`` (labels 0/1) as a boolean array, True where the label is ``positive_label``."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be one label per image (1-D), got shape {y.shape}")
    if positive_label not in (0, 1):
        raise ValueError(f"positive_label must be 0 or 1 for binary labels, got {positive_label!r}")
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"binary metrics need labels 0/1, got {sorted(values)[:10]} (use multiclass_metrics)")
    return y.astype(int) == int(positive_label)


def checked_scores(scores, n_images: int, name: str = "prob") -> np.ndarray:
    """P(positive class) per image as float64, after refusing hard labels, bad values and wrong lengths."""
    p = np.asarray(scores)
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if p.ndim != 1:
        raise ValueError(f"{name} must be one probability per image, got shape {p.shape} (see positive_probability)")
    if len(p) != n_images:
        raise ValueError(f"{name} has {len(p)} values for {n_images} labels")
    if p.dtype == bool or np.issubdtype(p.dtype, np.integer):
        raise ValueError(
            f"{name} holds hard labels ({p.dtype}); AUCs, Brier scores and thresholds need predicted probabilities"
        )
    p = p.astype(np.float64)
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if len(p) and (p.min() < 0 or p.max() > 1):
        raise ValueError(f"{name} must be probabilities in [0, 1], got range [{p.min():.3g}, {p.max():.3g}]")
    return p


def positive_probability(probs, positive_label: int = 1) -> np.ndarray:
    """P(positive class) per image from model outputs: ``(N,)`` or ``(N, 1)`` (one sigmoid unit: P(label 1)),
    or ``(N, C)`` softmax outputs (one column per class)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if p.ndim == 1:
        return p if positive_label == 1 else 1.0 - p
    if p.ndim == 2 and 0 <= positive_label < p.shape[1]:
        return p[:, int(positive_label)]
    raise ValueError(f"expected (N,), (N, 1) or (N, C) outputs with label {positive_label} among the C, "
                     f"got shape {p.shape}")


def _warn_if_hard(p: np.ndarray, notes: list[str] | None = None) -> None:
    if len(p) > 2 and np.all((p == 0) | (p == 1)):
        message = ("the scores take only the values 0 and 1: an AUC from hard labels is meaningless; "
                   "pass predicted probabilities")
        warnings.warn(message, HardLabelWarning, stacklevel=4)  # the caller of roc_auc, binary_metrics...
        if notes is not None:
            notes.append(message)


def _none_if_nan(value) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


def _roc_auc(truth: np.ndarray, p: np.ndarray) -> float | None:
    return float(skm.roc_auc_score(truth, p)) if 0 < truth.sum() < len(truth) else None


def _pr_auc(truth: np.ndarray, p: np.ndarray) -> float | None:
    return float(skm.average_precision_score(truth, p)) if truth.any() else None


def _brier(truth: np.ndarray, p: np.ndarray) -> float | None:
    return float(skm.brier_score_loss(truth.astype(int), p, pos_label=1)) if len(truth) else None


def _checked(y_true, prob, positive_label: int, name: str = "prob",
             notes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    truth = binary_truth(y_true, positive_label)
    p = checked_scores(prob, len(truth), name)
    _warn_if_hard(p, notes)
    return truth, p


# --------------------------------------------------------------------------- binary metrics
def roc_auc(y_true, prob, positive_label: int = 1) -> float | None:
    """ROC-AUC from probabilities; ``None`` when only one class is present."""
    return _roc_auc(*_checked(y_true, prob, positive_label))


def pr_auc(y_true, prob, positive_label: int = 1) -> float | None:
    """Average precision (area under the precision-recall curve); ``None`` without positives."""
    return _pr_auc(*_checked(y_true, prob, positive_label))


def threshold_metrics_from_counts(tp, fp, fn, tn) -> dict[str, np.ndarray]:
    """:data:`THRESHOLD_METRICS` from confusion counts (numbers, or arrays of resamples); NaN where 0/0."""
    tp, fp, fn, tn = (np.asarray(count, dtype=np.float64) for count in (tp, fp, fn, tn))
    with np.errstate(divide="ignore", invalid="ignore"):
        sensitivity, specificity = tp / (tp + fn), tn / (tn + fp)
        return {
            "accuracy": (tp + tn) / (tp + fp + fn + tn),
            "balanced_accuracy": (sensitivity + specificity) / 2,
            "sensitivity": sensitivity,
            "specificity": specificity,
            "precision": tp / (tp + fp),
            "f1": 2 * tp / (2 * tp + fp + fn),
        }


def binary_metrics(y_true, prob_positive, threshold: float = 0.5, positive_label: int = 1,
                   class_names: Sequence[str] | None = None, patient_ids=None) -> dict:
    """Every binary metric: docs/ARCHITECTURE.md's "Metric names", ``n_positive``, ``n_negative``, ``notes``.

    ``prob_positive`` is P(positive class); ``positive_label`` names which label that is, and
    ``class_names[positive_label]`` becomes ``positive_class``. Undefined metrics are ``None``.
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    notes: list[str] = []
    y, p = _checked(y_true, prob_positive, positive_label, "prob_positive", notes)
    if len(y) == 0:
        raise ValueError("no images to evaluate")
    if patient_ids is not None and len(np.asarray(patient_ids)) != len(y):
        raise ValueError(f"patient_ids has {len(np.asarray(patient_ids))} entries for {len(y)} images")
    tn, fp, fn, tp = (int(count) for count in skm.confusion_matrix(y, p >= threshold, labels=[False, True]).ravel())
    n_positive, n_negative = tp + fn, tn + fp
    positive_name = str(class_names[positive_label]) if class_names is not None else str(positive_label)
    if n_positive == 0 or n_negative == 0:
        present = "negative" if n_positive == 0 else f"positive ({positive_name})"
        notes.append(
            f"only {present} images are present: ROC-AUC, PR-AUC and balanced accuracy are undefined, "
            f"and {'sensitivity' if n_positive == 0 else 'specificity'} cannot be measured"
        )
    if tp + fp == 0:
        notes.append(f"no image reaches the threshold {threshold:g}: precision is undefined")
    return {
        "roc_auc": _roc_auc(y, p),
        "pr_auc": _pr_auc(y, p),
        "brier": _brier(y, p),
        **{name: _none_if_nan(value) for name, value in threshold_metrics_from_counts(tp, fp, fn, tn).items()},
        "threshold": float(threshold),
        "n_images": int(len(y)),
        "n_patients": int(pd.Series(np.asarray(patient_ids)).nunique()) if patient_ids is not None else None,
        "positive_class": positive_name,
        "confusion_matrix": [[tn, fp], [fn, tp]],
        "n_positive": n_positive,
        "n_negative": n_negative,
        "notes": notes,
    }


# --------------------------------------------------------------------------- thresholds
def _threshold_curve(y: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
    """Rates at every distinct score (highest first), predicting positive when the score is >= it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # no negatives: specificity is NaN
        false_positive_rate, sensitivity, thresholds = skm.roc_curve(y, p, drop_intermediate=False)
    finite = np.isfinite(thresholds)  # the curve starts at (0, 0) with an infinite threshold
    false_positive_rate, sensitivity, thresholds = false_positive_rate[finite], sensitivity[finite], thresholds[finite]
    true_positives = sensitivity * y.sum()
    false_positives = np.nan_to_num(false_positive_rate) * (~y).sum()
    return {
        "threshold": thresholds,
        "sensitivity": sensitivity,
        "specificity": 1.0 - false_positive_rate,
        "precision": true_positives / (true_positives + false_positives),
        "f1": 2 * true_positives / (true_positives + false_positives + y.sum()),
    }


def choose_threshold(y_val, prob_val, method: str = "sensitivity", target_sensitivity: float = 0.90,
                     positive_label: int = 1) -> tuple[float, dict]:
    """Pick a decision threshold on **validation** data only; return ``(threshold, info)``.

    ``method="sensitivity"``: the highest threshold whose validation sensitivity reaches
    ``target_sensitivity``; ``"youden"``: maximise sensitivity + specificity - 1; ``"f1"``:
    maximise F1. Candidate thresholds are the distinct validation probabilities; ties pick the
    highest threshold. ``info`` records the method (as in model cards) and the validation values.
    """
    y = binary_truth(y_val, positive_label)
    p = checked_scores(prob_val, len(y), "prob_val")
    if not y.any():
        raise ValueError("the validation data has no positive image: no threshold can be chosen")
    curve = _threshold_curve(y, p)
    if method == "sensitivity":
        if not 0 < target_sensitivity <= 1:
            raise ValueError(f"target_sensitivity must lie in (0, 1], got {target_sensitivity}")
        best = int(np.flatnonzero(curve["sensitivity"] >= target_sensitivity - 1e-12)[0])
        label = f"sensitivity@{target_sensitivity:.2f}"
    elif method in ("youden", "f1"):
        if method == "youden" and y.all():
            raise ValueError("the validation data has no negative image: Youden's J is undefined")
        score = curve["sensitivity"] + curve["specificity"] - 1 if method == "youden" else curve["f1"]
        best = int(np.nanargmax(score))
        label = method
    else:
        raise ValueError(f"unknown threshold method {method!r}; choose 'sensitivity', 'youden' or 'f1'")
    threshold = float(curve["threshold"][best])
    info = {
        "method": label,
        "chosen_on": "val",
        "value": threshold,
        **{f"val_{name}": _none_if_nan(curve[name][best])
           for name in ("sensitivity", "specificity", "precision", "f1")},
        "n_val": int(len(y)),
        "n_val_positive": int(y.sum()),
    }
    return threshold, info


# --------------------------------------------------------------------------- multi-class
def multiclass_metrics(y_true, prob_matrix, class_names: Sequence[str], patient_ids=None) -> dict:
    """Accuracy, balanced accuracy, macro/micro one-vs-rest AUC, per-class report, confusion matrix.

    The prediction is the arg-max class. Classes absent from ``y_true`` get a ``None`` AUC and
    recall, and are left out of the macro averages (a note says so).
    """
    y = np.asarray(y_true).astype(int)
    probs = np.asarray(prob_matrix)
    n_classes = len(class_names)
    if probs.ndim != 2 or probs.shape != (len(y), n_classes):
        raise ValueError(f"prob_matrix must have shape ({len(y)}, {n_classes}), got {probs.shape}")
    if len(y) == 0:
        raise ValueError("no images to evaluate")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"labels must lie in 0..{n_classes - 1}")
    if probs.dtype == bool or np.issubdtype(probs.dtype, np.integer):
        raise ValueError("prob_matrix holds integers (hard labels?); pass predicted probabilities")
    probs = probs.astype(np.float64)
    labels = list(range(n_classes))
    predicted = probs.argmax(axis=1)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y, predicted, labels=labels, zero_division=np.nan)
    per_class = [
        {"class": str(name), "label": label, "precision": _none_if_nan(precision[label]),
         "recall": _none_if_nan(recall[label]), "f1": _none_if_nan(f1[label]), "support": int(support[label]),
         "roc_auc": _roc_auc(y == label, probs[:, label])}
        for label, name in enumerate(class_names)
    ]
    notes: list[str] = []
    absent = [row["class"] for row in per_class if row["support"] == 0]
    if absent:
        notes.append(f"classes without images ({absent}) have no recall or AUC and are left out of macro averages")
    present = [row for row in per_class if row["support"] > 0]
    aucs = [row["roc_auc"] for row in per_class if row["roc_auc"] is not None]
    f1s = [row["f1"] for row in present if row["f1"] is not None]
    return {
        "accuracy": float(skm.accuracy_score(y, predicted)),
        "balanced_accuracy": float(np.mean([row["recall"] for row in present])),
        "roc_auc_macro": float(np.mean(aucs)) if aucs else None,
        "roc_auc_micro": _roc_auc(np.eye(n_classes, dtype=bool)[y].ravel(), probs.ravel()),
        "f1_macro": float(np.mean(f1s)) if f1s else None,
        "per_class": per_class,
        "confusion_matrix": skm.confusion_matrix(y, predicted, labels=labels).tolist(),
        "class_names": [str(name) for name in class_names],
        "n_images": int(len(y)),
        "n_patients": int(pd.Series(np.asarray(patient_ids)).nunique()) if patient_ids is not None else None,
        "notes": notes,
    }


# --------------------------------------------------------------------------- patient level
def patient_level_table(y_true, prob, patient_ids, threshold: float, positive_label: int = 1) -> pd.DataFrame:
    """One row per patient: images, true and predicted positive fractions, AUC, sensitivity, specificity.

    Columns: ``patient_id, n, n_positive, true_fraction, mean_probability, predicted_fraction,
    fraction_error`` (predicted - true), ``abs_fraction_error``, ``roc_auc`` (``NaN`` when the
    patient has one class only), ``sensitivity``, ``specificity`` (``NaN`` when undefined).
    """
    y = binary_truth(y_true, positive_label)
    p = checked_scores(prob, len(y))
    ids = np.asarray(patient_ids)
    if len(ids) != len(y):
        raise ValueError(f"patient_ids has {len(ids)} entries for {len(y)} images")
    frame = pd.DataFrame({"patient_id": ids.astype(str), "truth": y, "score": p, "decided": p >= threshold})
    rows = []
    for patient, group in frame.groupby("patient_id", sort=True):
        truth, scores, decided = (group[column].to_numpy() for column in ("truth", "score", "decided"))
        auc = _roc_auc(truth, scores)
        rates = threshold_metrics_from_counts((truth & decided).sum(), (~truth & decided).sum(),
                                              (truth & ~decided).sum(), (~truth & ~decided).sum())
        rows.append({
            "patient_id": patient,
            "n": len(truth),
            "n_positive": int(truth.sum()),
            "true_fraction": float(truth.mean()),
            "mean_probability": float(scores.mean()),
            "predicted_fraction": float(decided.mean()),
            "roc_auc": np.nan if auc is None else auc,
            "sensitivity": float(rates["sensitivity"]),
            "specificity": float(rates["specificity"]),
        })
    table = pd.DataFrame(rows)
    table["fraction_error"] = table["predicted_fraction"] - table["true_fraction"]
    table["abs_fraction_error"] = table["fraction_error"].abs()
    columns = ["patient_id", "n", "n_positive", "true_fraction", "mean_probability", "predicted_fraction",
               "fraction_error", "abs_fraction_error", "roc_auc", "sensitivity", "specificity"]
    return table[columns]


def worst_patients(table: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """The ``k`` patients of a :func:`patient_level_table` whose predicted positive fraction is furthest off."""
    return table.sort_values("abs_fraction_error", ascending=False, kind="stable").head(k).reset_index(drop=True)


def fraction_correlation(table: pd.DataFrame) -> dict[str, float | None]:
    """Pearson correlation of the true positive fraction with ``mean_probability`` and ``predicted_fraction``
    (keys ``pearson_<column>``); ``None`` where undefined (fewer than 3 patients, or a constant column)."""
    truth = table["true_fraction"].astype(float)
    out: dict[str, float | None] = {}
    for column in ("mean_probability", "predicted_fraction"):
        predicted = table[column].astype(float)
        defined = len(table) >= 3 and truth.nunique() > 1 and predicted.nunique() > 1
        out[f"pearson_{column}"] = _none_if_nan(truth.corr(predicted)) if defined else None
    return out
