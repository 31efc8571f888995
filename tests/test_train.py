"""Training loop: learns a separable problem, class weights, history, best checkpoint restored."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bclib.models import builders as models
from bclib.models import training as train
from bclib.data.pipeline import make_dataset

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SIZE = 16
EPOCHS = 5


def separable_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class 1: dark purple patches; class 0: light pink ones; plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    colours = np.where(labels[:, None] == 1, [[110, 60, 150]], [[230, 170, 200]])
    images = colours[:, None, None, :] + rng.normal(0, 25, (n, SIZE, SIZE, 3))
    return np.clip(images, 0, 255).astype("uint8"), labels


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    train_x, train_y = separable_images(96, seed=0)
    val_x, val_y = separable_images(48, seed=1)
    # Small batches: BatchNorm's moving statistics need a few dozen steps before evaluation
    # (inference mode) predictions spread out; 12 steps x 5 epochs is enough here.
    train_ds = make_dataset(train_x, train_y, batch_size=8, training=True, seed=0)
    val_ds = make_dataset(val_x, val_y, batch_size=48)
    model = models.compile_model(models.build_model("baseline_cnn", input_size=SIZE), learning_rate=1e-3)
    out_dir = tmp_path_factory.mktemp("train_run")
    result = train.fit(model, train_ds, val_ds, epochs=EPOCHS, out_dir=out_dir, patience=EPOCHS, verbose=0)
    return model, result, val_ds, val_y, out_dir


def test_learns_a_separable_problem(trained):
    model, result, val_ds, val_y, _ = trained
    assert result.best_value is not None and result.best_value > 0.7
    probabilities = train.predict_probabilities(model, val_ds)
    assert probabilities.shape == (len(val_y),)
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    assert probabilities[val_y == 1].mean() > probabilities[val_y == 0].mean()


def test_history_has_one_row_per_epoch(trained):
    _, result, _, _, out_dir = trained
    history = result.history
    assert len(history) == result.epochs_run == EPOCHS
    assert list(history["epoch"]) == list(range(1, EPOCHS + 1))
    assert {"loss", "auc", "val_loss", "val_auc", "seconds"} <= set(history.columns)
    assert (history["seconds"] > 0).all() and result.seconds >= history["seconds"].sum() * 0.9
    on_disk = pd.read_csv(out_dir / train.HISTORY_FILE)
    assert len(on_disk) == EPOCHS and list(on_disk.columns) == list(history.columns)
    assert not result.stopped_early


def test_best_epoch_weights_are_restored_and_checkpointed(trained):
    model, result, val_ds, _, _ = trained
    history = result.history
    assert result.best_epoch == int(history.loc[history["val_auc"].idxmax(), "epoch"])
    assert result.best_value == pytest.approx(history["val_auc"].max())
    logs = model.evaluate(val_ds, verbose=0, return_dict=True)
    assert logs["auc"] == pytest.approx(result.best_value, abs=1e-4)
    assert result.checkpoint_path is not None and result.checkpoint_path.is_file()
    fresh = models.build_model("baseline_cnn", input_size=SIZE, seed=99)
    fresh.load_weights(result.checkpoint_path)
    np.testing.assert_allclose(
        train.predict_probabilities(fresh, val_ds), train.predict_probabilities(model, val_ds), atol=1e-6
    )


def test_early_stopping_stops(monkeypatch):
    x, y = separable_images(32, seed=2)
    model = models.compile_model(models.build_model("baseline_cnn", input_size=SIZE), learning_rate=0.0)
    ds = make_dataset(x, y, batch_size=32)
    result = train.fit(model, ds, ds, epochs=6, patience=1, verbose=0)
    assert result.epochs_run < 6 and result.stopped_early  # nothing can improve with a zero learning rate
    assert len(result.history) == result.epochs_run
    assert result.checkpoint_path is None


def test_balanced_class_weights_match_sklearn():
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.array([0] * 70 + [1] * 20 + [2] * 10)
    expected = compute_class_weight("balanced", classes=np.array([0, 1, 2]), y=labels)
    weights = train.balanced_class_weights(labels)
    assert set(weights) == {0, 1, 2}
    np.testing.assert_allclose([weights[c] for c in range(3)], expected)
    one_hot = np.eye(3)[labels]
    assert train.balanced_class_weights(one_hot) == weights
    binary = train.balanced_class_weights(np.array([[0.0], [1.0], [1.0], [1.0]]))
    assert binary == {0: 2.0, 1: pytest.approx(2 / 3)}
    with pytest.raises(ValueError, match="empty"):
        train.balanced_class_weights([])


def test_fit_with_class_weights_and_checks():
    x, y = separable_images(24, seed=3)
    ds = make_dataset(x, y, batch_size=24)
    model = models.build_model("baseline_cnn", input_size=SIZE)
    with pytest.raises(ValueError, match="compile"):
        train.fit(model, ds, ds, epochs=1)
    models.compile_model(model)
    with pytest.raises(ValueError, match="validation"):
        train.fit(model, ds, None, epochs=1)
    result = train.fit(model, ds, ds, epochs=1, class_weight={0: 3.0, 1: 1.0}, verbose=0)
    assert result.epochs_run == 1 and result.best_epoch == 1


def test_set_seeds_makes_numpy_repeatable():
    train.set_seeds(5)
    first = np.random.rand(3)
    train.set_seeds(5)
    np.testing.assert_array_equal(np.random.rand(3), first)


def test_predict_probabilities_multiclass_and_arrays():
    model = models.build_model("baseline_cnn", num_classes=3, input_size=SIZE)
    x, _ = separable_images(5, seed=4)
    probabilities = train.predict_probabilities(model, x)
    assert probabilities.shape == (5, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_plot_history(trained):
    from bclib.plots.training import plot_history

    _, result, _, _, _ = trained
    figure = plot_history(result.history, best_epoch=result.best_epoch)
    assert len(figure.axes) == 2
    assert {line.get_label() for line in figure.axes[1].lines} >= {"train", "validation"}
    with pytest.raises(ValueError, match="none of"):
        plot_history(result.history, metrics=("precision",))
    with pytest.raises(ValueError, match="empty"):
        plot_history(pd.DataFrame())


def test_step_timer_records_the_steady_steps_of_every_epoch():
    images, labels = separable_images(96, seed=3)
    model = models.build_model("baseline_cnn", num_classes=2, input_size=SIZE, seed=0)
    models.compile_model(model, learning_rate=1e-3, num_classes=2)
    timer = train.StepTimer(skip=2)
    model.fit(images.astype("float32"), labels.astype("float32"), batch_size=8, epochs=2, verbose=0,
              callbacks=[timer])
    assert len(timer.intervals) == 2 * (96 // 8 - 3)  # 12 steps: 11 intervals, the first 2 skipped
    assert all(0.0 < seconds < 60.0 for seconds in timer.intervals)
