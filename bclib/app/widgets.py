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
    ModelSource, StaticView, disclaimer_html, gradcam_overlays, models_table_html, static_view, view_html,
)
from bclib.data.imageio import IMAGE_SUFFIXES
from bclib.display import banner_html
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


class PredictApp:
    """The interactive prediction app: FileUpload, sample picker, model selector, threshold slider.

    ``handle_upload(value)`` is the FileUpload handler (callable directly with upload-like dicts);
    results are rendered into ``self.output`` (an HTML widget) and kept only in memory: uploaded bytes
    are decoded in memory and the FileUpload value is cleared right after, so no image stays in widget state.
    """

    def __init__(
        self,
        models: Sequence[ModelChoice],
        samples: SampleSet | Sequence[str | os.PathLike] = (),
        threshold: float | None = None,
    ):
        self.models = sort_best_first(models)
        self.samples = samples if isinstance(samples, SampleSet) else SampleSet([Path(p) for p in samples])
        self._predictors: dict[Path, Predictor] = {}
        self.predictions: list[Prediction] = []
        self._overlays: list[tuple[np.ndarray | None, str | None]] = []
        self._truths: list[str | None] = []
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
        self.output = ipywidgets.HTML("")
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
                self._predictors[choice.path] = Predictor.load(choice.path)
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
            self._render()

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
        """Decode in memory, predict, explain and render; never raises (errors are shown per file).
        ``truths``: each image's known class (a sample's), or None."""
        if self.predictor is None:
            self.status.value = banner_html(NO_MODEL_MESSAGE, "error")
            return []
        self.status.value = banner_html("Predicting…", "note")
        try:
            self.predictions = self.predictor.predict_named(named, self.threshold_slider.value)
            self._truths = list(truths) if truths is not None else [None] * len(self.predictions)
            self._overlays = gradcam_overlays(self.predictor, self.predictions)
            self._render()
        except Exception as error:  # the UI stays alive whatever happens
            self.status.value = banner_html(f"Prediction failed: {error}", "error")
            return []
        failed = sum(not prediction.ok for prediction in self.predictions)
        self.status.value = (
            banner_html(f"{failed} of {len(self.predictions)} {'file' if len(self.predictions) == 1 else 'files'} "
                        "could not be predicted.", "error") if failed else ""
        )
        return self.predictions

    def _predict_shown_again(self) -> None:
        """Predict the images on show with the model now selected."""
        shown = [(prediction.source, prediction.image, truth)
                 for prediction, truth in zip(self.predictions, self._truths) if prediction.image is not None]
        if shown:
            self.predict_named([(source, image) for source, image, _ in shown], [truth for _, _, truth in shown])

    def _render(self) -> None:
        if self.predictor is not None:
            self.output.value = view_html(self.predictor, self.predictions, self.threshold_slider.value, self._overlays,
                                          self._truths, with_disclaimer=False)

    def clear(self) -> None:
        """Forget every image (predictions, overlays and rendered results)."""
        self.predictions, self._overlays, self._truths = [], [], []
        self.output.value = ""

    def _ipython_display_(self) -> None:
        """Display the widget, with a sentence instead of its ``VBox(...)`` repr where widgets cannot render."""
        display({**self.widget._repr_mimebundle_(), "text/plain": TEXT_FALLBACK}, raw=True)
