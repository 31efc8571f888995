"""Library copies of the models notebooks 02 and 05 write out; tests check that both copies agree.

Every model takes raw RGB values 0..255 and preprocesses inside, so a saved ``model.keras`` needs
nothing else. Two classes: one sigmoid unit, P(label 1); more: a softmax. Transfer models nest the
keras.applications backbone as a layer named ``"backbone"``, called with ``training=False`` (its
BatchNorm layers stay in inference mode, also when fine-tuning). Layer names used by feature
extraction and Grad-CAM: ``"preprocess"``, ``"backbone"``, ``"pool"``, ``"head_dropout"``, ``"head_output"``.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from bclib.models.weights import WeightsChoice, load_weights_file, resolve_weights

#: The models :func:`build_model` builds, and their default input size.
DEFAULT_INPUT_SIZE = {"baseline_cnn": 50, "mobilenetv2": 96, "resnet50": 96}
TRANSFER_MODELS = ("mobilenetv2", "resnet50")
#: ImageNet channel means in BGR order, subtracted by the "caffe" preprocessing of ResNet50.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="bclib")
class CaffePreprocess(layers.Layer):
    """ResNet50's ImageNet ("caffe") preprocessing: RGB -> BGR, minus the ImageNet mean.

    A registered layer rather than a ``Lambda``, so Keras safe mode loads the saved model.
    """

    def __init__(self, mean: tuple[float, float, float] = CAFFE_BGR_MEAN, **kwargs):
        super().__init__(**kwargs)
        self.mean = tuple(float(value) for value in mean)

    def call(self, inputs):
        images = ops.cast(inputs, self.compute_dtype)
        return ops.flip(images, axis=-1) - ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "mean": list(self.mean)}


def output_layer(num_classes: int, name: str | None = None) -> layers.Dense:
    """One sigmoid unit for two classes, else a softmax; float32 even under mixed precision."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if num_classes == 2:
        return layers.Dense(1, activation="sigmoid", dtype="float32", name=name)
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name=name)


def baseline_cnn(input_size: int = 50, num_classes: int = 2, dropout: float = 0.3) -> keras.Model:
    """Notebook 02's ``make_model``: separable-convolution blocks of 32, 64 and 128 filters, a small head."""
    inputs = keras.Input((input_size, input_size, 3))
    x = layers.Rescaling(1 / 255)(inputs)
    for filters, repeats in [(32, 1), (64, 2), (128, 3)]:
        for _ in range(repeats):
            x = layers.SeparableConv2D(filters, 3, padding="same", activation="relu")(x)
            x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Dropout(0.25)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    x = layers.Dropout(dropout)(x)
    outputs = output_layer(num_classes)(x)
    return keras.Model(inputs, outputs, name="baseline_cnn")


def compile_model(model: keras.Model, learning_rate: float = 1e-3) -> keras.Model:
    """Notebook 02's ``compile``: Adam, cross-entropy, AUC and accuracy; returns the model."""
    two_classes = output_classes(model) == 2
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="binary_crossentropy" if two_classes else "categorical_crossentropy",
        metrics=[keras.metrics.AUC(name="auc"), "accuracy"],
    )
    return model


def preprocessing_layer(name: str) -> layers.Layer:
    """The layer turning raw 0..255 RGB into what the backbone ``name`` was trained on."""
    if name.lower() == "mobilenetv2":
        return layers.Rescaling(1 / 127.5, offset=-1, name="preprocess")
    return CaffePreprocess(name="preprocess")


def backbone(name: str, input_size: int, weights: WeightsChoice) -> keras.Model:
    """The keras.applications backbone without its classifier, with the chosen weights loaded."""
    key = name.lower()
    if key not in TRANSFER_MODELS:
        raise ValueError(f"{name!r} has no pretrained backbone; transfer models are {list(TRANSFER_MODELS)}")
    application = keras.applications.MobileNetV2 if key == "mobilenetv2" else keras.applications.ResNet50
    network = application(input_shape=(input_size, input_size, 3), include_top=False, weights=None, name="backbone")
    if weights.path is not None:
        load_weights_file(network, weights.path)
    return network


def transfer_model(name: str, input_size: int, num_classes: int, weights: WeightsChoice,
                   dropout: float = 0.3) -> keras.Model:
    """Notebook 05's model: preprocessing, the frozen backbone in inference mode, pooling and a new head."""
    network = backbone(name, input_size, weights)
    network.trainable = False
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = preprocessing_layer(name)(inputs)
    x = network(x, training=False)
    features = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="head_dropout")(features)
    outputs = output_layer(num_classes, name="head_output")(x)
    model = keras.Model(inputs, outputs, name=name.lower())
    model.bclib_weights = weights
    return model


def build_model(name: str, num_classes: int = 2, input_size: int | None = None, weights: str | None = "imagenet",
                allow_random_weights: bool = True, seed: int = 0, dropout: float = 0.3) -> keras.Model:
    """``"baseline_cnn"``, ``"mobilenetv2"`` or ``"resnet50"``, seeded, in the devices' strategy scope.

    ``weights`` matters for the transfer models only (:func:`bclib.models.weights.resolve_weights`);
    ``model.bclib_weights`` records the weights really used. ``dropout``: the rate before the output.
    """
    from bclib import devices

    key = name.lower()
    if key not in DEFAULT_INPUT_SIZE:
        raise ValueError(f"unknown model {name!r}; choose one of {list(DEFAULT_INPUT_SIZE)}")
    size = int(input_size or DEFAULT_INPUT_SIZE[key])
    keras.utils.set_random_seed(seed)
    with devices.strategy().scope():
        if key == "baseline_cnn":
            model = baseline_cnn(size, num_classes, dropout)
            model.bclib_weights = WeightsChoice(requested=None, used="random", path=None)
            return model
        choice = resolve_weights(key, weights, allow_random=allow_random_weights, input_size=size, announce=False)
        return transfer_model(key, size, num_classes, choice, dropout)


def get_backbone(model: keras.Model) -> keras.Model:
    """The nested backbone of a transfer model; ``ValueError`` for the baseline."""
    try:
        return model.get_layer("backbone")
    except ValueError:
        raise ValueError(f"model {model.name!r} has no nested 'backbone' (only transfer models have one)") from None


def feature_extractor(model: keras.Model) -> keras.Model:
    """Images -> pooled backbone features, sharing the transfer model's layers."""
    get_backbone(model)
    return keras.Model(model.inputs[0], model.get_layer("pool").output, name=f"{model.name}_features")


def head_model(model: keras.Model) -> keras.Model:
    """Notebook 05's head: features -> probabilities, made of the model's own head layers.

    Training it trains the model's head (the layers are shared, not copied).
    """
    dimension = int(model.get_layer("pool").output.shape[-1])
    return keras.Sequential(
        [keras.Input((dimension,)), model.get_layer("head_dropout"), model.get_layer("head_output")], name="head"
    )


def unfreeze_top(model: keras.Model, n_layers: int) -> int:
    """Notebook 05's fine-tuning step: the backbone's top ``n_layers`` train, BatchNorm stays frozen.

    Returns how many backbone layers with weights now train. Recompile afterwards.
    """
    if n_layers < 0:
        raise ValueError(f"n_layers must be >= 0, got {n_layers}")
    network = get_backbone(model)
    network.trainable = True
    first_top = len(network.layers) - n_layers
    # Every layer is set, not only those that change: `trainable = True` on a model that is already
    # trainable does not reach its layers (TensorFlow skips assigning an attribute the value it has).
    for number, layer in enumerate(network.layers):
        layer.trainable = number >= first_top and not isinstance(layer, layers.BatchNormalization)
    return sum(1 for layer in network.layers if layer.trainable and layer.weights)


def output_classes(model: keras.Model) -> int:
    """Number of classes a model predicts (1 sigmoid unit means 2)."""
    units = model.outputs[0].shape[-1]
    return 2 if units == 1 else int(units)


def calibrate_batchnorm(network: keras.Model, images, trainable_only: bool = False) -> int:
    """Set the BatchNorm layers' moving statistics to those of ``images`` (already preprocessed).

    One forward pass in training mode with momentum 0; no weight is trained. A randomly initialised
    backbone in inference mode (moving mean 0, variance 1) lets the activations vanish, so every image
    gets the same features: this gives it data-matched statistics. ``trainable_only`` leaves frozen
    BatchNorm layers as they are. Returns the number of layers set.
    """
    norms = [layer for layer in network._flatten_layers()
             if isinstance(layer, layers.BatchNormalization) and (layer.trainable or not trainable_only)]
    if not norms:
        return 0
    saved = [(layer, layer.momentum, layer.trainable) for layer in norms]
    network_trainable = network.trainable
    network.trainable = True
    try:
        for layer in norms:
            layer.trainable = True
            layer.momentum = 0.0
        network(images, training=True)
    finally:
        for layer, momentum, trainable in saved:
            layer.momentum = momentum
            layer.trainable = trainable
        network.trainable = network_trainable
    return len(norms)
