"""bclib.app.widgets: model discovery, samples, the static view and the upload handler with bad inputs."""
from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from bclib import DISCLAIMER
from bclib.evaluation.modelcard import ModelLoadError
from bclib.app.widgets import PredictApp, find_models, sample_images, static_html
from test_predict import BAD, save_tiny_model, write_bad_files, write_tiny_idc


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A run with two models: the better one by validation AUC is the second notebook's."""
    run = tmp_path_factory.mktemp("reports") / "run-test"
    save_tiny_model(run / "02_baseline_cnn", metrics={"val": {"roc_auc": 0.71}})
    save_tiny_model(
        run / "03_transfer", model_name="tiny_transfer", weights={"requested": "imagenet", "used": "imagenet"},
        threshold={"value": 0.3, "method": "youden", "chosen_on": "val"}, metrics={"val": {"roc_auc": 0.9}},
    )
    (run / "04_no_card").mkdir()
    (run / "04_no_card" / "model.keras").write_bytes(b"not listed: no card")
    return run


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return write_bad_files(tmp_path_factory.mktemp("uploads"))


def upload_value(paths) -> tuple[dict, ...]:
    """What ipywidgets 8 FileUpload.value holds after the browser sent files."""
    return tuple(
        {
            "name": path.name,
            "type": "image/png",
            "size": path.stat().st_size,
            "content": memoryview(path.read_bytes()),
            "last_modified": datetime.datetime.now(datetime.timezone.utc),
        }
        for path in paths
    )


def test_find_models_lists_carded_models_best_first(run_folder):
    models = find_models(run_id=run_folder.name, reports_root=run_folder.parent)
    assert [m.path.parent.name for m in models] == ["03_transfer", "02_baseline_cnn"]
    assert "0.900" in models[0].label and "imagenet" in models[0].label
    assert find_models(reports_root=run_folder.parent)[0].path == models[0].path  # latest run found alone
    assert find_models(run_id="no-such-run", reports_root=run_folder.parent) == []
    with pytest.raises(ModelLoadError):
        find_models(model_path=run_folder / "missing" / "model.keras")


def test_app_starts_with_best_model_and_its_threshold(run_folder):
    app = PredictApp(find_models(run_id=run_folder.name, reports_root=run_folder.parent))
    assert app.predictor.model_name == "tiny_transfer"
    assert app.threshold_slider.value == pytest.approx(0.3)
    assert DISCLAIMER in app.header.value
    app.model_selector.value = 1
    assert app.predictor.model_name == "tiny_cnn" and app.threshold_slider.value == pytest.approx(0.5)
    assert PredictApp(find_models(run_id=run_folder.name, reports_root=run_folder.parent), threshold=0.8).threshold_slider.value == pytest.approx(0.8)


def test_upload_handler_survives_every_bad_input(run_folder, files):
    app = PredictApp(find_models(run_id=run_folder.name, reports_root=run_folder.parent))
    predictions = app.handle_upload(upload_value(files.values()))
    assert len(predictions) == len(files)
    by_name = {p.source: p for p in predictions}
    for kind, path in files.items():
        assert (by_name[path.name].error is not None) == (kind in BAD), kind
    html = app.output.value
    assert html.count('class="bclib-result"') == len(files) - len(BAD)
    assert html.count("bclib-error") == len(BAD)
    assert 'class="bclib-table"' in html  # several uploads give a table
    assert html.count('class="bclib-probability"') == 2 * (len(files) - len(BAD))
    assert "patch &#x27;q&quot; ü 名.png" in html  # odd names are escaped, not injected
    assert "could not be predicted" in app.status.value
    assert DISCLAIMER in html


def test_observer_clears_the_upload_value(run_folder, files):
    app = PredictApp(find_models(run_id=run_folder.name, reports_root=run_folder.parent))
    app.upload.value = upload_value([files["rgb"]])
    assert app.upload.value == ()  # no image bytes stay in widget state
    assert len(app.predictions) == 1 and app.predictions[0].ok
    assert 'data-class="IDC"' in app.output.value


def test_threshold_slider_redecides_without_predicting_again(run_folder, files):
    app = PredictApp(find_models(run_id=run_folder.name, reports_root=run_folder.parent))
    app.handle_upload(upload_value([files["rgb"]]))
    probabilities = dict(app.predictions[0].probabilities)
    app.threshold_slider.value = 0.0
    assert app.predictions[0].decision == "IDC"
    app.threshold_slider.value = 1.0
    assert app.predictions[0].decision == ("IDC" if probabilities["IDC"] >= 1.0 else "non-IDC")
    assert app.predictions[0].probabilities == probabilities
    assert "1.00" in app.output.value


def test_model_change_repredicts_kept_images(run_folder, files):
    app = PredictApp(find_models(run_id=run_folder.name, reports_root=run_folder.parent))
    app.handle_upload(upload_value([files["rgb"], files["grayscale"]]))
    app.model_selector.value = 1
    assert len(app.predictions) == 2 and "random weights" in app.output.value


def test_gradcam_overlay_or_a_clear_fallback(run_folder, files):
    app = PredictApp(find_models(run_id=run_folder.name, reports_root=run_folder.parent))
    app.handle_upload(upload_value([files["rgb"]]))
    try:
        import bclib.evaluation.explain  # noqa: F401
    except ImportError:
        assert "bclib-gradcam-missing" in app.output.value
    else:
        assert 'class="bclib-heatmap"' in app.output.value


def test_app_without_models_stays_usable():
    app = PredictApp([])
    assert app.upload.disabled and "No trained model" in app.status.value
    assert app.handle_upload(()) == []


def test_static_view_and_random_weights_banner(run_folder, files):
    model = run_folder / "02_baseline_cnn" / "model.keras"
    text = static_html(model, [files["rgb"], files["empty"], "/no/such/file.png"])
    assert DISCLAIMER in text and "bclib-random-weights" in text
    assert text.count('class="bclib-result"') == 1 and text.count("bclib-error") == 2
    probabilities = [float(v) for v in __import__("re").findall(r'data-probability="([0-9.]+)"', text)]
    assert len(probabilities) == 2 and abs(sum(probabilities) - 1.0) < 1e-4
    assert "No trained model" in static_html(None, [files["rgb"]])


def test_sample_images_balanced_from_a_dataset(tmp_path):
    write_tiny_idc(tmp_path)
    samples = sample_images(None, dataset="idc", data_dir=tmp_path, n=4)
    assert len(samples.paths) == 4 and all(p.is_file() for p in samples.paths)
    labels = [int(p.name[-5]) for p in samples.paths]
    assert sorted(labels) == [0, 0, 1, 1]
    assert sample_images(None, dataset="idc", data_dir=tmp_path / "absent", n=2).paths == []
    app = PredictApp([], samples=samples)
    assert len(app.sample_picker.options) == 4


def test_sample_picker_predicts(run_folder, files):
    app = PredictApp(find_models(run_id=run_folder.name, reports_root=run_folder.parent), samples=[files["rgb"]])
    app.sample_button.click()
    assert len(app.predictions) == 1 and app.predictions[0].ok


@pytest.mark.realdata
def test_real_idc_samples_are_predicted(real_idc, run_folder):
    samples = sample_images(None, dataset="idc", data_dir=real_idc, n=4)
    assert len(samples.paths) == 4 and samples.note
    assert all(Path(p).resolve().is_relative_to(real_idc.resolve()) for p in samples.paths)
    text = static_html(run_folder / "02_baseline_cnn" / "model.keras", samples.paths)
    assert text.count('class="bclib-result"') == 4 and "bclib-error" not in text
