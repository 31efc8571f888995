"""The leakage lesson: what splitting patches instead of patients does to a test score.

Two copies of the baseline train for the same epochs (no early stopping) on training sets of the same
size and are scored on the **same** test patches. The *patient-level* set holds the training patients
only; the *image-level (leaky)* set swaps random training patches for half of every test patient's
patches, as an image-level random split would, so the model may recognise the patient (stain, tissue)
instead of the disease. The AUC gap measures the leakage, with its paired patient-bootstrap interval.
The numbers are a lesson, never a result: they go into no model card and no summary row.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bclib.evaluation.bootstrap import paired_bootstrap_difference
from bclib.evaluation.compare import scored_label
from bclib.evaluation.metrics import positive_probability

LEAKY = "image-level (leaky)"
HONEST = "patient-level"


@dataclass
class LeakageLesson:
    """The same model trained with and without other patches of the test patients, on the same test patches."""

    table: pd.DataFrame  # one row per training set
    truth: np.ndarray  # the common test patches: True for the positive class
    patient_ids: np.ndarray
    scores: dict[str, np.ndarray]  # P(positive class) of each training set's model
    seed: int = 0

    def difference(self, n_boot: int = 1000) -> dict:
        """Leaky minus patient-level ROC-AUC with its paired patient-bootstrap interval (positive = leakage
        flatters), and ``test_patients_seen``: how many test patients the leaky training set holds."""
        result = paired_bootstrap_difference(self.truth.astype(int), self.scores[HONEST], self.scores[LEAKY],
                                             self.patient_ids, metric="roc_auc", n_boot=int(n_boot), seed=self.seed)
        return {**result, "test_patients_seen": int(self.table.loc[LEAKY, "test patients seen in training"])}


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


def _train_and_predict(session: Any, train_positions: np.ndarray, test_positions: np.ndarray, epochs: int,
                       image_size: int, batch_size: int, learning_rate: float) -> tuple[np.ndarray, float]:
    """Notebook 02's baseline trained on ``train_positions``: its test probabilities and the seconds it took."""
    from bclib.models import builders, training

    training.set_seeds(session.seed)
    with session.strategy.scope():
        model = builders.compile_model(builders.baseline_cnn(image_size, session.num_classes), learning_rate)
    started = time.perf_counter()
    train_ds = session.dataset("train", image_size=image_size, batch_size=batch_size, training=True,
                               positions=train_positions)
    # exactly ``epochs`` epochs, no early stopping: the longer a model trains, the more it can memorise patients
    model.fit(train_ds, epochs=epochs, verbose=0, callbacks=[training.PreciseBatchNorm(train_ds)])
    test_ds = session.dataset("test", image_size=image_size, batch_size=batch_size, training=False,
                              positions=test_positions)
    return np.asarray(training.predict_probabilities(model, test_ds)), time.perf_counter() - started


def lesson(session: Any, epochs: int, image_size: int, batch_size: int, learning_rate: float = 1e-3) -> LeakageLesson:
    """Train the baseline with and without half of each test patient's patches; score both on the other half."""
    from bclib.evaluation.metrics import roc_auc

    patient_ids = session.cache.index.frame["patient_id"].to_numpy().astype(str)
    honest, leaky, held = leaky_positions(session.positions("train"), session.positions("test"), patient_ids,
                                          session.seed)
    positive = scored_label(session)
    labels = np.asarray(session.cache.labels)[held]
    truth = labels == positive
    rows, scores = [], {}
    for name, train_positions in ((LEAKY, leaky), (HONEST, honest)):
        probabilities, seconds = _train_and_predict(session, train_positions, held, int(epochs), int(image_size),
                                                    int(batch_size), learning_rate)
        scores[name] = positive_probability(probabilities, positive)
        rows.append({
            "training set": name,
            "test ROC-AUC": roc_auc(truth.astype(int), scores[name]),
            "training images": int(len(train_positions)),
            "test images": int(len(held)),
            "test patients seen in training": len(set(patient_ids[held]) & set(patient_ids[train_positions])),
            "seconds": int(round(seconds)),
        })
    return LeakageLesson(pd.DataFrame(rows).set_index("training set"), truth, patient_ids[held], scores,
                         session.seed)
