"""The executed-notebook checks find what a student should never see, and pass a clean notebook."""
from __future__ import annotations

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from bclib.run.quality import check_notebook


def _write(tmp_path, cells, name="02_x.ipynb"):
    path = tmp_path / name
    nbformat.write(new_notebook(cells=cells), path)
    return path


def _result_cell(outputs=()):
    cell = new_code_cell("history = model.fit(...)", outputs=list(outputs))
    cell.metadata["tags"] = ["result"]
    return cell


def _conclusion_cell():
    return new_code_cell("conclusions.training_conclusion(history, 8)", outputs=[
        new_output("display_data", data={"text/plain": "Conclusion: the best val_auc was 0.9", "text/html": "<div>…</div>"})])


def test_a_clean_notebook_has_no_problems(tmp_path):
    table = "<table><tr><td>0.913</td><td>12</td></tr></table>"
    cells = [new_markdown_cell("# 02\n## Exercises\n1. ..."),
             _result_cell([new_output("stream", name="stdout", text="Epoch 1/8\n")]),
             _conclusion_cell(),
             new_code_cell("table", outputs=[new_output("execute_result", data={"text/html": table, "text/plain": "t"},
                                                         execution_count=3)])]
    assert check_notebook(_write(tmp_path, cells)) == []


def test_each_kind_of_noise_is_reported(tmp_path):
    startup = "I0000 00:00:1796214425.978811    3685 cudart_stub.cc:31] Could not find cuda drivers\n"
    cells = [new_markdown_cell("# 02"),
             new_code_cell("import keras", outputs=[new_output("stream", name="stderr", text=startup)]),
             new_code_cell("session.out_dir", outputs=[new_output("execute_result", execution_count=2,
                                                                  data={"text/plain": "PosixPath('/tmp/x')"})]),
             new_code_cell("table", outputs=[new_output("execute_result", execution_count=3,
                                                        data={"text/html": "<td>0.912345</td>", "text/plain": "t"})]),
             _result_cell(),
             new_code_cell("print('done')", outputs=[new_output("stream", name="stdout", text="done\n")])]
    problems = "\n".join(check_notebook(_write(tmp_path, cells)))
    assert "TensorFlow start-up lines" in problems
    assert "PosixPath" in problems
    assert "more than 3 decimals (0.912345)" in problems
    assert "a result without a conclusion" in problems
    assert "no '## Exercises' section" in problems
    assert check_notebook(_write(tmp_path, cells[:1], "08_app.ipynb"), needs_exercises=False) == []
