"""Model cards: the JSON written beside every ``model.keras``, and safe loading of both.

Every prediction is named from the card's ``class_names`` (label order), never from a list
typed by hand, and every decision uses the card's validation-chosen ``threshold``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

MODEL_FILE = "model.keras"
CARD_FILE = "model_card.json"

#: Keys every card must carry (more are welcome: dataset, split, params, metrics, versions...).
REQUIRED_KEYS = ("model_name", "class_names", "input_size", "threshold", "weights")


class ModelLoadError(ValueError):
    """A model or its card is missing, corrupt, unsafe or inconsistent."""


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _clean(value: Any) -> Any:
    """NaN/inf become None so the JSON stays valid for every reader."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def json_text(data: Any, indent: int | None = 2) -> str:
    """``data`` as JSON: numpy values as numbers, paths as text, NaN and infinities as null."""
    return json.dumps(_clean(json.loads(json.dumps(data, default=_json_default))), indent=indent)


def write_json(data: Any, path: str | Path) -> Path:
    """Write ``data`` as indented JSON atomically (tmp file then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json_text(data) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def validate_card(card: dict) -> dict:
    """Check the keys and types a card needs; return it unchanged or raise ModelLoadError."""
    missing = [key for key in REQUIRED_KEYS if key not in card]
    if missing:
        raise ModelLoadError(f"model card lacks {missing}")
    names = card["class_names"]
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
        raise ModelLoadError(f"model card class_names must be a list of >= 2 names, got {names!r}")
    threshold = card["threshold"]
    if not isinstance(threshold, dict) or not isinstance(threshold.get("value"), (int, float)):
        raise ModelLoadError("model card threshold must be an object with a numeric 'value'")
    return card


def imagenet_missing(card: dict) -> bool:
    """True when the model asked for pretrained weights but started from random ones (offline, nothing cached)."""
    weights = card.get("weights") or {}
    return weights.get("requested") is not None and str(weights.get("used", "")).startswith("random")


def weights_description(card: dict) -> str:
    """What the model started from, in words: trained from scratch (by design), ImageNet or file weights, or
    random weights because the ImageNet ones were missing."""
    weights = card.get("weights") or {}
    used = str(weights.get("used", "unknown"))
    if imagenet_missing(card):
        return "random weights (ImageNet weights were missing)"
    if used == "random":
        return "trained from scratch"
    return "ImageNet weights" if used == "imagenet" else f"weights from {used.removeprefix('file:')}"


def write_card(card: dict, directory: str | Path) -> Path:
    """Validate and write ``card`` as ``<directory>/model_card.json``."""
    validate_card(card)
    return write_json(card, Path(directory) / CARD_FILE)


def read_card(model_path: str | Path) -> dict:
    """The card beside ``model_path`` (a ``.keras`` file or its folder)."""
    model_path = Path(model_path)
    path = model_path / CARD_FILE if model_path.is_dir() else model_path.with_name(CARD_FILE)
    if not path.is_file():
        raise ModelLoadError(
            f"no {CARD_FILE} beside {str(model_path)!r}: bclib needs the card to name the classes and "
            "know the threshold (train the model with the notebooks, which write both)"
        )
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"model card {str(path)!r} is not valid JSON: {error}") from None
    return validate_card(card)


def load_model(model_path: str | Path):
    """Load ``model.keras`` with Keras safe mode, and its card; return ``(model, card)``.

    Safe mode refuses layers that would run arbitrary Python code (``Lambda`` with pickled
    functions). A missing, corrupt or unsafe file raises :class:`ModelLoadError`.
    """
    model_path = Path(model_path)
    if model_path.is_dir():
        model_path = model_path / MODEL_FILE
    if not model_path.is_file():
        raise ModelLoadError(f"model file {str(model_path)!r} does not exist")
    if model_path.suffix != ".keras":
        raise ModelLoadError(f"{str(model_path)!r} is not a .keras model file")
    card = read_card(model_path)
    import keras

    import bclib.models.builders  # noqa: F401  (registers the custom preprocessing layers)

    try:
        model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    except ValueError as error:
        message = str(error)
        if "safe_mode" in message or "unsafe" in message.lower() or "lambda" in message.lower():
            raise ModelLoadError(
                f"{str(model_path)!r} contains layers that run arbitrary code and was refused by Keras "
                "safe mode; only load models you trust"
            ) from None
        raise ModelLoadError(f"could not load {str(model_path)!r}: {message}") from None
    except Exception as error:  # zip errors, h5 errors, truncated files
        raise ModelLoadError(f"could not load {str(model_path)!r} (corrupt or not a Keras model): {error}") from None
    return model, card
