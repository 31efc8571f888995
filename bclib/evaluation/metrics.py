"""Honest evaluation metrics: AUCs from probabilities, threshold metrics, thresholds, patient CIs.

Conventions used everywhere in this module:

* ``positive_label`` names the disease class explicitly (default 1). BreastMNIST's disease label
  is 0, so nothing here assumes label 1. ``prob`` arguments are the probability of the
  *positive* class; :func:`positive_probability` turns model outputs into that.
* An image is predicted positive when ``prob >= threshold``.
* A metric that is undefined on the data given (an AUC with one class present, a precision with
  no predicted positive) is ``None``, and a ``notes`` entry says why; nothing crashes.
* Hard labels are refused as AUC input: integer or boolean scores raise :class:`ValueError`;
  float scores that take only the values 0 and 1 emit a :class:`HardLabelWarning` (a saturated
  model can legitimately output exactly 0.0/1.0, but an AUC from thresholded predictions is the
  seed projects' bug) and add a note.
* Every metric is computed from per-image *weights*; the point estimate uses weight 1 and the
  patient bootstrap uses how often each patient was drawn. That keeps one implementation for
  both and makes 1000 resamples of 10k images take a few seconds.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

#: The flat keys of :func:`binary_metrics` (docs/ARCHITECTURE.md, "Metric names").
METRIC_NAMES = (
    "roc_auc", "pr_auc", "brier", "accuracy", "balanced_accuracy", "sensitivity", "specificity",
    "precision", "f1", "threshold", "n_images", "n_patients", "positive_class", "confusion_matrix",
)
#: Metrics that :func:`bootstrap_ci` can compute from names (vectorised).
BOOTSTRAP_METRICS = (
    "roc_auc", "pr_auc", "brier", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision", "f1",
)
#: Metrics that need a threshold.
THRESHOLD_METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision", "f1")


class HardLabelWarning(UserWarning):
    """Scores given to an AUC take only the values 0 and 1: they look like hard labels."""


# --------------------------------------------------------------------------- input checks
def _binary_truth(y_true, positive_label: int) -> np.ndarray:
    """``y_true`` as a boolean array, True where the label is ``positive_label``."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be one label per image (1-D), got shape {y.shape}")
    if positive_label not in (0, 1):
        raise ValueError(f"positive_label must be 0 or 1 for binary labels, got {positive_label!r}")
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"binary metrics need labels 0/1, got {sorted(values)[:10]} (use multiclass_metrics)")
    return y.astype(int) == int(positive_label)


def _scores(prob, n: int, name: str = "prob") -> np.ndarray:
    """Probabilities of the positive class as float64; refuse hard labels and bad values."""
    p = np.asarray(prob)
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if p.ndim != 1:
        raise ValueError(f"{name} must be one probability per image, got shape {p.shape} (see positive_probability)")
    if len(p) != n:
        raise ValueError(f"{name} has {len(p)} values for {n} labels")
    if p.dtype == bool or np.issubdtype(p.dtype, np.integer):
        raise ValueError(
            f"{name} holds hard labels ({p.dtype}); AUCs, Brier scores and thresholds need predicted "
            "probabilities (an AUC from hard labels was a seed-project bug)"
        )
    p = p.astype(np.float64)
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if len(p) and (p.min() < 0 or p.max() > 1):
        raise ValueError(f"{name} must be probabilities in [0, 1], got range [{p.min():.3g}, {p.max():.3g}]")
    return p


def _looks_hard(p: np.ndarray) -> bool:
    return len(p) > 2 and bool(np.all((p == 0) | (p == 1)))


def _warn_hard(notes: list[str] | None = None) -> None:
    message = (
        "the scores take only the values 0 and 1: an AUC from hard labels is meaningless; "
        "pass predicted probabilities"
    )
    warnings.warn(message, HardLabelWarning, stacklevel=3)
    if notes is not None:
        notes.append(message)


def positive_probability(probs, positive_label: int = 1) -> np.ndarray:
    """P(positive class) per image from model outputs.

    ``probs`` is ``(N,)`` or ``(N, 1)`` (one sigmoid unit: P(label 1)) or ``(N, 2)`` (softmax).
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if p.ndim == 1:
        return p if positive_label == 1 else 1.0 - p
    if p.ndim == 2 and p.shape[1] == 2:
        return p[:, int(positive_label)]
    raise ValueError(f"expected (N,), (N, 1) or (N, 2) binary outputs, got shape {p.shape}")


# --------------------------------------------------------------------------- weighted core
def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _weighted_auc(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC (ties count one half) for each row of ``weights`` (B x n); NaN with one class."""
    order = np.argsort(p, kind="mergesort")
    sorted_p, sorted_y = p[order], y[order]
    starts = np.flatnonzero(np.r_[True, sorted_p[1:] != sorted_p[:-1]])
    w = weights[:, order]
    neg = np.add.reduceat(w * ~sorted_y, starts, axis=1)
    pos = np.add.reduceat(w * sorted_y, starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    numerator = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    return _safe_div(numerator, pos.sum(axis=1) * neg.sum(axis=1))


def _weighted_average_precision(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision (sum over thresholds of recall step x precision), as scikit-learn."""
    order = np.argsort(-p, kind="mergesort")
    sorted_p, sorted_y = p[order], y[order]
    ends = np.flatnonzero(np.r_[sorted_p[1:] != sorted_p[:-1], True])
    w = weights[:, order]
    true_pos = np.cumsum(w * sorted_y, axis=1)[:, ends]
    predicted = np.cumsum(w, axis=1)[:, ends]
    positives = true_pos[:, -1:]
    precision = np.nan_to_num(_safe_div(true_pos, predicted))
    recall = _safe_div(true_pos, np.broadcast_to(positives, true_pos.shape))
    steps = np.diff(recall, axis=1, prepend=0.0)
    ap = (steps * precision).sum(axis=1)
    return np.where(positives[:, 0] > 0, ap, np.nan)


def _weighted_table(y: np.ndarray, p: np.ndarray, weights: np.ndarray, threshold: float | None,
                    names: Iterable[str]) -> dict[str, np.ndarray]:
    """Each named metric for each row of ``weights``; NaN where undefined."""
    names = list(names)
    out: dict[str, np.ndarray] = {}
    if "roc_auc" in names:
        out["roc_auc"] = _weighted_auc(y, p, weights)
    if "pr_auc" in names:
        out["pr_auc"] = _weighted_average_precision(y, p, weights)
    if "brier" in names:
        out["brier"] = _safe_div(weights @ (p - y) ** 2, weights.sum(axis=1))
    if any(name in THRESHOLD_METRICS for name in names):
        if threshold is None:
            raise ValueError(f"metrics {[n for n in names if n in THRESHOLD_METRICS]} need a threshold")
        predicted = p >= threshold
        tp = weights @ (y & predicted).astype(float)
        fp = weights @ (~y & predicted).astype(float)
        fn = weights @ (y & ~predicted).astype(float)
        tn = weights @ (~y & ~predicted).astype(float)
        sensitivity = _safe_div(tp, tp + fn)
        specificity = _safe_div(tn, tn + fp)
        table = {
            "accuracy": _safe_div(tp + tn, tp + tn + fp + fn),
            "sensitivity": sensitivity,
            "specificity": specificity,
            "balanced_accuracy": (sensitivity + specificity) / 2.0,
            "precision": _safe_div(tp, tp + fp),
            "f1": _safe_div(2 * tp, 2 * tp + fp + fn),
        }
        out.update({name: table[name] for name in names if name in table})
    unknown = [name for name in names if name not in out]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(BOOTSTRAP_METRICS)}")
    return out


def _to_float(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


# --------------------------------------------------------------------------- single metrics
def roc_auc(y_true, prob, positive_label: int = 1) -> float | None:
    """ROC-AUC from probabilities; ``None`` when only one class is present."""
    y = _binary_truth(y_true, positive_label)
    p = _scores(prob, len(y))
    if _looks_hard(p):
        _warn_hard()
    return _to_float(_weighted_auc(y, p, np.ones((1, len(y))))[0])


def pr_auc(y_true, prob, positive_label: int = 1) -> float | None:
    """Average precision (area under the precision-recall curve); ``None`` without positives."""
    y = _binary_truth(y_true, positive_label)
    p = _scores(prob, len(y))
    if _looks_hard(p):
        _warn_hard()
    return _to_float(_weighted_average_precision(y, p, np.ones((1, len(y))))[0])


def brier_score(y_true, prob, positive_label: int = 1) -> float | None:
    """Mean squared difference between P(positive) and the 0/1 truth (lower is better)."""
    y = _binary_truth(y_true, positive_label)
    p = _scores(prob, len(y))
    return _to_float(_weighted_table(y, p, np.ones((1, len(y))), None, ["brier"])["brier"][0])


def confusion_matrix(y_true, prob, threshold: float, positive_label: int = 1) -> list[list[int]]:
    """``[[tn, fp], [fn, tp]]`` (rows = truth, negative first) at ``prob >= threshold``."""
    y = _binary_truth(y_true, positive_label)
    predicted = _scores(prob, len(y)) >= threshold
    return [
        [int(np.sum(~y & ~predicted)), int(np.sum(~y & predicted))],
        [int(np.sum(y & ~predicted)), int(np.sum(y & predicted))],
    ]


def binary_metrics(y_true, prob_positive, threshold: float = 0.5, positive_label: int = 1,
                   class_names: Sequence[str] | None = None, patient_ids=None) -> dict:
    """Every binary metric (keys in :data:`METRIC_NAMES`, plus ``notes``) at ``threshold``.

    ``prob_positive`` is P(positive class); ``positive_label`` names which label that is, and
    ``class_names[positive_label]`` becomes ``positive_class``. Undefined metrics are ``None``.
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    y = _binary_truth(y_true, positive_label)
    p = _scores(prob_positive, len(y), "prob_positive")
    if len(y) == 0:
        raise ValueError("no images to evaluate")
    notes: list[str] = []
    if _looks_hard(p):
        _warn_hard(notes)
    table = _weighted_table(y, p, np.ones((1, len(y))), float(threshold), BOOTSTRAP_METRICS)
    result: dict = {name: _to_float(values[0]) for name, values in table.items()}
    n_pos = int(y.sum())
    n_neg = int(len(y) - n_pos)
    positive_name = str(class_names[positive_label]) if class_names is not None else str(positive_label)
    if n_pos == 0 or n_neg == 0:
        present = "negative" if n_pos == 0 else f"positive ({positive_name})"
        notes.append(
            f"only {present} images are present: ROC-AUC, PR-AUC and balanced accuracy are undefined, "
            f"and {'sensitivity' if n_pos == 0 else 'specificity'} cannot be measured"
        )
        result["roc_auc"] = None
        result["balanced_accuracy"] = None
        if n_pos == 0:
            result["pr_auc"] = None
    if result["precision"] is None and n_pos + n_neg > 0:
        notes.append(f"no image reaches the threshold {threshold:g}: precision is undefined")
    result.update(
        threshold=float(threshold),
        n_images=int(len(y)),
        n_patients=int(pd.Series(np.asarray(patient_ids)).nunique()) if patient_ids is not None else None,
        positive_class=positive_name,
        confusion_matrix=confusion_matrix(y.astype(int), p, threshold, positive_label=1),
        n_positive=n_pos,
        n_negative=n_neg,
        notes=notes,
    )
    if patient_ids is not None and len(np.asarray(patient_ids)) != len(y):
        raise ValueError(f"patient_ids has {len(np.asarray(patient_ids))} entries for {len(y)} images")
    return {key: result[key] for key in (*METRIC_NAMES, "n_positive", "n_negative", "notes")}


# --------------------------------------------------------------------------- thresholds
def _threshold_curve(y: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
    """Counts at every distinct threshold (descending), predicting positive when ``p >= t``."""
    order = np.argsort(-p, kind="mergesort")
    sorted_p, sorted_y = p[order], y[order]
    ends = np.flatnonzero(np.r_[sorted_p[1:] != sorted_p[:-1], True])
    tp = np.cumsum(sorted_y)[ends].astype(float)
    fp = np.cumsum(~sorted_y)[ends].astype(float)
    positives, negatives = float(y.sum()), float((~y).sum())
    sensitivity = tp / positives if positives else np.full_like(tp, np.nan)
    specificity = 1 - fp / negatives if negatives else np.full_like(tp, np.nan)
    precision = tp / (tp + fp)
    f1 = 2 * tp / (tp + fp + positives)
    return {"threshold": sorted_p[ends], "sensitivity": sensitivity, "specificity": specificity,
            "precision": precision, "f1": f1}


def choose_threshold(y_val, prob_val, method: str = "sensitivity", target_sensitivity: float = 0.90,
                     positive_label: int = 1) -> tuple[float, dict]:
    """Pick a decision threshold on **validation** data only; return ``(threshold, info)``.

    ``method="sensitivity"``: the highest threshold whose validation sensitivity reaches
    ``target_sensitivity``; ``"youden"``: maximise sensitivity + specificity - 1; ``"f1"``:
    maximise F1. Candidate thresholds are the distinct validation probabilities; ties pick the
    highest threshold. ``info`` records the method (as in model cards) and the validation values.
    """
    y = _binary_truth(y_val, positive_label)
    p = _scores(prob_val, len(y), "prob_val")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0:
        raise ValueError("the validation data has no positive image: no threshold can be chosen")
    curve = _threshold_curve(y, p)
    if method == "sensitivity":
        if not 0 < target_sensitivity <= 1:
            raise ValueError(f"target_sensitivity must lie in (0, 1], got {target_sensitivity}")
        reached = np.flatnonzero(curve["sensitivity"] >= target_sensitivity - 1e-12)
        best = int(reached[0])
        label = f"sensitivity@{target_sensitivity:.2f}"
    elif method in ("youden", "f1"):
        if method == "youden" and n_neg == 0:
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
        "val_sensitivity": _to_float(curve["sensitivity"][best]),
        "val_specificity": _to_float(curve["specificity"][best]),
        "val_precision": _to_float(curve["precision"][best]),
        "val_f1": _to_float(curve["f1"][best]),
        "n_val": int(len(y)),
        "n_val_positive": n_pos,
    }
    return threshold, info


# --------------------------------------------------------------------------- bootstrap
def _patient_codes(patient_ids, n: int) -> tuple[np.ndarray, int]:
    if patient_ids is None:
        return np.arange(n), n
    ids = np.asarray(patient_ids)
    if len(ids) != n:
        raise ValueError(f"patient_ids has {len(ids)} entries for {n} images")
    codes, uniques = pd.factorize(pd.Series(ids).astype(str))
    return codes, len(uniques)


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float] | None:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_ci(y_true, prob, patient_ids=None,
                 metrics: Sequence[str] | Callable | str = BOOTSTRAP_METRICS, n_boot: int = 1000, seed: int = 0,
                 threshold: float | None = 0.5, positive_label: int = 1, confidence: float = 0.95,
                 chunk_size: int = 100) -> dict[str, tuple[float, float] | None]:
    """Percentile confidence intervals, resampling **patients** (all their images together).

    ``metrics`` is a list of names from :data:`BOOTSTRAP_METRICS` (fast, vectorised with
    per-image weights) or a callable ``metric_fn(y_true, prob) -> float | dict`` (slower, one
    call per resample). Without ``patient_ids`` images are resampled (each its own patient).
    Resamples where a metric is undefined (one class drawn) are left out of its interval; a
    metric undefined in every resample gets ``None``.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    y = _binary_truth(y_true, positive_label)
    p = _scores(prob, len(y))
    if len(y) == 0:
        raise ValueError("no images to resample")
    codes, n_groups = _patient_codes(patient_ids, len(y))
    rng = np.random.default_rng(seed)
    if callable(metrics):
        return _bootstrap_callable(y_true, p, codes, n_groups, metrics, n_boot, rng, confidence)
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    collected: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for start in range(0, n_boot, chunk_size):
        size = min(chunk_size, n_boot - start)
        draws = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=size).astype(float)
        table = _weighted_table(y, p, draws[:, codes], threshold, names)
        for name in names:
            collected[name].append(table[name])
    return {name: _interval(np.concatenate(chunks), confidence) for name, chunks in collected.items()}


def _bootstrap_callable(y_true, p: np.ndarray, codes: np.ndarray, n_groups: int, metric_fn: Callable,
                        n_boot: int, rng: np.random.Generator, confidence: float) -> dict:
    y_all = np.asarray(y_true)
    order = np.argsort(codes, kind="mergesort")
    groups = np.split(order, np.cumsum(np.bincount(codes, minlength=n_groups))[:-1])
    values: dict[str, list[float]] = {}
    for _ in range(n_boot):
        chosen = rng.integers(0, n_groups, size=n_groups)
        rows = np.concatenate([groups[g] for g in chosen])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = metric_fn(y_all[rows], p[rows])
        if not isinstance(result, dict):
            result = {getattr(metric_fn, "__name__", "metric"): result}
        for name, value in result.items():
            values.setdefault(name, []).append(np.nan if value is None else float(value))
    return {name: _interval(np.asarray(v), confidence) for name, v in values.items()}


def sanity_notes(result: dict) -> list[str]:
    """Warnings a reader must see: an AUC at chance level, or below it (inverted scores?).

    ``result`` is a :func:`binary_metrics` dict, optionally with ``ci`` from :func:`bootstrap_ci`.
    """
    notes: list[str] = []
    auc = result.get("roc_auc")
    if auc is None:
        return notes
    interval = (result.get("ci") or {}).get("roc_auc")
    if interval is not None and interval[0] <= 0.5 <= interval[1]:
        notes.append(
            f"ROC-AUC {auc:.3f} with a 95% interval [{interval[0]:.3f}, {interval[1]:.3f}] that includes 0.5: "
            "the model is not distinguishable from chance on these patients"
        )
    elif interval is not None and interval[1] < 0.5 or interval is None and auc < 0.4:
        notes.append(
            f"ROC-AUC {auc:.3f} is below chance: the scores rank the classes the wrong way round; "
            "check positive_label and the class order (or the model's preprocessing)"
        )
    elif interval is None and abs(auc - 0.5) < 0.05:
        notes.append(f"ROC-AUC {auc:.3f} is close to chance level (0.5)")
    return notes


# --------------------------------------------------------------------------- multi-class
def multiclass_metrics(y_true, prob_matrix, class_names: Sequence[str]) -> dict:
    """Accuracy, balanced accuracy, macro/micro one-vs-rest AUC, per-class report, confusion matrix.

    The prediction is the arg-max class. Classes absent from ``y_true`` get a ``None`` AUC and
    recall, and are left out of the macro averages (a note says so).
    """
    y = np.asarray(y_true).astype(int)
    probs = np.asarray(prob_matrix, dtype=np.float64)
    n_classes = len(class_names)
    if probs.ndim != 2 or probs.shape != (len(y), n_classes):
        raise ValueError(f"prob_matrix must have shape ({len(y)}, {n_classes}), got {probs.shape}")
    if len(y) == 0:
        raise ValueError("no images to evaluate")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"labels must lie in 0..{n_classes - 1}")
    if np.issubdtype(np.asarray(prob_matrix).dtype, np.integer):
        raise ValueError("prob_matrix holds integers (hard labels?); pass predicted probabilities")
    notes: list[str] = []
    predicted = probs.argmax(axis=1)
    matrix = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(matrix, (y, predicted), 1)
    ones = np.ones((1, len(y)))
    per_class = []
    for label, name in enumerate(class_names):
        truth = y == label
        tp = matrix[label, label]
        support = int(truth.sum())
        predicted_count = int(matrix[:, label].sum())
        precision = tp / predicted_count if predicted_count else None
        recall = tp / support if support else None
        f1 = 2 * tp / (support + predicted_count) if support + predicted_count else None
        auc = _to_float(_weighted_auc(truth, probs[:, label], ones)[0])
        per_class.append({"class": str(name), "label": label, "precision": precision, "recall": recall,
                          "f1": f1, "support": support, "roc_auc": auc})
    absent = [row["class"] for row in per_class if row["support"] == 0]
    if absent:
        notes.append(f"classes without images ({absent}) have no recall or AUC and are left out of macro averages")
    defined_auc = [row["roc_auc"] for row in per_class if row["roc_auc"] is not None]
    recalls = [row["recall"] for row in per_class if row["recall"] is not None]
    f1s = [row["f1"] for row in per_class if row["support"] > 0 and row["f1"] is not None]
    onehot = np.eye(n_classes, dtype=bool)[y].ravel()
    micro = _to_float(_weighted_auc(onehot, probs.ravel(), np.ones((1, onehot.size)))[0])
    return {
        "accuracy": float(np.mean(predicted == y)),
        "balanced_accuracy": float(np.mean(recalls)) if recalls else None,
        "roc_auc_macro": float(np.mean(defined_auc)) if defined_auc else None,
        "roc_auc_micro": micro,
        "f1_macro": float(np.mean(f1s)) if f1s else None,
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "class_names": [str(name) for name in class_names],
        "n_images": int(len(y)),
        "notes": notes,
    }


# --------------------------------------------------------------------------- patient level
def patient_level_table(y_true, prob, patient_ids, threshold: float, positive_label: int = 1) -> pd.DataFrame:
    """One row per patient: images, true and predicted positive fractions, AUC, sensitivity...

    Columns: ``patient_id, n, n_positive, true_fraction, mean_probability, predicted_fraction,
    fraction_error`` (predicted - true), ``abs_fraction_error``, ``roc_auc`` (``NaN`` when the
    patient has one class only), ``sensitivity``, ``specificity`` (``NaN`` when undefined).
    """
    y = _binary_truth(y_true, positive_label)
    p = _scores(prob, len(y))
    codes, n_groups = _patient_codes(patient_ids, len(y))
    ids = pd.Series(np.asarray(patient_ids)).astype(str)
    predicted = p >= threshold
    frame = pd.DataFrame({"patient_id": ids, "truth": y, "prob": p, "pred": predicted, "code": codes})
    rows = []
    for patient, group in frame.groupby("patient_id", sort=True):
        truth = group["truth"].to_numpy()
        probs = group["prob"].to_numpy()
        pred = group["pred"].to_numpy()
        positives = int(truth.sum())
        negatives = int(len(truth) - positives)
        rows.append({
            "patient_id": patient,
            "n": int(len(truth)),
            "n_positive": positives,
            "true_fraction": positives / len(truth),
            "mean_probability": float(probs.mean()),
            "predicted_fraction": float(pred.mean()),
            "roc_auc": float(_weighted_auc(truth, probs, np.ones((1, len(truth))))[0]),
            "sensitivity": float((truth & pred).sum() / positives) if positives else np.nan,
            "specificity": float((~truth & ~pred).sum() / negatives) if negatives else np.nan,
        })
    table = pd.DataFrame(rows)
    table["fraction_error"] = table["predicted_fraction"] - table["true_fraction"]
    table["abs_fraction_error"] = table["fraction_error"].abs()
    columns = ["patient_id", "n", "n_positive", "true_fraction", "mean_probability", "predicted_fraction",
               "fraction_error", "abs_fraction_error", "roc_auc", "sensitivity", "specificity"]
    return table[columns]


def worst_patients(table: pd.DataFrame, k: int = 5, by: str = "abs_fraction_error") -> pd.DataFrame:
    """The ``k`` patients with the largest ``by`` (default: |predicted - true positive fraction|)."""
    if by not in table.columns:
        raise ValueError(f"column {by!r} not in the patient table ({list(table.columns)})")
    ascending = by in ("roc_auc", "sensitivity", "specificity")  # lower is worse for these
    return table.sort_values(by, ascending=ascending, kind="stable", na_position="last").head(k).reset_index(drop=True)


def fraction_correlation(table: pd.DataFrame) -> dict[str, float | None]:
    """Pearson and Spearman correlation of the true positive fraction with the predicted one.

    ``None`` where undefined (fewer than 3 patients, or a constant column).
    """
    out: dict[str, float | None] = {}
    truth = table["true_fraction"].astype(float)
    for column in ("mean_probability", "predicted_fraction"):
        predicted = table[column].astype(float)
        for method in ("pearson", "spearman"):
            if len(table) < 3 or truth.nunique() < 2 or predicted.nunique() < 2:
                value = None
            else:
                value = _to_float(truth.corr(predicted, method=method))
            out[f"{method}_{column}"] = value
    return out
