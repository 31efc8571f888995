"""The prediction app's HTML views: result cards, tables and banners, filled from ``template.html``.

``template.html`` holds one ``<template id="...">`` per piece; :func:`render` fills a piece's
``${name}`` placeholders. The same HTML serves the static view (a papermill run and its HTML report)
and the live app. For education and research, not for diagnosis: every view carries the disclaimer
(the live app shows it once, in its header). Grad-CAM explains the positive class's score of a two-class model
(the predicted class's otherwise), whatever the decision.
"""
from __future__ import annotations

import base64
import html
import io
import os
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from string import Template
from typing import Sequence

import numpy as np
from PIL import Image

from bclib import DISCLAIMER
from bclib.app.catalog import NO_MODEL_MESSAGE, ModelChoice, best_model, sort_best_first
from bclib.app.predict import Prediction, Predictor, TileMap, validation_auc
from bclib.display import banner_html
from bclib.evaluation.explain import grad_cam, overlay
from bclib.evaluation.findings import _plural
from bclib.evaluation.modelcard import imagenet_missing, weights_description

#: Pixels of the images shown in a result card.
DISPLAY_SIZE = 160
GRADCAM_ALPHA = 0.45
#: What a result card says instead of an all-blue overlay when no region raised the explained score.
NO_REGION = "Grad-CAM: no region of this image raised {score}"
POSITIVE_COLOUR = "#c0392b"
#: A tile map's colours: the slide maps' (bclib.plots.evaluation.slide_view), background left as it is.
TILE_COLOURMAP = "viridis"
#: What the static view says about the app below it.
LIVE_ONLY = ("This view was computed when the notebook ran. The app below (upload, sample picker, model selector, "
             "threshold slider) answers only in a live session, JupyterLab or Voila with a running kernel; in an "
             "HTML report or a notebook viewer its controls do nothing.")
OTHER_COLOUR = "#2e86c1"

#: What the static view accepts as its model: the models of a run (the best is used) or a model file.
ModelSource = Sequence[ModelChoice] | str | os.PathLike | None

TEMPLATE_FILE = "template.html"
_PIECE = re.compile(r'<template id="([\w-]+)">(.*?)</template>', re.DOTALL)
#: A line break between two tags or placeholders disappears; any other becomes one space.
_BREAK_BETWEEN_TAGS = re.compile(r"(?<=[>}])\s*\n\s*(?=[<$])")
_LINE_BREAK = re.compile(r"\s*\n\s*")


@cache
def pieces() -> dict[str, Template]:
    """Every piece of the template file by its id, with the line breaks of the file removed."""
    text = resources.files(__package__).joinpath(TEMPLATE_FILE).read_text(encoding="utf-8")
    return {name: Template(_LINE_BREAK.sub(" ", _BREAK_BETWEEN_TAGS.sub("", body.strip())))
            for name, body in _PIECE.findall(text)}


def render(piece: str, **values: object) -> str:
    """The piece ``piece`` with its placeholders filled; values go in as given, so escape text first."""
    if piece not in pieces():
        raise ValueError(f"{TEMPLATE_FILE} has no piece {piece!r}; it has {sorted(pieces())}")
    return pieces()[piece].substitute(values)


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
    picture.thumbnail((2 * DISPLAY_SIZE, 2 * DISPLAY_SIZE))  # never enlarges
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def explained_score(predictor: Predictor) -> str:
    """The score Grad-CAM explains: P(disease class) of a two-class model, else the predicted class's."""
    binary = len(predictor.class_names) == 2
    return f"P({predictor.class_names[predictor.positive_label]})" if binary else "the predicted class's score"


def gradcam_overlays(predictor: Predictor, predictions: Sequence[Prediction]) -> list[tuple[np.ndarray | None, str | None]]:
    """``(overlay, message)`` per prediction: a Grad-CAM overlay, or why there is none."""
    usable = [i for i, p in enumerate(predictions) if p.ok and p.model_input is not None and p.tiles is None]
    results: list[tuple[np.ndarray | None, str | None]] = [(None, None)] * len(predictions)
    if not usable:
        return results
    batch = np.stack([predictions[i].model_input for i in usable]).astype(np.float32)
    class_index = predictor.positive_label if len(predictor.class_names) == 2 else None
    try:
        heatmaps = grad_cam(predictor.model, batch, class_index=class_index)
    except Exception as error:  # a model Grad-CAM cannot explain must not break the prediction
        return [(None, f"Grad-CAM failed for this model: {error}")] * len(predictions)
    for heatmap, i in zip(heatmaps, usable):
        results[i] = ((overlay(predictions[i].model_input, heatmap, GRADCAM_ALPHA), None) if heatmap.max() > 0 else
                      (None, NO_REGION.format(score=explained_score(predictor))))
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
    banner += render("model-input", text=html.escape(predictor.trained_on.describe()))
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


def _picture_html(image: np.ndarray, css_class: str, caption: str, scale: str = "") -> str:
    return render("picture", css_class=css_class, caption=caption, source=image_data_uri(image), width=DISPLAY_SIZE,
                  scale=scale)


def tile_map_image(image: np.ndarray, tiles: TileMap) -> np.ndarray:
    """``image`` (at most twice the display size) with each predicted tile coloured by its probability."""
    picture = Image.fromarray(image)
    picture.thumbnail((2 * DISPLAY_SIZE, 2 * DISPLAY_SIZE))
    small = np.asarray(picture)
    cells = Image.fromarray(tiles.probabilities.astype(np.float32)).resize(
        (small.shape[1], small.shape[0]), Image.Resampling.NEAREST, box=(0, 0, image.shape[1] / tiles.tile_size,
                                                                          image.shape[0] / tiles.tile_size))
    cells = np.asarray(cells)
    coloured = overlay(small, np.nan_to_num(cells), GRADCAM_ALPHA + 0.15, colormap=TILE_COLOURMAP)
    return np.where(np.isfinite(cells)[..., None], coloured, small)


def decision_text(prediction: Prediction, predictor: Predictor) -> str:
    """The decision, or for a tiled image how many of its patches reach the threshold."""
    if prediction.tiles is None:
        return prediction.decision or ""
    called = prediction.tiles.called(prediction.threshold)
    positive_name = predictor.class_names[predictor.positive_label]
    return f"{called} of {_plural(prediction.tiles.predicted, 'patch', 'patches')} {positive_name}"


def pictures_html(prediction: Prediction, predictor: Predictor, overlay_image: np.ndarray | None = None,
                  gradcam_message: str | None = None) -> str:
    """A result's pictures: the image as the model sees it and its Grad-CAM, or a large image's tile map."""
    pictures = ""
    score = html.escape(explained_score(predictor))
    if prediction.tiles is not None and prediction.image is not None:
        pictures += _picture_html(tile_map_image(prediction.image, prediction.tiles), "bclib-tile-map",
                                  f"{score} per {prediction.tiles.tile_size} px patch",
                                  render("tile-scale", width=DISPLAY_SIZE, score=score))
    elif (shown := prediction.model_input if prediction.model_input is not None else prediction.image) is not None:
        pictures += _picture_html(shown, "bclib-input", "as the model sees it")
    if overlay_image is not None:
        pictures += _picture_html(overlay_image, "bclib-heatmap", f"Grad-CAM for {score}",
                                  render("gradcam-scale", width=DISPLAY_SIZE))
    elif gradcam_message:
        pictures += render("gradcam-missing", width=DISPLAY_SIZE, message=html.escape(gradcam_message))
    return render("result-pictures", pictures=pictures)


def details_html(prediction: Prediction, predictor: Predictor, truth: str | None = None) -> str:
    """A result's text: cautions, a bar per class (or a large image's patch counts), the decision at the
    threshold and, when known, the truth."""
    positive_name = predictor.class_names[predictor.positive_label]
    cautions = "".join(banner_html(caution, "warning") for caution in prediction.cautions)
    if prediction.tiles is not None:
        grid = prediction.tiles.probabilities
        probabilities = render("tiles", rows=grid.shape[0], columns=grid.shape[1], size=prediction.tiles.tile_size,
                               predicted=prediction.tiles.predicted, patches=grid.size,
                               called=prediction.tiles.called(prediction.threshold),
                               score=html.escape(explained_score(predictor)),
                               highest=f"{np.nanmax(grid):.2f}" if prediction.tiles.predicted else "none")
    else:
        probabilities = "".join(
            render("probability", name=html.escape(name), probability=f"{probability:.6f}",
                   percent=f"{100 * probability:.1f}", colour=_colour(name, positive_name))
            for name, probability in prediction.probabilities.items()
        )
    binary = len(predictor.class_names) == 2
    rule = f"P({positive_name}) ≥ {prediction.threshold:.2f}" if binary else "the most probable class"
    called = prediction.decision or ""
    if prediction.tiles is not None:
        rule = f"per patch, {rule}"
        called = positive_name if prediction.tiles.called(prediction.threshold) else ""
    return render(
        "result-details", cautions=cautions, probabilities=probabilities, rule=html.escape(rule),
        colour=_colour(called, positive_name), decision=html.escape(decision_text(prediction, predictor)),
        truth="" if truth is None else render("truth", truth=html.escape(truth)),
    )


def name_html(prediction: Prediction) -> str:
    return render("result-name", name=_display_name(prediction))


def result_html(
    prediction: Prediction, predictor: Predictor, overlay_image: np.ndarray | None = None,
    gradcam_message: str | None = None, truth: str | None = None,
) -> str:
    """One result card: its name, :func:`pictures_html` and :func:`details_html` (or the error)."""
    if not prediction.ok:
        return render("result-error", name=_display_name(prediction), error=html.escape(prediction.error or ""))
    return render("result", name=name_html(prediction),
                  pictures=pictures_html(prediction, predictor, overlay_image, gradcam_message),
                  details=details_html(prediction, predictor, truth))


def results_table_html(predictions: Sequence[Prediction], predictor: Predictor, truths: Sequence[str | None]) -> str:
    """A compact table of several results: one row per image, a column per class, the decision and, when any
    is known, the truth."""
    with_truth, class_names = any(truths), predictor.class_names
    header = "".join(render("table-header", name=html.escape(f"P({name})")) for name in class_names)
    header += render("table-header", name="decision") + (render("table-header", name="truth") if with_truth else "")
    rows = []
    for prediction, truth in zip(predictions, truths):
        if prediction.ok:
            probabilities = "".join(render("table-cell", value="tiled" if prediction.tiles is not None else
                                           f"{prediction.probabilities.get(name, float('nan')):.3f}")
                                    for name in class_names)
            truth_cell = render("table-cell", value=html.escape(truth or "unknown")) if with_truth else ""
            rows.append(render("table-row", name=_display_name(prediction), probabilities=probabilities,
                               decision=html.escape(decision_text(prediction, predictor)), truth=truth_cell))
        else:
            rows.append(render("table-error-row", name=_display_name(prediction),
                               span=len(class_names) + 1 + with_truth, error=html.escape(prediction.error or "")))
    return render("table", header=header, rows="".join(rows))


def summary_html(predictor: Predictor, predictions: Sequence[Prediction], threshold: float,
                 truths: Sequence[str | None]) -> str:
    """The model banner, and a table when there are several images."""
    table = results_table_html(predictions, predictor, truths) if len(predictions) > 1 else ""
    return model_banner_html(predictor, threshold) + table


def view_html(predictor: Predictor, predictions: Sequence[Prediction], threshold: float,
              overlays: Sequence[tuple[np.ndarray | None, str | None]], truths: Sequence[str | None]) -> str:
    """The static view: disclaimer, what the app below does not do here, :func:`summary_html`, one card per image."""
    parts = [disclaimer_html(), banner_html(LIVE_ONLY, "note"), summary_html(predictor, predictions, threshold, truths)]
    for prediction, (overlay_image, message), truth in zip(predictions, overlays, truths):
        parts.append(result_html(prediction, predictor, overlay_image, message, truth))
    return render("view", content="".join(parts))


def _predictor_for(models: ModelSource) -> Predictor | None:
    if isinstance(models, (str, os.PathLike)):
        return Predictor.load(models)
    choice = best_model(models or [])
    return Predictor.load(choice.path) if choice else None


@dataclass(repr=False)
class StaticView:
    """What the static view showed: the model, one prediction per image, its Grad-CAM and the known truths."""

    predictor: Predictor | None
    predictions: list[Prediction]
    overlays: list[tuple[np.ndarray | None, str | None]]
    truths: list[str | None]
    html: str

    def __repr__(self) -> str:
        model = self.predictor.model_name if self.predictor else "no model"
        return f"<StaticView of {_plural(len(self.predictions), 'image')} with {model}: displayed above>"

    @property
    def text(self) -> str:
        """The view as plain text (one line per image: probabilities, decision, truth), for text-only views."""
        lines = [prediction.to_line() + ("" if truth is None else f"\ttruth={truth}")
                 for prediction, truth in zip(self.predictions, self.truths)]
        return "\n".join([DISCLAIMER, *lines]) if lines else f"{DISCLAIMER} No prediction: see the HTML view."


def static_view(models: ModelSource, images: Sequence[str | os.PathLike], threshold: float | None = None,
                truths: Sequence[str | None] | None = None) -> StaticView:
    """The static view of image files (``truths``: each image's known class, or None), with the best model of
    ``models`` (or the model file given)."""
    predictor = _predictor_for(models)
    if predictor is None:
        return StaticView(None, [], [], [], disclaimer_html() + banner_html(NO_MODEL_MESSAGE, "error"))
    if not images:
        return StaticView(predictor, [], [], [], disclaimer_html() + model_banner_html(predictor, predictor.threshold)
                          + banner_html("No images to show: set images in the parameters cell or point data_dir at a "
                                        "dataset.", "note"))
    truths = list(truths) if truths is not None else [None] * len(images)
    if len(truths) != len(images):
        raise ValueError(f"{len(truths)} truths for {len(images)} images")
    chosen = predictor.threshold if threshold is None else float(threshold)
    predictions = predictor.predict_named([(str(path), str(path)) for path in images], chosen)
    overlays = gradcam_overlays(predictor, predictions)
    return StaticView(predictor, predictions, overlays, truths,
                      view_html(predictor, predictions, chosen, overlays, truths))


def static_text(view: StaticView) -> str:
    """What the static view showed, against the truth where it is known: a sentence for ``conclude``."""
    if view.predictor is None or not view.predictions:
        return "no prediction to look at: the view above says what is missing."
    predictor = view.predictor
    done = [(p, t, o) for p, t, o in zip(view.predictions, view.truths, view.overlays) if p.ok]
    text = (f"{predictor.model_name} ({weights_description(predictor.card)}) predicted {len(done)} of "
            f"{_plural(len(view.predictions), 'image')} at threshold {done[0][0].threshold:.2f}" if done else
            f"{predictor.model_name} could not predict any of the {len(view.predictions)} images")
    known = [(p, t) for p, t, _ in done if t is not None]
    if known:
        wrong = [f"{Path(p.source).name} (truth {t}, called {p.decision})" for p, t in known if p.decision != t]
        right = len(known) - len(wrong)
        text += (f"; of the {_plural(len(known), 'image')} whose class is known, {right} "
                 f"{'is' if right == 1 else 'are'} called as labelled"
                 + (f" and {len(wrong)} {'is' if len(wrong) == 1 else 'are'} not: " + ", ".join(wrong) if wrong else ""))
    empty = [p.decision for p, _, (_, message) in done if message and message.startswith(NO_REGION.split("{")[0])]
    called = ", ".join(f"{empty.count(name)} called {name}" for name in dict.fromkeys(empty))
    text += (f". Grad-CAM explains {explained_score(predictor)} for every image, whatever the decision"
             + (f"; for {len(empty)} of them ({called}) no region raised it, so no map is drawn" if empty else "")
             + f". {_plural(len(view.predictions), 'image')} illustrate the model; they do not measure it: notebook "
             "07 scores the whole test split, with intervals.")
    return text
