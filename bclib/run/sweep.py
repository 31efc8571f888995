"""Parameter sweeps: the cartesian product of a grid, one ``bclib run`` per combination.

Each combination runs the notebook series into its own run folder ``reports/<sweep_id>-<n>``
in a separate process (a bounded pool of workers), and the sweep folder
``reports/<sweep_id>/`` gathers ``sweep.json``, one log per run and
``sweep_summary.csv`` / ``sweep_summary.md``: one row per run and model, with the
parameters that varied and the metrics from each run's ``summary.json``.
A run that fails is recorded (status, error, log) without stopping the others.
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from bclib import paths

#: Grid keys that are arguments of the run itself rather than notebook parameters.
RUN_KEYS = ("dataset", "profile")


class SweepError(ValueError):
    """A grid, a sweep id or a sweep folder that cannot be used."""


@dataclass
class RunRequest:
    """Everything one run of the sweep needs; what a run function receives."""

    number: int
    run_id: str
    parameters: dict[str, Any]
    profile: str
    dataset: str
    data: str | None
    notebooks: list[str] | None
    reports_root: Path
    log_path: Path
    data_root: str | None = None


@dataclass
class SweepRun:
    """The outcome of one run of the sweep."""

    number: int
    run_id: str
    varied: dict[str, Any]
    status: str = "pending"  # "ok" | "failed"
    error: str | None = None
    seconds: float = 0.0
    run_dir: str = ""
    log_path: str = ""


@dataclass
class SweepResult:
    """A finished sweep: its runs, the per-run-and-model summary and where it was written."""

    sweep_id: str
    directory: Path
    grid: dict[str, list]
    base: dict[str, Any]
    runs: list[SweepRun]
    summary: pd.DataFrame
    summary_csv: Path
    summary_md: Path
    seconds: float = 0.0
    max_workers: int = 1
    peak_concurrency: int = 0

    @property
    def failed(self) -> list[SweepRun]:
        return [run for run in self.runs if run.status != "ok"]

    @property
    def ok(self) -> bool:
        return not self.failed


RunFunction = Callable[[RunRequest], Any]


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of ``grid`` as a list of dicts, first key varying slowest."""
    if not grid:
        return [{}]
    for key, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise SweepError(f"grid values for {key!r} must be a list, got {values!r}")
        if len(values) == 0:
            raise SweepError(f"grid key {key!r} has no values")
        if len(set(map(repr, values))) != len(values):
            raise SweepError(f"grid key {key!r} repeats a value: {list(values)}")
    keys = list(grid)
    return [dict(zip(keys, combination)) for combination in itertools.product(*(grid[k] for k in keys))]


def new_sweep_id() -> str:
    """A readable, sortable id such as ``sweep-20250101-120000``."""
    return datetime.now().strftime("sweep-%Y%m%d-%H%M%S")


def parse_value(text: str) -> Any:
    """A command-line value as a Python literal: int, float, bool, None, else the string."""
    lowered = text.strip().lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def parse_grid(items: Sequence[str]) -> dict[str, list]:
    """``["seed=0,1", "dataset=idc,breastmnist"]`` -> ``{"seed": [0, 1], "dataset": [...]}``."""
    grid: dict[str, list] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise SweepError(f"grid entries look like key=v1,v2 (got {item!r})")
        if key in grid:
            raise SweepError(f"grid key {key!r} given twice; list all its values once: {key}=a,b")
        grid[key] = [parse_value(value) for value in values.split(",") if value.strip()]
    return grid


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def run_in_subprocess(request: RunRequest) -> dict[str, Any]:
    """The default run function: ``bclib.run.runner.run_series`` in a fresh Python process.

    A process per run keeps TensorFlow state, memory and crashes apart; its output goes to
    ``request.log_path``. Raises ``RuntimeError`` naming the log when the run fails.
    """
    payload = {
        "profile": request.profile,
        "dataset": request.dataset,
        "data": request.data,
        "run_id": request.run_id,
        "notebooks": request.notebooks,
        "parameters": request.parameters,
    }
    env = dict(os.environ)
    env["BCLIB_REPORTS"] = str(request.reports_root)
    if request.data_root:
        env["BCLIB_DATA"] = request.data_root
    request.log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(request.log_path, "w", encoding="utf-8") as log:
        completed = subprocess.run(
            [sys.executable, "-m", "bclib.run.sweep", json.dumps(_json_safe(payload))],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            check=False,
        )
    if completed.returncode != 0:
        tail = request.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(
            f"run {request.run_id} exited with code {completed.returncode} (log: {request.log_path}): "
            + " | ".join(tail)
        )
    return {"returncode": 0}


def _child_main(argument: str) -> int:
    """Entry point of one sweep process: call the runner with the JSON arguments."""
    from bclib.run.runner import run_series

    kwargs = json.loads(argument)
    result = run_series(**kwargs)
    failed = getattr(result, "failed", None)
    return 1 if failed else 0


def _summary_rows(run_dir: Path) -> list[dict[str, Any]]:
    """One dict per model from a run's summary (``bclib.run.reports`` when present, else the JSON)."""
    summary_json = run_dir / "summary.json"
    try:
        from bclib.run.reports import build_summary  # type: ignore[attr-defined]
    except ImportError:
        build_summary = None
    if build_summary is not None and not summary_json.exists():
        try:
            frame = build_summary(run_dir)
            return frame.to_dict(orient="records")
        except Exception:  # the run folder may be incomplete; fall back to nothing
            return []
    if not summary_json.exists():
        return []
    data = json.loads(summary_json.read_text(encoding="utf-8"))
    if isinstance(data, list):
        records = data
    elif isinstance(data, dict):
        records = next(
            (data[key] for key in ("models", "rows", "results") if isinstance(data.get(key), list)),
            [data],
        )
    else:
        records = []
    return [_flatten(record) for record in records if isinstance(record, dict)]


def _flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become ``outer_inner`` columns; lists are kept as their JSON text."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, prefix=f"{name}_"))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value, default=str)
        else:
            flat[name] = value
    return flat


def build_sweep_summary(runs: Sequence[SweepRun], varied_keys: Sequence[str]) -> pd.DataFrame:
    """One row per run and model: sweep columns first, then each run's summary columns."""
    rows: list[dict[str, Any]] = []
    for run in runs:
        head = {"run": run.number, "run_id": run.run_id, **{k: run.varied.get(k) for k in varied_keys}}
        head.update({"status": run.status, "seconds": round(run.seconds, 1)})
        models = _summary_rows(Path(run.run_dir)) if run.status == "ok" else []
        if not models:
            note = run.error or ("no summary.json in the run folder" if run.status == "ok" else None)
            rows.append({**head, "error": note})
            continue
        for model_row in models:
            rows.append({**head, **{k: v for k, v in model_row.items() if k not in head}})
    return pd.DataFrame(rows)


def _markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(no rows)\n"
    columns = list(frame.columns)

    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and value != value):
            return ""
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def aggregate_over_seeds(summary: pd.DataFrame, varied_keys: Sequence[str],
                         metrics: Sequence[str] = ("roc_auc", "pr_auc", "balanced_accuracy")) -> pd.DataFrame:
    """Mean, standard deviation and count of each metric over seeds, per model and other varied keys."""
    present = [m for m in metrics if m in summary.columns]
    if "seed" not in varied_keys or "model" not in summary.columns or not present:
        return pd.DataFrame()
    finished = summary[(summary["status"] == "ok") & summary["model"].notna()]
    if finished.empty:
        return pd.DataFrame()
    keys = [k for k in varied_keys if k != "seed" and k in finished.columns] + ["model"]
    grouped = finished.groupby(keys, dropna=False)[present].agg(["mean", "std", "count"])
    grouped.columns = [f"{metric}_{stat}" for metric, stat in grouped.columns]
    return grouped.reset_index()


def write_sweep_summary(result: SweepResult) -> None:
    """Write ``sweep_summary.csv`` / ``.md`` and ``sweep.json`` into the sweep folder."""
    result.summary.to_csv(result.summary_csv, index=False)
    failed = result.failed
    text = [
        f"# Sweep {result.sweep_id}",
        "",
        "For education and research, not for diagnosis.",
        "",
        f"- grid: `{json.dumps(_json_safe(result.grid))}`",
        f"- base parameters: `{json.dumps(_json_safe(result.base))}`",
        f"- runs: {len(result.runs)} ({len(result.runs) - len(failed)} ok, {len(failed)} failed), "
        f"{result.max_workers} workers, {result.seconds:.1f} s",
        "",
        "One row per run and model (confidence intervals are in `sweep_summary.csv`).",
        "",
        _markdown_table(result.summary[[c for c in result.summary.columns if "_ci_" not in c]]),
    ]
    across = aggregate_over_seeds(result.summary, list(result.grid))
    if not across.empty:
        text += ["## Across seeds", "", _markdown_table(across)]
    if failed:
        text += ["## Failed runs", ""] + [f"- `{r.run_id}`: {r.error} (log: `{r.log_path}`)" for r in failed] + [""]
    result.summary_md.write_text("\n".join(text), encoding="utf-8")
    manifest = {
        "sweep_id": result.sweep_id,
        "grid": result.grid,
        "base": result.base,
        "max_workers": result.max_workers,
        "peak_concurrency": result.peak_concurrency,
        "seconds": result.seconds,
        "runs": [asdict(run) for run in result.runs],
    }
    (result.directory / "sweep.json").write_text(json.dumps(_json_safe(manifest), indent=2) + "\n", encoding="utf-8")


def run_sweep(
    grid: Mapping[str, Sequence[Any]],
    base: Mapping[str, Any] | None = None,
    max_workers: int = 2,
    profile: str = "smoke",
    dataset: str = "idc",
    data: str | os.PathLike | None = None,
    sweep_id: str | None = None,
    notebooks: Sequence[str] | None = None,
    run_function: RunFunction | None = None,
) -> SweepResult:
    """Run every combination of ``grid`` (on top of ``base`` parameters) as its own run.

    ``dataset`` and ``profile`` may be grid keys; every other key is a notebook parameter.
    When the dataset varies, ``data`` is a data *root* holding one folder per dataset
    (passed to each run as ``BCLIB_DATA``); otherwise it is the dataset's folder.
    ``run_function`` (default :func:`run_in_subprocess`) is called once per run, at most
    ``max_workers`` at a time; an exception it raises marks that run failed.
    """
    if max_workers < 1:
        raise SweepError(f"max_workers must be at least 1, got {max_workers}")
    base = dict(base or {})
    combinations = expand_grid(grid)
    grid = {key: list(values) for key, values in grid.items()}
    overlap = sorted(set(grid) & set(base))
    if overlap:
        raise SweepError(f"{overlap} are both grid keys and base parameters; keep each in one place")
    sweep_id = sweep_id or new_sweep_id()
    if not sweep_id.replace("-", "").replace("_", "").isalnum():
        raise SweepError(f"sweep id {sweep_id!r} may only hold letters, digits, '-' and '_'")
    reports_root = paths.reports_dir()
    directory = reports_root / sweep_id
    if directory.exists():
        raise SweepError(f"sweep folder {directory} exists already; run folders are never overwritten")
    taken = [f"{sweep_id}-{n}" for n in range(1, len(combinations) + 1) if (reports_root / f"{sweep_id}-{n}").exists()]
    if taken:
        raise SweepError(f"run folders {taken} exist already; choose another sweep id")
    directory.mkdir(parents=True)
    (directory / "logs").mkdir()
    data_text = str(Path(data).expanduser().resolve()) if data is not None else None
    dataset_varies = "dataset" in grid
    notebook_list = list(notebooks) if notebooks else None

    requests: list[RunRequest] = []
    runs: list[SweepRun] = []
    for number, combination in enumerate(combinations, start=1):
        run_id = f"{sweep_id}-{number}"
        parameters = {**base, **{k: v for k, v in combination.items() if k not in RUN_KEYS}}
        requests.append(
            RunRequest(
                number=number,
                run_id=run_id,
                parameters=parameters,
                profile=str(combination.get("profile", profile)),
                dataset=str(combination.get("dataset", dataset)),
                data=None if dataset_varies else data_text,
                data_root=data_text if dataset_varies else None,
                notebooks=notebook_list,
                reports_root=reports_root,
                log_path=directory / "logs" / f"{run_id}.log",
            )
        )
        runs.append(
            SweepRun(
                number=number,
                run_id=run_id,
                varied=dict(combination),
                run_dir=str(reports_root / run_id),
                log_path=str(directory / "logs" / f"{run_id}.log"),
            )
        )

    function = run_function or run_in_subprocess
    lock = threading.Lock()
    active = {"now": 0, "peak": 0}

    def execute(request: RunRequest, run: SweepRun) -> None:
        with lock:
            active["now"] += 1
            active["peak"] = max(active["peak"], active["now"])
        started = time.perf_counter()
        try:
            function(request)
            run.status = "ok"
        except Exception as error:  # one failed run must not lose the others
            run.status = "failed"
            run.error = f"{type(error).__name__}: {error}"
            if not request.log_path.exists():
                request.log_path.write_text(traceback.format_exc(), encoding="utf-8")
        finally:
            run.seconds = time.perf_counter() - started
            with lock:
                active["now"] -= 1

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="bclib-sweep") as pool:
        futures = [pool.submit(execute, request, run) for request, run in zip(requests, runs)]
        for future in futures:
            future.result()
    seconds = time.perf_counter() - started

    result = SweepResult(
        sweep_id=sweep_id,
        directory=directory,
        grid=grid,
        base=base,
        runs=runs,
        summary=build_sweep_summary(runs, list(grid)),
        summary_csv=directory / "sweep_summary.csv",
        summary_md=directory / "sweep_summary.md",
        seconds=seconds,
        max_workers=max_workers,
        peak_concurrency=active["peak"],
    )
    write_sweep_summary(result)
    return result


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m bclib.run.sweep '<json arguments of run_series>' (used by run_sweep)", file=sys.stderr)
        sys.exit(2)
    sys.exit(_child_main(sys.argv[1]))
