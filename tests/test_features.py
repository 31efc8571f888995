"""Frozen-backbone features: extraction, caching, head training, attaching the head back."""
from __future__ import annotations

import numpy as np
import pytest

from bclib.models import features
from bclib.models import builders as models
from bclib.data.pipeline import make_dataset

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SIZE = 32


@pytest.fixture(scope="module")
def setup():
    """A ResNet50 (random init, whose features do not vanish) on two colour classes."""
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 2
    colours = np.where(labels[:, None] == 1, [[110, 60, 150]], [[230, 170, 200]])
    images = np.clip(colours[:, None, None, :] + rng.normal(0, 20, (40, SIZE, SIZE, 3)), 0, 255).astype("uint8")
    model = models.build_model("resnet50", input_size=SIZE, weights=None, dropout=0.2)
    extractor, _ = models.backbone_and_head(model)
    return model, extractor, images, labels


def test_extract_features_in_order_and_cached(setup, tmp_path):
    _, extractor, images, labels = setup
    dataset = make_dataset(images, labels, batch_size=16)
    from_dataset = features.extract_features(extractor, dataset, cache_key="abc", cache_dir=tmp_path)
    assert from_dataset.shape == (40, 2048) and from_dataset.dtype == np.float32
    assert (tmp_path / "abc.npy").is_file()
    from_array = features.extract_features(extractor, images[::-1], batch_size=8)
    np.testing.assert_allclose(from_array[::-1], from_dataset, rtol=1e-4, atol=1e-4)
    np.save(tmp_path / "abc.npy", np.zeros((40, 2048), "float32"))  # a cache hit is read, not recomputed
    assert not features.extract_features(extractor, dataset, cache_key="abc", cache_dir=tmp_path).any()


def test_feature_key_is_stable_and_sensitive():
    key = features.feature_key(model="resnet50", weights="random", size=32, rows=[1, 2, 3])
    assert key == features.feature_key(rows=[1, 2, 3], size=32, weights="random", model="resnet50")
    assert key != features.feature_key(model="resnet50", weights="imagenet", size=32, rows=[1, 2, 3])


def test_head_on_features_then_attached_matches_full_model(setup):
    model, extractor, images, labels = setup
    feats = features.extract_features(extractor, images)
    assert feats.std() > 0
    result = features.train_head_on_features(
        feats[:30], labels[:30], feats[30:], labels[30:], epochs=3, batch_size=10, learning_rate=1e-2, verbose=0
    )
    assert len(result.history) == result.training.epochs_run <= 3
    assert result.seconds_per_epoch > 0
    before = np.asarray(model(images.astype("float32"), training=False))
    features.attach_head(model, result.head)
    head_predictions = np.asarray(result.head(feats, training=False))
    full_predictions = np.asarray(model(images.astype("float32"), training=False))
    assert np.abs(full_predictions - before).max() > 1e-4  # the head really changed
    assert np.abs(full_predictions - head_predictions).max() < 1e-4


def test_attach_head_rejects_a_mismatch(setup):
    model, _, _, _ = setup
    with pytest.raises(ValueError, match="do not fit"):
        features.attach_head(model, models.build_head(1280, num_classes=2))
    with pytest.raises(ValueError, match="do not fit"):
        features.attach_head(model, models.build_head(2048, num_classes=3))


def test_time_epochs_measures_and_validates(setup):
    head = models.compile_model(models.build_head(2048))
    dataset = features.feature_dataset(np.ones((20, 2048), "float32"), np.arange(20) % 2, batch_size=10)
    seconds = features.time_epochs(head, dataset, epochs=2, warmup=1)
    assert 0 < seconds < 60
    with pytest.raises(ValueError, match="warmup"):
        features.time_epochs(head, dataset, epochs=1, warmup=1)


@pytest.mark.slow
def test_compare_epoch_times_shows_a_speedup(setup):
    model, extractor, images, labels = setup
    feats = features.extract_features(extractor, images)
    weights_before = model.get_layer("head_output").get_weights()[0].copy()
    timing = features.compare_epoch_times(model, make_dataset(images, labels, batch_size=10, training=True),
                                          feats, labels, batch_size=10)
    assert timing["images"] == 40
    assert timing["speedup"] > 1
    np.testing.assert_array_equal(model.get_layer("head_output").get_weights()[0], weights_before)
