"""The index of a dataset (one row per image, whatever the dataset) and what every scanner shares."""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from bclib.data.imageio import ImageReadError, array_to_rgb, is_image_file, read_image

#: Columns that, besides the file and the label, decide which pixels a row reads.
_PIXEL_COLUMNS = ("array_key", "array_position", "cx", "cy", "radius")


class DatasetError(ValueError):
    """A dataset folder is missing, empty, or not in the expected layout."""


@dataclass(frozen=True)
class Problem:
    """A file that was skipped, and why."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def line(self) -> str:
        """``path: reason`` on one line, control characters escaped (see :func:`one_line`)."""
        return f"{one_line(self.path)}: {one_line(self.reason)}"


#: What :func:`one_line` writes for each character that would break a line-per-file listing.
ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def one_line(text: str) -> str:
    """``text`` with backslash, tab, newline and carriage return written as ``\\\\``, ``\\t``,
    ``\\n``, ``\\r`` (other control characters as ``\\xNN``), so a file name stays on one line."""
    return "".join(ESCAPES.get(c, f"\\x{ord(c):02x}" if ord(c) < 32 or ord(c) == 127 else c) for c in text)


def _read_path(row: pd.Series) -> np.ndarray:
    return read_image(row["path"])


@dataclass
class DatasetIndex:
    """A scanned dataset: the index DataFrame plus what is needed to read and name it.

    ``frame`` has one row per image with at least ``path``, ``label`` (0..C-1) and
    ``patient_id``; ``label_name`` (``class_names[label]``) is added when missing.
    ``positive_label`` is the label of the disease class of a binary dataset (``None`` otherwise).
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
        missing = [column for column in ("path", "label", "patient_id") if column not in self.frame.columns]
        if missing:
            raise ValueError(f"index frame lacks columns {missing}")
        frame = self.frame.reset_index(drop=True)
        frame["label"] = frame["label"].astype(int)
        frame["patient_id"] = frame["patient_id"].astype(str)
        if not frame["label"].between(0, self.num_classes - 1).all():
            raise ValueError(f"labels must lie in 0..{self.num_classes - 1} for classes {self.class_names}")
        if "label_name" not in frame.columns:
            frame.insert(2, "label_name", frame["label"].map(dict(enumerate(self.class_names))))
        self.frame = frame
        if self.num_classes != 2:
            self.positive_label = None

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

    def subset(self, positions: Iterable[int] | np.ndarray) -> DatasetIndex:
        """A new index with only the given rows (renumbered 0..k-1; a boolean mask works too)."""
        rows = positions if isinstance(positions, np.ndarray) else np.fromiter(positions, dtype=np.int64)
        return replace(self, frame=self.frame.iloc[rows], problems=list(self.problems))

    def counts(self) -> dict:
        """Images, patients and images per class (by name), files the scan skipped and ignored
        non-image files. No image is decoded:
        :func:`bclib.data.check.check_dataset` finds the files that do not decode."""
        return {
            "dataset": self.name,
            "root": str(self.root),
            "images": len(self.frame),
            "patients": int(self.frame["patient_id"].nunique()),
            "per_class": {name: int((self.frame["label"] == label).sum()) for label, name in enumerate(self.class_names)},
            "skipped": len(self.problems),
            "ignored_files": int(self.ignored_files),
            "synthetic": bool(self.synthetic),
        }

    def content_hash(self) -> str:
        """A fingerprint of the file list (relative paths, sizes, mtimes), labels and options.

        Cheap (no image is read), and it changes whenever a file is added, removed, renamed,
        relabelled, or changes size or modification time; used to key caches and recorded in model
        cards. A file rewritten in place with its size and modification time kept gives the same
        hash: ``bclib data check --deep`` compares the packed caches with the files.
        """
        digest = hashlib.sha256(f"{self.name}|{sorted(self.options.items())}|{self.class_names}".encode())
        root = str(Path(self.root))
        prefix = root.rstrip(os.sep) + os.sep
        stats = {path: _size_and_mtime(path) for path in self.frame["path"].unique()}  # array files repeat
        columns = ["path", "label", *(c for c in _PIXEL_COLUMNS if c in self.frame.columns)]
        lines = []
        for path, *values in self.frame[columns].itertuples(index=False):
            relative = path[len(prefix):] if path.startswith(prefix) else "." if path == root else os.path.basename(path)
            size, mtime = stats[path]
            lines.append(f"{relative}|{size}|{mtime}|{'|'.join(map(str, values))}\n")
        digest.update("".join(lines).encode())
        return digest.hexdigest()[:16]


def _size_and_mtime(path: str) -> tuple[int, int]:
    try:
        stat = os.stat(path)
    except OSError:
        return -1, -1
    return stat.st_size, int(stat.st_mtime)


def decode_all(index: DatasetIndex, transform: Callable[[np.ndarray], Any], workers: int = 2,
               chunk_size: int = 256, description: str | None = None) -> Iterator[list[tuple[int, Any]]]:
    """Decode every row of ``index`` in order with ``workers`` threads, ``chunk_size`` rows at a time.

    Yields lists of ``(position, transform(image))``, with a :class:`Problem` in place of an image
    that does not decode; only one chunk is in memory. ``description`` shows a progress bar.
    """
    def decode(position: int) -> Any:
        try:
            return transform(index.load_image(position))
        except (ImageReadError, OSError) as error:
            return Problem(str(index.frame.at[position, "path"]), str(error))

    with ThreadPoolExecutor(max(1, int(workers))) as executor, \
            tqdm(total=len(index), desc=description, unit="img", disable=description is None) as bar:
        for start in range(0, len(index), chunk_size):
            positions = range(start, min(start + chunk_size, len(index)))
            yield list(zip(positions, executor.map(decode, positions)))
            bar.update(len(positions))


# ---- helpers of the scanners -------------------------------------------------------------------

def existing_path(path: str | os.PathLike, what: str, layout: str, folder: bool = True) -> Path:
    """``path`` made absolute; a DatasetError naming the expected ``layout`` when it is missing
    (or, with ``folder``, not a folder)."""
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise DatasetError(f"{what} {str(path)!r} does not exist; {layout}")
    if folder and not path.is_dir():
        raise DatasetError(f"{what} {str(path)!r} is not a folder; {layout}")
    return path


def deepest_folder(path: Path, nested: Iterable[str], is_root: Callable[[Path], bool]) -> Path | None:
    """The deepest folder of ``path`` and its chain of ``nested`` sub-folders (each followed where
    present) for which ``is_root`` holds, or ``None``."""
    chain = [path]
    for name in nested:
        if (chain[-1] / name).is_dir():
            chain.append(chain[-1] / name)
    return next((folder for folder in reversed(chain) if is_root(folder)), None)


def files_in_one_folder(path: Path, pattern: str, what: str, layout: str, depth: int = 1) -> list[Path]:
    """The files matching ``pattern`` in the one folder (``path`` or at most ``depth`` levels below)
    that holds any; a DatasetError when none does, or several folders at the same level do."""
    for level in range(depth + 1):
        found = sorted(match for match in path.glob("*/" * level + pattern) if match.is_file())
        folders = sorted({match.parent for match in found})
        if len(folders) == 1:
            return found
        if folders:
            raise DatasetError(f"several folders under {str(path)!r} hold {what} "
                               f"({', '.join(map(str, folders))}); pass one of them")
    raise DatasetError(f"no {what} found in {str(path)!r}; {layout}")


def _identity(path: str | os.PathLike) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def image_files(folder: Path, not_counted: Iterable[str] = (),
                problems: list[Problem] | None = None) -> tuple[list[str], int]:
    """The image files under ``folder`` (sorted, nested folders included, hidden folders skipped)
    and the number of other files, except those named in ``not_counted``.

    Symbolically linked folders are followed, each real folder once. A link to ``folder`` itself,
    to a folder inside or above it, or to one already walked (a loop) is not followed and is added
    to ``problems``: its images would be indexed twice.
    """
    images: list[str] = []
    ignored = 0
    inside = os.path.realpath(folder)
    walked = {_identity(folder)}

    def within(path: str, parent: str) -> bool:
        return path == parent or path.startswith(parent.rstrip(os.sep) + os.sep)

    def follow(directory: str, name: str) -> bool:
        path = os.path.join(directory, name)
        if name.startswith("."):
            return False
        identity = _identity(path)
        if os.path.islink(path):
            target = os.path.realpath(path)
            if identity in walked or within(target, inside) or within(inside, target):
                if problems is not None:
                    problems.append(Problem(path, f"symbolic link to {target}, which is this dataset folder, "
                                                  "inside or above it, or already walked: not followed, so no "
                                                  "image is indexed twice"))
                return False
        elif identity in walked:
            return False
        walked.add(identity)
        return True

    for directory, subdirectories, files in os.walk(folder, followlinks=True):
        subdirectories[:] = [name for name in sorted(subdirectories) if follow(directory, name)]
        for name in sorted(files):
            if is_image_file(name):
                images.append(os.path.join(directory, name))
            elif name not in not_counted:
                ignored += 1
    return images, ignored


def mismatch_error(files: list[str], what: str, shown: int = 20) -> DatasetError:
    """The error for files whose name and folders give different labels, naming the files.

    ``what`` completes the sentence "N <what>", e.g. "IDC file(s) have a class in their name ...".
    """
    listed = "\n  ".join(files[:shown])
    more = f"\n  ... and {len(files) - shown} more" if len(files) > shown else ""
    return DatasetError(f"{len(files)} {what} (fix or remove them in your copy):\n  {listed}{more}")


def binary_labels(labels: np.ndarray, where: str, dataset: str) -> np.ndarray:
    """``labels`` flattened to ints; a DatasetError when any is not 0 or 1."""
    labels = np.asarray(labels).reshape(-1)
    unexpected = sorted(set(np.unique(labels).tolist()) - {0, 1})
    if unexpected:
        raise DatasetError(f"{where} holds {unexpected}; {dataset} labels are 0 and 1")
    return labels.astype(int)


def array_rows(path: Path, labels: np.ndarray, split: str, array_key: str, digits: int) -> pd.DataFrame:
    """Index rows of the images stored in one array of ``path`` (one official split).

    Such datasets publish no patient ids, so each image is its own patient (``train-000042``).
    """
    positions = np.arange(len(labels))
    return pd.DataFrame({
        "path": str(path), "label": labels, "patient_id": [f"{split}-{p:0{digits}d}" for p in positions],
        "split": split, "array_key": array_key, "array_position": positions,
    })


def array_row_image(arrays: Any, row: pd.Series) -> np.ndarray:
    """The image of an ``array_rows`` row, from ``arrays`` (the npz arrays or the open HDF5 file)."""
    if row["array_key"] not in arrays:
        raise ImageReadError(f"{row['path']}: no array {row['array_key']!r} (the file changed since it was scanned?)")
    return array_to_rgb(arrays[row["array_key"]][int(row["array_position"])], f"{row['path']}#{row['array_position']}")
