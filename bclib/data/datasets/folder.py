"""Any class-folder dataset: ``root/<class_name>/...`` with images (PNG, JPEG, TIFF, PGM, ...).

Each sub-folder of ``root`` is a class; images anywhere inside a class folder (nested folders
too) belong to it. Classes are in sorted order unless ``classes=[...]`` fixes the order (and
the folders used). With two classes label 1 is taken as the positive (disease) class unless
``positive_class`` names it; with more, ``positive_label`` is ``None``.

Patients: a CSV (``patients_csv``, columns ``path`` and ``patient_id``; ``path`` relative to
``root`` or a bare file name) groups images by patient. Without it every image is its own
patient, so a "patient" split is really an image-level split: ``options["warnings"]`` says so.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from bclib.data.index import DatasetError, DatasetIndex
from bclib.data.imageio import is_image_file

EXPECTED_LAYOUT = "expected a class-folder layout <root>/<class_name>/<images> (at least two class folders)"
DISEASE_WORDS = ("malignant", "cancer", "carcinoma", "tumor", "tumour", "idc", "positive", "abnormal", "metasta")
IMAGE_LEVEL_WARNING = (
    "no patients_csv: every image is its own patient, so a 'patient' split is an image-level split "
    "and can leak one patient's images across train and test"
)


def _class_folders(root: Path) -> list[Path]:
    with os.scandir(root) as entries:
        return sorted((Path(e.path) for e in entries if e.is_dir() and not e.name.startswith(".")), key=lambda p: p.name)


def _has_direct_images(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return any(e.is_file() and is_image_file(e.name) for e in entries)


def find_root(path: str | os.PathLike) -> Path:
    """``path``, or the folder below it when ``path`` only wraps one folder of class folders."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"image folder {str(path)!r} does not exist; {EXPECTED_LAYOUT}")
    if not path.is_dir():
        raise DatasetError(f"{str(path)!r} is not a folder; {EXPECTED_LAYOUT}")
    for _ in range(3):
        subfolders = _class_folders(path)
        if len(subfolders) != 1 or _has_direct_images(path) or _has_direct_images(subfolders[0]):
            break
        if len(_class_folders(subfolders[0])) < 2:
            break
        path = subfolders[0]
    return path


def _walk_images(folder: Path) -> tuple[list[Path], int]:
    """Image files under ``folder`` (sorted, nested folders included) and the count of other files."""
    images: list[Path] = []
    ignored = 0
    for directory, subdirectories, files in os.walk(folder):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        for name in sorted(files):
            if is_image_file(name):
                images.append(Path(directory) / name)
            else:
                ignored += 1
    return images, ignored


def _read_patients(csv_path: str | os.PathLike, root: Path, frame: pd.DataFrame) -> pd.Series:
    """``patient_id`` for every row of ``frame`` from the CSV; DatasetError when rows are unmatched."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"patients_csv {str(csv_path)!r} does not exist")
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    missing = [c for c in ("path", "patient_id") if c not in table.columns]
    if missing:
        raise DatasetError(f"{csv_path} lacks column(s) {missing}; it needs 'path' (relative to {root} or a file name) and 'patient_id'")
    table["path"] = table["path"].str.strip().str.replace("\\", "/", regex=False)
    by_relative = dict(zip(table["path"], table["patient_id"]))
    names = table["path"].map(lambda p: p.rsplit("/", 1)[-1])
    duplicated_names = set(names[names.duplicated(keep=False)])
    by_name = {n: p for n, p in zip(names, table["patient_id"]) if n not in duplicated_names}
    relative = frame["path"].map(lambda p: Path(p).relative_to(root).as_posix())
    patients = relative.map(by_relative)
    unresolved = patients.isna()
    patients[unresolved] = frame.loc[unresolved, "path"].map(lambda p: by_name.get(Path(p).name))
    empty = patients.isna() | (patients.astype(str).str.strip() == "")
    if empty.any():
        shown = ", ".join(relative[empty].head(10))
        raise DatasetError(
            f"{int(empty.sum())} image(s) have no patient_id in {csv_path} (e.g. {shown}); "
            "list every image (path relative to the root, or a unique file name)"
        )
    return patients.astype(str).str.strip()


def scan(
    path: str | os.PathLike,
    classes: Sequence[str] | None = None,
    patients_csv: str | os.PathLike | None = None,
    positive_class: str | None = None,
) -> DatasetIndex:
    """Index ``root/<class>/**/<image>``.

    Non-image files are ignored and counted. Errors (:class:`DatasetError`): fewer than two
    classes, an empty class folder, a name in ``classes`` without a folder, images missing from
    ``patients_csv``.
    """
    root = find_root(path)
    folders = {folder.name: folder for folder in _class_folders(root)}
    if classes is None:
        class_names = sorted(folders)
    else:
        class_names = [str(name) for name in classes]
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"classes has duplicates: {class_names}")
        absent = [name for name in class_names if name not in folders]
        if absent:
            raise DatasetError(f"no folder for class(es) {absent} in {str(root)!r} (folders: {sorted(folders)})")
    if len(class_names) < 2:
        raise DatasetError(f"found {len(class_names)} class folder(s) {class_names} in {str(root)!r}; {EXPECTED_LAYOUT}")
    rows: list[dict] = []
    ignored = 0
    empty: list[str] = []
    for label, name in enumerate(class_names):
        images, skipped = _walk_images(folders[name])
        ignored += skipped
        if not images:
            empty.append(name)
        rows.extend({"path": str(image), "label": label, "label_name": name} for image in images)
    if empty:
        raise DatasetError(f"class folder(s) {empty} in {str(root)!r} hold no images; remove them or add images")
    with os.scandir(root) as entries:
        ignored += sum(1 for entry in entries if entry.is_file())
    frame = pd.DataFrame(rows)
    warnings: list[str] = []
    if patients_csv is None:
        frame["patient_id"] = frame["path"].map(lambda p: Path(p).relative_to(root).as_posix())
        warnings.append(IMAGE_LEVEL_WARNING)
    else:
        frame["patient_id"] = _read_patients(patients_csv, root, frame)
    positive_label: int | None = None
    if len(class_names) == 2:
        if positive_class is not None:
            if positive_class not in class_names:
                raise ValueError(f"positive_class {positive_class!r} is not one of the classes {class_names}")
            positive_label = class_names.index(positive_class)
        else:
            positive_label = 1
            if any(word in class_names[0].lower() for word in DISEASE_WORDS):
                warnings.append(
                    f"label 1 ({class_names[1]!r}) is taken as the positive class, but {class_names[0]!r} "
                    "sounds like the disease: pass positive_class= or classes=[negative, positive]"
                )
    elif positive_class is not None:
        raise ValueError(f"positive_class needs exactly two classes, got {len(class_names)}")
    return DatasetIndex(
        name="folder",
        root=root,
        frame=frame[["path", "label", "label_name", "patient_id"]],
        class_names=class_names,
        ignored_files=ignored,
        options={
            "classes": tuple(class_names),
            "patients_csv": None if patients_csv is None else str(patients_csv),
            "unused_folders": tuple(sorted(set(folders) - set(class_names))),
            "warnings": warnings,
        },
        positive_label=positive_label,
    )
