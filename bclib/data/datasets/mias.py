"""mini-MIAS mammography scanner: ``mdbNNN.pgm`` films plus the original ``Info.txt``.

``Info.txt`` columns: REFNUM, BG (background tissue F/G/D), CLASS (CALC, CIRC, SPIC, MISC, ARCH,
ASYM, NORM), SEVERITY (B/M; absent for NORM), X, Y (centre of the abnormality), RADIUS (pixels
of a circle enclosing it). Films with several abnormalities have several rows; widely spread
calcifications have no centre or radius. The MIAS documentation puts the coordinate origin at
the **bottom-left** corner, so the centre's row in the image array is ``cy = height - 1 - Y``
(``cx = X``); the original value is kept as ``mias_y``.

Patients: MIAS lists the films in left/right pairs of one woman (mdb001/mdb002, mdb003/mdb004,
...), so ``patient_id`` is ``(number + 1) // 2`` (zero-padded): both films of a woman always
land on the same side of a patient-level split.

Modes: ``"whole"`` gives one row per film, labelled by its worst finding (malignant > benign >
normal); ``"roi"`` gives one row per abnormality, read as a square crop around its centre of side
``max(2 * radius, min_crop)`` (at most the image's shorter side, shifted to lie inside the image);
normal films give one centre crop of side ``min_crop``, abnormalities without a centre (spread
calcifications) give the whole film. Grayscale is replicated to RGB by the reader.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from bclib.data.imageio import ImageReadError, read_image
from bclib.data.index import DatasetError, DatasetIndex, Problem, existing_path, files_in_one_folder, image_files

#: Severity code -> class name, from the least to the most severe.
SEVERITY_NAMES = {"N": "normal", "B": "benign", "M": "malignant"}
ALL_CLASSES = tuple(SEVERITY_NAMES.values())
LABEL_MODES = {"three-class": ALL_CLASSES, "binary": ("benign", "malignant")}
MODES = ("whole", "roi")
ABNORMALITY_CLASSES = ("CALC", "CIRC", "SPIC", "MISC", "ARCH", "ASYM", "NORM")
INFO_FILE = "Info.txt"
REFNUM_PATTERN = re.compile(r"^mdb(\d{3,})$", re.IGNORECASE)
DEFAULT_MIN_CROP = 256
EXPECTED_LAYOUT = (
    "expected a mini-MIAS folder with the original Info.txt (REFNUM BG CLASS SEVERITY X Y RADIUS) "
    "and the mdbNNN.pgm films beside it or in a sub-folder such as all-mias/"
)


def find_info_file(path: str | os.PathLike) -> Path:
    """``Info.txt`` at ``path`` (a file) or in ``path`` or up to two folders below it."""
    path = existing_path(path, "MIAS data path", EXPECTED_LAYOUT, folder=False)
    if path.is_dir():
        return files_in_one_folder(path, "[Ii]nfo.txt", INFO_FILE, EXPECTED_LAYOUT, depth=2)[0]
    if path.name.lower() != INFO_FILE.lower():
        raise DatasetError(f"{str(path)!r} is a file but not {INFO_FILE}; {EXPECTED_LAYOUT}")
    return path


def _coordinate(text: str | None, where: str) -> float:
    if text is None or text == "*":
        return math.nan
    if not text.isdigit():
        raise DatasetError(f"{where}: {text!r} is not a pixel coordinate; {EXPECTED_LAYOUT}")
    return float(text)


def parse_info(info_path: str | os.PathLike) -> pd.DataFrame:
    """One row per Info.txt line: refnum, number, tissue, abnormality, severity (N/B/M), x, y, radius."""
    rows = []
    for line_number, line in enumerate(Path(info_path).read_text(errors="replace").splitlines(), start=1):
        fields, where = line.split(), f"{info_path}:{line_number}"
        if not fields or fields[0].upper() == "REFNUM" or fields[0].startswith("#"):
            continue
        match = REFNUM_PATTERN.match(fields[0])
        abnormality = fields[2].upper() if len(fields) > 2 else ""
        severity = "N" if abnormality == "NORM" else fields[3].upper() if len(fields) > 3 else ""
        if match is None or abnormality not in ABNORMALITY_CLASSES or severity not in SEVERITY_NAMES:
            raise DatasetError(f"{where}: cannot read {line.strip()!r} (an abnormality needs severity B or M); "
                               f"{EXPECTED_LAYOUT}")
        x, y, radius = (_coordinate(text, where) for text in (fields[4:7] + [None] * 3)[:3])
        rows.append({"refnum": fields[0].lower(), "number": int(match.group(1)), "tissue": fields[1].upper(),
                     "abnormality": abnormality, "severity": severity, "x": x, "y": y, "radius": radius})
    if not rows:
        raise DatasetError(f"{info_path} lists no films; {EXPECTED_LAYOUT}")
    return pd.DataFrame(rows)


def _resolve_classes(labels: str, classes: Sequence[str] | None) -> list[str]:
    if labels not in LABEL_MODES:
        raise ValueError(f"labels must be one of {list(LABEL_MODES)}, got {labels!r}")
    if classes is None:
        return list(LABEL_MODES[labels])
    chosen = [str(name).lower() for name in classes]
    if any(name not in ALL_CLASSES for name in chosen) or len(set(chosen)) != len(chosen) or len(chosen) < 2:
        raise ValueError(f"classes must be two or three distinct names among {list(ALL_CLASSES)}, got {list(classes)!r}")
    if labels == "binary" and len(chosen) != 2:
        raise ValueError(f"labels='binary' needs two classes, got {chosen}")
    return chosen


def crop_box(cx: float, cy: float, radius: float, width: int, height: int, min_crop: int) -> tuple[int, int, int]:
    """``(left, top, size)`` of the square crop around ``(cx, cy)`` (columns, rows), inside the image."""
    size = int(min(max(0 if math.isnan(radius) else 2 * radius, min_crop), width, height))
    left = min(max(int(round(cx - size / 2)), 0), width - size)
    top = min(max(int(round(cy - size / 2)), 0), height - size)
    return left, top, size


def read_row(row: pd.Series) -> np.ndarray:
    """The film (or its ROI crop) of one index row as ``H x W x 3`` uint8 (the index's reader)."""
    image = read_image(row["path"])
    if pd.isna(row.get("crop_size")):
        return image
    scale = image.shape[0] / float(row["height"])  # read_image may downscale a very large film
    top, left, size = (int(round(float(row[name]) * scale)) for name in ("crop_top", "crop_left", "crop_size"))
    crop = image[top : top + size, left : left + size]
    if crop.size == 0:
        raise ImageReadError(f"{row['path']}: the crop box lies outside the {image.shape[1]}x{image.shape[0]} image")
    return np.ascontiguousarray(crop)


def _find_films(root: Path, info_path: Path) -> tuple[dict[str, str], list[Problem], int]:
    """mdbNNN image files under ``root`` by refnum, problems (unknown/duplicate names), ignored count."""
    problems: list[Problem] = []
    images, ignored = image_files(root, not_counted={info_path.name}, problems=problems)
    films: dict[str, str] = {}
    for file in images:
        refnum = Path(file).stem.lower()
        if REFNUM_PATTERN.match(refnum) is None:
            problems.append(Problem(file, "file name is not mdbNNN.<pgm|png|...>, so no Info.txt row can match it"))
        elif refnum in films:
            problems.append(Problem(file, f"a second file for {refnum} (already using {films[refnum]})"))
        else:
            films[refnum] = file
    return films, problems, ignored


def _film_rows(info: pd.DataFrame, films: dict[str, str], mode: str, min_crop: int) -> list[dict]:
    """Index rows (before class filtering) for every listed film found on disk."""
    rows = []
    for refnum, findings in info.groupby("refnum", sort=True):
        try:
            with Image.open(films[refnum]) as image:
                width, height = image.size
        except (OSError, SyntaxError) as error:
            raise ImageReadError(f"{films[refnum]}: cannot read the image header ({error})") from None
        number = int(findings["number"].iloc[0])
        film = {"path": films[refnum], "patient_id": f"{(number + 1) // 2:03d}", "refnum": refnum,
                "side": "left" if number % 2 == 0 else "right", "tissue": findings["tissue"].iloc[0],
                "n_abnormalities": int((findings["severity"] != "N").sum()), "width": width, "height": height}
        if mode == "whole":
            worst = max(findings["severity"], key=list(SEVERITY_NAMES).index)
            findings = findings[findings["severity"] == worst].head(1)
        for finding_number, finding in enumerate(findings.itertuples(index=False)):
            cy = math.nan if math.isnan(finding.y) else float(min(max(height - 1 - finding.y, 0), height - 1))
            row = dict(film, severity=finding.severity, abnormality=finding.abnormality, cx=finding.x, cy=cy,
                       mias_y=finding.y, radius=finding.radius)
            if mode == "roi":
                if finding.severity == "N":
                    box = crop_box(width / 2, height / 2, math.nan, width, height, min_crop)
                elif math.isnan(finding.x) or math.isnan(cy):
                    box = (math.nan,) * 3
                else:
                    box = crop_box(finding.x, cy, finding.radius, width, height, min_crop)
                row.update(finding=finding_number, crop_left=box[0], crop_top=box[1], crop_size=box[2])
            rows.append(row)
    return rows


def scan(
    path: str | os.PathLike,
    mode: str = "whole",
    labels: str = "three-class",
    classes: Sequence[str] | None = None,
    min_crop: int = DEFAULT_MIN_CROP,
) -> DatasetIndex:
    """Index the mini-MIAS films under ``path`` (a folder holding ``Info.txt``, or the file).

    ``labels="three-class"``: classes normal/benign/malignant (``positive_label`` None);
    ``labels="binary"``: benign (0) vs malignant (1, positive), normal films excluded.
    ``classes`` picks other subsets or orders of those three names. ``mode`` is ``"whole"`` or
    ``"roi"`` (see the module docstring); ``min_crop`` is the smallest ROI side in pixels.
    Films listed in Info.txt but absent on disk are skipped and counted in
    ``options["listed_not_found"]``; image files that Info.txt does not list are problems.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if isinstance(min_crop, bool) or not isinstance(min_crop, int) or min_crop < 8:
        raise ValueError(f"min_crop must be an integer number of pixels >= 8, got {min_crop!r}")
    class_names = _resolve_classes(labels, classes)
    info_path = find_info_file(path)
    root = info_path.parent
    info = parse_info(info_path)
    films, problems, ignored = _find_films(root, info_path)
    listed = set(info["refnum"])
    problems += [Problem(file, "not listed in Info.txt") for refnum, file in sorted(films.items()) if refnum not in listed]
    present = info[info["refnum"].isin(films.keys())]
    if present.empty:
        raise DatasetError(
            f"none of the {len(listed)} films listed in {info_path} was found under {str(root)!r}; {EXPECTED_LAYOUT}"
        )
    frame = pd.DataFrame(_film_rows(present, films, mode, min_crop))
    frame.insert(1, "label_name", frame["severity"].map(SEVERITY_NAMES))
    chosen = frame["label_name"].isin(class_names)
    frame = frame[chosen].copy()
    if frame.empty:
        raise DatasetError(f"no MIAS film of the classes {class_names} under {str(root)!r}")
    frame.insert(1, "label", frame["label_name"].map(class_names.index))
    frame["severity"] = frame["severity"].replace({"N": None})
    leading = ["path", "label", "label_name", "patient_id", "severity", "cx", "cy", "radius"]
    binary_order = len(class_names) == 2 and ALL_CLASSES.index(class_names[1]) > ALL_CLASSES.index(class_names[0])
    return DatasetIndex(
        name="mias",
        root=root,
        frame=frame[leading + [column for column in frame.columns if column not in leading]],
        class_names=class_names,
        problems=problems,
        ignored_files=ignored,
        options={
            "mode": mode,
            "labels": labels,
            "classes": tuple(class_names),
            "min_crop": min_crop,
            "listed_not_found": len(listed - set(films)),
            "excluded_by_class": int((~chosen).sum()),
            "warnings": [f"no {name} images in this copy" for name in class_names if name not in set(frame["label_name"])],
        },
        positive_label=1 if binary_order else 0,
        reader=read_row,
    )
