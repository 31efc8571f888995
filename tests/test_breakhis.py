"""BreakHis scanner: real sample tree and small synthetic trees in the original layout."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bclib.data.datasets import breakhis
from bclib.data.datasets import scan as registry_scan
from bclib.data.index import DatasetError

LETTER = {"benign": "B", "malignant": "M"}
CODES = {subtype: code for code, (subtype, _) in breakhis.SUBTYPE_CODES.items()}


def write_breakhis(root: Path, files: list[tuple[str, str, str, int, int]], folder_kind: dict | None = None) -> Path:
    """Write tiny PNGs as ``(kind, subtype, slide, magnification, frame)`` in the original tree."""
    rng = np.random.default_rng(0)
    breast = root / "BreaKHis_v1" / "histology_slides" / "breast"
    for kind, subtype, slide, magnification, frame in files:
        code = CODES[subtype]
        folder_class = (folder_kind or {}).get((subtype, slide), kind)
        folder = breast / folder_class / "SOB" / subtype / f"SOB_{LETTER[kind]}_{code}_{slide}" / f"{magnification}X"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"SOB_{LETTER[kind]}_{code}-{slide}-{magnification}-{frame:03d}.png"
        Image.fromarray(rng.integers(0, 255, (6, 9, 3), dtype=np.uint8)).save(folder / name)
    return root


SYNTHETIC = [
    ("benign", "adenosis", "14-100AB", 40, 1),
    ("benign", "adenosis", "14-100CD", 100, 2),
    ("benign", "fibroadenoma", "14-200", 40, 1),
    ("benign", "phyllodes_tumor", "14-300", 200, 1),
    ("benign", "tubular_adenoma", "14-400", 400, 1),
    ("malignant", "ductal_carcinoma", "14-500", 40, 1),
    ("malignant", "ductal_carcinoma", "14-500", 400, 2),
    ("malignant", "lobular_carcinoma", "14-600", 100, 1),
    ("malignant", "mucinous_carcinoma", "14-700D", 200, 1),
    ("malignant", "papillary_carcinoma", "14-800", 40, 3),
]


@pytest.fixture()
def synthetic_breakhis(tmp_path: Path) -> Path:
    return write_breakhis(tmp_path / "breakhis", SYNTHETIC)


def test_synthetic_binary_index(synthetic_breakhis: Path) -> None:
    index = breakhis.scan(synthetic_breakhis)
    assert index.class_names == ["benign", "malignant"] and index.positive_label == 1
    assert index.counts()["per_class"] == {"benign": 5, "malignant": 5}
    assert set(index.frame["label"][index.frame["subtype"].str.endswith("carcinoma")]) == {1}
    assert {"subtype", "magnification", "slide"} <= set(index.frame.columns)
    assert index.frame["path"].map(lambda p: Path(p).is_absolute() and Path(p).is_file()).all()
    image = index.load_image(0)
    assert image.shape == (6, 9, 3) and image.dtype == np.uint8


def test_sections_of_one_patient_share_patient_id(synthetic_breakhis: Path) -> None:
    frame = breakhis.scan(synthetic_breakhis).frame
    adenosis = frame[frame["subtype"] == "adenosis"]
    assert set(adenosis["slide"]) == {"14-100AB", "14-100CD"}
    assert set(adenosis["patient_id"]) == {"14-100"}
    assert set(frame.loc[frame["subtype"] == "mucinous_carcinoma", "patient_id"]) == {"14-700"}
    assert breakhis.scan(synthetic_breakhis).counts()["patients"] == 8


def test_subtype_labels_follow_fixed_order(synthetic_breakhis: Path) -> None:
    index = breakhis.scan(synthetic_breakhis, labels="subtype")
    assert index.class_names == breakhis.SUBTYPE_CLASS_NAMES and len(index.class_names) == 8
    assert index.positive_label is None
    for row in index.frame.itertuples():
        assert index.class_names[row.label] == row.subtype == row.label_name
        assert row.category == ("malignant" if row.label >= 4 else "benign")
    # benign subtypes come first in the label order
    assert index.frame.loc[index.frame["subtype"] == "tubular_adenoma", "label"].iloc[0] == 3


@pytest.mark.parametrize("value, expected", [(40, 4), ("100X", 2), ("200", 2), ("all", 10)])
def test_magnification_filter(synthetic_breakhis: Path, value, expected: int) -> None:
    index = breakhis.scan(synthetic_breakhis, magnification=value)
    assert len(index) == expected
    if value != "all":
        assert index.frame["magnification"].nunique() == 1


@pytest.mark.parametrize("value", [50, "40x-ish", None, True, 0])
def test_invalid_magnification_is_a_clear_error(synthetic_breakhis: Path, value) -> None:
    with pytest.raises(ValueError, match="magnification must be one of"):
        breakhis.scan(synthetic_breakhis, magnification=value)


def test_invalid_label_mode(synthetic_breakhis: Path) -> None:
    with pytest.raises(ValueError, match="labels must be one of"):
        breakhis.scan(synthetic_breakhis, labels="multiclass")


def test_magnification_without_images_is_an_error(tmp_path: Path) -> None:
    root = write_breakhis(tmp_path, [("benign", "adenosis", "14-1", 40, 1)])
    with pytest.raises(DatasetError, match="400X"):
        breakhis.scan(root, magnification=400)


@pytest.mark.parametrize("level", ["", "BreaKHis_v1", "BreaKHis_v1/histology_slides", "BreaKHis_v1/histology_slides/breast"])
def test_accepts_any_level_of_the_tree(synthetic_breakhis: Path, level: str) -> None:
    assert len(breakhis.scan(synthetic_breakhis / level)) == len(SYNTHETIC)


def test_name_and_folder_disagreement_names_the_file(tmp_path: Path) -> None:
    files = [("benign", "adenosis", "14-1", 40, 1), ("malignant", "ductal_carcinoma", "14-2", 40, 1)]
    root = write_breakhis(tmp_path, files, folder_kind={("ductal_carcinoma", "14-2"): "benign"})
    with pytest.raises(DatasetError, match=r"SOB_M_DC-14-2-40-001\.png.*folder says benign"):
        breakhis.scan(root)


def test_magnification_folder_disagreement_is_an_error(tmp_path: Path) -> None:
    root = write_breakhis(tmp_path, [("benign", "adenosis", "14-1", 40, 1)])
    png = next(root.rglob("*.png"))
    wrong = png.parent.parent / "100X"
    wrong.mkdir()
    png.rename(wrong / png.name)
    with pytest.raises(DatasetError, match="folder says 100X"):
        breakhis.scan(root)


def test_odd_names_are_problems_and_other_files_are_ignored(synthetic_breakhis: Path) -> None:
    folder = next(synthetic_breakhis.rglob("40X"))
    (folder / "notes.txt").write_text("not an image")
    (folder / "Thumbs.db").write_bytes(b"\0")
    Image.new("RGB", (4, 4)).save(folder / "random_name.png")
    index = breakhis.scan(synthetic_breakhis)
    assert len(index) == len(SYNTHETIC)
    assert index.ignored_files == 2
    assert [Path(p.path).name for p in index.problems] == ["random_name.png"]
    assert index.counts()["skipped"] == 1


def test_missing_and_wrong_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist.*expected the BreakHis layout"):
        breakhis.scan(tmp_path / "nowhere")
    (tmp_path / "images").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "images" / "a.png")
    with pytest.raises(DatasetError, match="expected the BreakHis layout"):
        breakhis.scan(tmp_path)
    (tmp_path / "benign").mkdir()
    with pytest.raises(DatasetError, match="no BreakHis images"):
        breakhis.scan(tmp_path)


def test_registry_and_content_hash(synthetic_breakhis: Path) -> None:
    index = registry_scan("breakhis", synthetic_breakhis, labels="subtype")
    assert index.name == "breakhis" and index.options["labels"] == "subtype"
    assert index.content_hash() == breakhis.scan(synthetic_breakhis, labels="subtype").content_hash()
    assert index.content_hash() != breakhis.scan(synthetic_breakhis).content_hash()


def test_patient_split_is_disjoint(synthetic_breakhis: Path) -> None:
    splits = pytest.importorskip("bclib.data.splits")
    index = breakhis.scan(synthetic_breakhis)
    split = splits.make_split(index, "patient", seed=0)
    seen: dict[str, str] = {}
    total = 0
    for name in ("train", "val", "test"):
        positions = np.asarray(split.positions(name))
        total += len(positions)
        for patient in set(index.frame["patient_id"].iloc[positions]):
            assert seen.setdefault(patient, name) == name, f"patient {patient} in {seen[patient]} and {name}"
    assert total == len(index)


@pytest.mark.realdata
def test_real_sample(shared_data: Path) -> None:
    root = shared_data / "breakhis"
    if not root.is_dir():
        pytest.skip("no breakhis folder in the shared data")
    index = breakhis.scan(root)
    counts = index.counts()
    assert counts["images"] == 31 and counts["per_class"] == {"benign": 18, "malignant": 13}
    assert index.problems == [] and counts["ignored_files"] == 0
    assert index.frame["subtype"].value_counts().to_dict() == {
        "fibroadenoma": 6, "phyllodes_tumor": 5, "tubular_adenoma": 4, "ductal_carcinoma": 4,
        "papillary_carcinoma": 4, "adenosis": 3, "mucinous_carcinoma": 3, "lobular_carcinoma": 2,
    }
    assert index.frame["magnification"].value_counts().to_dict() == {40: 12, 400: 10, 200: 6, 100: 3}
    assert index.frame["slide"].nunique() == 23
    assert index.frame["patient_id"].map(lambda p: re.fullmatch(r"\d+-\d+", p) is not None).all()
    assert counts["patients"] < index.frame["slide"].nunique()
    by_file = dict(zip(index.frame["path"].map(lambda p: Path(p).name), index.frame["patient_id"]))
    assert by_file["SOB_B_A-14-22549AB-40-001.png"] == by_file["SOB_B_A-14-22549CD-400-006.png"] == "14-22549"
    image = index.load_image(0)
    assert image.shape == (460, 700, 3) and image.dtype == np.uint8
    subtype = breakhis.scan(root / "BreaKHis_v1", labels="subtype", magnification=400)
    assert len(subtype) == 10 and subtype.num_classes == 8
    assert sum(subtype.counts()["per_class"].values()) == 10


@pytest.mark.realdata
def test_real_sample_patient_split(shared_data: Path) -> None:
    splits = pytest.importorskip("bclib.data.splits")
    root = shared_data / "breakhis"
    if not root.is_dir():
        pytest.skip("no breakhis folder in the shared data")
    index = breakhis.scan(root)
    split = splits.make_split(index, "patient", seed=0)
    patients = [set(index.frame["patient_id"].iloc[np.asarray(split.positions(n))]) for n in ("train", "val", "test")]
    assert not (patients[0] & patients[1]) and not (patients[0] & patients[2]) and not (patients[1] & patients[2])
    assert sum(len(split.positions(n)) for n in ("train", "val", "test")) == len(index)
