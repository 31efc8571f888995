"""Dataset scanners and their registry: ``scan(name, path)`` gives a :class:`DatasetIndex`."""
from __future__ import annotations

import importlib
import os
from typing import Any

from bclib.data.index import DatasetError, DatasetIndex, Problem
from bclib.paths import find_dataset_dir

#: Every dataset ``scan`` knows; each has a module of that name here with a ``scan(path, ...)``.
DATASET_NAMES = ("idc", "breakhis", "breastmnist", "mias", "folder", "pcam")


def scan(name: str, path: str | os.PathLike | None = None, **options: Any) -> DatasetIndex:
    """Scan dataset ``name`` at ``path`` (or where :func:`bclib.paths.find_dataset_dir` finds it)."""
    if name not in DATASET_NAMES:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {sorted(DATASET_NAMES)}")
    location = find_dataset_dir(name, path)
    if location is None:
        raise DatasetError(
            f"no {name!r} dataset found: pass --data PATH, set BCLIB_DATA, or see data/README.md "
            f"for how to download it (`bclib data download {name}`)"
        )
    return importlib.import_module(f"bclib.data.datasets.{name}").scan(location, **options)


__all__ = ["DATASET_NAMES", "DatasetError", "DatasetIndex", "Problem", "scan"]
