"""bclib.evaluation.metrics and .bootstrap: against scikit-learn, hand-computed cases, and invariants."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from bclib.evaluation import bootstrap
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
    assert metrics.binary_metrics(y, prob)["brier"] == pytest.approx(skm.brier_score_loss(y, prob))
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
    assert {"roc_auc", "pr_auc", "brier", "threshold", "n_images", "n_patients", "confusion_matrix"} <= set(result)


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
    softmax = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    assert metrics.positive_probability(softmax, 2).tolist() == [0.5, 0.1]
    with pytest.raises(ValueError, match="label 3"):
        metrics.positive_probability(softmax, 3)


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


def test_choose_threshold_without_negatives_still_reaches_the_target():
    y = np.ones(6, dtype=int)
    prob = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.2])
    threshold, info = metrics.choose_threshold(y, prob, "sensitivity", 0.5)
    assert np.mean(prob >= threshold) >= 0.5 and info["val_specificity"] is None
    with pytest.raises(ValueError, match="no negative"):
        metrics.choose_threshold(y, prob, "youden")
    with pytest.raises(ValueError, match="no positive"):
        metrics.choose_threshold(1 - y, prob)


# ---------------------------------------------------------------------------- patient bootstrap
def test_weighted_metrics_equal_sklearn_on_an_explicit_patient_resample(scored):
    y, prob, patients = scored
    rng = np.random.default_rng(3)
    chosen = rng.integers(0, 40, 40)
    rows = np.concatenate([np.flatnonzero(patients == str(c)) for c in chosen])
    direct = metrics.binary_metrics(y[rows], prob[rows], 0.5)
    codes, n_patients = bootstrap.patient_codes(patients, len(y))
    assert n_patients == 40
    weights = np.bincount(chosen, minlength=40)[codes][None, :].astype(float)
    weighted = bootstrap.weighted_metrics(y == 1, prob, weights, 0.5, bootstrap.BOOTSTRAP_METRICS)
    for name in bootstrap.BOOTSTRAP_METRICS:
        assert weighted[name][0] == pytest.approx(direct[name]), name
    assert weighted["roc_auc"][0] == pytest.approx(skm.roc_auc_score(y, prob, sample_weight=weights[0]))
    assert weighted["pr_auc"][0] == pytest.approx(skm.average_precision_score(y[rows], prob[rows]))


def test_weighted_metrics_are_nan_where_undefined_and_refuse_unknown_names():
    truth = np.array([True, True, False, False])
    scores = np.array([0.9, 0.6, 0.4, 0.1])
    only_positives = np.array([[1.0, 2.0, 0.0, 0.0]])
    values = bootstrap.weighted_metrics(truth, scores, only_positives, 0.5, ["roc_auc", "specificity", "brier"])
    assert np.isnan(values["roc_auc"][0]) and np.isnan(values["specificity"][0]) and values["brier"][0] >= 0
    with pytest.raises(ValueError, match="unknown metric"):
        bootstrap.weighted_metrics(truth, scores, only_positives, 0.5, ["auc"])
    with pytest.raises(ValueError, match="need a threshold"):
        bootstrap.weighted_metrics(truth, scores, only_positives, None, ["f1"])


def _clustered(n_patients: int = 20, per_patient: int = 20, seed: int = 0):
    """Patients whose images share their label and nearly their score: images are far from independent."""
    rng = np.random.default_rng(seed)
    patient_of_image = np.repeat(np.arange(n_patients), per_patient)
    label = (np.arange(n_patients) % 2)[patient_of_image]
    patient_score = np.clip(0.25 * (np.arange(n_patients) % 2) + rng.uniform(0, 0.75, n_patients), 0, 1)
    score = np.clip(patient_score[patient_of_image] + rng.normal(0, 0.01, len(label)), 0, 1)
    return label, score, patient_of_image


def test_bootstrap_ci_contains_estimate_and_resamples_patients(scored):
    y, prob, patients = scored
    ci = bootstrap.bootstrap_ci(y, prob, patients, ["roc_auc", "sensitivity"], n_boot=300, seed=0, threshold=0.5)
    auc = metrics.roc_auc(y, prob)
    low, high = ci["roc_auc"]
    assert 0 <= low < auc < high <= 1
    assert ci == bootstrap.bootstrap_ci(y, prob, patients, ["roc_auc", "sensitivity"], n_boot=300, seed=0)
    label, score, patient = _clustered()
    by_patient = bootstrap.bootstrap_ci(label, score, patient, ["brier"], n_boot=300)["brier"]
    by_image = bootstrap.bootstrap_ci(label, score, None, ["brier"], n_boot=300)["brier"]
    assert by_patient[1] - by_patient[0] > 2 * (by_image[1] - by_image[0])


def test_bootstrap_ci_of_a_random_model_covers_chance():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 5000)
    prob = rng.uniform(0, 1, 5000)
    ci = bootstrap.bootstrap_ci(y, prob, rng.integers(0, 100, 5000), n_boot=300, threshold=0.5)
    assert set(ci) == set(bootstrap.BOOTSTRAP_METRICS)
    assert ci["roc_auc"][0] < 0.5 < ci["roc_auc"][1]
    assert all(interval[0] <= interval[1] for interval in ci.values())
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap.bootstrap_ci(y, prob, n_boot=0)


def test_binary_metrics_with_ci(scored):
    y, prob, patients = scored
    result = bootstrap.binary_metrics_with_ci(y, prob, patients, 0.5, n_boot=100)
    assert set(result["ci"]) == set(bootstrap.BOOTSTRAP_METRICS)
    assert result["ci"]["roc_auc"][0] < result["roc_auc"] < result["ci"]["roc_auc"][1]
    one_patient = bootstrap.binary_metrics_with_ci(y, prob, np.zeros(len(y)), 0.5, n_boot=100)
    assert one_patient["ci"] == {} and any("one patient" in note for note in one_patient["notes"])
    assert bootstrap.binary_metrics_with_ci(y, prob, patients, 0.5, n_boot=0)["ci"] == {}
    assert bootstrap.format_interval(result["ci"]["roc_auc"]).count(".") == 2
    assert bootstrap.format_interval(None) == ""
    assert bootstrap.format_interval([-0.055, -0.0003]) == "[-0.055, -0.0003]"   # excludes zero, and reads so
    assert bootstrap.format_interval([-0.0123, 0.0]) == "[-0.012, 0.000]"


def _two_models(seed: int = 0, n_patients: int = 35, per_patient: int = 60):
    """Model b sees the label more clearly than model a; both share each patient's difficulty."""
    rng = np.random.default_rng(seed)
    patient = np.repeat(np.arange(n_patients), per_patient)
    y = (rng.uniform(size=len(patient)) < rng.uniform(0.1, 0.6, n_patients)[patient]).astype(int)
    shared = rng.normal(0, 1, n_patients)[patient] + rng.normal(0, 1, len(y))
    score_a = 1 / (1 + np.exp(-(0.6 * y + shared)))
    score_b = 1 / (1 + np.exp(-(2.0 * y + shared)))
    return y, score_a, score_b, patient


def test_paired_difference_of_identical_models_is_exactly_zero():
    y, score_a, _, patient = _two_models()
    for metric in ("roc_auc", "brier", "balanced_accuracy"):
        result = bootstrap.paired_bootstrap_difference(y, score_a, score_a.copy(), patient, metric, n_boot=200)
        assert result["difference"] == 0 and result["ci"] == [0.0, 0.0] and result["excludes_zero"] is False
        assert result["a"] == result["b"] == metrics.binary_metrics(y, score_a)[metric]


def test_paired_difference_finds_a_clearly_better_model_and_flips_with_the_order():
    y, score_a, score_b, patient = _two_models()
    forward = bootstrap.paired_bootstrap_difference(y, score_a, score_b, patient, n_boot=500, seed=1)
    assert forward["difference"] == pytest.approx(metrics.roc_auc(y, score_b) - metrics.roc_auc(y, score_a))
    assert forward["difference"] > 0 and forward["excludes_zero"] and 0 < forward["ci"][0] < forward["ci"][1]
    assert forward["ci"][0] <= forward["difference"] <= forward["ci"][1]
    assert (forward["n_patients"], forward["n_images"], forward["n_boot"]) == (35, len(y), 500)
    backward = bootstrap.paired_bootstrap_difference(y, score_b, score_a, patient, n_boot=500, seed=1)
    assert backward["difference"] == pytest.approx(-forward["difference"])
    assert backward["ci"] == pytest.approx([-forward["ci"][1], -forward["ci"][0]])
    assert backward["excludes_zero"]
    assert forward == bootstrap.paired_bootstrap_difference(y, score_a, score_b, patient, n_boot=500, seed=1)


def test_paired_difference_resamples_patients_and_pairs_the_models():
    label, score, patient = _clustered()
    other = np.clip(score + np.random.default_rng(5).normal(0, 0.05, len(score)), 0, 1)
    by_patient = bootstrap.paired_bootstrap_difference(label, score, other, patient, "brier", n_boot=300)
    by_image = bootstrap.paired_bootstrap_difference(label, score, other, np.arange(len(label)), "brier", n_boot=300)
    assert by_patient["n_patients"] == 20 and by_image["n_patients"] == len(label)
    assert by_patient["difference"] == pytest.approx(by_image["difference"])
    width = lambda interval: interval[1] - interval[0]  # noqa: E731
    assert width(by_patient["ci"]) > width(by_image["ci"])
    # the same draws for both models: the paired interval is far narrower than either model's own
    y, score_a, score_b, patients = _two_models()
    near_a = np.clip(score_a + np.random.default_rng(2).normal(0, 0.01, len(y)), 0, 1)
    paired = bootstrap.paired_bootstrap_difference(y, score_a, near_a, patients, n_boot=300)
    alone = bootstrap.bootstrap_ci(y, score_a, patients, ["roc_auc"], n_boot=300)["roc_auc"]
    assert width(paired["ci"]) < width(alone) / 4


def test_paired_difference_threshold_metrics_and_positive_label_zero():
    y, score_a, score_b, patient = _two_models()
    everything_positive = bootstrap.paired_bootstrap_difference(y, score_a, score_a, patient, "sensitivity",
                                                                n_boot=100, threshold_a=0.5, threshold_b=0.0)
    assert everything_positive["b"] == 1.0
    assert everything_positive["difference"] == pytest.approx(1.0 - everything_positive["a"])
    assert everything_positive["ci"][0] >= 0
    # label 0 as the positive class: the same truth and scores give the same comparison
    usual = bootstrap.paired_bootstrap_difference(y, score_a, score_b, patient, "pr_auc", n_boot=100)
    flipped = bootstrap.paired_bootstrap_difference(1 - y, score_a, score_b, patient, "pr_auc", n_boot=100,
                                                    positive_label=0)
    assert flipped == usual


def test_paired_difference_errors_are_clear():
    y, score_a, score_b, patient = _two_models()
    with pytest.raises(ValueError, match="scores_b has"):
        bootstrap.paired_bootstrap_difference(y, score_a, score_b[:-1], patient)
    with pytest.raises(ValueError, match="patient_ids has"):
        bootstrap.paired_bootstrap_difference(y, score_a, score_b, patient[:-1])
    with pytest.raises(ValueError, match="both classes"):
        bootstrap.paired_bootstrap_difference(np.zeros_like(y), score_a, score_b, patient)
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        bootstrap.paired_bootstrap_difference(y, score_a, score_b, patient, metric="auc")
    with pytest.raises(ValueError, match="threshold_b"):
        bootstrap.paired_bootstrap_difference(y, score_a, score_b, patient, "f1", threshold_b=1.5)
    with pytest.raises(ValueError, match="patient_ids is required"):
        bootstrap.paired_bootstrap_difference(y, score_a, score_b, None)
    single = bootstrap.paired_bootstrap_difference(y, score_a, score_b, np.zeros(len(y)), n_boot=50)
    assert single["ci"] is None and single["excludes_zero"] is False and single["difference"] > 0


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
    assert result["n_patients"] is None
    assert metrics.multiclass_metrics(y, prob, ["a", "b", "c"], np.arange(300) % 7)["n_patients"] == 7


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
    assert set(correlation) == {"pearson_mean_probability", "pearson_predicted_fraction"}
    assert correlation["pearson_predicted_fraction"] == pytest.approx(
        np.corrcoef(table["true_fraction"], table["predicted_fraction"])[0, 1])
    assert isinstance(table, pd.DataFrame)


def test_no_warning_for_ordinary_probabilities(scored):
    y, prob, _ = scored
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics.binary_metrics(y, prob, 0.5)


def test_sanity_notes_flag_chance_and_inverted_models():
    assert bootstrap.sanity_notes({"roc_auc": 0.52, "ci": {"roc_auc": (0.45, 0.6)}})[0].count("chance")
    assert "wrong way round" in bootstrap.sanity_notes({"roc_auc": 0.3, "ci": {"roc_auc": (0.25, 0.35)}})[0]
    assert "wrong way round" in bootstrap.sanity_notes({"roc_auc": 0.3})[0]
    assert bootstrap.sanity_notes({"roc_auc": 0.9, "ci": {"roc_auc": (0.85, 0.95)}}) == []
    assert bootstrap.sanity_notes({"roc_auc": None}) == []
