"""bclib.evaluation.metrics against scikit-learn and hand-computed cases."""
from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from bclib.evaluation import metrics


@pytest.fixture
def scored():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    prob = np.clip(0.35 * y + rng.normal(0.35, 0.2, 400), 0, 1)
    prob[:40] = np.round(prob[:40], 1)  # ties
    patients = np.repeat(np.arange(40), 10).astype(str)
    return y, prob, patients


def test_aucs_and_brier_match_sklearn(scored):
    y, prob, _ = scored
    assert metrics.roc_auc(y, prob) == pytest.approx(skm.roc_auc_score(y, prob))
    assert metrics.pr_auc(y, prob) == pytest.approx(skm.average_precision_score(y, prob))
    assert metrics.brier_score(y, prob) == pytest.approx(skm.brier_score_loss(y, prob))
    # positive label 0 (BreastMNIST): AUC of P(label 0) with label 0 as the positive class
    assert metrics.roc_auc(y, 1 - prob, positive_label=0) == pytest.approx(skm.roc_auc_score(1 - y, 1 - prob))
    assert metrics.pr_auc(y, 1 - prob, positive_label=0) == pytest.approx(
        skm.average_precision_score(y, 1 - prob, pos_label=0))


def test_threshold_metrics_match_sklearn(scored):
    y, prob, patients = scored
    result = metrics.binary_metrics(y, prob, threshold=0.5, class_names=["non-IDC", "IDC"], patient_ids=patients)
    predicted = (prob >= 0.5).astype(int)
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted))
    assert result["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, predicted))
    assert result["sensitivity"] == pytest.approx(skm.recall_score(y, predicted))
    assert result["specificity"] == pytest.approx(skm.recall_score(y, predicted, pos_label=0))
    assert result["precision"] == pytest.approx(skm.precision_score(y, predicted))
    assert result["f1"] == pytest.approx(skm.f1_score(y, predicted))
    assert result["confusion_matrix"] == skm.confusion_matrix(y, predicted).tolist()
    assert result["positive_class"] == "IDC"
    assert result["n_images"] == 400 and result["n_patients"] == 40
    assert set(metrics.METRIC_NAMES) <= set(result)


def test_hand_computed_case_with_positive_label_zero():
    # labels: 0 = malignant (positive), 1 = benign, as in BreastMNIST
    y = np.array([0, 0, 0, 1, 1])
    p_malignant = np.array([0.9, 0.6, 0.2, 0.7, 0.1])
    result = metrics.binary_metrics(y, p_malignant, threshold=0.5, positive_label=0,
                                    class_names=["malignant", "benign"])
    # predicted malignant: 0.9, 0.6, 0.7 -> tp=2, fp=1, fn=1, tn=1
    assert result["confusion_matrix"] == [[1, 1], [1, 2]]
    assert result["sensitivity"] == pytest.approx(2 / 3)
    assert result["specificity"] == pytest.approx(1 / 2)
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["positive_class"] == "malignant"
    # AUC: pairs (pos, neg): 0.9>0.7,0.9>0.1, 0.6<0.7,0.6>0.1, 0.2<0.7,0.2>0.1 -> 4/6
    assert result["roc_auc"] == pytest.approx(4 / 6)


def test_one_class_gives_none_and_a_note():
    y = np.zeros(20, dtype=int)
    prob = np.linspace(0.05, 0.95, 20)
    result = metrics.binary_metrics(y, prob, threshold=0.5)
    assert result["roc_auc"] is None and result["pr_auc"] is None and result["sensitivity"] is None
    assert result["specificity"] == pytest.approx(0.5)
    assert any("undefined" in note for note in result["notes"])
    assert metrics.roc_auc(y, prob) is None


def test_hard_labels_are_refused():
    y = np.array([0, 1, 1, 0, 1])
    with pytest.raises(ValueError, match="hard labels"):
        metrics.roc_auc(y, np.array([0, 1, 1, 0, 0]))
    with pytest.raises(ValueError, match="hard labels"):
        metrics.binary_metrics(y, np.array([False, True, True, False, True]))
    with pytest.warns(metrics.HardLabelWarning):
        result = metrics.binary_metrics(y, np.array([0.0, 1.0, 1.0, 0.0, 0.0]))
    assert any("hard labels" in note for note in result["notes"])


def test_bad_inputs_raise_helpful_errors():
    with pytest.raises(ValueError, match="probabilities"):
        metrics.roc_auc([0, 1], [0.2, 1.5])
    with pytest.raises(ValueError, match="labels 0/1"):
        metrics.roc_auc([0, 2], [0.2, 0.5])
    with pytest.raises(ValueError, match="values for"):
        metrics.roc_auc([0, 1, 1], [0.2, 0.5])


def test_positive_probability_shapes():
    assert np.allclose(metrics.positive_probability(np.array([[0.2], [0.9]]), 0), [0.8, 0.1])
    assert np.allclose(metrics.positive_probability(np.array([[0.3, 0.7]]), 1), [0.7])
    with pytest.raises(ValueError):
        metrics.positive_probability(np.zeros((2, 3)))


def test_choose_threshold_reaches_target_sensitivity(scored):
    y, prob, _ = scored
    threshold, info = metrics.choose_threshold(y, prob, "sensitivity", target_sensitivity=0.9)
    sensitivity = np.mean(prob[y == 1] >= threshold)
    assert sensitivity >= 0.9
    # the highest such threshold: any higher validation probability misses the target
    higher = np.unique(prob[prob > threshold])
    assert all(np.mean(prob[y == 1] >= t) < 0.9 for t in higher)
    assert info["method"] == "sensitivity@0.90" and info["chosen_on"] == "val"
    assert info["val_sensitivity"] == pytest.approx(sensitivity)


def test_choose_threshold_youden_and_f1_are_optimal(scored):
    y, prob, _ = scored
    candidates = np.unique(prob)
    youden = [np.mean(prob[y == 1] >= t) + np.mean(prob[y == 0] < t) - 1 for t in candidates]
    f1s = [skm.f1_score(y, (prob >= t).astype(int), zero_division=0) for t in candidates]
    t_youden, _ = metrics.choose_threshold(y, prob, "youden")
    t_f1, info = metrics.choose_threshold(y, prob, "f1")
    assert np.mean(prob[y == 1] >= t_youden) + np.mean(prob[y == 0] < t_youden) - 1 == pytest.approx(max(youden))
    assert info["val_f1"] == pytest.approx(max(f1s))
    assert skm.f1_score(y, (prob >= t_f1).astype(int)) == pytest.approx(max(f1s))
    with pytest.raises(ValueError, match="unknown threshold method"):
        metrics.choose_threshold(y, prob, "median")


def test_choose_threshold_positive_label_zero():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p_label0 = np.array([0.9, 0.8, 0.7, 0.3, 0.4, 0.2, 0.1, 0.05])
    threshold, info = metrics.choose_threshold(y, p_label0, "sensitivity", 0.75, positive_label=0)
    assert threshold == pytest.approx(0.7)
    assert info["val_sensitivity"] == pytest.approx(0.75)


def test_weighted_core_equals_explicit_resample(scored):
    y, prob, patients = scored
    rng = np.random.default_rng(3)
    chosen = rng.integers(0, 40, 40)
    rows = np.concatenate([np.flatnonzero(patients == str(c)) for c in chosen])
    direct = metrics.binary_metrics(y[rows], prob[rows], 0.5)
    codes, _ = metrics._patient_codes(patients, len(y))
    weights = np.bincount(chosen, minlength=40)[codes][None, :].astype(float)
    weighted = metrics._weighted_table(y == 1, prob, weights, 0.5, metrics.BOOTSTRAP_METRICS)
    for name in metrics.BOOTSTRAP_METRICS:
        assert weighted[name][0] == pytest.approx(direct[name]), name


def test_bootstrap_ci_contains_estimate_and_resamples_patients(scored):
    y, prob, patients = scored
    ci = metrics.bootstrap_ci(y, prob, patients, ["roc_auc", "sensitivity"], n_boot=300, seed=0, threshold=0.5)
    auc = metrics.roc_auc(y, prob)
    low, high = ci["roc_auc"]
    assert 0 <= low < auc < high <= 1
    assert ci == metrics.bootstrap_ci(y, prob, patients, ["roc_auc", "sensitivity"], n_boot=300, seed=0)
    # patients whose images all share one label and score: resampling patients gives wider intervals
    y_grouped = np.repeat(np.arange(20) % 2, 20)
    prob_grouped = np.repeat(np.random.default_rng(0).uniform(0, 1, 20), 20)
    ids = np.repeat(np.arange(20), 20)
    by_patient = metrics.bootstrap_ci(y_grouped, prob_grouped, ids, ["brier"], n_boot=300)["brier"]
    by_image = metrics.bootstrap_ci(y_grouped, prob_grouped, None, ["brier"], n_boot=300)["brier"]
    assert by_patient[1] - by_patient[0] > 2 * (by_image[1] - by_image[0])


def test_bootstrap_ci_with_callable(scored):
    y, prob, patients = scored
    ci = metrics.bootstrap_ci(y, prob, patients, lambda t, p: {"auc": skm.roc_auc_score(t, p)}, n_boot=50)
    assert 0.5 < ci["auc"][0] <= ci["auc"][1] <= 1


def test_bootstrap_is_fast_on_ten_thousand_images():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 10_000)
    prob = rng.uniform(0, 1, 10_000)
    patients = rng.integers(0, 150, 10_000)
    start = time.perf_counter()
    ci = metrics.bootstrap_ci(y, prob, patients, n_boot=1000, threshold=0.5)
    elapsed = time.perf_counter() - start
    assert set(ci) == set(metrics.BOOTSTRAP_METRICS)
    assert ci["roc_auc"][0] < 0.5 < ci["roc_auc"][1]  # a random model's AUC interval covers chance
    assert elapsed < 60  # generous on a shared 2-core machine; typically a few seconds


def test_multiclass_metrics_match_sklearn():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 300)
    logits = rng.normal(size=(300, 3)) + 1.5 * np.eye(3)[y]
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    result = metrics.multiclass_metrics(y, prob, ["a", "b", "c"])
    predicted = prob.argmax(1)
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted))
    assert result["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, predicted))
    assert result["roc_auc_macro"] == pytest.approx(skm.roc_auc_score(y, prob, multi_class="ovr", average="macro"))
    assert result["roc_auc_micro"] == pytest.approx(skm.roc_auc_score(np.eye(3)[y], prob, average="micro"))
    report = skm.classification_report(y, predicted, output_dict=True)
    for row in result["per_class"]:
        assert row["f1"] == pytest.approx(report[str(row["label"])]["f1-score"])
        assert row["recall"] == pytest.approx(report[str(row["label"])]["recall"])
    assert result["confusion_matrix"] == skm.confusion_matrix(y, predicted).tolist()


def test_multiclass_absent_class_is_noted():
    y = np.array([0, 1, 0, 1])
    prob = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    result = metrics.multiclass_metrics(y, prob, ["a", "b", "c"])
    assert result["per_class"][2]["roc_auc"] is None and result["notes"]
    assert result["roc_auc_macro"] == pytest.approx(1.0)


def test_patient_table_and_worst_patients():
    y = np.array([1, 1, 0, 0, 0, 0, 1, 1, 1, 0])
    prob = np.array([0.9, 0.8, 0.1, 0.2, 0.6, 0.7, 0.4, 0.3, 0.2, 0.9])
    patients = np.array(["a"] * 4 + ["b"] * 2 + ["c"] * 4)
    table = metrics.patient_level_table(y, prob, patients, threshold=0.5)
    row_a = table.set_index("patient_id").loc["a"]
    assert row_a["n"] == 4 and row_a["true_fraction"] == pytest.approx(0.5)
    assert row_a["predicted_fraction"] == pytest.approx(0.5) and row_a["roc_auc"] == pytest.approx(1.0)
    row_b = table.set_index("patient_id").loc["b"]
    assert np.isnan(row_b["roc_auc"]) and np.isnan(row_b["sensitivity"]) and row_b["specificity"] == 0
    worst = metrics.worst_patients(table, k=2)
    assert list(worst["patient_id"]) == ["b", "c"]
    correlation = metrics.fraction_correlation(table)
    assert set(correlation) >= {"pearson_mean_probability", "spearman_predicted_fraction"}
    assert all(value is None or -1 <= value <= 1 for value in correlation.values())
    assert isinstance(table, pd.DataFrame)


def test_no_warning_for_ordinary_probabilities(scored):
    y, prob, _ = scored
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics.binary_metrics(y, prob, 0.5)


def test_sanity_notes_flag_chance_and_inverted_models():
    assert metrics.sanity_notes({"roc_auc": 0.52, "ci": {"roc_auc": (0.45, 0.6)}})[0].count("chance")
    assert "wrong way round" in metrics.sanity_notes({"roc_auc": 0.3, "ci": {"roc_auc": (0.25, 0.35)}})[0]
    assert "wrong way round" in metrics.sanity_notes({"roc_auc": 0.3})[0]
    assert metrics.sanity_notes({"roc_auc": 0.9, "ci": {"roc_auc": (0.85, 0.95)}}) == []
    assert metrics.sanity_notes({"roc_auc": None}) == []
