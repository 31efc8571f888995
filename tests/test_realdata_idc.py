"""The data layer on the real IDC subset in ../shared/data/idc (skipped when absent)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bclib.data.cache import pack
from bclib.run.cli import main
from bclib.data.datasets import idc, scan
from bclib.data.index import DatasetError
from bclib.data.check import check_dataset
from bclib.data.official_splits import IDC_OFFICIAL_SPLITS
from bclib.data.splits import make_split

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def real_index(real_idc):
    return scan("idc", real_idc)


def test_info_reports_the_published_counts(real_idc, capsys):
    assert main(["data", "info", "--dataset", "idc", "--data", str(real_idc), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["images"] == 11749
    assert data["patients"] == 230
    assert data["per_class"] == {"non-IDC": 8573, "IDC": 3176}
    assert data["unreadable"] == 0 and data["synthetic"] is False


def test_index_matches_the_layout(real_index):
    frame = real_index.frame
    assert not frame["path"].duplicated().any()
    assert frame["patient_id"].str.fullmatch(r"\d+").all()
    assert ((frame["x"] - 1) % 50 == 0).all() and ((frame["y"] - 1) % 50 == 0).all()
    first = frame.iloc[0]
    assert f"class{first['label']}" in first["path"] and f"/{first['patient_id']}/{first['label']}/" in first["path"]


def test_embedded_official_lists_equal_the_published_files(real_idc):
    folder = real_idc / "janowczyk2016_split"
    if not folder.is_dir():
        pytest.skip("no janowczyk2016_split folder")
    for name in ("train", "val", "test"):
        published = [line.strip() for line in (folder / f"cases_{name}.txt").read_text().splitlines() if line.strip()]
        assert list(IDC_OFFICIAL_SPLITS[name]) == published


def test_patient_split_on_real_data(real_index):
    split = make_split(real_index, "patient", seed=0)
    summary = split.summary()
    assert summary["patients"].sum() == 230 and summary["images"].sum() == 11749
    assert split.overlapping_patients() == []
    shares = summary["patients"] / 230
    assert abs(shares["train"] - 0.7) < 0.03 and abs(shares["val"] - 0.15) < 0.03
    assert summary["positive_fraction"].between(0.15, 0.45).all()
    assert (summary["IDC"] > 0).all() and (summary["non-IDC"] > 0).all()
    assert make_split(real_index, "patient", seed=0).patients_hash() == split.patients_hash()
    assert make_split(real_index, "patient", seed=1).patients_hash() != split.patients_hash()


def test_official_split_fails_clearly_on_the_subset(real_index):
    with pytest.raises(DatasetError, match="official 'test' split is empty") as error:
        make_split(real_index, "official")
    assert "49" in str(error.value) and "patient" in str(error.value)


def test_official_train_and_val_lists_are_mostly_present(real_index):
    present = set(real_index.frame["patient_id"])
    assert sum(p in present for p in IDC_OFFICIAL_SPLITS["train"]) == 82
    assert all(p in present for p in IDC_OFFICIAL_SPLITS["val"])
    assert not any(p in present for p in IDC_OFFICIAL_SPLITS["test"])


def test_pack_and_check_two_real_patients(real_index, tmp_path):
    patients = real_index.frame["patient_id"].unique()[:2]
    subset = real_index.subset(np.flatnonzero(real_index.frame["patient_id"].isin(patients)))
    packed = pack(subset, 50, cache_root=tmp_path, progress=False)
    assert packed.failed == [] and packed.images.shape == (len(subset), 50, 50, 3)
    assert 50 < float(np.asarray(packed.images).mean()) < 250
    report = check_dataset(subset)
    assert report.ok and report.decoded == len(subset)


def test_scan_is_quick(real_idc):
    import time

    started = time.perf_counter()
    index = idc.scan(real_idc)
    assert len(index) == 11749
    assert time.perf_counter() - started < 15


@pytest.mark.slow
def test_every_real_file_decodes(real_index):
    report = check_dataset(real_index, workers=2)
    assert report.ok, report.lines()[:5]
    assert report.decoded == 11749 and report.sizes.get("50x50", 0) > 11000
