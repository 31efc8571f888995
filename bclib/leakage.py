"""The leakage lesson: one baseline trained on an image-level split and on the patient split.

An image-level random split puts patches of the same patient in training and test; the test score
then partly measures recognising patients already seen. This module measures that optimism once,
for teaching. Its numbers are never results: they go into no model card and no summary row.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bclib import metrics
from bclib.splits import LeakageWarning, make_split


@dataclass
class LeakageLesson:
    """Test AUC of the same model trained on a leaky image split and on the patient split."""

    table: pd.DataFrame

    @property
    def gap(self) -> float | None:
        """Image-split AUC minus patient-split AUC (positive = the leaky split flatters)."""
        values = self.table.set_index("split")["test_roc_auc"]
        leaky, honest = values.iloc[0], values.iloc[1]
        return None if pd.isna(leaky) or pd.isna(honest) else float(leaky - honest)

    def plot(self):
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        colours = ["#c44e52", "#4c72b0"]
        bars = ax.bar(self.table["split"], self.table["test_roc_auc"].fillna(0), color=colours)
        for bar, value in zip(bars, self.table["test_roc_auc"]):
            text = "undefined" if pd.isna(value) else f"{value:.3f}"
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
        ax.set_ylim(0, 1.08)
        ax.set_ylabel("test ROC-AUC")
        gap = self.gap
        ax.set_title("Leakage lesson (not a result)" + ("" if gap is None else f": gap {gap:+.3f}"))
        fig.tight_layout()
        return fig


def _train_and_score(session: Any, split: Any, epochs: int, image_size: int, batch_size: int, seed: int) -> dict:
    from bclib import models, train

    train.set_seeds(seed)
    model = models.build_model("baseline_cnn", num_classes=session.num_classes, input_size=image_size, seed=seed)
    models.compile_model(model, learning_rate=session.params["learning_rate"], num_classes=session.num_classes)
    train_ds = session.dataset("train", image_size=image_size, batch_size=batch_size, training=True, positions=split.positions("train"))
    val_ds = session.dataset("val", image_size=image_size, batch_size=batch_size, training=False, positions=split.positions("val"))
    started = time.perf_counter()
    train.fit(model, train_ds, val_ds, epochs=epochs, patience=max(1, epochs), verbose=0)
    test_positions = split.positions("test")
    test_ds = session.dataset("test", image_size=image_size, batch_size=batch_size, training=False, positions=test_positions)
    probabilities = np.asarray(train.predict_probabilities(model, test_ds))
    labels = np.asarray(session.cache.labels)[test_positions]
    if probabilities.ndim == 2:  # more than two classes: macro one-vs-rest AUC
        auc = metrics.multiclass_metrics(labels, probabilities, session.class_names)["roc_auc_macro"]
    else:
        positive = 1 if session.positive_label is None else int(session.positive_label)
        scores = probabilities if positive == 1 else 1.0 - probabilities
        auc = metrics.roc_auc(labels, scores, positive_label=positive)
    patients = session.cache.index.frame["patient_id"].to_numpy()
    train_patients = set(patients[split.positions("train")])
    test_patients = set(patients[test_positions])
    return {
        "test_roc_auc": auc,
        "test_images": int(len(test_positions)),
        "test_patients": len(test_patients),
        "test_patients_also_in_train": len(test_patients & train_patients),
        "seconds": round(time.perf_counter() - started, 1),
    }


def lesson(session: Any, epochs: int, image_size: int, batch_size: int | None = None) -> LeakageLesson:
    """Train the baseline on an image-level split and on the session's patient split; compare."""
    seed = int(session.params["seed"])
    batch_size = int(batch_size or session.params["batch_size"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LeakageWarning)
        leaky = make_split(session.cache.index, "image", seed=seed)
    for warning in caught:
        print(f"LeakageWarning: {warning.message}")
    honest = session.split
    rows = []
    for name, split in (("image (leaky)", leaky), ("patient", honest)):
        row = {"split": name, **_train_and_score(session, split, int(epochs), int(image_size), batch_size, seed)}
        rows.append(row)
    return LeakageLesson(pd.DataFrame(rows))
