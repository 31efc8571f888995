"""BreakHis (Breast Cancer Histopathological Image Classification, ``BreaKHis_v1``) scanner.

Layout of the original archive::

    BreaKHis_v1/histology_slides/breast/<benign|malignant>/SOB/<subtype>/SOB_<B|M>_<T>_<slide>/<mag>X/*.png

File names repeat everything: ``SOB_B_A-14-22549AB-40-001.png`` is a benign (``B``) adenosis
(``A``) image of slide ``14-22549AB`` at 40x, frame 001.

Patients: BreakHis identifies a patient by the year and number (``14-22549``); letters after the
number (``AB``, ``CD``, ``EF``, ``D``...) name slide sections of the same patient. ``patient_id``
is therefore the number without the letters, so a patient-level split never puts two sections of
one patient on both sides; the full name is kept in the ``slide`` column.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from bclib.data.index import (DatasetError, DatasetIndex, Problem, deepest_folder, existing_path, image_files,
                              mismatch_error)

#: Binary class names: label 1 (malignant) is the disease.
BINARY_CLASS_NAMES = ["benign", "malignant"]

#: Subtype code in the file name -> (subtype, benign/malignant), in the fixed label order of
#: ``labels="subtype"``: the four benign subtypes, then the four malignant ones, as in the paper.
SUBTYPE_CODES: dict[str, tuple[str, str]] = {
    "A": ("adenosis", "benign"),
    "F": ("fibroadenoma", "benign"),
    "PT": ("phyllodes_tumor", "benign"),
    "TA": ("tubular_adenoma", "benign"),
    "DC": ("ductal_carcinoma", "malignant"),
    "LC": ("lobular_carcinoma", "malignant"),
    "MC": ("mucinous_carcinoma", "malignant"),
    "PC": ("papillary_carcinoma", "malignant"),
}
SUBTYPE_CLASS_NAMES = [subtype for subtype, _ in SUBTYPE_CODES.values()]

MAGNIFICATIONS = (40, 100, 200, 400)
LABEL_MODES = ("binary", "subtype")
NESTED_FOLDERS = ("breakhis", "BreaKHis_v1", "histology_slides", "breast")

FILE_PATTERN = re.compile(
    r"^SOB_(?P<letter>[BM])_(?P<code>[A-Z]+)-(?P<patient>\d+-\d+)(?P<section>[A-Z]*)-(?P<mag>\d+)-(?P<frame>\d+)\.png$",
    re.IGNORECASE,
)
EXPECTED_LAYOUT = (
    "expected the BreakHis layout BreaKHis_v1/histology_slides/breast/<benign|malignant>/SOB/<subtype>/"
    "SOB_<B|M>_<T>_<slide>/<mag>X/SOB_<B|M>_<T>-<slide>-<mag>-<frame>.png "
    "(pass the folder holding BreaKHis_v1/, or any folder inside it down to breast/)"
)


def parse_magnification(value: int | str) -> int | None:
    """``40|100|200|400`` (also ``"40X"``) -> the int; ``"all"`` -> ``None``; else ``ValueError``."""
    if isinstance(value, str) and value.strip().lower() == "all":
        return None
    text = str(value).strip().lower().removesuffix("x")
    if isinstance(value, bool) or not text.isdigit() or int(text) not in MAGNIFICATIONS:
        raise ValueError(f"magnification must be one of {list(MAGNIFICATIONS)} or 'all', got {value!r}")
    return int(text)


def find_root(path: str | os.PathLike) -> Path:
    """The ``breast/`` folder (holding ``benign/`` and ``malignant/``) at or below ``path``."""
    path = existing_path(path, "BreakHis data path", EXPECTED_LAYOUT)
    root = deepest_folder(path, NESTED_FOLDERS, lambda folder: any((folder / c).is_dir() for c in BINARY_CLASS_NAMES))
    if root is None:
        raise DatasetError(f"no benign/ or malignant/ folder found under {str(path)!r}; {EXPECTED_LAYOUT}")
    return root


def _disagreements(folders: list[str], match: re.Match) -> list[str]:
    """Why the folders above a file disagree with its name (empty when they agree)."""
    subtype, kind = SUBTYPE_CODES[match["code"].upper()]
    letter_kind = "benign" if match["letter"].upper() == "B" else "malignant"
    reasons = [] if folders[0] == letter_kind else [f"name says {letter_kind}, folder says {folders[0]}"]
    if kind != letter_kind:
        reasons.append(f"subtype {subtype} is {kind} but the name says {letter_kind}")
    subtype_folders = [part for part in folders if part in SUBTYPE_CLASS_NAMES]
    if subtype_folders and subtype_folders[-1] != subtype:
        reasons.append(f"name says {subtype}, folder says {subtype_folders[-1]}")
    magnification_folders = [part for part in folders if re.fullmatch(r"\d+x", part)]
    if magnification_folders and int(magnification_folders[-1][:-1]) != int(match["mag"]):
        reasons.append(f"name says {match['mag']}X, folder says {magnification_folders[-1].upper()}")
    return reasons


def scan(path: str | os.PathLike, labels: str = "binary", magnification: int | str = "all") -> DatasetIndex:
    """Index the BreakHis images under ``path``.

    ``labels="binary"``: classes ``["benign", "malignant"]``, positive label 1 = malignant.
    ``labels="subtype"``: the eight subtypes of :data:`SUBTYPE_CLASS_NAMES` (label = position
    there), ``positive_label`` is ``None``. ``magnification`` keeps one of 40/100/200/400 or
    ``"all"``. Columns: ``subtype``, ``category`` (benign/malignant, in both label modes),
    ``magnification``, ``slide``, ``frame``; ``patient_id`` is the patient number without section
    letters (see the module docstring). Non-image files are ignored and counted; PNGs with other
    names are problems; a file whose name disagrees with its folders (benign/malignant, subtype or
    magnification) is an error naming the files.
    """
    if labels not in LABEL_MODES:
        raise ValueError(f"labels must be one of {list(LABEL_MODES)}, got {labels!r}")
    wanted_magnification = parse_magnification(magnification)
    root = find_root(path)
    rows, problems, mismatched, ignored = [], [], [], 0
    for class_folder in BINARY_CLASS_NAMES:
        folder = root / class_folder
        images, skipped = image_files(folder, problems=problems) if folder.is_dir() else ([], 0)
        ignored += skipped
        for file in images:
            match = FILE_PATTERN.match(os.path.basename(file))
            if match is None or match["code"].upper() not in SUBTYPE_CODES:
                problems.append(Problem(file, "file name does not follow SOB_<B|M>_<T>-<slide>-<mag>-<frame>.png"))
                continue
            reasons = _disagreements([part.lower() for part in Path(file).relative_to(root).parts[:-1]], match)
            if reasons:
                mismatched.append(f"{file} ({'; '.join(reasons)})")
                continue
            subtype, kind = SUBTYPE_CODES[match["code"].upper()]
            rows.append({"path": file, "subtype": subtype, "category": kind, "magnification": int(match["mag"]),
                         "slide": f"{match['patient']}{match['section'].upper()}", "patient_id": match["patient"],
                         "frame": int(match["frame"])})
    if mismatched:
        raise mismatch_error(mismatched, "BreakHis file(s) have a name that disagrees with their folders")
    if not rows:
        raise DatasetError(f"no BreakHis images found under {str(root)!r}; {EXPECTED_LAYOUT}")
    frame = pd.DataFrame(rows)
    if wanted_magnification is not None:
        frame = frame[frame["magnification"] == wanted_magnification]
        if frame.empty:
            raise DatasetError(f"no BreakHis images at {wanted_magnification}X under {str(root)!r}")
    class_names = BINARY_CLASS_NAMES if labels == "binary" else SUBTYPE_CLASS_NAMES
    frame.insert(1, "label", frame["category" if labels == "binary" else "subtype"].map(class_names.index))
    frame = frame.sort_values(["label", "subtype", "patient_id", "slide", "magnification", "frame"], kind="stable")
    return DatasetIndex(
        name="breakhis",
        root=root,
        frame=frame[["path", "label", "patient_id", "subtype", "category", "magnification", "slide", "frame"]],
        class_names=list(class_names),
        problems=problems,
        ignored_files=ignored,
        options={"labels": labels, "magnification": wanted_magnification or "all"},
        positive_label=1 if labels == "binary" else None,
    )
