"""BreastMNIST (MedMNIST v2) scanner: the official ``breastmnist.npz``.

The file holds ``train_images`` (546, 28, 28), ``val_images`` (78), ``test_images`` (156) as
uint8 grayscale ultrasound images and ``*_labels`` of shape (N, 1).

Labels are kept as the file has them: **0 = malignant, 1 = normal/benign**. So
``class_names == ["malignant", "normal/benign"]`` and ``positive_label == 0``: the disease is
label 0 here. Downstream code must read ``index.positive_label`` and never assume that label 1
is the disease.

MedMNIST publishes no patient ids, so every image is its own patient (``patient_id`` such as
``train-00005``); a "patient" split is then an image-level split. Prefer the official split
(column ``split``: train / val / test), which is what published BreastMNIST results use.

Rows are not files: ``path`` is the npz file itself (so :meth:`DatasetIndex.content_hash`
follows its size and modification time), and ``array_key`` / ``array_position`` say which
image; ``image_id`` (``<npz>#<split>/<position>``) names a row uniquely for people.
The reader loads the arrays once per file (lazily, cached) and replicates gray to RGB.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from bclib.data.index import DatasetError, DatasetIndex
from bclib.data.imageio import ImageReadError

CLASS_NAMES = ["malignant", "normal/benign"]
POSITIVE_LABEL = 0
FILE_NAME = "breastmnist.npz"
SPLITS = ("train", "val", "test")
EXPECTED_LAYOUT = (
    f"expected the MedMNIST file {FILE_NAME} (keys train_images, val_images, test_images and "
    "train_labels, val_labels, test_labels), or a folder holding it"
)

_ARRAYS: dict[tuple[str, int, int], dict[str, np.ndarray]] = {}
_ARRAYS_LOCK = threading.Lock()


def find_file(path: str | os.PathLike) -> Path:
    """The npz file: ``path`` itself, or ``breastmnist.npz`` in ``path`` or one folder below."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"BreastMNIST path {str(path)!r} does not exist; {EXPECTED_LAYOUT}")
    if path.is_file():
        return path
    for candidate in (path / FILE_NAME, path / "breastmnist" / FILE_NAME):
        if candidate.is_file():
            return candidate
    found = sorted(path.glob(f"*/{FILE_NAME}"))
    if len(found) == 1:
        return found[0]
    raise DatasetError(f"no {FILE_NAME} in {str(path)!r}; {EXPECTED_LAYOUT}")


def load_arrays(npz_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of the npz, read once per file version and cached for this process."""
    path = Path(npz_path)
    try:
        stat = path.stat()
    except OSError as error:
        raise ImageReadError(f"{path}: cannot open the BreastMNIST file ({error})") from None
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _ARRAYS_LOCK:
        cached = _ARRAYS.get(key)
        if cached is None:
            try:
                with np.load(path, allow_pickle=False) as data:
                    cached = {name: np.asarray(data[name]) for name in data.files}
            except (OSError, ValueError) as error:
                raise DatasetError(f"{path} is not a readable npz file ({error}); {EXPECTED_LAYOUT}") from None
            for old_key in [k for k in _ARRAYS if k[0] == key[0]]:
                del _ARRAYS[old_key]
            _ARRAYS[key] = cached
    return cached


def _to_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageReadError(f"unexpected BreastMNIST image shape {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def read_row(row: pd.Series) -> np.ndarray:
    """The image of one index row as ``H x W x 3`` uint8 (the reader set on the index)."""
    arrays = load_arrays(row["path"])
    key = row["array_key"]
    if key not in arrays:
        raise ImageReadError(f"{row['path']}: no array {key!r} (the file changed since it was scanned?)")
    return _to_rgb(arrays[key][int(row["array_position"])])


def _check_arrays(npz_path: Path, arrays: dict[str, np.ndarray]) -> list[str]:
    """The splits present, after checking shapes, dtypes and labels."""
    present = [split for split in SPLITS if f"{split}_images" in arrays]
    if not present:
        raise DatasetError(f"{npz_path} has keys {sorted(arrays)}; {EXPECTED_LAYOUT}")
    for split in present:
        images, labels_key = arrays[f"{split}_images"], f"{split}_labels"
        if labels_key not in arrays:
            raise DatasetError(f"{npz_path}: {split}_images has no {labels_key}; {EXPECTED_LAYOUT}")
        labels = arrays[labels_key].reshape(-1)
        if images.ndim not in (3, 4) or len(images) != len(labels):
            raise DatasetError(
                f"{npz_path}: {split}_images has shape {images.shape} and {labels_key} {arrays[labels_key].shape}; "
                "expected (N, H, W[, C]) images and N labels"
            )
        unexpected = sorted(set(np.unique(labels).tolist()) - {0, 1})
        if unexpected:
            raise DatasetError(f"{npz_path}: {labels_key} holds {unexpected}; BreastMNIST labels are 0 and 1")
    return present


def scan(path: str | os.PathLike) -> DatasetIndex:
    """Index every image of the BreastMNIST npz at ``path`` (the file or a folder holding it).

    One row per image with ``split`` (official train/val/test), ``array_key``,
    ``array_position`` and ``image_id``. Labels are the file's: 0 = malignant (the disease,
    ``positive_label == 0``), 1 = normal/benign. ``patient_id`` is one id per image (MedMNIST
    publishes no patient ids).
    """
    npz_path = find_file(path).resolve()
    arrays = load_arrays(npz_path)
    frames = []
    for split in _check_arrays(npz_path, arrays):
        labels = arrays[f"{split}_labels"].reshape(-1).astype(int)
        positions = np.arange(len(labels))
        frames.append(
            pd.DataFrame(
                {
                    "path": str(npz_path),
                    "label": labels,
                    "patient_id": [f"{split}-{position:05d}" for position in positions],
                    "split": split,
                    "array_key": f"{split}_images",
                    "array_position": positions,
                    "image_id": [f"{npz_path.name}#{split}/{position}" for position in positions],
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    frame.insert(2, "label_name", frame["label"].map(dict(enumerate(CLASS_NAMES))))
    return DatasetIndex(
        name="breastmnist",
        root=npz_path,
        frame=frame,
        class_names=list(CLASS_NAMES),
        options={"patient_ids": "none published: one id per image"},
        positive_label=POSITIVE_LABEL,
        reader=read_row,
    )
