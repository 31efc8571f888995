"""Conclusions drawn from a run's own numbers, shown in a box after each result.

Each ``*_conclusion`` function shows its sentence and returns nothing (a notebook cell stays free of
``Out[...]`` lines); the sentence comes from a ``*_text`` function that tests read. The wording
follows the numbers: a difference is called real only when its paired patient-bootstrap
interval excludes zero, and validation numbers are labelled as such.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bclib.data.explore import DatasetWords, card_words, dataset_words
from bclib.evaluation.bootstrap import interval_end, paired_bootstrap_difference
from bclib.evaluation.metrics import positive_probability
from bclib.evaluation.modelcard import MODEL_FILE, read_card
from bclib.display import show_banner

METRIC_LABELS = {
    "roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "balanced_accuracy": "balanced accuracy", "brier": "Brier score",
    "sensitivity": "sensitivity", "specificity": "specificity", "f1": "F1", "accuracy": "accuracy",
    "precision": "precision",
}
PREDICTIONS_FILE = "predictions.npz"


def conclude(text: str) -> None:
    """Show ``Conclusion: <text>`` in a box (printed outside notebooks)."""
    show_banner(f"Conclusion: {text}", "conclusion")


def ci_text(low: float, high: float, signed: bool = False) -> str:
    """``95 % CI low to high``; ``signed`` for the interval of a difference (ends by
    :func:`~bclib.evaluation.bootstrap.interval_end`)."""
    if not signed:
        return f"95 % CI {low:.3f} to {high:.3f}"
    return f"95 % CI {interval_end(low, signed=True)} to {interval_end(high, signed=True)}"


def training_conclusion(history: Any, epochs: int, monitor: str = "val_auc", parameter: str = "epochs") -> None:
    """How training went: the best epoch, whether it stopped early, whether the curve still rose.

    ``parameter`` names the notebook parameter that sets the number of epochs.
    """
    conclude(training_text(history, epochs, monitor, parameter))


def training_text(history: Any, epochs: int, monitor: str = "val_auc", parameter: str = "epochs") -> str:
    """The sentence of :func:`training_conclusion`."""
    logs = pd.DataFrame(getattr(history, "history", history))
    label = monitor.replace("val_", "validation ").replace("auc", "AUC")
    if monitor not in logs or logs[monitor].isna().all():
        return f"no {label} was logged, so the best epoch cannot be named."
    values = logs[monitor].to_numpy(dtype=float)
    best, ran = int(np.nanargmax(values)), len(values)
    text = f"the best {label} was {values[best]:.3f}, at epoch {best + 1} of {ran}"
    if ran < epochs:
        text += (f"; training stopped early ({epochs} were allowed) because it had not improved for "
                 f"{ran - best - 1} epochs, and the weights of epoch {best + 1} were restored")
    elif best == ran - 1:
        text += f"; the last epoch was the best, so more epochs could help (try a larger `{parameter}`)"
    else:
        text += f"; the weights of epoch {best + 1} were restored"
    training = monitor.removeprefix("val_")
    if training in logs:
        gap = float(logs[training].iloc[best]) - values[best]
        text += (f". At that epoch the training {training.replace('auc', 'AUC')} was {logs[training].iloc[best]:.3f} "
                 f"({gap:+.3f} against validation)")
        if gap > 0.03:
            text += ": the model fits its training patients better than new ones"
    if {"loss", "val_loss"} <= set(logs) and ran >= 3 and best < ran - 1:
        losses = logs[["loss", "val_loss"]].to_numpy(dtype=float)
        if losses[-1, 0] < losses[-3, 0] and losses[-1, 1] > losses[-3, 1]:
            rise = losses[-1, 1] - losses[-3, 1]
            earlier = np.abs(np.diff(losses[:-2, 1]))   # how far validation loss moved per epoch before
            swing = float(earlier.max()) if len(earlier) else float("nan")
            text += f"; over the last two epochs the validation loss rose by {rise:.3f} while the training loss fell"
            if np.isnan(swing) or rise > swing:
                text += ", a sign of overfitting"
            else:
                text += (f", no more than it moved from one epoch to the next before ({swing:.3f}): it may be noise "
                         "rather than overfitting")
    return text + "."


def first_model_conclusion(card: dict) -> None:
    """The first model against chance and against always answering the majority class (validation)."""
    conclude(first_model_text(card))


def first_model_text(card: dict) -> str:
    """The sentence of :func:`first_model_conclusion`."""
    values, words = card["metrics"]["val"], card_words(card)
    auc, interval = values.get("roc_auc"), (values.get("ci") or {}).get("roc_auc")
    if auc is None:
        return "the validation split holds one class only, so no AUC can be computed."
    parts = [f"validation ROC-AUC is {auc:.3f}"]
    if interval:
        verdict = "above chance (0.5)" if interval[0] > 0.5 else "not distinguishable from chance (0.5)"
        parts[0] += f" ({ci_text(*interval)} over {values.get('n_patients')} patients): {verdict}"
    matrix = np.asarray(values.get("confusion_matrix") or [[0, 0], [0, 0]])
    if matrix.shape == (2, 2) and matrix.sum():
        majority = max(int(matrix[0].sum()), int(matrix[1].sum())) / matrix.sum()
        accuracy, threshold = values.get("accuracy"), card.get("threshold", {})
        parts.append(
            f"at threshold {threshold.get('value', float('nan')):.3f}, chosen on validation by the rule "
            f"'{_rule_words(threshold.get('method', ''), words)}', sensitivity is {values.get('sensitivity'):.3f} and "
            f"specificity {values.get('specificity'):.3f}; accuracy, {accuracy:.3f}, "
            + _against_majority(accuracy, majority, (values.get("ci") or {}).get("accuracy"), words)
            + f". That is why this series ranks models by AUC and balanced accuracy ({values.get('balanced_accuracy'):.3f} "
            "here, 0.5 for any constant answer)"
        )
    return "; ".join(parts) + "."


def _against_majority(accuracy: float, majority: float, interval: list | None, words: DatasetWords) -> str:
    """Accuracy against always answering the majority class, judged by the accuracy's interval."""
    if interval is not None and interval[0] <= majority <= interval[1]:
        return (f"cannot be told from the {majority:.3f} of always answering the majority class (its "
                f"{ci_text(*interval)} contains it)")
    text = f"is {'below' if accuracy < majority else 'above'} the {majority:.3f} of always answering the majority class"
    return text + (f": a threshold low enough to find the rare class calls many common {words.images} positive too, "
                   f"and accuracy counts every common {words.image}" if accuracy < majority else "")


def _rule_words(method: str, words: DatasetWords = dataset_words("idc")) -> str:
    """A card's threshold method in words: ``sensitivity@0.90`` -> ``find 90 % of the positive patches``."""
    if method.startswith("sensitivity@"):
        return f"find {float(method.split('@')[1]):.0%} of the positive {words.images}".replace("%", " %")
    return {"youden": "maximise sensitivity + specificity (Youden)", "f1": "maximise F1"}.get(method, method)


def load_predictions(notebook_dir: str | Path, split: str = "val") -> dict[str, np.ndarray]:
    """The labels, probabilities and patients a training notebook stored for ``split``."""
    path = Path(notebook_dir) / PREDICTIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run that notebook first (same run_id)")
    with np.load(path, allow_pickle=False) as data:
        return {key: data[f"{split}_{key}"] for key in ("labels", "probabilities", "patients")}


def compare_conclusion(session: Any, card: dict, previous_notebook: str, change: str,
                       metrics: tuple[str, ...] = ("roc_auc",), split: str = "val", n_boot: int | None = None) -> None:
    """What ``change`` did, model of ``previous_notebook`` -> this card's model, on the same ``split`` images.

    Each metric gets the difference and its paired patient-bootstrap interval; a threshold metric is
    compared at each model's own validation-chosen threshold.
    """
    conclude(compare_text(session, card, previous_notebook, change, metrics, split, n_boot))


def compare_text(session: Any, card: dict, previous_notebook: str, change: str,
                 metrics: tuple[str, ...] = ("roc_auc",), split: str = "val", n_boot: int | None = None) -> str:
    """The sentence of :func:`compare_conclusion` (``n_boot``: the profile's resamples unless given)."""
    previous_dir = session.run_dir / previous_notebook
    try:
        before = load_predictions(previous_dir, split)
    except FileNotFoundError:
        return (f"{previous_notebook} has not run in run {session.run_id!r}, so there is nothing to compare "
                f"{change} with; run it first with the same run_id.")
    after = load_predictions(session.out_dir, split)
    if len(before["labels"]) != len(after["labels"]) or not np.array_equal(before["labels"], after["labels"]):
        return (f"{previous_notebook} was scored on other {split} images (another split or dataset), so the "
                "two models cannot be compared here.")
    if np.ndim(after["probabilities"]) != 1:
        return "paired comparisons are computed for two-class datasets only."
    previous_card = read_card(previous_dir / MODEL_FILE)
    positive = int(session.positive_label)
    sentences = []
    for metric in metrics:
        result = paired_bootstrap_difference(
            after["labels"], positive_probability(before["probabilities"], positive),
            positive_probability(after["probabilities"], positive), after["patients"], metric=metric,
            n_boot=n_boot or int(session.settings["n_boot"]), seed=session.seed, positive_label=positive,
            threshold_a=previous_card["threshold"]["value"], threshold_b=card["threshold"]["value"],
        )
        sentences.append(difference_text(result))
    real = sum("excludes zero" in sentence for sentence in sentences)
    if not real:
        summary = f"{change} made no difference this run can tell from noise"
    elif len(sentences) == 1:
        summary = f"{change} changed the metric beyond noise"
    else:
        summary = f"{change} changed {real} of the {len(sentences)} metrics compared beyond noise"
    where = f"on the same {split} patients ({split} numbers: the threshold and the epochs were chosen on them)"
    return f"{summary}, {where}. " + " ".join(sentences)


def difference_text(result: dict) -> str:
    """One paired difference (:func:`~bclib.evaluation.bootstrap.paired_bootstrap_difference`) in words."""
    label = METRIC_LABELS.get(result["metric"], result["metric"])
    if result["difference"] is None:
        return f"{label} is undefined on these images for at least one model."
    before, after = round(result["a"], 3), round(result["b"], 3)
    text = f"{label} {before:.3f} -> {after:.3f} ({after - before:+.3f}"
    if result["ci"] is None:
        return text + ", no interval: too few patients, or a class missing from every resample)."
    low, high = result["ci"]
    verdict = "excludes zero: a real change" if result["excludes_zero"] else "includes zero: no clear change"
    return text + f", {ci_text(low, high, signed=True)}, {verdict})."
