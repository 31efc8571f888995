"""Where things live: the project root, data/, reports/, the cache, and dataset folders."""
from __future__ import annotations

import os
from pathlib import Path

#: Sub-folder names of each dataset under a data root such as ``data/`` or ``$BCLIB_DATA``.
DATASET_FOLDERS: dict[str, tuple[str, ...]] = {
    "idc": ("idc", "IDC_regular_ps50_idx5", "breast-histopathology-images"),
    "breakhis": ("breakhis", "BreaKHis_v1"),
    "breastmnist": ("breastmnist", "breastmnist.npz"),
    "mias": ("mias", "mini_mias", "mini-mias", "all-mias"),
    "pcam": ("pcam", "patchcamelyon"),
    "folder": ("folder",),
}


def project_root() -> Path:
    """The repository root (``$BCLIB_ROOT`` if set), found from this file, never from the cwd."""
    override = os.environ.get("BCLIB_ROOT")
    if override:
        return Path(override).expanduser().resolve()
    return Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """The project's ``data/`` folder: downloads and caches go here (git-ignored)."""
    return project_root() / "data"


def reports_dir() -> Path:
    """The ``reports/`` folder holding one sub-folder per run (``$BCLIB_REPORTS`` if set)."""
    override = os.environ.get("BCLIB_REPORTS")
    return Path(override).expanduser().resolve() if override else project_root() / "reports"


def cache_dir() -> Path:
    """Where packed caches are written (``$BCLIB_CACHE`` if set, else ``data/cache``)."""
    override = os.environ.get("BCLIB_CACHE")
    return Path(override).expanduser().resolve() if override else data_dir() / "cache"


def synthetic_dir() -> Path:
    """Where the synthetic demo dataset is generated (beside the cache, git-ignored)."""
    return cache_dir().parent / "synthetic_idc"


def find_dataset_dir(dataset: str, data: str | os.PathLike | None = None) -> Path | None:
    """Resolve the folder (or file) of ``dataset``.

    Order: the explicit ``data`` argument, ``$BCLIB_DATA_<NAME>``, then a known sub-folder of
    ``$BCLIB_DATA`` and of the project's ``data/``. Returns ``None`` when nothing is found; an
    explicit ``data`` that does not exist raises ``FileNotFoundError`` so a typo is never
    silently replaced by other data.
    """
    if data is not None:
        path = Path(data).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"Data path {str(path)!r} does not exist.")
        return path.resolve()
    env_value = os.environ.get(f"BCLIB_DATA_{dataset.upper()}")
    if env_value and Path(env_value).expanduser().exists():
        return Path(env_value).expanduser().resolve()
    roots = [Path(os.environ["BCLIB_DATA"]).expanduser()] if os.environ.get("BCLIB_DATA") else []
    for root in [*roots, data_dir()]:
        for name in DATASET_FOLDERS.get(dataset, (dataset,)):
            candidate = root / name
            if candidate.exists():
                return candidate.resolve()
    return None
