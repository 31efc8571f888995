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

from bclib.data.index import (DatasetError, DatasetIndex, Problem, deepest_folder, existing_path, image_files,
                              mismatch_error)
from bclib.data.synthetic import MARKER_FILE, NESTED_FOLDER, is_synthetic_folder

CLASS_NAMES = ["non-IDC", "IDC"]
FILE_PATTERN = re.compile(r"^[^_/]+_idx5_x(?P<x>\d+)_y(?P<y>\d+)_class(?P<label>[01])\.png$", re.IGNORECASE)
EXPECTED_LAYOUT = (
    "expected the IDC layout <root>/<patient_id>/<0|1>/<patient_id>_idx5_x<X>_y<Y>_class<C>.png "
    f"(optionally inside one or two {NESTED_FOLDER}/ folders, as the Kaggle archive unpacks)"
)


def _has_patient_folders(folder: Path) -> bool:
    return any((entry / "0").is_dir() or (entry / "1").is_dir() for entry in folder.iterdir() if entry.is_dir())


def find_root(path: str | os.PathLike) -> Path:
    """The folder whose sub-folders are patients, the innermost ``IDC_regular_ps50_idx5/`` copy first."""
    path = existing_path(path, "IDC data path", EXPECTED_LAYOUT)
    root = deepest_folder(path, [NESTED_FOLDER] * 3, _has_patient_folders)
    if root is None:
        raise DatasetError(f"no patient folders found in {str(path)!r}; {EXPECTED_LAYOUT}")
    return root


def scan(path: str | os.PathLike) -> DatasetIndex:
    """Index every IDC patch under ``path``.

    Non-image files are ignored and counted; images elsewhere or with other names are listed as
    problems. A file whose name says one class while its folder says the other is an error that
    names the files: the label would be ambiguous.
    """
    path = existing_path(path, "IDC data path", EXPECTED_LAYOUT)
    root = find_root(path)
    problems: list[Problem] = []
    images, ignored = image_files(root, not_counted={MARKER_FILE}, problems=problems)
    start = len(str(root)) + 1
    rows, mismatched = [], []
    for file in images:
        parts = file[start:].split(os.sep)
        match = FILE_PATTERN.match(parts[-1]) if len(parts) == 3 and parts[1] in ("0", "1") else None
        if match is None:
            problems.append(Problem(file, "does not follow <patient>/<0|1>/<patient>_idx5_x<X>_y<Y>_class<C>.png"))
        elif match["label"] != parts[1]:
            mismatched.append(file)
        else:
            rows.append((file, int(parts[1]), parts[0], int(match["x"]), int(match["y"])))
    if mismatched:
        raise mismatch_error(mismatched, "IDC file(s) have a class in their name that differs from their folder")
    if not rows:
        raise DatasetError(f"no IDC patches found under {str(root)!r}; {EXPECTED_LAYOUT}")
    frame = pd.DataFrame(rows, columns=["path", "label", "patient_id", "x", "y"])
    between = [root, *root.parents][: len(root.relative_to(path).parts) + 1]  # marker files may sit above root
    return DatasetIndex(
        name="idc",
        root=root,
        frame=frame.sort_values(["patient_id", "label", "y", "x"], kind="stable"),
        class_names=list(CLASS_NAMES),
        problems=problems,
        ignored_files=ignored,
        synthetic=is_synthetic_folder(*between),
    )
