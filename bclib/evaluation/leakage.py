"""The leakage lesson: what splitting patches instead of patients does to a test score.

Two copies of the baseline are trained for the same number of epochs on training sets of the same
size and scored on the **same** test patches:

- *patient-level*: the patient split's training patients only (no test patient in training);
- *image-level (leaky)*: the same, except that half of every test patient's patches replace as many
  random training patches. This is what an image-level random split does: other patches of the
  test patients sit in training, so the model may recognise the patient (stain, tissue) instead of
  the disease.

Only the presence of the test patients in training differs, so the AUC gap measures the leakage.
The numbers are a lesson, never a result: they go into no model card and no summary row.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bclib.evaluation import metrics

LEAKY = "image-level (leaky)"
HONEST = "patient-level"


@dataclass
class LeakageLesson:
    """Test AUC of the same model trained with and without other patches of the test patients."""

    table: pd.DataFrame

    @property
    def gap(self) -> float | None:
        """Leaky AUC minus patient-level AUC on the same test patches (positive = leakage flatters)."""
        values = self.table.set_index("training set")["test_roc_auc"]
        leaky, honest = values.get(LEAKY), values.get(HONEST)
        return None if leaky is None or honest is None or pd.isna(leaky) or pd.isna(honest) else float(leaky - honest)

    def plot(self):
        fig, ax = plt.subplots(figsize=(6, 3.4))
        bars = ax.bar(self.table["training set"], self.table["test_roc_auc"].fillna(0), color=["#c44e52", "#4c72b0"])
        for bar, value in zip(bars, self.table["test_roc_auc"]):
            text = "undefined" if pd.isna(value) else f"{value:.3f}"
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
        ax.set_ylim(0, 1.1)
        ax.set_ylabel("ROC-AUC on the same test patches")
        gap = self.gap
        ax.set_title("Leakage lesson, not a result" + ("" if gap is None else f" (gap {gap:+.3f})"))
        fig.tight_layout()
        return fig


def leaky_positions(train_positions: np.ndarray, test_positions: np.ndarray, patient_ids: np.ndarray,
                    seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(honest_train, leaky_train, held_out_test)`` row positions of equal-sized training sets.

    Half of each test patient's patches (rounded down) move to the leaky training set; the other
    half is the common test set. The leaky set drops as many random training patches as it gains,
    so both training sets are the same size and differ only in whose patches they hold.
    """
    rng = np.random.default_rng(seed)
    seen, held = [], []
    test_patients = patient_ids[test_positions]
    for patient in np.unique(test_patients):
        rows = rng.permutation(test_positions[test_patients == patient])
        half = len(rows) // 2
        seen.extend(rows[:half].tolist())
        held.extend(rows[half:].tolist())
    seen_array = np.sort(np.asarray(seen, dtype=np.int64))
    moved = min(len(seen_array), len(train_positions) - 1)
    seen_array = seen_array[:moved]
    dropped = rng.choice(train_positions, size=moved, replace=False)
    honest = np.sort(np.asarray(train_positions))
    leaky = np.sort(np.concatenate([np.setdiff1d(train_positions, dropped), seen_array]))
    return honest, leaky, np.sort(np.asarray(held, dtype=np.int64))


def _train_and_score(session: Any, train_positions: np.ndarray, test_positions: np.ndarray, epochs: int,
                     image_size: int, batch_size: int, learning_rate: float) -> dict:
    from bclib.models import builders, training

    training.set_seeds(session.seed)
    with session.strategy.scope():
        model = builders.compile_model(builders.baseline_cnn(image_size, session.num_classes), learning_rate)
    started = time.perf_counter()
    train_ds = session.dataset("train", image_size=image_size, batch_size=batch_size, training=True,
                               positions=train_positions)
    model.fit(train_ds, validation_data=session.dataset("val", image_size=image_size, batch_size=batch_size),
              epochs=epochs, verbose=0, callbacks=training.standard_callbacks(train_ds, None, patience=epochs))
    test_ds = session.dataset("test", image_size=image_size, batch_size=batch_size, training=False, positions=test_positions)
    probabilities = np.asarray(training.predict_probabilities(model, test_ds))
    labels = np.asarray(session.cache.labels)[test_positions]
    if probabilities.ndim == 2:  # more than two classes: macro one-vs-rest AUC
        auc = metrics.multiclass_metrics(labels, probabilities, session.class_names)["roc_auc_macro"]
    else:
        positive = 1 if session.positive_label is None else int(session.positive_label)
        auc = metrics.roc_auc(labels, metrics.positive_probability(probabilities, positive), positive_label=positive)
    patients = session.cache.index.frame["patient_id"].to_numpy()
    return {
        "test_roc_auc": auc,
        "training images": int(len(train_positions)),
        "test images": int(len(test_positions)),
        "test patients seen in training": len(set(patients[test_positions]) & set(patients[train_positions])),
        "seconds": round(time.perf_counter() - started, 1),
    }


def lesson(session: Any, epochs: int, image_size: int, batch_size: int, learning_rate: float = 1e-3) -> LeakageLesson:
    """Train the baseline with and without half of each test patient's patches; score both on the rest."""
    seed = session.seed
    patient_ids = session.cache.index.frame["patient_id"].to_numpy()
    honest, leaky, held = leaky_positions(session.positions("train"), session.positions("test"), patient_ids, seed)
    rows = [
        {"training set": LEAKY, **_train_and_score(session, leaky, held, int(epochs), int(image_size), int(batch_size), learning_rate)},
        {"training set": HONEST, **_train_and_score(session, honest, held, int(epochs), int(image_size), int(batch_size), learning_rate)},
    ]
    result = LeakageLesson(pd.DataFrame(rows))
    gap = result.gap
    if gap is not None:
        print(f"same {len(held)} test patches: leaky minus patient-level AUC = {gap:+.3f} "
              f"({'the leaky split flatters the model' if gap > 0 else 'no optimism measured in this run'})")
    return result
