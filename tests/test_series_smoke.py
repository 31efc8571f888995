"""Smoke runs of the whole series through `bclib run --profile smoke` (papermill, all 8 notebooks).

On synthetic IDC data always; on the real IDC subset, BreastMNIST and a multi-class class-folder
tree when the shared data is present (the folder tree is generated here). The real IDC run includes
the worked solutions (the synthetic run does when no real IDC data is at hand), and every executed notebook is read the way a student would see
it (:func:`bclib.run.quality.check_notebook`): no start-up noise, no stray reprs, three decimals in
tables, a conclusion after every result, an exercises section.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bclib.run import runner
from bclib.run.cli import main
from bclib.run.quality import check_notebook
from bclib.run.reports import run_dir as reports_run_dir
from conftest import shared_data_dir

pytestmark = pytest.mark.slow

TRAINING_NOTEBOOKS = ("02_baseline_cnn", "03_class_weighting", "04_augmentation", "05_mobilenetv2_transfer",
                      "06_resnet50_transfer")


def real_idc_dir() -> Path | None:
    shared = shared_data_dir()
    return shared / "idc" if shared is not None and (shared / "idc").is_dir() else None


def _check_run(run_dir, dataset_name: str, solutions: bool = False) -> dict:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    notebooks = sorted(path.stem for path in run_dir.glob("[0-9][0-9]_*.ipynb"))
    assert notebooks == [path.stem for path in runner.discover_notebooks()]
    for name in notebooks:
        assert (run_dir / f"{name}.html").stat().st_size > 1000
        assert check_notebook(run_dir / f"{name}.ipynb", needs_exercises=name < "08") == []
    executed_solutions = sorted((run_dir / "solutions").glob("*_solutions.ipynb"))
    assert len(executed_solutions) == (7 if solutions else 0)
    for path in executed_solutions:
        assert check_notebook(path, needs_exercises=False) == []
    for name in TRAINING_NOTEBOOKS:
        folder = run_dir / name
        for file_name in ("model.keras", "model_card.json", "history.csv", "metrics.json"):
            assert (folder / file_name).exists(), f"{name}/{file_name}"
        assert list(folder.glob("*.png")), f"{name} saved no figure"
        card = json.loads((folder / "model_card.json").read_text())
        assert card["dataset"]["name"] == dataset_name
        assert card["threshold"]["chosen_on"] == "val"
        assert card["metrics"]["test"]["n_images"] > 0
    assert list((run_dir / "01_explore_dataset").glob("*.png"))
    assert (run_dir / "07_evaluation" / "evaluation.json").exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = summary["rows"] if isinstance(summary, dict) and "rows" in summary else summary
    assert len(rows) == len(TRAINING_NOTEBOOKS)
    markdown = (run_dir / "summary.md").read_text()
    assert "not for diagnosis" in markdown.lower()
    assert "RANDOM WEIGHTS" in markdown.upper()  # no ImageNet weights offline: the summary says so
    return manifest


def test_smoke_series_on_synthetic_data(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("BCLIB_DATA", raising=False)
    monkeypatch.delenv("BCLIB_DATA_IDC", raising=False)
    solutions = real_idc_dir() is None  # with the real IDC subset at hand, its run checks the solutions
    options = [] if solutions else ["--no-solutions"]
    assert main(["run", "--profile", "smoke", "--run-id", "smoke-synthetic", "--no-progress", *options]) == 0
    run_dir = reports_run_dir("smoke-synthetic")
    manifest = _check_run(run_dir, "idc", solutions=solutions)
    patch = next(iter(sorted(Path(manifest["data_dir"]).rglob("*.png"))))
    for name in TRAINING_NOTEBOOKS:  # every model a notebook wrote loads in `bclib predict`
        capsys.readouterr()
        assert main(["predict", "--model", str(run_dir / name / "model.keras"), str(patch), "--json"]) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
        assert len(lines) == 1 and lines[0]["decision"] in ("IDC", "non-IDC"), (name, lines)
    assert manifest["synthetic"] is True
    assert "SYNTHETIC DEMO DATA" in (run_dir / "summary.md").read_text()
    baseline = json.loads((run_dir / "02_baseline_cnn" / "model_card.json").read_text())
    assert baseline["metrics"]["val"]["roc_auc"] > 0.5  # the synthetic classes differ visibly


@pytest.mark.realdata
def test_smoke_series_on_real_idc_subset(real_idc):
    result = runner.run_series(profile="smoke", dataset="idc", data=real_idc, run_id="smoke-idc", progress=False)
    manifest = _check_run(result.run_dir, "idc", solutions=True)
    assert manifest["synthetic"] is False
    card = json.loads((result.run_dir / "02_baseline_cnn" / "model_card.json").read_text())
    assert card["dataset"]["n_images"] <= 500  # the smoke profile limits the real data to a few hundred patches


@pytest.mark.realdata
def test_smoke_series_on_breastmnist_with_official_split(shared_data):
    result = runner.run_series(profile="smoke", dataset="breastmnist", data=shared_data / "breastmnist",
                               run_id="smoke-breastmnist", solutions=False, progress=False)
    _check_run(result.run_dir, "breastmnist")
    card = json.loads((result.run_dir / "02_baseline_cnn" / "model_card.json").read_text())
    assert card["class_names"] == ["malignant", "normal/benign"]
    assert card["positive_label"] == 0
    assert card["split"]["method"] == "official"
    assert card["metrics"]["test"]["positive_class"] == "malignant"


def _write_three_class_tree(root) -> None:
    rng = np.random.default_rng(0)
    colours = {"benign": (200, 120, 170), "malignant": (110, 50, 130), "normal": (235, 200, 215)}
    rows = ["path,patient_id"]
    for class_name, colour in colours.items():
        (root / class_name).mkdir(parents=True)
        for number in range(60):
            noise = rng.integers(-25, 25, size=(40, 40, 3))
            image = np.clip(np.array(colour)[None, None, :] + noise, 0, 255).astype(np.uint8)
            name = f"{class_name}_{number:03d}.png"
            Image.fromarray(image).save(root / class_name / name)
            rows.append(f"{class_name}/{name},p{number % 30:02d}{class_name[0]}")
    (root / "patients.csv").write_text("\n".join(rows) + "\n")


def test_smoke_series_on_multiclass_folder_dataset(tmp_path):
    root = tmp_path / "three_classes"
    _write_three_class_tree(root)
    result = runner.run_series(profile="smoke", dataset="folder", data=root, run_id="smoke-folder", solutions=False,
                               progress=False)
    run_dir = result.run_dir
    card = json.loads((run_dir / "02_baseline_cnn" / "model_card.json").read_text())
    assert card["class_names"] == ["benign", "malignant", "normal"]
    assert card["threshold"]["method"] == "argmax"
    assert card["metrics"]["test"]["roc_auc"] == card["metrics"]["test"]["roc_auc_macro"]
    assert 0.0 <= card["metrics"]["test"]["roc_auc"] <= 1.0
    assert (run_dir / "08_predict_widget.html").exists()
