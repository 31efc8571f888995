"""``bclib run``: execute the numbered notebooks with papermill into one run folder.

Each run gets ``reports/<run_id>/`` with ``manifest.json`` (versions, git commit, data,
parameters, per-notebook status and timing), every executed notebook as ``.ipynb`` and
``.html``, and ``summary.md/json``. A failing notebook stops the run (:class:`RunFailed`);
``resume=<run_id>`` continues it, skipping the notebooks already completed. One process writes a
run folder at a time (:mod:`bclib.run.lock`), and SIGTERM stops a run as Ctrl-C does.
"""
from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from bclib import DISCLAIMER, paths, profiles
from bclib.display import SYNTHETIC_BANNER
from bclib.run import reports
from bclib.run.lock import hold_run_lock, sigterm_as_interrupt
from bclib.run.parameters import check_parameter_types, parameter_defaults
from bclib.run.quality import check_notebook, export_html, notebook_completed
from bclib.evaluation.modelcard import write_json
from bclib.session import BATCH_ENVIRONMENT, library_versions, resolve_dataset_location

DEFAULT_PROFILE = "quick"
DEFAULT_DATASET = "idc"
NOTEBOOK_PATTERN = "[0-9][0-9]_*.ipynb"
#: Stop counting files for the manifest's data hash beyond this many (the scan must stay cheap).
MAX_FILES_TO_HASH = 60_000
#: Parameters every run injects (when a notebook declares them).
RUN_PARAMETERS = ("run_id", "profile", "dataset", "data_dir")
#: The small real dataset a run uses when no IDC data is found (downloaded when missing and online).
FALLBACK_DATASET = "breastmnist"


class RunFailed(RuntimeError):
    """A notebook of the series failed; carries its name, the error and where to look."""

    def __init__(self, notebook: str, ename: str, evalue: str, run_dir: Path, look: Path | None,
                 cell_index: int | None):
        self.notebook, self.ename, self.evalue = notebook, ename, evalue
        where = f" in cell {cell_index}" if cell_index is not None else ""
        super().__init__(
            f"notebook {notebook} failed{where}: {ename}: {evalue}"
            + (f"\n  partial output kept: {look}" if look else "")
            + f"\n  continue with: bclib run --resume {run_dir.name}"
        )


@dataclass
class RunResult:
    """What :func:`run_series` did."""

    run_id: str
    run_dir: Path
    manifest: dict
    executed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    summary_markdown: Path | None = None


# --------------------------------------------------------------------------- notebooks

def discover_notebooks(notebooks_dir: str | Path | None = None) -> list[Path]:
    """The numbered notebooks ``NN_name.ipynb`` of ``notebooks_dir`` (default: the project's
    ``notebooks/``), sorted by name."""
    folder = Path(notebooks_dir) if notebooks_dir is not None else paths.project_root() / "notebooks"
    return sorted(folder.glob(NOTEBOOK_PATTERN)) if folder.is_dir() else []


SOLUTIONS_FOLDER = "solutions"


def matching_solutions(notebooks_dir: Path, selected: list[Path]) -> list[Path]:
    """The worked solutions ``solutions/<notebook>_solutions.ipynb`` of the selected notebooks."""
    wanted = {f"{path.stem}_solutions" for path in selected}
    return [path for path in discover_notebooks(notebooks_dir / SOLUTIONS_FOLDER) if path.stem in wanted]


def run_name(path: Path) -> str:
    """The notebook's name in the manifest and the run folder: ``02_x`` or ``solutions/02_x_solutions``."""
    return f"{SOLUTIONS_FOLDER}/{path.stem}" if path.parent.name == SOLUTIONS_FOLDER else path.stem


def select_notebooks(available: list[Path], selection: Iterable[str] | str | None) -> list[Path]:
    """Keep the notebooks whose name starts with one of ``selection`` (``"02"``,
    ``"02_baseline_cnn"``...; a comma-separated string works too), in series order."""
    if selection is None:
        return list(available)
    if isinstance(selection, str):
        selection = selection.split(",")
    wanted = [item.strip().removesuffix(".ipynb") for item in selection if item.strip()]
    if not wanted:
        raise ValueError("empty notebook selection")
    names = [path.stem for path in available]
    unknown = [item for item in wanted if not any(name.startswith(item) for name in names)]
    if unknown:
        raise ValueError(f"no notebook matches {unknown}; available: {names or 'none'}")
    return [path for path in available if any(path.stem.startswith(item) for item in wanted)]


def local_kernel_manager() -> type:
    """The kernel manager class of a run's kernels (jupyter_client is imported only when a run starts)."""
    import uuid

    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.paths import jupyter_runtime_dir

    class LocalKernelManager(AsyncKernelManager):
        """A kernel reached over local (IPC) sockets, not TCP: no port open to the network, no warning about it.

        Each kernel gets its own connection file, and so its own socket files: kernels started at the same
        time by other processes (``bclib sweep``) never share a socket.
        """

        def __init__(self, **kwargs: Any) -> None:
            kwargs.setdefault("transport", "ipc")
            runtime = Path(jupyter_runtime_dir())
            runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
            kwargs.setdefault("connection_file", str(runtime / f"kernel-bclib-{uuid.uuid4().hex[:12]}.json"))
            super().__init__(**kwargs)

    return LocalKernelManager

# --------------------------------------------------------------------------- data

def resolve_data(dataset: str, data: str | os.PathLike | None, profile: str,
                 log: Callable[[str], Any] = print) -> tuple[Path, bool]:
    """The data folder for a run and whether it is synthetic demo data.

    An explicit ``data`` always wins (and must exist). Otherwise IDC runs on the synthetic demo
    data with profile ``smoke``, or when no real copy is found (:func:`~bclib.session.resolve_dataset_location`).
    """
    location, synthetic = resolve_dataset_location(dataset, data, prefer_synthetic=profile == "smoke")
    if synthetic and data is None and profile != "smoke":
        log("no real IDC data found (pass --data PATH or set BCLIB_DATA); falling back to synthetic data")
    return location, synthetic


@dataclass(frozen=True)
class DataChoice:
    """The data a new run uses, and why when it is not the data asked for."""

    dataset: str
    location: Path
    synthetic: bool
    note: str | None = None


def _fallback_dataset(offline: bool, log: Callable[[str], Any], progress: bool) -> tuple[Path | None, str]:
    """BreastMNIST's location and how it was had, or ``(None, why it cannot be had)``."""
    from bclib.data import download

    source = download.SOURCES[FALLBACK_DATASET]
    found = paths.find_dataset_dir(FALLBACK_DATASET)
    if found is not None and (found.is_file() or (found / f"{FALLBACK_DATASET}.npz").is_file()):
        log(f"this run uses BreastMNIST at {found}, a real dataset ({source.title}; licence {source.licence})")
        return found, f"BreastMNIST at {found}"
    if offline:
        return None, f"offline (--offline or {download.OFFLINE_ENVIRONMENT}=1)"
    url = source.files[0].url
    reason = download.unreachable_reason(url)
    if reason is not None:
        return None, reason
    destination = paths.data_dir() / FALLBACK_DATASET
    log(f"this run uses BreastMNIST, a real dataset: fetching {source.title}, licence {source.licence}, "
        f"from {url} into {destination} (MD5-checked; --offline or {download.OFFLINE_ENVIRONMENT}=1 skips this)")
    try:
        location = download.download(FALLBACK_DATASET, destination, progress=progress)
    except (download.DownloadError, OSError) as error:
        return None, str(error).splitlines()[0]
    return location, f"BreastMNIST downloaded into {location}"


def choose_data(dataset: str, data: str | os.PathLike | None, profile: str, offline: bool | None = None,
                log: Callable[[str], Any] = print, progress: bool = True) -> DataChoice:
    """The data of a new run: :func:`resolve_data`, except for IDC without ``data``, none found, and a
    profile other than ``smoke``. Then BreastMNIST (downloaded and MD5-checked when missing), unless
    ``offline`` (default: ``$BCLIB_OFFLINE``), the server is unreachable or the download fails: then the
    synthetic demo, the reason logged in one line. Never asks for input."""
    from bclib.data import download

    if dataset != DEFAULT_DATASET or data is not None or profile == "smoke" or paths.find_dataset_dir(dataset):
        return DataChoice(dataset, *resolve_data(dataset, data, profile, log))
    log(f"no IDC data found ($BCLIB_DATA_IDC, $BCLIB_DATA, data/). To run on IDC: `bclib data download idc` "
        f"fetches {download.SOURCES[dataset].title}; or pass --data PATH to a copy")
    offline = download.offline_requested() if offline is None else offline
    location, how = _fallback_dataset(offline, log, progress)
    if location is not None:
        return DataChoice(FALLBACK_DATASET, location, False, f"no IDC data found; {how}")
    log(f"synthetic demo instead of BreastMNIST: {how}")
    demo, _ = resolve_dataset_location(dataset, None, prefer_synthetic=True)
    return DataChoice(dataset, demo, True, f"no IDC data found; synthetic demo: {how}")


def data_fingerprint(dataset: str, location: Path, max_files: int = MAX_FILES_TO_HASH) -> dict:
    """``{"content_hash", "images", "patients"}`` of the data, or ``{"skipped": reason}``
    when scanning would not be cheap (too many files) or fails."""
    if location.is_dir():
        count = 0
        for _, _, files in os.walk(location):
            count += len(files)
            if count > max_files:
                return {"skipped": f"more than {max_files} files: not hashed"}
    try:
        from bclib.data import datasets

        index = datasets.scan(dataset, location)
        counts = index.counts()
        return {"content_hash": index.content_hash(), "images": counts.get("images"),
                "patients": counts.get("patients"), "problems": len(index.problems)}
    except Exception as error:  # noqa: BLE001 - the fingerprint is informative only
        return {"skipped": f"scan failed: {type(error).__name__}: {error}"}


# --------------------------------------------------------------------------- manifest

def _now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def git_state() -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the project checkout, or ``None`` values outside git."""
    root = paths.project_root()
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": bool(status.strip())}


def write_manifest(run_dir: Path, manifest: dict) -> Path:
    return write_json(manifest, run_dir / reports.MANIFEST_FILE)


# --------------------------------------------------------------------------- running

def _failure(error: BaseException) -> tuple[str, str, int | None]:
    """``(ename, evalue, cell_index)`` of a papermill failure (or any other exception)."""
    ename = getattr(error, "ename", None) or type(error).__name__
    evalue = getattr(error, "evalue", None)
    if evalue is None:
        evalue = str(error).strip().splitlines()[-1] if str(error).strip() else ""
    return str(ename), str(evalue), getattr(error, "cell_index", None)


def run_series(
    profile: str = DEFAULT_PROFILE,
    dataset: str = DEFAULT_DATASET,
    data: str | os.PathLike | None = None,
    run_id: str | None = None,
    notebooks: Iterable[str] | str | None = None,
    parameters: dict | None = None,
    resume: str | None = None,
    notebooks_dir: str | Path | None = None,
    solutions: bool | None = None,
    kernel_name: str = "python3",
    progress: bool = True,
    log: Callable[[str], Any] = print,
    offline: bool | None = None,
) -> RunResult:
    """Execute the notebook series into ``reports/<run_id>/`` and write its summary.

    ``notebooks`` selects by prefix (``["02", "05"]``); ``solutions`` adds the selected notebooks'
    worked solutions (default: for IDC, the dataset the exercises are written for). ``parameters``
    (``-p``, typed as the notebooks' defaults) go only to the notebooks that declare them.
    The data is :func:`choose_data`'s (``offline``: fetch nothing; default ``$BCLIB_OFFLINE``).
    ``resume=<run_id>`` reopens that run with its own settings and skips its completed notebooks.
    Raises :class:`RunFailed` at the first failing notebook, :class:`~bclib.run.lock.RunLockedError`
    while another live process writes the run folder.
    """
    import papermill
    from tqdm.auto import tqdm

    parameters = dict(parameters or {})
    reserved = sorted(set(parameters) & set(RUN_PARAMETERS))
    if reserved:
        raise ValueError(f"set {reserved} with the run's own options (--profile, --dataset, --data, --run-id), not -p")
    notebooks_dir = Path(notebooks_dir) if notebooks_dir is not None else paths.project_root() / "notebooks"
    available = discover_notebooks(notebooks_dir)
    if not available:
        raise FileNotFoundError(f"no numbered notebooks ({NOTEBOOK_PATTERN}) in {notebooks_dir}")

    check_parameter_types(parameters, available + discover_notebooks(notebooks_dir / SOLUTIONS_FOLDER))

    with contextlib.ExitStack() as held:  # the run folder's lock, released however the run ends
        if resume is not None:
            if run_id is not None and run_id != resume:
                raise ValueError(f"--run-id {run_id!r} and --resume {resume!r} disagree: give only --resume")
            directory = reports.run_dir(resume)
            if not directory.is_dir():
                raise FileNotFoundError(f"cannot resume: run folder {str(directory)!r} does not exist")
            held.enter_context(hold_run_lock(directory, log))
            manifest = reports.read_manifest(directory)
            if not manifest:
                raise ValueError(f"{directory} has no readable {reports.MANIFEST_FILE}: it is not a run folder to resume")
            run_id = resume
            for name, value, default in (("profile", profile, DEFAULT_PROFILE), ("dataset", dataset, DEFAULT_DATASET)):
                if value not in (manifest.get(name), default):
                    log(f"warning: resume keeps the run's {name} {manifest.get(name)!r}, not {value!r}")
            profile, dataset = manifest["profile"], manifest["dataset"]
            if data is not None and str(Path(data).expanduser().resolve()) != manifest.get("data_dir"):
                raise ValueError(f"cannot resume with other data: the run used {manifest.get('data_dir')!r}")
            parameters = {**manifest.get("parameters", {}), **parameters}
            selection_names = manifest.get("selection") or [p.stem for p in available]
            selected = select_notebooks(available, selection_names if notebooks is None else notebooks)
            data_location = Path(manifest["data_dir"])
            synthetic = bool(manifest.get("synthetic"))
            if not data_location.exists():
                raise FileNotFoundError(f"cannot resume: the run's data {str(data_location)!r} is gone")
            manifest.setdefault("resumed", []).append(_now())
            manifest["parameters"] = parameters
            log(f"resuming run {run_id} in {directory}")
        else:
            if profile not in profiles.PROFILES:
                raise ValueError(f"unknown profile {profile!r}; choose one of {list(profiles.PROFILES)}")
            from bclib.data.datasets import DATASET_NAMES

            if dataset not in DATASET_NAMES:
                raise ValueError(f"unknown dataset {dataset!r}; choose one of {list(DATASET_NAMES)}")
            selected = select_notebooks(available, notebooks)
            choice = choose_data(dataset, data, profile, offline, log, progress)
            dataset, data_location, synthetic = choice.dataset, choice.location, choice.synthetic
            run_id = run_id or reports.new_run_id()
            directory = reports.create_run_dir(run_id)
            held.enter_context(hold_run_lock(directory, log))
            manifest = {
                "run_id": run_id, "disclaimer": DISCLAIMER, "status": "running", "started": _now(), "finished": None,
                "command": " ".join(sys.argv), "profile": profile, "dataset": dataset, "data_dir": str(data_location),
                "synthetic": synthetic, "data_note": SYNTHETIC_BANNER if synthetic else None,
                "data_choice": choice.note,
                "data": data_fingerprint(dataset, data_location), "parameters": parameters, "kernel_name": kernel_name,
                "notebooks_dir": str(notebooks_dir.resolve()), "selection": [path.stem for path in selected],
                "versions": library_versions(), "git": git_state(), "platform": platform.platform(), "notebooks": {},
            }
            log(f"run {run_id}: {directory}")
        if synthetic:
            log(f"*** {SYNTHETIC_BANNER} ***")

        if dataset == DEFAULT_DATASET if solutions is None else solutions:
            selected = selected + matching_solutions(notebooks_dir, selected)
        elif solutions is None and manifest.get("data_choice"):
            log(f"the worked solutions are written for IDC: not run on {dataset}")
        declared = {run_name(path): set(parameter_defaults(path)) for path in selected}
        for path in selected:
            if not declared[run_name(path)]:
                log(f"warning: {path.name} has no cell tagged 'parameters'; it runs with its own defaults")
        unused = sorted(key for key in parameters if not any(key in names for names in declared.values()))
        if unused:
            log(f"warning: no selected notebook declares parameter(s) {unused}; they are ignored")

        run_values = {"run_id": run_id, "profile": profile, "dataset": dataset, "data_dir": str(data_location)}
        os.environ[BATCH_ENVIRONMENT] = "1"  # inherited by the kernels: plain-text progress, no widgets
        states = manifest.setdefault("notebooks", {})
        for path in selected:
            states.setdefault(run_name(path), {"status": "pending", "seconds": None})
        manifest["status"] = "running"
        write_manifest(directory, manifest)

        result = RunResult(run_id=run_id, run_dir=directory, manifest=manifest)
        started = clock = time.perf_counter()
        held.enter_context(sigterm_as_interrupt())
        try:
            for path in tqdm(selected, desc="notebooks", unit="nb", disable=not progress):
                name = run_name(path)
                output = directory / f"{name}.ipynb"
                output.parent.mkdir(parents=True, exist_ok=True)
                state = states[name]
                if resume is not None and state.get("status") == "completed" and notebook_completed(output):
                    log(f"{name}: already completed, skipped")
                    result.skipped.append(name)
                    continue
                values = {**profiles.notebook_values(profile, dataset, path.stem), **run_values, **parameters}
                injected = {key: value for key, value in values.items() if key in declared[name]}
                state.update(status="running", started=_now(), finished=None, error=None, parameters=injected)
                write_manifest(directory, manifest)
                log(f"{name}: running")
                clock = time.perf_counter()
                error: BaseException | None = None
                try:
                    papermill.execute_notebook(str(path), str(output), parameters=injected, kernel_name=kernel_name,
                                               kernel_manager_class=local_kernel_manager(),
                                               cwd=str(path.parent), progress_bar=False, log_output=False)
                except Exception as caught:  # noqa: BLE001 - any failure stops the series, reported below
                    error = caught
                state["seconds"] = round(time.perf_counter() - clock, 2)
                state["finished"] = _now()
                html = None
                if output.is_file():
                    try:
                        html = export_html(output)
                    except Exception as export_error:  # noqa: BLE001 - the .ipynb is still there
                        log(f"{name}: HTML export failed: {type(export_error).__name__}: {export_error}")
                state["output"] = f"{name}.ipynb" if output.is_file() else None
                state["html"] = f"{name}.html" if html else None
                if error is not None:
                    ename, evalue, cell_index = _failure(error)
                    state.update(status="failed", error=f"{ename}: {evalue}", cell_index=cell_index)
                    manifest.update(status="failed", finished=_now())
                    write_manifest(directory, manifest)
                    try:  # the summary of a failed run, without hiding the notebook's error
                        reports.write_summary(directory, manifest)
                    except Exception as summary_error:  # noqa: BLE001
                        log(f"could not write the summary: {type(summary_error).__name__}: {summary_error}")
                    raise RunFailed(name, ename, evalue, directory, html or (output if output.is_file() else None),
                                    cell_index) from error
                state["status"] = "completed"
                result.executed.append(name)
                write_manifest(directory, manifest)
                log(f"{name}: completed in {state['seconds']:.1f} s")
                lesson = path.parent.name != SOLUTIONS_FOLDER and name < "08"
                state["problems"] = check_notebook(output, needs_exercises=lesson)
                for problem in state["problems"]:
                    log(f"  check: {problem}")
        except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM as Terminated
            for state in states.values():
                if state.get("status") == "running":
                    state.update(status="interrupted", seconds=round(time.perf_counter() - clock, 2), finished=_now())
            manifest.update(status="interrupted", finished=_now())
            write_manifest(directory, manifest)
            log(f"{stop or 'interrupted'}: continue with `bclib run --resume {run_id}`")
            raise

        pending = [name for name, state in states.items() if state.get("status") != "completed"]
        manifest.update(status="incomplete" if pending else "completed", finished=_now())
        manifest["seconds"] = round(time.perf_counter() - started, 2)
        write_manifest(directory, manifest)
        result.summary_markdown = reports.write_summary(directory, manifest)[0]
        if synthetic:
            log(f"*** {SYNTHETIC_BANNER} ***")
        if pending:
            log(f"run {run_id} is incomplete: {', '.join(pending)} not completed yet; "
                f"continue with `bclib run --resume {run_id}`")
        else:
            log(f"run {run_id} completed: {result.summary_markdown}")
        return result

