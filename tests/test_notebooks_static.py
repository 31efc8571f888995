"""The notebooks as stored: the shape docs/NOTEBOOKS.md describes, checked cell by cell."""
from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path
from unittest import mock

import nbformat
import pytest

from bclib import DISCLAIMER, profiles

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOLUTIONS = sorted((ROOT / "notebooks" / "solutions").glob("[0-9][0-9]_*.ipynb"))
REPOSITORY = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]


def _code(path: Path) -> list:
    return [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]


def _markdown(path: Path) -> str:
    return "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "markdown")


def _python(source: str) -> ast.Module:
    return ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith("%")))


def test_the_eight_notebooks_and_a_solution_for_each_lesson_exist():
    assert [path.name[:2] for path in NOTEBOOKS] == [f"{n:02d}" for n in range(1, 9)]
    assert [path.name for path in SOLUTIONS] == [f"{path.stem}_solutions.ipynb" for path in NOTEBOOKS[:7]]


@pytest.mark.parametrize("path", NOTEBOOKS + SOLUTIONS, ids=lambda p: p.stem)
def test_stored_without_outputs_and_with_python3_kernel(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has stored outputs"
    assert not notebook.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json")


@pytest.mark.parametrize("path", NOTEBOOKS + SOLUTIONS, ids=lambda p: p.stem)
def test_install_then_imports_then_plain_parameters(path):
    install, imports, parameters = _code(path)[:3]
    assert REPOSITORY in install.source and 'find_spec("bclib") is None' in install.source
    statements = _python(imports.source).body
    assert all(isinstance(node, (ast.Import, ast.ImportFrom)) for node in statements)
    assert isinstance(statements[0], ast.Import) and statements[0].names[0].name == "bclib", \
        f"{path.name}: `import bclib` must come first (it silences TensorFlow's start-up lines)"
    assert "parameters" in parameters.metadata.get("tags", [])
    assert [cell for cell in _code(path) if "parameters" in cell.metadata.get("tags", [])] == [parameters]
    names = {}
    for node in ast.parse(parameters.source).body:
        assert isinstance(node, ast.Assign), f"{path.name}: only assignments in the parameters cell"
        names[node.targets[0].id] = ast.literal_eval(node.value)  # plain literals only
    assert {"run_id", "dataset", "profile", "data_dir"} <= set(names)


@pytest.mark.parametrize("path", NOTEBOOKS + SOLUTIONS, ids=lambda p: p.stem)
def test_parameter_values_are_the_quick_profile_for_idc(path):
    """The literals a student sees are what `bclib run --profile quick` would pass: comments stay true."""
    parameters = _code(path)[2]
    values = {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(parameters.source).body}
    expected = profiles.notebook_values("quick", "idc", path.stem)
    shared = {key for key in values if key in expected and key not in ("dataset", "profile", "split")}
    assert {key: values[key] for key in shared} == {key: expected[key] for key in shared}
    assert values["profile"] == "quick" and values["dataset"] == "idc"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_course_scaffolding(path):
    text = _markdown(path)
    title = nbformat.read(path, as_version=4).cells[0].source
    assert title.startswith(f"# {path.name[:2]} · ")
    assert f"colab.research.google.com/github/{REPOSITORY.removeprefix('https://github.com/')}/blob/main/notebooks/{path.name}" in title
    assert "mybinder.org" in title and "You will learn" in title and "Run time" in title
    assert text.lower().count(DISCLAIMER.lower()) == 1, f"{path.name}: the disclaimer once, no more"
    assert "## Recap" in text
    if path.name[:2] < "08":
        assert "**Next:**" in text
        assert "## Exercises" in text
        assert f"solutions/{path.stem}_solutions.ipynb" in text


@pytest.mark.parametrize("path", NOTEBOOKS + SOLUTIONS, ids=lambda p: p.stem)
def test_no_params_dictionary_and_no_stale_numbers_in_parameters(path):
    for cell in _code(path):
        assert "session.params" not in cell.source and "params[" not in cell.source, \
            f"{path.name}: notebooks use their parameters directly"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_result_is_followed_by_a_conclusion(path):
    cells = _code(path)
    for number, cell in enumerate(cells):
        trains = re.search(r"\.fit\(|experiment\.finish\(", cell.source)
        if trains:
            assert "result" in cell.metadata.get("tags", []), f"{path.name}: tag the cell `{cell.source[:60]}` result"
        if "result" in cell.metadata.get("tags", []):
            following = cells[number + 1].source if number + 1 < len(cells) else ""
            assert "conclusion" in following or "conclude(" in following, f"{path.name}: no conclusion after `{cell.source[:60]}`"


def test_the_install_cell_installs_only_when_bclib_is_missing():
    source = _code(ROOT / "notebooks" / "02_baseline_cnn.ipynb")[0].source
    with mock.patch("subprocess.run") as run, mock.patch("importlib.util.find_spec", return_value=None):
        exec(compile(source, "install-cell", "exec"), {})
    command = run.call_args.args[0]
    assert command[1:4] == ["-m", "pip", "install"] and f"git+{REPOSITORY}" in command
    with mock.patch("subprocess.run") as run:
        exec(compile(source, "install-cell", "exec"), {})  # bclib is installed here
    run.assert_not_called()
    assert all(_code(path)[0].source == source for path in NOTEBOOKS + SOLUTIONS)
