"""Profiles, the notebook session, experiment.finish and the conclusions drawn from a run's numbers."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from bclib import profiles
from bclib.data import explore
from bclib.data.datasets import scan
from bclib.evaluation import conclusions, experiment, modelcard
from bclib.models import builders, training
from bclib.session import resolve_dataset_location, start, subsample_patients


def test_profiles_resolve_explicit_values_over_profile_defaults():
    values = profiles.resolve("smoke", "idc", {"epochs": 3, "batch_size": None})
    assert values["epochs"] == 3
    assert values["batch_size"] == profiles.PROFILES["smoke"]["batch_size"]
    assert values["pack_size"] == 50
    assert profiles.resolve("quick", "breastmnist", {})["image_size"] == 28
    assert profiles.default_split("breastmnist") == "official"
    assert profiles.default_split("idc") == "benchmark"
    with pytest.raises(ValueError, match="unknown profile"):
        profiles.resolve("huge", "idc", {})


def test_transfer_notebooks_get_the_transfer_image_size():
    quick = profiles.PROFILES["quick"]
    assert profiles.notebook_values("quick", "idc", "02_baseline_cnn")["image_size"] == quick["image_size"]
    for notebook in profiles.TRANSFER_NOTEBOOKS:
        assert profiles.notebook_values("quick", "idc", notebook)["image_size"] == quick["transfer_image_size"]
    assert profiles.notebook_values("smoke", "idc", "05_mobilenetv2_transfer")["image_size"] >= 32


def test_subsample_draws_from_many_patients_deterministically(synthetic_idc):
    index = scan("idc", synthetic_idc)
    small = subsample_patients(index, 100, seed=1)
    assert len(small) == 100
    assert small.frame["patient_id"].nunique() >= 10
    again = subsample_patients(index, 100, seed=1)
    assert small.frame["path"].tolist() == again.frame["path"].tolist()
    assert subsample_patients(index, None, seed=1) is index


def test_explicit_missing_data_is_an_error_never_replaced_by_synthetic(tmp_path, monkeypatch):
    monkeypatch.delenv("BCLIB_DATA", raising=False)
    monkeypatch.setenv("BCLIB_ROOT", str(tmp_path))  # no data/ folder to fall back on
    with pytest.raises(FileNotFoundError):
        resolve_dataset_location("idc", tmp_path / "nope")
    with pytest.raises(ValueError, match="breakhis"):
        resolve_dataset_location("breakhis", None)


@pytest.fixture(scope="module")
def smoke_session(synthetic_idc):
    return start("02_baseline_cnn", data_dir=synthetic_idc, profile="smoke", run_id="unit", show=False)


def test_session_packs_and_splits_by_patient(smoke_session):
    session = smoke_session
    assert session.synthetic is True
    assert session.settings["profile"] == "smoke" and session.pack_size == 50
    assert session.cache.images.shape[1:] == (50, 50, 3)
    patients = [set(session.split.patients(name)) for name in ("train", "val", "test")]
    assert not (patients[0] & patients[1]) and not (patients[0] & patients[2]) and not (patients[1] & patients[2])
    for name in ("train", "val", "test"):
        assert set(np.unique(session.labels(name))) == {0, 1}
    assert session.positive_label == 1 and session.positive_name == "IDC"
    card = session.card_base("x")
    assert card["dataset"]["synthetic"] is True and card["split"]["method"] == "patient"
    assert sorted(card["split"]["patient_ids"]["test"]) == sorted(session.split.patients("test"))
    assert (session.out_dir / "settings.json").exists()
    images, labels = next(iter(session.dataset("val", image_size=32, batch_size=8)))
    assert images.shape == (8, 32, 32, 3) and labels.shape == (8, 1)
    assert 0 <= float(images.numpy().min()) and float(images.numpy().max()) <= 255


def test_session_summary_names_the_data_split_and_device(smoke_session, capsys):
    smoke_session.show()
    text = capsys.readouterr().out
    assert "SYNTHETIC DEMO DATA" in text
    assert f"{len(smoke_session.cache.index):,} images" in text and "patient split" in text and "CPU" in text
    assert "split by patient instead of the default 'benchmark' split" in text   # the demo has no benchmark patients
    fallback = next(note for note in smoke_session.split.warnings if note.startswith("split by patient instead"))
    assert "synthetic" in fallback and "Use the patient split" not in fallback   # why, without advice already taken


def test_exploration_tables(smoke_session):
    index = smoke_session.index
    odd = explore.size_anomalies(index, expected=50)
    assert len(odd) >= 1 and (odd[["width", "height"]].min(axis=1) < 50).all()
    images, labels = explore.balanced_sample(smoke_session.cache.images, smoke_session.cache.labels, 5)
    assert np.bincount(labels).tolist() == [5, 5]
    stats = explore.colour_statistics(images, labels, index.class_names)
    assert len(stats) == 2 and stats["R_mean"].between(0, 255).all()


def _train(session, epochs: int = 3):
    training.set_seeds(0)
    model = builders.compile_model(builders.baseline_cnn(32, 2), learning_rate=3e-3)
    train_ds = session.dataset("train", image_size=32, batch_size=32)
    history = model.fit(train_ds, validation_data=session.dataset("val", image_size=32, batch_size=32), epochs=epochs,
                        callbacks=training.standard_callbacks(train_ds, session.out_dir, patience=epochs), verbose=0)
    return model, history


@pytest.fixture(scope="module")
def finished_card(smoke_session):
    model, history = _train(smoke_session)
    card = experiment.finish(smoke_session, model, "baseline_cnn", image_size=32, history=history,
                             params={"epochs": 3})
    return card, model


def test_finish_writes_model_card_metrics_and_threshold_from_validation(smoke_session, finished_card):
    card, model = finished_card
    out = smoke_session.out_dir
    for name in ("model.keras", "model_card.json", "metrics.json", "history.csv", "predictions.npz"):
        assert (out / name).exists(), name
    assert card["params"] == {"profile": "smoke", "epochs": 3} and card["epochs_run"] == 3
    assert card["threshold"]["chosen_on"] == "val"
    benchmark = card["benchmark_threshold"]   # Youden's J on validation, beside the screening threshold
    assert benchmark["method"] == "youden" and benchmark["chosen_on"] == "val" and 0 <= benchmark["value"] <= 1
    assert card["threshold"]["info"]["n_val"] == len(smoke_session.positions("val"))
    assert 0.0 <= card["threshold"]["value"] <= 1.0
    test = card["metrics"]["test"]
    assert test["n_images"] == len(smoke_session.positions("test"))
    assert test["positive_class"] == "IDC"
    low, high = test["ci"]["roc_auc"]
    assert low <= test["roc_auc"] <= high
    tn_fp, fn_tp = test["confusion_matrix"]
    assert sum(tn_fp) + sum(fn_tp) == test["n_images"]
    reloaded, reloaded_card = modelcard.load_model(out / "model.keras")
    batch = smoke_session.images("test", limit=8).astype("float32")
    batch = keras.ops.convert_to_numpy(keras.ops.image.resize(batch, (32, 32)))
    assert np.allclose(reloaded.predict(batch, verbose=0), model.predict(batch, verbose=0), atol=1e-5)
    assert reloaded_card["class_names"] == ["non-IDC", "IDC"]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["threshold"]["value"] == card["threshold"]["value"]
    table = experiment.validation_report(card)
    assert {"roc_auc", "sensitivity", "specificity"} <= set(table.index)


def test_training_conclusion_follows_the_history():
    stopped = {"val_auc": [0.6, 0.8, 0.7, 0.75], "auc": [0.6, 0.85, 0.9, 0.92],
               "loss": [0.6, 0.5, 0.4, 0.3], "val_loss": [0.5, 0.45, 0.5, 0.55]}
    text = conclusions.training_text(stopped, epochs=8)
    assert "validation AUC was 0.800, at epoch 2 of 4" in text and "stopped early" in text
    assert "epoch 2 were restored" in text and "training AUC was 0.850 (+0.050" in text and "overfitting" in text
    rising = conclusions.training_text({"val_auc": [0.6, 0.7, 0.8], "auc": [0.6, 0.7, 0.81]}, epochs=3,
                                       parameter="fine_tune_epochs")
    assert "more epochs could help (try a larger `fine_tune_epochs`)" in rising and "overfitting" not in rising
    assert "cannot be named" in conclusions.training_text({"loss": [1.0]}, epochs=1)
    swinging = {"val_auc": [0.71, 0.87, 0.84, 0.87, 0.88, 0.88, 0.89, 0.886],   # a rise no larger than earlier moves
                "loss": [0.52, 0.43, 0.41, 0.39, 0.38, 0.37, 0.367, 0.365],
                "val_loss": [0.96, 0.69, 0.71, 0.66, 0.68, 0.59, 0.64, 0.65]}
    noisy = conclusions.training_text(swinging, epochs=8)
    assert "rose by 0.060" in noisy and "may be noise rather than overfitting" in noisy and "(0.270)" in noisy


def test_first_model_conclusion_compares_with_chance_and_the_majority_answer():
    card = {"threshold": {"value": 0.3, "method": "sensitivity@0.90"},
            "metrics": {"val": {"roc_auc": 0.8, "ci": {"roc_auc": [0.7, 0.9]}, "n_patients": 30, "accuracy": 0.6,
                                "sensitivity": 0.83, "specificity": 0.71, "balanced_accuracy": 0.7,
                                "confusion_matrix": [[50, 20], [5, 25]]}}}
    text = conclusions.first_model_text(card)
    assert "above chance" in text and "below the 0.700 of always answering the majority class" in text
    assert "find 90 % of the positive patches" in text and "specificity 0.710" in text
    card["metrics"]["val"]["ci"]["roc_auc"] = [0.45, 0.9]
    assert "not distinguishable from chance" in conclusions.first_model_text(card)
    card["metrics"]["val"]["ci"]["accuracy"] = [0.55, 0.72]  # the interval holds the majority answer's 0.700
    assert "cannot be told from the 0.700 of always answering" in conclusions.first_model_text(card)


def test_compare_conclusion_uses_paired_intervals_on_the_same_images(smoke_session, finished_card):
    card, model = finished_card
    session = start("03_class_weighting", data_dir=smoke_session.data_path, profile="smoke", run_id="unit",
                    show=False)
    same = experiment.finish(session, model, "copy", image_size=32)
    text = conclusions.compare_text(session, same, "02_baseline_cnn", "copying the model",
                                    metrics=("roc_auc", "sensitivity"), n_boot=50)
    assert "no difference this run can tell from noise" in text and "+0.000" in text
    assert "validation numbers" in text or "val numbers" in text
    missing = conclusions.compare_text(session, same, "99_missing", "nothing")
    assert "has not run" in missing
