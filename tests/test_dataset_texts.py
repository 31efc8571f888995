"""The computed sentences of the series adapt to the dataset: on BreastMNIST (ultrasound images, classes
malignant / normal-benign, every image its own patient) they say neither IDC, nor patches, nor tissue, and
on IDC they keep speaking of patches, tissue and patients."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from bclib.data import explore
from bclib.data.index import DatasetIndex
from bclib.evaluation import conclusions, findings
from bclib.evaluation.metrics import patient_level_table

IDC_ONLY = ("IDC", "patch", "tissue", "stain", "slide")


def _index(name: str, images_per_patient: int, positive_label: int, class_names: list[str]) -> DatasetIndex:
    rng = np.random.default_rng(0)
    labels = (rng.uniform(size=60) < 0.3).astype(int)
    labels = labels if positive_label == 1 else 1 - labels
    frame = pd.DataFrame({"path": [f"{position}.png" for position in range(60)], "label": labels,
                          "patient_id": [str(position // images_per_patient) for position in range(60)]})
    return DatasetIndex(name=name, root=Path("."), frame=frame, class_names=class_names, positive_label=positive_label)


@pytest.fixture()
def breastmnist() -> DatasetIndex:
    return _index("breastmnist", 1, 0, ["malignant", "normal/benign"])


@pytest.fixture()
def idc() -> DatasetIndex:
    return _index("idc", 6, 1, ["non-IDC", "IDC"])


def _notebook01_texts(index: DatasetIndex) -> list[str]:
    """Every conclusion of notebook 01, computed as its cells compute them."""
    words, frame = explore.index_words(index), index.frame
    positive = index.class_names[index.positive_label]
    counts = frame["label_name"].value_counts()
    balance = pd.DataFrame({"images": counts, "share": counts / counts.sum()})
    patients = (frame.assign(positive=frame["label"] == index.positive_label)
                .groupby("patient_id").agg(images=("label", "size"), positive_share=("positive", "mean")))
    colours = pd.DataFrame({"R_mean": [70.0, 90.0], "G_mean": [70.0, 90.0], "B_mean": [70.0, 90.0],
                            "patch_brightness_std": [4.0, 4.0]},
                           index=[positive, index.class_names[1 - index.positive_label]])  # the positive class darker
    summary = pd.DataFrame({"positive_fraction": [0.28, 0.22, 0.31]}, index=["train", "val", "test"])
    anomalies = pd.DataFrame({"width": [20], "height": [50]})
    return [explore.about_text(index, words), explore.class_balance_text(balance, words),
            explore.patient_spread_text(patients, words, positive), explore.brightness_text(colours, words),
            explore.size_text(anomalies, len(frame), 50, words),
            explore.size_text(anomalies[:0], len(frame), 28, words),
            explore.split_text(summary, set(), words, positive)]


def test_words_follow_the_dataset(breastmnist, idc):
    words = explore.index_words(breastmnist)
    assert (words.title, words.image, words.images, words.stained_tissue, words.one_image_per_patient) == \
        ("BreastMNIST", "image", "images", False, True)
    assert words.count(1) == "1 image" and words.indefinite == "an image"
    idc_words = explore.index_words(idc)
    assert (idc_words.title, idc_words.images, idc_words.stained_tissue, idc_words.one_image_per_patient) == \
        ("IDC", "patches", True, False)
    assert idc_words.count(1200) == "1,200 patches" and idc_words.indefinite == "a patch"
    assert explore.dataset_words("folder").images == "images"


def test_notebook01_on_breastmnist_says_images_and_no_patient_ids(breastmnist):
    texts = _notebook01_texts(breastmnist)
    joined = " ".join(texts)
    for word in IDC_ONLY:
        assert word not in joined, f"{word!r} in a BreastMNIST text: {joined}"
    assert "between 1 and 1" not in joined and "no patient ids" in texts[0] and "no patient ids" in texts[2]
    assert texts[0].startswith("this run uses BreastMNIST: 60 ultrasound images")
    assert "malignant (the positive class" in texts[0]
    assert texts[3].startswith("malignant images are darker")
    assert "shrink" not in texts[4] and "pads it with white" in texts[4]
    assert "a split by patient is a split by image" in texts[6] and "price of an honest test" not in texts[6]


def test_notebook01_on_idc_keeps_patches_tissue_and_patients(idc):
    texts = _notebook01_texts(idc)
    assert "of 10 patients" in texts[0] and "IDC (the positive class" in texts[0]
    assert texts[1].endswith("(notebook 02 defines them).") and " per IDC patch" in texts[1]
    assert texts[2].startswith("each of the 10 patients gives 6 patches: they weigh the same.")
    assert texts[3].startswith("IDC tissue is darker") and "stain jitter" in texts[3]
    assert texts[4] == ("1 of 60 patches is not 50x50 (the smallest is 20x50): the cache pads it with white; "
                        "nothing is stretched.")
    assert texts[5] == "every patch here is 28x28: nothing to pad or shrink."
    assert texts[6].startswith("0 patients are in both train and test") and "price of an honest test" in texts[6]


def test_the_synthetic_demo_is_not_called_histopathology(idc):
    idc.synthetic = True
    text = explore.about_text(idc, explore.index_words(idc))
    assert text.startswith("this run uses the synthetic IDC demo: 60 generated patches in IDC's layout of 10 patients")


def test_first_model_text_names_the_cards_images():
    card = {"dataset": {"name": "breastmnist"},
            "split": {"images": {"train": 5, "val": 4, "test": 3}, "patients": {"train": 5, "val": 4, "test": 3}},
            "threshold": {"value": 0.2, "method": "sensitivity@0.90"},
            "metrics": {"val": {"roc_auc": 0.7, "ci": {"roc_auc": [0.6, 0.8], "accuracy": [0.3, 0.4]},
                                "n_patients": 48, "confusion_matrix": [[10, 30], [1, 7]], "accuracy": 0.35,
                                "sensitivity": 0.875, "specificity": 0.25, "balanced_accuracy": 0.56}}}
    text = conclusions.first_model_text(card)
    assert "find 90 % of the positive images" in text and "many common images positive" in text
    assert "patch" not in text
    card["dataset"]["name"] = "idc"
    assert "find 90 % of the positive patches" in conclusions.first_model_text(card)


def test_findings_on_one_image_per_patient_say_so_and_leave_idc_out():
    words = explore.dataset_words("breastmnist", one_image_per_patient=True)
    rng = np.random.default_rng(1)
    truth = rng.uniform(size=40) < 0.3
    table = patient_level_table(truth.astype(int), rng.uniform(size=40), [str(i) for i in range(40)], 0.5)
    text = findings.patients_text(table, "cnn", "malignant", words=words)
    assert "single image" in text and "Pearson" not in text
    wrong = int((table["predicted_fraction"] != table["true_fraction"]).sum())
    assert f"right for {40 - wrong} and wrong for {wrong}" in text

    points = pd.DataFrame({"model": ["cnn", "cnn"], "operating point": ["screening", "benchmark (Youden)"],
                           "threshold": [0.1, 0.5], "balanced_accuracy": [0.6, 0.7], "f1": [0.4, 0.5],
                           "sensitivity": [0.9, 0.7], "specificity": [0.3, 0.7]})
    points = points.set_index(["model", "operating point"])
    change = {"difference": 0.1, "ci": [-0.05, 0.2], "excludes_zero": False}
    assert "0.8468" not in findings.operating_points_text(points, "cnn", change, words=words)
    assert "on IDC, the 2016 benchmark" in findings.operating_points_text(points, "cnn", change)

    rules = pd.DataFrame({"threshold": [0.1, 0.3], "sensitivity": [0.9, 0.8], "specificity": [0.4, 0.6]},
                         index=["sensitivity >= 0.90", "Youden's J"])
    assert "missing a positive image" in findings.threshold_text(rules, 0.1, "sensitivity@0.90", words=words)
    assert "missing a positive patch" in findings.threshold_text(rules, 0.1, "sensitivity@0.90")

    lesson = SimpleNamespace(difference={"test_patients_seen": 0}, neighbours={})
    assert "cannot be measured" in findings.memoriser_text(lesson, words=words)
    assert "this dataset cannot leak" not in findings.memoriser_text(lesson, words=words)


def test_memoriser_text_does_not_call_a_loss_help():
    lesson = SimpleNamespace(
        difference={"seeds": 5, "k": 5, "a": 0.755, "b": 0.778, "n_images": 24, "n_patients": 5, "difference": 0.023,
                    "ci": [0.001, 0.046], "excludes_zero": True},
        neighbours={"same_patient_share": 0.082, "chance_same_patient_share": 0.0152,
                    "agreement_same_patient": 0.71, "agreement_other_patients": 0.77})
    text = findings.memoriser_text(lesson)
    assert "does not help such a look-up here (-6 percentage points)" in text and "helps such a look-up by" not in text
    lesson.neighbours.update(agreement_same_patient=0.98, agreement_other_patients=0.87)
    assert "helps such a look-up by 11 percentage points" in findings.memoriser_text(lesson)
