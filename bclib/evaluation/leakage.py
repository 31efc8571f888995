"""The leakage lesson: what splitting patches instead of patients does to a test score.

Two copies of the baseline train for the same epochs (no early stopping) on training sets of the same
size and are scored on the **same** test patches. The *patient-level* set holds the training patients
only; the *image-level (leaky)* set swaps random training patches for half of every test patient's
patches, as an image-level random split would, so the model may recognise the patient (stain, tissue)
instead of the disease. The AUC gap measures the leakage, with its paired patient-bootstrap interval.
:func:`memoriser_lesson` repeats the comparison over several seeds (several draws of the halves) with a
model that memorises cheaply: k nearest neighbours on each patch's colour statistics, which can only
answer "which training patches look like this one". Its pooled difference resamples the same test
patients across all seeds. The numbers are a lesson, never a result: they go into no model card and no
summary row.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bclib.evaluation.bootstrap import paired_bootstrap_difference, percentile_interval, weighted_metrics
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


MEMORISER = "nearest neighbours on colour statistics"


def colour_statistics(images: np.ndarray, dark_level: float = 140.0) -> np.ndarray:
    """Per patch, standardised over the patches: each channel's mean and spread, and the share of dark
    (nuclear) pixels, whose grey level is below ``dark_level``: the stain and cellularity of a patch."""
    images = np.asarray(images, dtype=np.float32)
    grey = images.mean(axis=-1)
    features = np.concatenate([images.mean(axis=(1, 2)), images.std(axis=(1, 2)),
                               (grey < dark_level).mean(axis=(1, 2))[:, None]], axis=1)
    return (features - features.mean(axis=0)) / (features.std(axis=0) + 1e-6)


@dataclass
class LeakageSeries:
    """The memoriser trained on both training sets for several seeds, each scored on that seed's held-out half."""

    table: pd.DataFrame  # one row per seed
    difference: dict  # image-level minus patient-level ROC-AUC, averaged over seeds, with its patient interval
    neighbours: dict  # what the leaky memoriser's neighbours are: same patient or not, and how often they agree


def memoriser_lesson(session: Any, seeds: int, neighbours: int = 5, n_boot: int = 1000) -> LeakageSeries:
    """k nearest neighbours on :func:`colour_statistics`, trained on the patient-level and the image-level
    (leaky) training set of :func:`leaky_positions` for ``seeds`` seeds and scored on the same held-out patches.

    The pooled interval draws the test patients once per resample and applies the draw to every seed,
    so it is the interval of the seeds' mean difference over patients.
    """
    from sklearn.neighbors import KNeighborsClassifier

    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    patient_ids = session.cache.index.frame["patient_id"].to_numpy().astype(str)
    features = colour_statistics(session.cache.images)
    truth_all = np.asarray(session.cache.labels) == scored_label(session)
    test_patients = np.unique(patient_ids[session.positions("test")])
    rng = np.random.default_rng(session.seed)
    draws = rng.multinomial(len(test_patients), np.full(len(test_patients), 1.0 / len(test_patients)),
                            size=int(n_boot)).astype(float)
    rows, pooled, same_share, agree_same, agree_other, chance_share, seen = [], [], [], [], [], [], 0
    for seed in range(session.seed, session.seed + int(seeds)):
        honest, leaky, held = leaky_positions(session.positions("train"), session.positions("test"), patient_ids, seed)
        truth = truth_all[held]
        scores = {}
        for name, train_positions in ((HONEST, honest), (LEAKY, leaky)):
            model = KNeighborsClassifier(int(neighbours)).fit(features[train_positions], truth_all[train_positions])
            scores[name] = model.predict_proba(features[held])[:, list(model.classes_).index(True)]
        _, found = model.kneighbors(features[held])  # the leaky model's neighbours of each held-out patch
        found = leaky[found]
        same = patient_ids[found] == patient_ids[held][:, None]
        agrees = truth_all[found] == truth[:, None]
        same_share.append(same.mean())
        seen_of_patient = pd.Series(patient_ids[leaky]).value_counts()
        chance_share.append(seen_of_patient.reindex(patient_ids[held]).fillna(0).to_numpy().mean() / len(leaky))
        agree_same.append(agrees[same].mean() if same.any() else np.nan)
        agree_other.append(agrees[~same].mean() if (~same).any() else np.nan)
        result = paired_bootstrap_difference(truth.astype(int), scores[HONEST], scores[LEAKY], patient_ids[held],
                                             metric="roc_auc", n_boot=int(n_boot), seed=seed)
        rows.append({"seed": seed, f"{HONEST} ROC-AUC": result["a"], f"{LEAKY} ROC-AUC": result["b"],
                     "difference": result["difference"], "ci low": (result["ci"] or [np.nan])[0],
                     "ci high": (result["ci"] or [np.nan, np.nan])[1], "test images": len(held),
                     "same-patient neighbours": float(same.mean())})
        codes = np.searchsorted(test_patients, patient_ids[held])
        weights = draws[:, codes]
        with np.errstate(invalid="ignore", divide="ignore"):
            pooled.append(weighted_metrics(truth, scores[LEAKY], weights, None, ["roc_auc"])["roc_auc"]
                          - weighted_metrics(truth, scores[HONEST], weights, None, ["roc_auc"])["roc_auc"])
        seen += len(set(patient_ids[held]) & set(patient_ids[leaky]))
    table = pd.DataFrame(rows).set_index("seed")
    interval = percentile_interval(np.mean(pooled, axis=0)) if len(test_patients) > 1 else None
    difference = {"difference": float(table["difference"].mean()), "ci": None if interval is None else list(interval),
                  "excludes_zero": interval is not None and (interval[0] > 0 or interval[1] < 0),
                  "a": float(table[f"{HONEST} ROC-AUC"].mean()), "b": float(table[f"{LEAKY} ROC-AUC"].mean()),
                  "n_patients": int(len(test_patients)), "n_images": int(table["test images"].iloc[0]),
                  "seeds": int(seeds), "n_boot": int(n_boot), "test_patients_seen": seen // int(seeds),
                  "model": MEMORISER, "k": int(neighbours)}
    return LeakageSeries(table, difference, {
        "same_patient_share": float(np.mean(same_share)), "chance_same_patient_share": float(np.mean(chance_share)),
        "agreement_same_patient": float(np.nanmean(agree_same)) if not np.isnan(agree_same).all() else None,
        "agreement_other_patients": float(np.nanmean(agree_other)) if not np.isnan(agree_other).all() else None,
    })
