"""``bclib bench``: speed and memory of the series, each figure a ratio measured side by side.

Sections (every one on the data given, in one run, on this machine):

- ``pack``: decoding PNGs into the packed cache (images/s) against a second pass from the
  complete cache;
- ``pipeline``: ``model.fit`` fed by the tf.data pipeline with augmentation against the
  in-memory ceiling (``model.fit`` on a NumPy array already in RAM), baseline CNN and
  MobileNetV2;
- ``features``: head training on cached backbone features against training through the
  frozen backbone (epochs/s), and both validation AUCs;
- ``inference``: ``bclib predict`` on a folder against raw ``model.predict``, and
  single-image latency with and without Grad-CAM;
- ``memory``: peak resident memory while packing and while training, measured in a fresh
  subprocess, against the packed array size.

Each row carries what was measured, the ratio, the target and pass/fail. Targets are goals
for this machine, never asserted by tests: figures on a shared, loaded CPU vary.
"""
from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from bclib import DISCLAIMER, __version__, paths

SECTIONS = ("pack", "pipeline", "features", "inference", "memory")
MEGABYTE = 1024 * 1024


class BenchError(ValueError):
    """A benchmark that cannot run with the options or data given."""


# --------------------------------------------------------------------------- settings

@dataclass
class BenchSettings:
    """How much work each section does; :func:`tiny_settings` and :func:`default_settings`."""

    pack_size: int = 50
    baseline_size: int = 50
    mobilenet_size: int = 96
    batch_size: int = 64
    pipeline_images: int = 1536  # images per epoch for the baseline CNN
    mobilenet_images: int = 768  # images per epoch for MobileNetV2 (slow on a CPU)
    timed_epochs: int = 5  # epochs per input, interleaved; the median step time counts
    feature_images: int = 3072  # train + validation images for the frozen-backbone section
    feature_epochs: int = 3
    inference_images: int = 1024
    latency_calls: int = 50
    gradcam_calls: int = 10  # Grad-CAM latency is measured on fewer calls (it is slower)
    memory_train_images: int = 4096
    max_images: int | None = None  # cap on the whole dataset (None: all of it)
    workers: int = 2
    seed: int = 0
    memory_subprocess: bool = True  # a fresh process gives a clean baseline (tiny: in-process)


def tiny_settings() -> BenchSettings:
    """Every section on a small synthetic dataset, well under a minute on 2 CPU cores."""
    return BenchSettings(
        mobilenet_size=32,
        batch_size=32,
        pipeline_images=192,
        mobilenet_images=64,
        timed_epochs=2,
        feature_images=128,
        feature_epochs=2,
        inference_images=64,
        latency_calls=3,
        gradcam_calls=2,
        memory_train_images=128,
        memory_subprocess=False,
    )


def default_settings(max_images: int | None = None) -> BenchSettings:
    return BenchSettings(max_images=max_images)


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
    status: str = "ok"  # "ok" | "skipped" | "error"

    def measured_text(self) -> str:
        parts = []
        for key, value in self.measured.items():
            if value is None:
                continue
            parts.append(f"{key} {value:,.3g}" if abs(value) < 100 else f"{key} {value:,.0f}")
        return ", ".join(parts)


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

    def section_rows(self, section: str) -> list[BenchRow]:
        return [row for row in self.rows if row.section == section]

    def to_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "disclaimer": DISCLAIMER,
            "seconds": round(self.seconds, 1),
            "environment": self.environment,
            "settings": self.settings,
            "data": self.data,
            "section_seconds": {name: round(value, 1) for name, value in self.section_seconds.items()},
            "sections": {name: [asdict(row) for row in self.section_rows(name)] for name in self.sections},
        }

    def table(self) -> str:
        """The rows as a fixed-width text table."""
        header = ("section", "what", "measured", "ratio", "target", "result")
        lines = [header]
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


def ratio_row(
    section: str,
    what: str,
    measured: dict[str, float | None],
    numerator: str,
    denominator: str,
    target: float | None,
    target_text: str,
    higher_is_better: bool = True,
    note: str = "",
) -> BenchRow:
    """A row whose ratio is ``measured[numerator] / measured[denominator]``, judged by ``target``."""
    top, bottom = measured.get(numerator), measured.get(denominator)
    ratio = top / bottom if top is not None and bottom else None
    passed = None
    if ratio is not None and target is not None:
        passed = ratio >= target if higher_is_better else ratio <= target
    return BenchRow(section, what, measured, ratio, target_text, passed, note)


# --------------------------------------------------------------------------- environment

def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux, else ``platform``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_environment() -> dict[str, Any]:
    """CPU, cores, memory, GPUs, versions, and the TensorFlow settings active for the run."""
    import keras
    import tensorflow as tf

    from bclib.devices import gpu_names

    try:
        usable_cores = len(os.sched_getaffinity(0))
    except AttributeError:
        usable_cores = os.cpu_count()
    gpus = gpu_names()
    try:
        import psutil

        memory_gb = round(psutil.virtual_memory().total / 1024**3, 1)
    except ImportError:
        memory_gb = None
    environment: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores,
        "memory_gb": memory_gb,
        "gpus": gpus,
        "platform": platform.platform(),
        "versions": {
            "bclib": __version__,
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
        },
        "mixed_precision": keras.mixed_precision.global_policy().name,
        "xla_jit": bool(tf.config.optimizer.get_jit()),
        "strategy": type(tf.distribute.get_strategy()).__name__,
    }
    try:  # what bclib.devices configured (precision policy, XLA for compile_model, strategy)
        from bclib import devices

        info = devices.current()
        if info is not None:
            environment["devices"] = info.as_dict()
            environment["xla_jit"] = bool(info.xla)
            environment["strategy"] = info.strategy
    except ImportError:
        pass
    return environment


def environment_line(environment: dict[str, Any]) -> str:
    versions = environment["versions"]
    gpus = ", ".join(environment["gpus"]) or "none"
    return (
        f"device: {environment['cpu']} ({environment['usable_cores']} of {environment['cores']} cores usable, "
        f"{environment['memory_gb']} GB RAM), GPU: {gpus}\n"
        f"versions: bclib {versions['bclib']}, Python {versions['python']}, TensorFlow {versions['tensorflow']}, "
        f"Keras {versions['keras']}, NumPy {versions['numpy']}; mixed precision {environment['mixed_precision']}, "
        f"XLA {'on' if environment['xla_jit'] else 'off'}, strategy {environment['strategy']}"
    )


# --------------------------------------------------------------------------- memory sampling

def _status_bytes(pid: int | str = "self") -> tuple[int, int] | None:
    """(resident, anonymous resident) bytes of a process from ``/proc/<pid>/status``."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon"):
            values[key] = int(rest.split()[0]) * 1024
    if "VmRSS" not in values:
        return None
    return values["VmRSS"], values.get("RssAnon", values["VmRSS"])


def resident_memory(include_children: bool = True) -> tuple[int, int]:
    """(resident, anonymous resident) bytes of this process plus its children.

    Anonymous memory is what a process really holds; file pages of a memory-mapped cache
    count as resident too but belong to the OS page cache and are dropped under pressure.
    """
    pids: list[int | str] = ["self"]
    if include_children:
        try:
            import psutil
        except ImportError:
            psutil = None
        if psutil is not None:
            try:
                pids += [child.pid for child in psutil.Process().children(recursive=True)]
            except psutil.Error:  # a child that just ended
                pass
    total = anonymous = 0
    for pid in pids:
        values = _status_bytes(pid)
        if values is None and pid == "self":
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            values = (peak, peak)
        if values:
            total += values[0]
            anonymous += values[1]
    return total, anonymous


class PeakMemory:
    """Context manager sampling resident memory every ``interval`` s in a background thread."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.start = (0, 0)
        self.peak = [0, 0]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        total, anonymous = resident_memory()
        self.peak[0] = max(self.peak[0], total)
        self.peak[1] = max(self.peak[1], anonymous)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "PeakMemory":
        self.start = resident_memory()
        self.peak = list(self.start)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()

    def result(self) -> dict[str, float]:
        return {
            "start_mb": self.start[0] / MEGABYTE,
            "peak_mb": self.peak[0] / MEGABYTE,
            "growth_mb": (self.peak[0] - self.start[0]) / MEGABYTE,
            "anon_growth_mb": (self.peak[1] - self.start[1]) / MEGABYTE,
        }


# --------------------------------------------------------------------------- helpers

def _subsample(n_total: int, n_wanted: int, seed: int) -> np.ndarray:
    """Sorted positions of ``min(n_total, n_wanted)`` rows drawn without replacement."""
    if n_wanted >= n_total:
        return np.arange(n_total)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=n_wanted, replace=False))


def _train_val_positions(labels: np.ndarray, positions: np.ndarray, seed: int, val_fraction: float = 0.3):
    """A seeded stratified split of ``positions`` (a bench needs both classes on each side)."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels[positions]):
        members = positions[labels[positions] == label]
        members = members[rng.permutation(len(members))]
        cut = max(1, int(round(len(members) * val_fraction)))
        val.extend(members[:cut])
        train.extend(members[cut:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(val, dtype=np.int64))


# --------------------------------------------------------------------------- context

@dataclass
class BenchContext:
    """What the sections share: the index, the packed cache, settings, a scratch folder."""

    index: Any
    settings: BenchSettings
    work_dir: Path
    log: Callable[[str], Any] = print
    cache: Any = None
    pack_seconds: float | None = None

    @property
    def cache_root(self) -> Path:
        return self.work_dir / "cache"

    def ensure_cache(self) -> Any:
        if self.cache is None:
            from bclib.data.cache import pack

            start = time.perf_counter()
            self.cache = pack(self.index, self.settings.pack_size, cache_root=self.cache_root,
                              progress=False, workers=self.settings.workers)
            self.pack_seconds = time.perf_counter() - start
        return self.cache


# --------------------------------------------------------------------------- sections

def bench_pack(context: BenchContext) -> list[BenchRow]:
    """Decode every image into a fresh cache, then read the complete cache a second time."""
    from bclib.data.cache import pack

    settings = context.settings
    n_images = len(context.index)
    if context.cache is None:
        context.ensure_cache()
    decode_seconds = context.pack_seconds or float("nan")
    cache = context.cache
    n_packed = len(cache.labels)
    start = time.perf_counter()
    again = pack(context.index, settings.pack_size, cache_root=context.cache_root,
                 progress=False, workers=settings.workers)
    checksum = 0
    chunk = 4096
    for first in range(0, len(again.labels), chunk):
        checksum += int(np.asarray(again.images[first:first + chunk]).sum(dtype=np.uint64) % 251)
    cached_seconds = time.perf_counter() - start
    measured = {
        "decode_img_per_s": n_images / decode_seconds,
        "cached_img_per_s": len(again.labels) / max(cached_seconds, 1e-9),
        "images": float(n_images),
    }
    note = f"{n_images} images at {settings.pack_size}x{settings.pack_size}, {settings.workers} workers"
    if n_packed != n_images:
        note += f"; {n_images - n_packed} failed to decode"
    return [ratio_row("pack", "pack: cache 2nd pass / PNG decode", measured, "cached_img_per_s",
                      "decode_img_per_s", 10.0, ">= 10x", note=note)]


def _interleaved_rates(model: Any, fits: dict[str, dict], batch_size: int, steps_per_epoch: int,
                       rounds: int) -> dict[str, float]:
    """Images/s of each way of feeding ``model.fit`` in its steady state.

    A short warm-up fit per input traces the train step first; then the inputs take turns
    epoch by epoch, so a change in machine load hits both sides alike. The rate is the batch
    size over the median interval between training steps (the first steps of each epoch,
    while the input pipeline fills, left out): robust to the odd slow step on a shared host.
    """
    from bclib.models.training import StepTimer

    for fit_input in fits.values():
        model.fit(**fit_input, epochs=1, steps_per_epoch=2, verbose=0)
    skip = 2 if steps_per_epoch >= 6 else 0  # tiny runs: every interval counts
    timers = {name: StepTimer(skip=skip) for name in fits}
    for _ in range(rounds):
        for name, fit_input in fits.items():
            model.fit(**fit_input, epochs=1, verbose=0, callbacks=[timers[name]])
    if any(not timer.intervals for timer in timers.values()):
        raise BenchError(f"{steps_per_epoch} training step(s) per epoch give no step interval to time; "
                         "use more images or a smaller batch")
    return {name: batch_size / float(np.median(timer.intervals)) for name, timer in timers.items()}


def bench_pipeline(context: BenchContext) -> list[BenchRow]:
    """tf.data pipeline with augmentation against ``model.fit`` on an in-RAM array."""
    from bclib.data.augment import build_augmenter
    from bclib.models.builders import build_model, compile_model
    from bclib.data.pipeline import make_dataset, resize_images

    settings = context.settings
    cache = context.ensure_cache()
    rows = []
    for model_name, size, n_wanted in (
        ("baseline_cnn", settings.baseline_size, settings.pipeline_images),
        ("mobilenetv2", settings.mobilenet_size, settings.mobilenet_images),
    ):
        positions = _subsample(len(cache.labels), n_wanted, settings.seed)
        n_images = len(positions)
        labels = np.asarray(cache.labels)[positions]
        model = build_model(model_name, num_classes=2, input_size=size, weights=None, allow_random_weights=True)
        compile_model(model, learning_rate=1e-3, num_classes=2)
        dataset = make_dataset(cache.images, cache.labels, positions=positions, batch_size=settings.batch_size,
                               training=True, image_size=size, augmenter=build_augmenter(seed=settings.seed),
                               seed=settings.seed, num_classes=2)
        in_memory = resize_images(cache.images[positions], size)
        rates = _interleaved_rates(model, {
            "pipeline": {"x": dataset, "shuffle": False},  # the dataset shuffles itself
            "in_ram": {"x": in_memory, "y": labels.astype(np.float32).reshape(-1, 1),
                       "batch_size": settings.batch_size, "shuffle": True},
        }, settings.batch_size, math.ceil(n_images / settings.batch_size), settings.timed_epochs)
        measured = {"pipeline_img_per_s": rates["pipeline"], "in_ram_img_per_s": rates["in_ram"],
                    "images": float(n_images)}
        rows.append(ratio_row(
            "pipeline", f"pipeline+augment / in-RAM fit: {model_name} {size}x{size}", measured,
            "pipeline_img_per_s", "in_ram_img_per_s", 0.9, ">= 0.90",
            note=f"{n_images} images/epoch, batch {settings.batch_size}, median step of {settings.timed_epochs} interleaved epochs"
                 + (", frozen backbone (phase 1)" if model_name != "baseline_cnn" else ""),
        ))
        del model, in_memory
    return rows


def _local_imagenet_weights(input_size: int) -> str | None:
    """The MobileNetV2 ImageNet file when the Keras cache already holds it (never downloads)."""
    from bclib.models.weights import weights_cache_dir, weights_file_name

    path = weights_cache_dir() / weights_file_name("mobilenetv2", input_size)
    return str(path) if path.is_file() else None


def _timed_fit(model: Any, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
               settings: BenchSettings) -> tuple[float, float | None]:
    """Compile and train ``model`` in order (no shuffling); its fastest epoch and validation AUC."""
    from bclib.evaluation.metrics import roc_auc
    from bclib.models.builders import compile_model
    from bclib.models.training import EpochTimer

    compile_model(model, learning_rate=1e-3, num_classes=2)
    timer = EpochTimer()
    model.fit(train_x, train_y, batch_size=settings.batch_size, epochs=settings.feature_epochs,
              shuffle=False, verbose=0, callbacks=[timer])
    return min(timer.seconds), roc_auc(val_y, model.predict(val_x, batch_size=settings.batch_size, verbose=0))


def _features_comparison(cache: Any, positions_train: np.ndarray, positions_val: np.ndarray,
                         settings: BenchSettings) -> dict[str, float | None]:
    """Frozen backbone trained end to end against the same head on precomputed features.

    Both start from the same head weights, see the images in the same order and batches and
    use no dropout, so their validation AUCs should agree; only the speed differs.
    """
    from bclib.models.features import extract_features
    from bclib.models.builders import backbone_and_head, build_model, calibrate_batchnorm
    from bclib.data.pipeline import resize_images

    size = settings.mobilenet_size
    train_x = resize_images(cache.images[positions_train], size)
    val_x = resize_images(cache.images[positions_val], size)
    labels = np.asarray(cache.labels).astype(np.float32)
    train_y, val_y = labels[positions_train].reshape(-1, 1), labels[positions_val]

    frozen = build_model("mobilenetv2", num_classes=2, input_size=size, weights=_local_imagenet_weights(size),
                         allow_random_weights=True, dropout=0.0, seed=settings.seed)
    weights_used = "imagenet" if frozen.bclib_weights.is_pretrained else "random"
    if weights_used == "random":
        calibrate_batchnorm(frozen.get_layer("backbone"), frozen.get_layer("preprocess")(train_x[:256]))
    extractor, head = backbone_and_head(frozen)  # the head copies the initial head weights

    frozen_epoch_seconds, frozen_auc = _timed_fit(frozen, train_x, train_y, val_x, val_y, settings)

    start = time.perf_counter()
    features = extract_features(extractor, np.concatenate([train_x, val_x]), batch_size=settings.batch_size)
    extract_seconds = time.perf_counter() - start
    train_features, val_features = features[: len(train_x)], features[len(train_x):]
    head_epoch_seconds, head_auc = _timed_fit(head, train_features, train_y, val_features, val_y, settings)
    return {
        "head_epochs_per_s": 1.0 / head_epoch_seconds,
        "frozen_epochs_per_s": 1.0 / frozen_epoch_seconds,
        "extract_s": extract_seconds,
        "head_val_auc": head_auc,
        "frozen_val_auc": frozen_auc,
        "weights": weights_used,
    }


def bench_features(context: BenchContext) -> list[BenchRow]:
    """Head on cached features against training through the frozen backbone (epochs/s, AUCs)."""
    settings = context.settings
    cache = context.ensure_cache()
    labels = np.asarray(cache.labels)
    positions = _subsample(len(labels), settings.feature_images, settings.seed)
    train, val = _train_val_positions(labels, positions, settings.seed)
    measured = _features_comparison(cache, train, val, settings)
    weights = measured.pop("weights")
    weights_note = ("ImageNet weights" if weights == "imagenet" else
                    "random weights (no ImageNet weights here), BatchNorm statistics calibrated on 256 train images"
                    if weights == "random" else f"weights {weights}")
    row = ratio_row("features", f"head on cached features / frozen backbone: mobilenetv2 {settings.mobilenet_size}",
                    measured, "head_epochs_per_s", "frozen_epochs_per_s", 20.0, ">= 20x, |dAUC| <= 0.01",
                    note=f"{len(train)} train / {len(val)} val images, {settings.feature_epochs} epochs, "
                         f"{weights_note}; feature extraction once: {measured['extract_s']:.1f} s")
    aucs = (measured["head_val_auc"], measured["frozen_val_auc"])
    if row.passed is not None:
        same_auc = None not in aucs and abs(aucs[0] - aucs[1]) <= 0.01
        row.passed = bool(row.passed and same_auc)
    return [row]


def _write_inference_model(model: Any, directory: Path, size: int) -> Path:
    from bclib.evaluation.modelcard import write_card

    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / "model.keras")
    write_card({
        "model_name": "mobilenetv2", "notebook": "bench", "class_names": ["non-IDC", "IDC"],
        "positive_label": 1, "input_size": size,
        "threshold": {"value": 0.5, "method": "fixed", "chosen_on": "none"},
        "weights": {"requested": None, "used": "random", "note": "bench: speed only, untrained"},
    }, directory)
    return directory / "model.keras"


def _inference_folder(index: Any, positions: np.ndarray, folder: Path) -> Path:
    """A folder of symbolic links to the chosen image files (no image is copied)."""
    folder.mkdir(parents=True, exist_ok=True)
    for number, position in enumerate(positions):
        source = Path(index.frame["path"].iloc[int(position)])
        link = folder / f"{number:06d}{source.suffix}"
        try:
            link.symlink_to(source)
        except OSError:
            link.write_bytes(source.read_bytes())  # no symlinks on this file system: scratch copy
    return folder


def _raw_predict_rate(model_path: Path, folder: Path, batch_size: int) -> float:
    """Images/s of a warmed-up ``model.predict`` on the folder's images, prepared and in RAM."""
    from bclib.data.imageio import read_image
    from bclib.app.predict import Predictor

    predictor = Predictor.load(model_path)
    arrays = np.stack([predictor.prepare(read_image(path)) for path in sorted(folder.iterdir())]).astype(np.float32)
    predictor.model.predict(arrays[:batch_size], batch_size=batch_size, verbose=0)  # trace once
    start = time.perf_counter()
    predictor.model.predict(arrays, batch_size=batch_size, verbose=0)
    return len(arrays) / max(time.perf_counter() - start, 1e-9)


def measure_latency(model: Any, image: np.ndarray, n: int = 50, with_gradcam: bool = False) -> dict[str, float]:
    """Single-image latency of ``model`` (a keras model or a :class:`~bclib.app.predict.Predictor`) in milliseconds.

    Each of ``n`` timed calls prepares the image and predicts it (plus a Grad-CAM heatmap when
    ``with_gradcam``); two untimed warm-up calls come first. Returns ``median_ms``, ``p90_ms``, ``n``.
    """
    from bclib.app.predict import Predictor, prepare_image
    from bclib.evaluation.explain import grad_cam, model_input_size

    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if isinstance(model, Predictor):
        keras_model, prepare = model.model, model.prepare
    else:
        size = model_input_size(model)
        if size is None or size[0] != size[1]:
            raise ValueError("measure_latency needs a model with a fixed square input size (or a Predictor)")
        keras_model, prepare = model, lambda array: prepare_image(array, size[0])

    def one_call() -> None:
        batch = prepare(image)[None].astype(np.float32)
        keras_model.predict_on_batch(batch)
        if with_gradcam:
            grad_cam(keras_model, batch)

    for _ in range(2):
        one_call()
    timings = []
    for _ in range(n):
        start = time.perf_counter()
        one_call()
        timings.append((time.perf_counter() - start) * 1000.0)
    return {"median_ms": float(np.median(timings)), "p90_ms": float(np.percentile(timings, 90)), "n": n}


def folder_throughput(model_path: str | os.PathLike, folder: str | os.PathLike, batch_size: int) -> dict[str, float]:
    """Images per second of ``bclib predict``'s path (files: decode + prepare + batches) on ``folder``,
    against raw ``model.predict`` on the same prepared images already in memory; ``ratio`` = path / raw.
    """
    from bclib.app.predict import Predictor, collect_image_paths
    from bclib.data.imageio import ImageReadError, read_image

    predictor = Predictor.load(model_path)
    paths, _ = collect_image_paths([folder])
    if not paths:
        raise BenchError(f"no image files in {str(folder)!r}")
    list(predictor.predict_sources(paths[: min(len(paths), batch_size)], batch_size=batch_size))  # warm-up
    start = time.perf_counter()
    results = list(predictor.predict_sources(paths, batch_size=batch_size))
    path_seconds = time.perf_counter() - start
    prepared = []
    for path in paths:
        try:
            prepared.append(predictor.prepare(read_image(path)))
        except ImageReadError:
            continue
    arrays = np.stack(prepared).astype(np.float32)
    start = time.perf_counter()
    predictor.model.predict(arrays, batch_size=batch_size, verbose=0)
    raw_seconds = time.perf_counter() - start
    images_per_second = sum(r.ok for r in results) / max(path_seconds, 1e-9)
    raw_images_per_second = len(arrays) / max(raw_seconds, 1e-9)
    return {
        "images_per_second": images_per_second,
        "raw_images_per_second": raw_images_per_second,
        "ratio": images_per_second / raw_images_per_second,
        "n_images": len(paths),
    }


def bench_inference(context: BenchContext) -> list[BenchRow]:
    """``bclib predict`` on a folder against raw ``model.predict``; latency with and without Grad-CAM."""
    from bclib.models.builders import build_model

    settings = context.settings
    cache = context.ensure_cache()
    size = settings.mobilenet_size
    model = build_model("mobilenetv2", num_classes=2, input_size=size, weights=None, allow_random_weights=True)
    model_path = _write_inference_model(model, context.work_dir / "inference_model", size)
    positions = _subsample(len(cache.labels), settings.inference_images, settings.seed)
    folder = _inference_folder(cache.index, positions, context.work_dir / "inference_images")
    throughput = folder_throughput(model_path, folder, batch_size=settings.batch_size)
    raw_rate = _raw_predict_rate(model_path, folder, settings.batch_size)
    measured = {
        "predict_img_per_s": throughput["images_per_second"],
        "raw_predict_img_per_s": raw_rate,
        "images": float(throughput.get("n_images", len(positions))),
    }
    rows = [ratio_row("inference", f"bclib predict folder / raw model.predict: mobilenetv2 {size}", measured,
                      "predict_img_per_s", "raw_predict_img_per_s", 0.8, ">= 0.80",
                      note=f"{len(positions)} PNG files, batch {settings.batch_size} (decode included in bclib "
                           f"predict; raw = warmed-up model.predict on the prepared images in RAM; "
                           f"folder_throughput's own raw figure: {throughput['raw_images_per_second']:.0f} img/s)")]
    image = np.asarray(cache.images[int(positions[0])])
    for with_gradcam, limit in ((False, 100.0), (True, 300.0)):
        label = "with Grad-CAM" if with_gradcam else "predict only"
        calls = settings.gradcam_calls if with_gradcam else settings.latency_calls
        try:
            latency = measure_latency(model, image, n=calls, with_gradcam=with_gradcam)
        except ImportError as error:
            rows.append(BenchRow("inference", f"latency {label}", {}, None, f"< {limit:.0f} ms", None,
                                 note=f"not measured: {error}", status="skipped"))
            continue
        measured = {"median_ms": latency["median_ms"], "p90_ms": latency["p90_ms"]}
        rows.append(BenchRow(
            "inference", f"single-image latency {label}: mobilenetv2 {size}", measured,
            ratio=latency["median_ms"] / limit, target=f"median < {limit:.0f} ms",
            passed=latency["median_ms"] < limit, note=f"{calls} calls after 2 warm-up calls; ratio = median / target",
        ))
    return rows


def _run_memory_child(request: dict) -> dict:
    """One measurement in a fresh Python process (clean baseline, nothing shared with this one)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    completed = subprocess.run([sys.executable, "-m", "bclib.run.bench", "--memory-child", json.dumps(request)],
                               capture_output=True, text=True, env=env, check=False)
    if completed.returncode != 0:
        raise BenchError(f"memory subprocess ({request['mode']}) failed: {completed.stderr.strip()[-800:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def bench_memory(context: BenchContext) -> list[BenchRow]:
    """Peak memory while packing (a quarter and all of the data) and while training.

    Packing runs twice into empty caches, with N/4 and N images: if the packer held the
    dataset in RAM its memory growth would scale with N; the marginal growth per packed byte
    (full minus quarter, over the difference in packed size) shows it does not.
    """
    settings = context.settings
    base = {
        "dataset_root": str(context.index.root),
        "dataset": context.index.name,
        "max_images": settings.max_images,
        "pack_size": settings.pack_size,
        "workers": settings.workers,
        "batch_size": settings.batch_size,
        "seed": settings.seed,
    }
    n_images = len(context.index)
    results = {}
    for name, mode, count in (("quarter", "pack", max(1, n_images // 4)), ("full", "pack", n_images),
                              ("train", "train", n_images)):
        request = {**base, "mode": mode, "images": count, "train_images": settings.memory_train_images,
                   "cache_root": str(context.work_dir / f"memory_cache_{name}")}
        if settings.memory_subprocess:
            results[name] = _run_memory_child(request)
        else:
            results[name] = _memory_child(request, index=context.index)
    where = "fresh subprocesses" if settings.memory_subprocess else "this process"
    quarter, full, train = results["quarter"], results["full"], results["train"]
    packed_mb = full["packed_mb"]
    extra_packed = full["packed_mb"] - quarter["packed_mb"]
    extra_growth = full["memory"]["anon_growth_mb"] - quarter["memory"]["anon_growth_mb"]
    marginal = extra_growth / extra_packed if extra_packed > 0 else None
    extra_images = full["images"] - quarter["images"]
    marginal_kb = extra_growth * 1024 / extra_images if extra_images > 0 else None
    row = ratio_row(
        "memory", "packing: RSS growth / packed array size",
        {"peak_rss_mb": full["memory"]["peak_mb"], "growth_mb": full["memory"]["growth_mb"],
         "anon_growth_mb": full["memory"]["anon_growth_mb"],
         "anon_growth_quarter_mb": quarter["memory"]["anon_growth_mb"], "packed_mb": packed_mb,
         "marginal": marginal, "marginal_kb_per_image": marginal_kb},
        "anon_growth_mb", "packed_mb", 0.5, "<= 0.5x; marginal <= 0.25", higher_is_better=False,
        note=f"{full['images']} and {quarter['images']} images packed in {where}; growth = anonymous memory "
             "(the memory-mapped cache's file pages are page cache, excluded); marginal = extra growth per "
             f"extra packed MB from N/4 to N images (holding the pixels would give >= 1; one packed image is "
             f"{settings.pack_size ** 2 * 3 / 1024:.1f} KB)" + ("; dataset too small to judge" if packed_mb < 50 else ""),
    )
    if row.passed is not None and marginal is not None:
        row.passed = bool(row.passed and marginal <= 0.25)
    train_memory = train["memory"]
    return [row, BenchRow(
        "memory", "training (baseline CNN, 1 epoch from the cache): peak RSS",
        {"peak_rss_mb": train_memory["peak_mb"], "growth_mb": train_memory["growth_mb"],
         "anon_growth_mb": train_memory["anon_growth_mb"], "packed_mb": train["packed_mb"]},
        ratio=train_memory["anon_growth_mb"] / train["packed_mb"] if train["packed_mb"] else None,
        target="report", passed=None,
        note=f"{train['train_images']} images streamed from the memory-mapped cache in {where}; "
             "ratio = anonymous growth / packed array size (TensorFlow's own buffers included)",
    )]


def _memory_child(request: dict, index: Any = None) -> dict:
    """Pack ``images`` rows into an empty cache (mode "pack"), or pack then train one epoch
    (mode "train"), sampling memory around that step. Normally runs in a fresh process;
    the pack mode does not import TensorFlow."""
    from bclib.data.cache import pack
    from bclib.data.datasets import scan

    if index is None:
        index = scan(request["dataset"], request["dataset_root"])
        if request["max_images"]:
            index = index.subset(_subsample(len(index), request["max_images"], request["seed"]))
    if request["images"] < len(index):
        index = index.subset(_subsample(len(index), request["images"], request["seed"]))
    if request["mode"] == "pack":
        with PeakMemory() as sampler:
            cache = pack(index, request["pack_size"], cache_root=request["cache_root"], progress=False,
                         workers=request["workers"])
        n_images = len(cache.labels)
        return {"images": n_images, "packed_mb": n_images * request["pack_size"] ** 2 * 3 / MEGABYTE,
                "memory": sampler.result()}

    from bclib.models.builders import build_model, compile_model
    from bclib.data.pipeline import make_dataset

    cache = pack(index, request["pack_size"], cache_root=request["cache_root"], progress=False,
                 workers=request["workers"])
    n_images = len(cache.labels)
    model = build_model("baseline_cnn", num_classes=2, input_size=request["pack_size"], weights=None)
    compile_model(model, learning_rate=1e-3, num_classes=2)
    positions = _subsample(n_images, request["train_images"], request["seed"])
    dataset = make_dataset(cache.images, cache.labels, positions=positions, batch_size=request["batch_size"],
                           training=True, seed=request["seed"], num_classes=2)
    with PeakMemory() as sampler:
        model.fit(dataset, epochs=1, verbose=0, shuffle=False)  # the dataset shuffles itself
    return {"images": n_images, "packed_mb": n_images * request["pack_size"] ** 2 * 3 / MEGABYTE,
            "train_images": len(positions), "memory": sampler.result()}


SECTION_FUNCTIONS: dict[str, Callable[[BenchContext], list[BenchRow]]] = {
    "pack": bench_pack,
    "pipeline": bench_pipeline,
    "features": bench_features,
    "inference": bench_inference,
    "memory": bench_memory,
}


# --------------------------------------------------------------------------- running

def parse_sections(only: str | Iterable[str] | None) -> list[str]:
    """``"pack,pipeline"`` (or a list) -> sections in table order; ``None`` -> all of them."""
    if only is None:
        return list(SECTIONS)
    names = [n.strip() for n in (only.split(",") if isinstance(only, str) else only) if n.strip()]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown or not names:
        raise BenchError(f"unknown bench sections {unknown or names}; choose from {', '.join(SECTIONS)}")
    return [name for name in SECTIONS if name in names]


def _load_index(dataset: str, data: str | os.PathLike | None, tiny: bool, work_dir: Path,
                settings: BenchSettings) -> Any:
    from bclib.data.datasets import scan

    if tiny:
        from bclib.data.synthetic import make_synthetic_idc

        root = make_synthetic_idc(work_dir / "synthetic", n_patients=8, patches_per_patient=24,
                                  seed=settings.seed)
        index = scan("idc", root)
    else:
        index = scan(dataset, data)
    if settings.max_images and len(index) > settings.max_images:
        index = index.subset(_subsample(len(index), settings.max_images, settings.seed))
    if len(index) < 16:
        raise BenchError(f"the bench needs at least 16 images, the dataset has {len(index)}")
    return index


def run_bench(
    data: str | os.PathLike | None = None,
    dataset: str = "idc",
    tiny: bool = False,
    only: str | Sequence[str] | None = None,
    settings: BenchSettings | None = None,
    log: Callable[[str], Any] = print,
    configure_devices: bool = True,
) -> BenchReport:
    """Measure the chosen sections on ``data`` (or a tiny synthetic dataset) and return the report.

    A section that fails is recorded as an ``error`` row with its message; the others still run.
    Scratch files (a fresh cache, a saved model, a folder of links) live in a temporary folder.
    """
    sections = parse_sections(only)
    settings = settings or (tiny_settings() if tiny else default_settings())
    if dataset != "idc" and settings.pack_size == 50:
        from bclib.profiles import PACK_SIZES

        settings.pack_size = settings.baseline_size = PACK_SIZES.get(dataset, settings.pack_size)
    started = time.perf_counter()
    if configure_devices:
        from bclib import devices

        devices.configure()  # as the series does: on a CPU float32 and no XLA; on a GPU both on
    environment = describe_environment()
    rows: list[BenchRow] = []
    section_seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bclib-bench-") as scratch:
        work_dir = Path(scratch)
        index = _load_index(dataset, data, tiny, work_dir, settings)
        context = BenchContext(index=index, settings=settings, work_dir=work_dir, log=log)
        data_info = {"dataset": "synthetic-idc" if tiny else dataset, "root": str(index.root),
                     "images": len(index), "synthetic": bool(getattr(index, "synthetic", tiny))}
        log(f"bench: {len(index)} images from {index.root}; sections {', '.join(sections)}")
        for name in sections:
            section_start = time.perf_counter()
            try:
                new_rows = SECTION_FUNCTIONS[name](context)
            except (ImportError, AttributeError) as error:
                new_rows = [BenchRow(name, name, {}, note=f"not available yet: {error}", status="skipped")]
            except Exception as error:  # one broken section must not hide the others
                new_rows = [BenchRow(name, name, {}, note=f"{type(error).__name__}: {error}", status="error")]
            rows.extend(new_rows)
            section_seconds[name] = time.perf_counter() - section_start
            log(f"  {name}: {section_seconds[name]:.1f} s")
    return BenchReport(rows=rows, environment=environment, settings=asdict(settings), data=data_info,
                       sections=sections, section_seconds=section_seconds, seconds=time.perf_counter() - started)


def write_report(report: BenchReport, directory: str | os.PathLike | None = None) -> Path:
    """Write the report as ``reports/bench/<timestamp>.json`` (never overwriting) and return the path."""
    from bclib.evaluation.modelcard import write_json

    directory = Path(directory) if directory is not None else paths.reports_dir() / "bench"
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = directory / f"{stamp}.json"
    number = 1
    while path.exists():
        number += 1
        path = directory / f"{stamp}-{number}.json"
    return write_json(report.to_dict(), path)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-child":
        print(json.dumps(_memory_child(json.loads(sys.argv[2]))))
        sys.exit(0)
    print("usage: bclib bench [...] (python -m bclib.run.bench --memory-child is internal)", file=sys.stderr)
    sys.exit(2)
