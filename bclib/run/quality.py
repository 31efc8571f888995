"""Executed notebooks: finished or not, their HTML export, and what they must not show a student
(start-up noise, stray reprs, long decimals, results without a conclusion).

``bclib run`` checks each notebook it executes and prints what it finds; the tests fail on it.
A code cell tagged ``result`` must be followed by a code cell whose output holds a ``Conclusion:``
(see :mod:`bclib.evaluation.conclusions`).
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat

#: Lines TensorFlow, absl and CUDA print at start-up (not warnings a student should act on).
STARTUP_NOISE = re.compile(r"absl::InitializeLog|cudart_stub|cuda_platform|cuInit|oneDNN custom operations|"
                           r"cpu_feature_guard|^[IWE]\d{4} \d\d:\d\d:\d\d", re.MULTILINE)
TABLE_CELL = re.compile(r"<td[^>]*>\s*(-?\d+\.\d+)\s*</td>")
MAX_DECIMALS = 3
CONCLUSION = "Conclusion:"
WIDGET_STATE_KEY = "application/vnd.jupyter.widget-state+json"


def _texts(output: dict) -> list[str]:
    if output.get("output_type") == "stream":
        return [output.get("text", "")]
    data = output.get("data", {})
    return [str(value) if not isinstance(value, list) else "".join(value)
            for key, value in data.items() if key.startswith("text/")]


def check_notebook(path: str | Path, needs_exercises: bool = True) -> list[str]:
    """Problems a student would see in the executed notebook at ``path`` (empty when clean)."""
    notebook = nbformat.read(Path(path), as_version=4)
    name = Path(path).name
    problems: list[str] = []
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for number, cell in enumerate(code_cells):
        where = f"{name}, code cell {number + 1}"
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                problems.append(f"{where}: an error ({output.get('ename')})")
            if output.get("output_type") == "execute_result" and "PosixPath(" in str(output.get("data", {})):
                problems.append(f"{where}: a PosixPath(...) output")
            for text in _texts(output):
                if STARTUP_NOISE.search(text):
                    problems.append(f"{where}: TensorFlow start-up lines")
                long_numbers = [value for value in TABLE_CELL.findall(text)
                                if len(value.split(".")[1]) > MAX_DECIMALS]
                if long_numbers:
                    problems.append(f"{where}: a table with more than {MAX_DECIMALS} decimals ({long_numbers[0]})")
        if "result" in cell.metadata.get("tags", []):
            following = code_cells[number + 1] if number + 1 < len(code_cells) else None
            outputs = [] if following is None else following.get("outputs", [])
            if not any(CONCLUSION in text for output in outputs for text in _texts(output)):
                problems.append(f"{where}: a result without a conclusion in the next code cell")
    markdown = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    if needs_exercises and "## Exercises" not in markdown:
        problems.append(f"{name}: no '## Exercises' section")
    return sorted(set(problems), key=problems.index)


def notebook_completed(path: Path) -> bool:
    """True when ``path`` is an executed notebook that papermill finished without an error."""
    if not path.is_file():
        return False
    try:
        notebook = nbformat.read(path, as_version=4)
    except Exception:  # noqa: BLE001 - a truncated or corrupt file is simply not complete
        return False
    meta = notebook.metadata.get("papermill", {})
    if meta.get("exception"):
        return False
    return all(cell.metadata.get("papermill", {}).get("status", "completed") == "completed"
               for cell in notebook.cells if cell.cell_type == "code")


def export_html(notebook_path: Path) -> Path:
    """Write ``<name>.html`` beside an executed notebook (nbconvert's HTML exporter)."""
    from nbconvert import HTMLExporter

    notebook = nbformat.read(notebook_path, as_version=4)
    widgets = notebook.metadata.get("widgets")
    if widgets is not None and WIDGET_STATE_KEY not in widgets:
        # nbclient leaves ``"widgets": {}`` after widget progress bars; nbconvert's template
        # then fails with a KeyError. Without saved state there is nothing to render anyway.
        del notebook.metadata["widgets"]
    body, _ = HTMLExporter().from_notebook_node(notebook)
    html_path = notebook_path.with_suffix(".html")
    html_path.write_text(body, encoding="utf-8")
    return html_path
