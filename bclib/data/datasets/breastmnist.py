"""BreastMNIST (MedMNIST v2) scanner: the official ``breastmnist.npz`` of 28x28 grayscale ultrasound images.

Labels are kept as the file has them: **0 = malignant, 1 = normal/benign**, so ``positive_label``
is 0 here (code must read it, never assume label 1 is the disease). MedMNIST publishes no patient
ids, so every image is its own patient; prefer the official split (column ``split``), which
published results use. Rows are not files: ``path`` is the npz file (its size and modification
time enter the content hash) and ``array_key`` / ``array_position`` say which image.
"""
from __future__ import annotations

import functools
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from bclib.data.imageio import ImageReadError
from bclib.data.index import (DatasetError, DatasetIndex, array_row_image, array_rows, binary_labels, existing_path,
                              files_in_one_folder)

CLASS_NAMES = ["malignant", "normal/benign"]
POSITIVE_LABEL = 0
FILE_NAME = "breastmnist.npz"
SPLITS = ("train", "val", "test")
EXPECTED_LAYOUT = (
    f"expected the MedMNIST file {FILE_NAME} (keys train_images, val_images, test_images and "
    "train_labels, val_labels, test_labels), or a folder holding it"
)


@functools.lru_cache(maxsize=4)
def _load(path: str, size: int, modified_ns: int) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: np.asarray(data[name]) for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise DatasetError(
            f"{path} is not a readable npz file ({type(error).__name__}: {error}): it is damaged or incomplete, "
            "as an interrupted download or copy leaves it; delete it and download it again "
            f"(bclib data download breastmnist --dest {Path(path).parent} --force)"
        ) from None


def load_arrays(npz_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of the npz, read once per file version (size and modification time) per process."""
    path = Path(npz_path).resolve()
    try:
        stat = path.stat()
    except OSError as error:
        raise ImageReadError(f"{path}: cannot open the BreastMNIST file ({error})") from None
    return _load(str(path), stat.st_size, stat.st_mtime_ns)


def read_row(row: pd.Series) -> np.ndarray:
    """The image of one index row as ``H x W x 3`` uint8 (the reader set on the index)."""
    return array_row_image(load_arrays(row["path"]), row)


def _split_labels(npz_path: Path, arrays: dict[str, np.ndarray], split: str) -> np.ndarray:
    """The labels of one split, after checking that they match its images."""
    images, labels_key = arrays[f"{split}_images"], f"{split}_labels"
    if labels_key not in arrays:
        raise DatasetError(f"{npz_path}: {split}_images has no {labels_key}; {EXPECTED_LAYOUT}")
    if images.ndim not in (3, 4) or len(images) != arrays[labels_key].size:
        raise DatasetError(
            f"{npz_path}: {split}_images has shape {images.shape} and {labels_key} {arrays[labels_key].shape}; "
            "expected (N, H, W[, C]) images and N labels"
        )
    return binary_labels(arrays[labels_key], f"{npz_path}: {labels_key}", "BreastMNIST")


def scan(path: str | os.PathLike) -> DatasetIndex:
    """Index every image of the BreastMNIST npz at ``path`` (the file or a folder holding it)."""
    path = existing_path(path, "BreastMNIST path", EXPECTED_LAYOUT, folder=False)
    npz_path = path if path.is_file() else files_in_one_folder(path, FILE_NAME, FILE_NAME, EXPECTED_LAYOUT)[0]
    arrays = load_arrays(npz_path)
    present = [split for split in SPLITS if f"{split}_images" in arrays]
    if not present:
        raise DatasetError(f"{npz_path} has keys {sorted(arrays)}; {EXPECTED_LAYOUT}")
    frames = [array_rows(npz_path, _split_labels(npz_path, arrays, split), split, f"{split}_images", 5)
              for split in present]
    return DatasetIndex(
        name="breastmnist",
        root=npz_path,
        frame=pd.concat(frames, ignore_index=True),
        class_names=list(CLASS_NAMES),
        options={"patient_ids": "none published: one id per image"},
        positive_label=POSITIVE_LABEL,
        reader=read_row,
    )
