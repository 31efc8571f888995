"""Grad-CAM heatmaps for plain CNNs and for transfer models with a nested backbone.

Grad-CAM (Selvaraju et al., 2017) weighs each channel of a convolutional feature map by the mean
gradient of the class score over that map, sums, keeps the positive part, and resizes the result to
the image. Where the model ends in a sigmoid or softmax ``Dense`` (or ``Activation``), the score is
the logit before it, so saturated probabilities still give gradients.

The feature map: a layer named by ``layer_name`` (nested models searched too); else, in a transfer
model, the last 4-D layer of the nested backbone (MobileNetV2: ``out_relu``), the wrapper's layers
being run one after another around it and checked against ``model(images)``; else the last
convolution of a plain CNN.

For education and research, not for diagnosis: a heatmap shows where the model looked, not where
the disease is.
"""
from __future__ import annotations

import weakref

import numpy as np

CONV_LAYER_TYPES = ("Conv2D", "SeparableConv2D", "DepthwiseConv2D")
_HEAD_ACTIVATIONS = ("sigmoid", "softmax")
#: Batches computed eagerly per model before the gradient step is compiled (tracing a large
#: backbone is slow once; the compiled calls after it are much faster).
EAGER_CALLS = 2
_NOT_A_CHAIN = (
    "running the layers of {name!r} one after another does not reproduce its output (the wrapper "
    "around the backbone is not a simple chain); pass layer_name= of a top-level layer"
)


class GradCamError(ValueError):
    """Grad-CAM cannot be computed for this model or layer (the message says why)."""


def _is_model(layer) -> bool:
    return hasattr(layer, "layers") and hasattr(layer, "inputs")


def _is_input(layer) -> bool:
    return type(layer).__name__ == "InputLayer"


def _output_rank(layer) -> int | None:
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError, RuntimeError):
        return None


def _last_feature_layer(model, top_level: bool):
    """(path of models from ``model`` down, layer) of the default Grad-CAM target, or None."""
    for layer in reversed(model.layers):
        if _is_input(layer):
            continue
        if _is_model(layer):
            found = _last_feature_layer(layer, top_level=False)
            if found is not None:
                return [model, *found[0]], found[1]
            continue
        if _output_rank(layer) == 4 and (not top_level or type(layer).__name__ in CONV_LAYER_TYPES):
            return [model], layer
    return None


def _named_layer(model, name: str):
    for layer in model.layers:
        if layer.name == name:
            return [model], layer
    for layer in model.layers:
        if _is_model(layer):
            found = _named_layer(layer, name)
            if found is not None:
                return [model, *found[0]], found[1]
    return None


def find_target_layer(model, layer_name: str | None = None):
    """The layer whose feature map Grad-CAM uses, and the models containing it (top first)."""
    found = _named_layer(model, layer_name) if layer_name else _last_feature_layer(model, top_level=True)
    if found is None:
        if layer_name:
            raise GradCamError(f"no layer named {layer_name!r} in {model.name!r} or its nested models")
        raise GradCamError(
            f"{model.name!r} has no convolutional layer (nor a nested backbone with a 4-D feature map): "
            "Grad-CAM needs one; pass layer_name="
        )
    path, layer = found
    if _output_rank(layer) != 4:
        raise GradCamError(f"layer {layer.name!r} does not output a 4-D feature map (N, H, W, C)")
    return path, layer


def _head(model):
    """The last layer when it is a Dense/Activation ending in sigmoid or softmax, else None."""
    last = model.layers[-1]
    name = getattr(getattr(last, "activation", None), "__name__", "")
    if type(last).__name__ in ("Dense", "Activation") and name in _HEAD_ACTIVATIONS:
        return last, name
    return None


class _Forward:
    """Runs the model and returns (feature map, class scores) in one differentiable pass."""

    def __init__(self, model, layer_name: str | None):
        import keras

        self.model = model
        self.path, self.target = find_target_layer(model, layer_name)
        self.head = _head(model)
        container = self.path[-1]  # the model holding the target layer
        end = self.head[0].input if len(self.path) == 1 and self.head is not None else container.output
        self._direct = keras.Model(container.inputs, [self.target.output, end])
        self._compiled = None
        self._calls = 0
        self.checked = False

    def _run(self, container, depth: int, x):
        if depth == len(self.path) - 1:
            return self._direct(x, training=False)
        child = self.path[depth + 1]
        layers = [layer for layer in container.layers if not _is_input(layer)]
        if depth == 0 and self.head is not None:
            layers = layers[:-1]
        features = None
        for layer in layers:
            if layer is child:
                features, x = self._run(child, depth + 1, x)
                continue
            try:
                x = layer(x, training=False)
            except (ValueError, TypeError) as error:
                raise GradCamError(_NOT_A_CHAIN.format(name=container.name) + f" ({layer.name!r}: {error})") from None
        return features, x

    def _scores(self, penultimate):
        """Logits when the head is known, else the model's outputs."""
        from keras import ops

        if self.head is None:
            return penultimate, False
        layer, _ = self.head
        if type(layer).__name__ == "Activation":
            return penultimate, True
        x = ops.cast(penultimate, layer.kernel.dtype)
        logits = ops.matmul(x, layer.kernel)
        if layer.use_bias:
            logits = logits + layer.bias
        return logits, True

    def __call__(self, x):
        import tensorflow as tf

        features, penultimate = self._run(self.model, 0, x)
        scores, are_logits = self._scores(penultimate)
        if not self.checked and tf.executing_eagerly():
            self._check(x, scores, are_logits)
        return features, scores

    def _cam(self, batch, class_index):
        """Unnormalised Grad-CAM map ``(N, h, w, 1)`` at the feature map's resolution."""
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(batch)
            features, scores = self(batch)
            scores = tf.cast(scores, tf.float32)
            if scores.shape[-1] == 1:
                target = -scores[:, 0] if class_index == 0 else scores[:, 0]
            else:
                chosen = (tf.argmax(scores, axis=-1, output_type=tf.int32) if class_index is None
                          else tf.fill([tf.shape(scores)[0]], int(class_index)))
                target = tf.gather(scores, chosen, axis=1, batch_dims=1)
        gradients = tape.gradient(target, features)
        if gradients is None:
            raise GradCamError(f"no gradient reaches layer {self.target.name!r} from the model output")
        weights = tf.reduce_mean(tf.cast(gradients, tf.float32), axis=(1, 2), keepdims=True)
        return tf.nn.relu(tf.reduce_sum(weights * tf.cast(features, tf.float32), axis=-1, keepdims=True))

    def cam(self, batch, class_index):
        """:meth:`_cam`: eager (and checked) for the first calls, then a compiled ``tf.function``."""
        import tensorflow as tf

        self._calls += 1
        if not self.checked or self._calls <= EAGER_CALLS:
            return self._cam(batch, class_index)
        if self._compiled is None:
            self._compiled = tf.function(self._cam, reduce_retracing=True)
        return self._compiled(batch, class_index)

    def _check(self, x, scores, are_logits: bool) -> None:
        """The chain must reproduce the model's own output (else the wrapper is not a chain)."""
        from keras import ops

        expected = np.asarray(self.model(x, training=False), dtype=np.float64)
        got = np.asarray(scores, dtype=np.float64)
        if are_logits:
            name = self.head[1]
            got = 1 / (1 + np.exp(-got)) if name == "sigmoid" else np.asarray(ops.softmax(got, axis=-1))
        if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-3):
            raise GradCamError(_NOT_A_CHAIN.format(name=self.model.name))
        self.checked = True


_FORWARD_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _forward_for(model, layer_name: str | None) -> _Forward:
    """One checked :class:`_Forward` per (model, layer), reused across calls (the widget's latency)."""
    per_model = _FORWARD_CACHE.setdefault(model, {})
    if layer_name not in per_model:
        per_model[layer_name] = _Forward(model, layer_name)
    return per_model[layer_name]


def model_input_size(model) -> tuple[int, int] | None:
    shape = model.input_shape
    if isinstance(shape, list):
        shape = shape[0]
    if len(shape) == 4 and shape[1] and shape[2]:
        return int(shape[1]), int(shape[2])
    return None


def grad_cam(model, images: np.ndarray, class_index: int | None = None, layer_name: str | None = None,
             batch_size: int = 32) -> np.ndarray:
    """Grad-CAM heatmaps ``(N, H, W)`` in [0, 1] for raw RGB ``images`` ``(N, H, W, 3)`` (0..255).

    ``class_index=None`` explains the positive unit of a one-sigmoid model (P(label 1)) and the
    predicted class of a softmax model; pass the disease label explicitly where it is not 1
    (BreastMNIST: 0). Images are resized to the model's input size for the forward pass and
    the heatmaps back to the images' size. A heatmap with no positive evidence is all zeros.
    """
    import tensorflow as tf

    from bclib.data.pipeline import resize_batch

    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3) RGB, got shape {images.shape}")
    if len(images) == 0:
        raise ValueError("no images to explain")
    height, width = images.shape[1:3]
    input_size = model_input_size(model)
    forward = _forward_for(model, layer_name)
    outputs = int(np.prod(model.output_shape[1:])) if not isinstance(model.output_shape, list) else 0
    if outputs == 1:
        wanted = 1 if class_index is None else int(class_index)
        if wanted not in (0, 1):
            raise ValueError(f"class_index must be 0 or 1 for a one-unit model, got {class_index}")
    elif class_index is not None and not 0 <= int(class_index) < outputs:
        raise ValueError(f"class_index {class_index} out of range for {outputs} classes")
    heatmaps = []
    for start in range(0, len(images), batch_size):
        batch = tf.convert_to_tensor(images[start:start + batch_size], dtype=tf.float32)
        if input_size is not None and input_size != (height, width):
            batch = resize_batch(batch, input_size[0])
        cam = forward.cam(batch, class_index)
        cam = tf.image.resize(cam, (height, width), method="bilinear")[..., 0].numpy()
        peak = cam.reshape(len(cam), -1).max(axis=1)
        cam = np.where(peak[:, None, None] > 0, cam / np.where(peak > 0, peak, 1)[:, None, None], 0.0)
        heatmaps.append(np.clip(cam, 0.0, 1.0).astype(np.float32))
    return np.concatenate(heatmaps)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4, colormap: str = "jet") -> np.ndarray:
    """Blend a [0, 1] ``heatmap`` (coloured with ``colormap``) over an RGB image; uint8 RGB."""
    from matplotlib import colormaps
    from PIL import Image

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be H x W x 3, got shape {image.shape}")
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.shape != image.shape[:2]:
        resized = Image.fromarray(heatmap).resize((image.shape[1], image.shape[0]), Image.Resampling.BILINEAR)
        heatmap = np.asarray(resized)
    colored = colormaps[colormap](np.clip(heatmap, 0, 1))[..., :3] * 255.0
    base = image.astype(np.float32)
    if image.dtype != np.uint8 and base.max() <= 1.0:
        base = base * 255.0
    blended = (1 - alpha) * base + alpha * colored
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
