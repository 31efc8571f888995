"""Notebook 07's engine: every model of a run, compared on the same test split.

``load_run(session)`` finds each trained model of the run (its card, its stored validation and test
predictions) and offers the tables and figures of the evaluation notebook. Predictions stored by
:func:`bclib.evaluation.experiment.finish` are reused when the split is the same; otherwise the model is run
again on this session's test split.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bclib.evaluation import calibration
from bclib.evaluation import metrics
from bclib.evaluation import modelcard
from bclib.data.pipeline import resize_images
from bclib.plots import evaluation as evaluation_plots

SPLITS = ("val", "test")


@dataclass
class ModelEntry:
    """One trained model of the run: its card, folder and predictions per split."""

    name: str
    card: dict
    directory: Path
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)
    patients: dict[str, np.ndarray] = field(default_factory=dict)
    _model: Any = None

    @property
    def threshold(self) -> float:
        return float(self.card["threshold"]["value"])

    @property
    def input_size(self) -> int:
        return int(self.card["input_size"])

    def model(self):
        """The Keras model, loaded once (safe mode)."""
        if self._model is None:
            self._model, _ = modelcard.load_model(self.directory / modelcard.MODEL_FILE)
        return self._model


def _not_applicable(text: str):
    fig, ax = plt.subplots(figsize=(6, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    return fig


@dataclass
class RunComparison:
    """All models of one run, with the session whose test split they are compared on."""

    session: Any
    models: list[ModelEntry]

    @property
    def names(self) -> list[str]:
        return [entry.name for entry in self.models]

    @property
    def binary(self) -> bool:
        return self.session.num_classes == 2

    @property
    def positive_label(self) -> int:
        label = self.session.positive_label
        return 1 if label is None else int(label)

    @property
    def positive_name(self) -> str:
        return self.session.class_names[self.positive_label]

    def entry(self, name: str) -> ModelEntry:
        for entry in self.models:
            if entry.name == name:
                return entry
        raise KeyError(f"no model {name!r} in this run; models: {self.names}")

    def scores(self, entry: ModelEntry, split: str) -> np.ndarray:
        """P(positive class) for ``split`` (the sigmoid is P(label 1); flipped when the disease is 0)."""
        probabilities = entry.probabilities[split]
        if probabilities.ndim == 2:
            return probabilities[:, self.positive_label]
        return metrics.positive_probability(probabilities, self.positive_label)

    # ----- tables --------------------------------------------------------------------------
    def table(self, n_boot: int = 1000) -> pd.DataFrame:
        """Test metrics of every model at its validation-chosen threshold, 95% patient-bootstrap CIs."""
        rows = []
        seed = self.session.seed
        for entry in self.models:
            y, patients = entry.labels["test"], entry.patients["test"]
            if not self.binary:
                result = metrics.multiclass_metrics(y, entry.probabilities["test"], self.session.class_names)
                rows.append({"model": entry.name, **{k: v for k, v in result.items() if np.isscalar(v)}})
                continue
            scores = self.scores(entry, "test")
            result = metrics.binary_metrics(y, scores, entry.threshold, self.positive_label,
                                            self.session.class_names, patients)
            intervals = metrics.bootstrap_ci(y, scores, patients, n_boot=int(n_boot), seed=seed,
                                             threshold=entry.threshold, positive_label=self.positive_label)
            row = {"model": entry.name}
            for key in ("roc_auc", "pr_auc", "balanced_accuracy", "sensitivity", "specificity", "f1"):
                value, interval = result.get(key), intervals.get(key)
                row[key] = value
                row[f"{key} 95% CI"] = "" if not interval else f"[{interval[0]:.3f}, {interval[1]:.3f}]"
            auc_interval = intervals.get("roc_auc")
            row["better than chance"] = None if not auc_interval else bool(auc_interval[0] > 0.5)
            row["threshold"] = entry.threshold
            row["weights"] = entry.card.get("weights", {}).get("used")
            row["n_images"] = result["n_images"]
            row["n_patients"] = result["n_patients"]
            rows.append(row)
        frame = pd.DataFrame(rows).set_index("model")
        chance = [name for name, flag in frame.get("better than chance", pd.Series(dtype=object)).items() if flag is False]
        if chance:
            print(f"WARNING: {', '.join(chance)} not distinguishable from chance on the test split "
                  "(the AUC interval includes 0.5).")
        print(f"positive class: {self.positive_name!r}; thresholds chosen on validation; "
              f"{len(np.unique(self.models[0].patients['test'])) if self.models else 0} test patients")
        return frame

    def calibration_table(self) -> pd.DataFrame:
        """ECE and Brier score on test, before and after temperature scaling fitted on validation."""
        if not self.binary:
            return pd.DataFrame({"note": ["calibration is shown for binary datasets only"]})
        rows = []
        for entry in self.models:
            temperature = calibration.fit_temperature(entry.labels["val"], self.scores(entry, "val"), self.positive_label)
            summary = calibration.calibration_summary(entry.labels["test"], self.scores(entry, "test"), temperature,
                                                      positive_label=self.positive_label)
            rows.append({"model": entry.name, **summary})
        return pd.DataFrame(rows).set_index("model")

    def best_model(self) -> str:
        """The model with the highest validation ROC-AUC (never chosen on test)."""
        def key(entry: ModelEntry) -> float:
            value = entry.card.get("metrics", {}).get("val", {}).get("roc_auc")
            if value is None:
                value = entry.card.get("metrics", {}).get("val", {}).get("roc_auc_macro")
            return -1.0 if value is None else float(value)

        if not self.models:
            raise ValueError("no trained model in this run")
        return max(self.models, key=key).name

    def patient_table(self, name: str) -> pd.DataFrame:
        entry = self.entry(name)
        return metrics.patient_level_table(entry.labels["test"], self.scores(entry, "test"), entry.patients["test"],
                                           entry.threshold, self.positive_label)

    def worst_patients(self, name: str, k: int = 5) -> pd.DataFrame:
        if not self.binary:
            return pd.DataFrame()
        return metrics.worst_patients(self.patient_table(name), k)

    # ----- figures -------------------------------------------------------------------------
    def plot_curves(self):
        if not self.binary or not self.models:
            return _not_applicable("ROC/PR curves are drawn for binary datasets")
        curves = {entry.name: (entry.labels["test"], self.scores(entry, "test")) for entry in self.models}
        return evaluation_plots.roc_pr_curves(
            {name: ((y == self.positive_label).astype(int), s) for name, (y, s) in curves.items()},
            positive_label=1, positive_name=self.positive_name,
        )

    def plot_confusion_matrices(self):
        count = len(self.models)
        if count == 0:
            return _not_applicable("no model in this run")
        fig, axes = plt.subplots(1, count, figsize=(3.6 * count, 3.4), squeeze=False)
        for ax, entry in zip(axes[0], self.models):
            y = entry.labels["test"]
            if self.binary:
                result = metrics.binary_metrics(y, self.scores(entry, "test"), entry.threshold, self.positive_label)
                matrix = np.asarray(result["confusion_matrix"])
            else:
                predicted = np.argmax(entry.probabilities["test"], axis=1)
                matrix = pd.crosstab(pd.Categorical(y, categories=range(self.session.num_classes)),
                                     pd.Categorical(predicted, categories=range(self.session.num_classes)),
                                     dropna=False).to_numpy()
            evaluation_plots.confusion_matrix(
                matrix, self.session.class_names, self.positive_label if self.binary else None, ax=ax,
                xlabel="decision", title=f"{entry.name}\nthreshold {entry.threshold:.3f}",
            )
        fig.tight_layout()
        return fig

    def plot_calibration(self):
        if not self.binary or not self.models:
            return _not_applicable("calibration is shown for binary datasets")
        figures = []
        for entry in self.models:
            temperature = calibration.fit_temperature(entry.labels["val"], self.scores(entry, "val"), self.positive_label)
            scaled = calibration.apply_temperature(self.scores(entry, "test"), temperature)
            truth = (entry.labels["test"] == self.positive_label).astype(int)
            fig = evaluation_plots.reliability_diagram(truth, self.scores(entry, "test"), scaled, temperature)
            fig.axes[0].set_title(f"{entry.name}: reliability on test")
            figures.append(fig)
        return _side_by_side(figures)

    def plot_patients(self, name: str):
        if not self.binary:
            return _not_applicable("the patient view is drawn for binary datasets")
        fig = evaluation_plots.patient_scatter(self.patient_table(name))
        fig.axes[0].set_title(f"{name}: " + fig.axes[0].get_title())
        return fig

    def gradcam_models(self) -> list[str]:
        return list(self.names)

    def plot_gradcam(self, name: str, per_row: int = 4):
        """Grad-CAM on the most confident true positives, false positives and false negatives."""
        from bclib.evaluation import explain

        if not self.binary:
            return _not_applicable("Grad-CAM examples are chosen for binary datasets")
        entry = self.entry(name)
        y = entry.labels["test"] == self.positive_label
        scores = self.scores(entry, "test")
        decided = scores >= entry.threshold
        test_positions = self.session.positions("test")
        groups = {
            "true positives": np.flatnonzero(y & decided)[np.argsort(-scores[y & decided])][:per_row],
            "false positives": np.flatnonzero(~y & decided)[np.argsort(-scores[~y & decided])][:per_row],
            "false negatives": np.flatnonzero(y & ~decided)[np.argsort(scores[y & ~decided])][:per_row],
        }
        chosen = [(group, int(p)) for group, positions in groups.items() for p in positions]
        if not chosen:
            return _not_applicable(f"{name}: no test images to explain")
        images = np.asarray(self.session.cache.images[np.asarray([test_positions[p] for _, p in chosen])])
        inputs = resize_images(images, entry.input_size)
        heatmaps = explain.grad_cam(entry.model(), inputs, class_index=self.positive_label)
        fig = evaluation_plots.gradcam_grid(
            inputs.astype(np.uint8), heatmaps, [int(entry.labels["test"][p]) for _, p in chosen],
            [float(scores[p]) for _, p in chosen], self.session.class_names, self.positive_label, columns=per_row,
            captions=[group[:-1] for group, _ in chosen],
        )
        present = ", ".join(f"{group}: {len(positions)}" for group, positions in groups.items())
        fig.suptitle(f"{name} Grad-CAM, the most confident of each ({present})", fontsize=10)
        return fig

    def plot_slides(self, name: str, patients: list[str]) -> dict[str, Any]:
        """Mosaic | truth | predicted probability, for each requested patient present in the data."""
        from bclib.evaluation import mosaic
        from bclib.models.training import predict_probabilities

        frame = self.session.cache.index.frame
        if not {"x", "y"} <= set(frame.columns):
            print("this dataset carries no patch coordinates: no whole-slide view")
            return {}
        entry = self.entry(name)
        split_of = {}
        for split_name in ("train", "val", "test"):
            for patient in self.session.split.patients(split_name):
                split_of[str(patient)] = split_name
        figures = {}
        for patient in patients:
            positions = np.flatnonzero(frame["patient_id"].to_numpy() == str(patient))
            if len(positions) == 0:
                print(f"patient {patient}: not in the data at hand")
                continue
            patient_frame = frame.iloc[positions].reset_index(drop=True)
            images = np.asarray(self.session.cache.images[positions])
            data = self.session.dataset("test", image_size=entry.input_size, training=False, positions=positions)
            probabilities = np.asarray(predict_probabilities(entry.model(), data))
            scores = metrics.positive_probability(probabilities, self.positive_label)
            canvas, extent = mosaic.build_mosaic(patient_frame, images=images, patch_size=self.session.pack_size)
            truth = mosaic.label_map(patient_frame.assign(label=(patient_frame["label"] == self.positive_label).astype(int)))
            predicted = mosaic.probability_map(patient_frame, scores)
            fig = evaluation_plots.slide_view(canvas, extent, truth, predicted, patient_id=str(patient),
                                              positive_name=self.positive_name)
            where = split_of.get(str(patient), "?")
            fig.suptitle(f"patient {patient} ({len(positions)} patches; {where} split"
                         + ("" if where == "test" else ": the model saw or tuned on this patient") + f") · {name}")
            figures[f"slide_{patient}_{name}"] = fig
        return figures

    def write_evaluation(self, session: Any, n_boot: int | None = None) -> Path:
        """evaluation.json: the comparison table and calibration figures of this notebook."""
        table = self.table(n_boot=int(n_boot or session.settings["n_boot"])) if self.models else pd.DataFrame()
        data = {
            "run_id": session.run_id,
            "models": self.names,
            "best_by_validation_auc": self.best_model() if self.models else None,
            "test": table.reset_index().to_dict(orient="records"),
            "calibration": self.calibration_table().reset_index().to_dict(orient="records") if self.models else [],
            "figures": list(session.figures),
        }
        return modelcard.write_json(data, session.out_dir / "evaluation.json")


def _side_by_side(figures: list) -> Any:
    """Combine single-panel figures into one wide figure (rendered images, one per model)."""
    if len(figures) == 1:
        return figures[0]
    rendered = []
    for fig in figures:
        fig.canvas.draw()
        rendered.append(np.asarray(fig.canvas.buffer_rgba())[..., :3])
        plt.close(fig)
    combined, axes = plt.subplots(1, len(rendered), figsize=(4.6 * len(rendered), 5.2))
    for ax, image in zip(np.atleast_1d(axes), rendered):
        ax.imshow(image)
        ax.axis("off")
    combined.tight_layout()
    return combined


def _entry_from_card(session: Any, card_path: Path) -> ModelEntry | None:
    directory = card_path.parent
    if not (directory / modelcard.MODEL_FILE).exists():
        return None
    card = modelcard.read_card(directory / modelcard.MODEL_FILE)
    entry = ModelEntry(name=card["model_name"], card=card, directory=directory)
    stored = directory / "predictions.npz"
    same_split = card.get("split", {}).get("patients_hash") == session.split.patients_hash()
    if stored.exists() and same_split:
        with np.load(stored, allow_pickle=False) as data:
            for split in SPLITS:
                entry.labels[split] = data[f"{split}_labels"]
                entry.probabilities[split] = data[f"{split}_probabilities"]
                entry.patients[split] = data[f"{split}_patients"].astype(str)
        return entry
    from bclib.models.training import predict_probabilities

    print(f"{entry.name}: trained on another split or data; predicting this session's splits again")
    for split in SPLITS:
        data = session.dataset(split, image_size=entry.input_size, training=False)
        entry.probabilities[split] = np.asarray(predict_probabilities(entry.model(), data))
        entry.labels[split] = session.labels(split)
        entry.patients[split] = session.patient_ids(split).astype(str)
    return entry


def load_run(session: Any) -> RunComparison:
    """Every model of ``session``'s run that has a card and ``model.keras``, in notebook order."""
    entries = []
    for card_path in sorted(session.run_dir.glob("*/" + modelcard.CARD_FILE)):
        if card_path.parent == session.out_dir:
            continue
        entry = _entry_from_card(session, card_path)
        if entry is not None:
            entries.append(entry)
    if not entries:
        print(f"no trained model found in {session.run_dir}: run notebooks 02-06 first (same run_id)")
    return RunComparison(session=session, models=entries)
