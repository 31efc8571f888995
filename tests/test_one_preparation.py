"""Training, ``bclib evaluate``, ``bclib predict`` and the widget give a model the same pixels.

The model's input size differs from the pack size on purpose (shrinking and enlarging), and the
folder holds edge patches smaller than the pack size: every path must pad, place and resize alike.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

keras = pytest.importorskip("keras")

from bclib.app.predict import Predictor  # noqa: E402
from bclib.data import cache  # noqa: E402
from bclib.data.datasets import idc  # noqa: E402
from bclib.data.imageio import read_image  # noqa: E402
from bclib.data.pipeline import make_dataset  # noqa: E402
from bclib.evaluation import evaluate  # noqa: E402

PACK_SIZE = 50


def _pixel_sensitive_model(input_size: int) -> keras.Model:
    """Random but fixed weights that read every pixel, so any difference in preparation shows."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((input_size, input_size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="tanh")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", kernel_initializer=keras.initializers.RandomNormal(0, 0.05))(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def folder_with_edge_patches(tmp_path_factory) -> Path:
    rng = np.random.default_rng(3)
    root = tmp_path_factory.mktemp("idc_edges")
    shapes = [(50, 50), (50, 50), (31, 50), (50, 22), (17, 9), (50, 50)]
    for patient in ("10", "11"):
        for label in (0, 1):
            folder = root / patient / str(label)
            folder.mkdir(parents=True)
            for number, (height, width) in enumerate(shapes):
                patch = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                Image.fromarray(patch).save(folder / f"{patient}_idx5_x{50 * number + 1}_y{label * 50 + 1}_class{label}.png")
    return root


@pytest.mark.parametrize("input_size", [32, 96])
def test_probabilities_agree_across_training_evaluation_predict_and_widget(folder_with_edge_patches, tmp_path, input_size):
    from test_evaluate import _card

    index = idc.scan(folder_with_edge_patches)
    packed = cache.pack(index, PACK_SIZE, cache_root=tmp_path / "cache", progress=False)
    model = _pixel_sensitive_model(input_size)

    batches = make_dataset(packed.images, packed.index.labels, batch_size=5, image_size=input_size)
    from_training = model.predict(batches, verbose=0)[:, 0]
    from_evaluate = evaluate.predict_index(model, packed.index, PACK_SIZE, batch_size=7, progress=False)

    predictor = Predictor(model, _card(input_size=input_size, pack_size=PACK_SIZE))
    paths = list(packed.index.frame["path"])
    from_predict = np.array([p.probabilities["IDC"] for p in predictor.predict_sources(paths, batch_size=4)])
    from_widget = np.array([p.probabilities["IDC"] for p in predictor.predict_images([read_image(p) for p in paths])])

    assert np.ptp(from_training) > 1e-3, "the model must tell the patches apart for the test to mean anything"
    for other in (from_evaluate, from_predict, from_widget):
        np.testing.assert_allclose(other, from_training, atol=1e-5, rtol=0)
