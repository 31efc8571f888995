"""BreastMNIST scanner: the real official npz and small npz files in the same format."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from bclib.data.datasets import breastmnist
from bclib.data.datasets import scan as registry_scan
from bclib.data.index import DatasetError

SIZES = {"train": 6, "val": 3, "test": 4}


def write_npz(path: Path, sizes: dict[str, int] = SIZES, seed: int = 0, **overrides: np.ndarray) -> Path:
    """A BreastMNIST-format npz: ``<split>_images`` (N, 8, 8) uint8, ``<split>_labels`` (N, 1)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in sizes.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, 8, 8), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % 2).astype(np.uint8).reshape(-1, 1)
    arrays.update(overrides)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


@pytest.fixture()
def small_npz(tmp_path: Path) -> Path:
    return write_npz(tmp_path / "breastmnist" / "breastmnist.npz")


def test_index_keeps_file_labels_and_names_disease(small_npz: Path) -> None:
    index = breastmnist.scan(small_npz)
    assert index.class_names == ["malignant", "normal/benign"]
    assert index.positive_label == 0, "label 0 is malignant in the file, so it is the positive class"
    assert len(index) == sum(SIZES.values())
    assert index.frame.groupby("split").size().to_dict() == SIZES
    assert set(index.frame["label_name"][index.frame["label"] == 0]) == {"malignant"}
    assert index.frame["patient_id"].is_unique
    assert index.counts()["patients"] == len(index)


def test_reader_returns_the_stored_image_as_rgb(small_npz: Path) -> None:
    index = breastmnist.scan(small_npz)
    with np.load(small_npz) as data:
        expected = data["val_images"][2]
    position = int(np.flatnonzero((index.frame["split"] == "val") & (index.frame["array_position"] == 2))[0])
    image = index.load_image(position)
    assert image.shape == (8, 8, 3) and image.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(image[:, :, channel], expected)
    assert index.subset([position]).load_image(0).tobytes() == image.tobytes()


def test_arrays_are_loaded_once_and_reloaded_when_the_file_changes(small_npz: Path) -> None:
    first = breastmnist.load_arrays(small_npz)
    assert breastmnist.load_arrays(small_npz) is first
    write_npz(small_npz, seed=1)
    os.utime(small_npz, ns=(1, 10**18))
    second = breastmnist.load_arrays(small_npz)
    assert second is not first
    assert not np.array_equal(second["train_images"], first["train_images"])


def test_content_hash_follows_the_file(small_npz: Path) -> None:
    before = breastmnist.scan(small_npz).content_hash()
    assert breastmnist.scan(small_npz.parent).content_hash() == before
    write_npz(small_npz, seed=1)  # same rows and labels, other pixels: only the file's stat changes
    os.utime(small_npz, ns=(1, 2 * 10**18))
    assert breastmnist.scan(small_npz).content_hash() != before


@pytest.mark.parametrize("relative", ["breastmnist.npz", ".", ".."])
def test_accepts_file_folder_or_parent(small_npz: Path, relative: str) -> None:
    assert len(breastmnist.scan(small_npz.parent / relative)) == sum(SIZES.values())


def test_two_copies_below_the_folder_are_refused_by_name(small_npz: Path) -> None:
    second = write_npz(small_npz.parent.parent / "copy" / "breastmnist.npz")
    with pytest.raises(DatasetError, match="several folders") as error:
        breastmnist.scan(small_npz.parent.parent)
    assert str(second.parent) in str(error.value) and str(small_npz.parent) in str(error.value)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist.*breastmnist.npz"):
        breastmnist.scan(tmp_path / "nothing")
    with pytest.raises(DatasetError, match="no breastmnist.npz"):
        breastmnist.scan(tmp_path)
    wrong_keys = tmp_path / "other.npz"
    np.savez(wrong_keys, x=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DatasetError, match="train_images"):
        breastmnist.scan(wrong_keys)
    not_npz = tmp_path / "broken" / "breastmnist.npz"
    not_npz.parent.mkdir()
    not_npz.write_text("not a zip")
    with pytest.raises(DatasetError, match="not a readable npz"):
        breastmnist.scan(not_npz)


def damaged_copy(path: Path, how: str) -> Path:
    """``path`` cut in half (an interrupted copy), or with bytes overwritten inside its first array."""
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    else:
        data[200:260] = b"\xff" * 60
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("how", ["truncated", "overwritten"])
def test_a_damaged_npz_is_a_dataset_error_saying_what_to_do(tmp_path: Path, how: str) -> None:
    npz = tmp_path / "breastmnist" / "breastmnist.npz"
    np.savez_compressed(write_npz(npz), **dict(np.load(npz)))  # compressed, as MedMNIST publishes it
    damaged_copy(npz, how)
    with pytest.raises(DatasetError) as caught:
        breastmnist.scan(npz.parent)
    message = str(caught.value)
    assert str(npz) in message and "damaged or incomplete" in message
    assert "download it again (bclib data download breastmnist" in message


def test_mismatched_lengths_and_bad_labels(tmp_path: Path) -> None:
    short = write_npz(tmp_path / "a.npz", train_labels=np.zeros((2, 1), np.uint8))
    with pytest.raises(DatasetError, match="train_images has shape"):
        breastmnist.scan(short)
    three = write_npz(tmp_path / "b.npz", val_labels=np.full((3, 1), 2, np.uint8))
    with pytest.raises(DatasetError, match=r"holds \[2\]"):
        breastmnist.scan(three)


def test_official_split_from_the_split_column(small_npz: Path) -> None:
    splits = pytest.importorskip("bclib.data.splits")
    index = breastmnist.scan(small_npz)
    split = splits.make_split(index, "official", seed=0)
    for name, size in SIZES.items():
        positions = split.positions(name)
        assert len(positions) == size
        assert set(index.frame["split"].iloc[positions]) == {name}


@pytest.mark.realdata
def test_real_file_official_splits_and_class_counts(shared_data: Path) -> None:
    folder = shared_data / "breastmnist"
    if not folder.is_dir():
        pytest.skip("no breastmnist folder in the shared data")
    index = registry_scan("breastmnist", folder)
    assert index.frame.groupby("split").size().to_dict() == {"train": 546, "val": 78, "test": 156}
    per_split = index.frame.groupby(["split", "label"]).size().unstack().to_dict(orient="index")
    assert per_split == {"train": {0: 147, 1: 399}, "val": {0: 21, 1: 57}, "test": {0: 42, 1: 114}}
    assert index.counts()["per_class"] == {"malignant": 210, "normal/benign": 570}
    assert index.positive_label == 0
    for position in (0, len(index) - 1):
        image = index.load_image(position)
        assert image.shape == (28, 28, 3) and image.dtype == np.uint8
        assert np.array_equal(image[:, :, 0], image[:, :, 2])
    assert not index.frame.duplicated(["split", "array_position"]).any() and index.frame["patient_id"].is_unique
