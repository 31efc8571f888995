"""Models: shapes, probabilities, preprocessing inside, safe save/load, fine-tuning keeps BatchNorm frozen."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from bclib.evaluation import modelcard
from bclib.models import builders as models
from bclib.models.weights import WeightsChoice

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SIZE = 32
RANDOM = WeightsChoice(requested=None, used="random", path=None)


def _predict(model, images):
    return np.asarray(model(images.astype("float32"), training=False))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (4, SIZE, SIZE, 3)).astype("uint8")
    batch[1] = 255  # a white image and a dark one make the outputs differ
    batch[2] = 10
    return batch


@pytest.fixture(scope="module")
def resnet3() -> keras.Model:
    return models.build_model("resnet50", num_classes=3, input_size=SIZE, weights=None)


def test_baseline_binary_outputs_probabilities(images):
    model = models.build_model("baseline_cnn", input_size=SIZE)
    assert model.input_shape == (None, SIZE, SIZE, 3)
    rescaling = model.layers[1]
    assert isinstance(rescaling, keras.layers.Rescaling) and rescaling.scale == pytest.approx(1 / 255)
    probabilities = model.predict(images, verbose=0)  # uint8 input: preprocessing is inside
    assert probabilities.shape == (len(images), 1)
    assert probabilities.dtype == np.float32
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    assert model.bclib_weights.used == "random"
    assert models.output_classes(model) == 2


def test_default_input_sizes_and_dropout():
    assert models.DEFAULT_INPUT_SIZE == {"baseline_cnn": 50, "mobilenetv2": 96, "resnet50": 96}
    assert models.build_model("baseline_cnn").input_shape == (None, 50, 50, 3)
    model = models.build_model("mobilenetv2", input_size=SIZE, weights=None, dropout=0.1)
    assert model.get_layer("head_dropout").rate == 0.1


def test_transfer_model_layers_and_three_classes(images, resnet3):
    assert [layer.name for layer in resnet3.layers] == ["image", "preprocess", "backbone", "pool", "head_dropout",
                                                        "head_output"]
    probabilities = _predict(resnet3, images)
    assert probabilities.shape == (len(images), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert models.output_classes(resnet3) == 3
    assert not models.get_backbone(resnet3).trainable  # phase 1: frozen
    assert resnet3.trainable_weights == resnet3.get_layer("head_output").trainable_weights


def test_caffe_preprocessing_is_keras_resnet50_preprocess_input(images):
    layer = models.CaffePreprocess()
    rgb = np.array([[[[10.0, 20.0, 30.0]]]], dtype="float32")
    np.testing.assert_allclose(np.asarray(layer(rgb))[0, 0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68], atol=1e-4)
    batch = images.astype("float32")
    np.testing.assert_allclose(np.asarray(layer(batch)),
                               keras.applications.resnet50.preprocess_input(batch.copy()), atol=1e-4)
    assert models.CaffePreprocess.from_config(layer.get_config()).mean == layer.mean


def test_mobilenet_preprocessing_maps_to_minus_one_one():
    layer = models.preprocessing_layer("mobilenetv2")
    out = np.asarray(layer(np.array([[[[0.0, 127.5, 255.0]]]], dtype="float32")))
    np.testing.assert_allclose(out[0, 0, 0], [-1, 0, 1], atol=1e-6)


def test_unknown_model_and_bad_arguments(resnet3):
    with pytest.raises(ValueError, match="unknown model"):
        models.build_model("vgg16")
    with pytest.raises(ValueError, match="num_classes"):
        models.build_model("baseline_cnn", num_classes=1, input_size=SIZE)
    with pytest.raises(ValueError, match="at least 32x32"):
        models.build_model("mobilenetv2", input_size=16, weights=None)
    with pytest.raises(ValueError, match="backbone"):
        models.get_backbone(models.build_model("baseline_cnn", input_size=SIZE))
    with pytest.raises(ValueError, match="n_layers"):
        models.unfreeze_top(resnet3, -1)


def test_unfreeze_top_keeps_batchnorm_frozen():
    model = models.transfer_model("resnet50", SIZE, 2, RANDOM)
    backbone = models.get_backbone(model)
    assert models.unfreeze_top(model, 0) == 0 and not model.get_layer("backbone").trainable_weights
    count = models.unfreeze_top(model, n_layers=30)
    top = backbone.layers[-30:]
    with_weights = [layer for layer in top if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)]
    assert count == len(with_weights) > 0
    assert all(layer.trainable for layer in with_weights)
    assert all(not layer.trainable for layer in backbone.layers[:-30])
    batch_norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert batch_norms and not any(layer.trainable for layer in batch_norms)
    assert not any(weight.trainable for layer in batch_norms for weight in layer.trainable_weights)
    assert models.unfreeze_top(model, len(backbone.layers)) > count
    assert not any(layer.trainable for layer in batch_norms)


def test_compile_model_names_auc_and_accuracy():
    model = models.compile_model(models.build_model("baseline_cnn", input_size=SIZE), learning_rate=1e-3)
    x = np.zeros((4, SIZE, SIZE, 3), "float32")
    logs = model.evaluate(x, np.array([[0], [1], [0], [1]], "float32"), verbose=0, return_dict=True)
    assert "auc" in logs and "accuracy" in logs
    assert model.optimizer.learning_rate.numpy() == pytest.approx(1e-3)


def test_feature_extractor_and_head_model_share_the_models_layers(images):
    model = models.transfer_model("resnet50", SIZE, 2, RANDOM, dropout=0.5)
    extractor, head = models.feature_extractor(model), models.head_model(model)
    features = _predict(extractor, images)
    assert features.shape == (len(images), 2048) and features.std() > 0
    np.testing.assert_allclose(_predict(head, features), _predict(model, images), atol=1e-5)
    assert head.get_layer("head_output") is model.get_layer("head_output")
    assert head.get_layer("head_dropout").rate == 0.5


@pytest.mark.parametrize(
    "name", ["baseline_cnn", "resnet50", pytest.param("mobilenetv2", marks=pytest.mark.slow)]
)
def test_save_load_round_trip_in_safe_mode(name, images, tmp_path):
    model = models.build_model(name, input_size=SIZE, weights=None, seed=1)
    before = _predict(model, images)
    path = tmp_path / modelcard.MODEL_FILE
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    np.testing.assert_array_equal(_predict(loaded, images), before)
    card = {
        "model_name": name,
        "class_names": ["non-IDC", "IDC"],
        "input_size": SIZE,
        "threshold": {"value": 0.5, "method": "youden", "chosen_on": "val"},
        "weights": model.bclib_weights.to_card(),
    }
    modelcard.write_card(card, tmp_path)
    via_card, read_back = modelcard.load_model(tmp_path)
    np.testing.assert_array_equal(_predict(via_card, images), before)
    assert read_back["weights"]["used"] == "random"


