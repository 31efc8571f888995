"""The prediction app's HTML views: result cards, tables and banners, filled from ``template.html``.

The same HTML serves the static view (a papermill run and its HTML report) and the live app.
For education and research, not for diagnosis: every view carries the disclaimer (the live app
shows it once, in its header).
"""
from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from bclib import DISCLAIMER
from bclib.app.catalog import NO_MODEL_MESSAGE, ModelChoice, best_model, sort_best_first
from bclib.app.predict import Prediction, Predictor, validation_auc
from bclib.evaluation.modelcard import imagenet_missing, weights_description
from bclib.app.templates import render
from bclib.display import banner_html
from bclib.evaluation.explain import grad_cam, overlay

#: Pixels of the images shown in a result card.
DISPLAY_SIZE = 160
GRADCAM_ALPHA = 0.45
POSITIVE_COLOUR = "#c0392b"
OTHER_COLOUR = "#2e86c1"

#: What the static view accepts as its model: the models of a run (the best is used), a path, a loaded predictor.
ModelSource = Sequence[ModelChoice] | str | os.PathLike | Predictor | None


def models_table_html(models: Sequence[ModelChoice]) -> str:
    """The models on offer, best first, with validation AUC, threshold and the weights they started from."""
    if not models:
        return banner_html(NO_MODEL_MESSAGE, "error")
    rows = []
    for rank, choice in enumerate(sort_best_first(models)):
        weights_piece = "models-weights-missing" if imagenet_missing(choice.card) else "models-weights"
        rows.append(render(
            "models-row",
            mark="★ default" if rank == 0 else "",
            notebook=html.escape(choice.path.parent.name),
            model=html.escape(str(choice.card.get("model_name", ""))),
            val_auc=f"{choice.val_auc:.3f}" if choice.val_auc is not None else "n/a",
            threshold=f"{float(choice.card['threshold']['value']):.2f}",
            weights=render(weights_piece, text=html.escape(weights_description(choice.card))),
        ))
    return render("models-table", rows="".join(rows))


def image_data_uri(image: np.ndarray) -> str:
    """A PNG data URI of an RGB ``uint8`` image (shown, never written to disk)."""
    picture = Image.fromarray(image)
    if max(picture.size) > 2 * DISPLAY_SIZE:
        picture.thumbnail((2 * DISPLAY_SIZE, 2 * DISPLAY_SIZE))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def gradcam_overlays(predictor: Predictor, predictions: Sequence[Prediction]) -> list[tuple[np.ndarray | None, str | None]]:
    """``(overlay, message)`` per prediction: a Grad-CAM overlay, or why there is none."""
    usable = [i for i, p in enumerate(predictions) if p.ok and p.model_input is not None]
    results: list[tuple[np.ndarray | None, str | None]] = [(None, None)] * len(predictions)
    if not usable:
        return results
    batch = np.stack([predictions[i].model_input for i in usable]).astype(np.float32)
    # binary models: explain the disease class (label 0 for BreastMNIST); others: the predicted class
    class_index = predictor.positive_label if len(predictor.class_names) == 2 else None
    try:
        heatmaps = grad_cam(predictor.model, batch, class_index=class_index)
    except Exception as error:  # a model Grad-CAM cannot explain must not break the prediction
        return [(None, f"Grad-CAM failed for this model: {error}")] * len(predictions)
    for heatmap, i in zip(heatmaps, usable):
        results[i] = (overlay(predictions[i].model_input, heatmap, GRADCAM_ALPHA), None)
    return results


def disclaimer_html() -> str:
    return banner_html(f"{DISCLAIMER} A model output is not a pathologist's reading.", "info")


def model_banner_html(predictor: Predictor, threshold: float) -> str:
    """Model name, the weights it started from, threshold, validation AUC; a warning when ImageNet weights were missing."""
    val_auc = validation_auc(predictor.card)
    banner = render(
        "model",
        name=html.escape(predictor.model_name),
        weights=html.escape(weights_description(predictor.card)),
        threshold=f"{threshold:.2f}",
        val_auc=f"{val_auc:.3f}" if val_auc is not None else "n/a",
        path=html.escape(str(predictor.path or "")),
    )
    if imagenet_missing(predictor.card):
        banner += banner_html(
            "This model was trained from random weights because the pretrained weights it asked for were "
            "unavailable: expect weaker predictions than from a pretrained model.", "warning",
        )
    return banner


def _display_name(prediction: Prediction) -> str:
    return html.escape(Path(prediction.source).name or prediction.source)


def _colour(class_name: str, positive_name: str) -> str:
    return POSITIVE_COLOUR if class_name == positive_name else OTHER_COLOUR


def _picture_html(image: np.ndarray, css_class: str, caption: str) -> str:
    return render("picture", css_class=css_class, caption=caption, source=image_data_uri(image), width=DISPLAY_SIZE)


def result_html(
    prediction: Prediction, predictor: Predictor, overlay_image: np.ndarray | None = None, gradcam_message: str | None = None
) -> str:
    """One result card: image, Grad-CAM overlay, a bar per class, decision at the threshold (or the error)."""
    if not prediction.ok:
        return render("result-error", name=_display_name(prediction), error=html.escape(prediction.error or ""))
    pictures = ""
    shown = prediction.model_input if prediction.model_input is not None else prediction.image
    if shown is not None:
        pictures += _picture_html(shown, "bclib-input", "as the model sees it")
    if overlay_image is not None:
        pictures += _picture_html(overlay_image, "bclib-heatmap", "Grad-CAM: where the evidence was")
    elif gradcam_message:
        pictures += render("gradcam-missing", width=DISPLAY_SIZE, message=html.escape(gradcam_message))
    positive_name = predictor.class_names[predictor.positive_label]
    probabilities = "".join(
        render("probability", name=html.escape(name), probability=f"{probability:.6f}",
               percent=f"{100 * probability:.1f}", colour=_colour(name, positive_name))
        for name, probability in prediction.probabilities.items()
    )
    binary = len(predictor.class_names) == 2
    rule = f"P({positive_name}) ≥ {prediction.threshold:.2f}" if binary else "the most probable class"
    return render(
        "result", name=_display_name(prediction), pictures=pictures, probabilities=probabilities,
        rule=html.escape(rule), colour=_colour(prediction.decision or "", positive_name),
        decision=html.escape(prediction.decision or ""),
    )


def results_table_html(predictions: Sequence[Prediction], class_names: Sequence[str]) -> str:
    """A compact table of several results: one row per image, a column per class."""
    header = "".join(render("table-header", name=html.escape(name)) for name in class_names)
    rows = []
    for prediction in predictions:
        if prediction.ok:
            cells = "".join(
                render("table-cell", value=f"{prediction.probabilities.get(name, float('nan')):.3f}") for name in class_names
            )
            rows.append(render("table-row", name=_display_name(prediction), cells=cells,
                               decision=html.escape(prediction.decision or "")))
        else:
            rows.append(render("table-error-row", name=_display_name(prediction), span=len(class_names) + 1,
                               error=html.escape(prediction.error or "")))
    return render("table", header=header, rows="".join(rows))


def view_html(
    predictor: Predictor,
    predictions: Sequence[Prediction],
    threshold: float | None = None,
    overlays: Sequence[tuple[np.ndarray | None, str | None]] | None = None,
    with_disclaimer: bool = True,
) -> str:
    """The whole view: disclaimer, model banner, a table when several images, one card per image."""
    threshold = predictor.threshold if threshold is None else float(threshold)
    overlays = overlays if overlays is not None else gradcam_overlays(predictor, predictions)
    parts = [disclaimer_html()] if with_disclaimer else []
    parts.append(model_banner_html(predictor, threshold))
    if len(predictions) > 1:
        parts.append(results_table_html(predictions, predictor.class_names))
    for prediction, (overlay_image, message) in zip(predictions, overlays):
        parts.append(result_html(prediction, predictor, overlay_image, message))
    return render("view", content="".join(parts))


def _predictor_for(models: ModelSource) -> Predictor | None:
    if isinstance(models, Predictor):
        return models
    if isinstance(models, (str, os.PathLike)):
        return Predictor.load(models)
    choice = best_model(models or [])
    return Predictor.load(choice.path) if choice else None


def static_html(models: ModelSource, images: Sequence[str | os.PathLike], threshold: float | None = None) -> str:
    """The static view's HTML for image files, with the best model (or the one given)."""
    predictor = _predictor_for(models)
    if predictor is None:
        return disclaimer_html() + banner_html(NO_MODEL_MESSAGE, "error")
    if not images:
        return (
            disclaimer_html() + model_banner_html(predictor, predictor.threshold)
            + banner_html("No images to show: set images in the parameters cell or point data_dir at a dataset.", "note")
        )
    chosen = predictor.threshold if threshold is None else float(threshold)
    predictions = predictor.predict_named([(str(path), str(path)) for path in images], chosen)
    return view_html(predictor, predictions, chosen)


__all__ = [
    "disclaimer_html",
    "gradcam_overlays",
    "image_data_uri",
    "model_banner_html",
    "models_table_html",
    "result_html",
    "results_table_html",
    "static_html",
    "view_html",
]
