"""Notebook 07's data: every trained model of a run, scored on the same validation and test patients.

``load_run(session)`` reads each model card of the run and the predictions
:func:`bclib.evaluation.experiment.finish` stored beside it (a model trained on other patients is
predicted again on this session's splits). Every score is P(positive class); with more than two
classes, one class (the last) is scored against the rest. The tables carry the numbers their
conclusions (:mod:`bclib.evaluation.findings`) read in ``attrs``; intervals resample patients.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bclib.evaluation import calibration, metrics, modelcard
from bclib.evaluation.bootstrap import (
    binary_metrics_with_ci, format_interval, paired_bootstrap_difference, percentile_interval,
)
from bclib.evaluation.conclusions import METRIC_LABELS, load_predictions
from bclib.evaluation.experiment import Predictions, predict_split

SPLITS = ("val", "test")
#: The test-table metrics, each shown with its patient-bootstrap interval, and their column names.
INTERVAL_METRICS = {key: METRIC_LABELS[key] for key in ("roc_auc", "pr_auc", "balanced_accuracy", "sensitivity",
                                                         "specificity")}
#: The patient table's columns shown for the worst patients.
PATIENT_COLUMNS = ["patient_id", "n", "n_positive", "true_fraction", "predicted_fraction", "fraction_error",
                   "mean_probability", "roc_auc", "sensitivity", "specificity"]


def scored_label(session: Any) -> int:
    """The label scored as positive: the dataset's disease class, else (more classes) the last one."""
    return session.num_classes - 1 if session.positive_label is None else int(session.positive_label)


def value_with_interval(value: float | None, interval: Any) -> str:
    """``"0.925 [0.896, 0.949]"``: a value and its interval in one table cell."""
    return "n/a" if value is None else f"{value:.3f} {format_interval(interval)}".strip()


def ece_change_interval(truth: np.ndarray, before: np.ndarray, after: np.ndarray, patient_ids: np.ndarray,
                        n_boot: int, seed: int, n_bins: int = 10) -> list[float] | None:
    """95 % interval of ECE(after) - ECE(before) over the same patient resamples (``None``: one patient)."""
    if len(np.unique(np.asarray(patient_ids))) < 2:
        return None
    resampled = calibration.ece_resamples(truth, {"before": np.asarray(before, dtype=float),
                                                  "after": np.asarray(after, dtype=float)},
                                          patient_ids, n_boot, seed, n_bins)
    interval = percentile_interval(resampled["after"] - resampled["before"])
    return None if interval is None else list(interval)


@dataclass
class ModelEntry:
    """One trained model of the run: its card, folder, predictions per split and decision threshold."""

    name: str
    card: dict
    directory: Path
    predictions: dict[str, Predictions]
    threshold: float = 0.5
    _model: Any = None

    @property
    def input_size(self) -> int:
        return int(self.card["input_size"])

    @property
    def threshold_rule(self) -> str:
        return str(self.card["threshold"].get("method"))

    @property
    def started_from(self) -> str:
        """The weights the model started from, in the project's one wording."""
        return modelcard.weights_description(self.card)

    def model(self):
        """The Keras model, loaded once (safe mode)."""
        if self._model is None:
            self._model, _ = modelcard.load_model(self.directory / modelcard.MODEL_FILE)
        return self._model


@dataclass
class GradCamExamples:
    """One model's Grad-CAM examples: the test images, their heatmaps for P(positive) and what they show."""

    groups: list[str]        # "true positive", "false positive" or "false negative", per image
    images: np.ndarray       # the stored patches, uint8
    heatmaps: np.ndarray     # [0, 1], each scaled to its own maximum, at the patches' size
    scores: np.ndarray       # P(positive) per image
    labels: np.ndarray
    feature_size: tuple[int, int]   # the explained feature map's height and width


@dataclass
class RunComparison:
    """All models of one run, with the session whose validation and test patients they are scored on."""

    session: Any
    models: list[ModelEntry]
    positive_label: int = 1
    _gradcam: dict = field(default_factory=dict, repr=False)

    # ----- what every table and cell reads ------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [entry.name for entry in self.models]

    @property
    def positive_name(self) -> str:
        return self.session.class_names[self.positive_label]

    @property
    def decision_names(self) -> list[str]:
        """``[negative, positive]`` names: the rows and columns of a confusion matrix."""
        others = [name for label, name in enumerate(self.session.class_names) if label != self.positive_label]
        return [others[0] if len(others) == 1 else f"not {self.positive_name}", self.positive_name]

    @property
    def without_imagenet(self) -> list[str]:
        """The models that asked for ImageNet weights but started from random ones."""
        return [entry.name for entry in self.models if modelcard.imagenet_missing(entry.card)]

    def entry(self, name: str) -> ModelEntry:
        for entry in self.models:
            if entry.name == name:
                return entry
        raise ValueError(f"no model {name!r} in this run; models: {self.names}")

    def truth(self, split: str) -> np.ndarray:
        """True where an image of ``split`` belongs to the positive class."""
        return self.session.labels(split) == self.positive_label

    def patient_ids(self, split: str) -> np.ndarray:
        return self.session.patient_ids(split).astype(str)

    def scores(self, name: str, split: str) -> np.ndarray:
        """Model ``name``'s P(positive class) for each image of ``split``, in split order."""
        return metrics.positive_probability(self.entry(name).predictions[split].probabilities, self.positive_label)

    def threshold(self, name: str) -> float:
        """Model ``name``'s decision threshold, chosen on validation."""
        return self.entry(name).threshold

    def temperature(self, name: str) -> float:
        """Model ``name``'s temperature, fitted on validation."""
        return calibration.fit_temperature(self.truth("val").astype(int), self.scores(name, "val"))

    def _auc(self, name: str, split: str) -> float:
        return metrics.roc_auc(self.truth(split), self.scores(name, split)) or 0.0

    def best_model(self) -> str:
        """The model with the highest validation ROC-AUC (chosen without looking at test)."""
        return max(self.names, key=lambda name: self._auc(name, "val"))

    def _difference(self, split: str, leader: str, name: str, metric: str, n_boot: int) -> dict:
        """``name`` minus ``leader`` on ``split``, with the paired patient-bootstrap interval."""
        return paired_bootstrap_difference(
            self.truth(split).astype(int), self.scores(leader, split), self.scores(name, split),
            self.patient_ids(split), metric=metric, n_boot=int(n_boot), seed=self.session.seed,
            threshold_a=self.threshold(leader), threshold_b=self.threshold(name))

    def _attrs(self, table: pd.DataFrame, **values: Any) -> pd.DataFrame:
        table.attrs.update(without_imagenet=self.without_imagenet, **values)
        return table

    # ----- tables --------------------------------------------------------------------------
    def models_table(self, n_boot: int = 1000) -> pd.DataFrame:
        """Every model by validation ROC-AUC, each against the best on the same validation patient resamples."""
        order = sorted(self.names, key=lambda name: -self._auc(name, "val"))
        best = order[0]
        differences = {name: self._difference("val", best, name, "roc_auc", n_boot) for name in order[1:]}
        shown = {name: value_with_interval(result["difference"], result["ci"]) for name, result in differences.items()}
        table = pd.DataFrame([
            {"model": name, "notebook": self.entry(name).directory.name, "started from": self.entry(name).started_from,
             "validation ROC-AUC": self._auc(name, "val"), f"difference to {best} [95% CI]": shown.get(name, ""),
             "threshold": self.threshold(name), "threshold rule": self.entry(name).threshold_rule}
            for name in order]).set_index("model")
        if table["threshold rule"].nunique() == 1:
            print(f"every threshold was chosen on validation by the rule {table['threshold rule'].iloc[0]}")
            table = table.drop(columns="threshold rule")
        within_noise = [name for name, result in differences.items()
                        if result["ci"] is not None and not result["excludes_zero"]]
        return self._attrs(table, best=best, runner_up=differences.get(order[1]) if len(order) > 1 else None,
                           within_noise=within_noise, val_patients=len(np.unique(self.patient_ids("val"))))

    def table(self, n_boot: int = 1000) -> pd.DataFrame:
        """Test metrics of every model at its validation-chosen threshold, each with its 95 % patient interval.

        ``attrs["values"]`` holds the numbers, ``attrs["intervals"]`` their intervals.
        """
        truth, patients = self.truth("test"), self.patient_ids("test")
        rows, values, intervals = [], {}, {}
        for entry in self.models:
            result = binary_metrics_with_ci(truth.astype(int), self.scores(entry.name, "test"), patients,
                                            entry.threshold, n_boot=int(n_boot), seed=self.session.seed)
            values[entry.name] = {key: result[key] for key in [*INTERVAL_METRICS, "brier"]}
            intervals[entry.name] = {key: result["ci"].get(key) for key in INTERVAL_METRICS}
            rows.append({"model": entry.name,
                         **{label: value_with_interval(result[key], result["ci"].get(key))
                            for key, label in INTERVAL_METRICS.items()},
                         "Brier": result["brier"], "threshold": entry.threshold, "started from": entry.started_from})
        print(f"test split: {len(truth):,} images from {len(np.unique(patients))} patients; positive class "
              f"{self.positive_name!r}; each model at its own threshold, chosen on validation; each metric "
              "cell: the value and its 95 % interval over patients (the Brier score and the threshold: value only)")
        return self._attrs(pd.DataFrame(rows).set_index("model"), values=pd.DataFrame(values).T,
                           intervals=intervals, rules=sorted({entry.threshold_rule for entry in self.models}))

    def patient_table(self, name: str) -> pd.DataFrame:
        """One row per test patient: true and predicted positive fractions, per-patient rates."""
        return metrics.patient_level_table(self.truth("test").astype(int), self.scores(name, "test"),
                                           self.patient_ids("test"), self.threshold(name))

    def worst_patients(self, name: str, k: int = 5) -> pd.DataFrame:
        """The ``k`` test patients whose share of patches called positive is furthest from the true share."""
        return metrics.worst_patients(self.patient_table(name), k)[PATIENT_COLUMNS]

    def ranking(self, n_boot: int = 1000, metric: str = "roc_auc") -> pd.DataFrame:
        """Models by test ``metric``, each compared with the first on the same patient resamples.

        ``attrs`` names the leader, the models really below it and those it cannot be told from.
        """
        label = INTERVAL_METRICS.get(metric, metric)
        test = {name: metrics.binary_metrics(self.truth("test").astype(int), self.scores(name, "test"),
                                             self.threshold(name))[metric] or 0.0 for name in self.names}
        order = sorted(self.names, key=lambda name: -test[name])
        leader, rows, real, tied = order[0], [], [], []
        for rank, name in enumerate(order, start=1):
            validation = metrics.binary_metrics(self.truth("val").astype(int), self.scores(name, "val"),
                                                self.threshold(name))[metric]
            row = {"rank": rank, "model": name, "started from": self.entry(name).started_from,
                   f"test {label}": test[name], f"validation {label}": validation,
                   f"difference to {leader} [95% CI]": "", "verdict": "leader"}
            if name != leader:
                difference = self._difference("test", leader, name, metric, n_boot)
                (real if difference["excludes_zero"] else tied).append(name)
                row.update({f"difference to {leader} [95% CI]": value_with_interval(difference["difference"],
                                                                                    difference["ci"]),
                            "verdict": "below (interval excludes 0)" if difference["excludes_zero"] else
                            "not told apart (interval includes 0)"})
            rows.append(row)
        return self._attrs(pd.DataFrame(rows).set_index("rank"), metric=metric, label=label, leader=leader,
                           real=real, tied=tied, chosen_on_validation=self.best_model(),
                           val_patients=len(np.unique(self.patient_ids("val"))),
                           test_patients=len(np.unique(self.patient_ids("test"))))

    # ----- Grad-CAM ------------------------------------------------------------------------
    def gradcam(self, name: str, per_group: int = 4) -> GradCamExamples:
        """Grad-CAM of P(positive) for the most confident true positives, false positives and false
        negatives of the test split (computed once per model)."""
        from bclib.evaluation import explain

        if (name, per_group) not in self._gradcam:
            truth, scores = self.truth("test"), self.scores(name, "test")
            decided = scores >= self.threshold(name)
            chosen: list[tuple[str, int]] = []
            for group, mask in {"true positive": truth & decided, "false positive": ~truth & decided,
                                "false negative": truth & ~decided}.items():
                # positives ranked by their highest scores, missed positives by their lowest
                order = np.argsort(scores[mask] if group == "false negative" else -scores[mask])
                chosen += [(group, int(position)) for position in np.flatnonzero(mask)[order][:per_group]]
            if not chosen:
                raise ValueError(f"{name}: no test image to explain")
            positions = np.asarray([position for _, position in chosen])
            images = np.asarray(self.session.cache.images[self.session.positions("test")[positions]])
            model = self.entry(name).model()
            _, layer = explain.find_target_layer(model)
            self._gradcam[name, per_group] = GradCamExamples(
                [group for group, _ in chosen], images,
                explain.grad_cam(model, images, class_index=self.positive_label), scores[positions],
                self.session.labels("test")[positions], tuple(int(size) for size in layer.output.shape[1:3]))
        return self._gradcam[name, per_group]

    def write_evaluation(self, session: Any, test: pd.DataFrame, calibrated: pd.DataFrame,
                         ranking: pd.DataFrame) -> Path:
        """evaluation.json: the test metrics with their intervals, calibration and ranking of this notebook."""
        values = test.attrs["values"]
        data = {
            "run_id": session.run_id,
            "models": self.names,
            "positive_class": self.positive_name,
            "best_by_validation_auc": self.best_model(),
            "test": [{"model": name, "started_from": test.loc[name, "started from"],
                      "threshold": test.loc[name, "threshold"], **values.loc[name].to_dict(),
                      "ci": test.attrs["intervals"][name]} for name in test.index],
            "calibration": calibrated.reset_index().to_dict(orient="records"),
            "ranking": ranking.reset_index().to_dict(orient="records"),
            "figures": list(session.figures),
        }
        return modelcard.write_json(data, session.out_dir / "evaluation.json")


def _stored_predictions(session: Any, card: dict, directory: Path) -> dict[str, Predictions] | None:
    """The predictions ``finish`` stored, when they are for exactly this session's images."""
    if card.get("split", {}).get("patients_hash") != session.split.patients_hash():
        return None
    try:
        stored = {split: load_predictions(directory, split) for split in SPLITS}
    except FileNotFoundError:
        return None
    predictions = {split: Predictions(split, data["labels"], data["probabilities"], data["patients"].astype(str))
                   for split, data in stored.items()}
    same = all(np.array_equal(predictions[split].labels, session.labels(split)) for split in SPLITS)
    return predictions if same else None


def _entry(session: Any, directory: Path, positive_label: int) -> ModelEntry:
    card = modelcard.read_card(directory / modelcard.MODEL_FILE)
    entry = ModelEntry(name=card["model_name"], card=card, directory=directory, predictions={})
    predictions = _stored_predictions(session, card, directory)
    if predictions is None:
        print(f"{entry.name}: trained on other patients or data; predicting this session's splits again")
        predictions = {split: predict_split(session, entry.model(), split, entry.input_size) for split in SPLITS}
    entry.predictions = predictions
    if session.num_classes == 2:
        entry.threshold = float(card["threshold"]["value"])
    else:  # the card's decision is the arg-max class: choose a one-vs-rest threshold on validation
        validation = predictions["val"]
        scores = metrics.positive_probability(validation.probabilities, positive_label)
        entry.threshold, info = metrics.choose_threshold((validation.labels == positive_label).astype(int), scores)
        card["threshold"] = {**card["threshold"], "method": info["method"]}
    return entry


def load_run(session: Any) -> RunComparison:
    """Every model of ``session``'s run that has a card and ``model.keras``, in notebook order."""
    positive_label = scored_label(session)
    entries = [_entry(session, card_path.parent, positive_label)
               for card_path in sorted(session.run_dir.glob("*/" + modelcard.CARD_FILE))
               if card_path.parent != session.out_dir and (card_path.parent / modelcard.MODEL_FILE).exists()]
    if not entries:
        raise FileNotFoundError(f"no trained model in {session.run_dir}: run notebooks 02-06 first with the "
                                f"same run_id ({session.run_id!r})")
    if session.num_classes > 2:
        print(f"{session.num_classes} classes: this notebook scores {session.class_names[positive_label]!r} "
              "against the rest, with a threshold chosen on validation")
    print(f"{len(entries)} {'model' if len(entries) == 1 else 'models'} in run {session.run_id!r}: "
          f"{', '.join(entry.name for entry in entries)}")
    return RunComparison(session=session, models=entries, positive_label=positive_label)
