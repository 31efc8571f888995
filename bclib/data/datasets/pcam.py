"""PatchCamelyon (PCam) scanner: the official HDF5 files.

Files: ``camelyonpatch_level_2_split_<train|valid|test>_<x|y>.h5``; ``x`` holds the patches
``(N, 96, 96, 3)`` uint8 and ``y`` the labels ``(N, 1, 1, 1)``: 1 when the patch's centre
32x32 region holds metastatic tumour tissue (the positive class, label 1).

The official split is kept in column ``split`` (``valid`` is written ``val``). PCam publishes
no patient (or slide) id per patch, so ``patient_id`` is one id per image (``train-000042``)
and a "patient" split is an image-level split: patches of one slide can then fall on both
sides. Use the official split for PCam.

Rows are not files: ``path`` is the split's ``_x.h5`` file and ``array_key`` /
``array_position`` say which patch. The reader opens each file once per process (cached,
read-only) and reads one patch at a time, so nothing large is loaded.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from bclib.data.index import DatasetError, DatasetIndex
from bclib.data.imageio import ImageReadError

CLASS_NAMES = ["non-metastatic", "metastatic"]
FILE_SPLITS = {"train": "train", "valid": "val", "test": "test"}
SPLITS = ("train", "val", "test")
FILE_TEMPLATE = "camelyonpatch_level_2_split_{split}_{part}.h5"
EXPECTED_LAYOUT = (
    "expected the PCam HDF5 files camelyonpatch_level_2_split_<train|valid|test>_<x|y>.h5 "
    "(unzipped; dataset 'x' (N, 96, 96, 3) uint8 and 'y' (N, 1, 1, 1)) in the folder or one folder below"
)

_OPEN_FILES: dict[tuple[int, str], h5py.File] = {}
_OPEN_LOCK = threading.Lock()


def _file_split_names(split: str) -> str:
    return {value: key for key, value in FILE_SPLITS.items()}[split]


def _has_pcam_files(folder: Path) -> bool:
    return any(folder.glob("camelyonpatch_level_2_split_*_x.h5*"))


def find_folder(path: str | os.PathLike) -> Path:
    """The folder holding the PCam files: ``path`` (or a file's folder) or one folder below."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"PCam path {str(path)!r} does not exist; {EXPECTED_LAYOUT}")
    folder = path.parent if path.is_file() else path
    if _has_pcam_files(folder):
        return folder
    below = sorted(p for p in folder.iterdir() if p.is_dir() and _has_pcam_files(p))
    if len(below) == 1:
        return below[0]
    raise DatasetError(f"no PCam files in {str(folder)!r}; {EXPECTED_LAYOUT}")


def open_file(path: str | os.PathLike) -> h5py.File:
    """A read-only handle on ``path``, opened once per process and kept open."""
    key = (os.getpid(), str(Path(path).resolve()))
    with _OPEN_LOCK:
        handle = _OPEN_FILES.get(key)
        if handle is None or not handle.id.valid:
            try:
                handle = h5py.File(key[1], "r")
            except OSError as error:
                raise ImageReadError(f"{path}: cannot open the HDF5 file ({error})") from None
            _OPEN_FILES[key] = handle
    return handle


def close_files() -> None:
    """Close every cached HDF5 handle of this process (e.g. before the files are replaced)."""
    with _OPEN_LOCK:
        for key in [k for k in _OPEN_FILES if k[0] == os.getpid()]:
            _OPEN_FILES.pop(key).close()


def read_row(row: pd.Series) -> np.ndarray:
    """The patch of one index row as ``96 x 96 x 3`` uint8 (the index's reader)."""
    handle = open_file(row["path"])
    key = row["array_key"]
    if key not in handle:
        raise ImageReadError(f"{row['path']}: no dataset {key!r}")
    with _OPEN_LOCK:
        patch = np.asarray(handle[key][int(row["array_position"])])
    if patch.ndim == 2:
        patch = np.repeat(patch[:, :, None], 3, axis=2)
    if patch.ndim != 3 or patch.shape[2] != 3:
        raise ImageReadError(f"{row['path']}: patch {row['array_position']} has shape {patch.shape}, expected HxWx3")
    return np.ascontiguousarray(patch, dtype=np.uint8)


def _read_split(folder: Path, split: str) -> tuple[Path, np.ndarray] | None:
    """``(x file, labels)`` of one split, ``None`` when its files are absent; errors when malformed."""
    name = _file_split_names(split)
    x_path = folder / FILE_TEMPLATE.format(split=name, part="x")
    y_path = folder / FILE_TEMPLATE.format(split=name, part="y")
    if not x_path.is_file():
        if Path(f"{x_path}.gz").is_file():
            raise DatasetError(f"{x_path}.gz is still compressed: run `gunzip {x_path}.gz` (and the _y file) first")
        return None
    if not y_path.is_file():
        hint = " (still compressed: gunzip it)" if Path(f"{y_path}.gz").is_file() else ""
        raise DatasetError(f"{x_path.name} has no label file {y_path.name}{hint}; {EXPECTED_LAYOUT}")
    try:
        with h5py.File(x_path, "r") as x_file, h5py.File(y_path, "r") as y_file:
            if "x" not in x_file or "y" not in y_file:
                raise DatasetError(f"{x_path.name} needs dataset 'x' and {y_path.name} dataset 'y'; {EXPECTED_LAYOUT}")
            shape = x_file["x"].shape
            labels = np.asarray(y_file["y"][...]).reshape(-1)
    except OSError as error:
        raise DatasetError(f"cannot read {x_path.name} / {y_path.name} as HDF5 ({error}); {EXPECTED_LAYOUT}") from None
    if len(shape) != 4 or shape[3] != 3 or shape[0] != len(labels):
        raise DatasetError(f"{x_path.name}: x has shape {shape} and y {len(labels)} labels; {EXPECTED_LAYOUT}")
    unexpected = sorted(set(np.unique(labels).tolist()) - {0, 1})
    if unexpected:
        raise DatasetError(f"{y_path.name} holds labels {unexpected}; PCam labels are 0 and 1")
    return x_path.resolve(), labels.astype(int)


def scan(path: str | os.PathLike, splits: Sequence[str] | None = None) -> DatasetIndex:
    """Index the PCam patches of the official splits found under ``path``.

    ``splits`` keeps some of ``train``/``val``/``test`` (default: every split present; a split
    asked for but absent is an error). Columns: ``split``, ``array_key``, ``array_position``.
    """
    wanted = list(SPLITS) if splits is None else [str(s) for s in splits]
    unknown = [s for s in wanted if s not in SPLITS]
    if unknown or not wanted:
        raise ValueError(f"splits must name some of {list(SPLITS)}, got {splits!r}")
    folder = find_folder(path)
    frames = []
    for split in wanted:
        found = _read_split(folder, split)
        if found is None:
            if splits is not None:
                raise DatasetError(f"PCam split {split!r} requested but its files are not in {str(folder)!r}")
            continue
        x_path, labels = found
        positions = np.arange(len(labels))
        frames.append(
            pd.DataFrame(
                {
                    "path": str(x_path),
                    "label": labels,
                    "patient_id": [f"{split}-{p:06d}" for p in positions],
                    "split": split,
                    "array_key": "x",
                    "array_position": positions,
                }
            )
        )
    if not frames:
        raise DatasetError(f"no PCam split found in {str(folder)!r}; {EXPECTED_LAYOUT}")
    frame = pd.concat(frames, ignore_index=True)
    frame.insert(2, "label_name", frame["label"].map(dict(enumerate(CLASS_NAMES))))
    return DatasetIndex(
        name="pcam",
        root=folder,
        frame=frame,
        class_names=list(CLASS_NAMES),
        options={"splits": tuple(sorted(set(frame["split"]), key=SPLITS.index)), "patient_ids": "none published: one id per image"},
        positive_label=1,
        reader=read_row,
    )
