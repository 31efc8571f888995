"""The end of every training notebook (:func:`finish`): threshold on validation, test once, write
everything; and the tables that read the cards back."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bclib.evaluation import metrics, modelcard
from bclib.evaluation.bootstrap import binary_metrics_with_ci, format_interval


@dataclass
class Predictions:
    """Probabilities of one split in split order, with the truth and the patients."""

    split: str
    labels: np.ndarray
    probabilities: np.ndarray  # (N,) P(label 1) for binary models, (N, C) otherwise
    patient_ids: np.ndarray


def predict_split(session: Any, model: Any, split_name: str, image_size: int, batch_size: int = 256) -> Predictions:
    """Predict one split in its stored (unshuffled) order."""
    from bclib.models.training import predict_probabilities

    dataset = session.dataset(split_name, image_size=image_size, batch_size=batch_size, training=False)
    probabilities = np.asarray(predict_probabilities(model, dataset))
    labels = session.labels(split_name)
    if len(probabilities) != len(labels):
        raise RuntimeError(f"{split_name}: {len(probabilities)} predictions for {len(labels)} labels")
    return Predictions(split_name, labels, probabilities, session.patient_ids(split_name))


def split_metrics(pred: Predictions, session: Any, threshold: float, n_boot: int) -> dict:
    """Binary or multi-class metrics for one split, with patient-bootstrap CIs."""
    if session.num_classes > 2:
        result = metrics.multiclass_metrics(pred.labels, pred.probabilities, session.class_names, pred.patient_ids)
        result["roc_auc"] = result.get("roc_auc_macro")  # macro one-vs-rest, so summaries compare like with like
        result["f1"] = result.get("f1_macro")
        return result
    scores = metrics.positive_probability(pred.probabilities, session.positive_label)
    result = binary_metrics_with_ci(pred.labels, scores, pred.patient_ids, threshold, session.positive_label,
                                    session.class_names, n_boot=n_boot, seed=session.seed)
    at_half = metrics.binary_metrics(pred.labels, scores, 0.5, session.positive_label, session.class_names)
    result["at_0_5"] = {key: at_half[key] for key in metrics.THRESHOLD_METRICS}
    return result


def choose_threshold(session: Any, val: Predictions, method: str = "sensitivity", target_sensitivity: float = 0.90) -> dict:
    """The decision threshold, from the validation split only (the class of highest probability for >2 classes)."""
    if session.num_classes > 2:
        return {"value": 0.0, "method": "argmax", "chosen_on": "val"}
    scores = metrics.positive_probability(val.probabilities, session.positive_label)
    value, info = metrics.choose_threshold(val.labels, scores, method=method, target_sensitivity=target_sensitivity,
                                           positive_label=session.positive_label)
    return {"value": float(value), "method": info["method"], "chosen_on": "val", "info": info}


def finish(
    session: Any,
    model: Any,
    model_name: str,
    image_size: int,
    history: Any = None,
    params: dict | None = None,
    weights: dict | None = None,
    threshold_method: str = "sensitivity",
    target_sensitivity: float = 0.90,
) -> dict:
    """Choose the threshold on validation, score validation and (once, unseen) test, write model + card.

    Writes ``model.keras``, ``model_card.json``, ``metrics.json`` and ``predictions.npz`` into the
    notebook's run folder and returns the card. ``params``: the notebook's training settings, recorded
    in the card. ``weights``: the card's weights entry (default: trained from scratch). Test metrics go
    into the card for notebook 07; nothing here shows them.
    """
    image_size = int(image_size)
    started = time.perf_counter()
    val = predict_split(session, model, "val", image_size)
    test = predict_split(session, model, "test", image_size)
    threshold = choose_threshold(session, val, threshold_method, target_sensitivity)
    n_boot = int(session.settings["n_boot"])
    val_metrics = split_metrics(val, session, threshold["value"], n_boot)
    test_metrics = split_metrics(test, session, threshold["value"], n_boot)

    out = session.out_dir
    model.save(out / modelcard.MODEL_FILE)
    card = session.card_base(model_name)
    card["input_size"] = image_size
    card["weights"] = weights or {"requested": None, "used": "random", "note": "trained from scratch"}
    card["threshold"] = threshold
    if session.num_classes == 2 and threshold["method"] != "youden" and len(np.unique(val.labels)) == 2:
        card["benchmark_threshold"] = choose_threshold(session, val, "youden")  # to compare with published numbers
    card["metrics"] = {"val": val_metrics, "test": test_metrics}
    card["params"].update(params or {})
    logs = getattr(history, "history", None)
    if logs:
        card["epochs_run"] = len(next(iter(logs.values())))
    card["evaluation_seconds"] = round(time.perf_counter() - started, 2)
    modelcard.write_card(card, out)
    modelcard.write_json({"model_name": model_name, "threshold": threshold, "val": val_metrics, "test": test_metrics},
                         out / "metrics.json")
    np.savez_compressed(
        out / "predictions.npz",
        val_labels=val.labels, val_probabilities=val.probabilities, val_patients=val.patient_ids.astype(str),
        test_labels=test.labels, test_probabilities=test.probabilities, test_patients=test.patient_ids.astype(str),
    )
    return card


REPORTED_METRICS = ("roc_auc", "pr_auc", "balanced_accuracy", "sensitivity", "specificity", "precision", "f1",
                    "brier", "accuracy")


def validation_report(card: dict, split: str = "val") -> pd.DataFrame:
    """The card's metrics on one split as a readable table: value and 95% patient-bootstrap CI."""
    values = card.get("metrics", {}).get(split, {})
    intervals = values.get("ci") or {}
    table = pd.DataFrame.from_dict(
        {key: {"value": values[key], "95% CI": format_interval(intervals.get(key))}
         for key in REPORTED_METRICS if key in values}, orient="index").rename_axis("metric")
    threshold = card.get("threshold", {})
    print(f"{card.get('model_name')} on {split}: threshold {threshold.get('value', float('nan')):.3f} "
          f"({threshold.get('method')}, chosen on {threshold.get('chosen_on')}); "
          f"positive class {values.get('positive_class')!r}; n_images {values.get('n_images')}, "
          f"n_patients {values.get('n_patients')}")
    return table


def metrics_table(cards: list[dict], split: str = "val") -> pd.DataFrame:
    """Models side by side on one split: AUCs, then threshold metrics at each model's threshold and at 0.5."""
    rows = []
    for card in cards:
        values = card.get("metrics", {}).get(split, {})
        at_half = values.get("at_0_5") or {}
        rows.append({"model": card.get("model_name"), "roc_auc": values.get("roc_auc"), "pr_auc": values.get("pr_auc"),
                     "threshold": card.get("threshold", {}).get("value"),
                     **{key: values.get(key) for key in ("sensitivity", "specificity", "balanced_accuracy")},
                     **{f"{key}@0.5": at_half.get(key) for key in ("sensitivity", "specificity", "precision")}})
    return pd.DataFrame(rows).set_index("model")


def run_card(session: Any, notebook: str) -> dict | None:
    """The model card another notebook of this run wrote, or None (with a note) when it has not run."""
    path = session.run_dir / notebook / modelcard.MODEL_FILE
    if not path.exists():
        print(f"{notebook} has not run in run {session.run_id!r}: run it first with the same run_id")
        return None
    return modelcard.read_card(path)
