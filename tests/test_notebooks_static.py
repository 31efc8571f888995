"""The notebooks as stored: no outputs, one plain `parameters` cell after the imports, no logic."""
from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_the_eight_notebooks_exist():
    prefixes = [path.name[:2] for path in NOTEBOOKS]
    assert prefixes == [f"{n:02d}" for n in range(1, 9)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs_and_with_python3_kernel(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} has stored outputs"
            assert cell.execution_count is None
    assert not notebook.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_parameters_cell_of_plain_literals_right_after_imports(path):
    notebook = nbformat.read(path, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    tagged = [i for i, cell in enumerate(code_cells) if "parameters" in cell.metadata.get("tags", [])]
    assert tagged == [1], f"{path.name}: the parameters cell must be the second code cell"
    imports = ast.parse("\n".join(line for line in code_cells[0].source.splitlines() if not line.startswith("%")))
    assert all(isinstance(node, (ast.Import, ast.ImportFrom)) for node in imports.body)
    tree = ast.parse(code_cells[1].source)
    names = []
    for node in tree.body:
        assert isinstance(node, ast.Assign), f"{path.name}: only assignments in the parameters cell"
        ast.literal_eval(node.value)  # plain literals only
        names.append(node.targets[0].id)
    assert "run_id" in names and "dataset" in names and "profile" in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_cells_call_bclib_and_define_no_logic(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.startswith("%"))
        tree = ast.parse(source)
        for node in ast.walk(tree):
            assert not isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Lambda)), f"{path.name} defines code"
            assert not isinstance(node, ast.While)
    text = "".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    assert "not for diagnosis" in text.lower()
