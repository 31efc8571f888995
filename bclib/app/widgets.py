"""The notebook-08 app: upload or pick a patch, see the model's probabilities, decision and Grad-CAM.

Two faces over the same views (:mod:`bclib.app.views`): :func:`show_static` displays plain HTML, so a
papermill run's HTML report shows real predictions; :class:`PredictApp` is the ipywidgets app.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import ipywidgets
import numpy as np
from IPython.display import display

from bclib.app.catalog import NO_MODEL_MESSAGE, ModelChoice, SampleSet, sort_best_first
from bclib.app.predict import Prediction, Predictor
from bclib.app.views import (
    ModelSource, StaticView, details_html, disclaimer_html, gradcam_overlays, models_table_html, name_html,
    pictures_html, result_html, static_view, summary_html,
)
from bclib.data.imageio import IMAGE_SUFFIXES
from bclib.display import banner_html
from bclib.evaluation.explain import EAGER_CALLS
from bclib.evaluation.findings import _plural
from bclib.evaluation.modelcard import ModelLoadError


def show_models(models: Sequence[ModelChoice]) -> None:
    """Display :func:`models_table_html` (a notebook output; one line per model where HTML cannot render)."""
    text = "\n".join(choice.label for choice in sort_best_first(models)) or NO_MODEL_MESSAGE
    display({"text/html": models_table_html(models), "text/plain": text}, raw=True)


#: What a view that cannot render widgets shows instead of the app.
TEXT_FALLBACK = ("The prediction app (upload, sample picker, model selector, threshold slider) appears here in "
                 "JupyterLab or Voila, with a running kernel behind it.")


def show_static(models: ModelSource, images: Sequence[str | os.PathLike], threshold: float | None = None,
                truths: Sequence[str | None] | None = None) -> StaticView:
    """Display the static view for image files (what a papermill run and its HTML report show) and return it."""
    view = static_view(models, images, threshold, truths)
    display({"text/html": view.html, "text/plain": view.text}, raw=True)
    return view


def shown_once(html: str) -> ipywidgets.HTML:
    """An HTML widget the browser draws from ``html`` while the kernel's copy of it is empty.

    The browser receives ``html`` when the widget opens; the kernel's value is then emptied without a
    message to the browser (a property lock, as ipywidgets does for values that came from the browser).
    """
    widget = ipywidgets.HTML(html)
    with widget._lock_property(value=""):
        widget.value = ""
    return widget


def _close_all(widget: ipywidgets.Widget) -> None:
    """Close ``widget`` and the widgets inside it, so the browser drops their models too."""
    for child in getattr(widget, "children", ()):
        _close_all(child)
    widget.close()


def warm_up(predictor: Predictor, explain: bool = True) -> Predictor:
    """``predictor`` after predicting (and explaining) a blank patch until the model and Grad-CAM are
    compiled, so an upload does not pay for it; a model that fails here shows its error on its first upload."""
    size = predictor.trained_on.patch_size
    blank = np.full((size, size, 3), 255, np.uint8)
    try:
        for _ in range(EAGER_CALLS + 1):  # Grad-CAM compiles on the call after its eager ones
            predictions = predictor.predict_images([blank])
            if explain:
                gradcam_overlays(predictor, predictions)
    except Exception:  # the upload will say what is wrong, in the page
        pass
    return predictor


#: The frame of one result card in the live app (the static view's card has the same in its HTML).
CARD_LAYOUT = dict(border="1px solid #ddd", padding="8px 12px", margin="8px 0", max_width="760px")


class PredictApp:
    """The interactive prediction app: FileUpload, sample picker, model selector, threshold slider.

    ``handle_upload(value)`` is the FileUpload handler (callable directly with upload-like dicts). Nothing
    image-like is kept in the kernel once a result is drawn: uploads are decoded in memory, the FileUpload
    value is emptied right after, each result's pictures go to the browser in a widget whose kernel copy is
    emptied (:func:`shown_once`), and the decoded images are dropped; a new threshold redraws only the text.
    The browser holds the pictures on show until they are replaced, :meth:`clear` is called or the page closes.
    Each model is compiled when it is loaded (:func:`warm_up`), not on its first upload. ``explain=False``
    draws no Grad-CAM.
    """

    def __init__(
        self,
        models: Sequence[ModelChoice],
        samples: SampleSet | Sequence[str | os.PathLike] = (),
        threshold: float | None = None,
        explain: bool = True,
    ):
        self.models = sort_best_first(models)
        self.explain = explain
        self.samples = samples if isinstance(samples, SampleSet) else SampleSet([Path(p) for p in samples])
        self._predictors: dict[Path, Predictor] = {}
        self.predictions: list[Prediction] = []
        self._truths: list[str | None] = []
        self._files: list[str | None] = []  # each result's file on disk (a sample), None for an upload
        self._details: list[ipywidgets.HTML | None] = []
        self.predictor: Predictor | None = None

        label_style = {"description_width": "70px"}
        self.header = ipywidgets.HTML(disclaimer_html())
        self.model_selector = ipywidgets.Dropdown(
            options=[(choice.label, index) for index, choice in enumerate(self.models)],
            value=0 if self.models else None, description="Model", layout=ipywidgets.Layout(width="95%"),
            style=label_style,
        )
        self.threshold_slider = ipywidgets.FloatSlider(
            value=0.5, min=0.0, max=1.0, step=0.01, description="Threshold", readout_format=".2f",
            continuous_update=False, style=label_style, layout=ipywidgets.Layout(width="420px"),
        )
        self.upload = ipywidgets.FileUpload(
            accept=",".join(sorted(IMAGE_SUFFIXES)), multiple=True, description="Upload images", button_style="primary",
        )
        self.sample_picker = ipywidgets.Dropdown(
            options=[(path.name, str(path)) for path in self.samples.paths], description="Sample",
            style=label_style, layout=ipywidgets.Layout(width="420px"),
        )
        self.sample_button = ipywidgets.Button(description="Predict sample", disabled=not self.samples.paths)
        self.status = ipywidgets.HTML("")
        self.summary = ipywidgets.HTML("")
        self.output = ipywidgets.VBox([self.summary])
        sample_note = ipywidgets.HTML(banner_html(self.samples.note, "note") if self.samples.note else "")
        self.widget = ipywidgets.VBox([
            self.header, self.model_selector, self.threshold_slider, ipywidgets.HBox([self.upload]),
            ipywidgets.HBox([self.sample_picker, self.sample_button]), sample_note, self.status, self.output,
        ])

        self.upload.observe(self._on_upload, names="value")
        self.sample_button.on_click(lambda _: self.predict_sample(self.sample_picker.value))
        self.threshold_slider.observe(self._on_threshold, names="value")
        self.model_selector.observe(lambda change: self._select_model(change["new"]), names="value")
        if self.models:
            self._select_model(0, threshold)
        else:
            self.upload.disabled = self.sample_button.disabled = True
            self.status.value = banner_html(NO_MODEL_MESSAGE, "error")

    # -- model and threshold --------------------------------------------------------------
    def _select_model(self, index: int, threshold: float | None = None) -> None:
        choice = self.models[index]
        try:
            if choice.path not in self._predictors:
                self._predictors[choice.path] = warm_up(Predictor.load(choice.path), self.explain)
            self.predictor = self._predictors[choice.path]
        except ModelLoadError as error:
            self.predictor = None
            self.status.value = banner_html(str(error), "error")
            return
        self.status.value = ""
        start = self.predictor.threshold if threshold is None else float(threshold)
        with self.threshold_slider.hold_trait_notifications():
            self.threshold_slider.value = min(max(start, 0.0), 1.0)
        self._predict_shown_again()

    def _on_threshold(self, change: Mapping[str, Any]) -> None:
        if self.predictor is not None and self.predictions:
            self.predictor.rethreshold(self.predictions, float(change["new"]))
            self._draw_text()

    # -- inputs ---------------------------------------------------------------------------
    def _on_upload(self, change: Mapping[str, Any]) -> None:
        if not change["new"]:
            return
        try:
            self.handle_upload(change["new"])
        finally:
            self.upload.value = ()  # never keep uploaded bytes in widget state

    def handle_upload(self, value: Sequence[Mapping[str, Any]]) -> list[Prediction]:
        """Predict uploaded files (``FileUpload.value``: dicts with name, type, size, content, last_modified)."""
        return self.predict_named([(str(item.get("name") or "upload"), bytes(item.get("content") or b"")) for item in value])

    def predict_sample(self, path: str | os.PathLike | None) -> list[Prediction]:
        """Predict the sample image file at ``path`` (the picker's value)."""
        if not path:
            return []
        return self.predict_named([(Path(path).name, str(path))], [self.samples.truth(path)])

    def predict_named(self, named: Sequence[tuple[str, Any]],
                      truths: Sequence[str | None] | None = None) -> list[Prediction]:
        """Decode in memory, predict, explain and draw; never raises (errors are shown per file).
        ``truths``: each image's known class (a sample's), or None."""
        if self.predictor is None:
            self.status.value = banner_html(NO_MODEL_MESSAGE, "error")
            return []
        self.status.value = banner_html("Predicting…", "note")
        try:
            predictions = self.predictor.predict_named(named, self.threshold_slider.value)
            self._files = [str(source) if isinstance(source, (str, os.PathLike)) else None for _, source in named]
            self._draw(predictions, list(truths) if truths is not None else [None] * len(predictions))
        except Exception as error:  # the UI stays alive whatever happens
            self.status.value = banner_html(f"Prediction failed: {error}", "error")
            return []
        failed = sum(not prediction.ok for prediction in self.predictions)
        self.status.value = (
            banner_html(f"{failed} of {_plural(len(self.predictions), 'file')} could not be predicted.", "error")
            if failed else ""
        )
        return self.predictions

    def _predict_shown_again(self) -> None:
        """Predict the samples on show with the model now selected; uploads, not kept, are dropped."""
        again = [(file, truth) for file, truth in zip(self._files, self._truths) if file is not None]
        dropped = len(self.predictions) - len(again)
        if again:
            self.predict_named([(Path(file).name, file) for file, _ in again], [truth for _, truth in again])
        else:
            self.clear()
        if dropped:
            self.status.value += banner_html(f"{_plural(dropped, 'uploaded image')} not kept: upload "
                                             f"{'it' if dropped == 1 else 'them'} again to see this model's answer.",
                                             "note")

    # -- drawing --------------------------------------------------------------------------
    def _draw(self, predictions: list[Prediction], truths: list[str | None]) -> None:
        """One card per result (pictures sent once, then dropped from the kernel) under the summary."""
        overlays = (gradcam_overlays(self.predictor, predictions) if self.explain
                    else [(None, None)] * len(predictions))
        cards, details = [], []
        for prediction, (overlay_image, message), truth in zip(predictions, overlays, truths):
            if not prediction.ok:
                cards.append(ipywidgets.HTML(result_html(prediction, self.predictor)))
                details.append(None)
                continue
            text = ipywidgets.HTML(details_html(prediction, self.predictor, truth), layout={"flex": "1 1 260px"})
            pictures = shown_once(pictures_html(prediction, self.predictor, overlay_image, message))
            card = ipywidgets.VBox([ipywidgets.HTML(name_html(prediction)), ipywidgets.HBox([pictures, text])],
                                   layout=CARD_LAYOUT)
            cards.append(card.add_class("bclib-result"))
            details.append(text)
            prediction.forget_pixels()
        del overlays
        self._drop_cards()
        self.predictions, self._truths, self._details = predictions, truths, details
        self._draw_text()
        self.output.children = [self.summary, *cards]

    def _draw_text(self) -> None:
        """The summary and every card's text again (a new threshold): no picture is sent."""
        if self.predictor is None:
            return
        self.summary.value = summary_html(self.predictor, self.predictions, self.threshold_slider.value, self._truths)
        for prediction, truth, text in zip(self.predictions, self._truths, self._details):
            if text is not None:
                text.value = details_html(prediction, self.predictor, truth)

    def _drop_cards(self) -> None:
        for card in self.output.children[1:]:
            _close_all(card)
        self.output.children = [self.summary]

    def clear(self) -> None:
        """Forget every result (predictions and the cards on show, in the kernel and the browser)."""
        self._drop_cards()
        self.predictions, self._truths, self._files, self._details = [], [], [], []
        self.summary.value = ""

    def _ipython_display_(self) -> None:
        """Display the widget, with a sentence instead of its ``VBox(...)`` repr where widgets cannot render."""
        display({**self.widget._repr_mimebundle_(), "text/plain": TEXT_FALLBACK}, raw=True)
