"""Splits: deterministic, patient-disjoint, stratified; official lists; the image-split leak."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bclib.data.datasets import idc
from bclib.data.index import DatasetError, DatasetIndex
from bclib.data.official_splits import IDC_OFFICIAL_SPLITS
from bclib.data.splits import LeakageWarning, SplitUnavailable, make_split


def make_index(patients_labels: dict[str, list[int]], name: str = "folder", class_names=None, split_column=None) -> DatasetIndex:
    """A file-less index: one row per (patient, label) entry."""
    rows = []
    for patient, labels in patients_labels.items():
        for number, label in enumerate(labels):
            rows.append({"path": f"/nowhere/{patient}_{number}.png", "label": label, "patient_id": patient})
    frame = pd.DataFrame(rows)
    class_names = class_names or ["negative", "positive"]
    frame["label_name"] = frame["label"].map(dict(enumerate(class_names)))
    if split_column is not None:
        frame["split"] = split_column
    return DatasetIndex(name=name, root=Path("/nowhere"), frame=frame, class_names=class_names)


def assert_partition(split, index) -> None:
    all_positions = np.concatenate([split.positions(n) for n in split.assignment])
    assert len(all_positions) == len(set(all_positions.tolist()))
    assert set(all_positions.tolist()) <= set(range(len(index)))


@pytest.fixture(scope="module")
def synthetic_index(synthetic_idc):
    return idc.scan(synthetic_idc)


def test_patient_split_is_disjoint_complete_and_deterministic(synthetic_index):
    split = make_split(synthetic_index, "patient", seed=3)
    assert_partition(split, synthetic_index)
    assert sum(len(split.positions(n)) for n in split.assignment) == len(synthetic_index)
    sets = [set(split.patients(n)) for n in ("train", "val", "test")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert split.overlapping_patients() == []
    again = make_split(synthetic_index, "patient", seed=3)
    for name in split.assignment:
        np.testing.assert_array_equal(split.positions(name), again.positions(name))
    assert split.patients_hash() == again.patients_hash()
    other_seeds = {make_split(synthetic_index, "patient", seed=s).patients_hash() for s in range(4, 9)}
    assert len(other_seeds | {split.patients_hash()}) > 1


def test_patient_split_fractions_and_both_classes(synthetic_index):
    split = make_split(synthetic_index, "patient", seed=0)
    summary = split.summary()
    assert list(summary.index) == ["train", "val", "test"]
    assert summary["patients"].sum() == synthetic_index.frame["patient_id"].nunique() == 12
    assert summary.loc["train", "patients"] > summary.loc["val", "patients"] >= 1
    assert (summary["IDC"] > 0).all() and (summary["non-IDC"] > 0).all()
    assert summary["positive_fraction"].between(0, 1).all()
    assert summary["images"].sum() == len(synthetic_index)


def test_split_to_dict_lists_patients(synthetic_index):
    split = make_split(synthetic_index, "patient", seed=0)
    data = split.to_dict()
    assert data["method"] == "patient" and data["seed"] == 0
    assert set(data["patient_ids"]) == {"train", "val", "test"}
    assert data["patients"]["train"] == len(data["patient_ids"]["train"])
    assert sum(data["images"].values()) == len(synthetic_index)
    assert data["patients_hash"] == split.patients_hash()
    with pytest.raises(ValueError, match="unknown split"):
        split.positions("holdout")


@pytest.mark.parametrize("images_per_patient", [1, 2, 4])
def test_patient_split_small_patients_keeps_classes_where_possible(images_per_patient):
    data = {str(1000 + p): [int(p % 4 == 0)] * images_per_patient for p in range(20)}
    data["2000"] = [0, 1][: images_per_patient] if images_per_patient > 1 else [1]
    index = make_index(data)
    for seed in range(5):
        split = make_split(index, seed=seed)
        assert_partition(split, index)
        summary = split.summary()
        assert (summary["positive"] > 0).all(), summary
        assert (summary["negative"] > 0).all(), summary
        assert summary["patients"].sum() == len(data)
        assert summary.loc["train", "patients"] >= 10


def test_patient_split_warns_when_a_class_is_too_rare():
    index = make_index({"1": [0, 0], "2": [0], "3": [0], "4": [1], "5": [0]})
    with pytest.warns(UserWarning, match="holds no 'positive' images"):
        split = make_split(index, seed=0)
    assert any("too few" in note for note in split.warnings)
    assert sum(len(split.positions(n)) for n in split.assignment) == len(index)


def test_multiclass_split_stratifies_majority_class():
    classes = ["a", "b", "c", "d"]
    data = {f"p{p}": [p % 4] * (1 + p % 3) for p in range(40)}
    index = make_index(data, class_names=classes)
    split = make_split(index, seed=1)
    summary = split.summary()
    assert summary["positive_fraction"].isna().all()
    for class_name in classes:
        assert (summary[class_name] > 0).all(), summary


def test_too_few_patients_and_bad_arguments():
    index = make_index({"1": [0, 1], "2": [1, 0]})
    with pytest.raises(DatasetError, match="at least 3 patients"):
        make_split(index)
    with pytest.raises(ValueError, match="unknown split method"):
        make_split(index, method="random")


def test_image_split_warns_about_leakage(synthetic_index):
    with pytest.warns(LeakageWarning, match="leaks patients"):
        split = make_split(synthetic_index, "image", seed=0)
    assert_partition(split, synthetic_index)
    assert sum(len(split.positions(n)) for n in split.assignment) == len(synthetic_index)
    assert len(split.overlapping_patients()) > 0
    assert any("leak" in note for note in split.warnings)
    sizes = split.summary()["images"]
    assert abs(sizes["train"] / len(synthetic_index) - 0.7) < 0.02


IDC_TRAIN_PATIENTS, IDC_VAL_PATIENTS, IDC_TEST_PATIENTS = (IDC_OFFICIAL_SPLITS[name] for name in ("train", "val", "test"))


def test_official_lists_are_the_published_sizes_and_disjoint():
    assert (len(IDC_TRAIN_PATIENTS), len(IDC_VAL_PATIENTS), len(IDC_TEST_PATIENTS)) == (84, 29, 49)
    everyone = [p for ids in IDC_OFFICIAL_SPLITS.values() for p in ids]
    assert len(everyone) == len(set(everyone)) == 162
    assert all(p.isdigit() for p in everyone)


def test_official_idc_split_reports_missing_patients():
    data = {p: [0, 1] for p in IDC_TRAIN_PATIENTS[:5] + IDC_VAL_PATIENTS[:2] + IDC_TEST_PATIENTS[:2]}
    data["77777"] = [0]
    index = make_index(data, name="idc")
    with pytest.warns(UserWarning) as record:
        split = make_split(index, "official")
    messages = " ".join(str(w.message) for w in record)
    assert "not in the data" in messages and "no official list" in messages
    assert split.patients("train") == sorted(IDC_TRAIN_PATIENTS[:5], key=int)
    assert len(split.missing_patients) == 162 - 9
    assert any(note.startswith("47 of the 49 official 'test' patients") for note in split.warnings)
    assert "77777" not in sum((split.patients(n) for n in split.assignment), [])
    assert any("no official list" in note for note in split.warnings)


def test_official_idc_split_with_empty_test_is_a_clear_error():
    index = make_index({p: [0, 1] for p in IDC_TRAIN_PATIENTS[:5] + IDC_VAL_PATIENTS[:2]}, name="idc")
    with pytest.raises(DatasetError, match="official 'test' split is empty"):
        make_split(index, "official")


def test_official_on_synthetic_idc_explains(synthetic_index):
    with pytest.raises(DatasetError, match="synthetic"):
        make_split(synthetic_index, "official")


def test_official_from_split_column_and_missing_column():
    index = make_index({str(p): [p % 2] for p in range(9)}, split_column=["train"] * 5 + ["val", "val", "test", "test"])
    split = make_split(index, "official")
    assert [len(split.positions(n)) for n in ("train", "val", "test")] == [5, 2, 2]
    partly = make_index({str(p): [p % 2] for p in range(4)}, split_column=["train", None, "val", "test"])
    with pytest.warns(UserWarning, match="1 patient.* in no official list"):
        assert len(make_split(partly, "official").positions("train")) == 1
    bad = make_index({str(p): [p % 2] for p in range(3)}, split_column=["train", "dev", "test"])
    with pytest.raises(DatasetError, match="dev"):
        make_split(bad, "official")
    with pytest.raises(SplitUnavailable, match="no official split") as raised:
        make_split(make_index({str(p): [p % 2] for p in range(3)}), "official")
    assert raised.value.reason in str(raised.value) and "patient split" not in raised.value.reason


def test_patient_split_does_not_warn_on_healthy_data(synthetic_index):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_split(synthetic_index, "patient", seed=0)


def _benchmark_shaped_index(with_test: bool) -> DatasetIndex:
    """IDC-named patients: some official train, all official val, optionally official test, and unlisted ones."""
    patients = list(IDC_TRAIN_PATIENTS[:20]) + list(IDC_VAL_PATIENTS) + [str(90000 + p) for p in range(20)]
    if with_test:
        patients += list(IDC_TEST_PATIENTS[:6])
    return make_index({p: [0, 0, 1] if int(p) % 3 else [0, 0, 0] for p in patients}, name="idc")


def test_benchmark_split_tests_on_the_official_validation_patients_when_test_ones_are_held_out():
    index = _benchmark_shaped_index(with_test=False)
    split = make_split(index, "benchmark", seed=0)
    assert_partition(split, index)
    assert split.patients("test") == sorted(IDC_VAL_PATIENTS, key=int)
    others = set(index.frame["patient_id"]) - set(IDC_VAL_PATIENTS)
    assert set(split.patients("train")) | set(split.patients("val")) == others   # unlisted patients train too
    assert not set(split.patients("train")) & set(split.patients("val"))
    assert abs(len(split.patients("val")) / len(others) - 0.15 / 0.85) < 0.05
    assert all(set(index.labels[split.positions(name)]) == {0, 1} for name in ("train", "val", "test"))
    assert any("official 'val' list in the data; its 'test' list is not in the data" in note for note in split.warnings)
    assert split.benchmark_list == "val"
    again, other_seed = make_split(index, "benchmark", seed=0), make_split(index, "benchmark", seed=1)
    assert again.patients_hash() == split.patients_hash() != other_seed.patients_hash()
    assert other_seed.patients("test") == split.patients("test")   # the seed never moves the test patients


def test_benchmark_split_uses_the_official_test_patients_where_present():
    index = _benchmark_shaped_index(with_test=True)
    split = make_split(index, "benchmark", seed=0)
    assert split.patients("test") == sorted(IDC_TEST_PATIENTS[:6], key=int) and split.benchmark_list == "test"
    assert set(IDC_VAL_PATIENTS) <= set(split.patients("train")) | set(split.patients("val"))


def test_benchmark_split_refuses_data_without_benchmark_patients(synthetic_index):
    with pytest.raises(DatasetError, match="synthetic"):
        make_split(synthetic_index, "benchmark")
    with pytest.raises(DatasetError, match="benchmark's patient lists"):
        make_split(make_index({str(p): [p % 2] for p in range(9)}), "benchmark")


def test_official_patients_of_one_list():
    from bclib.data.splits import official_patients

    index = _benchmark_shaped_index(with_test=False)
    assert official_patients(index, "val") == sorted(IDC_VAL_PATIENTS, key=int)
    with pytest.raises(DatasetError, match="official 'test' patients"):
        official_patients(index, "test")
    column = make_index({str(p): [p % 2] for p in range(4)}, split_column=["train", "train", "val", "test"])
    assert official_patients(column, "val") == ["2"]
