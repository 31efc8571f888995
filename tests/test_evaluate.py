"""bclib.evaluation.evaluate and `bclib evaluate`: saved model + card, synthetic IDC tree, honest errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

keras = pytest.importorskip("keras")

from bclib.evaluation import evaluate# noqa: E402
from bclib.evaluation import modelcard
from bclib.data.datasets import DatasetError, idc  # noqa: E402
from bclib.data.imageio import fit_to_square  # noqa: E402


def _tiny_model(input_size: int = 50) -> keras.Model:
    """Untrained but deterministic: P(IDC) from the mean colour (no learning needed for the tests)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((input_size, input_size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs, name="tiny")


def _card(split_hash: str | None = None, seed: int = 0, **extra) -> dict:
    card = {
        "model_name": "baseline_cnn",
        "class_names": ["non-IDC", "IDC"],
        "positive_label": 1,
        "input_size": 32,
        "pack_size": 50,
        "dataset": {"name": "idc", "root": "/nowhere", "synthetic": True},
        "split": {"method": "patient", "seed": seed, "patients_hash": split_hash},
        "threshold": {"value": 0.5, "method": "youden", "chosen_on": "val"},
        "weights": {"requested": None, "used": "random", "note": "trained from scratch"},
    }
    card.update(extra)
    return card


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, synthetic_idc) -> Path:
    from bclib.data.splits import make_split

    folder = tmp_path_factory.mktemp("model")
    _tiny_model(32).save(folder / "model.keras")
    split = make_split(idc.scan(synthetic_idc), "patient", seed=0)
    modelcard.write_card(_card(split.patients_hash()), folder)
    return folder / "model.keras"


def _one_class_tree(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for patient in ("901", "902"):
        folder = root / patient / "0"
        folder.mkdir(parents=True)
        for i in range(3):
            patch = rng.integers(0, 255, (50, 50, 3), dtype=np.uint8)
            Image.fromarray(patch).save(folder / f"{patient}_idx5_x{1 + 50 * i}_y1_class0.png")
    return root


def test_predict_index_keeps_row_order_and_resizes(synthetic_idc):
    index = idc.scan(synthetic_idc)
    subset = index.subset(np.arange(0, 40, 3))
    model = _tiny_model(32)
    probs = evaluate.predict_index(model, subset, image_size=50, batch_size=4, progress=False)
    assert probs.shape == (len(subset),)
    import tensorflow as tf

    images = np.stack([fit_to_square(subset.load_image(i), 50) for i in range(len(subset))]).astype("float32")
    expected = model(tf.image.resize(images, (32, 32), antialias=True), training=False).numpy()[:, 0]
    assert np.allclose(probs, expected, atol=1e-5)
    reversed_probs = evaluate.predict_index(model, subset.subset(np.arange(len(subset))[::-1]), 50,
                                            batch_size=5, progress=False)
    assert np.allclose(reversed_probs[::-1], probs, atol=1e-5)


def test_evaluate_test_split(saved_model, synthetic_idc):
    from bclib.data.splits import make_split

    result = evaluate.evaluate_model(saved_model, "idc", synthetic_idc, split="test", n_boot=200)
    index = idc.scan(synthetic_idc)
    test_patients = make_split(index, "patient", seed=0).patients("test")
    assert result["n_patients"] == len(test_patients)
    assert result["n_images"] == int(index.frame["patient_id"].isin(test_patients).sum())
    assert result["split_matches_card"] is True and result["threshold"] == 0.5
    for name in ("roc_auc", "sensitivity", "specificity", "brier"):
        assert result[name] is None or 0 <= result[name] <= 1
    for name, interval in result["ci"].items():
        if interval is not None:
            assert interval[0] <= interval[1], name
    assert any("synthetic" in note for note in result["notes"])
    assert sum(map(sum, result["confusion_matrix"])) == result["n_images"]


def test_other_seed_is_flagged(saved_model, synthetic_idc):
    result = evaluate.evaluate_model(saved_model, "idc", synthetic_idc, split="val", seed=5, n_boot=0)
    assert result["split_matches_card"] is False
    assert any("differ from those recorded" in note for note in result["notes"])


def test_all_images_of_an_unseen_folder(saved_model, synthetic_idc):
    result = evaluate.evaluate_model(saved_model, "idc", synthetic_idc, split="all", n_boot=50)
    assert result["n_images"] == len(idc.scan(synthetic_idc))
    assert result["split"] == "all" and result["split_matches_card"] is None


def test_one_class_folder_reports_undefined_auc(saved_model, tmp_path):
    root = _one_class_tree(tmp_path / "one_class")
    result = evaluate.evaluate_model(saved_model, "idc", root, split="all", n_boot=50)
    assert result["roc_auc"] is None and result["sensitivity"] is None
    assert result["ci"]["roc_auc"] is None
    assert any("undefined" in note for note in result["notes"])
    assert "n/a" in evaluate.format_table(result)


def test_clear_errors(saved_model, synthetic_idc, tmp_path):
    with pytest.raises(modelcard.ModelLoadError, match="does not exist"):
        evaluate.evaluate_model(tmp_path / "missing.keras", "idc", synthetic_idc)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    _tiny_model().save(lonely / "model.keras")
    with pytest.raises(modelcard.ModelLoadError, match="model_card.json"):
        evaluate.evaluate_model(lonely / "model.keras", "idc", synthetic_idc)
    with pytest.raises(ValueError, match="unknown split"):
        evaluate.evaluate_model(saved_model, "idc", synthetic_idc, split="train")
    with pytest.raises((DatasetError, FileNotFoundError)):
        evaluate.evaluate_model(saved_model, "idc", tmp_path / "no_data_here")


def test_a_card_whose_positive_label_contradicts_its_classes_is_refused(saved_model, synthetic_idc, tmp_path):
    import shutil

    folder = tmp_path / "flipped"
    folder.mkdir()
    shutil.copy(saved_model, folder / "model.keras")
    card = json.loads((saved_model.parent / modelcard.CARD_FILE).read_text())
    (folder / modelcard.CARD_FILE).write_text(json.dumps({**card, "positive_label": 0}))
    with pytest.raises(modelcard.ModelLoadError, match="field 'positive_label' must be 1 \\('IDC', the disease class"):
        evaluate.evaluate_model(folder / "model.keras", "idc", synthetic_idc, n_boot=0)


def test_damaged_data_and_model_files_say_so(saved_model, tmp_path):
    from test_breastmnist import damaged_copy, write_npz

    npz = damaged_copy(write_npz(tmp_path / "breastmnist" / "breastmnist.npz"), "truncated")
    with pytest.raises(DatasetError, match="damaged or incomplete.*download it again"):
        evaluate.evaluate_model(saved_model, "breastmnist", npz.parent, n_boot=0)
    folder = tmp_path / "cut"
    folder.mkdir()
    data = saved_model.read_bytes()
    (folder / "model.keras").write_bytes(data[: len(data) // 2])
    (folder / modelcard.CARD_FILE).write_bytes((saved_model.parent / modelcard.CARD_FILE).read_bytes())
    with pytest.raises(modelcard.ModelLoadError, match="exists but is damaged") as caught:
        evaluate.evaluate_model(folder / "model.keras", "idc", tmp_path, n_boot=0)
    assert "not found" not in str(caught.value).lower()


def test_cli_table_json_and_errors(saved_model, synthetic_idc, capsys):
    from bclib.run.cli import main

    code = main(["evaluate", "--model", str(saved_model), "--data", str(synthetic_idc), "--n-boot", "50"])
    out = capsys.readouterr().out
    assert code == 0 and "roc_auc" in out and "95% CI" in out and "not for diagnosis" in out
    code = main(["evaluate", "--model", str(saved_model), "--data", str(synthetic_idc), "--split", "all",
                 "--json", "--n-boot", "20"])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0 and payload["split"] == "all" and set(payload["ci"]) >= {"roc_auc", "f1"}
    code = main(["evaluate", "--model", str(saved_model.parent / "nope.keras"), "--data", str(synthetic_idc)])
    assert code == 2 and "does not exist" in capsys.readouterr().err


# ---------------------------------------------------------------------------- evaluation figures
def _scores(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.clip(0.3 * y + rng.uniform(0, 0.7, n), 0, 1)


def test_confusion_and_reliability_figures():
    import types

    import matplotlib.pyplot as plt

    from bclib.evaluation import calibration
    from bclib.evaluation import metrics
    from bclib.plots import evaluation as figures

    y, prob = _scores()
    result = metrics.binary_metrics(y, prob, 0.5, class_names=["non-IDC", "IDC"])
    fig = figures.confusion_matrix(result["confusion_matrix"], ["non-IDC", "IDC"], positive_label=1)
    labels = [tick.get_text() for tick in fig.axes[0].get_xticklabels()]
    assert len(fig.axes) == 1 and labels == ["non-IDC", "IDC (positive)"]
    fig = figures.confusion_matrix([[1, 2], [3, 4]], ["malignant", "benign"], positive_label=0)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["benign", "malignant (positive)"]
    run = types.SimpleNamespace(names=["cnn"], truth=lambda split: y, scores=lambda name, split: prob,
                                temperature=lambda name: calibration.fit_temperature(y, prob))
    fig = figures.reliability_grid(run)
    assert len(fig.axes) == 2 and len(fig.axes[0].get_lines()) == 3  # the diagonal, before and after scaling
    assert fig.axes[0].get_title() == "cnn: reliability on test"
    plt.close("all")


def test_patients_figure_labels_the_worst_patients():
    import types

    import matplotlib.pyplot as plt

    from bclib.evaluation import metrics
    from bclib.plots import evaluation as figures

    y, prob = _scores()
    table = metrics.patient_level_table(y, prob, np.arange(200) % 10, threshold=0.5)
    fig = figures.patients(types.SimpleNamespace(patient_table=lambda name: table), "cnn")
    assert len(fig.axes) == 1 and fig.axes[0].get_title().startswith("cnn: Patients (Pearson r = ")
    labelled = {text.get_text() for text in fig.axes[0].texts}
    assert labelled == set(metrics.worst_patients(table)["patient_id"].astype(str)) and len(labelled) == 5
    plt.close("all")


@pytest.fixture(scope="module")
def benchmark_tree(tmp_path_factory) -> Path:
    """Real benchmark patient ids (all official validation ones, some training, some unlisted), random patches."""
    from bclib.data.official_splits import IDC_OFFICIAL_SPLITS

    root = tmp_path_factory.mktemp("benchmark_idc")
    rng = np.random.default_rng(1)
    patients = list(IDC_OFFICIAL_SPLITS["val"]) + list(IDC_OFFICIAL_SPLITS["train"][:12]) + ["90001", "90002", "90003"]
    for number, patient in enumerate(patients):
        for i, label in enumerate((0, 0, 1) if number % 4 else (0, 1, 1)):
            folder = root / patient / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            patch = rng.integers(0, 255, (50, 50, 3), dtype=np.uint8) // (2 if label else 1)
            Image.fromarray(patch).save(folder / f"{patient}_idx5_x{1 + 50 * i}_y1_class{label}.png")
    return root


def test_official_validation_patients_are_honest_test_data_of_a_benchmark_card(benchmark_tree, tmp_path):
    from bclib.data.official_splits import IDC_OFFICIAL_SPLITS
    from bclib.data.splits import make_split

    index = idc.scan(benchmark_tree)
    folder = tmp_path / "benchmark_model"
    folder.mkdir()
    _tiny_model(32).save(folder / "model.keras")
    split = make_split(index, "benchmark", seed=0)
    card = _card(split.patients_hash(), threshold={"value": 0.5, "method": "sensitivity@0.90", "chosen_on": "val"},
                 benchmark_threshold={"value": 0.45, "method": "youden", "chosen_on": "val"})
    card["split"]["method"] = "benchmark"
    modelcard.write_card(card, folder)
    result = evaluate.evaluate_model(folder / "model.keras", "idc", benchmark_tree, split="official:val", n_boot=100)
    assert result["n_patients"] == len(IDC_OFFICIAL_SPLITS["val"]) and result["split_matches_card"] is True
    assert not any("may have been" in note or "validation numbers" in note for note in result["notes"])
    at = result["benchmark_threshold"]
    assert at["value"] == 0.45 and set(at) >= {"balanced_accuracy", "f1", "ci"}
    low, high = at["ci"]["balanced_accuracy"]
    assert low <= at["balanced_accuracy"] <= high
    assert "at the benchmark threshold 0.4500" in evaluate.format_table(result)

    card["split"]["method"] = "patient"   # trained on a random patient split: official val patients may be in it
    modelcard.write_card(card, folder)
    result = evaluate.evaluate_model(folder / "model.keras", "idc", benchmark_tree, split="official:val", n_boot=0)
    assert any("may have been in its training or validation data" in note for note in result["notes"])
    card["split"]["method"] = "official"   # the official split chose its threshold on these very patients
    modelcard.write_card(card, folder)
    result = evaluate.evaluate_model(folder / "model.keras", "idc", benchmark_tree, split="official:val", n_boot=0)
    assert any("validation numbers" in note for note in result["notes"])


def test_the_command_line_keeps_tensorflow_start_up_messages_out(saved_model, synthetic_idc):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "bclib.run.cli", "evaluate", "--model", str(saved_model),
                           "--data", str(synthetic_idc), "--n-boot", "0"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "roc_auc" in done.stdout
    for noise in ("absl::InitializeLog", "oneDNN", "cuda", "cpu_feature_guard"):
        assert noise not in done.stderr, done.stderr
