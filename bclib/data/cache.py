"""Packed image cache: every image decoded once, fitted into a square, into a memory-mapped ``uint8`` array.

The folder is keyed by dataset, image size and content hash, so changed files give a new cache. The
hash reads each file's size and modification time, not its bytes: a file rewritten in place with the
same size and its modification time put back keeps serving the old pixels until the cache folder is
deleted; ``bclib data check --deep`` (:func:`bclib.data.check.check_dataset` with
:func:`packed_caches`) compares every cached image with its file and names such a cache. It
is written chunk by chunk (memory stays bounded) into a temporary sibling folder, renamed into place
once a completion marker is in it: an interrupted pack never looks complete. Reopening only maps it.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from bclib import paths
from bclib.data.imageio import fit_to_square
from bclib.data.index import DatasetIndex, Problem, decode_all

#: Bump when the cache layout changes; part of every cache key.
CACHE_VERSION = 1
COMPLETE_MARKER = "COMPLETE"
IMAGES_FILE = "images.npy"
POSITIONS_FILE = "positions.npy"
FAILED_FILE = "failed.json"
META_FILE = "meta.json"
LAST_USED_FILE = "LAST_USED"  # its modification time: when the cache was last opened


class CacheError(ValueError):
    """A cache folder is unusable (for example its files disagree with each other)."""


@dataclass(eq=False)
class PackedCache:
    """A complete packed cache.

    ``images[i]`` (memory-mapped, ``N x S x S x 3`` uint8) is row ``i`` of ``index`` (the rows
    that decoded) and ``labels[i]`` its label; ``positions[i]`` is that row's position in the
    index that was packed; ``failed`` lists the files that could not be decoded.
    """

    directory: Path
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


def cache_key(index: DatasetIndex, image_size: int | str) -> str:
    """The folder name of ``index``'s cache at ``image_size``: dataset, size and content hash
    (``image_size="*"`` gives the glob pattern of every size)."""
    safe_name = "".join(c if c.isalnum() or c in "-_" else "-" for c in index.name)
    return f"{safe_name}-{image_size}px-{index.content_hash()}-v{CACHE_VERSION}"


def packed_caches(index: DatasetIndex, cache_root: str | os.PathLike | None = None) -> list[PackedCache]:
    """The complete caches of ``index`` (same content hash) under ``cache_root``, at every image size."""
    root = Path(cache_root) if cache_root is not None else paths.cache_dir()
    found = []
    for directory in sorted(root.glob(cache_key(index, "*"))):
        size = directory.name.rsplit("px-", 1)[0].rsplit("-", 1)[-1]
        if size.isdigit() and is_complete(directory):
            found.append(_open(directory, index, int(size), reused=True, seconds=0.0, record_use=False))
    return sorted(found, key=lambda cache: cache.image_size)


def is_complete(directory: str | os.PathLike) -> bool:
    """True when ``directory`` holds a finished cache (its completion marker exists)."""
    return (Path(directory) / COMPLETE_MARKER).is_file()


def mark_used(path: Path) -> None:
    """Record that a cache (folder) or a cache file was just used (for clean-ups by last use)."""
    try:
        if path.is_dir():
            (path / LAST_USED_FILE).touch()
        else:
            os.utime(path)
    except OSError:  # a read-only cache stays usable
        pass


def _write_cache(index: DatasetIndex, image_size: int, folder: Path, chunk_size: int, progress: bool, workers: int) -> None:
    """Decode ``index`` into ``folder`` (files only; the caller writes the marker and renames)."""
    images_path = folder / IMAGES_FILE
    images = npy_format.open_memmap(images_path, mode="w+", dtype=np.uint8, shape=(len(index), image_size, image_size, 3))
    kept: list[int] = []
    failed: list[Problem] = []
    description = f"packing {index.name} at {image_size}px" if progress else None
    for chunk in decode_all(index, lambda image: fit_to_square(image, image_size), workers, chunk_size, description):
        failed += [result for _, result in chunk if isinstance(result, Problem)]
        good = [(position, result) for position, result in chunk if not isinstance(result, Problem)]
        if good:
            images[len(kept):len(kept) + len(good)] = np.stack([image for _, image in good])
            kept += [position for position, _ in good]
    images.flush()
    del images
    if failed:  # keep only the rows that were written
        trimmed_path = folder / f"trimmed-{IMAGES_FILE}"
        np.save(trimmed_path, np.load(images_path, mmap_mode="r")[: len(kept)])
        os.replace(trimmed_path, images_path)
    np.save(folder / POSITIONS_FILE, np.asarray(kept, dtype=np.int64))
    (folder / FAILED_FILE).write_text(json.dumps([problem.to_dict() for problem in failed], indent=1))
    meta = {
        "dataset": index.name,
        "root": str(index.root),
        "content_hash": index.content_hash(),
        "image_size": int(image_size),
        "images": len(kept),
        "failed": len(failed),
        "class_names": list(index.class_names),
        "synthetic": bool(index.synthetic),
        "version": CACHE_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=1))


def _open(directory: Path, index: DatasetIndex, image_size: int, reused: bool, seconds: float,
          record_use: bool = True) -> PackedCache:
    if record_use:
        mark_used(directory)
    images = np.load(directory / IMAGES_FILE, mmap_mode="r")
    positions = np.load(directory / POSITIONS_FILE)
    if len(images) != len(positions) or images.shape[1:] != (image_size, image_size, 3):
        raise CacheError(f"the cache in {str(directory)!r} is inconsistent; delete the folder and pack again")
    if len(positions) and positions.max() >= len(index):
        raise CacheError(f"the cache in {str(directory)!r} does not match this index; delete it and pack again")
    packed_index = index.subset(positions)
    return PackedCache(
        directory=directory,
        image_size=int(image_size),
        images=images,
        labels=packed_index.labels,
        positions=positions,
        index=packed_index,
        failed=[Problem(**item) for item in json.loads((directory / FAILED_FILE).read_text())],
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
    threads decode in parallel.
    """
    image_size, chunk_size = int(image_size), int(chunk_size)
    if image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    if len(index) == 0:
        raise ValueError(f"cannot pack {index.name!r}: the index holds no images")
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
        shutil.rmtree(building, ignore_errors=True)
    return _open(directory, index, image_size, reused=False, seconds=time.perf_counter() - started)
