"""The IDC scanner on good and bad folders, and the read-only integrity check."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bclib.data.cache import pack
from bclib.data.datasets import idc, scan
from bclib.data.index import DatasetError
from bclib.data.check import check_dataset
from bclib.data.synthetic import MARKER_FILE, make_synthetic_idc


def write_patch(folder: Path, patient: str, x: int, y: int, label: int, mode: str = "RGB", size=(50, 50)) -> Path:
    path = folder / patient / str(label) / f"{patient}_idx5_x{x}_y{y}_class{label}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = {"RGB": (200, 120, 180), "L": 120, "RGBA": (200, 120, 180, 128), "LA": (90, 200)}[mode]
    Image.new(mode, size, colour).save(path)
    return path


def small_tree(root: Path) -> Path:
    for patient in ("8863", "9000"):
        for number in range(3):
            write_patch(root, patient, 1 + 50 * number, 1, number % 2)
    return root


def snapshot(folder: Path) -> dict[str, tuple[int, float]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime) for p in folder.rglob("*")}


def test_scan_reads_names_and_columns(tmp_path):
    index = idc.scan(small_tree(tmp_path))
    assert len(index) == 6 and index.class_names == ["non-IDC", "IDC"] and index.positive_label == 1
    assert list(index.frame.columns[:4]) == ["path", "label", "label_name", "patient_id"]
    assert set(index.frame["patient_id"]) == {"8863", "9000"}
    assert set(index.frame["x"]) == {1, 51, 101} and set(index.frame["y"]) == {1}
    assert (index.frame["label_name"] == index.frame["label"].map({0: "non-IDC", 1: "IDC"})).all()
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in index.frame["path"])


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    small_tree(tmp_path / "rel")
    monkeypatch.chdir(tmp_path)
    index = idc.scan("rel")
    assert all(Path(p).is_absolute() for p in index.frame["path"]) and index.root.is_absolute()
    assert not index.synthetic and index.problems == [] and index.ignored_files == 0


def test_missing_folder_and_file_instead_of_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        idc.scan(tmp_path / "nowhere")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        idc.scan(a_file)


def test_wrong_layout_says_what_was_expected(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (50, 50)).save(flat / "8863_idx5_x1_y1_class0.png")
    with pytest.raises(DatasetError, match=r"expected the IDC layout <root>/<patient_id>/<0\|1>/"):
        idc.scan(flat)
    by_class = tmp_path / "by_class"
    (by_class / "benign").mkdir(parents=True)
    Image.new("RGB", (50, 50)).save(by_class / "benign" / "a.png")
    with pytest.raises(DatasetError, match="no patient folders"):
        idc.scan(by_class)


def test_empty_dataset(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no patient folders"):
        idc.scan(tmp_path / "empty")
    (tmp_path / "hollow" / "8863" / "0").mkdir(parents=True)
    (tmp_path / "hollow" / "8863" / "1").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no IDC patches found"):
        idc.scan(tmp_path / "hollow")


def test_class_mismatch_names_the_files(tmp_path):
    small_tree(tmp_path)
    wrong = tmp_path / "8863" / "0" / "8863_idx5_x501_y1_class1.png"
    Image.new("RGB", (50, 50)).save(wrong)
    with pytest.raises(DatasetError, match="differs from their folder") as error:
        idc.scan(tmp_path)
    assert str(wrong) in str(error.value)


def test_bad_names_are_problems_and_non_images_are_ignored(tmp_path):
    small_tree(tmp_path)
    (tmp_path / "README.txt").write_text("notes")
    (tmp_path / "8863" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "8863" / "0" / "Thumbs.db").write_bytes(b"\0")
    (tmp_path / "9000" / "1" / "notes.csv").write_text("a,b")
    (tmp_path / "9000" / "1" / "subfolder").mkdir()
    odd = tmp_path / "9000" / "1" / "renamed_by_hand.png"
    Image.new("RGB", (50, 50)).save(odd)
    misplaced = tmp_path / "9000" / "9000_idx5_x1_y1_class0.png"  # beside the class folders
    Image.new("RGB", (50, 50)).save(misplaced)
    index = idc.scan(tmp_path)
    assert len(index) == 6
    assert index.ignored_files == 4  # files only: the empty sub-folder is not counted
    assert sorted(p.path for p in index.problems) == sorted([str(odd), str(misplaced)])
    assert all("does not follow" in problem.reason for problem in index.problems)


def test_grayscale_and_rgba_patches_load_as_rgb(tmp_path):
    write_patch(tmp_path, "8863", 1, 1, 0, mode="L")
    write_patch(tmp_path, "8863", 51, 1, 1, mode="RGBA")
    write_patch(tmp_path, "8863", 101, 1, 1, mode="LA", size=(30, 50))
    index = idc.scan(tmp_path)
    for position in range(len(index)):
        image = index.load_image(position)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    gray = index.load_image(0)
    assert (gray[..., 0] == gray[..., 2]).all() and gray[0, 0, 0] == 120


def test_kaggle_nesting_and_duplicated_top_level_folders(tmp_path):
    archive = tmp_path / "archive"
    inner = archive / "IDC_regular_ps50_idx5" / "IDC_regular_ps50_idx5"
    small_tree(inner)
    shutil.copytree(inner / "8863", archive / "8863")  # the archive repeats patient folders at its top level
    shutil.copytree(inner / "9000", archive / "9000")
    index = idc.scan(archive)
    assert len(index) == 6 and index.root == inner
    assert not index.frame["path"].duplicated().any()
    assert idc.scan(archive / "IDC_regular_ps50_idx5").root == inner
    assert scan("idc", archive).counts()["images"] == 6


def test_synthetic_marker_sets_the_flag(tmp_path):
    make_synthetic_idc(tmp_path, n_patients=2, patches_per_patient=4)
    assert idc.scan(tmp_path).synthetic and idc.scan(tmp_path).ignored_files == 0
    (tmp_path / MARKER_FILE).unlink()
    (tmp_path / "IDC_regular_ps50_idx5" / MARKER_FILE).unlink()
    assert not idc.scan(tmp_path).synthetic


def test_corrupt_and_truncated_files_are_listed_by_check_and_pack(tmp_path):
    data = tmp_path / "data"
    make_synthetic_idc(data, n_patients=2, patches_per_patient=6, seed=2)
    index = idc.scan(data)
    truncated, garbage = Path(index.frame.at[1, "path"]), Path(index.frame.at[7, "path"])
    truncated.write_bytes(truncated.read_bytes()[:60])
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n but then nothing sensible")
    before = snapshot(data)
    index = idc.scan(data)
    for workers in (1, 2):
        report = check_dataset(index, workers=workers)
        assert not report.ok and report.checked == 12 and report.decoded == 10
        assert sorted(p.path for p in report.problems) == sorted([str(truncated), str(garbage)])
        assert all(p.reason for p in report.problems)
        assert report.to_dict()["problems"][0]["path"] in {str(truncated), str(garbage)}
        assert sum(report.sizes.values()) == 10
        assert str(truncated) in "\n".join(report.lines())
    packed = pack(index, 50, cache_root=tmp_path / "cache", progress=False)
    assert len(packed) == 10 and {p.path for p in packed.failed} == {str(truncated), str(garbage)}
    assert snapshot(data) == before, "check and pack must never modify the data folder"


def test_check_passes_clean_data_and_includes_scan_problems(tmp_path):
    small_tree(tmp_path)
    assert check_dataset(idc.scan(tmp_path)).ok
    Image.new("RGB", (50, 50)).save(tmp_path / "8863" / "0" / "bad_name.png")
    report = check_dataset(idc.scan(tmp_path))
    assert not report.ok and report.decoded == report.checked == 6 and len(report.problems) == 1


def test_scanner_is_fast_without_opening_images(tmp_path):
    root = tmp_path / "many"
    for patient in range(20):
        for label in (0, 1):
            folder = root / str(10000 + patient) / str(label)
            folder.mkdir(parents=True)
            for number in range(100):
                (folder / f"{10000 + patient}_idx5_x{1 + 50 * number}_y{1 + 50 * label}_class{label}.png").touch()
    started = time.perf_counter()
    index = idc.scan(root)
    elapsed = time.perf_counter() - started
    assert len(index) == 4000 and index.frame["patient_id"].nunique() == 20
    assert elapsed < 10, f"scanning 4,000 files took {elapsed:.1f} s"


def test_symlinked_patient_folders_are_followed_once(tmp_path):
    full = small_tree(tmp_path / "full")
    subset = tmp_path / "subset"
    subset.mkdir()
    (subset / "8863").symlink_to(full / "8863", target_is_directory=True)  # a subset made of links
    index = idc.scan(subset)
    assert len(index) == 3 and set(index.frame["patient_id"]) == {"8863"} and index.problems == []
    assert all(path.startswith(str(subset)) for path in index.frame["path"])
    (full / "8863" / "0" / "loop").symlink_to(subset, target_is_directory=True)
    (subset / "again").symlink_to(full / "8863", target_is_directory=True)
    index = idc.scan(subset)
    assert len(index) == 3 and sorted(Path(p.path).name for p in index.problems) == ["again", "loop"]
    assert all("not followed, so no image is indexed twice" in p.reason for p in index.problems)
