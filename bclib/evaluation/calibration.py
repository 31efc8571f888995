"""Calibration of binary models: expected calibration error, reliability-diagram data, temperature and
Platt scaling.

``prob`` is P(positive class). ECE averages |mean probability - positive fraction| over equal-width
bins, weighted by their images (0 is perfect). Temperature scaling divides the logit by one ``T``;
Platt scaling maps it to ``slope * logit + intercept``, so it can also shift the base rate. Both are
fitted on validation data and keep the ranking (every AUC), so thresholds must be re-chosen after them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit, logit

from bclib.evaluation.metrics import binary_truth, checked_scores

#: Probabilities are clipped to [EPSILON, 1 - EPSILON] before taking logits.
EPSILON = 1e-7


def _bin_index(p: np.ndarray, n_bins: int) -> np.ndarray:
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    return np.minimum((p * n_bins).astype(int), n_bins - 1)


def reliability_data(y_true, prob, n_bins: int = 10, positive_label: int = 1) -> pd.DataFrame:
    """One row per equal-width bin: ``bin_low, bin_high, count, mean_probability, positive_fraction, gap``.

    Empty bins are kept with ``count`` 0 and ``NaN`` means, so plots show the whole range.
    """
    y = binary_truth(y_true, positive_label)
    p = checked_scores(prob, len(y))
    bins = _bin_index(p, n_bins)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_probability = np.bincount(bins, weights=p, minlength=n_bins) / count
        positive_fraction = np.bincount(bins, weights=y.astype(float), minlength=n_bins) / count
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return pd.DataFrame({
        "bin_low": edges[:-1],
        "bin_high": edges[1:],
        "count": count,
        "mean_probability": mean_probability,
        "positive_fraction": positive_fraction,
        "gap": mean_probability - positive_fraction,
    })


def expected_calibration_error(y_true, prob, n_bins: int = 10, positive_label: int = 1) -> float:
    """Expected calibration error with ``n_bins`` equal-width bins (see the module docstring)."""
    table = reliability_data(y_true, prob, n_bins, positive_label)
    filled = table[table["count"] > 0]
    if filled.empty:
        raise ValueError("no images to compute a calibration error on")
    return float((filled["count"] * filled["gap"].abs()).sum() / filled["count"].sum())


def _logit(p: np.ndarray) -> np.ndarray:
    return logit(np.clip(p, EPSILON, 1 - EPSILON))


def _negative_log_likelihood(y: np.ndarray, logits: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    # log(1 + exp(-z)) for positives, log(1 + exp(z)) for negatives, computed stably
    return float(np.mean(np.logaddexp(0.0, np.where(y, -z, z))))


def fit_temperature(y_val, p_val, positive_label: int = 1) -> float:
    """The temperature ``T`` in [0.05, 20] minimising the validation NLL of ``sigmoid(logit(p) / T)``.

    Fit on **validation** data only. Raises ``ValueError`` when validation holds one class only
    (any large ``T`` would then look best).
    """
    y = binary_truth(y_val, positive_label)
    p = checked_scores(p_val, len(y), "p_val")
    if y.all() or not y.any():
        raise ValueError("temperature scaling needs both classes in the validation data")
    logits = _logit(p)
    result = minimize_scalar(lambda log_t: _negative_log_likelihood(y, logits, float(np.exp(log_t))),
                             bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-5})
    return float(np.exp(result.x))


def apply_temperature(p, temperature: float) -> np.ndarray:
    """``sigmoid(logit(p) / T)``: probabilities after temperature scaling (same shape as ``p``)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return expit(_logit(np.asarray(p, dtype=np.float64)) / float(temperature))


def fit_platt(y_val, p_val, positive_label: int = 1) -> tuple[float, float]:
    """``(slope, intercept)`` minimising the validation NLL of ``sigmoid(slope * logit(p) + intercept)``.

    Fit on **validation** data only; both classes are needed.
    """
    y = binary_truth(y_val, positive_label)
    p = checked_scores(p_val, len(y), "p_val")
    if y.all() or not y.any():
        raise ValueError("Platt scaling needs both classes in the validation data")
    logits = _logit(p)

    def loss(parameters: np.ndarray) -> float:
        z = parameters[0] * logits + parameters[1]
        return float(np.mean(np.logaddexp(0.0, np.where(y, -z, z))))

    result = minimize(loss, x0=np.array([1.0, 0.0]), method="L-BFGS-B", bounds=[(0.01, 100.0), (-50.0, 50.0)])
    return float(result.x[0]), float(result.x[1])


def apply_platt(p, slope: float, intercept: float) -> np.ndarray:
    """``sigmoid(slope * logit(p) + intercept)``: probabilities after Platt scaling (same shape as ``p``)."""
    return expit(float(slope) * _logit(np.asarray(p, dtype=np.float64)) + float(intercept))


def ece_resamples(truth: np.ndarray, scores: dict[str, np.ndarray], patient_ids: np.ndarray, n_boot: int,
                   seed: int, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Each score set's ECE on the same ``n_boot`` patient resamples (one value per resample)."""
    from bclib.evaluation.bootstrap import _resample_weights, patient_codes

    codes, n_patients = patient_codes(patient_ids, len(truth))
    error = np.asarray(truth, dtype=float)
    gaps = {name: np.eye(n_bins)[_bin_index(p, n_bins)] * (p - error)[:, None] for name, p in scores.items()}
    values: dict[str, list[np.ndarray]] = {name: [] for name in scores}
    for weights in _resample_weights(codes, n_patients, int(n_boot), seed):
        for name, gap in gaps.items():
            values[name].append(np.abs(weights @ gap).sum(1) / weights.sum(1))
    return {name: np.concatenate(chunks) for name, chunks in values.items()}


#: The rows of :func:`methods_table` for each model, in order.
METHODS = ("uncalibrated", "temperature", "Platt")


def methods_table(run, n_boot: int = 1000, n_bins: int = 10) -> pd.DataFrame:
    """Every model of ``run`` (a :class:`~bclib.evaluation.compare.RunComparison`) on test, uncalibrated and
    after temperature and Platt scaling fitted on validation: one row per model and method.

    Columns: the fitted parameters, test ECE with its 95 % patient interval, the change from uncalibrated
    with its paired interval (same resamples), and the mean probability (``attrs["positive_fraction"]`` is
    the test split's positive share). ``attrs["values"]`` holds the numbers behind the text cells.
    """
    from bclib.evaluation.bootstrap import format_interval, percentile_interval

    truth, patients = run.truth("test"), run.patient_ids("test")
    val_truth = run.truth("val").astype(int)
    rows, values = [], []
    for name in run.names:
        val_scores, scores = run.scores(name, "val"), run.scores(name, "test")
        temperature = fit_temperature(val_truth, val_scores)
        slope, intercept = fit_platt(val_truth, val_scores)
        calibrated = {"uncalibrated": scores, "temperature": apply_temperature(scores, temperature),
                      "Platt": apply_platt(scores, slope, intercept)}
        resampled = ece_resamples(truth, calibrated, patients, n_boot, run.session.seed, n_bins)
        weighted = bool(run.entry(name).card["params"].get("class_weight"))
        for method, p in calibrated.items():
            ece = expected_calibration_error(truth.astype(int), p, n_bins)
            change = ece - expected_calibration_error(truth.astype(int), scores, n_bins)
            change_interval = percentile_interval(resampled[method] - resampled["uncalibrated"])
            parameters = {"uncalibrated": "", "temperature": f"T = {temperature:.2f}",
                          "Platt": f"slope {slope:.2f}, intercept {intercept:+.2f}"}[method]
            rows.append({"model": name, "method": method, "fitted on validation": parameters,
                         "test ECE [95% CI]": f"{ece:.3f} {format_interval(percentile_interval(resampled[method]))}",
                         "change [95% CI]": "" if method == "uncalibrated" else
                         f"{change:+.3f} {format_interval(change_interval)}",
                         "mean probability": float(p.mean())})
            values.append({"model": name, "method": method, "ece": ece, "change": change,
                           "change_ci": None if method == "uncalibrated" or change_interval is None
                           else list(change_interval), "mean_probability": float(p.mean()),
                           "temperature": temperature, "slope": slope, "intercept": intercept,
                           "class_weights": weighted})
    print(f"test split: {truth.mean():.3f} of the images are {run.positive_name} (the positive share); "
          "each calibration fitted on validation")
    table = pd.DataFrame(rows).set_index(["model", "method"])
    table.attrs.update(positive_fraction=float(truth.mean()),
                       values=pd.DataFrame(values).set_index(["model", "method"]))
    return table
