"""Notebook 07's library: the run comparison, the leakage lesson, its figures and its conclusions."""
from __future__ import annotations

import json
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from bclib.evaluation import compare, conclusions, experiment, findings, leakage
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


def test_test_table_calibration_and_patients(run):
    table = run.table(n_boot=30)
    assert list(table.index) == run.names
    assert table["roc_auc"].between(0, 1).all() and table["roc_auc 95% CI"].str.startswith("[").all()
    assert (table["threshold"] == [run.threshold(name) for name in run.names]).all()
    calibrated = run.calibration_table()
    assert (calibrated["temperature"] > 0).all() and calibrated["ece"].between(0, 1).all()
    assert np.allclose(calibrated["positive_fraction"], run.truth("test").mean())
    assert not calibrated["class weights"].any()  # the fixture trains without class weights
    patients = run.patient_table(run.names[0])
    assert patients["n"].sum() == len(run.truth("test"))
    assert len(run.worst_patients(run.names[0], k=2)) == 2


def test_ranking_compares_each_model_with_the_test_leader(run):
    ranking = run.ranking(n_boot=30)
    values = ranking["test roc_auc"].to_numpy()
    assert list(ranking.index) == [1, 2] and (np.diff(values) <= 0).all()
    leader = ranking.attrs["leader"]
    assert ranking.loc[1, "model"] == leader and ranking.loc[1, "95% CI of the difference"] == ""
    second = ranking.loc[2]
    assert second[f"difference to {leader}"] == pytest.approx(values[1] - values[0])
    low, high = json.loads(second["95% CI of the difference"])
    assert low <= high and second["interval excludes 0"] == (low > 0 or high < 0)
    assert ranking.attrs["chosen_on_validation"] == run.best_model()
    assert "ranks first" in findings.ranking_text(ranking)


def test_figures_and_evaluation_file(run):
    session = run.session
    calibration_figure = run.plot_calibration()
    assert len(calibration_figure.axes) == 2 * len(run.names)
    assert run.plot_patients(run.names[0]).axes
    grid = run.plot_gradcam(run.names[0], per_group=2)
    shown = sum(len(positions) for positions in run.gradcam_examples(run.names[0], 2).values())
    assert len([ax for ax in grid.axes if ax.images]) == 2 * shown
    test_patient = session.split.patients("test")[0]
    figures, slides = run.slides(run.names[0], [test_patient, "no-such-patient", test_patient])
    assert len(figures) == 1 and slides["split"].tolist() == ["test"]
    assert slides.loc[0, "patches"] == int((run.patient_ids("test") == str(test_patient)).sum())
    ranking = run.ranking(n_boot=10)
    path = run.write_evaluation(session, run.table(n_boot=10), run.calibration_table(), ranking)
    saved = json.loads(path.read_text())
    assert saved["models"] == run.names and len(saved["ranking"]) == len(run.names)
    plt.close("all")


def test_more_classes_score_the_last_class_against_the_rest():
    three = SimpleNamespace(num_classes=3, positive_label=None)
    assert compare.scored_label(three) == 2
    assert compare.scored_label(SimpleNamespace(num_classes=2, positive_label=0)) == 0
    softmax = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    assert compare.positive_scores(softmax, 2).tolist() == [0.5, 0.1]
    assert compare.positive_scores(np.array([0.9, 0.2]), 0).tolist() == pytest.approx([0.1, 0.8])


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
    assert gap["difference"] == pytest.approx(table.loc[leakage.LEAKY, "test_roc_auc"]
                                              - table.loc[leakage.HONEST, "test_roc_auc"])
    assert f"{gap['difference']:+.3f}" in findings.leakage_text(gap, 1)


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
def _ranking(differences, intervals, test, validation) -> pd.DataFrame:
    names = [f"model_{number}" for number in range(len(test))]
    table = pd.DataFrame({
        "model": names, "test roc_auc": test, "validation roc_auc": validation,
        "difference to model_0": differences,
        "95% CI of the difference": ["" if ci is None else json.dumps(ci) for ci in intervals],
        "interval excludes 0": [None if ci is None else (ci[0] > 0 or ci[1] < 0) for ci in intervals],
    }, index=pd.RangeIndex(1, len(names) + 1, name="rank"))
    table.attrs.update(metric="roc_auc", leader="model_0", chosen_on_validation="model_1", val_patients=4,
                       test_patients=5)
    return table


def test_ranking_text_calls_a_difference_real_only_when_its_interval_excludes_zero():
    tied = findings.ranking_text(_ranking([None, -0.01, -0.02], [None, [-0.05, 0.03], [-0.06, 0.01]],
                                             [0.90, 0.89, 0.88], [0.85, 0.91, 0.80]))
    assert "this run cannot rank them apart from model_0" in tied and "really below" not in tied
    assert "chosen on validation, model_1, ranks 2" in tied
    assert "exceeds validation ROC-AUC for model_0 and model_2" in tied and "4 in validation, 5 in" in tied
    real = findings.ranking_text(_ranking([None, -0.10], [None, [-0.15, -0.05]], [0.90, 0.80], [0.95, 0.85]))
    assert "model_1 is really below it" in real and "cannot rank" not in real and "exceeds" not in real


def test_calibration_text_explains_a_worse_ece_by_the_numbers():
    def table(mean_probability):
        return pd.DataFrame({"temperature": [1.4, 0.8], "ece": [0.10, 0.05], "ece_scaled": [0.04, 0.08],
                             "mean_probability": [0.30, mean_probability], "positive_fraction": [0.28, 0.28],
                             "class weights": [False, True]},
                            index=pd.Index(["a", "b"], name="model"))

    shifted = findings.calibration_text(table(0.45))
    assert "lowered the calibration error of a" in shifted and "It made b worse" in shifted
    assert "(b 0.450) sit away from the 0.280" in shifted and "can make ECE worse" in shifted
    assert "b trained with class weights" in shifted
    not_shifted = findings.calibration_text(table(0.29))
    assert "For b, whose mean probability is close" in not_shifted and "shifted base rate" not in not_shifted
    assert "For b" not in shifted
    better = table(0.29).assign(ece_scaled=[0.04, 0.03])
    assert "lowered the calibration error of every model" in findings.calibration_text(better)
    same = findings.calibration_text(table(0.29).assign(ece_scaled=[0.04, 0.0502]))
    assert "left b unchanged" in same and "worse" not in same
    still_shifted = findings.calibration_text(table(0.45).assign(ece_scaled=[0.04, 0.03]))
    assert "part of the error stays after scaling" in still_shifted


def test_threshold_text_names_the_rule_the_card_used():
    rules = pd.DataFrame({"threshold": [0.30, 0.55], "sensitivity": [0.91, 0.80], "specificity": [0.70, 0.85]},
                         index=["sensitivity >= 0.90", "Youden's J"])
    text = findings.threshold_text(rules, 0.30, "sensitivity@0.90")
    assert "sensitivity by -0.110 and specificity by +0.150" in text and "is the 'sensitivity >= 0.90' one" in text
    assert "came from another rule (f1)" in findings.threshold_text(rules, 0.42, "f1")


def test_slides_text_says_which_patients_the_model_learnt_from():
    table = pd.DataFrame({"patient": ["10253", "9001"], "split": ["train", "test"], "patches": [549, 40],
                          "roc_auc": [0.97, np.nan]})
    text = findings.slides_text(table)
    assert "seen in training or validation: 10253 (549 patches, within-slide AUC 0.970)" in text
    assert "held-out test patient(s): 9001 (40 patches, within-slide AUC n/a)" in text
    assert "no test patient is shown" in findings.slides_text(table.iloc[:1])


def test_leakage_text_follows_the_sign_and_the_interval():
    base = {"a": 0.80, "n_images": 100, "n_patients": 10}
    flattered = findings.leakage_text({**base, "b": 0.90, "difference": 0.10, "ci": [0.05, 0.15],
                                          "excludes_zero": True}, 3)
    assert "+0.100" in flattered and "flattered" in flattered
    noise = findings.leakage_text({**base, "b": 0.81, "difference": 0.01, "ci": [-0.02, 0.04],
                                      "excludes_zero": False}, 1)
    assert "cannot be told from noise" in noise
    lower = findings.leakage_text({**base, "b": 0.70, "difference": -0.10, "ci": [-0.15, -0.05],
                                      "excludes_zero": True}, 1)
    assert "scored lower, beyond noise" in lower and "flattered" not in lower
    single = findings.leakage_text({**base, "b": 0.80, "difference": 0.0, "ci": [0.0, 0.0], "excludes_zero": False,
                                       "test_patients_seen": 0}, 1)
    assert "cannot leak this way" in single
