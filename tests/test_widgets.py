"""bclib.app: model discovery, samples, the static view and the widget app's upload handler with bad inputs."""
from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

import comm
import ipywidgets
import numpy as np
import pytest

from bclib import DISCLAIMER
from bclib.evaluation.modelcard import ModelLoadError
from bclib.app import views
from bclib.app.catalog import SampleSet, find_models, sample_images
from bclib.display import banner_html
from bclib.app.views import models_table_html, render, static_text, static_view
from bclib.app.predict import Prediction, Predictor
from bclib.app.widgets import TEXT_FALLBACK, PredictApp, show_static
from test_predict import BAD, save_tiny_model, write_bad_files, write_tiny_idc

OFFLINE_IMAGENET = {"requested": "imagenet", "used": "random", "note": "no ImageNet weights offline"}


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


@pytest.fixture()
def browser(monkeypatch) -> dict[str, str]:
    """The latest ``value`` the kernel sent to the browser, by widget model id."""
    values: dict[str, str] = {}

    def record(channel, msg_type, data=None, metadata=None, buffers=None, **keys):
        value = ((data or {}).get("state") or {}).get("value")
        if isinstance(value, str):
            values[channel.comm_id] = value

    monkeypatch.setattr(comm.DummyComm, "publish_msg", record)
    return values


def on_screen(app: PredictApp, browser: dict[str, str]) -> str:
    """The HTML of the app's results as the browser shows them (its copy of each value, not the kernel's)."""
    def html_of(widget) -> str:
        if isinstance(widget, ipywidgets.HTML):
            return browser.get(widget.model_id, widget.value)
        return "".join(html_of(child) for child in getattr(widget, "children", ()))
    return html_of(app.output)


IMAGE_PREFIXES = ("data:image", "iVBORw0KGgo", "/9j/")  # a data URI, base64 PNG and JPEG


def image_like(value, where: str = "app") -> list[str]:
    """Where ``value`` (walked through containers and bclib objects) holds image data: pixel arrays, bytes,
    base64 images."""
    if isinstance(value, np.ndarray):
        return [where] if value.ndim >= 3 or (value.dtype == np.uint8 and value.size > 64) else []
    if isinstance(value, (bytes, bytearray, memoryview)):
        return [where] if len(value) > 256 else []
    if isinstance(value, str):
        return [where] if any(prefix in value for prefix in IMAGE_PREFIXES) else []
    if isinstance(value, dict):
        return [hit for key, item in value.items() for hit in image_like(item, f"{where}[{key!r}]")]
    if isinstance(value, (list, tuple, set)):
        return [hit for i, item in enumerate(value) for hit in image_like(item, f"{where}[{i}]")]
    if type(value).__module__.startswith("bclib") and hasattr(value, "__dict__"):
        return [hit for key, item in vars(value).items() for hit in image_like(item, f"{where}.{key}")]
    return []


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
    assert "0.900" in models[0].label and "ImageNet" in models[0].label
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


def test_upload_handler_survives_every_bad_input(run_folder, files, browser):
    app = PredictApp(find_models(run_id=run_folder.name, reports_root=run_folder.parent))
    predictions = app.handle_upload(upload_value(files.values()))
    assert len(predictions) == len(files)
    by_name = {p.source: p for p in predictions}
    for kind, path in files.items():
        assert (by_name[path.name].error is not None) == (kind in BAD), kind
    html = on_screen(app, browser)
    cards = [card for card in app.output.children if "bclib-result" in card._dom_classes]
    assert len(cards) == len(files) - len(BAD) and html.count('class="bclib-pictures"') == len(cards)
    assert html.count("bclib-error") == len(BAD)
    assert 'class="bclib-table"' in html  # several uploads give a table
    assert html.count('class="bclib-probability"') == 2 * (len(files) - len(BAD) - 1)  # the big one is tiled
    assert html.count('class="bclib-tiles"') == 1 and "squeezed to 50 px" in html
    assert "patch &#x27;q&quot; ü 名.png" in html  # odd names are escaped, not injected
    assert "could not be predicted" in app.status.value
    assert (app.header.value + html).count(DISCLAIMER) == 1  # shown once, above the results


def test_observer_clears_the_upload_value(run_folder, files, browser):
    app = PredictApp(find_models(run_id=run_folder.name, reports_root=run_folder.parent))
    app.upload.value = upload_value([files["rgb"]])
    assert app.upload.value == ()  # no image bytes stay in widget state
    assert len(app.predictions) == 1 and app.predictions[0].ok
    assert 'data-class="IDC"' in on_screen(app, browser)


def test_after_an_upload_neither_widget_state_nor_the_app_holds_image_data(run_folder, files, browser):
    app = PredictApp(find_models(run_id=run_folder.name, reports_root=run_folder.parent), samples=[files["rgb"]])
    app.upload.value = upload_value([files["rgb"], files["big"], files["cmyk"]])
    app.sample_button.click()  # a sample, then uploads again: the first cards are closed
    app.upload.value = upload_value([files["rgb"], files["big"], files["cmyk"]])
    state = ipywidgets.Widget.get_manager_state()["state"]
    text = json.dumps(state)
    assert not [prefix for prefix in IMAGE_PREFIXES if prefix in text]
    assert not [model for model in state.values() if any(len(b["data"]) > 256 for b in model.get("buffers", []))]
    assert max(len(value) for model in state.values() for value in model["state"].values()
               if isinstance(value, str)) < 20_000  # text only: no image hides in a long value
    assert app.upload.value == () and image_like(app) == []
    assert all(p.image is None and p.model_input is None for p in app.predictions)
    shown = on_screen(app, browser)  # while the browser shows them: input and Grad-CAM twice, one tile map
    assert shown.count("data:image/png;base64,") == 5 and "bclib-heatmap" in shown and "bclib-tile-map" in shown


def test_threshold_slider_redecides_without_predicting_or_sending_pictures_again(run_folder, files, browser):
    app = PredictApp(find_models(run_id=run_folder.name, reports_root=run_folder.parent))
    app.handle_upload(upload_value([files["rgb"], files["big"]]))
    probabilities = dict(app.predictions[0].probabilities)
    pictures = {key: value for key, value in browser.items() if "bclib-pictures" in value}
    app.threshold_slider.value = 0.0
    assert app.predictions[0].decision == "IDC" and "252 of 252 patches IDC" in on_screen(app, browser)
    app.threshold_slider.value = 1.0
    assert app.predictions[0].decision == ("IDC" if probabilities["IDC"] >= 1.0 else "non-IDC")
    assert app.predictions[0].probabilities == probabilities
    shown = on_screen(app, browser)
    assert "P(IDC) ≥ 1.00" in shown and "0 of 252 patches IDC" in shown and "bclib-heatmap" in shown
    assert {key: value for key, value in browser.items() if "bclib-pictures" in value} == pictures  # none sent again


def test_model_change_repredicts_samples_and_asks_for_uploads_again(run_folder, files, browser):
    app = PredictApp(find_models(run_id=run_folder.name, reports_root=run_folder.parent))
    app.handle_upload(upload_value([files["rgb"], files["grayscale"]]))
    app.model_selector.value = 1
    assert app.predictions == [] and "2 uploaded images not kept: upload them again" in app.status.value
    app.predict_named([("rgb.png", str(files["rgb"]))])
    app.model_selector.value = 0
    assert len(app.predictions) == 1 and "trained from scratch" not in on_screen(app, browser)
    app.model_selector.value = 1
    assert "trained from scratch" in on_screen(app, browser)
    assert "bclib-warning" not in on_screen(app, browser)  # from scratch by design: nothing failed


def test_gradcam_overlay_or_a_clear_fallback(run_folder, files, monkeypatch, browser):
    app = PredictApp(find_models(run_id=run_folder.name, reports_root=run_folder.parent))
    app.handle_upload(upload_value([files["rgb"]]))
    shown = on_screen(app, browser)
    assert 'class="bclib-heatmap"' in shown and 'class="bclib-gradcam-scale"' in shown
    assert "Grad-CAM for P(IDC)" in shown  # it explains the disease class, whatever the decision

    monkeypatch.setattr(views, "grad_cam", lambda model, images, **kwargs: np.zeros(images.shape[:3], np.float32))
    app.handle_upload(upload_value([files["rgb"]]))
    shown = on_screen(app, browser)
    assert "bclib-heatmap" not in shown and "no region of this image raised P(IDC)" in shown
    view = static_view(run_folder / "02_baseline_cnn" / "model.keras", [files["rgb"]], threshold=0.0)
    assert "for 1 of them (1 called IDC) no region raised it" in static_text(view)

    def unexplainable(*args, **kwargs):
        raise ValueError("no convolution to explain")

    monkeypatch.setattr(views, "grad_cam", unexplainable)
    app.handle_upload(upload_value([files["rgb"]]))
    shown = on_screen(app, browser)
    assert app.predictions[0].ok and "bclib-heatmap" not in shown
    assert "Grad-CAM failed for this model: no convolution to explain" in shown


def test_the_app_compiles_each_model_when_it_loads_and_can_skip_gradcam(run_folder, files, browser):
    from bclib.evaluation import explain

    models = find_models(run_id=run_folder.name, reports_root=run_folder.parent)
    app = PredictApp(models)
    forward = explain._FORWARD_CACHE[app.predictor.model][None]
    assert forward._compiled is not None and app.predictor.model.predict_function is not None  # before any upload
    app.model_selector.value = 1
    assert explain._FORWARD_CACHE[app.predictor.model][None]._compiled is not None
    plain = PredictApp(models, explain=False)
    assert plain.predictor.model not in explain._FORWARD_CACHE
    plain.upload.value = upload_value([files["rgb"]])
    shown = on_screen(plain, browser)
    assert plain.predictions[0].ok and "bclib-input" in shown and "bclib-heatmap" not in shown
    assert "Grad-CAM" not in shown


def test_a_card_with_a_bad_threshold_is_not_offered_and_not_loaded(tmp_path):
    import json

    from bclib.app.catalog import ModelChoice

    run = tmp_path / "reports" / "run-bad"
    model = save_tiny_model(run / "02_baseline_cnn")
    card_path = model.parent / "model_card.json"
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**card, "threshold": {"value": float("nan")}}))
    assert find_models(run_id=run.name, reports_root=run.parent) == []
    with pytest.raises(ModelLoadError, match="'threshold.value' must be a number between 0 and 1, got nan"):
        find_models(model_path=model)
    app = PredictApp([ModelChoice(model, card)])  # a choice listed before the card was damaged
    assert app.predictor is None and "threshold.value" in app.status.value


def test_app_without_models_stays_usable():
    app = PredictApp([])
    assert app.upload.disabled and "No trained model" in app.status.value
    assert app.handle_upload(()) == []


def test_static_view_says_from_scratch_and_warns_only_for_missing_imagenet(run_folder, files, tmp_path):
    model = run_folder / "02_baseline_cnn" / "model.keras"
    text = static_view(model, [files["rgb"], files["empty"], "/no/such/file.png"]).html
    assert DISCLAIMER in text and "trained from scratch" in text and "bclib-warning" not in text
    assert text.count('class="bclib-result"') == 1 and text.count("bclib-error") == 2
    assert "bclib-truth" not in text and "<th>truth</th>" not in text  # no truth known, none shown
    probabilities = [float(v) for v in re.findall(r'data-probability="([0-9.]+)"', text)]
    assert len(probabilities) == 2 and abs(sum(probabilities) - 1.0) < 1e-4
    assert "No trained model" in static_view(None, [files["rgb"]]).html
    assert "no prediction" in static_text(static_view(None, [files["rgb"]]))
    offline = save_tiny_model(tmp_path / "05_mobilenetv2_transfer", model_name="mobilenetv2", weights=OFFLINE_IMAGENET)
    text = static_view(offline, [files["rgb"]]).html
    assert text.count("bclib-warning") == 1 and "ImageNet weights were missing" in text


def test_static_view_puts_each_decision_beside_the_truth(run_folder, files):
    model = run_folder / "02_baseline_cnn" / "model.keras"
    view = static_view(model, [files["rgb"], files["grayscale"]], threshold=0.0, truths=["IDC", "non-IDC"])
    assert [prediction.decision for prediction in view.predictions] == ["IDC", "IDC"]  # threshold 0: all IDC
    assert "<th>truth</th>" in view.html and view.html.count('class="bclib-truth"') == 2
    text = static_text(view)
    assert "of the 2 images whose class is known, 1 is called as labelled and 1 is not" in text
    assert f"{files['grayscale'].name} (truth non-IDC, called IDC)" in text and "notebook 07" in text
    assert "truth=non-IDC" in view.text and "decision=IDC" in view.text  # the text a text-only view shows
    with pytest.raises(ValueError, match="truths"):
        static_view(model, [files["rgb"]], truths=["IDC", "IDC"])


def test_static_view_is_displayed_says_its_controls_need_a_live_session_and_returns_no_blob(run_folder, files,
                                                                                            monkeypatch):
    shown = []
    monkeypatch.setattr("bclib.app.widgets.display", lambda bundle, raw=False: shown.append(bundle))
    view = show_static(run_folder / "02_baseline_cnn" / "model.keras", [files["rgb"], files["big"]])
    (bundle,) = shown
    assert bundle["text/html"] == view.html and views.LIVE_ONLY in view.html
    assert "answers only in a live session" in view.html and "in an HTML report" in view.html
    assert repr(view) == "<StaticView of 2 images with tiny_cnn: displayed above>"  # an Out[...] of it is one line
    assert "Trained on: 50x50 px patches" in view.html and 'class="bclib-tile-map"' in view.html


def test_samples_include_one_the_model_gets_wrong_or_say_none_is(run_folder, tmp_path, monkeypatch):
    data = write_tiny_idc(tmp_path)
    models = find_models(run_id=run_folder.name, reports_root=run_folder.parent)  # tiny_transfer, threshold 0.3
    samples = sample_images(models, dataset="idc", data_dir=data, n=2)
    assert len(samples.paths) == 2
    assert ("1 of them is called wrongly by tiny_transfer at its threshold 0.30 (of the 12 images drawn to pick "
            "the samples from, it calls 6 wrongly)") in samples.note
    view = static_view(models, samples.paths, truths=samples.labels)
    assert [p.decision != t for p, t in zip(view.predictions, samples.labels)] == [True, False]
    assert "1 is called as labelled and 1 is not" in static_text(view)

    candidates = sample_images(None, dataset="idc", data_dir=data, n=12)
    truth = {str(path): label for path, label in zip(candidates.paths, candidates.labels)}
    wrong = {str(candidates.paths[7])}  # not among the first two: it replaces the one of its class

    def right_but_one(self, sources, **kwargs):
        flipped = {"IDC": "non-IDC", "non-IDC": "IDC"}
        return [Prediction(str(s), decision=flipped[truth[str(s)]] if str(s) in wrong else truth[str(s)])
                for s in sources]

    monkeypatch.setattr(Predictor, "predict_sources", right_but_one)
    samples = sample_images(models, dataset="idc", data_dir=data, n=2)
    assert samples.note.endswith("1 of them is called wrongly by tiny_transfer at its threshold 0.30 (of the 12 "
                                 "images drawn to pick the samples from, it calls 1 wrongly)")
    assert str(candidates.paths[7]) in map(str, samples.paths) and sorted(samples.labels) == ["IDC", "non-IDC"]
    wrong.clear()
    samples = sample_images(models, dataset="idc", data_dir=data, n=2)
    assert samples.paths == candidates.paths[:2]
    assert samples.note.endswith("of the 12 images drawn to pick the samples from, tiny_transfer at its threshold "
                                 "0.30 calls every one right, so none shown is wrong")


def test_app_shows_a_sentence_where_widgets_cannot_render(run_folder, monkeypatch):
    shown = []
    monkeypatch.setattr("bclib.app.widgets.display", lambda bundle, raw=False: shown.append((bundle, raw)))
    PredictApp(find_models(run_id=run_folder.name, reports_root=run_folder.parent))._ipython_display_()
    (bundle, raw), = shown
    assert raw and bundle["text/plain"] == TEXT_FALLBACK and "application/vnd.jupyter.widget-view+json" in bundle


def test_models_table_marks_only_missing_imagenet_weights(run_folder, tmp_path):
    models = find_models(run_id=run_folder.name, reports_root=run_folder.parent)
    table = models_table_html(models)
    assert "trained from scratch" in table and "ImageNet weights" in table and "unavailable" not in table
    save_tiny_model(tmp_path / "05_mobilenetv2_transfer", model_name="mobilenetv2", weights=OFFLINE_IMAGENET)
    table = models_table_html(models + find_models(model_path=tmp_path / "05_mobilenetv2_transfer"))
    assert table.count("bclib-weights-missing") == 1 and "ImageNet weights were missing" in table


def test_banners_escape_their_text_and_unknown_pieces_are_refused():
    warning = banner_html("<script>alert(1)</script> & more", "warning")
    assert "<script>" not in warning and "&lt;script&gt;" in warning and 'class="bclib-banner bclib-warning"' in warning
    with pytest.raises(ValueError, match="kind"):
        banner_html("text", "loud")
    with pytest.raises(ValueError, match="no piece"):
        render("no-such-piece")


def test_sample_images_balanced_from_a_dataset(tmp_path):
    write_tiny_idc(tmp_path)
    samples = sample_images(None, dataset="idc", data_dir=tmp_path, n=4)
    assert len(samples.paths) == 4 and all(p.is_file() for p in samples.paths)
    labels = [int(p.name[-5]) for p in samples.paths]
    assert sorted(labels) == [0, 0, 1, 1]
    assert samples.labels == [["non-IDC", "IDC"][label] for label in labels]
    assert samples.truth(samples.paths[0]) == samples.labels[0] and samples.truth("other.png") is None
    assert sample_images(None, dataset="idc", data_dir=tmp_path / "absent", n=2).paths == []
    app = PredictApp([], samples=samples)
    assert len(app.sample_picker.options) == 4


def test_samples_come_from_the_dataset_the_card_names_not_idc(tmp_path):
    from test_predict import tiny_card, write_patch

    root = tmp_path / "slides"
    for label, colour in (("benign", (200, 150, 200)), ("malignant", (150, 60, 140))):
        (root / label).mkdir(parents=True)
        for k in range(6):
            write_patch(root / label / f"{label}-{k}.png", colour=colour)
    card = tiny_card(class_names=["benign", "malignant"],
                     dataset={"name": "folder", "root": str(root), "options": {"classes": ["benign", "malignant"]}},
                     split={"method": "patient", "seed": 0})
    samples = sample_images(card, dataset="idc", n=2)  # the notebook's parameter says idc; the card says folder
    assert len(samples.paths) == 2 and all(path.parent.parent == root for path in samples.paths)
    assert sorted(samples.labels) == ["benign", "malignant"]
    assert [path.parent.name for path in samples.paths] == samples.labels
    card["dataset"]["options"] = {"classes": ["benign", "no-such-class"]}  # scanned with the card's options
    assert sample_images(card, n=2).paths == [] and "no-such-class" in sample_images(card, n=2).note


def test_breastmnist_samples_are_written_as_png_files(tmp_path, monkeypatch):
    import tempfile

    from PIL import Image

    from bclib.data.datasets.breastmnist import CLASS_NAMES

    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", 20), ("val", 6), ("test", 8)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (count, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % 2).reshape(-1, 1)
    (tmp_path / "breastmnist").mkdir()
    np.savez(tmp_path / "breastmnist" / "breastmnist.npz", **arrays)
    card = {"class_names": CLASS_NAMES, "positive_label": 0,
            "dataset": {"name": "breastmnist", "root": str(tmp_path / "breastmnist")},
            "split": {"method": "official", "seed": 0}}
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the PNG copies' folder
    samples = sample_images(card, n=4)
    assert len(samples.paths) == 4 and sorted(samples.labels) == sorted(CLASS_NAMES * 2)
    assert "test split" in samples.note and f"written as PNG files to {samples.paths[0].parent}" in samples.note
    assert samples.paths[0].parent.parent == tmp_path
    for path, label in zip(samples.paths, samples.labels):
        position = int(path.stem.rsplit("-", 1)[1])  # breastmnist-test-00005.png: row 5 of the test images
        assert path.name.startswith("breastmnist-test-") and label == CLASS_NAMES[position % 2]
        np.testing.assert_array_equal(np.asarray(Image.open(path))[..., 0], arrays["test_images"][position])


def test_sample_picker_predicts_and_shows_the_sample_truth(run_folder, files, browser):
    app = PredictApp(find_models(run_id=run_folder.name, reports_root=run_folder.parent), samples=[files["rgb"]])
    app.sample_button.click()
    assert len(app.predictions) == 1 and app.predictions[0].ok and "bclib-truth" not in on_screen(app, browser)
    samples = SampleSet([files["rgb"]], "one sample", ["IDC"])
    app = PredictApp(find_models(run_id=run_folder.name, reports_root=run_folder.parent), samples=samples)
    app.sample_button.click()
    assert "Truth (from the dataset): IDC" in on_screen(app, browser)
    app.model_selector.value = 1  # predicted again with the other model, truth kept
    assert "Truth (from the dataset): IDC" in on_screen(app, browser) and len(app.predictions) == 1


@pytest.mark.realdata
def test_real_idc_samples_are_predicted(real_idc, run_folder):
    samples = sample_images(None, dataset="idc", data_dir=real_idc, n=4)
    assert len(samples.paths) == 4 and samples.note
    assert all(Path(p).resolve().is_relative_to(real_idc.resolve()) for p in samples.paths)
    text = static_view(run_folder / "02_baseline_cnn" / "model.keras", samples.paths, truths=samples.labels).html
    assert text.count('class="bclib-result"') == 4 and "bclib-error" not in text and text.count("bclib-truth") == 4
