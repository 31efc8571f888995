"""Parameter sweeps with an injected fake run function (no notebook is executed)."""
from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from bclib import paths
from bclib.run.commands.sweep import parse_grid_entry
from bclib.run.sweep import SweepError, SweepRun, aggregate_over_seeds, expand_grid, run_sweep

MODELS = ("baseline_cnn", "mobilenetv2")


class FakeRunner:
    """Writes a run folder with a two-model summary.json (the runner's layout); tracks concurrency; can fail."""

    def __init__(self, fail_when: dict | None = None, delay: float = 0.05) -> None:
        self.fail_when = fail_when or {}
        self.delay = delay
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0
        self.requests: list[SweepRun] = []

    def __call__(self, request: SweepRun) -> None:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.requests.append(request)
        try:
            time.sleep(self.delay)
            merged = {**request.parameters, "dataset": request.dataset}
            if self.fail_when and all(merged.get(k) == v for k, v in self.fail_when.items()):
                raise RuntimeError("simulated notebook failure")
            request.run_dir.mkdir(parents=False, exist_ok=False)  # never overwritten
            seed = int(request.parameters.get("seed", 0))
            rows = [{"model": name, "notebook": f"0{i + 2}", "roc_auc": 0.6 + 0.1 * i + 0.01 * seed,
                     "roc_auc_ci_low": 0.5, "roc_auc_ci_high": 0.9, "dataset": request.dataset}
                    for i, name in enumerate(MODELS)]
            (request.run_dir / "summary.json").write_text(json.dumps({"run_id": request.run_id, "rows": rows}))
        finally:
            with self.lock:
                self.active -= 1


def test_expand_grid_is_the_cartesian_product():
    combos = expand_grid({"seed": [0, 1, 2], "dataset": ["idc", "breastmnist"]})
    assert len(combos) == 6
    assert len({tuple(sorted(c.items())) for c in combos}) == 6
    assert combos[0] == {"seed": 0, "dataset": "idc"}
    with pytest.raises(SweepError):
        expand_grid({"seed": []})
    with pytest.raises(SweepError):
        expand_grid({"seed": "01"})
    with pytest.raises(SweepError):
        expand_grid({"seed": [1, 1]})


def test_parse_grid_entries_and_values():
    entries = [parse_grid_entry(text) for text in
               ("seed=0,1", "dataset=idc, breastmnist", "learning_rate=1e-3", "augment=true,False", "weights=null")]
    assert dict(entries) == {
        "seed": [0, 1],
        "dataset": ["idc", "breastmnist"],
        "learning_rate": [0.001],
        "augment": [True, False],
        "weights": [None],
    }
    for bad in ("seed", "seed=", "=1,2", "two words=1"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_grid_entry(bad)


def test_sweep_runs_every_combination_into_distinct_folders():
    fake = FakeRunner()
    result = run_sweep(
        {"seed": [0, 1], "dataset": ["idc", "breastmnist"]},
        base={"epochs": 1},
        max_workers=2,
        sweep_id="sw-test",
        notebooks=["02"],
        run_function=fake,
    )
    assert result.ok and len(result.runs) == 4
    run_dirs = {run.run_dir for run in result.runs}
    assert len(run_dirs) == 4
    assert all(Path(d).is_dir() and Path(d).parent == paths.reports_dir() for d in run_dirs)
    assert sorted(Path(d).name for d in run_dirs) == [f"sw-test-{n}" for n in range(1, 5)]
    # dataset is a run argument, the rest notebook parameters on top of base
    for request in fake.requests:
        assert "dataset" not in request.parameters
        assert request.parameters["epochs"] == 1 and "seed" in request.parameters
        assert request.notebooks == ["02"] and request.profile == "smoke"
    assert {r.dataset for r in fake.requests} == {"idc", "breastmnist"}

    summary = pd.read_csv(result.summary_csv)
    assert len(summary) == len(result.runs) * len(MODELS)
    assert {"run_id", "seed", "dataset", "status", "model", "roc_auc"} <= set(summary.columns)
    assert set(summary["model"]) == set(MODELS)
    assert summary.groupby("run_id").size().eq(len(MODELS)).all()
    assert summary["roc_auc"].between(0, 1).all()
    # the sweep's dataset column is the grid value, not overwritten by the run's summary
    assert (summary["dataset"] == summary["run_id"].map({r.run_id: r.dataset for r in fake.requests})).all()
    md = result.summary_md.read_text()
    assert "sw-test-4" in md and "roc_auc" in md and "_ci_" not in md and "_ci_" in result.summary_csv.read_text()
    manifest = json.loads((result.directory / "sweep.json").read_text())
    assert len(manifest["runs"]) == 4


def test_workers_are_bounded():
    fake = FakeRunner(delay=0.15)
    result = run_sweep({"seed": list(range(6))}, max_workers=2, sweep_id="sw-bound", run_function=fake)
    assert result.ok
    assert fake.peak == 2  # never more than two, and six runs of 0.15 s with two workers do overlap


def test_a_failing_run_is_recorded_and_the_others_kept():
    fake = FakeRunner(fail_when={"seed": 1, "dataset": "idc"})
    result = run_sweep(
        {"seed": [0, 1, 2], "dataset": ["idc"]}, max_workers=2, sweep_id="sw-fail", run_function=fake
    )
    assert not result.ok
    assert [run.status for run in result.runs] == ["ok", "failed", "ok"]
    failed = result.failed[0]
    assert "simulated notebook failure" in failed.error
    assert Path(failed.log_path).exists()
    summary = pd.read_csv(result.summary_csv)
    assert len(summary) == 2 * len(MODELS) + 1
    failed_rows = summary[summary["status"] == "failed"]
    assert len(failed_rows) == 1 and "simulated" in failed_rows["error"].iloc[0]
    assert "Failed runs" in result.summary_md.read_text()


def test_sweep_never_overwrites():
    fake = FakeRunner()
    run_sweep({"seed": [0]}, sweep_id="sw-once", run_function=fake)
    with pytest.raises(SweepError):
        run_sweep({"seed": [0]}, sweep_id="sw-once", run_function=fake)
    with pytest.raises(SweepError):
        run_sweep({"seed": [0]}, base={"seed": 1}, sweep_id="sw-other", run_function=fake)
    with pytest.raises(SweepError):
        run_sweep({"seed": [0]}, max_workers=0, sweep_id="sw-zero", run_function=fake)
    (paths.reports_dir() / "sw-taken-2").mkdir(parents=True)
    with pytest.raises(SweepError, match="sw-taken-2"):
        run_sweep({"seed": [0, 1]}, sweep_id="sw-taken", run_function=fake)
    with pytest.raises(ValueError, match="invalid run id"):
        run_sweep({"seed": [0]}, sweep_id="../escape", run_function=fake)


def test_cli_parses_grid(monkeypatch, capsys):
    import bclib.run.commands.sweep as command
    from bclib.run.cli import main

    seen = {}

    def fake_run_sweep(grid, **kwargs):
        seen.update(grid=grid, **kwargs)
        return run_sweep(grid, **{**kwargs, "run_function": FakeRunner()})

    monkeypatch.setattr(command, "run_sweep", fake_run_sweep)
    code = main(["sweep", "--grid", "seed=0,1", "--grid", "dataset=idc,breastmnist", "--notebooks", "02",
                 "--workers", "2", "--set", "epochs=1", "--sweep-id", "sw-cli"])
    assert code == 0
    assert seen["grid"] == {"seed": [0, 1], "dataset": ["idc", "breastmnist"]}
    assert seen["base"] == {"epochs": 1} and seen["notebooks"] == ["02"] and seen["max_workers"] == 2
    assert "sweep_summary.md" in capsys.readouterr().out
    assert main(["sweep"]) == 2
    assert main(["sweep", "--grid", "seed=0", "--grid", "seed=1"]) == 2
    with pytest.raises(SystemExit):
        main(["sweep", "--grid", "seed"])


def test_default_runner_records_a_failing_subprocess():
    """The real path (one `bclib run` process per run) reports a failure with its log."""
    result = run_sweep({"seed": [0]}, dataset="no-such-dataset", max_workers=1, sweep_id="sw-proc")
    assert not result.ok
    run = result.runs[0]
    assert "exited with code" in run.error and str(run.log_path) in run.error
    assert "no-such-dataset" in Path(run.log_path).read_text()
    assert len(pd.read_csv(result.summary_csv)) == 1


@pytest.mark.slow
@pytest.mark.realdata
def test_real_tiny_sweep_two_seeds(real_idc):
    """Notebook 02 (smoke profile) for two seeds, two processes at once, on the real IDC data."""
    result = run_sweep({"seed": [0, 1]}, base={"max_images": 256}, max_workers=2, profile="smoke",
                       data=real_idc, sweep_id="sw-real", notebooks=["02"])
    assert result.ok, [run.error for run in result.failed]
    summary = pd.read_csv(result.summary_csv)
    assert len(summary) >= 2 and set(summary["seed"]) == {0, 1}
    assert summary["roc_auc"].dropna().between(0, 1).all()
    for run in result.runs:
        assert (Path(run.run_dir) / "summary.json").is_file()


def test_summary_aggregates_over_seeds():
    fake = FakeRunner(delay=0.0)
    result = run_sweep({"dataset": ["idc", "breastmnist"], "seed": [0, 1, 2]}, sweep_id="sw-agg", run_function=fake)
    across = aggregate_over_seeds(result.summary, list(result.grid))
    assert len(across) == 2 * len(MODELS)
    assert (across["roc_auc_count"] == 3).all()
    assert across["roc_auc_mean"].between(0, 1).all() and (across["roc_auc_std"] > 0).all()
    assert "## Across seeds" in result.summary_md.read_text()
    assert aggregate_over_seeds(result.summary, ["dataset"]).empty  # nothing to aggregate without seeds
