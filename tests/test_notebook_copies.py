"""What a notebook writes out in a cell and the library copy later notebooks use build the same thing."""
from __future__ import annotations

from pathlib import Path

import keras
import nbformat
import numpy as np

from bclib.models import builders

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def cell_defining(notebook: str, marker: str) -> str:
    """The source of the first code cell of ``notebook`` that contains ``marker``."""
    for cell in nbformat.read(NOTEBOOKS / notebook, as_version=4).cells:
        if cell.cell_type == "code" and marker in cell.source:
            return cell.source
    raise AssertionError(f"no cell of {notebook} contains {marker!r}")


def layer_signature(model: keras.Model) -> list[tuple]:
    """Each layer's class and configuration without its (auto-numbered) name."""
    signature = []
    for layer in model.layers:
        config = {key: value for key, value in layer.get_config().items() if key != "name"}
        signature.append((type(layer).__name__, repr(sorted(config.items()))))
    return signature


def test_notebook_02_make_model_is_the_library_baseline():
    namespace = {"keras": keras, "layers": keras.layers}
    exec(cell_defining("02_baseline_cnn.ipynb", "def make_model"), namespace)
    for size, classes in ((50, 2), (32, 3)):
        notebook_model = namespace["make_model"](size, classes)
        library_model = builders.baseline_cnn(size, classes)
        assert layer_signature(notebook_model) == layer_signature(library_model)
        assert notebook_model.count_params() == library_model.count_params()


def test_the_library_baseline_takes_raw_pixels_and_gives_probabilities():
    model = builders.compile_model(builders.baseline_cnn(32, 2))
    probabilities = model.predict(np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)), verbose=0)
    assert probabilities.shape == (4, 1) and ((probabilities > 0) & (probabilities < 1)).all()
