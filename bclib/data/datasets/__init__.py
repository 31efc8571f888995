"""Dataset scanners and their registry: ``scan(name, path)`` gives a :class:`DatasetIndex`."""
from __future__ import annotations

import os
from typing import Any, Callable

from bclib.data.index import DatasetError, DatasetIndex, Problem
from bclib.paths import find_dataset_dir


def _scanners() -> dict[str, Callable[..., DatasetIndex]]:
    from bclib.data.datasets import idc

    scanners: dict[str, Callable[..., DatasetIndex]] = {"idc": idc.scan}
    for name in ("breakhis", "breastmnist", "mias", "folder", "pcam"):
        try:
            module = __import__(f"bclib.data.datasets.{name}", fromlist=["scan"])
        except ImportError:
            continue
        scanners[name] = module.scan
    return scanners


DATASET_NAMES = ("idc", "breakhis", "breastmnist", "mias", "folder", "pcam")


def scan(name: str, path: str | os.PathLike | None = None, **options: Any) -> DatasetIndex:
    """Scan dataset ``name`` at ``path`` (or where :func:`bclib.paths.find_dataset_dir` finds it)."""
    scanners = _scanners()
    if name not in scanners:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {sorted(scanners)}")
    location = find_dataset_dir(name, path)
    if location is None:
        raise DatasetError(
            f"no {name!r} dataset found: pass --data PATH, set BCLIB_DATA, or see data/README.md "
            f"for how to download it (`bclib data download {name}`)"
        )
    return scanners[name](location, **options)


__all__ = ["DATASET_NAMES", "DatasetError", "DatasetIndex", "Problem", "scan"]
