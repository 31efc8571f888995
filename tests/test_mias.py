"""mini-MIAS scanner: the real sample and small synthetic films with their own Info.txt."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bclib.data.datasets import mias
from bclib.data.datasets import scan as registry_scan
from bclib.data.index import DatasetError

SIZE = 96
INFO = """REFNUM BG CLASS SEVERITY X Y RADIUS
mdb001 G CIRC B 20 70 5
mdb002 G NORM
mdb003 F MISC B 30 30 8
mdb003 F SPIC M 60 40 40
mdb004 D CALC M
mdb005 F ASYM B 90 5 4
mdb006 F NORM
"""
#: (X, Y) spots drawn on the films, in MIAS coordinates (origin bottom-left).
SPOTS = {"mdb001": (20, 70), "mdb003": (60, 40), "mdb005": (90, 5)}


def write_mias(root: Path, info: str = INFO, films: tuple[str, ...] = ("mdb001", "mdb002", "mdb003", "mdb004", "mdb005")) -> Path:
    """Info.txt in ``root`` and tiny 8-bit PGM films in ``root/all-mias`` with a bright spot per finding."""
    (root / "all-mias").mkdir(parents=True, exist_ok=True)
    (root / "Info.txt").write_text(info)
    for refnum in films:
        pixels = np.full((SIZE, SIZE), 40, dtype=np.uint8)
        if refnum in SPOTS:
            x, y = SPOTS[refnum]
            row = SIZE - 1 - y
            pixels[max(row - 1, 0) : row + 2, max(x - 1, 0) : x + 2] = 250
        Image.fromarray(pixels, mode="L").save(root / "all-mias" / f"{refnum}.pgm")
    return root


@pytest.fixture()
def synthetic_mias(tmp_path: Path) -> Path:
    return write_mias(tmp_path / "mini_mias")


def test_whole_mode_three_classes(synthetic_mias: Path) -> None:
    index = mias.scan(synthetic_mias)
    assert index.class_names == ["normal", "benign", "malignant"] and index.positive_label is None
    assert index.counts()["per_class"] == {"normal": 1, "benign": 2, "malignant": 2}
    by_film = index.frame.set_index("refnum")
    assert by_film.loc["mdb003", "label_name"] == "malignant", "a film is labelled by its worst finding"
    assert by_film.loc["mdb003", "n_abnormalities"] == 2
    assert by_film.loc["mdb002", "severity"] is None
    assert index.options["listed_not_found"] == 1  # mdb006
    image = index.load_image(0)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert np.array_equal(image[:, :, 0], image[:, :, 1])


def test_left_right_pairs_share_a_patient(synthetic_mias: Path) -> None:
    frame = mias.scan(synthetic_mias).frame.set_index("refnum")
    assert frame.loc["mdb001", "patient_id"] == frame.loc["mdb002", "patient_id"] == "001"
    assert frame.loc["mdb003", "patient_id"] == frame.loc["mdb004", "patient_id"] == "002"
    assert frame.loc["mdb005", "patient_id"] == "003"
    assert mias.scan(synthetic_mias).counts()["patients"] == 3


def test_y_is_converted_from_the_bottom(synthetic_mias: Path) -> None:
    frame = mias.scan(synthetic_mias).frame.set_index("refnum")
    assert frame.loc["mdb001", "cy"] == SIZE - 1 - 70 and frame.loc["mdb001", "mias_y"] == 70
    assert frame.loc["mdb001", "cx"] == 20


def test_roi_crops_centre_on_the_finding(synthetic_mias: Path) -> None:
    index = mias.scan(synthetic_mias, mode="roi", min_crop=16)
    frame = index.frame
    assert len(frame) == 6  # one row per finding: 001, 002 (normal), 003 x2, 004, 005
    spot = int(np.flatnonzero((frame["refnum"] == "mdb001"))[0])
    crop = index.load_image(spot)
    assert crop.shape == (16, 16, 3)
    rows, cols = np.nonzero(crop[:, :, 0] > 200)
    assert rows.size and abs(rows.mean() - 8) <= 2 and abs(cols.mean() - 8) <= 2
    large = frame[(frame["refnum"] == "mdb003") & (frame["radius"] == 40)].iloc[0]
    assert large["crop_size"] == 80  # 2 * radius > min_crop
    assert 0 <= large["crop_left"] <= SIZE - 80 and 0 <= large["crop_top"] <= SIZE - 80


def test_roi_edge_normal_and_spread_findings(synthetic_mias: Path) -> None:
    index = mias.scan(synthetic_mias, mode="roi", min_crop=32)
    frame = index.frame
    edge = int(np.flatnonzero(frame["refnum"] == "mdb005")[0])
    assert (frame.loc[edge, "crop_left"], frame.loc[edge, "crop_top"]) == (SIZE - 32, SIZE - 32)
    crop = index.load_image(edge)
    assert crop.shape == (32, 32, 3) and crop.max() > 200, "the crop is shifted inside and keeps the spot"
    normal = int(np.flatnonzero(frame["refnum"] == "mdb002")[0])
    assert index.load_image(normal).shape == (32, 32, 3)
    assert (frame.loc[normal, "crop_left"], frame.loc[normal, "crop_top"]) == (32, 32)
    spread = int(np.flatnonzero(frame["refnum"] == "mdb004")[0])
    assert index.load_image(spread).shape == (SIZE, SIZE, 3), "no centre given: the whole film"
    huge = mias.scan(synthetic_mias, mode="roi", min_crop=500)
    assert set(huge.frame["crop_size"].dropna()) == {SIZE}


def test_binary_labels_exclude_normals(synthetic_mias: Path) -> None:
    index = mias.scan(synthetic_mias, labels="binary")
    assert index.class_names == ["benign", "malignant"] and index.positive_label == 1
    assert "normal" not in set(index.frame["label_name"])
    assert index.options["excluded_by_class"] == 1
    reordered = mias.scan(synthetic_mias, classes=("malignant", "normal"))
    assert reordered.positive_label == 0 and reordered.counts()["per_class"] == {"malignant": 2, "normal": 1}


@pytest.mark.parametrize(
    "options, message",
    [
        ({"mode": "crop"}, "mode must be"),
        ({"labels": "multi"}, "labels must be"),
        ({"classes": ("benign",)}, "classes must be"),
        ({"classes": ("benign", "cancer")}, "classes must be"),
        ({"labels": "binary", "classes": ("normal", "benign", "malignant")}, "two classes"),
        ({"min_crop": 0}, "min_crop"),
    ],
)
def test_invalid_options(synthetic_mias: Path, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mias.scan(synthetic_mias, **options)


def test_unlisted_files_are_problems_and_others_ignored(synthetic_mias: Path) -> None:
    Image.new("L", (8, 8)).save(synthetic_mias / "all-mias" / "mdb999.pgm")
    Image.new("L", (8, 8)).save(synthetic_mias / "all-mias" / "scan.pgm")
    (synthetic_mias / "README.md").write_text("notes")
    index = mias.scan(synthetic_mias)
    assert sorted(Path(p.path).name for p in index.problems) == ["mdb999.pgm", "scan.pgm"]
    assert index.ignored_files == 1
    assert len(index) == 5


def test_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist.*Info.txt"):
        mias.scan(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no Info.txt"):
        mias.scan(tmp_path / "empty")
    bad = write_mias(tmp_path / "bad", info="REFNUM BG CLASS\nmdb001 G WHAT B 1 1 1\n")
    with pytest.raises(DatasetError, match=r"Info.txt:2"):
        mias.scan(bad)
    none_found = write_mias(tmp_path / "none", films=())
    with pytest.raises(DatasetError, match="none of the 6 films"):
        mias.scan(none_found)


def test_registry_accepts_parent_folder_and_hash_depends_on_mode(synthetic_mias: Path) -> None:
    whole = registry_scan("mias", synthetic_mias.parent)
    roi = registry_scan("mias", synthetic_mias / "Info.txt", mode="roi")
    assert whole.root == roi.root == synthetic_mias
    assert whole.content_hash() != roi.content_hash()


@pytest.mark.filterwarnings("ignore:split .* holds no:UserWarning")
def test_patient_split_keeps_pairs_together(synthetic_mias: Path) -> None:
    splits = pytest.importorskip("bclib.data.splits")
    index = mias.scan(synthetic_mias, mode="roi")
    split = splits.make_split(index, "patient", seed=0)
    assert split.overlapping_patients() == []
    film_split = {}
    for name in ("train", "val", "test"):
        for refnum in index.frame["refnum"].iloc[split.positions(name)]:
            film_split.setdefault(refnum, name)
    assert film_split["mdb001"] == film_split["mdb002"] and film_split["mdb003"] == film_split["mdb004"]


@pytest.mark.realdata
def test_real_sample(shared_data: Path) -> None:
    root = shared_data / "mini_mias"
    if not root.is_dir():
        pytest.skip("no mini_mias folder in the shared data")
    index = mias.scan(root)
    counts = index.counts()
    assert counts["images"] == 20 and counts["per_class"] == {"normal": 0, "benign": 10, "malignant": 10}
    assert index.options["listed_not_found"] == 302 and index.problems == []
    assert any("normal" in warning for warning in index.options["warnings"])
    assert index.frame["cy"].between(0, 1023).all() and (index.frame["cy"] + index.frame["mias_y"] == 1023).all()
    image = index.load_image(0)
    assert image.shape == (1024, 1024, 3) and image.dtype == np.uint8
    roi = mias.scan(root, mode="roi", labels="binary")
    assert len(roi) == 20 and roi.positive_label == 1
    crop = roi.load_image(0)
    side = int(roi.frame.loc[0, "crop_size"])
    assert crop.shape == (side, side, 3) and side >= mias.DEFAULT_MIN_CROP
