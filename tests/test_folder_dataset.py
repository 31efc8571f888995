"""Class-folder scanner: small trees of PNG, JPEG, TIFF and PGM images the tests write."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bclib.data.datasets import folder
from bclib.data.datasets import scan as registry_scan
from bclib.data.index import DatasetError


def write_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (7, 5)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = 128 if mode == "L" else (200, 30, 90)
    Image.new(mode, size, color).save(path)
    return path


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """``root/{benign,malignant,normal}`` with mixed formats and one nested folder."""
    root = tmp_path / "my_images"
    write_image(root / "benign" / "b1.png")
    write_image(root / "benign" / "b2.jpg")
    write_image(root / "benign" / "case7" / "deep" / "b3.tif")
    write_image(root / "malignant" / "m1.pgm", mode="L")
    write_image(root / "malignant" / "m2.jpeg")
    write_image(root / "normal" / "n1.png")
    (root / "benign" / "notes.txt").write_text("x")
    (root / "labels.csv").write_text("x")
    return root


def test_multiclass_sorted_and_nested(tree: Path) -> None:
    index = folder.scan(tree)
    assert index.class_names == ["benign", "malignant", "normal"]
    assert index.positive_label is None
    assert index.counts()["per_class"] == {"benign": 3, "malignant": 2, "normal": 1}
    assert index.ignored_files == 2
    assert any("image-level" in w for w in index.options["warnings"])
    assert index.frame["patient_id"].is_unique
    for position in range(len(index)):
        image = index.load_image(position)
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


def test_classes_fix_order_and_subset(tree: Path) -> None:
    index = folder.scan(tree, classes=["normal", "malignant"])
    assert index.class_names == ["normal", "malignant"] and index.positive_label == 1
    assert set(index.frame["label_name"]) == {"normal", "malignant"}
    assert index.options["unused_folders"] == ("benign",)
    with pytest.raises(DatasetError, match=r"no folder for class\(es\) \['lymphoma'\]"):
        folder.scan(tree, classes=["normal", "lymphoma"])


def test_positive_class_and_disease_first_warning(tmp_path: Path) -> None:
    write_image(tmp_path / "malignant" / "a.png")
    write_image(tmp_path / "normal" / "b.png")
    index = folder.scan(tmp_path)
    assert index.positive_label == 1 and any("sounds like the disease" in w for w in index.options["warnings"])
    chosen = folder.scan(tmp_path, positive_class="malignant")
    assert chosen.positive_label == 0 and not any("disease" in w for w in chosen.options["warnings"])
    with pytest.raises(ValueError, match="positive_class"):
        folder.scan(tmp_path, positive_class="benign")


def test_patients_csv_groups_images(tree: Path, tmp_path: Path) -> None:
    csv = tmp_path / "patients.csv"
    csv.write_text(
        "path,patient_id\n"
        "benign/b1.png,P1\nb2.jpg,P1\nbenign/case7/deep/b3.tif,P2\n"
        "malignant/m1.pgm,P3\nm2.jpeg,P3\nnormal/n1.png,P4\nextra/unused.png,P9\n"
    )
    index = folder.scan(tree, patients_csv=csv)
    assert index.counts()["patients"] == 4
    patients = dict(zip(index.frame["path"].map(lambda p: Path(p).name), index.frame["patient_id"]))
    assert patients["b1.png"] == patients["b2.jpg"] == "P1" and patients["b3.tif"] == "P2"
    assert not index.options["warnings"]


def test_patients_csv_must_cover_every_image(tree: Path, tmp_path: Path) -> None:
    csv = tmp_path / "patients.csv"
    csv.write_text("path,patient_id\nbenign/b1.png,P1\n")
    with pytest.raises(DatasetError, match="5 image"):
        folder.scan(tree, patients_csv=csv)
    csv.write_text("file,patient\nb1.png,P1\n")
    with pytest.raises(DatasetError, match="lacks column"):
        folder.scan(tree, patients_csv=csv)
    with pytest.raises(DatasetError, match="does not exist"):
        folder.scan(tree, patients_csv=tmp_path / "absent.csv")


def test_empty_class_one_class_and_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        folder.scan(tmp_path / "absent")
    write_image(tmp_path / "only" / "a.png")
    with pytest.raises(DatasetError, match=r"found 1 class folder.*expected a class-folder layout"):
        folder.scan(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(DatasetError, match=r"\['empty'\].*hold no images"):
        folder.scan(tmp_path)


def test_parent_wrapping_one_dataset_folder(tree: Path) -> None:
    assert folder.find_root(tree.parent) == tree
    index = registry_scan("folder", tree.parent)
    assert index.root == tree and len(index) == 6


def test_patient_split_with_csv_is_disjoint(tmp_path: Path) -> None:
    splits = pytest.importorskip("bclib.data.splits")
    lines = ["path,patient_id"]
    for patient in range(12):
        for copy in range(2):
            label = ("benign", "malignant")[patient % 2]
            name = f"p{patient}_{copy}.png"
            write_image(tmp_path / "data" / label / name)
            lines.append(f"{label}/{name},patient{patient}")
    (tmp_path / "patients.csv").write_text("\n".join(lines) + "\n")
    index = folder.scan(tmp_path / "data", patients_csv=tmp_path / "patients.csv")
    split = splits.make_split(index, "patient", seed=0)
    assert split.overlapping_patients() == []
    assert sum(len(split.positions(n)) for n in ("train", "val", "test")) == len(index) == 24


def test_symlinked_nested_folders_are_followed(tree: Path, tmp_path: Path) -> None:
    write_image(tmp_path / "elsewhere" / "b9.png")
    (tree / "benign" / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tree / "benign" / "case7" / "up").symlink_to(tree / "benign", target_is_directory=True)
    index = folder.scan(tree)
    benign = index.frame.loc[index.frame["label_name"] == "benign", "path"]
    assert str(tree / "benign" / "linked" / "b9.png") in set(benign) and len(benign) == 4
    assert [Path(problem.path).name for problem in index.problems] == ["up"]
