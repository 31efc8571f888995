"""Calibration of binary models: expected calibration error, reliability-diagram data, temperature scaling.

``prob`` is P(positive class). ECE averages |mean probability - positive fraction| over equal-width
bins, weighted by their images (0 is perfect). Temperature scaling divides the logit by one ``T``
fitted on validation data; it keeps the ranking (every AUC), so thresholds must be re-chosen after it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
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
