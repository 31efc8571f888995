"""``bclib bench``: speed and memory of the series, each figure a ratio of two sides measured in one run.

Sections: ``pack`` (PNG decode against the complete cache), ``pipeline`` (tf.data with augmentation
against ``model.fit`` on an array in RAM), ``features`` (a head on cached features against the frozen
backbone), ``inference`` (``bclib predict`` on a folder against raw ``model.predict``; latency), ``app``
(the prediction app's upload-to-drawn-result time against ``bclib predict``'s per image; its first upload
against the later ones), ``memory`` (peak resident memory against the packed array) and ``large`` (peak
memory of ``bclib predict`` on large images against patches). Targets are goals for this machine, never
asserted by tests: figures on a shared, loaded CPU vary.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from bclib.run.bench_tools import (BenchError, BenchReport, BenchRow, describe_environment, folder_throughput,
                                   linked_folder, measure_app_latency, measure_latency, measure_memory,
                                   measure_memory_in_subprocess, ratio_row, run_fresh_python, saved_for_predict,
                                   subsample)

@dataclass
class BenchSettings:
    """How much work each section does (:func:`tiny_settings` for CI)."""

    pack_size: int | None = None  # None: the dataset's (bclib.profiles.PACK_SIZES)
    mobilenet_size: int = 96
    batch_size: int = 64
    pipeline_images: int = 1536  # images per epoch for the baseline CNN
    mobilenet_images: int = 768  # images per epoch for MobileNetV2 (slow on a CPU)
    timed_epochs: int = 5  # epochs per input, interleaved; the median step time counts
    feature_images: int = 3072  # train + validation images for the frozen-backbone section
    feature_epochs: int = 3  # the first (tracing) is not timed
    inference_images: int = 1024
    latency_calls: int = 50
    gradcam_calls: int = 10  # Grad-CAM latency is measured on fewer calls (it is slower)
    app_model: str = "mobilenetv2"  # the model behind the app section (any bclib.models.builders name)
    app_uploads: int = 30  # timed uploads per app, after its first
    memory_train_images: int = 4096
    max_images: int | None = None  # cap on the whole dataset (None: all of it)
    workers: int = 2
    seed: int = 0
    memory_subprocess: bool = True  # a fresh process gives a clean baseline (tiny: in-process)


def tiny_settings() -> BenchSettings:
    """Every section on a small synthetic dataset (the CI run)."""
    return BenchSettings(mobilenet_size=32, batch_size=32, pipeline_images=192, mobilenet_images=64,
                         timed_epochs=2, feature_images=128, feature_epochs=2, inference_images=64,
                         latency_calls=3, gradcam_calls=2, app_uploads=3, memory_train_images=128, memory_subprocess=False)


@dataclass
class BenchContext:
    """What the sections share: the index, the packed cache (packed once, timed), a scratch folder."""

    index: Any
    settings: BenchSettings
    work_dir: Path
    cache: Any = None
    pack_seconds: float | None = None

    def pack(self) -> Any:
        from bclib.data.cache import pack

        return pack(self.index, self.settings.pack_size, cache_root=self.work_dir / "cache", progress=False,
                    workers=self.settings.workers)

    def ensure_cache(self) -> Any:
        if self.cache is None:
            start = time.perf_counter()
            self.cache = self.pack()
            self.pack_seconds = time.perf_counter() - start
        return self.cache


def bench_pack(context: BenchContext) -> list[BenchRow]:
    """Decode every image into a fresh cache, then open and read the complete cache a second time."""
    n_images, size = len(context.index), context.settings.pack_size
    n_packed = len(context.ensure_cache().labels)
    start = time.perf_counter()
    again = context.pack()
    for first in range(0, len(again.labels), 4096):  # touch every pixel
        np.asarray(again.images[first:first + 4096]).sum(dtype=np.uint64)
    cached_seconds = time.perf_counter() - start
    measured = {"decode_img_per_s": n_images / context.pack_seconds,
                "cached_img_per_s": n_packed / max(cached_seconds, 1e-9), "images": float(n_images)}
    note = f"{n_images} images at {size}x{size}, {context.settings.workers} workers" + (
        f"; {n_images - n_packed} failed to decode" if n_packed != n_images else "")
    return [ratio_row("pack", "pack: cache 2nd pass / PNG decode", measured, "cached_img_per_s",
                      "decode_img_per_s", 10.0, ">= 10x", note=note)]


def _interleaved_rates(model: Any, fits: dict[str, dict], batch_size: int, steps_per_epoch: int,
                       rounds: int) -> dict[str, float]:
    """Images/s of each way of feeding ``model.fit``: batch size over the median step interval.

    After a warm-up fit per input (tracing), the inputs take turns epoch by epoch, so a change in
    machine load hits both alike; the first steps of an epoch (the pipeline filling) are left out.
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
    """tf.data pipeline with notebook 04's augmentation against ``model.fit`` on an in-RAM array."""
    from bclib.data.augment import standard_augmentation
    from bclib.data.pipeline import encode_labels, make_dataset, resize_images
    from bclib.models.builders import build_model, compile_model

    settings, cache = context.settings, context.ensure_cache()
    rows = []
    for model_name, size, n_wanted in (("baseline_cnn", settings.pack_size, settings.pipeline_images),
                                       ("mobilenetv2", settings.mobilenet_size, settings.mobilenet_images)):
        positions = subsample(len(cache.labels), n_wanted, settings.seed)
        model = compile_model(build_model(model_name, input_size=size, weights=None, seed=settings.seed))
        dataset = make_dataset(cache.images, cache.labels, positions=positions, batch_size=settings.batch_size,
                               training=True, image_size=size, augmenter=standard_augmentation(seed=settings.seed),
                               seed=settings.seed)
        rates = _interleaved_rates(model, {
            "pipeline": {"x": dataset, "shuffle": False},  # the dataset shuffles itself
            "in_ram": {"x": resize_images(cache.images[positions], size), "y": encode_labels(cache.labels[positions]),
                       "batch_size": settings.batch_size, "shuffle": True},
        }, settings.batch_size, math.ceil(len(positions) / settings.batch_size), settings.timed_epochs)
        measured = {"pipeline_img_per_s": rates["pipeline"], "in_ram_img_per_s": rates["in_ram"],
                    "images": float(len(positions))}
        rows.append(ratio_row(
            "pipeline", f"pipeline+augment / in-RAM fit: {model_name} {size}x{size}", measured,
            "pipeline_img_per_s", "in_ram_img_per_s", 0.9, ">= 0.90",
            note=f"{len(positions)} images/epoch, batch {settings.batch_size}, median step of "
                 f"{settings.timed_epochs} interleaved epochs" + ("" if model_name == "baseline_cnn" else
                                                                  ", frozen backbone"),
        ))
    return rows


def bench_features(context: BenchContext) -> list[BenchRow]:
    """Notebook 05's phase 1: the head on cached features against the model through its frozen backbone.

    Both start from the same head weights (no dropout) and see the same batches in the same
    order, so their validation AUCs should agree; only the speed differs.
    """
    from bclib.data.pipeline import encode_labels, resize_images
    from bclib.evaluation.metrics import roc_auc
    from bclib.models.builders import (build_model, calibrate_batchnorm, compile_model, feature_extractor,
                                       get_backbone, head_model)
    from bclib.models.training import predict_probabilities
    from bclib.models.transfer import extract_features, time_epochs
    from bclib.models.weights import resolve_weights
    from sklearn.model_selection import train_test_split

    settings, cache = context.settings, context.ensure_cache()
    size, batch, epochs = settings.mobilenet_size, settings.batch_size, settings.feature_epochs
    labels = np.asarray(cache.labels)
    positions = subsample(len(labels), settings.feature_images, settings.seed)
    train, val = map(np.sort, train_test_split(positions, test_size=0.3, stratify=labels[positions],
                                               random_state=settings.seed))
    train_x, val_x = resize_images(cache.images[train], size), resize_images(cache.images[val], size)
    train_y = encode_labels(labels[train])
    # ImageNet weights only when the Keras cache holds them: the bench never downloads
    cached_weights = resolve_weights("mobilenetv2", input_size=size, download=False, announce=False).path
    model = build_model("mobilenetv2", input_size=size, weights=cached_weights, dropout=0.0, seed=settings.seed)
    pretrained, calibration = model.bclib_weights.is_pretrained, min(256, len(train))
    if not pretrained:
        calibrate_batchnorm(get_backbone(model), model.get_layer("preprocess")(train_x[:calibration]))
    head = head_model(model)  # shares the model's head layers: reset to the same start below
    initial_head = head.get_weights()
    frozen_seconds = time_epochs(compile_model(model), train_x, train_y, batch_size=batch, epochs=epochs)
    frozen_auc = roc_auc(labels[val], predict_probabilities(model, val_x, batch))
    start = time.perf_counter()
    features = extract_features(feature_extractor(model), np.concatenate([train_x, val_x]), batch_size=batch)
    extract_seconds = time.perf_counter() - start
    head.set_weights(initial_head)
    head_seconds = time_epochs(compile_model(head), features[:len(train)], train_y, batch_size=batch, epochs=epochs)
    head_auc = roc_auc(labels[val], predict_probabilities(head, features[len(train):], batch))
    measured = {"head_epochs_per_s": 1 / head_seconds, "frozen_epochs_per_s": 1 / frozen_seconds,
                "extract_s": extract_seconds, "head_val_auc": head_auc, "frozen_val_auc": frozen_auc}
    weights = ("ImageNet weights" if pretrained else
               f"random weights (no ImageNet file here), BatchNorm statistics from {calibration} train images")
    row = ratio_row("features", f"head on cached features / frozen backbone: mobilenetv2 {size}", measured,
                    "head_epochs_per_s", "frozen_epochs_per_s", 20.0, ">= 20x, |dAUC| <= 0.01",
                    note=f"{len(train)} train / {len(val)} val images, {epochs} epochs each, the first "
                         f"(tracing) untimed, {weights}; feature extraction once: {extract_seconds:.1f} s")
    if row.passed is not None:
        row.passed = None not in (head_auc, frozen_auc) and abs(head_auc - frozen_auc) <= 0.01 and row.passed
    return [row]


def bench_inference(context: BenchContext) -> list[BenchRow]:
    """``bclib predict`` on a folder against raw ``model.predict``; latency with and without Grad-CAM."""
    from bclib.models.builders import build_model

    settings, cache = context.settings, context.ensure_cache()
    size = settings.mobilenet_size
    model = build_model("mobilenetv2", input_size=size, weights=None, seed=settings.seed)
    positions = subsample(len(cache.labels), settings.inference_images, settings.seed)
    throughput = folder_throughput(saved_for_predict(model, context.work_dir / "inference_model", size),
                                   linked_folder(cache.index, positions, context.work_dir / "inference_images"),
                                   batch_size=settings.batch_size)
    measured = {"predict_img_per_s": throughput["images_per_second"],
                "raw_predict_img_per_s": throughput["raw_images_per_second"], "images": float(len(positions))}
    rows = [ratio_row("inference", f"bclib predict folder / raw model.predict: mobilenetv2 {size}", measured,
                      "predict_img_per_s", "raw_predict_img_per_s", 0.8, ">= 0.80",
                      note=f"{len(positions)} PNG files, batch {settings.batch_size}; bclib predict decodes and "
                           "prepares the files, raw = warmed-up model.predict on the prepared images in RAM "
                           "(bclib predict calls predict_on_batch, often faster on a CPU: a ratio above 1 is possible)")]
    image = np.asarray(cache.images[int(positions[0])])
    for with_gradcam, limit, calls in ((False, 100.0, settings.latency_calls), (True, 300.0, settings.gradcam_calls)):
        latency = measure_latency(model, image, n=calls, with_gradcam=with_gradcam)
        warmup = latency["warmup_calls"]
        rows.append(BenchRow(
            "inference", f"single-image latency {'with Grad-CAM' if with_gradcam else 'predict only'}: "
                         f"mobilenetv2 {size}",
            {"median_ms": latency["median_ms"], "p90_ms": latency["p90_ms"]}, ratio=latency["median_ms"] / limit,
            target=f"median < {limit:.0f} ms", passed=latency["median_ms"] < limit,
            note=f"{calls} timed calls after {warmup} untimed warm-up calls" + (
                f", so Grad-CAM's compilation (call {warmup}, after {warmup - 1} eager ones) is not timed"
                if with_gradcam else "") + "; ratio = median / target"))
    return rows


def bench_app(context: BenchContext) -> list[BenchRow]:
    """The prediction app (notebook 08, ``bclib app``) from an upload to its drawn result, without and with
    Grad-CAM, against ``bclib predict``'s per-image time on the same model and image; and its first upload
    against the later ones, which shows whether compiling happened when the app started."""
    from bclib.data.imageio import read_image
    from bclib.models.builders import build_model

    settings, index = context.settings, context.index
    name, size, n = settings.app_model, settings.mobilenet_size, settings.app_uploads
    model = build_model(name, input_size=size, weights=None, seed=settings.seed)
    model_path = saved_for_predict(model, context.work_dir / "app_model", size, pack_size=settings.pack_size)
    image_file = Path(index.frame["path"].iloc[int(subsample(len(index), 1, settings.seed)[0])])
    image = read_image(image_file)
    rows = []
    for explain in (False, True):
        mode = "with Grad-CAM" if explain else "predict only"
        app = measure_app_latency(model_path, image_file, n, explain)
        predict = measure_latency(model, image, n=n, with_gradcam=explain)
        rows.append(ratio_row(
            "app", f"app / bclib predict, {mode}: {name} {size}",
            {"app_median_ms": app["median_ms"], "app_p90_ms": app["p90_ms"],
             "predict_median_ms": predict["median_ms"], "predict_p90_ms": predict["p90_ms"]},
            "app_median_ms", "predict_median_ms", None, "report",
            note=f"upload to drawn result: {n} uploads of one {image.shape[1]}x{image.shape[0]} PNG ({image_file.name}), in-process "
                 "(FileUpload value set, result drawn: decode, pack, predict" + (", Grad-CAM" if explain else "")
                 + ", pictures encoded), against bclib predict's prepare + predict"
                 + (" + Grad-CAM" if explain else "") + f" of the decoded image ({n} calls after its warm-up)"))
        rows.append(ratio_row(
            "app", f"app first upload / median upload, {mode}: {name} {size}",
            {"start_s": app["start_s"], "first_ms": app["first_ms"], "median_ms": app["median_ms"]},
            "first_ms", "median_ms", 2.0, "<= 2x", higher_is_better=False,
            note=f"the app started in {app['start_s']:.2f} s (model loaded, then compiled on a blank patch), "
                 f"so its first upload should cost about what the {n} later ones do"))
    return rows


def bench_memory(context: BenchContext) -> list[BenchRow]:
    """Peak memory while packing (a quarter and all of the data) and while training.

    Packing runs twice into empty caches, with N/4 and N images: if the packer held the
    dataset in RAM its memory growth would scale with N; the marginal growth per packed byte
    (full minus quarter, over the difference in packed size) shows it does not.
    """
    settings, index = context.settings, context.index
    n_images = len(index)
    results = {}
    for name, mode, count in (("quarter", "pack", max(1, n_images // 4)), ("full", "pack", n_images),
                              ("train", "train", n_images)):
        request = {"dataset_root": str(index.root), "dataset": index.name, "max_images": settings.max_images,
                   "pack_size": settings.pack_size, "workers": settings.workers, "batch_size": settings.batch_size,
                   "seed": settings.seed, "mode": mode, "images": count, "train_images": settings.memory_train_images,
                   "cache_root": str(context.work_dir / f"memory_cache_{name}")}
        results[name] = (measure_memory_in_subprocess(request) if settings.memory_subprocess
                         else measure_memory(request, index))
    where = "fresh subprocesses" if settings.memory_subprocess else "this process"
    quarter, full, train = results["quarter"], results["full"], results["train"]
    extra_packed = full["packed_mb"] - quarter["packed_mb"]
    extra_growth = full["memory"]["anon_growth_mb"] - quarter["memory"]["anon_growth_mb"]
    marginal = extra_growth / extra_packed if extra_packed > 0 else None
    row = ratio_row(
        "memory", "packing: RSS growth / packed array size",
        {"peak_rss_mb": full["memory"]["peak_mb"], "growth_mb": full["memory"]["growth_mb"],
         "anon_growth_mb": full["memory"]["anon_growth_mb"],
         "anon_growth_quarter_mb": quarter["memory"]["anon_growth_mb"], "packed_mb": full["packed_mb"],
         "marginal": marginal},
        "anon_growth_mb", "packed_mb", 0.5, "<= 0.5x; marginal <= 0.25", higher_is_better=False,
        note=f"{full['images']} and {quarter['images']} images packed in {where}; growth = anonymous memory "
             "(the memory-mapped cache's file pages are page cache, excluded); marginal = extra growth per "
             f"extra packed MB from N/4 to N images (holding the pixels would give >= 1)"
             + ("; dataset too small to judge" if full["packed_mb"] < 50 else ""),
    )
    if row.passed is not None and marginal is not None:
        row.passed = bool(row.passed and marginal <= 0.25)
    memory = train["memory"]
    return [row, BenchRow(
        "memory", "training (baseline CNN, 1 epoch from the cache): peak RSS",
        {"peak_rss_mb": memory["peak_mb"], "growth_mb": memory["growth_mb"],
         "anon_growth_mb": memory["anon_growth_mb"], "packed_mb": train["packed_mb"]},
        ratio=memory["anon_growth_mb"] / train["packed_mb"], target="report", passed=None,
        note=f"{train['train_images']} images streamed from the memory-mapped cache in {where}; "
             "ratio = anonymous growth / packed array size (TensorFlow's own buffers included)",
    )]


def bench_large_images(context: BenchContext) -> list[BenchRow]:
    """Peak RSS of ``bclib predict`` (a fresh process each) on RGBA PNGs at the decoder's pixel cap
    against 50x50 patches: decoding large images must stay within bounded memory."""
    import shutil

    from PIL import Image

    from bclib.data.imageio import MAX_PIXELS
    from bclib.models.builders import baseline_cnn

    model_path = saved_for_predict(baseline_cnn(50), context.work_dir / "large_model", 50)
    measured = {}
    for name, side, count in (("patches", 50, 64), ("large", math.isqrt(MAX_PIXELS), 4)):
        folder = context.work_dir / f"large_{name}"
        folder.mkdir()
        rgba = np.full((side, side, 4), (230, 200, 220, 255), np.uint8)
        rgba[: side // 3, : side // 2] = (150, 60, 120, 128)
        Image.fromarray(rgba, "RGBA").save(folder / "0.png")
        for number in range(1, count):
            shutil.copyfile(folder / "0.png", folder / f"{number}.png")
        script = ("import resource, sys; from bclib.run.cli import main; code = main(sys.argv[1:]); "
                  "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024); sys.exit(code)")
        output = run_fresh_python(["-c", script, "predict", "--model", str(model_path), str(folder)],
                                  f"bclib predict on {name}")
        measured[f"{name}_peak_rss_mb"] = float(output.split()[-1])
    return [ratio_row("large", "bclib predict peak RSS: large images / 50x50 patches", measured,
                      "large_peak_rss_mb", "patches_peak_rss_mb", 1.5, "<= 1.5x", higher_is_better=False,
                      note=f"4 RGBA PNGs of {math.isqrt(MAX_PIXELS)}^2 pixels (bclib.data.imageio.MAX_PIXELS) "
                           "against 64 patches, baseline CNN, each folder in a fresh process")]


SECTION_FUNCTIONS: dict[str, Callable[[BenchContext], list[BenchRow]]] = {
    "pack": bench_pack, "pipeline": bench_pipeline, "features": bench_features,
    "inference": bench_inference, "app": bench_app, "memory": bench_memory, "large": bench_large_images,
}
SECTIONS = tuple(SECTION_FUNCTIONS)


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
    from bclib.data.synthetic import make_synthetic_idc

    if tiny:
        data = make_synthetic_idc(work_dir / "synthetic", n_patients=8, patches_per_patient=24, seed=settings.seed)
    index = scan(dataset, data)
    if settings.max_images and len(index) > settings.max_images:
        index = index.subset(subsample(len(index), settings.max_images, settings.seed))
    if len(index) < 16:
        raise BenchError(f"the bench needs at least 16 images, the dataset has {len(index)}")
    return index


def run_bench(data: str | os.PathLike | None = None, dataset: str = "idc", tiny: bool = False,
              only: str | Sequence[str] | None = None, settings: BenchSettings | None = None,
              log: Callable[[str], Any] = print) -> BenchReport:
    """Measure the chosen sections on ``data`` (or a tiny synthetic IDC set) and return the report.

    A section that fails is recorded as an ``error`` row with its message; the others still run.
    Scratch files (fresh caches, a saved model, a folder of links) live in a temporary folder.
    """
    from bclib import devices
    from bclib.profiles import PACK_SIZES

    sections = parse_sections(only)
    if tiny and dataset != "idc":
        raise BenchError("--tiny generates IDC-like data; drop --dataset")
    settings = settings or (tiny_settings() if tiny else BenchSettings())
    started = time.perf_counter()
    devices.configure()  # as the series does
    environment = describe_environment()
    rows: list[BenchRow] = []
    section_seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bclib-bench-") as scratch:
        index = _load_index(dataset, data, tiny, Path(scratch), settings)
        settings = replace(settings, pack_size=settings.pack_size or PACK_SIZES[index.name])
        context = BenchContext(index, settings, Path(scratch))
        data_info = {"dataset": "synthetic-idc" if tiny else dataset, "root": str(index.root), "images": len(index),
                     "synthetic": bool(index.synthetic)}
        log(f"bench: {len(index)} images from {index.root}; sections {', '.join(sections)}")
        for name in sections:
            section_start = time.perf_counter()
            try:
                rows.extend(SECTION_FUNCTIONS[name](context))
            except Exception as error:  # one broken section must not hide the others
                rows.append(BenchRow(name, name, {}, note=f"{type(error).__name__}: {error}", status="error"))
            section_seconds[name] = time.perf_counter() - section_start
            log(f"  {name}: {section_seconds[name]:.1f} s")
    return BenchReport(rows=rows, environment=environment, settings=asdict(settings), data=data_info,
                       sections=sections, section_seconds=section_seconds, seconds=time.perf_counter() - started)
