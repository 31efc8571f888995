"""bclib.evaluation.calibration: ECE, reliability data, temperature scaling."""
from __future__ import annotations

import numpy as np
import pytest

from bclib.evaluation import calibration
from bclib.evaluation import metrics


def _calibrated(n: int = 20_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    prob = rng.uniform(0, 1, n)
    y = (rng.uniform(0, 1, n) < prob).astype(int)
    return y, prob


def _overconfident(n: int = 20_000, seed: int = 1, temperature: float = 3.0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, n)
    y = (rng.uniform(0, 1, n) < 1 / (1 + np.exp(-logits))).astype(int)
    return y, 1 / (1 + np.exp(-logits * temperature))  # logits sharpened: over-confident


def test_calibrated_data_has_small_ece():
    y, prob = _calibrated()
    assert calibration.expected_calibration_error(y, prob) < 0.02


def test_ece_hand_computed():
    y = np.array([1, 0, 1, 1])
    prob = np.array([0.05, 0.05, 0.95, 0.95])
    # bin 0: mean 0.05, fraction 0.5 -> gap 0.45; bin 9: mean 0.95, fraction 1 -> gap 0.05
    assert calibration.expected_calibration_error(y, prob) == pytest.approx(0.5 * 0.45 + 0.5 * 0.05)
    # the positive class named explicitly: label 0 as positive with P(label 0)
    assert calibration.expected_calibration_error(1 - y, prob, positive_label=0) == pytest.approx(0.25)


def test_reliability_data_covers_all_bins():
    y, prob = _calibrated(2000)
    table = calibration.reliability_data(y, prob, n_bins=5)
    assert len(table) == 5 and table["count"].sum() == 2000
    assert table["bin_low"].iloc[0] == 0 and table["bin_high"].iloc[-1] == 1
    filled = table[table["count"] > 0]
    assert ((filled["mean_probability"] >= filled["bin_low"]) & (filled["mean_probability"] <= filled["bin_high"])).all()
    edge = calibration.reliability_data([1, 0], [1.0, 0.0], n_bins=10)
    assert edge["count"].iloc[-1] == 1 and edge["count"].iloc[0] == 1


def test_temperature_fixes_overconfidence():
    y, prob = _overconfident()
    half = len(y) // 2
    temperature = calibration.fit_temperature(y[:half], prob[:half])
    assert 2.0 < temperature < 4.5  # the true sharpening was 3
    scaled = calibration.apply_temperature(prob[half:], temperature)
    before = calibration.expected_calibration_error(y[half:], prob[half:])
    after = calibration.expected_calibration_error(y[half:], scaled)
    assert after < before / 2
    # ranking, hence AUC, unchanged
    assert metrics.roc_auc(y[half:], scaled) == pytest.approx(metrics.roc_auc(y[half:], prob[half:]), abs=1e-6)


def test_calibrated_data_keeps_temperature_near_one():
    y, prob = _calibrated()
    assert 0.85 < calibration.fit_temperature(y, prob) < 1.15


def test_temperature_errors_and_summary():
    with pytest.raises(ValueError, match="both classes"):
        calibration.fit_temperature([1, 1, 1], [0.2, 0.6, 0.9])
    with pytest.raises(ValueError, match="positive"):
        calibration.apply_temperature([0.5], 0)
    with pytest.raises(ValueError, match="hard labels"):
        calibration.expected_calibration_error([0, 1, 1], np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="labels 0/1"):
        calibration.reliability_data([0, 2], [0.1, 0.9])
    y, prob = _overconfident(4000)
    scaled = calibration.apply_temperature(prob, 3.0)
    assert calibration.expected_calibration_error(y, scaled) < calibration.expected_calibration_error(y, prob)
    assert metrics.binary_metrics(y, scaled)["brier"] < metrics.binary_metrics(y, prob)["brier"]


def _shifted(n: int = 20_000, seed: int = 2, shift: float = 1.2):
    """Calibrated logits plus a constant: what balanced class weights do to a model of a rare class."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(-1.0, 1.5, n)
    y = (rng.uniform(0, 1, n) < 1 / (1 + np.exp(-logits))).astype(int)
    return y, 1 / (1 + np.exp(-(logits + shift)))


def test_platt_recovers_a_shift_that_temperature_cannot():
    y, prob = _shifted()
    half = len(y) // 2
    slope, intercept = calibration.fit_platt(y[:half], prob[:half])
    assert slope == pytest.approx(1.0, abs=0.1) and intercept == pytest.approx(-1.2, abs=0.15)
    before = calibration.expected_calibration_error(y[half:], prob[half:])
    platt = calibration.expected_calibration_error(y[half:], calibration.apply_platt(prob[half:], slope, intercept))
    temperature = calibration.fit_temperature(y[:half], prob[:half])
    scaled = calibration.expected_calibration_error(y[half:], calibration.apply_temperature(prob[half:], temperature))
    assert platt < 0.03 < before / 2 and platt < scaled / 2
    assert metrics.roc_auc(y[half:], calibration.apply_platt(prob[half:], slope, intercept)) == pytest.approx(
        metrics.roc_auc(y[half:], prob[half:]), abs=1e-6)
    with pytest.raises(ValueError, match="both classes"):
        calibration.fit_platt([0, 0], [0.2, 0.3])


def test_ece_resamples_centre_on_the_ece_and_pair_the_methods():
    y, prob = _shifted(3000)
    patients = np.repeat(np.arange(100), 30)
    better = calibration.apply_platt(prob, *calibration.fit_platt(y, prob))
    resampled = calibration.ece_resamples(y.astype(bool), {"a": prob, "b": better}, patients, n_boot=200, seed=0)
    assert resampled["a"].shape == (200,)
    low, high = np.percentile(resampled["a"], [2.5, 97.5])
    assert low < calibration.expected_calibration_error(y, prob) < high
    assert (resampled["b"] < resampled["a"]).all()
