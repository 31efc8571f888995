"""PatchCamelyon (PCam) scanner: the official HDF5 files ``camelyonpatch_level_2_split_<train|valid|test>_<x|y>.h5``.

``x`` holds 96x96 RGB patches, ``y`` their labels: 1 (positive) when the centre 32x32 region holds
metastatic tissue. The official split is column ``split``; PCam publishes no patient or slide ids,
so every patch is its own patient and only the official split keeps slides apart. Rows are not
files: ``path`` is the split's ``_x.h5`` file, read one patch at a time.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from bclib.data.imageio import ImageReadError
from bclib.data.index import (DatasetError, DatasetIndex, array_row_image, array_rows, binary_labels, existing_path,
                              files_in_one_folder)

CLASS_NAMES = ["non-metastatic", "metastatic"]
#: Our split name -> the name in the PCam file names.
FILE_SPLITS = {"train": "train", "val": "valid", "test": "test"}
SPLITS = tuple(FILE_SPLITS)
FILE_TEMPLATE = "camelyonpatch_level_2_split_{split}_{part}.h5"
EXPECTED_LAYOUT = (
    "expected the PCam HDF5 files camelyonpatch_level_2_split_<train|valid|test>_<x|y>.h5 "
    "(unzipped; dataset 'x' (N, 96, 96, 3) uint8 and 'y' (N, 1, 1, 1)) in the folder or one folder below"
)


@functools.lru_cache(maxsize=None)
def _open(process_id: int, path: str) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise ImageReadError(f"{path}: cannot open the HDF5 file ({error})") from None


def open_file(path: str | os.PathLike) -> h5py.File:
    """A read-only handle on ``path``, opened once per process (a forked child opens its own)."""
    return _open(os.getpid(), str(Path(path).resolve()))


def read_row(row: pd.Series) -> np.ndarray:
    """The patch of one index row as ``96 x 96 x 3`` uint8 (the index's reader)."""
    return array_row_image(open_file(row["path"]), row)


def _split_labels(folder: Path, split: str) -> tuple[Path, np.ndarray] | None:
    """``(x file, labels)`` of one split, ``None`` when its files are absent; errors when malformed."""
    x_path, y_path = (folder / FILE_TEMPLATE.format(split=FILE_SPLITS[split], part=part) for part in ("x", "y"))
    for file in (x_path, y_path):
        if not file.is_file() and Path(f"{file}.gz").is_file():
            raise DatasetError(f"{file}.gz is still compressed: run `gunzip {file}.gz` first")
    if not x_path.is_file():
        return None
    if not y_path.is_file():
        raise DatasetError(f"{x_path.name} has no label file {y_path.name}; {EXPECTED_LAYOUT}")
    try:
        with h5py.File(x_path, "r") as x_file, h5py.File(y_path, "r") as y_file:
            if "x" not in x_file or "y" not in y_file:
                raise DatasetError(f"{x_path.name} needs dataset 'x' and {y_path.name} dataset 'y'; {EXPECTED_LAYOUT}")
            shape, labels = x_file["x"].shape, y_file["y"][...]
    except OSError as error:
        raise DatasetError(f"cannot read {x_path.name} / {y_path.name} as HDF5 ({error}); {EXPECTED_LAYOUT}") from None
    if len(shape) != 4 or shape[3] != 3 or shape[0] != labels.size:
        raise DatasetError(f"{x_path.name}: x has shape {shape} and y {labels.size} labels; {EXPECTED_LAYOUT}")
    return x_path, binary_labels(labels, y_path.name, "PCam")


def scan(path: str | os.PathLike, splits: Sequence[str] | None = None) -> DatasetIndex:
    """Index the PCam patches of the official splits found under ``path``.

    ``splits`` keeps some of ``train``/``val``/``test`` (default: every split present; a split
    asked for but absent is an error). Columns: ``split``, ``array_key``, ``array_position``.
    """
    wanted = list(SPLITS) if splits is None else [str(split) for split in splits]
    if not wanted or any(split not in SPLITS for split in wanted):
        raise ValueError(f"splits must name some of {list(SPLITS)}, got {splits!r}")
    path = existing_path(path, "PCam path", EXPECTED_LAYOUT, folder=False)
    folder = files_in_one_folder(path.parent if path.is_file() else path, "camelyonpatch_level_2_split_*_x.h5*",
                                 "PCam files", EXPECTED_LAYOUT)[0].parent
    frames = []
    for split in wanted:
        found = _split_labels(folder, split)
        if found is None and splits is not None:
            raise DatasetError(f"PCam split {split!r} requested but its files are not in {str(folder)!r}")
        if found is not None:
            frames.append(array_rows(found[0], found[1], split, "x", 6))
    if not frames:
        raise DatasetError(f"no PCam split found in {str(folder)!r}; {EXPECTED_LAYOUT}")
    frame = pd.concat(frames, ignore_index=True)
    return DatasetIndex(
        name="pcam",
        root=folder,
        frame=frame,
        class_names=list(CLASS_NAMES),
        options={"splits": tuple(split for split in SPLITS if split in set(frame["split"])),
                 "patient_ids": "none published: one id per image"},
        positive_label=1,
        reader=read_row,
    )
