"""Model cards: one validation for every reader, naming the field at fault; strict JSON out."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bclib.evaluation import modelcard
from bclib.evaluation.modelcard import ModelLoadError, json_text, read_card, validate_card, write_card, write_json


def good_card(**overrides) -> dict:
    card = {
        "model_name": "tiny_cnn",
        "class_names": ["non-IDC", "IDC"],
        "positive_label": 1,
        "input_size": 32,
        "pack_size": 50,
        "dataset": {"name": "idc", "synthetic": True},
        "threshold": {"value": 0.42, "method": "youden", "chosen_on": "val"},
        "weights": {"requested": None, "used": "random"},
    }
    card.update(overrides)
    return card


def _card_file(folder: Path, card: dict | str) -> Path:
    """A card on disk as someone may have edited it (bypassing write_card's validation)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / modelcard.CARD_FILE
    path.write_text(card if isinstance(card, str) else json.dumps(card), encoding="utf-8")
    return folder / modelcard.MODEL_FILE


@pytest.mark.parametrize("overrides, field, words", [
    ({"threshold": {"value": float("nan")}}, "threshold.value", "between 0 and 1, got nan"),
    ({"threshold": {"value": float("inf")}}, "threshold.value", "got inf"),
    ({"threshold": {"value": 7}}, "threshold.value", "got 7"),
    ({"threshold": {"value": -1}}, "threshold.value", "got -1"),
    ({"threshold": {"value": "0.5"}}, "threshold.value", "got '0.5'"),
    ({"threshold": {"value": True}}, "threshold.value", "got True"),
    ({"threshold": 0.5}, "threshold", "must be an object"),
    ({"positive_label": 2}, "positive_label", "must be a label of ['non-IDC', 'IDC'] (0 to 1), got 2"),
    ({"positive_label": "1"}, "positive_label", "got '1'"),
    ({"positive_label": 0}, "positive_label", "must be 1 ('IDC', the disease class of idc), got 0"),
    ({"class_names": ["IDC", "non-IDC"]}, "class_names", "must be idc's classes ['non-IDC', 'IDC'] in label order"),
    ({"class_names": ["IDC", "IDC"], "dataset": {}}, "class_names", "at least two distinct names"),
    ({"class_names": ["only"]}, "class_names", "at least two distinct names"),
    ({"input_size": 0}, "input_size", "positive whole number"),
    ({"pack_size": 50.5}, "pack_size", "positive whole number"),
])
def test_every_bad_field_is_refused_by_name(tmp_path, overrides, field, words):
    with pytest.raises(ModelLoadError) as caught:
        read_card(_card_file(tmp_path / "model", good_card(**overrides)))
    message = str(caught.value)
    assert f"field {field!r}" in message and words in message
    assert str(tmp_path / "model" / modelcard.CARD_FILE) in message  # which card


def test_the_json_tokens_nan_and_infinity_are_refused(tmp_path):
    text = json.dumps(good_card()).replace('"value": 0.42', '"value": NaN')
    with pytest.raises(ModelLoadError, match="'threshold.value' must be a number between 0 and 1, got nan"):
        read_card(_card_file(tmp_path / "nan", text))
    text = json.dumps(good_card()).replace('"value": 0.42', '"value": Infinity')
    with pytest.raises(ModelLoadError, match="got inf"):
        read_card(_card_file(tmp_path / "inf", text))


def test_dataset_classes_breastmnist_needs_its_own_disease_label(tmp_path):
    card = good_card(class_names=["malignant", "normal/benign"], positive_label=0, dataset={"name": "breastmnist"})
    assert read_card(_card_file(tmp_path / "ok", card))["positive_label"] == 0
    with pytest.raises(ModelLoadError, match="'positive_label' must be 0 \\('malignant'"):
        read_card(_card_file(tmp_path / "none", {**card, "positive_label": None}))
    folder_card = good_card(class_names=["b", "a"], positive_label=0, dataset={"name": "folder"})
    assert validate_card(folder_card) is folder_card  # a folder's classes are its own
    multi = good_card(class_names=["normal", "benign", "malignant"], positive_label=None, dataset={"name": "mias"},
                      threshold={"value": 0.0, "method": "argmax"})
    assert validate_card(multi) is multi


def test_write_card_refuses_what_readers_would_refuse(tmp_path):
    with pytest.raises(ModelLoadError, match="'threshold.value'"):
        write_card(good_card(threshold={"value": np.float32("nan")}), tmp_path)
    assert not (tmp_path / modelcard.CARD_FILE).exists()
    write_card(good_card(input_size=np.int64(32)), tmp_path)
    assert read_card(tmp_path)["input_size"] == 32


def test_json_text_is_strict_json(tmp_path):
    text = json_text({"a": float("nan"), "b": [np.float32("inf"), 1.5], "c": Path("x")}, indent=None)
    assert json.loads(text, parse_constant=lambda token: pytest.fail(f"non-standard token {token}")) == {
        "a": None, "b": [None, 1.5], "c": "x"}
    assert json_text({"name": "ü"}, ensure_ascii=False) == '{\n  "name": "ü"\n}'
    path = write_json({"value": math.inf}, tmp_path / "strict.json")
    assert json.loads(path.read_text()) == {"value": None}
