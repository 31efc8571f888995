"""Run folders, figure saving and the run summary built from fake model cards."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from bclib import paths  # noqa: E402
from bclib.run import reports  # noqa: E402


def _card(notebook: str, model: str, *, used: str = "imagenet", requested: str | None = "imagenet",
          synthetic: bool = False, splits=("val", "test"), ci: bool = False, auc: float = 0.85) -> dict:
    metrics = {}
    for offset, split in enumerate(splits):
        values = {"roc_auc": auc - 0.05 * offset, "pr_auc": 0.7, "balanced_accuracy": 0.75, "sensitivity": 0.9,
                  "specificity": 0.6, "f1": 0.66, "threshold": 0.3, "n_images": 100}
        if ci:
            values["ci"] = {"roc_auc": [auc - 0.1, auc + 0.05], "f1": [0.6, 0.7]}
        metrics[split] = values
    return {
        "model_name": model, "notebook": notebook, "class_names": ["non-IDC", "IDC"], "input_size": 50,
        "threshold": {"value": 0.35, "method": "youden", "chosen_on": "val"},
        "weights": {"requested": requested, "used": used},
        "dataset": {"name": "idc", "synthetic": synthetic}, "metrics": metrics,
    }


def _write_card(run: Path, folder: str, card: dict) -> None:
    (run / folder).mkdir(parents=True, exist_ok=True)
    (run / folder / "model_card.json").write_text(json.dumps(card))


def test_run_ids_are_unique_and_folders_never_overwritten():
    ids = {reports.new_run_id() for _ in range(50)}
    assert len(ids) == 50 and all(i.startswith("run-") for i in ids)
    assert reports.new_run_id("sweep").startswith("sweep-")
    run_id = reports.new_run_id()
    folder = reports.create_run_dir(run_id)
    assert folder == paths.reports_dir() / run_id and folder.is_dir()
    (folder / "keep.txt").write_text("x")
    with pytest.raises(reports.RunExistsError, match="--resume"):
        reports.create_run_dir(run_id)
    assert (folder / "keep.txt").read_text() == "x"
    for bad in ("", "../escape", "a/b", "two words", ".hidden"):
        with pytest.raises(ValueError):
            reports.run_dir(bad)


def test_save_fig_sanitises_name(tmp_path):
    figure, axis = plt.subplots(figsize=(2, 2))
    axis.plot([0, 1], [0, 1])
    path = reports.save_fig(figure, "ROC curve / test set.png", tmp_path / "nb")
    again = reports.save_fig(figure, "ROC curve / test set", tmp_path / "nb")
    plt.close(figure)
    assert path == again == tmp_path / "nb" / "ROC_curve_test_set.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in (tmp_path / "nb").iterdir()] == ["ROC_curve_test_set.png"]
    with pytest.raises(ValueError):
        reports.save_fig(figure, "///", tmp_path)


def test_summary_rows_columns_and_fallback_to_validation(tmp_path):
    run = tmp_path / "run"
    _write_card(run, "02_baseline_cnn", _card("02_baseline_cnn", "baseline_cnn", used="random", requested=None))
    _write_card(run, "04_transfer/mobilenetv2", _card("04_transfer", "mobilenetv2", ci=True, auc=0.9))
    _write_card(run, "05_val_only", _card("05_val_only", "resnet50", splits=("val",)))
    (run / "06_broken").mkdir()
    (run / "06_broken" / "model_card.json").write_text("{not json")

    manifest = {"notebooks": {"02_baseline_cnn": {"seconds": 7.5}, "04_transfer": {"seconds": 30.0}}}
    with pytest.warns(UserWarning, match="06_broken"):
        frame = reports.build_summary(run, manifest)
    assert len(frame) == 3
    assert list(frame["model"]) == ["baseline_cnn", "mobilenetv2", "resnet50"]
    for column in ("notebook", "model", "roc_auc", "pr_auc", "balanced_accuracy", "sensitivity", "specificity",
                   "f1", "threshold", "weights", "notebook_seconds", "dataset", "synthetic", "evaluated_on",
                   "roc_auc_ci_low", "roc_auc_ci_high", "f1_ci_low", "f1_ci_high"):
        assert column in frame.columns
    assert list(frame["evaluated_on"]) == ["test", "test", "val"]
    by_model = frame.set_index("model")
    assert by_model.loc["mobilenetv2", "roc_auc"] == pytest.approx(0.85)  # the test value, not val's 0.9
    assert by_model.loc["resnet50", "roc_auc"] == pytest.approx(0.85)  # val only
    assert by_model.loc["mobilenetv2", "roc_auc_ci_low"] < by_model.loc["mobilenetv2", "roc_auc_ci_high"]
    assert frame["roc_auc_ci_low"].isna().sum() == 2
    assert set(frame["threshold"]) == {0.35}
    assert list(frame["weights"]) == ["trained from scratch", "ImageNet weights", "ImageNet weights"]
    assert list(frame["notebook_seconds"].fillna(-1)) == [7.5, 30.0, -1]  # 05 is not in the manifest
    assert not frame["synthetic"].any()


def test_summary_of_empty_run_has_the_columns(tmp_path):
    frame = reports.build_summary(tmp_path)
    assert frame.empty and {"notebook", "model", "roc_auc", "evaluated_on"} <= set(frame.columns)
    markdown, _ = reports.write_summary(tmp_path)
    assert "No model cards" in markdown.read_text(encoding="utf-8")


def test_write_summary_banners_links_and_json(tmp_path):
    run = tmp_path / "run"
    _write_card(run, "02_baseline_cnn", _card("02_baseline_cnn", "baseline_cnn", used="random", requested=None))
    _write_card(run, "04_transfer", _card("04_transfer", "mobilenetv2", used="random", synthetic=True, ci=True))
    (run / "02_baseline_cnn.html").write_text("<html></html>")
    figure, axis = plt.subplots(figsize=(1, 1))
    reports.save_fig(figure, "loss curve", run / "02_baseline_cnn")
    plt.close(figure)
    manifest = {"run_id": "run", "profile": "smoke", "dataset": "idc", "status": "completed",
                "notebooks": {"02_baseline_cnn": {"status": "completed", "seconds": 3.2},
                              "04_transfer": {"status": "failed", "seconds": 1.0}}}

    markdown_path, json_path = reports.write_summary(run, manifest)
    text = markdown_path.read_text(encoding="utf-8")
    assert "For education and research, not for diagnosis." in text
    assert "SYNTHETIC DEMO DATA" in text
    assert "RANDOM WEIGHTS" in text and "04_transfer/mobilenetv2" in text
    assert "02_baseline_cnn/baseline_cnn" not in text  # trained from scratch on purpose: no banner
    assert "[02_baseline_cnn.html](02_baseline_cnn.html)" in text and "04_transfer.html" not in text
    assert "(02_baseline_cnn/loss_curve.png)" in text and "### 04_transfer" not in text  # no figure there
    assert "| failed |" in text
    table_lines = [line for line in text.splitlines() if line.startswith("| 0")]
    assert len(table_lines) == 2 + 2  # two model rows, two notebook rows
    baseline, transfer = table_lines[:2]
    assert "| trained from scratch | 3.2 |" in baseline and "| random weights (ImageNet weights were missing) | 1.0 |" in transfer
    assert "notebook_seconds" in text and "run time of the model's whole notebook" in text

    payload = json.loads(json_path.read_text())
    assert payload["synthetic"] is True and payload["random_weight_models"] == ["04_transfer/mobilenetv2"]
    assert payload["manifest"]["profile"] == "smoke" and len(payload["rows"]) == 2
    assert {row["model"] for row in payload["rows"]} == {"baseline_cnn", "mobilenetv2"}


def test_summary_without_manifest_is_synthetic_only_from_cards(tmp_path):
    _write_card(tmp_path, "02_a", _card("02_a", "baseline_cnn", requested=None, used="random"))
    markdown, json_path = reports.write_summary(tmp_path)
    text = markdown.read_text(encoding="utf-8")
    assert "SYNTHETIC" not in text and "RANDOM WEIGHTS" not in text
    assert json.loads(json_path.read_text())["synthetic"] is False
    with pytest.raises(FileNotFoundError):
        reports.write_summary(tmp_path / "missing")


def test_markdown_table_formats_values():
    import pandas as pd

    table = reports.markdown_table(pd.DataFrame({"a": [0.123456, None], "b": ["x|y", True]}))
    lines = table.splitlines()
    assert lines[0] == "| a | b |" and lines[2] == "| 0.123 | x\\|y |" and lines[3] == "| – | yes |"
