"""Transfer learning (bclib.models.transfer): features computed once, the model's own head, fine-tuning, keeping
the better phase."""
from __future__ import annotations

import json
from dataclasses import replace

import keras
import numpy as np
import pytest

from bclib.data.pipeline import make_dataset, resize_images
from bclib.evaluation import modelcard
from bclib.evaluation.metrics import roc_auc
from bclib.models import builders, transfer
from bclib.models.training import EpochTimer, predict_probabilities
from bclib.models.weights import WeightsChoice
from bclib.session import start

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SIZE = 32
RANDOM = WeightsChoice(requested=None, used="random", path=None)


@pytest.fixture(scope="module")
def session(synthetic_idc):
    return start("05_mobilenetv2_transfer", data_dir=synthetic_idc, profile="smoke", run_id="unit_transfer", show=False)


def calibrated_model(session) -> keras.Model:
    """A MobileNetV2 transfer model from random weights, its BatchNorm statistics taken from training patches."""
    keras.utils.set_random_seed(0)
    model = builders.transfer_model("mobilenetv2", SIZE, session.num_classes, RANDOM)
    transfer.calibrate_random_backbone(session, model, SIZE, count=64)
    return model


@pytest.fixture(scope="module")
def phase1(session):
    """A model whose head was trained on cached features (phase 1), with what phase 1 returned."""
    model = calibrated_model(session)
    head_before = [weight.copy() for weight in model.get_layer("head_output").get_weights()]
    history, train_features = transfer.train_head(session, model, SIZE, epochs=3, learning_rate=1e-2,
                                                  batch_size=32, patience=3)
    return model, history, train_features, head_before


def test_calibrating_a_random_backbone_gives_features_that_differ_between_patches(session):
    keras.utils.set_random_seed(0)
    model = builders.transfer_model("mobilenetv2", SIZE, 2, RANDOM)
    backbone = builders.get_backbone(model)
    norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    kernel = backbone.get_layer("Conv1").get_weights()[0].copy()
    settings = [(layer.momentum, layer.trainable) for layer in norms]
    images = session.images("train", limit=64)
    resized = resize_images(images, SIZE)
    extractor = builders.feature_extractor(model)
    spread_before = float(np.std(extractor(resized), axis=0).mean())
    count = transfer.calibrate_random_backbone(session, model, SIZE, count=64)
    spread_after = float(np.std(extractor(resized), axis=0).mean())
    assert count == len(norms) > 0
    assert spread_before < 1e-6 < 1e-2 < spread_after  # random MobileNetV2: features vanish until calibrated
    np.testing.assert_array_equal(backbone.get_layer("Conv1").get_weights()[0], kernel)  # no weight is trained
    assert [(layer.momentum, layer.trainable) for layer in norms] == settings  # put back as they were
    assert not backbone.trainable


def test_extract_features_in_data_order_and_read_back_from_the_cache(session, tmp_path):
    model = calibrated_model(session)
    extractor = builders.feature_extractor(model)
    images = session.images("val")
    labels = session.labels("val")
    dataset = make_dataset(images, labels, batch_size=16, image_size=SIZE)
    from_dataset = transfer.extract_features(extractor, dataset, cache_key="abc", cache_dir=tmp_path)
    assert from_dataset.shape == (len(images), 1280) and from_dataset.dtype == np.float32
    assert (tmp_path / "abc.npy").is_file()
    resized = resize_images(images[::-1], SIZE)
    from_array = transfer.extract_features(extractor, resized, batch_size=8)
    np.testing.assert_allclose(from_array[::-1], from_dataset, rtol=1e-3, atol=1e-4)
    np.save(tmp_path / "abc.npy", np.zeros_like(from_dataset))  # a cache hit is read, not recomputed
    assert not transfer.extract_features(extractor, dataset, cache_key="abc", cache_dir=tmp_path).any()


def test_cached_features_are_computed_once_per_key_and_never_for_random_weights(session, monkeypatch, tmp_path):
    monkeypatch.setenv("BCLIB_CACHE", str(tmp_path))
    tmp_path = tmp_path / "features"
    extractor = builders.feature_extractor(calibrated_model(session))
    computed = transfer.cached_features(session, extractor, "val", SIZE, 32, weights_used="file:/weights.h5")
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1 and computed.shape == (len(session.labels("val")), 1280)
    np.save(files[0], np.full_like(computed, 7.0))
    assert (transfer.cached_features(session, extractor, "val", SIZE, 32, "file:/weights.h5") == 7.0).all()
    transfer.cached_features(session, extractor, "val", SIZE, 32, "imagenet")    # other weights: another key
    transfer.cached_features(session, extractor, "test", SIZE, 32, "file:/weights.h5")  # other rows: another key
    assert len(list(tmp_path.glob("*.npy"))) == 3
    transfer.cached_features(session, extractor, "val", SIZE, 32, "random")
    assert len(list(tmp_path.glob("*.npy"))) == 3
    other_data = replace(session, cache=replace(session.cache, directory=tmp_path / "other-dataset-50px"))
    transfer.cached_features(other_data, extractor, "val", SIZE, 32, "file:/weights.h5")  # other data: another key
    assert len(list(tmp_path.glob("*.npy"))) == 4


def test_train_head_trains_the_models_own_head(session, phase1):
    model, history, train_features, head_before = phase1
    assert train_features.shape == (len(session.labels("train")), 1280)
    assert 1 <= len(history.history["val_auc"]) <= 3
    assert max(history.history["val_auc"]) > 0.6  # the synthetic classes differ in colour
    changed = model.get_layer("head_output").get_weights()[0]
    assert np.abs(changed - head_before[0]).max() > 1e-4
    images = session.dataset("val", image_size=SIZE, batch_size=64, training=False)
    val_features = transfer.extract_features(builders.feature_extractor(model), images)
    head = builders.head_model(model)
    np.testing.assert_allclose(model.predict(images, verbose=0), head.predict(val_features, verbose=0), atol=1e-5)


def test_speedup_table_times_both_ways_and_leaves_the_model_alone(session, phase1):
    model, _, train_features, _ = phase1
    before = [weight.copy() for weight in model.get_weights()]
    table, factor = transfer.speedup_table(session, model, train_features, SIZE, batch_size=32, images=64)
    assert list(table.index) == ["through the frozen backbone", "on cached features"]
    assert (table["seconds per epoch"] > 0).all() and factor > 0
    assert table.index.name == "64 training patches"
    assert factor == pytest.approx(table["seconds per epoch"].iloc[0] / table["seconds per epoch"].iloc[1])
    np.testing.assert_allclose(table["ms per patch"], 1000 * table["seconds per epoch"] / 64)
    for weight, saved in zip(model.get_weights(), before):
        np.testing.assert_array_equal(weight, saved)
    assert "faster" in transfer.speedup_text(table, 3.0) and "no faster" in transfer.speedup_text(table, 0.9)


def test_fine_tune_trains_the_top_with_batchnorm_frozen_then_keep_better_restores_phase1(session, phase1):
    model, history, _, _ = phase1
    phase1_weights = model.get_weights()
    backbone = builders.get_backbone(model)
    bottom_kernel = backbone.get_layer("Conv1").get_weights()[0].copy()
    top_kernel = backbone.get_layer("Conv_1").get_weights()[0].copy()
    timer = EpochTimer()
    fine = transfer.fine_tune(session, model, SIZE, epochs=1, learning_rate=1e-3, layers=10, batch_size=32,
                              patience=1, max_images=64, callbacks=[timer])
    assert len(fine.history["val_auc"]) == 1 == len(timer.seconds)  # the extra callback ran
    assert (session.out_dir / "history.csv").is_file()
    norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and not any(layer.trainable for layer in norms)
    np.testing.assert_array_equal(backbone.get_layer("Conv1").get_weights()[0], bottom_kernel)  # frozen
    assert np.abs(backbone.get_layer("Conv_1").get_weights()[0] - top_kernel).max() > 0  # unfrozen: trained

    images = session.dataset("val", image_size=SIZE, batch_size=64, training=False)
    assert transfer.keep_better(model, phase1_weights, phase1_auc=0.5, phase2_auc=0.6) == "phase 2"
    assert np.abs(backbone.get_layer("Conv_1").get_weights()[0] - top_kernel).max() > 0
    fine_tuned = model.predict(images, verbose=0)
    assert transfer.keep_better(model, phase1_weights, phase1_auc=0.7, phase2_auc=0.6) == "phase 1"
    np.testing.assert_array_equal(backbone.get_layer("Conv_1").get_weights()[0], top_kernel)
    restored = model.predict(images, verbose=0)  # the weights went back in the right places despite the unfreezing
    head = builders.head_model(model)
    val_features = transfer.extract_features(builders.feature_extractor(model), images)
    np.testing.assert_allclose(restored, head.predict(val_features, verbose=0), atol=1e-5)
    assert np.abs(restored - fine_tuned).max() > 0


def test_fine_tune_positions_are_a_seeded_sorted_subset(session):
    train = session.positions("train")
    subset = transfer.fine_tune_positions(session, 50)
    assert len(subset) == 50 and set(subset) <= set(train) and (np.diff(subset) > 0).all()
    np.testing.assert_array_equal(subset, transfer.fine_tune_positions(session, 50))
    np.testing.assert_array_equal(transfer.fine_tune_positions(session, None), train)
    np.testing.assert_array_equal(transfer.fine_tune_positions(session, 10 ** 6), train)


def comparison(a: float, b: float, ci: list | None) -> dict:
    """A :func:`transfer.paired_auc` result, written by hand."""
    return {"metric": "roc_auc", "a": a, "b": b, "difference": b - a, "ci": ci, "n_patients": 35,
            "excludes_zero": ci is not None and (ci[0] > 0 or ci[1] < 0)}


@pytest.mark.parametrize("result, kept, words", [
    (comparison(0.80, 0.85, [0.01, 0.09]), "phase 2", ("raised", "+0.050", "+0.010 to +0.090", "excludes zero", "really differ",
                                                       "fine-tuned model is kept")),
    (comparison(0.85, 0.80, [-0.12, 0.02]), "phase 1", ("did not change the validation AUC beyond noise", "-0.050",
                                                        "includes zero", "coin toss",
                                                        "phase-1 weights go back in")),
    (comparison(0.8001, 0.8004, [-0.03, 0.03]), "phase 2", ("did not change", "+0.000", "cannot be told apart")),
    (comparison(0.70, 0.75, None), "phase 2", ("no interval", "cannot be said")),
    (comparison(0.719, 0.731, [0.0002, 0.023]), "phase 2", ("+0.0002 to +0.023", "excludes zero only just",
                                                             "differ on these patients, but only just")),
])
def test_keep_better_text_follows_the_numbers_and_their_interval(result, kept, words):
    text = transfer.keep_better_text(result, kept)
    assert all(word in text for word in words), text
    assert "same validation split" in text and "test split plays no part" in text


def test_paired_auc_scores_both_models_on_the_same_validation_patients(session, phase1):
    model = phase1[0]
    probabilities = predict_probabilities(model, session.dataset("val", image_size=SIZE, batch_size=64))
    labels = session.labels("val")
    flipped = 1 - probabilities
    result = transfer.paired_auc(session, probabilities, flipped)
    assert result["a"] == pytest.approx(roc_auc(labels, probabilities)) and result["b"] == pytest.approx(1 - result["a"])
    assert result["n_patients"] == len(set(session.patient_ids("val"))) and result["ci"][0] <= result["ci"][1]
    same = transfer.paired_auc(session, probabilities, probabilities.reshape(-1, 1))  # (N,) or (N, 1): one model
    assert same["difference"] == 0 and not same["excludes_zero"]
    assert "+0.000" in transfer.paired_auc_text(same) and "no clear difference" in transfer.paired_auc_text(same)


def test_the_conclusions_say_when_the_backbone_was_random(capsys):
    missing = WeightsChoice(requested="imagenet", used="random", path=None)
    assert "not transfer learning" in transfer.not_transfer_note(missing)
    assert "ImageNet weights were missing" in transfer.not_transfer_note(missing)
    assert "`weights = None`" in transfer.not_transfer_note(RANDOM)
    assert transfer.not_transfer_note(WeightsChoice(requested="imagenet", used="imagenet", path="/w.h5")) == ""
    transfer.conclude(missing, "first.", "", "second.")
    shown = capsys.readouterr().out
    assert shown.startswith("Conclusion: first. second.") and "not transfer learning" in shown


def test_training_scores_score_the_head_like_validation(session, phase1):
    model, _, train_features, _ = phase1
    labels = session.labels("train")
    scores = transfer.training_scores(model, train_features, labels)
    probabilities = np.clip(builders.head_model(model).predict(train_features, verbose=0)[:, 0], 1e-7, 1 - 1e-7)
    truth = (labels == 1).astype(float)
    cross_entropy = -np.mean(truth * np.log(probabilities) + (1 - truth) * np.log(1 - probabilities))
    assert scores["loss"] == pytest.approx(cross_entropy, rel=1e-3)  # no dropout, no class weights
    assert scores["auc"] == pytest.approx(roc_auc(labels, probabilities), abs=0.02)


def test_curves_text_explains_validation_above_training_from_the_log():
    history = {"loss": [0.80, 0.70, 0.66], "val_loss": [0.65, 0.66, 0.64], "auc": [0.55, 0.60, 0.62],
               "val_auc": [0.60, 0.64, 0.63], "val_accuracy": [0.40, 0.70, 0.55]}
    text = transfer.curves_text(history, {0: 0.7, 1: 1.9}, {"loss": 0.60, "auc": 0.70},
                                val_probabilities=np.array([0.45, 0.55, 0.9, 0.1]))
    assert "below the training loss in 3 of 3 epochs" in text and "above the training AUC in 3" in text
    assert "and with class weights" in text and "loss 0.600 and AUC 0.700, against 0.660 and 0.640" in text
    assert "does better on its training patches" in text
    assert "from 0.400 to 0.700" in text and "50 % of the validation patches" in text
    harder = transfer.curves_text(history, None, {"loss": 0.70, "auc": 0.60})
    assert "and with class weights" not in harder and "validation patients come out easier" in harder
    assert "within 0.02" in transfer.curves_text(history, None, {"loss": 0.66, "auc": 0.65})
    one_epoch = {"loss": [0.8], "val_loss": [0.7], "auc": [0.5], "val_auc": [0.55]}
    assert transfer.curves_text(one_epoch).startswith("In its one epoch the validation loss was below the training one")
    steady = {"loss": [0.5, 0.4], "val_loss": [0.6, 0.5], "auc": [0.7, 0.8], "val_auc": [0.6, 0.7],
              "val_accuracy": [0.70, 0.72]}
    assert transfer.curves_text(steady) == "" and transfer.curves_text({"auc": [0.5]}) == ""


def test_at_half_text_reads_the_card():
    card = {"metrics": {"val": {"at_0_5": {"sensitivity": 0.1734, "specificity": 0.9271}}}}
    assert "sensitivity 0.173 and specificity 0.927" in transfer.at_half_text(card)
    assert transfer.at_half_text({"metrics": {"val": {}}}) == ""


def test_best_cnn_picks_the_highest_validation_auc_of_this_run(session):
    nothing_yet, empty = transfer.best_cnn(session)
    assert nothing_yet == transfer.CNN_NOTEBOOKS[-1] and empty.empty
    for notebook, auc in zip(transfer.CNN_NOTEBOOKS, (0.80, 0.90, 0.85)):
        folder = session.run_dir / notebook
        folder.mkdir(parents=True, exist_ok=True)
        (folder / modelcard.MODEL_FILE).touch()
        card = {"model_name": "baseline_cnn", "class_names": session.class_names, "input_size": 50,
                "threshold": {"value": 0.5}, "weights": {"used": "random"},
                "metrics": {"val": {"roc_auc": auc, "ci": {"roc_auc": [auc - 0.05, auc + 0.05]}}}}
        (folder / modelcard.CARD_FILE).write_text(json.dumps(card))
    best, table = transfer.best_cnn(session)
    assert best == "03_class_weighting"
    assert list(table.index) == list(transfer.CNN_NOTEBOOKS)
    assert table.loc["02_baseline_cnn", "95% CI"] == "[0.750, 0.850]"


def test_time_epochs_times_the_epochs_after_warm_up_and_checks_them():
    head = builders.compile_model(keras.Sequential([keras.Input((8,)), builders.output_layer(2)]))
    features, labels = np.ones((40, 8), "float32"), (np.arange(40) % 2).reshape(-1, 1).astype("float32")
    assert 0 < transfer.time_epochs(head, features, labels, batch_size=10, epochs=3, warmup=1) < 60
    with pytest.raises(ValueError, match="warmup"):
        transfer.time_epochs(head, features, labels, epochs=1, warmup=1)
