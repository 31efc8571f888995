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

from bclib.data.index import DatasetError, DatasetIndex, Problem, mismatch_error
from bclib.data.imageio import is_image_file

#: Binary class names: label 1 (malignant) is the disease.
BINARY_CLASS_NAMES = ["benign", "malignant"]

#: The eight subtypes in their fixed label order: the four benign ones, then the four
#: malignant ones, each group in the order of the BreakHis paper (A, F, PT, TA, DC, LC, MC, PC).
SUBTYPE_CLASS_NAMES = [
    "adenosis",
    "fibroadenoma",
    "phyllodes_tumor",
    "tubular_adenoma",
    "ductal_carcinoma",
    "lobular_carcinoma",
    "mucinous_carcinoma",
    "papillary_carcinoma",
]

#: Subtype code in the file name -> (subtype folder name, benign/malignant).
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

MAGNIFICATIONS = (40, 100, 200, 400)
LABEL_MODES = ("binary", "subtype")
NESTED_FOLDERS = ("BreaKHis_v1", "histology_slides", "breast")
CLASS_FOLDERS = ("benign", "malignant")

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
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "all":
            return None
        text = text.removesuffix("x")
        if text.isdigit():
            value = int(text)
    if isinstance(value, bool) or not isinstance(value, int) or value not in MAGNIFICATIONS:
        raise ValueError(f"magnification must be one of {list(MAGNIFICATIONS)} or 'all', got {value!r}")
    return value


def find_root(path: str | os.PathLike) -> Path:
    """The ``breast/`` folder (holding ``benign/`` and ``malignant/``) at or below ``path``."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"BreakHis data folder {str(path)!r} does not exist; {EXPECTED_LAYOUT}")
    if not path.is_dir():
        raise DatasetError(f"BreakHis data path {str(path)!r} is not a folder; {EXPECTED_LAYOUT}")
    candidates = [path]
    for name in ("breakhis", *NESTED_FOLDERS):
        nested = candidates[-1] / name
        if nested.is_dir():
            candidates.append(nested)
    for candidate in reversed(candidates):
        if any((candidate / folder).is_dir() for folder in CLASS_FOLDERS):
            return candidate
    raise DatasetError(f"no benign/ or malignant/ folder found under {str(path)!r}; {EXPECTED_LAYOUT}")


def _folder_mismatches(relative_parts: tuple[str, ...], class_folder: str, match: re.Match) -> list[str]:
    """Reasons why the folders around a file disagree with its name (empty when they agree)."""
    subtype, kind = SUBTYPE_CODES[match["code"].upper()]
    reasons = []
    letter_kind = "benign" if match["letter"].upper() == "B" else "malignant"
    if letter_kind != class_folder:
        reasons.append(f"name says {letter_kind}, folder says {class_folder}")
    if kind != letter_kind:
        reasons.append(f"subtype {subtype} is {kind} but the name says {letter_kind}")
    folders = [part.lower() for part in relative_parts[:-1]]
    known_subtypes = [part for part in folders if part in SUBTYPE_CLASS_NAMES]
    if known_subtypes and known_subtypes[-1] != subtype:
        reasons.append(f"name says {subtype}, folder says {known_subtypes[-1]}")
    magnification_folders = [part for part in folders if re.fullmatch(r"\d+x", part)]
    if magnification_folders and int(magnification_folders[-1][:-1]) != int(match["mag"]):
        reasons.append(f"name says {match['mag']}X, folder says {magnification_folders[-1].upper()}")
    return reasons


def _walk_class_folder(folder: Path, class_folder: str, rows: list, problems: list, mismatched: list) -> int:
    """Index the PNGs under one class folder; returns the number of ignored files."""
    ignored = 0
    for directory, subdirectories, files in os.walk(folder):
        subdirectories.sort()
        for name in sorted(files):
            path = Path(directory) / name
            if not is_image_file(name):
                ignored += 1
                continue
            match = FILE_PATTERN.match(name)
            if match is None or match["code"].upper() not in SUBTYPE_CODES:
                problems.append(Problem(str(path), "file name does not follow SOB_<B|M>_<T>-<slide>-<mag>-<frame>.png"))
                continue
            reasons = _folder_mismatches(path.relative_to(folder).parts, class_folder, match)
            if reasons:
                mismatched.append(f"{path} ({'; '.join(reasons)})")
                continue
            subtype, kind = SUBTYPE_CODES[match["code"].upper()]
            rows.append(
                {
                    "path": str(path),
                    "binary_label": BINARY_CLASS_NAMES.index(kind),
                    "subtype": subtype,
                    "category": kind,
                    "magnification": int(match["mag"]),
                    "slide": f"{match['patient']}{match['section'].upper()}",
                    "patient_id": match["patient"],
                    "frame": int(match["frame"]),
                }
            )
    return ignored


def scan(path: str | os.PathLike, labels: str = "binary", magnification: int | str = "all") -> DatasetIndex:
    """Index the BreakHis images under ``path``.

    ``labels="binary"``: classes ``["benign", "malignant"]``, positive label 1 = malignant.
    ``labels="subtype"``: the eight subtypes of :data:`SUBTYPE_CLASS_NAMES` (label = position
    there), ``positive_label`` is ``None``. ``magnification`` keeps one of 40/100/200/400 or
    ``"all"``. Columns: ``subtype``, ``category`` (benign/malignant, in both label modes),
    ``magnification``, ``slide``, ``frame``; ``patient_id`` is
    the patient number without section letters (see the module docstring). Non-image files are
    ignored and counted; PNGs with other names are problems; a file whose name disagrees with
    its folders (benign/malignant, subtype or magnification) is an error naming the files.
    """
    if labels not in LABEL_MODES:
        raise ValueError(f"labels must be one of {list(LABEL_MODES)}, got {labels!r}")
    wanted_magnification = parse_magnification(magnification)
    root = find_root(path)
    rows: list[dict] = []
    problems: list[Problem] = []
    mismatched: list[str] = []
    ignored = 0
    for class_folder in CLASS_FOLDERS:
        folder = root / class_folder
        if folder.is_dir():
            ignored += _walk_class_folder(folder, class_folder, rows, problems, mismatched)
    if mismatched:
        raise mismatch_error(mismatched, "BreakHis file(s) have a name that disagrees with their folders")
    if not rows:
        raise DatasetError(f"no BreakHis images found under {str(root)!r}; {EXPECTED_LAYOUT}")
    frame = pd.DataFrame(rows)
    if wanted_magnification is not None:
        frame = frame[frame["magnification"] == wanted_magnification]
        if frame.empty:
            raise DatasetError(f"no BreakHis images at {wanted_magnification}X under {str(root)!r}")
    if labels == "binary":
        class_names = list(BINARY_CLASS_NAMES)
        frame["label"] = frame["binary_label"]
        positive_label: int | None = 1
    else:
        class_names = list(SUBTYPE_CLASS_NAMES)
        frame["label"] = frame["subtype"].map(SUBTYPE_CLASS_NAMES.index)
        positive_label = None
    frame["label_name"] = frame["label"].map(dict(enumerate(class_names)))
    frame = frame.sort_values(["label", "subtype", "patient_id", "slide", "magnification", "frame"], kind="stable")
    frame = frame[["path", "label", "label_name", "patient_id", "subtype", "category", "magnification", "slide", "frame"]]
    return DatasetIndex(
        name="breakhis",
        root=root,
        frame=frame.reset_index(drop=True),
        class_names=class_names,
        problems=problems,
        ignored_files=ignored,
        options={"labels": labels, "magnification": wanted_magnification or "all"},
        positive_label=positive_label,
    )
