"""Model cards record the input the model was trained on; the app and `bclib predict` read it from there,
and cards written before that still load."""
from __future__ import annotations

import json

import numpy as np

from bclib.app.predict import Predictor, TrainingInput
from bclib.evaluation.modelcard import write_card
from bclib.session import start
from test_predict import IDC_DATASET, make_tiny_model, save_tiny_model, tiny_card


def test_a_new_card_records_its_training_input(synthetic_idc):
    session = start("02_baseline_cnn", data_dir=synthetic_idc, profile="smoke", run_id="card-input", show=False)
    card = session.card_base("tiny_cnn")
    assert card["input"] == {"patch_size": session.pack_size, "magnification": "40x", "stain": "H&E"}
    assert json.loads(json.dumps(card["input"])) == card["input"]  # plain JSON, as the card file holds it


def test_the_predictor_reads_the_recorded_input_before_guessing_from_the_dataset(tmp_path):
    recorded = {"patch_size": 96, "magnification": None, "stain": "H&E"}  # unknown magnification stays unknown
    directory = tmp_path / "new"
    directory.mkdir()
    make_tiny_model().save(directory / "model.keras")
    write_card(tiny_card(dataset=IDC_DATASET, input=recorded), directory)
    predictor = Predictor.load(directory / "model.keras")
    assert predictor.trained_on == TrainingInput(96, None, "H&E")
    big = np.full((400, 400, 3), (200, 60, 120), np.uint8)  # 4x 96 px is 384: a caution at 400, not at 4x 50
    (result,) = predictor.predict_images([big], ["big.png"])
    assert "more than 4x the model's training patches (96x96 px patches, H&E stain)" in result.cautions[0]


def test_an_old_card_without_input_still_loads_and_predicts(tmp_path):
    old = save_tiny_model(tmp_path / "old", dataset=IDC_DATASET)
    assert "input" not in json.loads((old.parent / "model_card.json").read_text())
    predictor = Predictor.load(old)
    assert predictor.trained_on == TrainingInput(50, "40x", "H&E")  # the pack size and what IDC is
    (result,) = predictor.predict_images([np.full((50, 50, 3), (200, 60, 120), np.uint8)])
    assert result.ok and result.cautions == []
