"""Dataset scanners and their registry: ``scan(name, path)`` gives a :class:`DatasetIndex`."""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from bclib.data.index import DatasetError, DatasetIndex  # DatasetError is imported from here too
from bclib.paths import find_dataset_dir

#: Every dataset ``scan`` knows; each has a module of that name here with a ``scan(path, ...)``.
DATASET_NAMES = ("idc", "breakhis", "breastmnist", "mias", "folder", "pcam")


def locate(name: str, path: str | os.PathLike | None = None) -> Path:
    """Where dataset ``name`` is (:func:`bclib.paths.find_dataset_dir`); a DatasetError saying how to
    get it when it is nowhere."""
    location = find_dataset_dir(name, path)
    if location is None:
        raise DatasetError(
            f"no {name!r} data found (looked at BCLIB_DATA_{name.upper()}, BCLIB_DATA, data/): pass --data PATH "
            f"(notebooks: data_dir=PATH), or see data/README.md (`bclib data download {name}`)"
        )
    return location


def scan(name: str, path: str | os.PathLike | None = None, **options: Any) -> DatasetIndex:
    """Scan dataset ``name`` at ``path`` (or where :func:`locate` finds it)."""
    if name not in DATASET_NAMES:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {sorted(DATASET_NAMES)}")
    return importlib.import_module(f"bclib.data.datasets.{name}").scan(locate(name, path), **options)

