"""Models: shapes, probabilities, preprocessing inside, safe save/load, fine-tuning freezes BN."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from bclib.evaluation import modelcard
from bclib.models import builders as models

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SIZE = 32


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
    assert model.get_layer("preprocess").scale == pytest.approx(1 / 255)
    probabilities = model.predict(images, verbose=0)  # uint8 input: preprocessing is inside
    assert probabilities.shape == (len(images), 1)
    assert probabilities.dtype == np.float32
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    assert model.bclib_weights.used == "random"
    assert models.output_classes(model) == 2


def test_default_input_sizes():
    assert models.DEFAULT_INPUT_SIZE == {"baseline_cnn": 50, "mobilenetv2": 96, "resnet50": 96}
    assert models.build_model("baseline_cnn").input_shape == (None, 50, 50, 3)


def test_three_classes_softmax(images, resnet3):
    probabilities = _predict(resnet3, images)
    assert probabilities.shape == (len(images), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert models.output_classes(resnet3) == 3
    assert not models.get_backbone(resnet3).trainable  # phase 1: frozen


def test_caffe_preprocessing_is_bgr_minus_mean():
    layer = models.CaffePreprocess()
    rgb = np.array([[[[10.0, 20.0, 30.0]]]], dtype="float32")
    np.testing.assert_allclose(np.asarray(layer(rgb))[0, 0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68], atol=1e-4)


def test_mobilenet_preprocessing_maps_to_minus_one_one():
    layer = models.preprocessing_layer("mobilenetv2")
    out = np.asarray(layer(np.array([[[[0.0, 127.5, 255.0]]]], dtype="float32")))
    np.testing.assert_allclose(out[0, 0, 0], [-1, 0, 1], atol=1e-6)


def test_unknown_model_and_bad_arguments():
    with pytest.raises(ValueError, match="unknown model"):
        models.build_model("vgg16")
    with pytest.raises(ValueError, match="num_classes"):
        models.build_model("baseline_cnn", num_classes=1, input_size=SIZE)
    with pytest.raises(ValueError, match="input_size"):
        models.build_model("mobilenetv2", input_size=16, weights=None)
    with pytest.raises(ValueError, match="backbone"):
        models.get_backbone(models.build_model("baseline_cnn", input_size=SIZE))


def test_unfreeze_top_keeps_batchnorm_frozen(resnet3):
    backbone = models.get_backbone(resnet3)
    count = models.unfreeze_top(resnet3, n_layers=30)
    assert 0 < count <= 30
    top = backbone.layers[-30:]
    assert all(layer.trainable for layer in top if not isinstance(layer, keras.layers.BatchNormalization))
    assert all(not layer.trainable for layer in backbone.layers[:-30])
    batch_norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert batch_norms and not any(layer.trainable for layer in batch_norms)
    assert not any(w.trainable for layer in batch_norms for w in layer.weights)
    everything = models.unfreeze_top(resnet3, fraction=1.0)
    assert everything > count
    assert not any(layer.trainable for layer in batch_norms)
    with pytest.raises(ValueError, match="exactly one"):
        models.unfreeze_top(resnet3)
    models.freeze_backbone(resnet3)
    assert not backbone.trainable and not backbone.trainable_weights


def test_compile_model_names_auc_and_checks_classes(resnet3):
    model = models.compile_model(models.build_model("baseline_cnn", input_size=SIZE), learning_rate=1e-3)
    x = np.zeros((4, SIZE, SIZE, 3), "float32")
    logs = model.evaluate(x, np.array([[0], [1], [0], [1]], "float32"), verbose=0, return_dict=True)
    assert "auc" in logs and "accuracy" in logs
    with pytest.raises(ValueError, match="num_classes"):
        models.compile_model(resnet3, num_classes=2)


@pytest.mark.parametrize(
    "name", ["baseline_cnn", "resnet50", pytest.param("mobilenetv2", marks=pytest.mark.slow)]
)
def test_save_load_round_trip_in_safe_mode(name, images, tmp_path):
    model = models.build_model(name, input_size=SIZE, weights=None, seed=1)
    before = _predict(model, images)
    path = tmp_path / modelcard.MODEL_FILE
    model.save(path)
    if name == "baseline_cnn":  # plain Keras loading; the others through the card loader (also safe mode)
        loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
        np.testing.assert_array_equal(_predict(loaded, images), before)
    card = {
        "model_name": name,
        "class_names": ["non-IDC", "IDC"],
        "input_size": SIZE,
        "threshold": {"value": 0.5, "method": "youden", "chosen_on": "val"},
        "weights": models.weights_record(model),
    }
    modelcard.write_card(card, tmp_path)
    via_card, read_back = modelcard.load_model(tmp_path)
    np.testing.assert_array_equal(_predict(via_card, images), before)
    assert read_back["weights"]["used"] == "random"


def test_backbone_and_head_reproduce_the_model(images):
    model = models.build_model("resnet50", input_size=SIZE, weights=None, dropout=0.5)
    extractor, head = models.backbone_and_head(model)
    features = _predict(extractor, images)
    assert features.shape == (len(images), 2048)
    assert features.std() > 0
    np.testing.assert_allclose(_predict(head, features), _predict(model, images), atol=1e-5)
    assert head.get_layer("head_dropout").rate == 0.5


def test_from_scratch_backbone_is_trainable():
    model = models.build_model("mobilenetv2", input_size=SIZE, weights=None, from_scratch=True)
    backbone = models.get_backbone(model)
    assert backbone.trainable and model.bclib_from_scratch
    assert any(isinstance(layer, keras.layers.BatchNormalization) and layer.trainable for layer in backbone.layers)
    assert models.unfreeze_top(model, n_layers=5) > 5  # nothing to unfreeze: everything already trains


def test_devices_on_cpu_stay_float32():
    import tensorflow as tf

    from bclib import devices

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this test checks the CPU-only configuration")
    info = devices.configure()
    assert info.policy == "float32" and not info.mixed_precision and not info.xla and info.n_gpus == 0
    assert keras.mixed_precision.global_policy().name == "float32"
    assert devices.jit_compile() is False
    assert isinstance(devices.strategy(), tf.distribute.Strategy)
    text = devices.describe()
    assert "TensorFlow" in text and "float32" in text and "CPU only" in text
    with pytest.raises(ValueError, match="mixed_precision"):
        devices.configure(mixed_precision="yes")
    devices.reset()


def test_mixed_precision_keeps_float32_outputs():
    from bclib import devices

    try:
        info = devices.configure(mixed_precision=True, xla=False)
        assert info.policy == "mixed_float16"
        model = models.build_model("baseline_cnn", input_size=SIZE)
        assert model.get_layer("block1_sepconv1").compute_dtype == "float16"
        assert model.output.dtype == "float32"
        assert _predict(model, np.zeros((2, SIZE, SIZE, 3), "uint8")).dtype == np.float32
    finally:
        devices.reset()
    assert devices.current() is None and devices.jit_compile() == "auto"
    assert keras.mixed_precision.global_policy().name == "float32"
