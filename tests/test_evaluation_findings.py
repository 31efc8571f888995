"""Notebook 07's calibration methods table and figure, and the conclusions about calibration and operating
points, on a run made of known probabilities: one calibrated model and one with a class-weight shift."""
from __future__ import annotations

from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from bclib.evaluation import calibration, findings
from bclib.plots import evaluation as evaluation_plots


class _Run:
    """What methods_table and reliability_grid read of a RunComparison."""

    names = ["plain", "weighted"]
    positive_name = "IDC"
    session = SimpleNamespace(seed=0)

    def __init__(self, n_patients: int = 60, per_patient: int = 50, shift: float = 1.2):
        rng = np.random.default_rng(0)
        self._data = {}
        for split in ("val", "test"):
            logits = rng.normal(-1.2, 1.5, n_patients * per_patient)
            truth = rng.uniform(size=len(logits)) < 1 / (1 + np.exp(-logits))
            self._data[split] = {"truth": truth, "patients": np.repeat(np.arange(n_patients), per_patient).astype(str),
                                 "plain": 1 / (1 + np.exp(-logits)), "weighted": 1 / (1 + np.exp(-(logits + shift)))}

    def truth(self, split):
        return self._data[split]["truth"]

    def patient_ids(self, split):
        return self._data[split]["patients"]

    def scores(self, name, split):
        return self._data[split][name]

    def temperature(self, name):
        return calibration.fit_temperature(self.truth("val").astype(int), self.scores(name, "val"))

    def entry(self, name):
        return SimpleNamespace(card={"params": {"class_weight": {0: 0.7, 1: 1.8} if name == "weighted" else None}})


@pytest.fixture(scope="module")
def table():
    return calibration.methods_table(_Run(), n_boot=100)


def test_methods_table_has_a_row_per_model_and_method_and_platt_repairs_the_shift(table):
    assert list(table.index) == [(name, method) for name in _Run.names for method in calibration.METHODS]
    values = table.attrs["values"]
    weighted = values.loc["weighted"]
    assert weighted.loc["Platt", "intercept"] == pytest.approx(-1.2, abs=0.2)
    assert weighted.loc["Platt", "ece"] < weighted.loc["temperature", "ece"] / 2
    assert weighted.loc["Platt", "change_ci"][1] < 0 and weighted.loc["uncalibrated", "change_ci"] is None
    positive = table.attrs["positive_fraction"]
    assert abs(weighted.loc["Platt", "mean_probability"] - positive) < 0.03
    assert abs(weighted.loc["temperature", "mean_probability"] - positive) > 0.05
    assert table.loc[("weighted", "Platt"), "test ECE [95% CI]"].startswith(f"{weighted.loc['Platt', 'ece']:.3f} [")


def test_calibration_methods_text_explains_why_temperature_cannot_fix_class_weights(table):
    text = findings.calibration_methods_text(table)
    values = table.attrs["values"].loc["weighted"]
    assert "Why a temperature alone cannot fix a class-weighted model" in text
    assert f"its mean probability is {values.loc['uncalibrated', 'mean_probability']:.3f}" in text
    assert f"fitted: {values.loc['Platt', 'intercept']:+.2f}" in text
    assert "lowers it beyond noise for" in text and "weighted" in text.split("lowers it beyond noise for")[1][:40]


def test_reliability_grid_labels_every_panel_and_its_counts():
    assert len(evaluation_plots.reliability_grid(_Run()).axes[0].get_lines()) == 3  # diagonal, before, T
    figure = evaluation_plots.reliability_grid(_Run(), platt=True)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles.count("test patches per bin (colours as above)") == 2
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert any(label.startswith("Platt (ECE") for label in legend) and any(label.startswith("T = ") for label in legend)
    plt.close("all")


def test_operating_points_text_reads_both_thresholds():
    values = pd.DataFrame({"model": ["cnn", "cnn"], "operating point": ["screening", "benchmark (Youden)"],
                           "threshold": [0.12, 0.55], "balanced_accuracy": [0.80, 0.86], "f1": [0.65, 0.78],
                           "sensitivity": [0.92, 0.80], "specificity": [0.68, 0.92]})
    values = values.set_index(["model", "operating point"])
    change = {"difference": 0.06, "ci": [0.02, 0.10], "excludes_zero": True}
    text = findings.operating_points_text(values, "cnn", change)
    assert "benchmark threshold 0.550" in text and "balanced accuracy 0.860 and F1 0.780" in text
    assert "screening threshold 0.120 gives 0.800 and 0.650" in text and "+0.060" in text and "beyond noise" in text
    assert "0.8468" in text


def test_calibration_methods_text_does_not_claim_an_offset_the_run_does_not_show(table):
    shrunk = table.copy()
    values = table.attrs["values"].copy()
    values.loc[("weighted", "uncalibrated"), "mean_probability"] = 0.03
    shrunk.attrs.update(values=values, positive_fraction=table.attrs["positive_fraction"])
    text = findings.calibration_methods_text(shrunk)
    assert "this run does not show that offset" in text and "Why a temperature alone" not in text
    assert "a temperature cannot remove it" in text


def _change(metric: str, a: float, b: float, low: float, high: float) -> dict:
    return {"metric": metric, "a": a, "b": b, "difference": b - a, "ci": [low, high],
            "excludes_zero": low > 0 or high < 0}


def test_committee_text_decides_on_validation_and_quotes_the_benchmark():
    test = {"roc_auc": _change("roc_auc", 0.918, 0.928, 0.001, 0.021),
            "balanced_accuracy": _change("balanced_accuracy", 0.837, 0.851, -0.01, 0.04),
            "f1": _change("f1", 0.70, 0.74, 0.01, 0.06)}
    ahead = findings.committee_text(["a", "b", "c"], "a", test, _change("roc_auc", 0.902, 0.906, 0.001, 0.008),
                                    benchmark_list="val")
    assert "a, b and c" in ahead and "excludes zero: a real change" in ahead and "includes zero" in ahead
    assert "rests on validation" in ahead
    assert "balanced accuracy 0.851 and F1 0.740" in ahead and "0.8468" in ahead
    assert "the benchmark's validation patients (its test patients are not in this data)" in ahead
    behind = findings.committee_text(["a", "b"], "a", test, _change("roc_auc", 0.902, 0.900, -0.01, 0.006))
    assert "would not pick it" in behind and "are not theirs, so the comparison is only indicative" in behind
    from bclib.data.explore import dataset_words

    other = findings.committee_text(["a", "b"], "a", test, _change("roc_auc", 0.9, 0.9, -0.01, 0.01),
                                    words=dataset_words("breastmnist"))
    assert "2016" not in other


def test_calibration_methods_text_names_an_unweighted_model_that_is_shifted_too(table):
    values = table.attrs["values"].copy()
    unweighted = [name for name in dict.fromkeys(values.index.get_level_values("model"))
                  if not values.loc[(name, "uncalibrated"), "class_weights"]]
    shifted = table.copy()
    values.loc[(unweighted[0], "uncalibrated"), "mean_probability"] = table.attrs["positive_fraction"] + 0.2
    shifted.attrs.update(values=values, positive_fraction=table.attrs["positive_fraction"])
    assert f"The weights are not the only cause in this run: {unweighted[0]}" in findings.calibration_methods_text(shifted)
    assert "not the only cause" not in findings.calibration_methods_text(table)
