"""The leakage lesson's memoriser, its chart and its conclusion, on small patches made here."""
from __future__ import annotations

from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bclib.evaluation import findings, leakage
from bclib.plots import evaluation as evaluation_plots


def _session(patient_effect: float, n_patients: int = 40, per_patient: int = 40, seed: int = 0):
    """Patches whose colour carries a weak class signal and, with ``patient_effect``, each patient's own tint;
    each patient has its own share of positives. Patients split 24 / 8 / 8 into train, val and test."""
    rng = np.random.default_rng(seed)
    patients = np.repeat(np.arange(n_patients), per_patient).astype(str)
    share = np.repeat(rng.beta(0.3, 0.3, n_patients), per_patient)  # most patients mostly one class
    labels = (rng.uniform(size=len(patients)) < share).astype(int)
    tint = np.repeat(rng.normal(0, patient_effect, (n_patients, 3)), per_patient, axis=0)
    colour = 128 + 40 * tint + 8 * labels[:, None] + rng.normal(0, 20, (len(patients), 3))
    images = np.clip(colour[:, None, None, :] + rng.normal(0, 5, (len(patients), 4, 4, 3)), 0, 255).astype(np.uint8)
    rows = np.arange(len(patients))
    parts = {"train": rows[: 24 * per_patient], "val": rows[24 * per_patient: 32 * per_patient],
             "test": rows[32 * per_patient:]}
    index = SimpleNamespace(frame=pd.DataFrame({"patient_id": patients}))
    cache = SimpleNamespace(images=images, labels=labels, index=index)
    return SimpleNamespace(cache=cache, positions=parts.__getitem__, seed=0, num_classes=2, positive_label=1)


def test_a_memoriser_is_flattered_when_patients_can_be_recognised():
    series = leakage.memoriser_lesson(_session(patient_effect=2.0), seeds=3, neighbours=5, n_boot=200)
    result, neighbours = series.difference, series.neighbours
    assert list(series.table.index) == [0, 1, 2] and result["seeds"] == 3 and result["n_patients"] == 8
    assert np.isclose(result["difference"], series.table["difference"].mean())
    assert result["difference"] > 0.02 and result["excludes_zero"] and result["ci"][0] > 0
    assert neighbours["same_patient_share"] > 5 * neighbours["chance_same_patient_share"]
    text = findings.memoriser_text(series)
    assert f"{result['difference']:+.3f}" in text and "flatters this model beyond noise" in text
    figure = evaluation_plots.leakage_differences(series)
    ax = figure.axes[0]
    assert [label.get_text() for label in ax.get_xticklabels()][-1] == "mean"
    assert "image-level - patient-level" in ax.get_ylabel()
    plt.close("all")


def test_without_patient_signatures_the_neighbours_come_from_any_patient():
    series = leakage.memoriser_lesson(_session(patient_effect=0.0), seeds=2, neighbours=5, n_boot=100)
    neighbours = series.neighbours
    assert neighbours["same_patient_share"] < 3 * neighbours["chance_same_patient_share"]
    assert abs(series.difference["difference"]) < 0.05


def test_memoriser_text_says_plainly_when_no_inflation_shows():
    table = pd.DataFrame({"difference": [0.004, 0.006]}, index=pd.Index([0, 1], name="seed"))
    series = leakage.LeakageSeries(table, {"difference": 0.005, "ci": [-0.001, 0.015], "excludes_zero": False,
                                           "a": 0.882, "b": 0.887, "n_patients": 34, "n_images": 764, "seeds": 2,
                                           "k": 5, "test_patients_seen": 34},
                                   {"same_patient_share": 0.035, "chance_same_patient_share": 0.0028,
                                    "agreement_same_patient": 0.96, "agreement_other_patients": 0.81})
    text = findings.memoriser_text(series)
    assert "does not measurably inflate" in text and "+0.005 (95 % CI -0.001 to +0.015" in text
    assert "3.5% of the leaky model's nearest training patches" in text and "13 times" in text
    assert "by 15 percentage points" in text and "0.52% of the votes" in text and "flatters" not in text
