"""Notebook 07's data: every trained model of a run, scored on the same validation and test patients.

``load_run(session)`` reads each model card of the run and the predictions
:func:`bclib.evaluation.experiment.finish` stored beside it (a model trained on other patients is
predicted again on this session's splits). Every score is P(positive class); with more than two
classes, one class (the last) is scored against the rest. The tables, calibration, patient view,
Grad-CAM examples, slide maps and the final ranking build on those scores; the metrics, intervals
and calibration themselves come from :mod:`~bclib.evaluation.metrics`,
:mod:`~bclib.evaluation.bootstrap` and :mod:`~bclib.evaluation.calibration`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bclib.evaluation import calibration, metrics, modelcard
from bclib.evaluation.bootstrap import binary_metrics_with_ci, format_interval, paired_bootstrap_difference
from bclib.evaluation.experiment import Predictions
from bclib.plots import evaluation as evaluation_plots

SPLITS = ("val", "test")
PREDICTIONS_FILE = "predictions.npz"
#: The test-table columns that get a patient-bootstrap interval.
INTERVAL_METRICS = ("roc_auc", "pr_auc", "balanced_accuracy", "sensitivity", "specificity")


def scored_label(session: Any) -> int:
    """The label scored as positive: the dataset's disease class, else (more classes) the last one."""
    return session.num_classes - 1 if session.positive_label is None else int(session.positive_label)


def positive_scores(probabilities: np.ndarray, positive_label: int) -> np.ndarray:
    """P(positive class) from a model's outputs: one sigmoid unit, two softmax units, or one unit per class."""
    probabilities = np.asarray(probabilities)
    if probabilities.ndim == 2 and probabilities.shape[1] > 2:
        return probabilities[:, positive_label].astype(np.float64)
    return metrics.positive_probability(probabilities, positive_label)


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

    def model(self):
        """The Keras model, loaded once (safe mode)."""
        if self._model is None:
            self._model, _ = modelcard.load_model(self.directory / modelcard.MODEL_FILE)
        return self._model


@dataclass
class RunComparison:
    """All models of one run, with the session whose validation and test patients they are scored on."""

    session: Any
    models: list[ModelEntry]
    positive_label: int = 1

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
        return positive_scores(self.entry(name).predictions[split].probabilities, self.positive_label)

    def threshold(self, name: str) -> float:
        """Model ``name``'s decision threshold, chosen on validation."""
        return self.entry(name).threshold

    def best_model(self) -> str:
        """The model with the highest validation ROC-AUC (chosen without looking at test)."""
        truth = self.truth("val")
        return max(self.names, key=lambda name: metrics.roc_auc(truth, self.scores(name, "val")) or 0.0)

    # ----- tables --------------------------------------------------------------------------
    def table(self, n_boot: int = 1000) -> pd.DataFrame:
        """Test metrics of every model at its validation-chosen threshold, 95 % patient-bootstrap intervals."""
        truth, patients = self.truth("test"), self.patient_ids("test")
        rows = []
        for entry in self.models:
            result = binary_metrics_with_ci(truth.astype(int), self.scores(entry.name, "test"), patients,
                                            entry.threshold, n_boot=int(n_boot), seed=self.session.seed)
            row: dict[str, Any] = {"model": entry.name}
            for key in INTERVAL_METRICS:
                row[key] = result[key]
                row[f"{key} 95% CI"] = format_interval(result["ci"].get(key))
            row["brier"] = result["brier"]
            auc_interval = result["ci"].get("roc_auc")
            row["above chance"] = bool(auc_interval and auc_interval[0] > 0.5)
            row["threshold"] = entry.threshold
            row["threshold rule"] = entry.threshold_rule
            row["weights"] = entry.card.get("weights", {}).get("used")
            rows.append(row)
        print(f"test split: {len(truth):,} images from {len(np.unique(patients))} patients; positive class "
              f"{self.positive_name!r}; each model at its own threshold, chosen on validation")
        return pd.DataFrame(rows).set_index("model")

    def calibration_table(self) -> pd.DataFrame:
        """Test ECE and Brier score before and after temperature scaling fitted on validation, with the
        mean predicted probability beside the observed positive fraction, and whether class weights trained it."""
        val_truth, test_truth = self.truth("val"), self.truth("test")
        rows = []
        for name in self.names:
            temperature = calibration.fit_temperature(val_truth.astype(int), self.scores(name, "val"))
            scores = self.scores(name, "test")
            summary = calibration.calibration_summary(test_truth.astype(int), scores, temperature)
            rows.append({"model": name, "temperature": summary["temperature"], "ece": summary["ece"],
                         "ece_scaled": summary["ece_scaled"], "brier": summary["brier"],
                         "brier_scaled": summary["brier_scaled"], "mean_probability": float(scores.mean()),
                         "positive_fraction": float(test_truth.mean()),
                         "class weights": bool(self.entry(name).card["params"].get("class_weight"))})
        return pd.DataFrame(rows).set_index("model")

    def patient_table(self, name: str) -> pd.DataFrame:
        """One row per test patient: true and predicted positive fractions, per-patient rates."""
        return metrics.patient_level_table(self.truth("test").astype(int), self.scores(name, "test"),
                                           self.patient_ids("test"), self.threshold(name))

    def worst_patients(self, name: str, k: int = 5) -> pd.DataFrame:
        return metrics.worst_patients(self.patient_table(name), k)

    def ranking(self, n_boot: int = 1000, metric: str = "roc_auc") -> pd.DataFrame:
        """Models by test ``metric``, each compared with the first on the same patient resamples.

        ``attrs`` carries the validation-chosen model and the patient counts of both splits.
        """
        truth, patients = self.truth("test"), self.patient_ids("test")
        test_values = {name: metrics.binary_metrics(truth.astype(int), self.scores(name, "test"),
                                                    self.threshold(name))[metric] for name in self.names}
        order = sorted(self.names, key=lambda name: -(test_values[name] or 0.0))
        leader = order[0]
        rows = []
        for rank, name in enumerate(order, start=1):
            validation = metrics.binary_metrics(self.truth("val").astype(int), self.scores(name, "val"),
                                                self.threshold(name))[metric]
            row = {"rank": rank, "model": name, f"test {metric}": test_values[name], f"validation {metric}": validation,
                   f"difference to {leader}": None, "95% CI of the difference": "", "interval excludes 0": None}
            if name != leader:
                difference = paired_bootstrap_difference(
                    truth.astype(int), self.scores(leader, "test"), self.scores(name, "test"), patients, metric=metric,
                    n_boot=int(n_boot), seed=self.session.seed, threshold_a=self.threshold(leader),
                    threshold_b=self.threshold(name))
                row.update({f"difference to {leader}": difference["difference"],
                            "95% CI of the difference": format_interval(difference["ci"]),
                            "interval excludes 0": difference["excludes_zero"]})
            rows.append(row)
        table = pd.DataFrame(rows).set_index("rank")
        table.attrs.update(metric=metric, leader=leader, chosen_on_validation=self.best_model(),
                           val_patients=len(np.unique(self.patient_ids("val"))),
                           test_patients=len(np.unique(patients)))
        return table

    # ----- figures -------------------------------------------------------------------------
    def plot_calibration(self, columns: int = 3):
        """One reliability diagram per model (test), before and after its validation-fitted temperature."""
        columns = min(columns, len(self.models))
        rows = -(-len(self.models) // columns)
        fig = plt.figure(figsize=(4.6 * columns, 5.5 * rows), layout="constrained")
        grid = fig.add_gridspec(rows, columns)
        truth = self.truth("test").astype(int)
        for number, name in enumerate(self.names):
            cell = grid[divmod(number, columns)].subgridspec(2, 1, height_ratios=[3, 1])
            diagram = fig.add_subplot(cell[0])
            counts = fig.add_subplot(cell[1], sharex=diagram)
            temperature = calibration.fit_temperature(self.truth("val").astype(int), self.scores(name, "val"))
            scores = self.scores(name, "test")
            evaluation_plots.reliability_diagram(truth, scores, calibration.apply_temperature(scores, temperature),
                                                 temperature, axes=(diagram, counts))
            diagram.set_title(f"{name}: reliability on test")
        return fig

    def plot_patients(self, name: str):
        fig = evaluation_plots.patient_scatter(self.patient_table(name))
        fig.axes[0].set_title(f"{name}: " + fig.axes[0].get_title())
        return fig

    def gradcam_examples(self, name: str, per_group: int = 4) -> dict[str, np.ndarray]:
        """Test positions of the most confident true positives, false positives and false negatives."""
        truth, scores = self.truth("test"), self.scores(name, "test")
        decided = scores >= self.threshold(name)
        groups = {"true positive": truth & decided, "false positive": ~truth & decided,
                  "false negative": truth & ~decided}
        # positives ranked by their highest scores, missed positives by their lowest
        return {group: np.flatnonzero(mask)[np.argsort(scores[mask] if group == "false negative"
                                                       else -scores[mask])][:per_group]
                for group, mask in groups.items()}

    def plot_gradcam(self, name: str, per_group: int = 4):
        """Grad-CAM of :meth:`gradcam_examples`, one row per group."""
        from bclib.data.pipeline import resize_images
        from bclib.evaluation import explain

        entry, scores = self.entry(name), self.scores(name, "test")
        chosen = [(group, int(p)) for group, positions in self.gradcam_examples(name, per_group).items()
                  for p in positions]
        if not chosen:
            raise ValueError(f"{name}: no test image to explain")
        positions = np.asarray([p for _, p in chosen])
        inputs = resize_images(self.session.cache.images[self.session.positions("test")[positions]], entry.input_size)
        heatmaps = explain.grad_cam(entry.model(), inputs, class_index=self.positive_label)
        fig = evaluation_plots.gradcam_grid(
            inputs.astype(np.uint8), heatmaps, self.session.labels("test")[positions], scores[positions],
            self.session.class_names, self.positive_label, columns=per_group, captions=[group for group, _ in chosen])
        fig.suptitle(f"{name}: Grad-CAM of the most confident test images of each group", fontsize=10)
        return fig

    def slides(self, name: str, patients: list[str]) -> tuple[dict[str, Any], pd.DataFrame]:
        """Mosaic | truth | predicted probability for each requested patient in the data, and a table
        of each shown patient's split, patches and within-slide ROC-AUC."""
        from bclib.evaluation import mosaic
        from bclib.models.training import predict_probabilities

        frame = self.session.cache.index.frame
        if not {"x", "y"} <= set(frame.columns):
            print("this dataset carries no patch coordinates: no whole-slide view")
            return {}, pd.DataFrame()
        entry = self.entry(name)
        split_of = {str(patient): split for split in ("train", "val", "test")
                    for patient in self.session.split.patients(split)}
        figures, rows = {}, []
        patient_ids = frame["patient_id"].astype(str).to_numpy()
        requested = list(dict.fromkeys(map(str, patients)))  # each patient once, in the order given
        absent = [patient for patient in requested if patient not in set(patient_ids)]
        if absent:
            print(f"not in the data at hand: patient(s) {', '.join(absent)}")
        for patient in (patient for patient in requested if patient not in absent):
            positions = np.flatnonzero(patient_ids == patient)
            patient_frame = frame.iloc[positions].reset_index(drop=True)
            data = self.session.dataset("test", image_size=entry.input_size, training=False, positions=positions)
            labels = np.asarray(self.session.cache.labels)[positions]
            scores = positive_scores(predict_probabilities(entry.model(), data), self.positive_label)
            truth = labels == self.positive_label
            canvas, extent = mosaic.build_mosaic(patient_frame, images=self.session.cache.images[positions],
                                                 patch_size=self.session.pack_size)
            fig = evaluation_plots.slide_view(
                canvas, extent, mosaic.label_map(patient_frame.assign(label=truth.astype(int))),
                mosaic.probability_map(patient_frame, scores), positive_name=self.positive_name)
            where = split_of.get(patient, "unknown")
            fig.suptitle(f"patient {patient}: {where.upper()} split, {len(positions)} patches · {name}"
                         + ("" if where == "test" else "  (the model learnt from or was tuned on this patient)"))
            figures[f"slide_{patient}_{name}"] = fig
            rows.append({"patient": patient, "split": where, "patches": len(positions),
                         "positive_fraction": float(truth.mean()), "mean_probability": float(scores.mean()),
                         "roc_auc": metrics.roc_auc(truth.astype(int), scores) if 0 < truth.sum() < len(truth)
                         else None})
        return figures, pd.DataFrame(rows)

    def write_evaluation(self, session: Any, test: pd.DataFrame, calibrated: pd.DataFrame,
                         ranking: pd.DataFrame) -> Path:
        """evaluation.json: the test table, calibration and ranking shown in this notebook."""
        data = {
            "run_id": session.run_id,
            "models": self.names,
            "positive_class": self.positive_name,
            "best_by_validation_auc": self.best_model(),
            "test": test.reset_index().to_dict(orient="records"),
            "calibration": calibrated.reset_index().to_dict(orient="records"),
            "ranking": ranking.reset_index().to_dict(orient="records"),
            "figures": list(session.figures),
        }
        return modelcard.write_json(data, session.out_dir / "evaluation.json")


def _stored_predictions(session: Any, card: dict, directory: Path) -> dict[str, Predictions] | None:
    """The predictions ``finish`` stored, when they are for exactly this session's images."""
    stored = directory / PREDICTIONS_FILE
    if not stored.exists() or card.get("split", {}).get("patients_hash") != session.split.patients_hash():
        return None
    with np.load(stored, allow_pickle=False) as data:
        predictions = {split: Predictions(split, data[f"{split}_labels"], data[f"{split}_probabilities"],
                                          data[f"{split}_patients"].astype(str)) for split in SPLITS}
    same = all(np.array_equal(predictions[split].labels, session.labels(split)) for split in SPLITS)
    return predictions if same else None


def _entry(session: Any, card_path: Path, positive_label: int) -> ModelEntry | None:
    directory = card_path.parent
    if not (directory / modelcard.MODEL_FILE).exists():
        return None
    card = modelcard.read_card(directory / modelcard.MODEL_FILE)
    entry = ModelEntry(name=card["model_name"], card=card, directory=directory, predictions={})
    predictions = _stored_predictions(session, card, directory)
    if predictions is None:
        from bclib.evaluation.experiment import predict_split

        print(f"{entry.name}: trained on other patients or data; predicting this session's splits again")
        predictions = {split: predict_split(session, entry.model(), split, entry.input_size) for split in SPLITS}
    entry.predictions = predictions
    if session.num_classes == 2:
        entry.threshold = float(card["threshold"]["value"])
    else:  # the card's decision is the arg-max class: choose a one-vs-rest threshold on validation
        validation = predictions["val"]
        entry.threshold, info = metrics.choose_threshold((validation.labels == positive_label).astype(int),
                                                         positive_scores(validation.probabilities, positive_label))
        card["threshold"] = {**card["threshold"], "method": info["method"]}
    return entry


def load_run(session: Any) -> RunComparison:
    """Every model of ``session``'s run that has a card and ``model.keras``, in notebook order."""
    positive_label = scored_label(session)
    entries = []
    for card_path in sorted(session.run_dir.glob("*/" + modelcard.CARD_FILE)):
        if card_path.parent != session.out_dir:
            entry = _entry(session, card_path, positive_label)
            if entry is not None:
                entries.append(entry)
    if not entries:
        raise FileNotFoundError(f"no trained model in {session.run_dir}: run notebooks 02-06 first with the "
                                f"same run_id ({session.run_id!r})")
    if session.num_classes > 2:
        print(f"{session.num_classes} classes: this notebook scores {session.class_names[positive_label]!r} "
              "against the rest, with a threshold chosen on validation")
    print(f"{len(entries)} model(s) in run {session.run_id!r}: {', '.join(entry.name for entry in entries)}")
    return RunComparison(session=session, models=entries, positive_label=positive_label)
