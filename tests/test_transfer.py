"""Transfer learning (bclib.models.transfer): features computed once, the model's own head, fine-tuning, keeping
the better phase."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from bclib.data.pipeline import make_dataset, resize_images
from bclib.evaluation import modelcard
from bclib.models import builders, transfer
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
    monkeypatch.setattr(transfer, "features_cache_dir", lambda: tmp_path)
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


def test_feature_key_is_stable_and_sensitive():
    key = transfer.feature_key(model="resnet50", weights="imagenet", size=32, rows="a1")
    assert key == transfer.feature_key(rows="a1", size=32, weights="imagenet", model="resnet50")
    assert key != transfer.feature_key(model="resnet50", weights="imagenet", size=64, rows="a1")


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
    for weight, saved in zip(model.get_weights(), before):
        np.testing.assert_array_equal(weight, saved)
    assert "faster" in transfer.speedup_text(table, 3.0) and "no faster" in transfer.speedup_text(table, 0.9)


def test_fine_tune_trains_the_top_with_batchnorm_frozen_then_keep_better_restores_phase1(session, phase1):
    model, history, _, _ = phase1
    phase1_weights = model.get_weights()
    backbone = builders.get_backbone(model)
    bottom_kernel = backbone.get_layer("Conv1").get_weights()[0].copy()
    top_kernel = backbone.get_layer("Conv_1").get_weights()[0].copy()
    fine = transfer.fine_tune(session, model, SIZE, epochs=1, learning_rate=1e-3, layers=10, batch_size=32,
                              patience=1, max_images=64)
    assert len(fine.history["val_auc"]) == 1
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


@pytest.mark.parametrize("phase1_auc, phase2_auc, kept, words", [
    (0.80, 0.85, "phase 2", ("raised", "+0.050", "fine-tuned model is kept")),
    (0.85, 0.80, "phase 1", ("lowered", "-0.050", "fine-tuned weights are dropped")),
    (0.80, 0.80, "phase 2", ("left the validation AUC at 0.800",)),
])
def test_keep_better_text_follows_the_numbers(phase1_auc, phase2_auc, kept, words):
    text = transfer.keep_better_text(phase1_auc, phase2_auc, kept)
    assert all(word in text for word in words) and "validation numbers" in text


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
