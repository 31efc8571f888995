"""The three classifiers: a CancerNet-like baseline CNN, MobileNetV2 and ResNet50 backbones.

Every model takes raw RGB values 0..255 (float or uint8) and does its own preprocessing, so a
saved ``model.keras`` needs nothing else to predict. Two classes: one sigmoid unit giving
P(label 1); more classes: a softmax. The transfer models wrap the keras.applications backbone
as a nested model named ``"backbone"`` that is called with ``training=False`` (BatchNorm stays in
inference mode, also when fine-tuning) and start frozen (phase 1: train the head only).

Layer names are a contract used by :mod:`bclib.models.features` and Grad-CAM: ``"preprocess"``,
``"backbone"``, ``"pool"`` (the feature vector), ``"head_dropout"`` and ``"head_output"``.
"""
from __future__ import annotations

import keras
from keras import ops

from bclib.models.weights import WeightsChoice, load_weights_file, resolve_weights

MODEL_NAMES = ("baseline_cnn", "mobilenetv2", "resnet50")
TRANSFER_MODELS = ("mobilenetv2", "resnet50")
DEFAULT_INPUT_SIZE = {"baseline_cnn": 50, "mobilenetv2": 96, "resnet50": 96}
#: ImageNet channel means in BGR order, subtracted by the "caffe" preprocessing of ResNet50.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
MIN_TRANSFER_INPUT = 32
#: BatchNorm momentum of the baseline: 0.9 (not Keras' 0.99) so the moving statistics used at
#: evaluation catch up within a few dozen steps; with 0.99 a short run predicts a constant.
BN_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="bclib")
class CaffePreprocess(keras.layers.Layer):
    """ResNet50's ImageNet ("caffe") preprocessing: RGB -> BGR, minus the ImageNet mean.

    A registered layer rather than a ``Lambda``, so Keras safe mode loads the saved model.
    """

    def __init__(self, mean: tuple[float, float, float] = CAFFE_BGR_MEAN, **kwargs):
        super().__init__(**kwargs)
        self.mean = tuple(float(value) for value in mean)

    def call(self, inputs):
        images = ops.cast(inputs, self.compute_dtype)
        bgr = ops.flip(images, axis=-1)
        return bgr - ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "mean": list(self.mean)}


def _check_name(name: str) -> str:
    key = name.lower()
    if key not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose one of {list(MODEL_NAMES)}")
    return key


def _output_layer(num_classes: int) -> keras.layers.Dense:
    """Sigmoid unit (2 classes) or softmax; float32 even under a mixed-precision policy."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if num_classes == 2:
        return keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="head_output")
    return keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="head_output")


def preprocessing_layer(name: str) -> keras.layers.Layer:
    """The layer turning raw 0..255 RGB into what the network expects."""
    key = _check_name(name)
    if key == "baseline_cnn":
        return keras.layers.Rescaling(1.0 / 255.0, name="preprocess")
    if key == "mobilenetv2":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")
    return CaffePreprocess(name="preprocess")


def build_backbone(
    name: str,
    input_size: int = 96,
    weights: str | None = "imagenet",
    allow_random_weights: bool = True,
) -> tuple[keras.Model, WeightsChoice]:
    """A keras.applications backbone without its top, named ``"backbone"``, and its weights choice."""
    key = _check_name(name)
    if key not in TRANSFER_MODELS:
        raise ValueError(f"{name!r} has no pretrained backbone; transfer models are {list(TRANSFER_MODELS)}")
    if input_size < MIN_TRANSFER_INPUT:
        raise ValueError(f"{name} needs input_size >= {MIN_TRANSFER_INPUT}, got {input_size}")
    choice = resolve_weights(key, weights, allow_random=allow_random_weights, input_size=input_size)
    shape = (input_size, input_size, 3)
    if key == "mobilenetv2":
        backbone = keras.applications.MobileNetV2(input_shape=shape, include_top=False, weights=None, name="backbone")
    else:
        backbone = keras.applications.ResNet50(input_shape=shape, include_top=False, weights=None, name="backbone")
    if choice.path is not None:
        load_weights_file(backbone, choice.path)
    return backbone, choice


def _baseline(inputs, num_classes: int, dropout: float, seed: int):
    """CancerNet-like: separable-convolution blocks of 32, 64, 128 filters, then a small head."""
    x = preprocessing_layer("baseline_cnn")(inputs)
    for block, (filters, repeats) in enumerate(((32, 1), (64, 2), (128, 3)), start=1):
        for repeat in range(1, repeats + 1):
            x = keras.layers.SeparableConv2D(
                filters, 3, padding="same", activation="relu", name=f"block{block}_sepconv{repeat}"
            )(x)
            x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"block{block}_bn{repeat}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
        x = keras.layers.Dropout(0.25, seed=seed + block, name=f"block{block}_dropout")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(128, activation="relu", name="head_dense")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name="head_bn")(x)
    x = keras.layers.Dropout(dropout, seed=seed, name="head_dropout")(x)
    return _output_layer(num_classes)(x)


def build_head(feature_dim: int, num_classes: int = 2, dropout: float = 0.3, seed: int = 0) -> keras.Model:
    """The transfer head alone (features -> probabilities), same layer names as in the full model."""
    inputs = keras.Input((feature_dim,), name="features")
    x = keras.layers.Dropout(dropout, seed=seed, name="head_dropout")(inputs)
    outputs = _output_layer(num_classes)(x)
    return keras.Model(inputs, outputs, name="head")


def build_model(*args, **kwargs) -> keras.Model:
    """Build ``"baseline_cnn"``, ``"mobilenetv2"`` or ``"resnet50"`` (see :func:`_build_model`).

    Variables are created in the scope of :func:`bclib.devices.strategy`, so with several GPUs
    the model is mirrored on all of them.
    """
    from bclib import devices

    with devices.strategy().scope():
        return _build_model(*args, **kwargs)


def _build_model(
    name: str,
    num_classes: int = 2,
    input_size: int | None = None,
    weights: str | None = "imagenet",
    allow_random_weights: bool = True,
    dropout: float = 0.3,
    seed: int = 0,
    from_scratch: bool = False,
) -> keras.Model:
    """Build ``"baseline_cnn"``, ``"mobilenetv2"`` or ``"resnet50"`` for raw 0..255 RGB input.

    ``input_size`` defaults to 50 (baseline) or 96 (transfer). ``weights`` only matters for the
    transfer models (see :func:`bclib.models.weights.resolve_weights`); the baseline always starts
    random. Seeds Keras with ``seed`` so the initial weights are reproducible. Transfer models
    come with the backbone frozen and called in inference mode. ``model.bclib_weights`` holds
    the :class:`WeightsChoice`.

    ``from_scratch=True`` (transfer models) instead leaves the backbone trainable with its
    BatchNorm layers following the training flag: the only way a backbone *without* pretrained
    weights can learn (a random MobileNetV2 in inference mode outputs features of ~1e-13, so a
    frozen random backbone gives a chance-level model). Use it when
    ``model.bclib_weights.is_pretrained`` is False, and skip the frozen-feature phase then.
    """
    key = _check_name(name)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    size = int(input_size or DEFAULT_INPUT_SIZE[key])
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3), name="image")
    if key == "baseline_cnn":
        outputs = _baseline(inputs, num_classes, dropout, seed)
        choice = WeightsChoice(requested=None, used="random", path=None)
    else:
        backbone, choice = build_backbone(key, size, weights, allow_random_weights)
        backbone.trainable = from_scratch
        x = preprocessing_layer(key)(inputs)
        x = backbone(x) if from_scratch else backbone(x, training=False)
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        x = keras.layers.Dropout(dropout, seed=seed, name="head_dropout")(x)
        outputs = _output_layer(num_classes)(x)
    model = keras.Model(inputs, outputs, name=key)
    model.bclib_weights = choice
    model.bclib_from_scratch = bool(from_scratch and key in TRANSFER_MODELS)
    return model


def weights_record(model: keras.Model) -> dict:
    """The model card's ``weights`` entry for a model built here (unknown models: 'unknown')."""
    choice = getattr(model, "bclib_weights", None)
    if choice is None:
        return {"requested": None, "used": "unknown", "note": "model not built by bclib.models.builders.build_model"}
    return choice.to_card()


def get_backbone(model: keras.Model) -> keras.Model:
    """The nested backbone of a transfer model; ``ValueError`` for the baseline."""
    try:
        layer = model.get_layer("backbone")
    except ValueError:
        raise ValueError(f"model {model.name!r} has no nested 'backbone' (only transfer models have one)") from None
    return layer


def backbone_and_head(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """Split a transfer model for phase 1 (features computed once, head trained on them).

    Returns ``(feature_extractor, head)``: the extractor maps raw images to the pooled backbone
    features (it shares the model's layers, preprocessing included); the head is a separate
    model (same layer names) holding a copy of the model's current head weights.
    """
    get_backbone(model)
    pooled = model.get_layer("pool").output
    extractor = keras.Model(model.inputs[0], pooled, name=f"{model.name}_features")
    head = build_head(int(pooled.shape[-1]), output_classes(model), dropout=model.get_layer("head_dropout").rate)
    head.get_layer("head_output").set_weights(model.get_layer("head_output").get_weights())
    return extractor, head


def freeze_backbone(model: keras.Model) -> None:
    """Freeze the whole backbone (phase 1). Recompile the model afterwards."""
    get_backbone(model).trainable = False


def unfreeze_top(model: keras.Model, n_layers: int | None = None, fraction: float | None = None) -> int:
    """Make the top ``n_layers`` (or ``fraction``) of the backbone's layers trainable.

    Every BatchNormalization layer stays frozen (and the backbone is called in inference mode),
    so fine-tuning does not wreck the ImageNet statistics. Returns the number of trainable
    backbone layers. Recompile with a lower learning rate afterwards (:func:`compile_model`).
    """
    if (n_layers is None) == (fraction is None):
        raise ValueError("give exactly one of n_layers or fraction")
    backbone = get_backbone(model)
    layers = backbone.layers
    if getattr(model, "bclib_from_scratch", False):
        print(f"{model.name}: the backbone trains from scratch, every layer is already trainable")
        return sum(1 for layer in layers if layer.trainable and layer.weights)
    if fraction is not None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        n_layers = int(round(fraction * len(layers)))
    if n_layers < 0:
        raise ValueError(f"n_layers must be >= 0, got {n_layers}")
    first_trainable = len(layers) - min(n_layers, len(layers))
    backbone.trainable = True
    count = 0
    for position, layer in enumerate(layers):
        trainable = position >= first_trainable and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = trainable
        count += int(trainable and bool(layer.weights))
    return count


def output_classes(model: keras.Model) -> int:
    """Number of classes a model predicts (1 sigmoid unit means 2)."""
    units = model.outputs[0].shape[-1]
    return 2 if units == 1 else int(units)


def compile_model(
    model: keras.Model,
    learning_rate: float = 1e-3,
    num_classes: int | None = None,
    jit_compile: bool | str | None = None,
) -> keras.Model:
    """Adam, cross-entropy and the metrics ``auc`` and ``accuracy``; returns the model.

    Two classes: binary cross-entropy on float labels (batch, 1). More: categorical
    cross-entropy on one-hot labels (what :func:`bclib.data.pipeline.make_dataset` yields), which also
    lets the AUC metric work (micro-averaged over classes). ``jit_compile=None`` takes the
    XLA choice of :func:`bclib.devices.configure` (Keras' ``"auto"`` when it was not called).
    """
    from bclib import devices

    if jit_compile is None:
        jit_compile = devices.jit_compile()
    num_classes = num_classes or output_classes(model)
    if num_classes != output_classes(model):
        raise ValueError(f"num_classes={num_classes} but the model predicts {output_classes(model)} classes")
    if num_classes == 2:
        loss = keras.losses.BinaryCrossentropy()
        accuracy = keras.metrics.BinaryAccuracy(name="accuracy")
    else:
        loss = keras.losses.CategoricalCrossentropy()
        accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
    with devices.strategy().scope():  # optimizer and metric variables beside the model's
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss=loss,
            metrics=[keras.metrics.AUC(name="auc"), accuracy],
            jit_compile=jit_compile,
        )
    return model


def calibrate_batchnorm(backbone: keras.Model, images) -> int:
    """Set every BatchNorm layer's moving statistics to those of ``images`` (preprocessed).

    A randomly initialised backbone in inference mode (moving mean 0, variance 1) lets the
    activations vanish through the network, so every image gets the same features; one
    forward pass in training mode with momentum 0 gives data-matched statistics instead.
    Only the statistics change; the convolution weights stay random. Returns the number of
    BatchNorm layers set. Used only when ImageNet weights are missing.
    """
    layers = [layer for layer in backbone._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [(layer, layer.momentum, layer.trainable) for layer in layers]
    backbone_trainable = backbone.trainable
    backbone.trainable = True
    try:
        for layer in layers:
            layer.trainable = True
            layer.momentum = 0.0
        backbone(images, training=True)
    finally:
        for layer, momentum, trainable in saved:
            layer.momentum = momentum
            layer.trainable = trainable
        backbone.trainable = backbone_trainable
    return len(layers)
