"""The notebook-08 app: upload or pick a patch, see the model's probabilities, decision and Grad-CAM.

Two faces over the same rendering (:func:`result_html`):

* :func:`show_static` displays plain HTML outputs, so a papermill batch run (no browser, no
  widget state) still shows real predictions in its HTML report;
* :class:`PredictApp` is the ipywidgets 8 app (FileUpload, sample picker, model selector,
  threshold slider). Uploaded bytes are decoded in memory and the FileUpload value is cleared
  right after processing, so no uploaded image is kept in widget state.

For education and research, not for diagnosis.
"""
from __future__ import annotations

import base64
import html
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from bclib import DISCLAIMER, paths
from bclib.data.imageio import IMAGE_SUFFIXES, ImageReadError, read_image
from bclib.evaluation.modelcard import CARD_FILE, MODEL_FILE, ModelLoadError, read_card
from bclib.app.predict import Prediction, Predictor, decide

#: Pixels of the images shown in a result card.
DISPLAY_SIZE = 160
#: Decoded images of the last view kept in memory, to re-predict them when the model changes.
MAX_KEPT_IMAGES = 32
GRADCAM_ALPHA = 0.45

_POSITIVE_COLOUR = "#c0392b"
_OTHER_COLOUR = "#2e86c1"


# --------------------------------------------------------------------------- models of a run

@dataclass
class ModelChoice:
    """One ``model.keras`` with a readable card, as listed in the model selector."""

    path: Path
    card: dict

    @property
    def val_auc(self) -> float | None:
        value = ((self.card.get("metrics") or {}).get("val") or {}).get("roc_auc")
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @property
    def label(self) -> str:
        auc = f"val AUC {self.val_auc:.3f}" if self.val_auc is not None else "val AUC n/a"
        weights = (self.card.get("weights") or {}).get("used", "unknown")
        return f"{self.path.parent.name} / {self.card.get('model_name', 'model')} ({auc}, weights: {weights})"


def _models_in(run_folder: Path) -> list[ModelChoice]:
    found = sorted(set(run_folder.glob(f"*/{MODEL_FILE}")) | set(run_folder.glob(f"*/*/{MODEL_FILE}")))
    choices = []
    for model_path in found:
        if not (model_path.parent / CARD_FILE).is_file():
            continue
        try:
            choices.append(ModelChoice(model_path, read_card(model_path)))
        except ModelLoadError:
            continue
    return choices


def latest_run_with_models(reports_root: str | os.PathLike | None = None) -> str | None:
    """The run id under ``reports/`` whose newest ``model.keras`` (with a card) is the most recent."""
    root = Path(reports_root) if reports_root else paths.reports_dir()
    if not root.is_dir():
        return None
    newest: tuple[float, str] | None = None
    for run_folder in root.iterdir():
        if not run_folder.is_dir():
            continue
        for choice in _models_in(run_folder):
            stamp = choice.path.stat().st_mtime
            if newest is None or stamp > newest[0]:
                newest = (stamp, run_folder.name)
    return newest[1] if newest else None


def find_models(
    run_id: str | None = None, model_path: str | os.PathLike | None = None, reports_root: str | os.PathLike | None = None
) -> list[ModelChoice]:
    """The models to offer, best first (highest validation ROC AUC from the cards).

    ``model_path`` wins (a missing or card-less file raises :class:`ModelLoadError`); else every
    ``reports/<run_id>/*/model.keras`` with a card; with no ``run_id``, the most recent run that has models.
    """
    if model_path is not None:
        path = Path(model_path)
        path = path / MODEL_FILE if path.is_dir() else path
        if not path.is_file():
            raise ModelLoadError(f"model file {str(path)!r} does not exist")
        return [ModelChoice(path, read_card(path))]
    root = Path(reports_root) if reports_root else paths.reports_dir()
    run_id = run_id or latest_run_with_models(root)
    if run_id is None:
        return []
    return sort_best_first(_models_in(root / run_id))


def sort_best_first(choices: Iterable[ModelChoice]) -> list[ModelChoice]:
    """Highest validation AUC first; models without one keep their order, after the others."""
    choices = list(choices)
    return sorted(choices, key=lambda c: (c.val_auc is None, -(c.val_auc or 0.0)))


def best_model(choices: Sequence[ModelChoice]) -> ModelChoice | None:
    ordered = sort_best_first(choices)
    return ordered[0] if ordered else None


def models_table_html(models: Sequence[ModelChoice]) -> str:
    """The models on offer, best first, with validation AUC, threshold and the weights they came from."""
    if not models:
        return f'<div class="bclib-error" style="color:#8a1f11">{html.escape(no_model_message())}</div>'
    rows = []
    for rank, choice in enumerate(sort_best_first(models)):
        weights = str((choice.card.get("weights") or {}).get("used", "unknown"))
        warn = ' style="color:#8a1f11;font-weight:600"' if weights.lower().startswith("random") else ""
        auc = f"{choice.val_auc:.3f}" if choice.val_auc is not None else "n/a"
        rows.append(
            f"<tr><td>{'&#9733; default' if rank == 0 else ''}</td><td>{html.escape(choice.path.parent.name)}</td>"
            f"<td>{html.escape(str(choice.card.get('model_name', '')))}</td><td>{auc}</td>"
            f"<td>{float(choice.card['threshold']['value']):.2f}</td><td{warn}>{html.escape(weights)}</td></tr>"
        )
    return (
        '<table class="bclib-models" style="font-family:sans-serif;border-collapse:collapse">'
        "<thead><tr><th></th><th>notebook</th><th>model</th><th>val ROC AUC</th><th>threshold</th>"
        f"<th>trained from weights</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def show_models(models: Sequence[ModelChoice]) -> None:
    """Display :func:`models_table_html` (a notebook output)."""
    from IPython.display import HTML, display

    display(HTML(models_table_html(models)))


def no_model_message(run_id: str | None = None) -> str:
    where = f"reports/{run_id}/" if run_id else "any run under reports/"
    return (
        f"No trained model (model.keras with model_card.json) found in {where}. Run a training notebook "
        "first (02 onwards, or `bclib run`), or set model_path in the parameters cell."
    )


# --------------------------------------------------------------------------- sample images

@dataclass
class SampleSet:
    """Sample image paths for the picker, and where they came from (said in the UI)."""

    paths: list[Path] = field(default_factory=list)
    note: str = ""


def _balanced_pick(labels: np.ndarray, positions: np.ndarray, n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    pools = [list(rng.permutation(positions[labels[positions] == label])) for label in np.unique(labels[positions])]
    picked: list[int] = []
    while len(picked) < n and any(pools):
        for pool in pools:
            if pool and len(picked) < n:
                picked.append(int(pool.pop()))
    return picked


def _test_positions(index: Any, card: dict | None) -> tuple[np.ndarray, str]:
    """Row positions of the run's test split when it can be rebuilt, else the dataset's own test rows."""
    split_info = (card or {}).get("split") or {}
    try:
        from bclib.data.splits import make_split

        split = make_split(index, method=split_info.get("method", "patient"), seed=int(split_info.get("seed", 0)))
        expected = split_info.get("patients_hash")
        if expected and hasattr(split, "patients_hash") and split.patients_hash() != expected:
            raise ValueError("the rebuilt split differs from the run's")
        return np.asarray(split.positions("test")), "the test split (patients the model never saw in training)"
    except Exception:  # no bclib.data.splits yet, a subsampled run, or an unusable split: fall back
        frame = index.frame
        if "split" in frame.columns and (frame["split"] == "test").any():
            return np.flatnonzero(frame["split"].to_numpy() == "test"), "the dataset's official test split"
        return np.arange(len(frame)), "the dataset (the run's test split could not be rebuilt: the model may have seen these)"


def sample_images(
    models: Sequence[ModelChoice] | dict | None = None,
    dataset: str = "idc",
    data_dir: str | os.PathLike | None = None,
    n: int = 4,
    seed: int = 0,
) -> SampleSet:
    """``n`` sample patches (both classes) from the test split of the run's data, for the picker.

    The data folder is ``data_dir``, else the card's ``dataset.root``, else the usual lookup
    (:func:`bclib.paths.find_dataset_dir`). No data found gives an empty set with a note.
    """
    if n <= 0:
        return SampleSet([], "no samples requested")
    card = models if isinstance(models, dict) else (best_model(models).card if models else None)
    root: Path | None = Path(data_dir) if data_dir else None
    card_root = ((card or {}).get("dataset") or {}).get("root")
    if root is None and card_root and Path(card_root).exists():
        root = Path(card_root)
    try:
        from bclib.data.datasets import scan

        root = root or paths.find_dataset_dir(dataset)
        if root is None:
            return SampleSet([], f"no {dataset!r} data found for sample images (set data_dir)")
        index = scan(dataset, root)
    except Exception as error:  # DatasetError, FileNotFoundError, an unknown scanner
        return SampleSet([], f"no sample images: {error}")
    if len(index.frame) == 0:
        return SampleSet([], f"the {dataset!r} data at {root} holds no images")
    positions, source = _test_positions(index, card)
    picked = _balanced_pick(index.frame["label"].to_numpy(), np.asarray(positions), n, seed)
    return SampleSet([Path(index.frame["path"].iloc[p]) for p in picked], f"{len(picked)} samples from {source}")


# --------------------------------------------------------------------------- rendering

def _to_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        scale = 255.0 if image.size and float(np.nanmax(image)) <= 1.0 else 1.0
        image = np.clip(np.nan_to_num(image.astype(np.float64)) * scale, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return image


def image_data_uri(image: np.ndarray) -> str:
    """A PNG data URI of ``image`` (shown, never written to disk)."""
    picture = Image.fromarray(_to_uint8(image))
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
    try:
        from bclib.evaluation.explain import grad_cam, overlay
    except ImportError:
        return [(None, "Grad-CAM is not available in this installation (bclib.evaluation.explain missing)")] * len(predictions)
    try:
        batch = np.stack([predictions[i].model_input for i in usable]).astype(np.float32)
        # binary models: explain the disease class (label 0 for BreastMNIST); others: the predicted class
        class_index = predictor.positive_label if len(predictor.class_names) == 2 else None
        heatmaps = np.asarray(grad_cam(predictor.model, batch, class_index=class_index))
        for heatmap, i in zip(heatmaps, usable):
            results[i] = (_to_uint8(overlay(predictions[i].model_input, heatmap, GRADCAM_ALPHA)), None)
    except Exception as error:  # a model Grad-CAM cannot explain must not break the prediction
        return [(None, f"Grad-CAM failed for this model: {error}")] * len(predictions)
    return results


def model_banner_html(predictor: Predictor, threshold: float) -> str:
    """Model name, weights it was trained from (random weights said loudly), threshold, disclaimer."""
    weights = html.escape(predictor.weights_used)
    parts = [
        '<div class="bclib-model" style="font-family:sans-serif;margin:4px 0">',
        f"<b>Model:</b> {html.escape(predictor.model_name)} &middot; <b>trained from weights:</b> {weights}"
        f" &middot; <b>threshold:</b> {threshold:.2f}",
    ]
    if predictor.val_auc is not None:
        parts.append(f" &middot; <b>val AUC:</b> {predictor.val_auc:.3f}")
    if predictor.path is not None:
        parts.append(f'<div style="color:#666;font-size:85%">{html.escape(str(predictor.path))}</div>')
    parts.append("</div>")
    if predictor.random_weights:
        parts.append(
            '<div class="bclib-random-weights" style="background:#fdecea;color:#8a1f11;border:1px solid #e6a39a;'
            'padding:6px 10px;border-radius:6px;font-family:sans-serif;margin:4px 0">'
            "&#9888; This model was trained from <b>random weights</b> (no pretrained ImageNet weights were "
            "available): expect weaker predictions than a pretrained model.</div>"
        )
    return "".join(parts)


def disclaimer_html() -> str:
    return (
        '<div class="bclib-disclaimer" style="background:#fff8e1;border:1px solid #f0d58c;padding:6px 10px;'
        f'border-radius:6px;font-family:sans-serif;margin:4px 0">&#9432; <b>{html.escape(DISCLAIMER)}</b> '
        "A model output is not a pathologist's reading.</div>"
    )


def _probability_rows(prediction: Prediction, positive_name: str) -> str:
    rows = []
    for name, probability in prediction.probabilities.items():
        colour = _POSITIVE_COLOUR if name == positive_name else _OTHER_COLOUR
        rows.append(
            f'<div class="bclib-probability" data-class="{html.escape(name, quote=True)}" '
            f'data-probability="{probability:.6f}" style="display:flex;align-items:center;gap:6px;margin:3px 0">'
            f'<span style="width:90px;overflow:hidden;text-overflow:ellipsis">{html.escape(name)}</span>'
            f'<span style="flex:1;background:#eee;height:14px;border-radius:3px;min-width:120px">'
            f'<span style="display:block;height:14px;border-radius:3px;width:{100 * probability:.1f}%;'
            f'background:{colour}"></span></span>'
            f'<span style="width:56px;text-align:right">{100 * probability:.1f}%</span></div>'
        )
    return "".join(rows)


def result_html(
    prediction: Prediction, predictor: Predictor, overlay_image: np.ndarray | None = None, gradcam_message: str | None = None
) -> str:
    """One result card: image, Grad-CAM overlay, a bar per class, decision at the threshold (or the error)."""
    name = html.escape(Path(prediction.source).name or prediction.source)
    style = "border:1px solid #ddd;border-radius:8px;padding:8px 12px;margin:8px 0;font-family:sans-serif;max-width:760px"
    if not prediction.ok:
        return (
            f'<div class="bclib-result bclib-error" style="{style};background:#fdf2f2">'
            f"<b>{name}</b>: could not be predicted &mdash; {html.escape(prediction.error or '')}</div>"
        )
    figure = 'style="margin:0;text-align:center;font-size:80%;color:#555"'
    picture = f'width="{DISPLAY_SIZE}" style="image-rendering:pixelated;border-radius:4px"'
    shown = prediction.model_input if prediction.model_input is not None else prediction.image
    images = ""
    if shown is not None:
        images += (
            f'<figure {figure}><img class="bclib-input" alt="input image" src="{image_data_uri(shown)}" {picture}>'
            "<figcaption>as the model sees it</figcaption></figure>"
        )
    if overlay_image is not None:
        images += (
            f'<figure {figure}><img class="bclib-heatmap" alt="Grad-CAM heatmap" src="{image_data_uri(overlay_image)}" '
            f"{picture}><figcaption>Grad-CAM: where the evidence was</figcaption></figure>"
        )
    elif gradcam_message:
        images += f'<div class="bclib-gradcam-missing" style="width:{DISPLAY_SIZE}px;color:#777;font-size:85%">{html.escape(gradcam_message)}</div>'
    positive_name = predictor.class_names[predictor.positive_label]
    decision_colour = _POSITIVE_COLOUR if prediction.decision == positive_name else _OTHER_COLOUR
    rule = (
        f"P({html.escape(positive_name)}) &ge; {prediction.threshold:.2f}"
        if len(predictor.class_names) == 2
        else "the most probable class"
    )
    return (
        f'<div class="bclib-result" style="{style}"><div style="font-weight:600;margin-bottom:6px">{name}</div>'
        f'<div style="display:flex;gap:14px;align-items:flex-start;flex-wrap:wrap">{images}'
        f'<div style="flex:1;min-width:260px">{_probability_rows(prediction, positive_name)}'
        f'<div class="bclib-decision" style="margin-top:8px">Decision ({rule}): '
        f'<b style="color:{decision_colour}">{html.escape(prediction.decision or "")}</b></div></div></div></div>'
    )


def results_table_html(predictions: Sequence[Prediction], class_names: Sequence[str]) -> str:
    """A compact table of several results: one row per image, a column per class."""
    header = "".join(f"<th>P({html.escape(name)})</th>" for name in class_names)
    rows = []
    for prediction in predictions:
        name = html.escape(Path(prediction.source).name or prediction.source)
        if prediction.ok:
            cells = "".join(f"<td>{prediction.probabilities.get(c, float('nan')):.3f}</td>" for c in class_names)
            rows.append(f"<tr><td>{name}</td>{cells}<td><b>{html.escape(prediction.decision or '')}</b></td></tr>")
        else:
            rows.append(f'<tr><td>{name}</td><td colspan="{len(class_names) + 1}">error: {html.escape(prediction.error or "")}</td></tr>')
    return (
        '<table class="bclib-table" style="font-family:sans-serif;border-collapse:collapse;margin:6px 0">'
        f"<thead><tr><th>image</th>{header}<th>decision</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def view_html(
    predictor: Predictor,
    predictions: Sequence[Prediction],
    threshold: float | None = None,
    overlays: Sequence[tuple[np.ndarray | None, str | None]] | None = None,
) -> str:
    """The whole view: disclaimer, model banner, a table when several images, one card per image."""
    threshold = predictor.threshold if threshold is None else float(threshold)
    overlays = overlays if overlays is not None else gradcam_overlays(predictor, predictions)
    parts = [disclaimer_html(), model_banner_html(predictor, threshold)]
    if len(predictions) > 1:
        parts.append(results_table_html(predictions, predictor.class_names))
    for prediction, (overlay_image, message) in zip(predictions, overlays):
        parts.append(result_html(prediction, predictor, overlay_image, message))
    return '<div class="bclib-app">' + "".join(parts) + "</div>"


def rethreshold(predictor: Predictor, predictions: Iterable[Prediction], threshold: float) -> None:
    """Re-decide kept results at a new threshold (probabilities unchanged, no model call)."""
    for prediction in predictions:
        if prediction.ok:
            values = [prediction.probabilities[name] for name in predictor.class_names]
            prediction.decision = decide(values, predictor.class_names, predictor.positive_label, threshold)
            prediction.threshold = threshold


def predict_named_images(
    predictor: Predictor, named: Sequence[tuple[str, np.ndarray | bytes | str | os.PathLike]], threshold: float | None = None
) -> list[Prediction]:
    """Decode (bytes or paths, in memory) and predict; every failure becomes a per-image error."""
    decoded: list[tuple[int, str, np.ndarray]] = []
    results: list[Prediction | None] = [None] * len(named)
    for position, (name, source) in enumerate(named):
        try:
            image = source if isinstance(source, np.ndarray) else read_image(source)
            decoded.append((position, name, image))
        except ImageReadError as error:
            message = str(error)
            for prefix in ("<bytes>: ", f"{source}: "):
                message = message[len(prefix):] if message.startswith(prefix) else message
            results[position] = Prediction(source=name, error=message)
        except Exception as error:  # keep the app alive whatever the decoder does
            results[position] = Prediction(source=name, error=f"could not read the image ({type(error).__name__}: {error})")
    if decoded:
        try:
            predicted = predictor.predict_images([d[2] for d in decoded], [d[1] for d in decoded], threshold)
            for (position, _, _), prediction in zip(decoded, predicted):
                results[position] = prediction
        except Exception as error:
            for position, name, _ in decoded:
                results[position] = Prediction(source=name, error=f"the model could not predict it: {error}")
    return [r for r in results if r is not None]


def show_static(
    models: Sequence[ModelChoice] | str | os.PathLike | Predictor | None,
    images: Sequence[str | os.PathLike],
    threshold: float | None = None,
) -> str:
    """Display (and return) the HTML view for image files: what a papermill/HTML report shows."""
    from IPython.display import HTML, display

    text = static_html(models, images, threshold)
    display(HTML(text))
    return text


def _predictor_for(models: Sequence[ModelChoice] | str | os.PathLike | Predictor | None) -> Predictor | None:
    if isinstance(models, Predictor):
        return models
    if isinstance(models, (str, os.PathLike)):
        return Predictor.load(models)
    choice = best_model(models or [])
    return Predictor.load(choice.path) if choice else None


def static_html(
    models: Sequence[ModelChoice] | str | os.PathLike | Predictor | None,
    images: Sequence[str | os.PathLike],
    threshold: float | None = None,
) -> str:
    """The static view's HTML for image files, with the best model (or the one given)."""
    predictor = _predictor_for(models)
    if predictor is None:
        return disclaimer_html() + f'<div class="bclib-error">{html.escape(no_model_message())}</div>'
    if not images:
        return (
            disclaimer_html() + model_banner_html(predictor, predictor.threshold)
            + "<div>No images to show: set <code>images</code> in the parameters cell or point data_dir at a dataset.</div>"
        )
    chosen = predictor.threshold if threshold is None else float(threshold)
    predictions = predict_named_images(predictor, [(str(p), str(p)) for p in images], chosen)
    return view_html(predictor, predictions, chosen)


# --------------------------------------------------------------------------- the app

def _upload_items(value: Any) -> list[Mapping[str, Any]]:
    """ipywidgets 8 gives a tuple of dicts; ipywidgets 7 gave ``{name: {...}}``: accept both."""
    if isinstance(value, Mapping):
        return [dict(item, name=item.get("name", key)) if isinstance(item, Mapping) else {"name": key}
                for key, item in value.items()]
    return [item for item in (value or ()) if isinstance(item, Mapping)] + [
        {"name": repr(item)} for item in (value or ()) if not isinstance(item, Mapping)
    ]


class PredictApp:
    """The interactive single-image prediction app (ipywidgets 8).

    ``handle_upload(value)`` is the FileUpload handler (callable directly with upload-like dicts);
    results are rendered into ``self.output`` (an HTML widget) and kept only in memory.
    """

    def __init__(
        self,
        models: Sequence[ModelChoice],
        samples: SampleSet | Sequence[str | os.PathLike] = (),
        threshold: float | None = None,
    ):
        import ipywidgets as widgets

        self.models = sort_best_first(models)
        self.samples = samples if isinstance(samples, SampleSet) else SampleSet([Path(p) for p in samples], "")
        self._predictors: dict[Path, Predictor] = {}
        self._kept: list[tuple[str, np.ndarray]] = []
        self.predictions: list[Prediction] = []
        self._overlays: list[tuple[np.ndarray | None, str | None]] = []
        self.predictor: Predictor | None = None

        self.header = widgets.HTML(disclaimer_html())
        self.model_selector = widgets.Dropdown(
            options=[(choice.label, index) for index, choice in enumerate(self.models)],
            value=0 if self.models else None, description="Model", layout=widgets.Layout(width="95%"),
            style={"description_width": "70px"},
        )
        self.threshold_slider = widgets.FloatSlider(
            value=0.5, min=0.0, max=1.0, step=0.01, description="Threshold", readout_format=".2f",
            continuous_update=False, style={"description_width": "70px"}, layout=widgets.Layout(width="420px"),
        )
        accept = ",".join(sorted(IMAGE_SUFFIXES))
        self.upload = widgets.FileUpload(accept=accept, multiple=True, description="Upload images", button_style="primary")
        self.sample_picker = widgets.Dropdown(
            options=[(path.name, str(path)) for path in self.samples.paths], description="Sample",
            style={"description_width": "70px"}, layout=widgets.Layout(width="420px"),
        )
        self.sample_button = widgets.Button(description="Predict sample", disabled=not self.samples.paths)
        self.status = widgets.HTML("")
        self.output = widgets.HTML("")
        controls = [
            self.model_selector,
            self.threshold_slider,
            widgets.HBox([self.upload]),
            widgets.HBox([self.sample_picker, self.sample_button]),
            widgets.HTML(f'<div style="color:#666;font-size:85%">{html.escape(self.samples.note)}</div>'),
        ]
        self.widget = widgets.VBox([self.header, *controls, self.status, self.output])

        self.upload.observe(self._on_upload, names="value")
        self.sample_button.on_click(lambda _: self.predict_sample(self.sample_picker.value))
        self.threshold_slider.observe(self._on_threshold, names="value")
        self.model_selector.observe(self._on_model, names="value")
        if self.models:
            self._select_model(0, threshold)
        else:
            self.upload.disabled = self.sample_button.disabled = True
            self.status.value = f'<div class="bclib-error" style="color:#8a1f11">{html.escape(no_model_message())}</div>'

    # -- model and threshold --------------------------------------------------------------
    def _select_model(self, index: int, threshold: float | None = None) -> None:
        choice = self.models[index]
        try:
            if choice.path not in self._predictors:
                self._predictors[choice.path] = Predictor.load(choice.path)
            self.predictor = self._predictors[choice.path]
        except ModelLoadError as error:
            self.predictor = None
            self.status.value = f'<div class="bclib-error" style="color:#8a1f11">{html.escape(str(error))}</div>'
            return
        self.status.value = ""
        start = self.predictor.threshold if threshold is None else float(threshold)
        with self.threshold_slider.hold_trait_notifications():
            self.threshold_slider.value = min(max(start, 0.0), 1.0)
        self._predict_kept()

    def _on_model(self, change: Mapping[str, Any]) -> None:
        if change.get("new") is not None:
            self._select_model(int(change["new"]))

    def _on_threshold(self, change: Mapping[str, Any]) -> None:
        if self.predictor is not None and self.predictions:
            rethreshold(self.predictor, self.predictions, float(change["new"]))
            self._render()

    # -- inputs ---------------------------------------------------------------------------
    def _on_upload(self, change: Mapping[str, Any]) -> None:
        value = change.get("new")
        if not value:
            return
        try:
            self.handle_upload(value)
        finally:
            self.upload.value = ()  # never keep uploaded bytes in widget state

    def handle_upload(self, value: Any) -> list[Prediction]:
        """Predict uploaded files (``FileUpload.value``: dicts with name, type, size, content, last_modified)."""
        named: list[tuple[str, Any]] = []
        for item in _upload_items(value):
            name = str(item.get("name") or "upload")
            content = item.get("content")
            try:
                data = bytes(content) if content is not None else b""
            except (TypeError, ValueError):
                data = b""
            named.append((name, data))
        return self.predict_named(named)

    def predict_sample(self, path: str | os.PathLike | None) -> list[Prediction]:
        if not path:
            return []
        return self.predict_named([(Path(path).name, str(path))])

    def predict_named(self, named: Sequence[tuple[str, Any]]) -> list[Prediction]:
        """Decode in memory, predict, explain and render; never raises (errors are shown per file)."""
        if self.predictor is None:
            self.status.value = f'<div class="bclib-error">{html.escape(no_model_message())}</div>'
            return []
        self.status.value = '<div style="color:#555">Predicting&hellip;</div>'
        try:
            decoded: list[tuple[str, Any]] = []
            for name, source in named:
                try:
                    decoded.append((name, read_image(source)))
                except Exception:
                    decoded.append((name, source))  # predict_named_images turns it into a per-file message
            self._kept = [(n, s) for n, s in decoded if isinstance(s, np.ndarray)][:MAX_KEPT_IMAGES]
            predictions = predict_named_images(self.predictor, decoded, self.threshold_slider.value)
            self.predictions = predictions
            self._overlays = gradcam_overlays(self.predictor, predictions)
            self._render()
            failed = sum(not p.ok for p in predictions)
            self.status.value = (
                f'<div style="color:#8a1f11">{failed} of {len(predictions)} file(s) could not be predicted.</div>'
                if failed else ""
            )
            return predictions
        except Exception as error:  # the UI stays alive whatever happens
            self.status.value = f'<div class="bclib-error" style="color:#8a1f11">Prediction failed: {html.escape(str(error))}</div>'
            return []

    def _predict_kept(self) -> None:
        if self._kept and self.predictor is not None:
            named = list(self._kept)
            self._kept = []
            self.predict_named(named)

    def _render(self) -> None:
        if self.predictor is not None:
            self.output.value = view_html(self.predictor, self.predictions, self.threshold_slider.value, self._overlays)

    def clear(self) -> None:
        """Forget every image (kept arrays and rendered results)."""
        self._kept, self.predictions, self._overlays = [], [], []
        self.output.value = ""

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


__all__ = [
    "ModelChoice",
    "PredictApp",
    "SampleSet",
    "best_model",
    "find_models",
    "gradcam_overlays",
    "latest_run_with_models",
    "models_table_html",
    "predict_named_images",
    "result_html",
    "results_table_html",
    "sample_images",
    "show_models",
    "show_static",
    "sort_best_first",
    "static_html",
    "view_html",
]
