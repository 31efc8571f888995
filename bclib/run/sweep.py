"""Parameter sweeps: one ``bclib run`` per combination of a grid, in parallel processes.

Run ``n`` of sweep ``<sweep_id>`` goes into its own run folder ``reports/<sweep_id>-<n>``; the sweep
folder ``reports/<sweep_id>/`` holds ``sweep.json``, one log per run and ``sweep_summary.csv/.md``
(one row per run and model, with the parameters that varied, and the mean over seeds).
A run that fails is recorded (status, error, log) without stopping the others.
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from bclib import DISCLAIMER
from bclib.evaluation.modelcard import write_json
from bclib.run import reports

#: Grid keys that are options of the run itself rather than notebook parameters.
RUN_KEYS = ("dataset", "profile")
#: Metrics averaged over seeds in the summary.
SEED_METRICS = ("roc_auc", "pr_auc", "balanced_accuracy")


class SweepError(ValueError):
    """A grid, a sweep id or a sweep folder that cannot be used."""


@dataclass
class SweepRun:
    """One run of the sweep: what the run function receives, then its outcome."""

    number: int
    run_id: str
    varied: dict[str, Any]
    parameters: dict[str, Any]
    profile: str
    dataset: str
    data: str | None
    data_root: str | None
    notebooks: list[str] | None
    run_dir: Path
    log_path: Path
    status: str = "pending"  # "ok" | "failed"
    error: str | None = None
    seconds: float = 0.0


@dataclass
class SweepResult:
    """A finished sweep: its runs, the per-run-and-model summary and where it was written."""

    sweep_id: str
    directory: Path
    grid: dict[str, list]
    base: dict[str, Any]
    runs: list[SweepRun]
    summary: pd.DataFrame
    max_workers: int
    seconds: float

    @property
    def summary_csv(self) -> Path:
        return self.directory / "sweep_summary.csv"

    @property
    def summary_md(self) -> Path:
        return self.directory / "sweep_summary.md"

    @property
    def failed(self) -> list[SweepRun]:
        return [run for run in self.runs if run.status != "ok"]

    @property
    def ok(self) -> bool:
        return not self.failed


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of ``grid`` as a list of dicts, first key varying slowest."""
    for key, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise SweepError(f"grid values for {key!r} must be a list, got {values!r}")
        if len(values) == 0:
            raise SweepError(f"grid key {key!r} has no values")
        if len(set(map(repr, values))) != len(values):
            raise SweepError(f"grid key {key!r} repeats a value: {list(values)}")
    return [dict(zip(grid, combination)) for combination in itertools.product(*grid.values())]


def run_in_subprocess(run: SweepRun) -> None:
    """The default run function: ``python -m bclib run ...`` in a fresh process, output to ``run.log_path``.

    A process per run keeps TensorFlow state, memory and crashes apart. Raises ``RuntimeError``
    naming the log when the run fails.
    """
    command = [sys.executable, "-m", "bclib", "run", "--profile", run.profile, "--dataset", run.dataset,
               "--run-id", run.run_id, "--no-progress"]
    if run.data:
        command += ["--data", run.data]
    if run.notebooks:
        command += ["--notebooks", ",".join(run.notebooks)]
    for key, value in run.parameters.items():
        command += ["-p", f"{key}={json.dumps(value)}"]
    environment = {**os.environ, "BCLIB_REPORTS": str(run.run_dir.parent)}
    if run.data_root:
        environment["BCLIB_DATA"] = run.data_root
    with open(run.log_path, "w", encoding="utf-8") as log:
        completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=environment, check=False)
    if completed.returncode != 0:
        tail = run.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"run {run.run_id} exited with code {completed.returncode} "
                           f"(log: {run.log_path}): " + " | ".join(tail))


def build_sweep_summary(runs: Sequence[SweepRun], varied_keys: Sequence[str]) -> pd.DataFrame:
    """One row per run and model: sweep columns first, then each run's summary columns."""
    rows: list[dict[str, Any]] = []
    for run in runs:
        head = {"run": run.number, "run_id": run.run_id, **{key: run.varied[key] for key in varied_keys},
                "status": run.status, "seconds": round(run.seconds, 1)}
        summary = run.run_dir / reports.SUMMARY_JSON
        finished = run.status == "ok" and summary.is_file()
        models = json.loads(summary.read_text(encoding="utf-8"))["rows"] if finished else []
        if not models:
            rows.append({**head, "error": run.error or "no summary.json in the run folder"})
        rows += [{**head, **{k: v for k, v in model.items() if k not in head}} for model in models]
    return pd.DataFrame(rows)


def aggregate_over_seeds(summary: pd.DataFrame, varied_keys: Sequence[str]) -> pd.DataFrame:
    """Mean, standard deviation and count of each metric over seeds, per model and other varied keys."""
    present = [metric for metric in SEED_METRICS if metric in summary.columns]
    if "seed" not in varied_keys or "model" not in summary.columns or not present:
        return pd.DataFrame()
    finished = summary[(summary["status"] == "ok") & summary["model"].notna()]
    keys = [key for key in varied_keys if key != "seed"] + ["model"]
    grouped = finished.groupby(keys, dropna=False)[present].agg(["mean", "std", "count"])
    grouped.columns = [f"{metric}_{statistic}" for metric, statistic in grouped.columns]
    return grouped.reset_index()


def write_sweep_summary(result: SweepResult) -> None:
    """Write ``sweep_summary.csv`` / ``.md`` and ``sweep.json`` into the sweep folder."""
    result.summary.to_csv(result.summary_csv, index=False)
    failed = result.failed
    readable = result.summary[[column for column in result.summary.columns if "_ci_" not in column]]
    text = [
        f"# Sweep {result.sweep_id}", "", DISCLAIMER, "",
        f"- grid: `{json.dumps(result.grid, default=str)}`",
        f"- base parameters: `{json.dumps(result.base, default=str)}`",
        f"- runs: {len(result.runs)} ({len(result.runs) - len(failed)} ok, {len(failed)} failed), "
        f"{result.max_workers} workers, {result.seconds:.1f} s", "",
        "One row per run and model (confidence intervals are in `sweep_summary.csv`).", "",
        reports.markdown_table(readable), "",
    ]
    across = aggregate_over_seeds(result.summary, list(result.grid))
    if not across.empty:
        text += ["## Across seeds", "", reports.markdown_table(across), ""]
    if failed:
        text += ["## Failed runs", ""] + [f"- `{r.run_id}`: {r.error} (log: `{r.log_path}`)" for r in failed]
    result.summary_md.write_text("\n".join(text) + "\n", encoding="utf-8")
    manifest = {"sweep_id": result.sweep_id, "grid": result.grid, "base": result.base,
                "max_workers": result.max_workers, "seconds": result.seconds,
                "runs": [asdict(run) for run in result.runs]}
    write_json(manifest, result.directory / "sweep.json")


def run_sweep(
    grid: Mapping[str, Sequence[Any]],
    base: Mapping[str, Any] | None = None,
    max_workers: int = 2,
    profile: str = "smoke",
    dataset: str = "idc",
    data: str | os.PathLike | None = None,
    sweep_id: str | None = None,
    notebooks: Sequence[str] | None = None,
    run_function: Callable[[SweepRun], Any] = run_in_subprocess,
) -> SweepResult:
    """Run every combination of ``grid`` (on top of ``base`` parameters) as its own run.

    ``dataset`` and ``profile`` may be grid keys; every other key is a notebook parameter.
    When the dataset varies, ``data`` is a data *root* holding one folder per dataset
    (passed to each run as ``BCLIB_DATA``); otherwise it is the dataset's folder.
    ``run_function`` is called once per run, at most ``max_workers`` at a time; an exception
    it raises marks that run failed.
    """
    if max_workers < 1:
        raise SweepError(f"max_workers must be at least 1, got {max_workers}")
    base = dict(base or {})
    combinations = expand_grid(grid)
    grid = {key: list(values) for key, values in grid.items()}
    overlap = sorted(set(grid) & set(base))
    if overlap:
        raise SweepError(f"{overlap} are both grid keys and base parameters; keep each in one place")
    sweep_id = reports.validate_run_id(sweep_id) if sweep_id else reports.new_run_id("sweep")
    directory = reports.run_dir(sweep_id)
    run_dirs = [reports.run_dir(f"{sweep_id}-{number}") for number in range(1, len(combinations) + 1)]
    taken = [str(folder) for folder in [directory, *run_dirs] if folder.exists()]
    if taken:
        raise SweepError(f"{taken} exist already and are never overwritten; choose another sweep id")
    (directory / "logs").mkdir(parents=True)
    data_text = str(Path(data).expanduser().resolve()) if data is not None else None
    dataset_varies = "dataset" in grid
    runs = [
        SweepRun(
            number=number, run_id=folder.name, varied=combination,
            parameters={**base, **{k: v for k, v in combination.items() if k not in RUN_KEYS}},
            profile=str(combination.get("profile", profile)), dataset=str(combination.get("dataset", dataset)),
            data=None if dataset_varies else data_text, data_root=data_text if dataset_varies else None,
            notebooks=list(notebooks) if notebooks else None,
            run_dir=folder, log_path=directory / "logs" / f"{folder.name}.log",
        )
        for number, (combination, folder) in enumerate(zip(combinations, run_dirs), start=1)
    ]

    def execute(run: SweepRun) -> None:
        started = time.perf_counter()
        try:
            run_function(run)
            run.status = "ok"
        except Exception as error:  # noqa: BLE001 - one failed run must not lose the others
            run.status, run.error = "failed", f"{type(error).__name__}: {error}"
            if not run.log_path.exists():
                run.log_path.write_text(traceback.format_exc(), encoding="utf-8")
        run.seconds = time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="bclib-sweep") as pool:
        list(pool.map(execute, runs))
    result = SweepResult(sweep_id=sweep_id, directory=directory, grid=grid, base=base, runs=runs,
                         summary=build_sweep_summary(runs, list(grid)), max_workers=max_workers,
                         seconds=time.perf_counter() - started)
    write_sweep_summary(result)
    return result
