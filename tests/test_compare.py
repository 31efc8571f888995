"""Notebook 07's library: the run comparison, the leakage lesson, its figures and its conclusions."""
from __future__ import annotations

import json
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from bclib.evaluation import calibration, compare, experiment, findings, leakage, mosaic
from bclib.models import builders, training
from bclib.plots import evaluation as evaluation_plots
from bclib.session import start

RUN_ID = "unit-compare"
NOTEBOOKS = {"02_baseline_cnn": ("baseline_cnn", 2), "03_class_weighting": ("baseline_weighted", 1)}


@pytest.fixture(scope="module")
def run(synthetic_idc):
    """A run with two small models (notebooks 02 and 03), compared by notebook 07."""
    for notebook, (name, epochs) in NOTEBOOKS.items():
        session = start(notebook, data_dir=synthetic_idc, profile="smoke", run_id=RUN_ID, show=False)
        training.set_seeds(0)
        model = builders.compile_model(builders.baseline_cnn(32, 2), learning_rate=3e-3)
        train_ds = session.dataset("train", image_size=32, batch_size=32)
        history = model.fit(train_ds, epochs=epochs, callbacks=[training.PreciseBatchNorm(train_ds)], verbose=0)
        experiment.finish(session, model, name, image_size=32, history=history)
    session = start("07_evaluation", data_dir=synthetic_idc, profile="smoke", run_id=RUN_ID, show=False)
    return compare.load_run(session)


def test_load_run_reads_every_model_with_its_validation_threshold(run):
    session = run.session
    assert run.names == [name for name, _ in NOTEBOOKS.values()]
    assert run.positive_name == "IDC" and run.decision_names == ["non-IDC", "IDC"]
    for entry in run.models:
        assert entry.threshold == entry.card["threshold"]["value"] and entry.card["threshold"]["chosen_on"] == "val"
        for split in compare.SPLITS:
            scores = run.scores(entry.name, split)
            assert len(scores) == len(session.positions(split)) and ((scores >= 0) & (scores <= 1)).all()
    assert (run.truth("test") == (session.labels("test") == 1)).all()
    aucs = {name: compare.metrics.roc_auc(run.truth("val"), run.scores(name, "val")) for name in run.names}
    assert run.best_model() == max(aucs, key=aucs.get)


def test_stored_predictions_are_used_only_for_the_same_patients(run):
    entry = run.models[0]
    assert compare._stored_predictions(run.session, entry.card, entry.directory) is not None
    other = {**entry.card, "split": {**entry.card["split"], "patients_hash": "another split"}}
    assert compare._stored_predictions(run.session, other, entry.directory) is None


def test_models_table_ranks_by_validation_and_says_what_each_started_from(run):
    models = run.models_table(n_boot=30)
    assert models.index[0] == models.attrs["best"] == run.best_model()
    assert models["validation ROC-AUC"].is_monotonic_decreasing
    assert (models["started from"] == "trained from scratch").all() and models.attrs["without_imagenet"] == []
    runner_up = models.attrs["runner_up"]
    auc = models["validation ROC-AUC"]
    assert runner_up["difference"] == pytest.approx(auc.iloc[1] - auc.iloc[0])
    text = findings.models_text(models)
    assert "were trained from scratch" in text and f"{models.attrs['best']} has the highest validation ROC-AUC" in text


def test_test_table_calibration_and_patients(run):
    table = run.table(n_boot=30)
    values = table.attrs["values"]
    assert list(table.index) == list(values.index) == run.names
    assert values["roc_auc"].between(0, 1).all() and table["ROC-AUC"].str.contains(r"^\d\.\d{3} \[").all()
    assert (table["threshold"] == [run.threshold(name) for name in run.names]).all()
    for name in run.names:
        low, high = table.attrs["intervals"][name]["specificity"]
        assert low <= values.loc[name, "specificity"] <= high
    assert "specificity from" in findings.test_table_text(table)
    patients = run.patient_table(run.names[0])
    assert patients["n"].sum() == len(run.truth("test"))
    worst = run.worst_patients(run.names[0], k=2)
    assert len(worst) == 2 and list(worst.columns) == compare.PATIENT_COLUMNS
    assert "Pearson r" in findings.patients_text(patients, run.names[0], "IDC")


def test_ece_change_interval_is_paired():
    rng = np.random.default_rng(0)
    truth = rng.random(400) < 0.3
    patients = np.repeat(np.arange(40), 10)
    scores = np.clip(truth * 0.5 + rng.random(400) * 0.5, 0, 1)
    assert compare.ece_change_interval(truth, scores, scores, patients, n_boot=50, seed=0) == [0.0, 0.0]
    better = np.where(truth, 0.95, 0.05)  # near-perfect probabilities
    low, high = compare.ece_change_interval(truth, scores, better, patients, n_boot=50, seed=0)
    point = (calibration.expected_calibration_error(truth.astype(int), better)
             - calibration.expected_calibration_error(truth.astype(int), scores))
    assert low <= high < 0 and point < 0
    assert compare.ece_change_interval(truth, scores, better, np.zeros(400), n_boot=50, seed=0) is None


def test_ranking_compares_each_model_with_the_test_leader(run):
    ranking = run.ranking(n_boot=30)
    values = ranking["test ROC-AUC"].to_numpy()
    assert list(ranking.index) == [1, 2] and (np.diff(values) <= 0).all()
    leader = ranking.attrs["leader"]
    column = f"difference to {leader} [95% CI]"
    assert ranking.loc[1, "model"] == leader and ranking.loc[1, column] == "" and ranking.loc[1, "verdict"] == "leader"
    assert not ranking.isna().any().any()  # the leader's row holds no NaN or None
    difference, interval = ranking.loc[2, column].split(" ", 1)
    assert float(difference) == pytest.approx(values[1] - values[0], abs=5e-4)
    low, high = json.loads(interval)
    second = ranking.loc[2, "model"]
    assert low <= high and (second in ranking.attrs["real"]) == (low > 0 or high < 0)
    assert sorted(ranking.attrs["real"] + ranking.attrs["tied"]) == [second]
    assert ranking.attrs["chosen_on_validation"] == run.best_model()
    assert "ranks first" in findings.ranking_text(ranking)


def test_figures_and_evaluation_file(run):
    session = run.session
    calibration_figure = evaluation_plots.reliability_grid(run)
    assert len(calibration_figure.axes) == 2 * len(run.names)
    scatter = evaluation_plots.patients(run, run.names[0])
    assert scatter.axes[0].get_ylabel() == "share of patches called positive"
    labelled = {text.get_text() for text in scatter.axes[0].texts}
    assert labelled == set(run.worst_patients(run.names[0], k=5)["patient_id"])  # the figure names the table's patients
    examples = run.gradcam(run.names[0], per_group=2)
    assert examples.heatmaps.shape == examples.images.shape[:3]
    assert 0 <= examples.heatmaps.min() <= examples.heatmaps.max() <= 1
    assert run.gradcam(run.names[0], per_group=2) is examples  # computed once
    grid = evaluation_plots.gradcam(run, run.names[0], per_group=2)
    assert len([ax for ax in grid.axes if ax.images]) == 2 * len(examples.groups)
    assert "P(IDC)" in grid.get_suptitle() and "feature map" in grid.get_suptitle()
    assert "Grad-CAM explains the P(IDC) score" in findings.gradcam_text(run, 2)
    test_patient = session.split.patients("test")[0]
    figures, slides = mosaic.slides(run, run.names[0], [test_patient, "no-such-patient", test_patient])
    assert len(figures) == 1 and slides["split"].tolist() == ["test"]
    assert slides.loc[0, "patches"] == int((run.patient_ids("test") == str(test_patient)).sum())
    ranking = run.ranking(n_boot=10)
    path = run.write_evaluation(session, run.table(n_boot=10), calibration.methods_table(run, n_boot=10), ranking)
    saved = json.loads(path.read_text())
    assert saved["models"] == run.names and len(saved["ranking"]) == len(run.names)
    assert saved["test"][0]["roc_auc"] == pytest.approx(run.table(n_boot=10).attrs["values"]["roc_auc"].iloc[0])
    plt.close("all")


def test_more_classes_score_the_last_class_against_the_rest():
    three = SimpleNamespace(num_classes=3, positive_label=None)
    assert compare.scored_label(three) == 2
    assert compare.scored_label(SimpleNamespace(num_classes=2, positive_label=0)) == 0


def test_leaky_positions_differ_only_in_whose_patches_train():
    patients = np.repeat(np.array(["a", "b", "c", "d", "e"]), 10)
    train_rows, test_rows = np.arange(0, 30), np.arange(30, 50)
    honest, leaky, held = leakage.leaky_positions(train_rows, test_rows, patients, seed=0)
    assert len(honest) == len(leaky)
    assert not set(held) & set(leaky) and not set(held) & set(honest)
    assert set(patients[honest]) <= {"a", "b", "c"}
    assert set(patients[leaky]) & {"d", "e"} == {"d", "e"}
    assert len(held) == 10 and set(patients[held]) == {"d", "e"}


def test_leakage_lesson_scores_both_models_on_the_same_test_patches(run):
    lesson = leakage.lesson(run.session, epochs=1, image_size=32, batch_size=32)
    table = lesson.table
    assert table.loc[leakage.LEAKY, "test patients seen in training"] > 0
    assert table.loc[leakage.HONEST, "test patients seen in training"] == 0
    assert table["training images"].nunique() == 1 and table["test images"].nunique() == 1
    gap = lesson.difference(n_boot=30)
    assert gap["n_images"] == table["test images"].iloc[0] and gap["test_patients_seen"] > 0
    assert gap["difference"] == pytest.approx(table.loc[leakage.LEAKY, "test ROC-AUC"]
                                              - table.loc[leakage.HONEST, "test ROC-AUC"])


# --------------------------------------------------------------------------- figures
def test_confusion_matrices_share_one_colour_scale():
    fig, axes = plt.subplots(1, 2)
    for ax, matrix in zip(axes, ([[5, 1], [2, 3]], [[40, 10], [5, 20]])):
        evaluation_plots.confusion_matrix(matrix, ["non-IDC", "IDC"], ax=ax, vmax=40)
    assert [ax.images[0].get_clim() for ax in axes] == [(0, 40), (0, 40)]
    alone = evaluation_plots.confusion_matrix([[5, 1], [2, 3]], ["non-IDC", "IDC"])
    assert alone.axes[0].images[0].get_clim() == (0, 5)
    plt.close("all")


# --------------------------------------------------------------------------- conclusions
def _ranking(intervals, test, validation, without_imagenet=()) -> pd.DataFrame:
    names = [f"model_{number}" for number in range(len(test))]
    table = pd.DataFrame({"model": names, "test ROC-AUC": test, "validation ROC-AUC": validation},
                         index=pd.RangeIndex(1, len(names) + 1, name="rank"))
    real = [name for name, ci in zip(names, intervals) if ci is not None and (ci[0] > 0 or ci[1] < 0)]
    table.attrs.update(metric="roc_auc", label="ROC-AUC", leader="model_0", chosen_on_validation="model_1",
                       val_patients=4, test_patients=5, real=real,
                       tied=[name for name, ci in zip(names[1:], intervals[1:]) if name not in real],
                       without_imagenet=list(without_imagenet))
    return table


def test_ranking_text_calls_a_difference_real_only_when_its_interval_excludes_zero():
    tied = findings.ranking_text(_ranking([None, [-0.05, 0.03], [-0.06, 0.01]], [0.90, 0.89, 0.88], [0.85, 0.91, 0.80]))
    assert "this run cannot rank them apart from model_0" in tied and "really below" not in tied
    assert "chosen on validation, model_1, ranks 2" in tied
    assert "exceeds validation ROC-AUC for model_0 and model_2" in tied and "4 in validation, 5 in" in tied
    assert "random weights" not in tied
    real = findings.ranking_text(_ranking([None, [-0.15, -0.05]], [0.90, 0.80], [0.95, 0.85], ["model_1"]))
    assert "model_1 is really below it" in real and "cannot rank" not in real and "exceeds" not in real
    assert "model_1 started from random weights (ImageNet weights were missing)" in real


def test_models_text_calls_a_near_tie_and_names_missing_imagenet_weights():
    table = pd.DataFrame({"started from": ["trained from scratch", "random weights (ImageNet weights were missing)"],
                          "validation ROC-AUC": [0.8754, 0.8750]}, index=["cnn", "mobilenetv2"])
    table.attrs.update(best="cnn", val_patients=35, runner_up={"difference": -0.0004, "ci": [-0.012, 0.011],
                                                               "excludes_zero": False})
    text = findings.models_text(table)
    assert "cnn was trained from scratch; mobilenetv2 started from random weights" in text
    assert "a near-tie: mobilenetv2 is less than 0.001 behind" in text and "coin toss" in text
    assert "between the two" in text and "so does" not in text
    table.loc["resnet50"] = ["random weights (ImageNet weights were missing)", 0.8601]
    table.attrs["within_noise"] = ["mobilenetv2", "resnet50"]   # a third model tied with the best as well
    assert "so does the interval of resnet50 against cnn" in findings.models_text(table)
    assert "among them is close to a coin toss" in findings.models_text(table)
    table.attrs["runner_up"] = {"difference": -0.2, "ci": [-0.3, -0.1], "excludes_zero": True}
    assert "beyond noise" in findings.models_text(table) and "coin toss" not in findings.models_text(table)


def test_threshold_text_names_the_rule_the_card_used():
    rules = pd.DataFrame({"threshold": [0.30, 0.55], "sensitivity": [0.91, 0.80], "specificity": [0.70, 0.85]},
                         index=["sensitivity >= 0.90", "Youden's J"])
    text = findings.threshold_text(rules, 0.30, "sensitivity@0.90")
    assert "sensitivity by -0.110 and specificity by +0.150" in text and "is the 'sensitivity >= 0.90' one" in text
    assert "came from another rule (f1)" in findings.threshold_text(rules, 0.42, "f1")


def test_slides_text_says_which_patients_the_model_learnt_from():
    table = pd.DataFrame({"patient": ["10253", "9001"], "split": ["train", "test"], "patches": [549, 40],
                          "positive_fraction": [0.3, 0.1], "mean_probability": [0.31, 0.6], "roc_auc": [0.97, np.nan]})
    text = findings.slides_text(table)
    assert "1 of the 2 patients shown was in the TRAIN split" in text
    assert "10253 (549 patches, 30% positive, mean probability 0.31, within-slide AUC 0.970)" in text
    assert "the held-out test patient 9001 (40 patches, 10% positive, mean probability 0.60, within-slide AUC n/a)" in text
    assert "(s)" not in text
    assert "no test patient is shown" in findings.slides_text(table.iloc[:1])
    assert "the model over-calls 9001: a mean probability more than 0.25 above the positive share" in text
    assert "only this map shows the model on a new patient" in text


def test_slides_text_reads_test_patients_numbers():
    table = pd.DataFrame({"patient": ["8867", "9078", "8956"], "split": ["test"] * 3, "patches": [87, 114, 110],
                          "positive_fraction": [5 / 87, 0.10, 0.5], "mean_probability": [0.05, 0.60, 0.15],
                          "roc_auc": [1.0, 0.801, 0.957]})
    text = findings.slides_text(table)
    assert "the model never saw any of the 3" in text and "only these maps" not in text
    assert "over-calls 9078" in text and "under-calls 8956" in text and "over-calls 8867" not in text
    assert "8867's within-slide AUC rests on 5 positive patches" in text and "9078's within" not in text
