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


def _run_cell(source: str, namespace: dict) -> dict:
    """Execute a notebook cell's source in ``namespace``, its printed output discarded."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(source, "notebook-cell", "exec"), namespace)
    return namespace


def test_notebook_05_model_cell_is_the_library_transfer_model():
    import types

    import tensorflow as tf

    from bclib.models.weights import WeightsChoice, load_weights_file

    source = cell_defining("05_mobilenetv2_transfer.ipynb", "keras.applications.MobileNetV2(")
    random_weights = WeightsChoice(requested=None, used="random", path=None)
    for size, classes in ((32, 2), (48, 3)):
        session = types.SimpleNamespace(strategy=tf.distribute.get_strategy(), num_classes=classes)
        namespace = _run_cell(source, {"keras": keras, "layers": keras.layers, "load_weights_file": load_weights_file,
                                       "session": session, "image_size": size, "dropout": 0.3,
                                       "weights_choice": random_weights})
        notebook_model = namespace["model"]
        library_model = builders.transfer_model("mobilenetv2", size, classes, random_weights, dropout=0.3)
        assert [layer.name for layer in notebook_model.layers] == [layer.name for layer in library_model.layers]
        outer = [[entry for entry in layer_signature(built) if entry[0] != "Functional"]
                 for built in (notebook_model, library_model)]  # the nested backbone's config names its input
        assert outer[0] == outer[1]
        backbones = [built.get_layer("backbone") for built in (notebook_model, library_model)]
        assert layer_signature(backbones[0]) == layer_signature(backbones[1])
        assert notebook_model.count_params() == library_model.count_params()
        assert not notebook_model.get_layer("backbone").trainable and not library_model.get_layer("backbone").trainable


def test_notebook_05_unfreeze_cell_is_the_library_unfreeze_top():
    """Same layers trainable for any ``fine_tune_layers``, also when the cell is rerun with another value."""
    from bclib.models.weights import WeightsChoice

    source = cell_defining("05_mobilenetv2_transfer.ipynb", "backbone.trainable = True")
    random_weights = WeightsChoice(requested=None, used="random", path=None)
    notebook_model = builders.transfer_model("mobilenetv2", 32, 2, random_weights)
    library_model = builders.transfer_model("mobilenetv2", 32, 2, random_weights)
    namespace = {"model": notebook_model, "backbone": notebook_model.get_layer("backbone"), "layers": keras.layers}
    for fine_tune_layers in (30, 10, 0, 60):
        _run_cell(source, {**namespace, "fine_tune_layers": fine_tune_layers})
        count = builders.unfreeze_top(library_model, fine_tune_layers)
        flags = [layer.trainable for layer in notebook_model.get_layer("backbone").layers]
        assert flags == [layer.trainable for layer in library_model.get_layer("backbone").layers]
        assert sum(flag and bool(layer.weights) for flag, layer in
                   zip(flags, notebook_model.get_layer("backbone").layers)) == count
        assert len(notebook_model.trainable_weights) == len(library_model.trainable_weights)
