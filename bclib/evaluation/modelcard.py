"""Model cards: the JSON written beside every ``model.keras``, and safe loading of both.

Every prediction is named from the card's ``class_names`` (label order), never from a list
typed by hand, and every decision uses the card's validation-chosen ``threshold``.
"""
from __future__ import annotations

import importlib
import json
import math
import zipfile
from pathlib import Path
from typing import Any

MODEL_FILE = "model.keras"
CARD_FILE = "model_card.json"

#: Keys every card must carry (more are welcome: dataset, split, params, metrics, versions...).
REQUIRED_KEYS = ("model_name", "class_names", "input_size", "threshold", "weights")


class ModelLoadError(ValueError):
    """A model or its card is missing, corrupt, unsafe or inconsistent."""


def _plain(value: Any) -> Any:
    """``value`` with numpy values as Python ones, paths as text and NaN/inf as None (valid JSON for every reader)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_text(data: Any, indent: int | None = 2, ensure_ascii: bool = True) -> str:
    """``data`` as strict JSON: numpy values as numbers, paths as text, NaN and infinities as null."""
    return json.dumps(_plain(data), indent=indent, ensure_ascii=ensure_ascii, allow_nan=False)


def write_json(data: Any, path: str | Path) -> Path:
    """Write ``data`` as indented JSON atomically (tmp file then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json_text(data) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def _field_error(source: str, field: str, problem: str, value: Any) -> ModelLoadError:
    return ModelLoadError(f"{source}: field {field!r} {problem}, got {value!r}; retrain the model or restore its card")


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _dataset_classes(name: Any) -> tuple[list[str], int] | None:
    """The fixed class names and disease label of a registered dataset, or None when its classes vary."""
    from bclib.data.datasets import DATASET_NAMES

    if name not in DATASET_NAMES:
        return None
    module = importlib.import_module(f"bclib.data.datasets.{name}")
    names = getattr(module, "CLASS_NAMES", None)
    return (list(names), int(getattr(module, "POSITIVE_LABEL", 1))) if names else None


def validate_card(card: Any, source: str = "model card") -> dict:
    """Check what every reader of a card relies on; return it unchanged or raise ModelLoadError naming the field.

    Names: a list of distinct class names; ``positive_label``: a label of them (None: label 1 of two
    classes); ``threshold.value``: finite, in [0, 1]; sizes: positive integers; for a dataset with fixed
    classes, the names and disease label must be that dataset's (swapped names flip every decision).
    """
    if not isinstance(card, dict):
        raise ModelLoadError(f"{source}: expected a JSON object, got {type(card).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in card]
    if missing:
        raise ModelLoadError(f"{source} lacks {missing}")
    names = card["class_names"]
    if (not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) and n for n in names)
            or len(set(names)) != len(names)):
        raise _field_error(source, "class_names", "must be a list of at least two distinct names", names)
    positive = card.get("positive_label")
    if positive is not None and not (_is_whole(positive) and 0 <= positive < len(names)):
        raise _field_error(source, "positive_label", f"must be a label of {names} (0 to {len(names) - 1})", positive)
    threshold = card["threshold"]
    if not isinstance(threshold, dict):
        raise _field_error(source, "threshold", "must be an object with a 'value'", threshold)
    value = threshold.get("value")
    if not (_is_whole(value) or isinstance(value, float)) or not 0.0 <= value <= 1.0:  # NaN fails both comparisons
        raise _field_error(source, "threshold.value", "must be a number between 0 and 1", value)
    for key in ("input_size", "pack_size"):
        size = card.get(key)
        if (size is not None or key == "input_size") and not (_is_whole(size) and size > 0):
            raise _field_error(source, key, "must be a positive whole number of pixels", size)
    dataset = card.get("dataset")
    expected = _dataset_classes(dataset.get("name")) if isinstance(dataset, dict) else None
    if expected is not None and len(names) == 2:
        expected_names, expected_positive = expected
        if names != expected_names:
            raise _field_error(source, "class_names", f"must be {dataset['name']}'s classes {expected_names} "
                               "in label order", names)
        if (1 if positive is None else positive) != expected_positive:
            raise _field_error(source, "positive_label", f"must be {expected_positive} "
                               f"({expected_names[expected_positive]!r}, the disease class of {dataset['name']})",
                               positive)
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
    """Validate ``card`` as its readers will see it, then write it as ``<directory>/model_card.json``."""
    validate_card(json.loads(json_text(card)), f"model card for {str(directory)!r}")
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
    return validate_card(card, f"model card {str(path)!r}")


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
    if not zipfile.is_zipfile(model_path):
        raise ModelLoadError(
            f"model file {str(model_path)!r} exists but is damaged: it is not a complete .keras (zip) archive, as an "
            "interrupted copy or download leaves it (corrupt or truncated); copy it again or retrain the model"
        )
    import keras

    import bclib.models.builders  # noqa: F401  (registers the custom preprocessing layers)

    try:
        model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    except Exception as error:  # unsafe layers, and the zip, h5 or config errors of a damaged file
        message = str(error).lower()
        if isinstance(error, ValueError) and ("safe_mode" in message or "unsafe" in message or "lambda" in message):
            raise ModelLoadError(
                f"{str(model_path)!r} contains layers that run arbitrary code and was refused by Keras "
                "safe mode; only load models you trust"
            ) from None
        raise ModelLoadError(f"model file {str(model_path)!r} exists but could not be loaded (corrupt or not a Keras "
                             f"model): {type(error).__name__}: {error}") from None
    return model, card
