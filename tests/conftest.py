"""Shared fixtures: the real data folder (when present) and a small synthetic IDC tree."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("BCLIB_OFFLINE", "1")  # tests never reach for the internet (first-run tests use a local server)


def shared_data_dir() -> Path | None:
    """``$BCLIB_SHARED_DATA`` (set by .ci/run), or ``../shared/data`` beside the checkout."""
    value = os.environ.get("BCLIB_SHARED_DATA")
    candidates = [Path(value)] if value else []
    candidates.append(Path(__file__).resolve().parents[1].parent / "shared" / "data")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets folder; skips the test when it is absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("real data not available (set BCLIB_SHARED_DATA or put ../shared/data beside the repo)")
    return path


@pytest.fixture(scope="session")
def real_idc(shared_data: Path) -> Path:
    path = shared_data / "idc"
    if not path.is_dir():
        pytest.skip("no idc folder in the shared data")
    return path


@pytest.fixture(scope="session", autouse=True)
def _isolated_outputs(tmp_path_factory):
    """Caches and reports of every test go to temporary folders, never into the repo."""
    base = tmp_path_factory.getbasetemp()
    saved = {key: os.environ.get(key) for key in ("BCLIB_CACHE", "BCLIB_REPORTS", "KERAS_HOME")}
    os.environ["BCLIB_CACHE"] = str(base / "cache")
    os.environ["BCLIB_REPORTS"] = str(base / "reports")
    os.environ["KERAS_HOME"] = str(base / "keras_home")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def synthetic_idc(tmp_path_factory) -> Path:
    """A small synthetic dataset in the real IDC layout (12 patients, both classes each)."""
    from bclib.data.synthetic import make_synthetic_idc

    root = tmp_path_factory.mktemp("synthetic_idc")
    make_synthetic_idc(root, n_patients=12, patches_per_patient=24, seed=0)
    return root
