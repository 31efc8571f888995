"""bclib.evaluation.explain: Grad-CAM on plain and nested models, overlays."""
from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from bclib.evaluation import explain# noqa: E402

SIZE = 32
CORNER = 12  # the blob lives in the top-left CORNER x CORNER pixels


def _corner_problem(n: int = 320, seed: int = 0):
    """32x32 noisy images; class 1 has a bright blob in the top-left corner."""
    rng = np.random.default_rng(seed)
    images = rng.normal(110, 25, size=(n, SIZE, SIZE, 3)).clip(0, 255)
    labels = np.arange(n) % 2
    for i in np.flatnonzero(labels):
        top, left = rng.integers(1, 4, size=2)
        images[i, top:top + 8, left:left + 8] = 245
    return images.astype(np.uint8), labels


def _plain_cnn():
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs, name="plain_cnn")


def _nested_model():
    """A wrapper around a functional backbone with a skip connection, like keras.applications."""
    backbone_in = keras.Input((SIZE, SIZE, 3))
    a = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(backbone_in)
    b = keras.layers.Conv2D(8, 3, padding="same")(a)
    x = keras.layers.Activation("relu")(keras.layers.Add()([a, b]))
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, padding="same")(x)
    x = keras.layers.ReLU(name="out_relu")(x)
    backbone = keras.Model(backbone_in, x, name="tiny_backbone")
    inputs = keras.Input((SIZE, SIZE, 3))
    y = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    y = backbone(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    y = keras.layers.Dropout(0.1)(y)
    outputs = keras.layers.Dense(1, activation="sigmoid")(y)
    return keras.Model(inputs, outputs, name="wrapper")


def _train(model, images, labels):
    keras.utils.set_random_seed(0)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy")
    model.fit(images.astype("float32"), labels, epochs=4, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def corner_data():
    return _corner_problem()


@pytest.fixture(scope="module")
def trained_plain(corner_data):
    keras.utils.set_random_seed(0)
    return _train(_plain_cnn(), *corner_data)


@pytest.fixture(scope="module")
def trained_nested(corner_data):
    keras.utils.set_random_seed(1)
    return _train(_nested_model(), *corner_data)


def _corner_vs_rest(heatmaps: np.ndarray) -> tuple[float, float]:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[:CORNER, :CORNER] = True
    return float(heatmaps[:, mask].mean()), float(heatmaps[:, ~mask].mean())


def test_target_layers_are_found():
    path, layer = explain.find_target_layer(_plain_cnn())
    assert layer.name == "last_conv" and len(path) == 1
    path, layer = explain.find_target_layer(_nested_model())
    assert layer.name == "out_relu" and [m.name for m in path] == ["wrapper", "tiny_backbone"]
    with pytest.raises(explain.GradCamError, match="no layer named"):
        explain.find_target_layer(_plain_cnn(), "nope")
    dense_only = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    with pytest.raises(explain.GradCamError, match="no convolutional layer"):
        explain.find_target_layer(dense_only)


@pytest.mark.parametrize("fixture_name", ["trained_plain", "trained_nested"])
def test_heatmap_highlights_the_informative_corner(request, corner_data, fixture_name):
    model = request.getfixturevalue(fixture_name)
    images, labels = corner_data
    probs = model.predict(images.astype("float32"), verbose=0)[:, 0]
    assert probs[labels == 1].mean() > probs[labels == 0].mean() + 0.3  # the model learned the blob
    positives = images[labels == 1][:24]
    heatmaps = explain.grad_cam(model, positives)
    assert heatmaps.shape == (24, SIZE, SIZE) and heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1
    corner, rest = _corner_vs_rest(heatmaps)
    assert corner > rest


def test_shapes_resizing_and_class_choice(trained_nested, corner_data):
    images, _ = corner_data
    large = np.repeat(np.repeat(images[:3], 2, axis=1), 2, axis=2)  # 64x64: resized for the model
    heatmaps = explain.grad_cam(trained_nested, large, class_index=0, layer_name="out_relu")
    assert heatmaps.shape == (3, 64, 64)
    assert np.all((heatmaps >= 0) & (heatmaps <= 1))
    with pytest.raises(ValueError, match="class_index"):
        explain.grad_cam(trained_nested, images[:2], class_index=2)
    with pytest.raises(ValueError, match="RGB"):
        explain.grad_cam(trained_nested, images[:2, :, :, 0])


def test_softmax_and_sequential_models(corner_data):
    images, _ = corner_data
    model = keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        keras.layers.Rescaling(1 / 255.0),
        keras.layers.SeparableConv2D(4, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3, activation="softmax"),
    ])
    heatmaps = explain.grad_cam(model, images[:5])
    assert heatmaps.shape == (5, SIZE, SIZE) and heatmaps.min() >= 0 and heatmaps.max() <= 1


def test_non_chain_wrapper_is_reported(corner_data):
    images, _ = corner_data
    backbone_in = keras.Input((SIZE, SIZE, 3))
    backbone = keras.Model(backbone_in, keras.layers.Conv2D(4, 3, padding="same")(backbone_in), name="bb")
    inputs = keras.Input((SIZE, SIZE, 3))
    features = backbone(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    side = keras.layers.GlobalAveragePooling2D()(inputs)  # a branch that skips the backbone
    merged = keras.layers.Concatenate()([pooled, side])
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(merged))
    with pytest.raises(explain.GradCamError, match="not a simple chain"):
        explain.grad_cam(model, images[:2])


def test_overlay_blends_to_uint8():
    image = np.full((10, 12, 3), 100, dtype=np.uint8)
    heatmap = np.zeros((5, 6), dtype=np.float32)
    heatmap[0, 0] = 1.0
    blended = explain.overlay(image, heatmap, alpha=0.5)
    assert blended.shape == (10, 12, 3) and blended.dtype == np.uint8
    assert not np.array_equal(blended, image)
    assert np.array_equal(explain.overlay(image, heatmap, alpha=0.0), image)
    with pytest.raises(ValueError, match="alpha"):
        explain.overlay(image, heatmap, alpha=2)


def test_gradcam_figure(trained_plain, corner_data):
    import types

    import matplotlib.pyplot as plt

    from bclib.plots.evaluation import gradcam

    images, labels = corner_data
    examples = types.SimpleNamespace(
        groups=["group a"] * 2 + ["group b"] * 3, images=images[:5], heatmaps=explain.grad_cam(trained_plain, images[:5]),
        scores=trained_plain.predict(images[:5].astype("float32"), verbose=0)[:, 0], labels=labels[:5], feature_size=(4, 4))
    run = types.SimpleNamespace(gradcam=lambda name, per_group: examples, positive_name="blob",
                                session=types.SimpleNamespace(class_names=["plain", "blob"]))
    fig = gradcam(run, "cnn", per_group=3)
    assert len(fig.axes) == 2 * 3 * 2 + 1  # 2 rows x 3 columns of (image, overlay), and the colour bar
    assert fig.axes[1].get_title().startswith("P(blob)")
    assert "Grad-CAM for P(blob)" in fig.axes[-1].get_ylabel() and "P(blob)" in fig.get_suptitle()
    assert fig.axes[2].get_title() == f"group a\ntruth: {['plain', 'blob'][int(labels[1])]}"
    assert fig.axes[4].get_title().startswith("group b\n")
    plt.close("all")


def test_compiled_calls_match_eager_ones(corner_data):
    images, _ = corner_data
    model = _nested_model()
    results = [explain.grad_cam(model, images[:3]) for _ in range(explain.EAGER_CALLS + 2)]
    assert explain._forward_for(model, None)._compiled is not None  # the later calls were compiled
    for heatmaps in results[1:]:
        assert np.allclose(heatmaps, results[0], atol=1e-4)
