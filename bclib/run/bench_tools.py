"""The instruments of ``bclib bench`` and its report.

Memory growth is judged on *anonymous* resident memory, what the process really holds: the file
pages of a memory-mapped cache count as resident too, but they are page cache the OS can drop.
It is sampled in a background thread, normally in a fresh process so the baseline is clean.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from bclib import DISCLAIMER, paths

MEGABYTE = 1024 * 1024


class BenchError(ValueError):
    """A benchmark that cannot run with the options or data given."""


def subsample(n_total: int, n_wanted: int, seed: int) -> np.ndarray:
    """Sorted positions of ``min(n_total, n_wanted)`` rows drawn without replacement."""
    if n_wanted >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, size=n_wanted, replace=False))


# --------------------------------------------------------------------------- rows and report

@dataclass
class BenchRow:
    """One line of the table: a measured pair, their ratio and the target it is judged by."""

    section: str
    what: str
    measured: dict[str, float | None]
    ratio: float | None = None
    target: str = ""
    passed: bool | None = None  # None: no target, or not measured
    note: str = ""
    status: str = "ok"  # "ok" | "error"

    def measured_text(self) -> str:
        return ", ".join(f"{key} {value:,.3g}" if abs(value) < 100 else f"{key} {value:,.0f}"
                         for key, value in self.measured.items() if value is not None)


def ratio_row(section: str, what: str, measured: dict[str, float | None], numerator: str, denominator: str,
              target: float | None, target_text: str, higher_is_better: bool = True, note: str = "") -> BenchRow:
    """A row whose ratio is ``measured[numerator] / measured[denominator]``, judged by ``target``."""
    top, bottom = measured.get(numerator), measured.get(denominator)
    ratio = top / bottom if top is not None and bottom else None
    passed = None
    if ratio is not None and target is not None:
        passed = ratio >= target if higher_is_better else ratio <= target
    return BenchRow(section, what, measured, ratio, target_text, passed, note)


@dataclass
class BenchReport:
    """Every row of one bench run, with the machine, versions and settings it ran under."""

    rows: list[BenchRow]
    environment: dict[str, Any]
    settings: dict[str, Any]
    data: dict[str, Any]
    sections: list[str]
    section_seconds: dict[str, float] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now().isoformat(timespec="seconds"))
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "created": self.created, "disclaimer": DISCLAIMER, "seconds": round(self.seconds, 1),
            "environment": self.environment, "settings": self.settings, "data": self.data,
            "section_seconds": {name: round(value, 1) for name, value in self.section_seconds.items()},
            "sections": {name: [asdict(row) for row in self.rows if row.section == name] for name in self.sections},
        }

    def table(self) -> str:
        """The rows as a fixed-width text table, then each row's note."""
        lines = [("section", "what", "measured", "ratio", "target", "result")]
        for row in self.rows:
            result = {True: "PASS", False: "FAIL", None: "-"}[row.passed] if row.status == "ok" else row.status
            ratio = "" if row.ratio is None else f"{row.ratio:,.2f}"
            lines.append((row.section, row.what, row.measured_text(), ratio, row.target, result))
        limits = (10, 64, 140, 10, 26, 7)
        widths = [min(max(len(line[i]) for line in lines), limit) for i, limit in enumerate(limits)]
        text = ["  ".join(cell[:width].ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
        text.insert(1, "  ".join("-" * width for width in widths))
        notes = [f"  [{row.section}] {row.what}: {row.note}" for row in self.rows if row.note]
        return "\n".join(text + (["", "notes:", *notes] if notes else []))


def write_report(report: BenchReport, directory: str | os.PathLike | None = None) -> Path:
    """Write the report as ``reports/bench/<timestamp>.json`` (never overwriting) and return the path."""
    from bclib.evaluation.modelcard import write_json

    directory = Path(directory) if directory is not None else paths.reports_dir() / "bench"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path, number = directory / f"{stamp}.json", 1
    while path.exists():
        number += 1
        path = directory / f"{stamp}-{number}.json"
    return write_json(report.to_dict(), path)


def describe_environment() -> dict[str, Any]:
    """CPU, cores, memory, library versions, and the device settings active for the run."""
    from bclib import devices
    from bclib.session import library_versions

    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        cpuinfo = []
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.lower().startswith("model name")),
               platform.processor() or platform.machine())
    return {
        "cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3, 1),
        "platform": platform.platform(), "versions": library_versions(),
        "devices": devices.current().as_dict(),
    }


def environment_line(environment: dict[str, Any]) -> str:
    """Two lines: the machine, then versions and device settings."""
    info, versions = environment["devices"], environment["versions"]
    return (f"device: {environment['cpu']} ({environment['usable_cores']} of {environment['cores']} cores usable, "
            f"{environment['memory_gb']} GB RAM), GPU: {', '.join(info['gpus']) or 'none'}\n"
            f"versions: {', '.join(f'{name} {version}' for name, version in versions.items() if version)}; "
            f"precision {info['policy']}, strategy {info['strategy']}")


# --------------------------------------------------------------------------- memory

def resident_memory() -> tuple[int, int]:
    """(resident, anonymous resident) bytes of this process, from Linux's ``/proc``."""
    lines = Path("/proc/self/status").read_text().splitlines()
    values = {key: int(rest.split()[0]) * 1024 for key, _, rest in (line.partition(":") for line in lines)
              if key in ("VmRSS", "RssAnon")}
    return values["VmRSS"], values.get("RssAnon", values["VmRSS"])


class PeakMemory:
    """Context manager sampling resident memory every ``interval`` seconds in a background thread."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.start = self.peak = (0, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        total, anonymous = resident_memory()
        self.peak = (max(self.peak[0], total), max(self.peak[1], anonymous))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "PeakMemory":
        self.start = self.peak = resident_memory()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def result(self) -> dict[str, float]:
        return {
            "start_mb": self.start[0] / MEGABYTE,
            "peak_mb": self.peak[0] / MEGABYTE,
            "growth_mb": (self.peak[0] - self.start[0]) / MEGABYTE,
            "anon_growth_mb": (self.peak[1] - self.start[1]) / MEGABYTE,
        }


def measure_memory(request: dict, index: Any = None) -> dict:
    """Pack ``request["images"]`` rows into an empty cache (mode ``"pack"``), or pack them and
    train the baseline CNN one epoch from the cache (mode ``"train"``), sampling memory around
    that step. ``index``: the dataset, else scanned from the request (in a fresh process)."""
    from bclib.data.cache import pack
    from bclib.data.datasets import scan

    if index is None:
        index = scan(request["dataset"], request["dataset_root"])
        if request["max_images"]:
            index = index.subset(subsample(len(index), request["max_images"], request["seed"]))
    if request["images"] < len(index):
        index = index.subset(subsample(len(index), request["images"], request["seed"]))
    size = request["pack_size"]
    with PeakMemory() as packing:
        cache = pack(index, size, cache_root=request["cache_root"], progress=False, workers=request["workers"])
    n_images = len(cache.labels)
    result = {"images": n_images, "packed_mb": n_images * size ** 2 * 3 / MEGABYTE}
    if request["mode"] == "pack":
        return {**result, "memory": packing.result()}

    from bclib.data.pipeline import make_dataset
    from bclib.models.builders import build_model, compile_model

    model = compile_model(build_model("baseline_cnn", input_size=size, seed=request["seed"]))
    positions = subsample(n_images, request["train_images"], request["seed"])
    dataset = make_dataset(cache.images, cache.labels, positions=positions, batch_size=request["batch_size"],
                           training=True, seed=request["seed"])
    with PeakMemory() as training:
        model.fit(dataset, epochs=1, verbose=0, shuffle=False)  # the dataset shuffles itself
    return {**result, "train_images": len(positions), "memory": training.result()}


def run_fresh_python(arguments: list[str], what: str) -> str:
    """The output of ``python *arguments`` in a fresh process (nothing shared with this one);
    :class:`BenchError` with the end of its error output when it fails."""
    completed = subprocess.run([sys.executable, *arguments], capture_output=True, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, check=False)
    if completed.returncode != 0:
        raise BenchError(f"{what} failed: {completed.stderr.strip()[-800:]}")
    return completed.stdout


def measure_memory_in_subprocess(request: dict) -> dict:
    """:func:`measure_memory` in a fresh Python process."""
    output = run_fresh_python(["-m", __name__, json.dumps(request)], f"memory subprocess ({request['mode']})")
    return json.loads(output.strip().splitlines()[-1])


# --------------------------------------------------------------------------- inference

def measure_latency(model: Any, image: np.ndarray, n: int = 50, with_gradcam: bool = False) -> dict[str, float]:
    """Single-image latency of a keras model with a square input, in ms: prepare the image and predict
    it (plus a Grad-CAM heatmap ``with_gradcam``). One more untimed warm-up call than Grad-CAM's eager
    ones (:data:`~bclib.evaluation.explain.EAGER_CALLS`) comes first, so its compilation is not timed.
    """
    from bclib.app.predict import prepare_image
    from bclib.evaluation.explain import EAGER_CALLS, grad_cam, model_input_size

    size = model_input_size(model)[0]

    def timed_call() -> float:
        start = time.perf_counter()
        batch = prepare_image(image, size)[None].astype(np.float32)
        model.predict_on_batch(batch)
        if with_gradcam:
            grad_cam(model, batch)
        return (time.perf_counter() - start) * 1000.0

    warmup = EAGER_CALLS + 1
    for _ in range(warmup):
        timed_call()
    timings = [timed_call() for _ in range(n)]
    return {"median_ms": float(np.median(timings)), "p90_ms": float(np.percentile(timings, 90)), "n": n,
            "warmup_calls": warmup}


def measure_app_latency(model_path: Path, image_file: Path, n: int, explain: bool) -> dict[str, float]:
    """The prediction app's time from an upload to its drawn result, in ms, driven in-process as the page
    drives it: start the app (it loads and compiles the model), then set the upload's value ``n + 1`` times.
    The first upload is reported apart (``first_ms``), ``start_s`` is the app's start."""
    from datetime import datetime, timezone

    from bclib.app.catalog import find_models
    from bclib.app.widgets import PredictApp

    content = Path(image_file).read_bytes()
    start = time.perf_counter()
    app = PredictApp(find_models(model_path=model_path), explain=explain)
    start_seconds = time.perf_counter() - start
    timings = []
    for _ in range(n + 1):
        upload = {"name": Path(image_file).name, "type": "image/png", "size": len(content),
                  "content": memoryview(content), "last_modified": datetime.now(timezone.utc)}
        start = time.perf_counter()
        app.upload.value = (upload,)  # the observer predicts and draws before this returns
        timings.append((time.perf_counter() - start) * 1000.0)
        if len(app.predictions) != 1 or not app.predictions[0].ok or len(app.output.children) != 2:
            raise BenchError(f"the app drew no result for {image_file}: {app.status.value}")
    app.clear()
    later = timings[1:]
    return {"start_s": start_seconds, "first_ms": timings[0], "median_ms": float(np.median(later)),
            "p90_ms": float(np.percentile(later, 90)), "n": n}


def saved_for_predict(model: Any, directory: Path, size: int, pack_size: int | None = None) -> Path:
    """``model.keras`` and a model card in ``directory``, as ``bclib predict`` loads them (``pack_size``: the
    square images were packed at before the model's resize, as training records it)."""
    from bclib.evaluation.modelcard import write_card

    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / "model.keras")
    write_card({"model_name": "mobilenetv2", "notebook": "bench", "class_names": ["non-IDC", "IDC"],
                "positive_label": 1, "input_size": size, **({"pack_size": pack_size} if pack_size else {}),
                "threshold": {"value": 0.5, "method": "fixed", "chosen_on": "none"},
                "weights": {"requested": None, "used": "random", "note": "bench: speed only, untrained"}}, directory)
    return directory / "model.keras"


def linked_folder(index: Any, positions: np.ndarray, folder: Path) -> Path:
    """A folder of symbolic links to the chosen image files (copies where links are not allowed)."""
    folder.mkdir(parents=True, exist_ok=True)
    for number, position in enumerate(positions):
        source = Path(index.frame["path"].iloc[int(position)])
        link = folder / f"{number:06d}{source.suffix}"
        try:
            link.symlink_to(source)
        except OSError:
            link.write_bytes(source.read_bytes())
    return folder


def folder_throughput(model_path: str | os.PathLike, folder: str | os.PathLike, batch_size: int) -> dict[str, float]:
    """Images/s of ``bclib predict``'s path (files: decode, prepare, batches) on ``folder`` against raw
    ``model.predict`` on the same prepared images in RAM, both warmed up."""
    from bclib.app.predict import Predictor, collect_image_paths
    from bclib.data.imageio import read_image
    from bclib.data.pipeline import resize_images

    predictor = Predictor.load(model_path)
    image_paths, _ = collect_image_paths([folder])
    if not image_paths:
        raise BenchError(f"no image files in {str(folder)!r}")
    list(predictor.predict_sources(image_paths[:batch_size], batch_size=batch_size))  # warm-up
    start = time.perf_counter()
    results = list(predictor.predict_sources(image_paths, batch_size=batch_size))
    path_seconds = time.perf_counter() - start
    arrays = resize_images(np.stack([predictor.prepare(read_image(path)) for path, result in zip(image_paths, results)
                                     if result.ok]), predictor.input_size)
    predictor.model.predict(arrays[:batch_size], batch_size=batch_size, verbose=0)  # traces predict once
    start = time.perf_counter()
    predictor.model.predict(arrays, batch_size=batch_size, verbose=0)
    raw_seconds = time.perf_counter() - start
    return {"images_per_second": len(arrays) / max(path_seconds, 1e-9),
            "raw_images_per_second": len(arrays) / max(raw_seconds, 1e-9)}


if __name__ == "__main__":  # measure_memory_in_subprocess's fresh process
    print(json.dumps(measure_memory(json.loads(sys.argv[1]))))
