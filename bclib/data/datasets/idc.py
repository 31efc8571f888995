"""IDC (Breast Histopathology Images, ``IDC_regular_ps50_idx5``) scanner.

Layout: ``<patient>/<0|1>/<patient>_idx5_x<X>_y<Y>_class<C>.png`` where X, Y are the patch's
top-left pixel in the whole-slide image and C is 1 for invasive ductal carcinoma.
The Kaggle archive nests ``IDC_regular_ps50_idx5/`` once or twice (and also repeats the patient
folders at its top level); the scanner finds the innermost copy and reads it once.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from bclib.data.index import DatasetError, DatasetIndex, Problem, mismatch_error
from bclib.data.synthetic import MARKER_FILE, is_synthetic_folder
from bclib.data.imageio import is_image_file

CLASS_NAMES = ["non-IDC", "IDC"]
NESTED_FOLDER = "IDC_regular_ps50_idx5"
FILE_PATTERN = re.compile(r"^(?P<patient>[^_/]+)_idx5_x(?P<x>\d+)_y(?P<y>\d+)_class(?P<label>[01])\.png$", re.IGNORECASE)
EXPECTED_LAYOUT = (
    "expected the IDC layout <root>/<patient_id>/<0|1>/<patient_id>_idx5_x<X>_y<Y>_class<C>.png "
    f"(optionally inside one or two {NESTED_FOLDER}/ folders, as the Kaggle archive unpacks)"
)


def _is_patient_folder(entry: os.DirEntry) -> bool:
    return entry.is_dir() and any((Path(entry.path) / c).is_dir() for c in ("0", "1"))


def _folder_chain(start: Path, end: Path) -> list[Path]:
    """``start``, every folder between it and ``end`` (inside it), and ``end``."""
    chain = [end]
    while chain[-1] != start and chain[-1].parent != chain[-1] and start in chain[-1].parents:
        chain.append(chain[-1].parent)
    return chain


def find_root(path: str | os.PathLike) -> Path:
    """The folder whose sub-folders are patients, following ``IDC_regular_ps50_idx5/`` nesting.

    The Kaggle archive also repeats the patient folders beside its ``IDC_regular_ps50_idx5/``
    folder; the nested copy wins, so no patch is counted twice.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"IDC data folder {str(path)!r} does not exist; {EXPECTED_LAYOUT}")
    if not path.is_dir():
        raise DatasetError(f"IDC data path {str(path)!r} is not a folder; {EXPECTED_LAYOUT}")
    for _ in range(4):
        nested = path / NESTED_FOLDER
        if nested.is_dir():
            path = nested
            continue
        break
    with os.scandir(path) as entries:
        if any(_is_patient_folder(entry) for entry in entries):
            return path
    raise DatasetError(f"no patient folders found in {str(path)!r}; {EXPECTED_LAYOUT}")


def scan(path: str | os.PathLike, **options) -> DatasetIndex:
    """Index every IDC patch under ``path``.

    Non-image files are ignored and counted; PNGs whose names do not follow the pattern are
    listed as problems. A file whose name says one class while its folder says the other is an
    error that names the files: the label would be ambiguous.
    """
    if options:
        raise TypeError(f"the idc scanner takes no options, got {sorted(options)}")
    path = Path(path).expanduser().resolve()
    root = find_root(path)
    paths: list[str] = []
    labels: list[int] = []
    patient_ids: list[str] = []
    xs: list[int] = []
    ys: list[int] = []
    problems: list[Problem] = []
    mismatched: list[str] = []
    ignored = 0
    with os.scandir(root) as patients:
        entries = list(patients)
    patient_entries = sorted((e for e in entries if e.is_dir()), key=lambda e: e.name)
    ignored += sum(1 for e in entries if not e.is_dir() and e.name != MARKER_FILE)
    for patient in patient_entries:
        with os.scandir(patient.path) as inside:
            ignored += sum(1 for e in inside if e.name not in ("0", "1") or not e.is_dir())
        for class_folder in ("0", "1"):
            folder = Path(patient.path) / class_folder
            if not folder.is_dir():
                continue
            label = int(class_folder)
            with os.scandir(folder) as files:
                for entry in files:
                    name = entry.name
                    match = FILE_PATTERN.match(name) if not name.startswith(".") else None
                    if match is None or not entry.is_file():
                        # rare: checked here so that the common case costs one regex match
                        if entry.is_file() and is_image_file(name):
                            problems.append(Problem(entry.path, "file name does not follow <patient>_idx5_x<X>_y<Y>_class<C>.png"))
                        else:
                            ignored += 1
                        continue
                    if match["label"] != class_folder:
                        mismatched.append(entry.path)
                        continue
                    paths.append(entry.path)
                    labels.append(label)
                    patient_ids.append(patient.name)
                    xs.append(int(match["x"]))
                    ys.append(int(match["y"]))
    if mismatched:
        raise mismatch_error(mismatched, "IDC file(s) have a class in their name that differs from their folder")
    if not paths:
        raise DatasetError(f"no IDC patches found under {str(root)!r}; {EXPECTED_LAYOUT}")
    frame = pd.DataFrame({"path": paths, "label": labels, "patient_id": patient_ids, "x": xs, "y": ys})
    frame = frame.sort_values(["patient_id", "label", "y", "x"], kind="stable").reset_index(drop=True)
    frame["label_name"] = frame["label"].map(dict(enumerate(CLASS_NAMES)))
    frame = frame[["path", "label", "label_name", "patient_id", "x", "y"]]
    return DatasetIndex(
        name="idc",
        root=root,
        frame=frame,
        class_names=list(CLASS_NAMES),
        problems=problems,
        ignored_files=ignored,
        synthetic=is_synthetic_folder(*_folder_chain(path, root)),
        positive_label=1,
    )
