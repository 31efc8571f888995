"""Training helpers: notebook 02's callbacks (precise BatchNorm, early stopping, CSV log), class weights,
seeds, timers and predictions in data order."""
from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest

from bclib.data.pipeline import make_dataset
from bclib.models import builders as models
from bclib.models import training as train

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SIZE = 16
EPOCHS = 4


def separable_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class 1: dark purple patches; class 0: light pink ones; plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    colours = np.where(labels[:, None] == 1, [[110, 60, 150]], [[230, 170, 200]])
    images = colours[:, None, None, :] + rng.normal(0, 25, (n, SIZE, SIZE, 3))
    return np.clip(images, 0, 255).astype("uint8"), labels


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Notebook 02's compile and fit, with its callbacks, on a separable problem."""
    train_x, train_y = separable_images(96, seed=0)
    val_x, val_y = separable_images(48, seed=1)
    train_ds = make_dataset(train_x, train_y, batch_size=16, training=True, seed=0)
    val_ds = make_dataset(val_x, val_y, batch_size=48)
    keras.utils.set_random_seed(0)
    model = models.compile_model(models.baseline_cnn(SIZE), learning_rate=1e-3)
    out_dir = tmp_path_factory.mktemp("train_run")
    history = model.fit(train_ds, validation_data=val_ds, epochs=EPOCHS, verbose=0,
                        callbacks=train.standard_callbacks(train_ds, out_dir, patience=EPOCHS))
    return model, history, val_ds, val_y, out_dir


def test_learns_a_separable_problem_and_restores_the_best_epoch(trained):
    model, history, val_ds, val_y, _ = trained
    best = max(history.history["val_auc"])
    assert best > 0.7
    probabilities = train.predict_probabilities(model, val_ds)
    assert probabilities.shape == (len(val_y),)
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    assert probabilities[val_y == 1].mean() > probabilities[val_y == 0].mean()
    assert model.evaluate(val_ds, verbose=0, return_dict=True)["auc"] == pytest.approx(best, abs=0.02)


def test_history_csv_has_one_row_per_epoch(trained):
    _, history, _, _, out_dir = trained
    on_disk = pd.read_csv(out_dir / train.HISTORY_FILE)
    assert len(on_disk) == EPOCHS == len(history.history["loss"])
    assert {"loss", "auc", "val_loss", "val_auc"} <= set(on_disk.columns)


def test_standard_callbacks_leave_precise_batchnorm_out_without_a_dataset(tmp_path):
    kinds = [type(callback).__name__ for callback in train.standard_callbacks(None, tmp_path, patience=2)]
    assert kinds == ["EarlyStopping", "CSVLogger"]
    x, y = separable_images(8, seed=5)
    kinds = [type(callback).__name__ for callback in train.standard_callbacks(make_dataset(x, y), None, patience=2)]
    assert kinds == ["PreciseBatchNorm", "EarlyStopping"]


def test_precise_batchnorm_sets_the_statistics_of_the_sample():
    """Before validation, each trainable BatchNorm layer holds the mean and variance of the training sample."""
    images, labels = separable_images(64, seed=6)
    inputs = keras.Input((SIZE, SIZE, 3))
    norm = keras.layers.BatchNormalization(momentum=0.99)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(norm(inputs))))
    callback = train.PreciseBatchNorm(make_dataset(images, labels, batch_size=16), max_images=48)
    callback.set_model(model)
    assert np.allclose(norm.moving_mean.numpy(), 0)
    callback.on_test_begin()
    sample = images[:48].astype("float32")
    np.testing.assert_allclose(norm.moving_mean.numpy(), sample.mean(axis=(0, 1, 2)), rtol=1e-4)
    np.testing.assert_allclose(norm.moving_variance.numpy(), sample.var(axis=(0, 1, 2)), rtol=1e-3)
    assert norm.momentum == 0.99  # put back
    norm.trainable = False  # frozen layers (fine-tuning) are left alone
    before = norm.moving_mean.numpy().copy()
    callback.images = callback.images + 50.0
    callback.on_test_begin()
    np.testing.assert_array_equal(norm.moving_mean.numpy(), before)


def test_early_stopping_stops_when_nothing_improves():
    x, y = separable_images(32, seed=2)
    ds = make_dataset(x, y, batch_size=32)
    model = models.compile_model(models.baseline_cnn(SIZE), learning_rate=0.0)
    history = model.fit(ds, validation_data=ds, epochs=6, verbose=0,
                        callbacks=train.standard_callbacks(None, None, patience=1))
    assert len(history.history["loss"]) < 6  # nothing can improve with a zero learning rate


def test_balanced_class_weights_match_sklearn():
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.array([0] * 70 + [1] * 20 + [2] * 10)
    expected = compute_class_weight("balanced", classes=np.array([0, 1, 2]), y=labels)
    weights = train.balanced_class_weights(labels)
    assert set(weights) == {0, 1, 2}
    np.testing.assert_allclose([weights[c] for c in range(3)], expected)
    assert sum(weights[c] * np.sum(labels == c) for c in range(3)) == pytest.approx(len(labels))
    with pytest.raises(ValueError, match="empty"):
        train.balanced_class_weights([])


def test_set_seeds_makes_numpy_repeatable():
    train.set_seeds(5)
    first = np.random.rand(3)
    train.set_seeds(5)
    np.testing.assert_array_equal(np.random.rand(3), first)


def test_predict_probabilities_in_data_order_and_multiclass():
    model = models.baseline_cnn(SIZE, num_classes=3)
    x, y = separable_images(10, seed=4)
    probabilities = train.predict_probabilities(model, x)
    assert probabilities.shape == (10, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    from_dataset = train.predict_probabilities(model, make_dataset(x, y, batch_size=3))
    np.testing.assert_allclose(from_dataset, probabilities, atol=1e-5)


def test_images_only_drops_the_labels():
    x, y = separable_images(6, seed=7)
    dataset = make_dataset(x, y, batch_size=3)
    images = train.images_only(dataset)
    assert not isinstance(images.element_spec, tuple)
    assert train.images_only(images) is images


def test_timers_record_every_epoch_and_the_steady_steps():
    images, labels = separable_images(96, seed=3)
    model = models.compile_model(models.baseline_cnn(SIZE))
    epochs, steps = train.EpochTimer(), train.StepTimer(skip=2)
    model.fit(images.astype("float32"), labels.astype("float32").reshape(-1, 1), batch_size=8, epochs=2, verbose=0,
              callbacks=[epochs, steps])
    assert len(epochs.seconds) == 2 and all(seconds > 0 for seconds in epochs.seconds)
    assert len(steps.intervals) == 2 * (96 // 8 - 3)  # 12 steps: 11 intervals, the first 2 skipped
    assert all(0.0 < seconds < 60.0 for seconds in steps.intervals)


def test_plot_history(trained):
    from bclib.plots.training import plot_history

    _, history, _, _, _ = trained
    figure = plot_history(history)
    assert len(figure.axes) == 2
    assert {line.get_label() for line in figure.axes[1].lines} >= {"train", "validation"}
    with pytest.raises(ValueError, match="none of"):
        plot_history(history, metrics=("precision",))
    with pytest.raises(ValueError, match="empty"):
        plot_history(pd.DataFrame())


def test_milliseconds_per_patch_warms_up_then_lets_the_networks_take_turns():
    calls = []

    class Network:
        def __init__(self, name: str):
            self.name = name

        def predict(self, images, batch_size, verbose):
            calls.append((self.name, len(images), batch_size))

    times = train.milliseconds_per_patch({"a": (Network("a"), np.ones((6, 2))), "b": (Network("b"), np.ones((4, 2)))},
                                            batch_size=2, repeats=3)
    assert list(times) == ["a", "b"] and all(value >= 0 for value in times.values())
    assert [name for name, _, _ in calls] == ["a", "b"] + ["a", "b"] * 3  # one warm-up each, then turns
    assert {(name, size) for name, size, _ in calls} == {("a", 6), ("b", 4)} and {b for _, _, b in calls} == {2}
    network = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert 0 < train.milliseconds_per_patch({"real": (network, np.ones((8, 4), "float32"))}, batch_size=4)["real"]
    with pytest.raises(ValueError, match="repeats"):
        train.milliseconds_per_patch({"real": (network, np.ones((8, 4), "float32"))}, batch_size=4, repeats=0)
