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


def parameter_values(notebook: str) -> dict:
    """The literals of ``notebook``'s parameters cell, by name."""
    namespace: dict = {}
    for cell in nbformat.read(NOTEBOOKS / notebook, as_version=4).cells:
        if "parameters" in cell.metadata.get("tags", []):
            exec(cell.source, namespace)
            return {key: value for key, value in namespace.items() if not key.startswith("__")}
    raise AssertionError(f"{notebook} has no parameters cell")


def test_notebook_03_class_weight_cell_is_balanced_class_weights():
    from types import SimpleNamespace

    from sklearn.utils.class_weight import compute_class_weight

    from bclib.models.training import balanced_class_weights

    cell = cell_defining("03_class_weighting.ipynb", "compute_class_weight(")
    for labels in (np.array([0] * 7 + [1] * 3), np.array([2, 0, 0, 2, 1, 0]), np.array([0, 2, 2, 2])):
        namespace = {"np": np, "compute_class_weight": compute_class_weight,
                     "session": SimpleNamespace(labels=lambda split, labels=labels: labels)}
        exec(cell, namespace)
        assert namespace["class_weight"] == balanced_class_weights(labels)
        totals = {label: weight * np.sum(labels == label) for label, weight in namespace["class_weight"].items()}
        np.testing.assert_allclose(list(totals.values()), len(labels) / len(totals))


def test_notebook_04_augmentation_cell_is_the_library_stack():
    from bclib.data import augment

    cell = cell_defining("04_augmentation.ipynb", "augmentation = keras.Sequential(")
    parameters = parameter_values("04_augmentation.ipynb")
    batch = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    for seed in (parameters["seed"], 5):
        namespace = {"keras": keras, **vars(augment), **parameters, "seed": seed}
        exec(cell, namespace)
        notebook_stack = namespace["augmentation"]
        library_stack = augment.standard_augmentation(zoom=parameters["zoom"], stain_jitter=parameters["stain_jitter"],
                                                      brightness=parameters["brightness"],
                                                      contrast=parameters["contrast"], seed=seed)
        assert layer_signature(notebook_stack) == layer_signature(library_stack)
        assert augment.describe_layers(notebook_stack) == augment.describe_layers(library_stack)
        np.testing.assert_array_equal(np.asarray(notebook_stack(batch, training=True)),
                                      np.asarray(library_stack(batch, training=True)))
    defaults = augment.standard_augmentation()  # the library's defaults are the notebook's parameters
    namespace = {"keras": keras, **vars(augment), **parameters}
    exec(cell, namespace)
    assert augment.describe_layers(defaults) == augment.describe_layers(namespace["augmentation"])
