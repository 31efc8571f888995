"""The series' lessons hold on the synthetic demo data (what `bclib run` uses when no IDC data is found).

Directions over a few seeds, never exact values: the leakage lesson's split flatters a model that
can recognise patients; class weights raise the sensitivity at 0.5; the baseline CNN beats chance.
Small images and a few epochs keep the whole file cheap enough for every CI run.
"""
from __future__ import annotations

import numpy as np
import pytest

from bclib.data.synthetic import DEMO_OPTIONS, make_synthetic_idc
from bclib.evaluation import leakage
from bclib.evaluation.metrics import roc_auc
from bclib.session import start

IMAGE_SIZE = 24
EPOCHS = 4


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    make_synthetic_idc(root, **DEMO_OPTIONS)
    return root


def _session(demo, seed: int):
    return start("03_class_weighting", data_dir=demo, profile="smoke", run_id="demo_lessons", seed=seed, show=False)


def _colour_statistics(images: np.ndarray) -> np.ndarray:
    """Per patch: mean and spread of each channel and the share of dark (nuclear) pixels, standardised."""
    images = images.astype(np.float32)
    grey = images.mean(axis=-1)
    features = np.concatenate([images.mean(axis=(1, 2)), images.std(axis=(1, 2)),
                               (grey < 140).mean(axis=(1, 2))[:, None]], axis=1)
    return (features - features.mean(axis=0)) / features.std(axis=0)


def test_an_image_level_split_flatters_a_model_that_recognises_patients(demo):
    """The leakage lesson's two training sets, for a nearest-neighbour model on colour statistics:
    with half of each test patient's patches in training it scores the other half better."""
    from sklearn.neighbors import KNeighborsClassifier

    differences = []
    for seed in range(5):
        session = _session(demo, seed)
        patient_ids = session.cache.index.frame["patient_id"].to_numpy().astype(str)
        honest, leaky, held = leakage.leaky_positions(session.positions("train"), session.positions("test"),
                                                      patient_ids, seed)
        features, labels = _colour_statistics(np.asarray(session.cache.images)), np.asarray(session.cache.labels)
        aucs = [roc_auc(labels[held], KNeighborsClassifier(15).fit(features[rows], labels[rows])
                        .predict_proba(features[held])[:, 1]) for rows in (honest, leaky)]
        assert aucs[0] > 0.6, f"seed {seed}: the patient-level model should still beat chance, got {aucs[0]:.3f}"
        differences.append(aucs[1] - aucs[0])
    assert np.mean(differences) > 0.03, f"image-level minus patient-level AUC per seed: {np.round(differences, 3)}"
    assert min(differences) > -0.02, f"image-level minus patient-level AUC per seed: {np.round(differences, 3)}"


def test_class_weights_raise_the_sensitivity_at_one_half(demo):
    """Notebook 03's balanced class weights, given to a logistic regression on colour statistics: on the
    unseen patients more IDC patches reach a probability of 0.5 than without them."""
    from sklearn.linear_model import LogisticRegression

    from bclib.models import training

    raised = []
    for seed in range(5):
        session = _session(demo, seed)
        features, labels = _colour_statistics(np.asarray(session.cache.images)), np.asarray(session.cache.labels)
        train = session.positions("train")
        unseen = np.concatenate([session.positions("val"), session.positions("test")])
        assert 0.15 < labels[unseen].mean() < 0.45, "the unseen patients should hold about IDC's share of positives"
        sensitivity = []
        for class_weight in (None, training.balanced_class_weights(labels[train])):
            model = LogisticRegression(max_iter=1000, class_weight=class_weight).fit(features[train], labels[train])
            sensitivity.append(float((model.predict_proba(features[unseen])[labels[unseen] == 1, 1] >= 0.5).mean()))
        raised.append(sensitivity[1] - sensitivity[0])
    assert min(raised) > 0 and np.mean(raised) > 0.03, f"weighted minus plain sensitivity: {np.round(raised, 3)}"


def test_baseline_cnn_beats_chance_without_separating_the_classes(demo):
    """Notebook 02's CNN, small and short, ranks the unseen patients' patches well but not perfectly."""
    from bclib.models import builders, training

    aucs = []
    for seed in (0, 1):
        session = _session(demo, seed)
        training.set_seeds(seed)
        model = builders.compile_model(builders.baseline_cnn(IMAGE_SIZE, session.num_classes), 1e-3)
        train_ds = session.dataset("train", image_size=IMAGE_SIZE, batch_size=32, training=True)
        model.fit(train_ds, epochs=EPOCHS, verbose=0, callbacks=[training.PreciseBatchNorm(train_ds)])
        unseen = np.concatenate([session.positions("val"), session.positions("test")])
        unseen_ds = session.dataset("test", image_size=IMAGE_SIZE, batch_size=128, training=False, positions=unseen)
        probabilities = np.asarray(training.predict_probabilities(model, unseen_ds)).reshape(-1)
        aucs.append(roc_auc(np.asarray(session.cache.labels)[unseen], probabilities))
    assert min(aucs) > 0.6 and np.mean(aucs) > 0.7, f"ROC-AUC on unseen patients per seed: {np.round(aucs, 3)}"
    assert max(aucs) < 0.99, f"the demo should not be (almost) perfectly separable: {np.round(aucs, 3)}"
