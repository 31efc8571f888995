"""``bclib run`` over tiny throw-away notebooks: run folder contents, no overwrite, failures,
resume, parameter injection, data resolution and the CLI (9 notebook executions in all)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from bclib import paths
from bclib.run import reports
from bclib.run import quality, runner
from bclib.run.cli import main as cli_main
from bclib.run.commands.run import parse_parameter
from bclib.run.lock import LOCK_FILE, RunLockedError
from bclib.run.parameters import parameter_defaults

FAIL_SWITCH = "BCLIB_TEST_NOTEBOOK_FAIL"


def _notebook(parameters: str, *cells: str) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells.append(nbformat.v4.new_code_cell("import json, os"))
    tagged = nbformat.v4.new_code_cell(parameters)
    tagged.metadata["tags"] = ["parameters"]
    notebook.cells.append(tagged)
    notebook.cells.extend(nbformat.v4.new_code_cell(source) for source in cells)
    return notebook


WRITE_PARAMS_AND_CARD = """
from bclib.run import reports
folder = reports.run_dir(run_id) / "01_train"
folder.mkdir()
(folder / "params.json").write_text(json.dumps(
    {"run_id": run_id, "profile": profile, "dataset": dataset, "data_dir": data_dir, "message": message,
     "prefix": __import__("sys").prefix}))
card = {"model_name": "tiny", "notebook": "01_train", "class_names": ["non-IDC", "IDC"],
        "input_size": 8, "threshold": {"value": 0.4}, "weights": {"requested": None, "used": "random"},
        "dataset": {"name": dataset, "synthetic": False}, "train_seconds": 0.1,
        "metrics": {"test": {"roc_auc": 0.8, "pr_auc": 0.7, "balanced_accuracy": 0.75,
                             "sensitivity": 0.7, "specificity": 0.8, "f1": 0.72}}}
(folder / "model_card.json").write_text(json.dumps(card))
print("trained")
"""


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A throw-away project root (``BCLIB_ROOT``) with three tiny numbered notebooks."""
    root = tmp_path / "project"
    folder = root / "notebooks"
    folder.mkdir(parents=True)
    nbformat.write(_notebook('run_id = None\nprofile = "quick"\ndataset = "idc"\ndata_dir = None\nmessage = "default"',
                             WRITE_PARAMS_AND_CARD), folder / "01_train.ipynb")
    nbformat.write(_notebook("run_id = None",
                             'open(os.path.join(os.environ["BCLIB_REPORTS"], run_id, "second.txt"), "w").write("ok")'),
                   folder / "02_second.ipynb")
    nbformat.write(_notebook("run_id = None",
                             f'if os.environ.get("{FAIL_SWITCH}") == "1":\n    raise ValueError("boom from the notebook")',
                             'print("finished")'),
                   folder / "03_maybe_fail.ipynb")
    nbformat.write(_notebook("x = 1"), folder / "helper.ipynb")  # not numbered: never run
    (root / "data").mkdir()
    monkeypatch.setenv("BCLIB_ROOT", str(root))
    monkeypatch.delenv("BCLIB_DATA", raising=False)
    monkeypatch.delenv("BCLIB_DATA_IDC", raising=False)
    return root


def _run(project: Path, **options) -> runner.RunResult:
    options.setdefault("data", project / "data")
    options.setdefault("progress", False)
    options.setdefault("log", lambda message: None)
    return runner.run_series(**options)


def test_discovery_and_selection(project):
    found = runner.discover_notebooks(project / "notebooks")
    assert [p.stem for p in found] == ["01_train", "02_second", "03_maybe_fail"]
    assert [p.stem for p in runner.select_notebooks(found, "03,01")] == ["01_train", "03_maybe_fail"]
    assert [p.stem for p in runner.select_notebooks(found, ["02_second"])] == ["02_second"]
    with pytest.raises(ValueError, match="09"):
        runner.select_notebooks(found, ["09"])
    assert set(parameter_defaults(found[0])) == {"run_id", "profile", "dataset", "data_dir", "message"}


def test_run_writes_notebooks_html_manifest_and_summary(project, capfd):
    messages: list[str] = []
    result = _run(project, run_id="first", notebooks=["01", "02"], parameters={"message": "hello", "unused": 1},
                  profile="smoke", log=messages.append)
    folder = reports.run_dir("first")
    assert result.run_dir == folder and result.executed == ["01_train", "02_second"]
    for name in ("01_train", "02_second"):
        assert (folder / f"{name}.ipynb").is_file()
        assert "<html" in (folder / f"{name}.html").read_text(encoding="utf-8").lower()
    assert not (folder / "03_maybe_fail.ipynb").exists()
    assert (folder / "second.txt").read_text() == "ok"
    assert "TCP" not in capfd.readouterr().err  # kernels talk over local sockets, quietly

    injected = json.loads((folder / "01_train" / "params.json").read_text())
    assert injected.pop("prefix") == sys.prefix  # the kernel runs in this venv
    assert injected == {"run_id": "first", "profile": "smoke", "dataset": "idc",
                        "data_dir": str((project / "data").resolve()), "message": "hello"}
    assert any("unused" in message and "warning" in message for message in messages)

    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["synthetic"] is False
    assert manifest["selection"] == ["01_train", "02_second"]
    assert manifest["parameters"] == {"message": "hello", "unused": 1}
    assert manifest["notebooks"]["02_second"]["parameters"] == {"run_id": "first"}
    for state in manifest["notebooks"].values():
        assert state["status"] == "completed" and state["seconds"] > 0
    assert manifest["versions"]["python"] and manifest["versions"]["papermill"]
    assert "commit" in manifest["git"] and manifest["started"] <= manifest["finished"]

    summary = (folder / "summary.md").read_text(encoding="utf-8")
    assert "not for diagnosis" in summary and "[01_train.html](01_train.html)" in summary
    assert "SYNTHETIC" not in summary and "RANDOM WEIGHTS" not in summary  # baseline wanted no weights
    rows = json.loads((folder / "summary.json").read_text())["rows"]
    assert [(row["notebook"], row["model"], row["roc_auc"]) for row in rows] == [("01_train", "tiny", 0.8)]

    with pytest.raises(reports.RunExistsError, match="never overwritten"):
        _run(project, run_id="first", notebooks=["02"])
    assert (folder / "second.txt").read_text() == "ok"


def test_failure_keeps_completed_notebooks_and_resume_runs_the_rest(project, monkeypatch):
    from bclib.data.synthetic import MARKER_FILE

    demo = project / "demo_data"
    demo.mkdir()
    (demo / MARKER_FILE).write_text("synthetic")
    monkeypatch.setenv(FAIL_SWITCH, "1")
    with pytest.raises(runner.RunFailed) as caught:
        _run(project, run_id="broken", data=demo)
    failure = caught.value
    assert failure.notebook == "03_maybe_fail" and failure.ename == "ValueError"
    assert "boom from the notebook" in failure.evalue and "03_maybe_fail" in str(failure)
    folder = reports.run_dir("broken")
    for name in ("01_train", "02_second", "03_maybe_fail"):
        assert (folder / f"{name}.ipynb").is_file() and (folder / f"{name}.html").is_file()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert [manifest["notebooks"][n]["status"] for n in ("01_train", "02_second", "03_maybe_fail")] == [
        "completed", "completed", "failed"]
    assert "boom" in manifest["notebooks"]["03_maybe_fail"]["error"]
    assert not quality.notebook_completed(folder / "03_maybe_fail.ipynb")
    assert quality.notebook_completed(folder / "01_train.ipynb")

    monkeypatch.setenv(FAIL_SWITCH, "0")
    first_html = (folder / "01_train.html").stat().st_mtime_ns
    resumed = runner.run_series(resume="broken", progress=False, log=lambda message: None)
    assert resumed.skipped == ["01_train", "02_second"] and resumed.executed == ["03_maybe_fail"]
    assert (folder / "01_train.html").stat().st_mtime_ns == first_html
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "completed" and len(manifest["resumed"]) == 1 and manifest["synthetic"] is True
    assert "SYNTHETIC DEMO DATA" in (folder / "summary.md").read_text(encoding="utf-8")
    assert all(state["status"] == "completed" for state in manifest["notebooks"].values())
    assert quality.notebook_completed(folder / "03_maybe_fail.ipynb")


def test_cli_failure_exits_non_zero_naming_notebook_and_error(project, monkeypatch, capsys):
    monkeypatch.setenv(FAIL_SWITCH, "1")
    code = cli_main(["run", "--data", str(project / "data"), "--run-id", "cli", "--notebooks", "03",
                     "--no-progress"])
    error = capsys.readouterr().err
    assert code != 0
    assert "03_maybe_fail" in error and "boom from the notebook" in error
    assert (reports.run_dir("cli") / "03_maybe_fail.html").is_file()


def test_cli_refuses_existing_run_id_and_bad_parameters(project, capsys):
    reports.create_run_dir("taken")
    code = cli_main(["run", "--data", str(project / "data"), "--run-id", "taken", "--no-progress"])
    assert code != 0 and "already exists" in capsys.readouterr().err
    assert list(reports.run_dir("taken").iterdir()) == []
    with pytest.raises(SystemExit):
        cli_main(["run", "-p", "no-equals-sign"])
    code = cli_main(["run", "--data", str(project / "data"), "-p", "run_id=x", "--no-progress"])
    assert code != 0 and "run_id" in capsys.readouterr().err


def test_parameter_types_are_checked_before_anything_runs(project, capsys):
    nbformat.write(_notebook("run_id = None\nepochs = 8\nrate = 1e-3\nnames = []\naugment = True\nweights = None"),
                   project / "notebooks" / "04_typed.ipynb")
    code = cli_main(["run", "--data", str(project / "data"), "--run-id", "typed", "--notebooks", "01",
                     "-p", "epochs=abc", "--no-progress"])
    error = capsys.readouterr().err
    assert code == 2 and not reports.run_dir("typed").exists()
    assert error.strip() == ("error: -p epochs='abc': notebook 04_typed declares epochs = 8, so epochs takes a whole "
                             "number (int), not a str; nothing was run")
    for bad in ("epochs=2.5", "epochs=true", "rate=fast", "names=3", "augment=1", 'message=["x"]'):
        with pytest.raises(ValueError, match=f"-p {bad.partition('=')[0]}="):
            _run(project, run_id="typed", parameters=dict([parse_parameter(bad)]))
    assert not reports.run_dir("typed").exists()
    from bclib.run.parameters import check_parameter_types

    notebooks = runner.discover_notebooks(project / "notebooks")
    check_parameter_types({"epochs": 3, "rate": 1, "names": ["a"], "augment": False, "weights": "x.h5",
                           "message": "hi", "max_images": None, "epochs_unknown": "anything"}, notebooks)


def test_one_writer_per_run_folder_and_completed_only_when_every_notebook_is(project, monkeypatch, capsys):
    monkeypatch.setenv(FAIL_SWITCH, "1")
    with pytest.raises(runner.RunFailed):
        _run(project, run_id="shared", notebooks=["02", "03"])
    folder = reports.run_dir("shared")
    lock = folder / LOCK_FILE
    assert not lock.exists()  # released however the run ended
    monkeypatch.setenv(FAIL_SWITCH, "0")

    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "since": "earlier"}))
    before = (folder / "manifest.json").read_text()
    with pytest.raises(RunLockedError, match=f"in use by process {os.getppid()} on {socket.gethostname()}"):
        _run(project, resume="shared")
    code = cli_main(["run", "--resume", "shared", "--no-progress"])
    error = capsys.readouterr().err
    assert code == 2 and "wait for that run to finish; if that process is gone, delete" in error
    assert (folder / "manifest.json").read_text() == before and lock.exists()

    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # a process that is gone
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "earlier"}))
    messages: list[str] = []
    resumed = _run(project, resume="shared", notebooks=["02"], log=messages.append)
    assert resumed.skipped == ["02_second"] and resumed.executed == []
    assert f"taking over the stale lock of process {dead.pid} (no longer running) in {folder}" in messages
    assert "run shared is incomplete: 03_maybe_fail not completed yet; continue with `bclib run --resume shared`" \
        in messages
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "incomplete" and manifest["notebooks"]["03_maybe_fail"]["status"] == "failed"
    assert not lock.exists()


def test_sigterm_marks_the_run_interrupted_with_the_resume_hint(project):
    nbformat.write(_notebook("run_id = None", "import signal, time\nos.kill(os.getppid(), signal.SIGTERM)\ntime.sleep(20)"),
                   project / "notebooks" / "04_terminated.ipynb")
    environment = {**os.environ, "BCLIB_ROOT": str(project)}
    finished = subprocess.run([sys.executable, "-m", "bclib", "run", "--data", str(project / "data"), "--run-id",
                               "stopped", "--notebooks", "02,04", "--no-progress"], env=environment,
                              capture_output=True, text=True, timeout=300)
    assert finished.returncode == 130, finished.stderr
    assert "terminated by signal 15: continue with `bclib run --resume stopped`" in finished.stdout
    folder = reports.run_dir("stopped")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert [manifest["notebooks"][name]["status"] for name in ("02_second", "04_terminated")] == [
        "completed", "interrupted"]
    assert not (folder / LOCK_FILE).exists()


def test_export_html_survives_empty_widget_metadata(tmp_path):
    notebook = _notebook("x = 1", "print(x)")
    notebook.cells[-1].outputs = [nbformat.v4.new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "a1", "version_major": 2, "version_minor": 0},
        "text/plain": "progress"})]
    notebook.metadata["widgets"] = {}  # what nbclient leaves after tqdm/ipywidgets progress bars
    nbformat.write(notebook, tmp_path / "01_w.ipynb")
    html = quality.export_html(tmp_path / "01_w.ipynb")
    assert html == tmp_path / "01_w.html" and "<html" in html.read_text(encoding="utf-8")


@pytest.mark.parametrize("text, expected", [
    ("epochs=3", ("epochs", 3)), ("learning_rate=1e-3", ("learning_rate", 0.001)),
    ("augment=true", ("augment", True)), ("weights=null", ("weights", None)),
    ("weights=imagenet", ("weights", "imagenet")), ("note=a=b", ("note", "a=b")),
    ('name="02"', ("name", "02")), ("sizes=[1, 2]", ("sizes", [1, 2])),
])
def test_parse_parameter(text, expected):
    assert parse_parameter(text) == expected


def test_resume_of_missing_run_is_refused(project):
    with pytest.raises(FileNotFoundError, match="nope"):
        _run(project, resume="nope")


def test_smoke_profile_and_missing_data_use_synthetic_demo_data(project, tmp_path, monkeypatch):
    from bclib.data import synthetic

    monkeypatch.setenv("BCLIB_CACHE", str(tmp_path / "isolated" / "cache"))  # own synthetic_dir
    monkeypatch.setattr(synthetic, "DEMO_OPTIONS", {"n_patients": 2, "patches_per_patient": 4, "seed": 0})
    calls: list[Path] = []
    real_maker = synthetic.make_synthetic_idc

    def counting_maker(root, **options):
        calls.append(Path(root))
        return real_maker(root, **options)

    monkeypatch.setattr(synthetic, "make_synthetic_idc", counting_maker)
    logged: list[str] = []
    location, is_synthetic = runner.resolve_data("idc", None, "smoke", logged.append)
    assert is_synthetic and location == paths.synthetic_dir() and len(calls) == 1
    assert len(list(location.rglob("*.png"))) == 8
    assert not list(location.parent.glob("*.tmp-*"))
    again, _ = runner.resolve_data("idc", None, "quick", logged.append)  # nothing real: reused
    assert again == location and len(calls) == 1
    assert runner.resolve_data("idc", location, "quick") == (location.resolve(), True)  # marker seen

    real = project / "data" / "idc"
    real.mkdir()
    assert runner.resolve_data("idc", None, "quick") == (real.resolve(), False)
    assert runner.resolve_data("idc", None, "smoke")[1] is True
    assert runner.resolve_data("idc", real, "smoke") == (real.resolve(), False)
    with pytest.raises(ValueError, match="breakhis"):
        runner.resolve_data("breakhis", None, "quick")
    with pytest.raises(FileNotFoundError):
        runner.resolve_data("idc", project / "missing", "quick")


@pytest.fixture
def tiny_demo(tmp_path, monkeypatch) -> None:
    from bclib.data import synthetic

    monkeypatch.setenv("BCLIB_CACHE", str(tmp_path / "isolated" / "cache"))  # own synthetic_dir
    monkeypatch.setattr(synthetic, "DEMO_OPTIONS", {"n_patients": 2, "patches_per_patient": 4, "seed": 0})


def test_no_idc_online_runs_the_series_on_breastmnist(project, tiny_demo, monkeypatch, tmp_path):
    from test_first_run import _serve_breastmnist
    from test_download import _Server

    server = _Server()
    try:
        monkeypatch.delenv("BCLIB_OFFLINE", raising=False)
        _serve_breastmnist(server, monkeypatch, tmp_path)
        messages: list[str] = []
        _run(project, data=None, run_id="first-run", notebooks=["01"], profile="quick", log=messages.append)
    finally:
        server.close()
    folder = reports.run_dir("first-run")
    destination = project / "data" / "breastmnist"
    injected = json.loads((folder / "01_train" / "params.json").read_text())
    assert (injected["dataset"], injected["data_dir"]) == ("breastmnist", str(destination))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert (manifest["dataset"], manifest["data_dir"]) == ("breastmnist", str(destination))
    assert manifest["synthetic"] is False
    assert manifest["data_choice"].startswith("no IDC data found; BreastMNIST downloaded")
    assert manifest["data"]["images"] == 13
    assert "the worked solutions are written for IDC: not run on breastmnist" in messages


def test_cli_offline_runs_on_the_demo_without_a_request(project, tiny_demo, monkeypatch, tmp_path, capsys):
    from test_first_run import _serve_breastmnist
    from test_download import _Server

    server = _Server()
    try:
        monkeypatch.delenv("BCLIB_OFFLINE", raising=False)
        _serve_breastmnist(server, monkeypatch, tmp_path)
        code = cli_main(["run", "--offline", "--run-id", "offline", "--notebooks", "02", "--no-progress"])
        assert server.requests == []
    finally:
        server.close()
    out = capsys.readouterr().out
    assert code == 0
    assert "synthetic demo instead of BreastMNIST: offline (--offline or BCLIB_OFFLINE=1)" in out
    assert "`bclib data download idc`" in out and "*** SYNTHETIC DEMO DATA" in out
    manifest = json.loads((reports.run_dir("offline") / "manifest.json").read_text())
    assert manifest["synthetic"] is True and manifest["dataset"] == "idc"
    assert manifest["data_choice"] == "no IDC data found; synthetic demo: offline (--offline or BCLIB_OFFLINE=1)"


def test_data_fingerprint_skips_large_folders(tmp_path):
    for i in range(5):
        (tmp_path / f"f{i}.txt").write_text("x")
    assert "skipped" in runner.data_fingerprint("idc", tmp_path, max_files=3)
    assert "scan failed" in runner.data_fingerprint("idc", tmp_path)["skipped"]


@pytest.mark.realdata
def test_data_fingerprint_of_real_idc(real_idc):
    first = runner.data_fingerprint("idc", real_idc)
    assert first["images"] > 10_000 and first["patients"] > 100
    assert runner.data_fingerprint("idc", real_idc)["content_hash"] == first["content_hash"]


def test_kernels_of_a_run_listen_on_their_own_local_sockets():
    manager_class = runner.local_kernel_manager()
    first, second = manager_class(kernel_name="python3"), manager_class(kernel_name="python3")
    assert first.transport == second.transport == "ipc"
    assert first.ip != second.ip and first.connection_file != second.connection_file
