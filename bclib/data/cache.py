"""Packed image cache: every image decoded once into a memory-mapped ``uint8`` array.

``pack(index, image_size)`` decodes each row of a :class:`DatasetIndex` (``index.load_image``),
fits it into an ``image_size`` square (padding smaller images, never stretching) and writes it
into ``images.npy`` chunk by chunk, so memory stays bounded whatever the dataset size. The
folder is keyed by the dataset name, its content hash and the image size, so changed files
give a new cache. It is built in a temporary sibling folder and renamed into place after a
completion marker is written: an interrupted pack never leaves a cache that looks complete.
Reopening a complete cache only maps the file (no decoding).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from numpy.lib import format as npy_format
from tqdm.auto import tqdm

from bclib import paths
from bclib.data.index import DatasetIndex, Problem
from bclib.data.imageio import ImageReadError, fit_to_square

#: Bump when the cache layout changes; part of every cache key.
CACHE_VERSION = 1
COMPLETE_MARKER = "COMPLETE"
IMAGES_FILE = "images.npy"
LABELS_FILE = "labels.npy"
POSITIONS_FILE = "positions.npy"
FRAME_FILE = "index.csv"
FAILED_FILE = "failed.json"
META_FILE = "meta.json"
LAST_USED_FILE = "LAST_USED"  # its modification time: when the cache was last opened


class CacheError(RuntimeError):
    """A cache folder is unusable (for example its files disagree with each other)."""


@dataclass(eq=False)
class PackedCache:
    """A complete packed cache.

    ``images[i]`` (memory-mapped, ``N x S x S x 3`` uint8) is row ``i`` of ``index`` (the rows
    that decoded) and ``labels[i]`` its label; ``positions[i]`` is that row's position in the
    index that was packed; ``failed`` lists the files that could not be decoded.
    """

    directory: Path
    key: str
    image_size: int
    images: np.ndarray
    labels: np.ndarray
    positions: np.ndarray
    index: DatasetIndex
    failed: list[Problem] = field(default_factory=list)
    reused: bool = False
    seconds: float = 0.0

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.images.nbytes)

    def summary(self) -> dict:
        """JSON-ready facts about the cache."""
        return {
            "directory": str(self.directory),
            "key": self.key,
            "image_size": self.image_size,
            "images": len(self),
            "failed": [problem.to_dict() for problem in self.failed],
            "megabytes": round(self.nbytes / 2**20, 1),
            "reused": self.reused,
            "seconds": round(self.seconds, 2),
        }


def cache_key(index: DatasetIndex, image_size: int) -> str:
    """The folder name of ``index``'s cache at ``image_size``: dataset, size and content hash."""
    safe_name = "".join(c if c.isalnum() or c in "-_" else "-" for c in index.name)
    return f"{safe_name}-{int(image_size)}px-{index.content_hash()}-v{CACHE_VERSION}"


def is_complete(directory: str | os.PathLike) -> bool:
    """True when ``directory`` holds a finished cache (its completion marker exists)."""
    return (Path(directory) / COMPLETE_MARKER).is_file()


def _decode(index: DatasetIndex, position: int, image_size: int) -> np.ndarray | Problem:
    try:
        image = index.load_image(position)
    except (ImageReadError, OSError) as error:
        return Problem(str(index.frame.at[position, "path"]), str(error))
    return fit_to_square(image, image_size)


def _decoded_chunks(index: DatasetIndex, image_size: int, chunk_size: int, workers: int) -> Iterator[list[tuple[int, np.ndarray | Problem]]]:
    """Yield lists of ``(position, image or Problem)``, in index order, ``chunk_size`` at a time."""
    executor = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        for start in range(0, len(index), chunk_size):
            positions = range(start, min(start + chunk_size, len(index)))
            if executor is None:
                results = [_decode(index, p, image_size) for p in positions]
            else:
                results = list(executor.map(lambda p: _decode(index, p, image_size), positions))
            yield list(zip(positions, results))
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


def _shrink_npy(path: Path, rows: int) -> None:
    """Cut a ``.npy`` file to its first ``rows`` rows in place (rewrite the header, truncate)."""
    with open(path, "r+b") as handle:
        version = npy_format.read_magic(handle)
        read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(handle)
        data_offset = handle.tell()
        new_shape = (rows, *shape[1:])
        header = repr({"descr": npy_format.dtype_to_descr(dtype), "fortran_order": fortran_order, "shape": new_shape})
        prefix = 6 + 2 + (2 if version == (1, 0) else 4)
        space = data_offset - prefix
        if len(header) + 1 > space:
            raise CacheError(f"cannot rewrite the header of {path}")
        handle.seek(prefix)
        handle.write((header + " " * (space - len(header) - 1) + "\n").encode("latin1"))
        handle.truncate(data_offset + rows * int(np.prod(new_shape[1:], dtype=np.int64)) * dtype.itemsize)


def _write_cache(index: DatasetIndex, image_size: int, folder: Path, chunk_size: int, progress: bool, workers: int) -> None:
    """Decode ``index`` into ``folder`` (files only; the caller writes the marker and renames)."""
    images = npy_format.open_memmap(folder / IMAGES_FILE, mode="w+", dtype=np.uint8, shape=(len(index), image_size, image_size, 3))
    written = 0
    ok_positions: list[int] = []
    failed: list[Problem] = []
    bar = tqdm(total=len(index), desc=f"packing {index.name} at {image_size}px", unit="img", disable=not progress)
    try:
        for chunk in _decoded_chunks(index, image_size, chunk_size, workers):
            good = [(p, r) for p, r in chunk if not isinstance(r, Problem)]
            failed.extend(r for _, r in chunk if isinstance(r, Problem))
            if good:
                images[written:written + len(good)] = np.stack([r for _, r in good])
                written += len(good)
                ok_positions.extend(p for p, _ in good)
            images.flush()
            bar.update(len(chunk))
    finally:
        bar.close()
        del images
    if written < len(index):
        _shrink_npy(folder / IMAGES_FILE, written)
    positions = np.asarray(ok_positions, dtype=np.int64)
    np.save(folder / POSITIONS_FILE, positions)
    np.save(folder / LABELS_FILE, index.labels[positions])
    index.frame.iloc[positions].to_csv(folder / FRAME_FILE, index=False)
    (folder / FAILED_FILE).write_text(json.dumps([p.to_dict() for p in failed], indent=1))
    meta = {
        "dataset": index.name,
        "root": str(index.root),
        "content_hash": index.content_hash(),
        "image_size": int(image_size),
        "images": int(written),
        "failed": len(failed),
        "class_names": list(index.class_names),
        "synthetic": bool(index.synthetic),
        "version": CACHE_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=1))


def mark_used(path: Path) -> None:
    """Record that a cache (folder) or a cache file was just used (for clean-ups by last use)."""
    try:
        if path.is_dir():
            (path / LAST_USED_FILE).touch()
        else:
            os.utime(path)
    except OSError:  # a read-only cache stays usable
        pass


def _open(directory: Path, index: DatasetIndex, image_size: int, reused: bool, seconds: float) -> PackedCache:
    mark_used(directory)
    images = np.load(directory / IMAGES_FILE, mmap_mode="r")
    labels = np.load(directory / LABELS_FILE)
    positions = np.load(directory / POSITIONS_FILE)
    failed = [Problem(**item) for item in json.loads((directory / FAILED_FILE).read_text())]
    if not (len(images) == len(labels) == len(positions)) or images.shape[1:] != (image_size, image_size, 3):
        raise CacheError(f"the cache in {str(directory)!r} is inconsistent; delete the folder and pack again")
    if len(positions) and positions.max() >= len(index):
        raise CacheError(f"the cache in {str(directory)!r} does not match this index; delete it and pack again")
    return PackedCache(
        directory=directory,
        key=directory.name,
        image_size=int(image_size),
        images=images,
        labels=labels,
        positions=positions,
        index=index.subset(positions),
        failed=failed,
        reused=reused,
        seconds=seconds,
    )


def pack(
    index: DatasetIndex,
    image_size: int,
    cache_root: str | os.PathLike | None = None,
    chunk_size: int = 1024,
    progress: bool = True,
    workers: int = 2,
) -> PackedCache:
    """Decode every image of ``index`` once into a memory-mapped cache; reuse it when complete.

    ``cache_root`` defaults to :func:`bclib.paths.cache_dir`. Undecodable files are skipped and
    listed in ``cache.failed`` (path and reason); ``cache.index`` is ``index.subset`` of the rows
    that decoded, so ``cache.images[i]`` belongs to ``cache.index.frame.iloc[i]``. ``workers``
    threads decode in parallel (1: no thread pool).
    """
    if int(image_size) < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    if len(index) == 0:
        raise ValueError(f"cannot pack {index.name!r}: the index holds no images")
    image_size, chunk_size, workers = int(image_size), int(chunk_size), max(1, int(workers))
    started = time.perf_counter()
    root = Path(cache_root) if cache_root is not None else paths.cache_dir()
    directory = root / cache_key(index, image_size)
    if is_complete(directory):
        return _open(directory, index, image_size, reused=True, seconds=time.perf_counter() - started)
    root.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{directory.name}.building-", dir=root))
    try:
        _write_cache(index, image_size, building, chunk_size, progress, workers)
        (building / COMPLETE_MARKER).write_text(f"complete {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
        if directory.exists() and not is_complete(directory):
            shutil.rmtree(directory)  # a stale, unfinished folder from an older layout
        try:
            os.replace(building, directory)
        except OSError:
            if not is_complete(directory):  # another process did not finish it either
                raise
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)
    return _open(directory, index, image_size, reused=False, seconds=time.perf_counter() - started)


def open_cache(directory: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Images (memory-mapped), labels and the index frame of a complete cache folder."""
    directory = Path(directory)
    if not is_complete(directory):
        raise CacheError(f"{str(directory)!r} is not a complete cache (no {COMPLETE_MARKER} marker)")
    return (
        np.load(directory / IMAGES_FILE, mmap_mode="r"),
        np.load(directory / LABELS_FILE),
        pd.read_csv(directory / FRAME_FILE, dtype={"patient_id": str}),
    )


__all__ = ["CacheError", "PackedCache", "cache_key", "is_complete", "mark_used", "open_cache", "pack"]
