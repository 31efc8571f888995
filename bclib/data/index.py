"""The index of a dataset: one row per image, shared by every scanner."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from bclib.data.imageio import read_image

REQUIRED_COLUMNS = ("path", "label", "label_name", "patient_id")


class DatasetError(ValueError):
    """A dataset folder is missing, empty, or not in the expected layout."""


def mismatch_error(files: list[str], what: str, shown: int = 20) -> DatasetError:
    """The error for files whose name and folder give different labels, naming the files.

    ``what`` completes the sentence "N <what>", e.g. "IDC file(s) have a class in their name ...".
    """
    listed = "\n  ".join(files[:shown])
    more = f"\n  ... and {len(files) - shown} more" if len(files) > shown else ""
    return DatasetError(f"{len(files)} {what} (fix or remove them in your copy):\n  {listed}{more}")


@dataclass(frozen=True)
class Problem:
    """A file that was skipped, and why."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


def _read_path(row: pd.Series) -> np.ndarray:
    return read_image(row["path"])


@dataclass
class DatasetIndex:
    """A scanned dataset: the index DataFrame plus what is needed to read and name it.

    ``frame`` has one row per image with at least ``path``, ``label`` (0..C-1),
    ``label_name`` and ``patient_id``; ``class_names[label]`` names each label.
    ``positive_label`` is the label of the disease class for binary datasets.
    """

    name: str
    root: Path
    frame: pd.DataFrame
    class_names: list[str]
    problems: list[Problem] = field(default_factory=list)
    ignored_files: int = 0
    options: dict = field(default_factory=dict)
    synthetic: bool = False
    positive_label: int | None = 1
    reader: Callable[[pd.Series], np.ndarray] = _read_path

    def __post_init__(self) -> None:
        missing = [column for column in REQUIRED_COLUMNS if column not in self.frame.columns]
        if missing:
            raise ValueError(f"index frame lacks columns {missing}")
        self.frame = self.frame.reset_index(drop=True)
        self.frame["label"] = self.frame["label"].astype(int)
        self.frame["patient_id"] = self.frame["patient_id"].astype(str)
        if len(self.frame) and (self.frame["label"].min() < 0 or self.frame["label"].max() >= len(self.class_names)):
            raise ValueError(
                f"labels must lie in 0..{len(self.class_names) - 1} for classes {self.class_names}"
            )
        if len(self.class_names) != 2:
            self.positive_label = None if self.positive_label == 1 and len(self.class_names) > 2 else self.positive_label

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def labels(self) -> np.ndarray:
        return self.frame["label"].to_numpy(dtype=np.int64)

    def load_image(self, position: int) -> np.ndarray:
        """Decode the image at row ``position`` into ``H x W x 3`` RGB uint8."""
        return self.reader(self.frame.iloc[position])

    def subset(self, positions: Iterable[int] | np.ndarray) -> "DatasetIndex":
        """A new index with only the given rows (renumbered 0..k-1), same classes and reader."""
        positions = np.asarray(list(positions) if not isinstance(positions, np.ndarray) else positions)
        if positions.dtype == bool:
            positions = np.flatnonzero(positions)
        frame = self.frame.iloc[positions].reset_index(drop=True)
        return replace(self, frame=frame, problems=list(self.problems))

    def counts(self) -> dict:
        """Images, patients and images per class (by name), plus skipped and ignored files."""
        per_class = {name: int((self.frame["label"] == label).sum()) for label, name in enumerate(self.class_names)}
        return {
            "dataset": self.name,
            "root": str(self.root),
            "images": int(len(self.frame)),
            "patients": int(self.frame["patient_id"].nunique()),
            "per_class": per_class,
            "unreadable": len(self.problems),
            "ignored_files": int(self.ignored_files),
            "synthetic": bool(self.synthetic),
        }

    def content_hash(self) -> str:
        """A fingerprint of the file list (relative paths, sizes, mtimes) and labels.

        Cheap (no image is read), and it changes whenever a file is added, removed,
        replaced or relabelled; used to key caches and recorded in model cards.
        """
        digest = hashlib.sha256()
        digest.update(f"{self.name}|{sorted(self.options.items())}|{self.class_names}".encode())
        root = str(Path(self.root))
        prefix = root.rstrip(os.sep) + os.sep
        extra = [c for c in ("array_key", "array_position", "cx", "cy", "radius") if c in self.frame.columns]
        stats: dict[str, tuple[int, int]] = {}  # array datasets repeat one file on every row
        lines = []
        for row in self.frame[["path", "label", *extra]].itertuples(index=False):
            path = str(row[0])
            if path not in stats:
                try:
                    stat = os.stat(path)
                    stats[path] = (stat.st_size, int(stat.st_mtime))
                except OSError:
                    stats[path] = (-1, -1)
            size, mtime = stats[path]
            if path.startswith(prefix):
                relative = path[len(prefix):]
            else:
                relative = "." if path == root else os.path.basename(path)
            lines.append(f"{relative}|{size}|{mtime}|{'|'.join(str(v) for v in row[1:])}\n")
        digest.update("".join(lines).encode())
        return digest.hexdigest()[:16]
