"""Notebook 08: stored clean (parameters, no outputs, no widget state), takes `bclib app`'s choices, runs
under papermill."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import pytest

from bclib import DISCLAIMER
from bclib.app.widgets import TEXT_FALLBACK
from bclib.run.commands.app import CHOICE_VARIABLES
from bclib.run.quality import check_notebook
from test_predict import save_tiny_model, write_patch, write_tiny_idc

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "08_predict_widget.ipynb"
PARAMETERS = {
    "dataset": "idc", "data_dir": None, "run_id": None, "profile": "quick", "seed": 0,
    "model_path": None, "images": [], "threshold": None, "n_samples": 4,
}


def _parameters_of(source: str) -> dict:
    values: dict = {}
    exec(compile(source, "parameters", "exec"), {}, values)  # plain literals only
    return values


def test_notebook_is_stored_clean_with_its_parameters():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    assert not notebook.metadata.get("widgets")  # no saved widget state
    assert notebook.metadata["bclib"]["save_widget_state"] is False
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    install, imports, parameters, app_choice, *app_cells = code
    assert "pip" in install.source and "import bclib" in imports.source and "parameters" in parameters.metadata["tags"]
    assert _parameters_of(parameters.source) == PARAMETERS
    assert all(f'os.environ.get("{variable}")' in app_choice.source for variable in CHOICE_VARIABLES.values())
    assert all(len(cell.source.splitlines()) <= 3 for cell in app_cells)  # the app lives in bclib.app
    text = " ".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    assert DISCLAIMER.rstrip(".") in text and "nbstripout" in text and "Save Widget State" in text
    assert "`bclib app`" in text and "`make app`" in text


def test_bclib_app_choices_override_the_parameters_only_when_given(monkeypatch):
    """Voila cannot pass parameters: the cell after them takes `bclib app`'s run, model and data folder."""
    code = [cell for cell in nbformat.read(NOTEBOOK, as_version=4).cells if cell.cell_type == "code"]
    parameters, app_choice = code[2], code[3]
    for variable in CHOICE_VARIABLES.values():
        monkeypatch.delenv(variable, raising=False)
    values = {"os": os, **_parameters_of(parameters.source)}
    exec(compile(app_choice.source, "app-choice", "exec"), values)
    assert {key: values[key] for key in ("run_id", "model_path", "data_dir")} == {
        "run_id": None, "model_path": None, "data_dir": None}
    monkeypatch.setenv(CHOICE_VARIABLES["run"], "run-7")
    monkeypatch.setenv(CHOICE_VARIABLES["model"], "/models/model.keras")
    monkeypatch.setenv(CHOICE_VARIABLES["data"], "/data/idc")
    exec(compile(app_choice.source, "app-choice", "exec"), values)
    assert (values["run_id"], values["model_path"], values["data_dir"]) == ("run-7", "/models/model.keras", "/data/idc")


@pytest.mark.slow
def test_notebook_runs_under_papermill_and_shows_predictions(tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    reports = tmp_path / "reports"
    monkeypatch.setenv("BCLIB_REPORTS", str(reports))
    save_tiny_model(reports / "run-nb08" / "02_baseline_cnn")
    data = write_tiny_idc(tmp_path / "data")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    good = write_patch(tmp_path / "my patch ü.png")
    output = tmp_path / "08_out.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK), str(output), kernel_name="python3", progress_bar=False, cwd=str(tmp_path),
        parameters={"run_id": "run-nb08", "images": [str(good), str(bad)], "data_dir": str(data), "n_samples": 2},
    )
    executed = nbformat.read(output, as_version=4)
    html_outputs = "".join(
        out.get("data", {}).get("text/html", "") for cell in executed.cells if cell.cell_type == "code" for out in cell.outputs
    )
    probabilities = [float(v) for v in re.findall(r'data-probability="([0-9.]+)"', html_outputs)]
    assert len(probabilities) == 2 and abs(sum(probabilities) - 1.0) < 1e-4
    assert "my patch ü.png" in html_outputs and "broken.png" in html_outputs and "bclib-error" in html_outputs
    assert "trained from scratch" in html_outputs and "bclib-warning" not in html_outputs and DISCLAIMER in html_outputs
    outputs = [out for cell in executed.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "execute_result"]  # displayed, no Out[n] value
    plain = " ".join(out.get("data", {}).get("text/plain", "") for out in outputs)
    assert "Conclusion: tiny_cnn" in plain and "predicted 1 of 2 images" in plain  # the broken file is counted
    assert TEXT_FALLBACK in plain and "VBox(" not in plain
    assert check_notebook(output, needs_exercises=False) == []
    state = json.dumps(executed.metadata.get("widgets", {}))
    assert "base64" not in state and "data:image" not in state  # no image in saved widget state
