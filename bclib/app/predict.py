"""Predict single images or folders with a saved ``model.keras`` and its model card.

One preparation path (:func:`prepare_image`) is shared by ``bclib predict`` and the notebook-08
widget, so both see exactly what the model saw: decode with :func:`bclib.data.imageio.read_image`,
pad small patches like the training cache did (``pack_size`` from the card), resize to the
model's ``input_size`` with the training pipeline's resize. Bad files give a per-file error message; the others are still predicted.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from bclib.data.imageio import ImageReadError, fit_to_square, is_image_file, read_image
from bclib.data.index import one_line
from bclib.evaluation.modelcard import MODEL_FILE, load_model, validate_card

DEFAULT_BATCH_SIZE = 64
#: An image longer than this many training patches on a side gets a caution and is tiled.
TILE_FACTOR = 4
#: Tiles predicted in one batch (bounds memory), and the most tiles one image is cut into.
TILE_BATCH = DEFAULT_BATCH_SIZE
MAX_TILES = 4096
#: A pixel whose darkest channel is at least this is background (the slide's white), not tissue.
BACKGROUND_LEVEL = 220
#: A tile with a smaller share of tissue pixels is background: not predicted (the datasets dropped such patches).
MIN_TISSUE = 0.05
#: H&E-like colours: at least this share of tissue pixels with red and blue above green (pink and purple),
#: and at least this median saturation (not grey).
HE_MIN_SHARE = 0.3
HE_MIN_SATURATION = 0.03
#: About how many pixels of a large image the colour check reads (every n-th of every n-th row).
COLOUR_PIXELS = 1_000_000
#: What each dataset's images are: (stain, magnification); None where unknown.
DATASET_INPUTS: dict[str, tuple[str | None, str | None]] = {
    "idc": ("H&E", "40x"), "pcam": ("H&E", "10x"), "breakhis": ("H&E", None),
    "breastmnist": ("none (ultrasound)", None), "mias": ("none (mammogram)", None),
}
#: What ``bclib predict`` adds to a large image's caution: it gives the squeezed answer, the app a patch map.
NOT_TILED = ("bclib predict does not cut it into patches: its line gives that squeezed answer (`bclib app` maps "
             "the image patch by patch).")


class PredictError(ValueError):
    """Inputs that cannot be predicted at all (no images found, bad threshold...)."""


def prepare_image(image: np.ndarray, input_size: int, pack_size: int | None = None) -> np.ndarray:
    """A decoded RGB ``uint8`` image placed in a square exactly as the training cache packed it.

    The square is ``pack_size`` (padded bottom/right with white, or downscaled keeping the aspect
    ratio), or ``input_size`` without one. :meth:`Predictor.predict_batch` then resizes it to the
    model's input with training's own :func:`~bclib.data.pipeline.resize_batch`.
    """
    if not isinstance(input_size, (int, np.integer)) or input_size < 1:
        raise ValueError(f"input_size must be a positive integer, got {input_size!r}")
    if pack_size is not None and (not isinstance(pack_size, (int, np.integer)) or pack_size < 1):
        raise ValueError(f"pack_size must be a positive integer or None, got {pack_size!r}")
    return fit_to_square(image, int(pack_size or input_size))


def class_probabilities(output: np.ndarray, num_classes: int) -> np.ndarray:
    """Model outputs as ``(N, num_classes)`` probabilities (a sigmoid unit is P(label 1))."""
    output = np.asarray(output, dtype=np.float64)
    if output.ndim == 1:
        output = output[:, None]
    if output.shape[1] == 1:
        if num_classes != 2:
            raise PredictError(f"a single sigmoid output cannot name {num_classes} classes")
        positive = np.clip(output[:, 0], 0.0, 1.0)
        return np.stack([1.0 - positive, positive], axis=1)
    if output.shape[1] != num_classes:
        raise PredictError(f"the model outputs {output.shape[1]} values but its card names {num_classes} classes")
    return np.clip(output, 0.0, 1.0)


def decide(probabilities: Sequence[float], class_names: Sequence[str], positive_label: int, threshold: float) -> str:
    """The decided class name: binary models compare P(positive) with ``threshold``; others take the argmax."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if len(class_names) == 2:
        if probabilities[positive_label] >= threshold:
            return class_names[positive_label]
        return class_names[1 - positive_label]
    return class_names[int(np.argmax(probabilities))]


def validation_auc(card: Mapping[str, Any]) -> float | None:
    """The validation ROC AUC a model card records, or None."""
    value = ((card.get("metrics") or {}).get("val") or {}).get("roc_auc")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class TrainingInput:
    """The input a model was trained on: patch side in pixels, magnification and stain (None: unknown)."""

    patch_size: int
    magnification: str | None = None
    stain: str | None = None

    def describe(self) -> str:
        known = [self.magnification, f"{self.stain} stain" if self.stain else None]
        return f"{self.patch_size}x{self.patch_size} px patches" + "".join(f", {part}" for part in known if part)


def training_input(card: Mapping[str, Any]) -> TrainingInput:
    """What the card says the model was trained on: its ``input`` entry when it has one, else the
    patch size it was packed at and what its dataset is known to be."""
    dataset = card.get("dataset") if isinstance(card.get("dataset"), dict) else {}
    stain, magnification = DATASET_INPUTS.get(str(dataset.get("name")), (None, None))
    chosen = (dataset.get("options") or {}).get("magnification")
    if dataset.get("name") == "breakhis" and chosen not in (None, "all"):
        magnification = f"{chosen}x"
    recorded = card.get("input") if isinstance(card.get("input"), dict) else {}
    return TrainingInput(int(recorded.get("patch_size") or card.get("pack_size") or card["input_size"]),
                         recorded.get("magnification", magnification), recorded.get("stain", stain))


def tissue_share(image: np.ndarray) -> float:
    """The share of pixels that are not background."""
    return float((image.min(axis=2) < BACKGROUND_LEVEL).mean()) if image.size else 0.0


def he_like(image: np.ndarray) -> bool | None:
    """Whether the tissue pixels are coloured like H&E (pink and purple); None when too little tissue to judge."""
    step = max(1, int((image.shape[0] * image.shape[1] / COLOUR_PIXELS) ** 0.5))
    image = image[::step, ::step]
    pixels = image.reshape(-1, 3)
    pixels = pixels[pixels.min(axis=1) < BACKGROUND_LEVEL].astype(np.int16)
    if len(pixels) < MIN_TISSUE * max(1, image.shape[0] * image.shape[1]):
        return None
    red, green, blue = pixels[:, 0], pixels[:, 1], pixels[:, 2]
    brightest = np.maximum(pixels.max(axis=1), 1)
    saturation = float(np.median((brightest - pixels.min(axis=1)) / brightest))
    return bool(((red > green) & (blue > green)).mean() >= HE_MIN_SHARE and saturation >= HE_MIN_SATURATION)


def input_cautions(image: np.ndarray, trained: TrainingInput) -> list[str]:
    """Why an image is far from what the model was trained on, in words (empty when it is not)."""
    height, width = image.shape[:2]
    cautions = []
    if max(height, width) > TILE_FACTOR * trained.patch_size:
        cautions.append(f"This image is {width}x{height} px, more than {TILE_FACTOR}x the model's training patches "
                        f"({trained.describe()}): one answer for the whole image, squeezed to "
                        f"{trained.patch_size} px, would say little about it.")
    if trained.stain == "H&E" and he_like(image) is False:
        cautions.append("Its colours are unlike H&E-stained tissue (pink and purple), the only kind the model has "
                        "seen: its answer says little about this image.")
    return cautions


@dataclass
class TileMap:
    """P(positive class) per ``tile_size`` tile of an image, on the tile grid; NaN for background tiles."""

    probabilities: np.ndarray
    tile_size: int

    @property
    def predicted(self) -> int:
        return int(np.isfinite(self.probabilities).sum())

    def called(self, threshold: float) -> int:
        """Tiles whose probability reaches ``threshold``."""
        return int((np.nan_to_num(self.probabilities, nan=-1.0) >= threshold).sum())


@dataclass
class Prediction:
    """One image's result (``error`` set instead of probabilities when it could not be predicted)."""

    source: str
    probabilities: dict[str, float] = field(default_factory=dict)
    decision: str | None = None
    threshold: float | None = None
    error: str | None = None
    image: np.ndarray | None = field(default=None, repr=False)  # the decoded image (kept in memory only)
    model_input: np.ndarray | None = field(default=None, repr=False)
    cautions: list[str] = field(default_factory=list)  # how the image is far from the training input
    tiles: TileMap | None = field(default=None, repr=False)  # a large image's per-tile probabilities

    @property
    def ok(self) -> bool:
        return self.error is None

    def forget_pixels(self) -> None:
        """Drop the decoded image and model input (probabilities, decision and tile map stay)."""
        self.image = self.model_input = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: path, probabilities named from the card, decision, threshold and cautions (or error)."""
        if self.error is not None:
            return {"path": self.source, "error": self.error}
        return {
            "path": self.source,
            "probabilities": {name: round(float(p), 6) for name, p in self.probabilities.items()},
            "decision": self.decision,
            "threshold": self.threshold,
            "cautions": list(self.cautions),
        }

    def to_line(self) -> str:
        """One tab-separated line: path, ``class=probability`` for every class, ``decision=...``; tabs, newlines
        and backslashes in names written as ``\\t``, ``\\n``, ``\\\\`` (:func:`~bclib.data.index.one_line`)."""
        if self.error is not None:
            return f"{one_line(self.source)}\terror: {one_line(self.error)}"
        probabilities = "\t".join(f"{one_line(name)}={p:.4f}" for name, p in self.probabilities.items())
        return f"{one_line(self.source)}\t{probabilities}\tdecision={one_line(str(self.decision))}"


class Predictor:
    """A loaded model with its card: prepares images, predicts in batches, decides at the threshold."""

    def __init__(self, model: Any, card: dict, path: str | os.PathLike | None = None):
        self.model = model
        self.card = validate_card(card)
        self.path = Path(path) if path is not None else None
        self.class_names: list[str] = list(card["class_names"])
        stored = card.get("positive_label")  # None for multi-class cards: no single disease class
        self.positive_label: int = int(stored) if stored is not None else (1 if len(self.class_names) == 2 else 0)
        self.threshold: float = float(card["threshold"]["value"])
        self.input_size: int = int(card["input_size"])
        pack = card.get("pack_size")
        self.pack_size: int | None = int(pack) if pack else None
        self.trained_on = training_input(card)

    @classmethod
    def load(cls, model_path: str | os.PathLike) -> "Predictor":
        """Load ``model.keras`` (Keras safe mode) and its card; raises :class:`ModelLoadError`."""
        model, card = load_model(model_path)
        path = Path(model_path)
        return cls(model, card, path / MODEL_FILE if path.is_dir() else path)

    # -- describing the model -------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return str(self.card.get("model_name", "model"))

    # -- predicting -----------------------------------------------------------------------
    def prepare(self, image: np.ndarray) -> np.ndarray:
        return prepare_image(image, self.input_size, self.pack_size)

    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        """``(N, S, S, 3)`` prepared images -> ``(N, C)`` class probabilities (resized to the model's input here)."""
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[0] == 0:
            raise PredictError(f"expected a non-empty (N, S, S, 3) batch, got shape {batch.shape}")
        from bclib.data.pipeline import resize_batch

        output = self.model.predict_on_batch(resize_batch(batch, self.input_size))
        return class_probabilities(np.asarray(output), len(self.class_names))

    def result(self, source: str, probabilities: np.ndarray, threshold: float | None = None) -> Prediction:
        threshold = self.threshold if threshold is None else float(threshold)
        return Prediction(
            source=source,
            probabilities={name: float(p) for name, p in zip(self.class_names, probabilities)},
            decision=decide(probabilities, self.class_names, self.positive_label, threshold),
            threshold=threshold,
        )

    def predict_images(
        self, images: Sequence[np.ndarray], sources: Sequence[str] | None = None, threshold: float | None = None
    ) -> list[Prediction]:
        """Predict decoded RGB images (any size); results keep the image and model input in memory."""
        sources = list(sources) if sources is not None else [f"image {i + 1}" for i in range(len(images))]
        if len(sources) != len(images):
            raise ValueError(f"{len(images)} images but {len(sources)} names")
        if not images:
            return []
        inputs = np.stack([self.prepare(image) for image in images])
        probabilities = self.predict_batch(inputs)
        results = []
        for source, image, model_input, row in zip(sources, images, inputs, probabilities):
            result = self.result(source, row, threshold)
            result.image, result.model_input = image, model_input
            result.cautions = input_cautions(image, self.trained_on)
            if max(image.shape[:2]) > TILE_FACTOR * self.trained_on.patch_size:
                result.tiles = self.predict_tiles(image) if len(self.class_names) == 2 else None
                if result.tiles is None:
                    result.cautions.append("It is not cut into patches here (a model of more than two classes, or "
                                           f"more than {MAX_TILES} patches): the answer below is the squeezed one.")
            results.append(result)
        return results

    def predict_tiles(self, image: np.ndarray) -> TileMap | None:
        """P(positive class) for every training-size tile of ``image`` with tissue, in batches of
        :data:`TILE_BATCH`; edge tiles are padded like small patches. None over :data:`MAX_TILES` tiles."""
        size = self.trained_on.patch_size
        rows, columns = -(-image.shape[0] // size), -(-image.shape[1] // size)
        if rows * columns > MAX_TILES:
            return None
        grid = np.full((rows, columns), np.nan)
        cells = [(row, column) for row in range(rows) for column in range(columns)
                 if tissue_share(image[row * size:(row + 1) * size, column * size:(column + 1) * size]) >= MIN_TISSUE]
        for start in range(0, len(cells), TILE_BATCH):
            chunk = cells[start:start + TILE_BATCH]
            batch = np.stack([self.prepare(image[row * size:(row + 1) * size, column * size:(column + 1) * size])
                              for row, column in chunk])
            grid[tuple(np.array(chunk).T)] = self.predict_batch(batch)[:, self.positive_label]
        return TileMap(grid, size)

    def predict_named(
        self, named: Sequence[tuple[str, np.ndarray | bytes | str | os.PathLike]], threshold: float | None = None
    ) -> list[Prediction]:
        """Predict ``(name, image)`` pairs, images as arrays, bytes or paths decoded in memory; never raises:
        a file that cannot be read or predicted gets a result with its ``error``."""
        results: list[Prediction | None] = [None] * len(named)
        decoded: list[tuple[int, str, np.ndarray]] = []
        for position, (name, source) in enumerate(named):
            try:
                decoded.append((position, name, source if isinstance(source, np.ndarray) else read_image(source)))
            except Exception as error:  # whatever the decoder does, the other images are still predicted
                results[position] = Prediction(source=name, error=_read_error_message(error, source))
        if decoded:
            try:
                predicted = self.predict_images([image for _, _, image in decoded], [name for _, name, _ in decoded], threshold)
            except Exception as error:
                predicted = [Prediction(source=name, error=f"the model could not predict it: {error}") for _, name, _ in decoded]
            for (position, _, _), prediction in zip(decoded, predicted):
                results[position] = prediction
        return [result for result in results if result is not None]

    def rethreshold(self, predictions: Iterable[Prediction], threshold: float) -> None:
        """Decide ``predictions`` again at a new threshold (probabilities unchanged, no model call)."""
        for prediction in predictions:
            if prediction.ok:
                values = [prediction.probabilities[name] for name in self.class_names]
                prediction.decision = decide(values, self.class_names, self.positive_label, threshold)
                prediction.threshold = threshold

    def _load_one(self, source: str | os.PathLike | bytes) -> tuple[np.ndarray, list[str]]:
        """The image prepared for the model, and its cautions (judged on the decoded image, which is then dropped)."""
        cautions: list[str] = []

        def judge_and_prepare(image: np.ndarray) -> np.ndarray:
            cautions.extend(input_cautions(image, self.trained_on))
            if max(image.shape[:2]) > TILE_FACTOR * self.trained_on.patch_size:
                cautions.append(NOT_TILED)
            return self.prepare(image)

        return read_image(source, transform=judge_and_prepare), cautions  # before the next large image decodes

    def predict_sources(
        self,
        sources: Iterable[str | os.PathLike],
        batch_size: int = DEFAULT_BATCH_SIZE,
        threshold: float | None = None,
        workers: int | None = None,
    ) -> Iterator[Prediction]:
        """Predict files in order: decode in a thread pool, predict in batches; bad files yield an error.
        Each result carries the image's cautions (:func:`input_cautions`); large images are not tiled here."""
        if batch_size < 1:
            raise PredictError(f"batch size must be at least 1, got {batch_size}")
        sources = [str(source) for source in sources]
        workers = workers or min(8, (os.cpu_count() or 2) + 2)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(sources), batch_size):
                chunk = sources[start : start + batch_size]
                futures = [pool.submit(self._load_one, source) for source in chunk]
                ready: list[tuple[int, tuple[np.ndarray, list[str]]]] = []
                errors: dict[int, str] = {}
                for position, future in enumerate(futures):
                    try:
                        ready.append((position, future.result()))
                    except Exception as error:  # a decoder bug must not stop the other files
                        errors[position] = _read_error_message(error, chunk[position])
                probabilities = self.predict_batch(np.stack([image for _, (image, _) in ready])) if ready else []
                by_position = {position: (row, cautions) for (position, (_, cautions)), row in zip(ready, probabilities)}
                for position, source in enumerate(chunk):
                    if position in errors:
                        yield Prediction(source=source, error=errors[position])
                    else:
                        row, cautions = by_position[position]
                        result = self.result(source, row, threshold)
                        result.cautions = cautions
                        yield result


def _read_error_message(error: Exception, source: str | os.PathLike | bytes) -> str:
    """Why ``source`` could not be read, without the source name an :class:`ImageReadError` starts with."""
    if not isinstance(error, ImageReadError):
        return f"could not read the image ({type(error).__name__}: {error})"
    label = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    return str(error).removeprefix(f"{label}: ")


def collect_image_paths(inputs: Iterable[str | os.PathLike]) -> tuple[list[Path], list[Prediction]]:
    """Expand files and folders (walked recursively, sorted) into image paths.

    Returns ``(paths, problems)``: a path that does not exist becomes a :class:`Prediction`
    with an error. Files named explicitly are kept whatever their suffix (the decoder says
    whether they are images); inside folders only image suffixes count.
    """
    paths: list[Path] = []
    problems: list[Prediction] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(file for file in path.rglob("*") if is_image_file(file.name) and not file.is_dir())
            if not found:
                problems.append(Prediction(source=str(path), error="the folder holds no image files"))
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            problems.append(Prediction(source=str(path), error="no such file or folder"))
    return paths, problems


def check_threshold(threshold: float | None) -> float | None:
    """``threshold`` as a float in [0, 1] (None stays None: the card's threshold); raises :class:`PredictError`."""
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise PredictError(f"threshold must lie between 0 and 1, got {threshold}")
    return None if threshold is None else float(threshold)
