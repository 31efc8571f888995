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

from bclib.data.imageio import is_image_file
from bclib.data.index import DatasetError, DatasetIndex, existing_path, image_files

EXPECTED_LAYOUT = "expected a class-folder layout <root>/<class_name>/<images> (at least two class folders)"
DISEASE_WORDS = ("malignant", "cancer", "carcinoma", "tumor", "tumour", "idc", "positive", "abnormal", "metasta")
IMAGE_LEVEL_WARNING = (
    "no patients_csv: every image is its own patient, so a 'patient' split is an image-level split "
    "and can leak one patient's images across train and test"
)


def _subfolders(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_dir() and not path.name.startswith("."))


def _has_images(folder: Path) -> bool:
    return any(path.is_file() and is_image_file(path) for path in folder.iterdir())


def find_root(path: str | os.PathLike) -> Path:
    """``path``, or the folder below it when ``path`` only wraps one folder of class folders."""
    path = existing_path(path, "image folder", EXPECTED_LAYOUT)
    for _ in range(3):
        inside = _subfolders(path)
        if len(inside) != 1 or _has_images(path) or _has_images(inside[0]) or len(_subfolders(inside[0])) < 2:
            break
        path = inside[0]
    return path


def _read_patients(csv_path: str | os.PathLike, relative_paths: pd.Series) -> pd.Series:
    """The ``patient_id`` of every image (by its path relative to the root, or its unique file name)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"patients_csv {str(csv_path)!r} does not exist")
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    missing = [column for column in ("path", "patient_id") if column not in table.columns]
    if missing:
        raise DatasetError(f"{csv_path} lacks column(s) {missing}; it needs 'path' (relative to the "
                           "dataset folder, or a file name) and 'patient_id'")
    listed = table["path"].str.strip().str.replace("\\", "/", regex=False)
    patients = table["patient_id"].str.strip()
    names = listed.str.rsplit("/", n=1).str[-1]
    unique_name = ~names.duplicated(keep=False)
    by_name = dict(zip(names[unique_name], patients[unique_name]))
    found = relative_paths.map(dict(zip(listed, patients)))
    found = found.fillna(relative_paths.str.rsplit("/", n=1).str[-1].map(by_name))
    unmatched = found.isna() | (found == "")
    if unmatched.any():
        raise DatasetError(
            f"{int(unmatched.sum())} image(s) have no patient_id in {csv_path} (e.g. "
            f"{', '.join(relative_paths[unmatched].head(10))}); list every image (path relative to the "
            "root, or a unique file name)"
        )
    return found


def _positive_label(class_names: list[str], positive_class: str | None, warnings: list[str]) -> int | None:
    if len(class_names) != 2:
        if positive_class is not None:
            raise ValueError(f"positive_class needs exactly two classes, got {len(class_names)}")
        return None
    if positive_class is not None:
        if positive_class not in class_names:
            raise ValueError(f"positive_class {positive_class!r} is not one of the classes {class_names}")
        return class_names.index(positive_class)
    if any(word in class_names[0].lower() for word in DISEASE_WORDS):
        warnings.append(
            f"label 1 ({class_names[1]!r}) is taken as the positive class, but {class_names[0]!r} "
            "sounds like the disease: pass positive_class= or classes=[negative, positive]"
        )
    return 1


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
    folders = {folder.name: folder for folder in _subfolders(root)}
    class_names = sorted(folders) if classes is None else [str(name) for name in classes]
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"classes has duplicates: {class_names}")
    absent = [name for name in class_names if name not in folders]
    if absent:
        raise DatasetError(f"no folder for class(es) {absent} in {str(root)!r} (folders: {sorted(folders)})")
    if len(class_names) < 2:
        raise DatasetError(f"found {len(class_names)} class folder(s) {class_names} in {str(root)!r}; {EXPECTED_LAYOUT}")
    frames, empty, problems = [], [], []
    ignored = sum(1 for entry in root.iterdir() if entry.is_file())
    for label, name in enumerate(class_names):
        images, skipped = image_files(folders[name], problems=problems)
        ignored += skipped
        empty += [] if images else [name]
        frames.append(pd.DataFrame({"path": images, "label": label}))
    if empty:
        raise DatasetError(f"class folder(s) {empty} in {str(root)!r} hold no images; remove them or add images")
    frame = pd.concat(frames, ignore_index=True)
    relative_paths = frame["path"].map(lambda file: Path(file).relative_to(root).as_posix())
    warnings: list[str] = []
    if patients_csv is None:
        frame["patient_id"] = relative_paths
        warnings.append(IMAGE_LEVEL_WARNING)
    else:
        frame["patient_id"] = _read_patients(patients_csv, relative_paths)
    positive_label = _positive_label(class_names, positive_class, warnings)
    return DatasetIndex(
        name="folder",
        root=root,
        frame=frame,
        class_names=class_names,
        problems=problems,
        ignored_files=ignored,
        options={
            "classes": tuple(class_names),
            "patients_csv": None if patients_csv is None else str(patients_csv),
            "unused_folders": tuple(sorted(set(folders) - set(class_names))),
            "warnings": warnings,
        },
        positive_label=positive_label,
    )
