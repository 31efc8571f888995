"""PCam scanner: small HDF5 files written in the official PatchCamelyon format."""
from __future__ import annotations

import multiprocessing
from pathlib import Path

import h5py
import numpy as np
import pytest

from bclib.data.datasets import pcam
from bclib.data.datasets import scan as registry_scan
from bclib.data.index import DatasetError

SIZES = {"train": 6, "valid": 3, "test": 4}


def write_pcam(folder: Path, sizes: dict[str, int] = SIZES, patch: int = 12) -> Path:
    """``camelyonpatch_level_2_split_<split>_{x,y}.h5`` with ``x`` (N, P, P, 3) and ``y`` (N, 1, 1, 1).

    Patch ``i`` of a split is filled with the value ``i`` so a test can check which one was read.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in sizes.items():
        x = np.broadcast_to(np.arange(count, dtype=np.uint8)[:, None, None, None], (count, patch, patch, 3)).copy()
        y = (np.arange(count) % 2).astype(np.uint8).reshape(count, 1, 1, 1)
        with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as handle:
            handle.create_dataset("x", data=x, chunks=(1, patch, patch, 3))
        with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as handle:
            handle.create_dataset("y", data=y)
    return folder


@pytest.fixture()
def small_pcam(tmp_path: Path) -> Path:
    return write_pcam(tmp_path / "pcam")


def test_index_splits_and_labels(small_pcam: Path) -> None:
    index = pcam.scan(small_pcam)
    assert index.class_names == ["non-metastatic", "metastatic"] and index.positive_label == 1
    assert index.frame.groupby("split").size().to_dict() == {"train": 6, "val": 3, "test": 4}
    assert index.counts()["per_class"] == {"non-metastatic": 7, "metastatic": 6}
    assert index.frame["patient_id"].is_unique
    assert index.options["splits"] == ("train", "val", "test")


def test_reader_reads_the_right_patch(small_pcam: Path) -> None:
    index = pcam.scan(small_pcam)
    rows = index.frame
    for position in (0, 5, int(np.flatnonzero(rows["split"] == "val")[2])):
        image = index.load_image(position)
        assert image.shape == (12, 12, 3) and image.dtype == np.uint8
        assert np.all(image == rows.loc[position, "array_position"])
    handle = pcam.open_file(rows.loc[0, "path"])
    assert pcam.open_file(rows.loc[1, "path"]) is handle, "the file stays open and is reused"


def test_index_pickles_and_reads_in_another_process(small_pcam: Path) -> None:
    index = pcam.scan(small_pcam)
    index.load_image(0)  # the parent has a handle open; the child opens its own
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        image = pool.apply(index.load_image, (7,))
    assert image.shape == (12, 12, 3) and np.all(image == index.frame.loc[7, "array_position"])


def test_split_selection_and_parent_folder(small_pcam: Path) -> None:
    only_test = pcam.scan(small_pcam.parent, splits=["test"])
    assert set(only_test.frame["split"]) == {"test"} and len(only_test) == 4
    with pytest.raises(ValueError, match="splits must name"):
        pcam.scan(small_pcam, splits=["valid"])
    partial = write_pcam(small_pcam.parent / "partial", sizes={"train": 2})
    assert len(pcam.scan(partial)) == 2
    with pytest.raises(DatasetError, match="'test' requested"):
        pcam.scan(partial, splits=["test"])


def test_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist.*camelyonpatch"):
        pcam.scan(tmp_path / "absent")
    with pytest.raises(DatasetError, match="no PCam files"):
        pcam.scan(tmp_path)
    gz = tmp_path / "gz"
    gz.mkdir()
    (gz / "camelyonpatch_level_2_split_test_x.h5.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(DatasetError, match="gunzip"):
        pcam.scan(gz)
    no_labels = write_pcam(tmp_path / "nolabels", sizes={"test": 2})
    (no_labels / "camelyonpatch_level_2_split_test_y.h5").unlink()
    with pytest.raises(DatasetError, match="no label file"):
        pcam.scan(no_labels)


def test_shape_mismatch_is_an_error(tmp_path: Path) -> None:
    folder = write_pcam(tmp_path / "bad", sizes={"test": 3})
    with h5py.File(folder / "camelyonpatch_level_2_split_test_y.h5", "w") as handle:
        handle.create_dataset("y", data=np.zeros((2, 1, 1, 1), np.uint8))
    with pytest.raises(DatasetError, match="x has shape"):
        pcam.scan(folder)


def test_official_split_and_registry(small_pcam: Path) -> None:
    index = registry_scan("pcam", small_pcam)
    assert index.content_hash() == pcam.scan(small_pcam).content_hash()
    splits = pytest.importorskip("bclib.data.splits")
    split = splits.make_split(index, "official", seed=0)
    assert {name: len(split.positions(name)) for name in ("train", "val", "test")} == {"train": 6, "val": 3, "test": 4}
