"""What the prediction app offers: the trained models of a run (best first) and sample images.

Models come from ``reports/<run_id>/*/model.keras`` with their model cards; samples from the
test split of the data the best model was trained on, both classes.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from itertools import chain, zip_longest
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from bclib import paths
from bclib.app.predict import Predictor, validation_auc
from bclib.data.datasets import DatasetIndex, scan
from bclib.data.splits import make_split
from bclib.evaluation.modelcard import MODEL_FILE, ModelLoadError, read_card, weights_description

#: Test-split candidates drawn per sample shown, among which the default model's mistakes are looked for.
CANDIDATES_PER_SAMPLE = 8

NO_MODEL_MESSAGE = (
    "No trained model (model.keras with model_card.json) found under reports/. Run a training notebook first "
    "(02 onwards, or `bclib run`), or set run_id or model_path in the parameters cell."
)


# --------------------------------------------------------------------------- models of a run

@dataclass
class ModelChoice:
    """One ``model.keras`` with a readable card, as listed in the model selector."""

    path: Path
    card: dict

    @property
    def val_auc(self) -> float | None:
        return validation_auc(self.card)

    @property
    def label(self) -> str:
        """What the model selector shows: notebook, model, validation AUC and the weights it started from."""
        auc = f"val AUC {self.val_auc:.3f}" if self.val_auc is not None else "val AUC n/a"
        model_name = self.card.get("model_name", "model")
        return f"{self.path.parent.name} / {model_name} ({auc}, {weights_description(self.card)})"


def _models_in(run_folder: Path) -> list[ModelChoice]:
    """Every ``model.keras`` one or two folders below ``run_folder`` whose card can be read."""
    found = sorted(set(run_folder.glob(f"*/{MODEL_FILE}")) | set(run_folder.glob(f"*/*/{MODEL_FILE}")))
    choices = []
    for model_path in found:
        try:
            choices.append(ModelChoice(model_path, read_card(model_path)))
        except ModelLoadError:  # no card, or an unreadable one: not offered
            continue
    return choices


def find_models(
    run_id: str | None = None, model_path: str | os.PathLike | None = None, reports_root: str | os.PathLike | None = None
) -> list[ModelChoice]:
    """The models to offer, best first (highest validation ROC AUC from the cards).

    ``model_path`` wins (a missing or card-less file raises :class:`ModelLoadError`); else every
    ``reports/<run_id>/*/model.keras`` with a card; with no ``run_id``, the run whose newest model (with a
    card) is the most recent.
    """
    if model_path is not None:
        path = Path(model_path)
        path = path / MODEL_FILE if path.is_dir() else path
        if not path.is_file():
            raise ModelLoadError(f"model file {str(path)!r} does not exist")
        return [ModelChoice(path, read_card(path))]
    root = Path(reports_root) if reports_root else paths.reports_dir()
    if not run_id:
        runs = [folder for folder in root.iterdir() if folder.is_dir()] if root.is_dir() else []
        stamps = [(choice.path.stat().st_mtime, folder.name) for folder in runs for choice in _models_in(folder)]
        run_id = max(stamps)[1] if stamps else None
    return sort_best_first(_models_in(root / run_id)) if run_id else []


def sort_best_first(choices: Iterable[ModelChoice]) -> list[ModelChoice]:
    """Highest validation AUC first; models without one keep their order, after the others."""
    return sorted(choices, key=lambda choice: (choice.val_auc is None, -(choice.val_auc or 0.0)))


def best_model(choices: Sequence[ModelChoice]) -> ModelChoice | None:
    """The model offered by default (highest validation AUC), or None when there is none."""
    ordered = sort_best_first(choices)
    return ordered[0] if ordered else None


# --------------------------------------------------------------------------- sample images

@dataclass
class SampleSet:
    """Sample image paths for the picker, their classes in the dataset, and where they came from (said in the UI)."""

    paths: list[Path] = field(default_factory=list)
    note: str = ""
    labels: list[str] = field(default_factory=list)

    def truth(self, path: str | os.PathLike) -> str | None:
        """The dataset's class of the sample at ``path`` (None for any other file)."""
        known = dict(zip(map(str, self.paths), self.labels))
        return known.get(str(path))


def _balanced_pick(labels: np.ndarray, positions: np.ndarray, n: int, seed: int) -> list[int]:
    """Up to ``n`` of ``positions``, taking the classes in turn (random within each class)."""
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(positions[labels[positions] == label])[::-1] for label in np.unique(labels[positions])]
    return [int(position) for position in chain.from_iterable(zip_longest(*pools)) if position is not None][:n]


def _test_rows(index: DatasetIndex, card: dict | None) -> tuple[DatasetIndex, np.ndarray, str]:
    """The run's data (its seeded subset, if any) and the row positions of its test split when it can be
    rebuilt, else the dataset and its own test rows; and where they come from, in words."""
    from bclib.session import subsample_patients

    split_info = (card or {}).get("split") or {}
    seed = int(split_info.get("seed") or 0)
    subset = subsample_patients(index, split_info.get("max_images"), seed)  # the run's seeded subset, if it used one
    try:
        split = make_split(subset, method=split_info.get("method", "patient"), seed=seed)
    except ValueError:  # too few patients, no official split, a method this version does not know
        split = None
    expected_hash = split_info.get("patients_hash")
    if split is not None and (not expected_hash or split.patients_hash() == expected_hash):
        return subset, np.asarray(split.positions("test")), "the test split (patients the model never saw in training)"
    frame = index.frame
    if "split" in frame.columns and (frame["split"] == "test").any():
        return index, np.flatnonzero(frame["split"].to_numpy() == "test"), "the dataset's official test split"
    return (index, np.arange(len(frame)),
            "the dataset (the run's test split could not be rebuilt: the model may have seen these)")


def sample_images(
    models: Sequence[ModelChoice] | dict | None = None,
    dataset: str = "idc",
    data_dir: str | os.PathLike | None = None,
    n: int = 4,
    seed: int = 0,
) -> SampleSet:
    """``n`` sample patches (both classes) from the test split of the run's data, for the picker.

    The dataset is the one the (best) model's card names, scanned with the card's options; ``dataset``
    only without a card that names one. The data folder is ``data_dir``, else the card's ``dataset.root``,
    else the usual lookup (:func:`bclib.paths.find_dataset_dir`). No data found gives an empty set with a note.
    """
    if n <= 0:
        return SampleSet([], "no samples requested")
    card = models if isinstance(models, dict) else (best_model(models).card if models else None)
    trained_on = (card or {}).get("dataset")
    trained_on = trained_on if isinstance(trained_on, dict) else {}
    dataset = str(trained_on.get("name") or dataset)
    root: Path | None = Path(data_dir) if data_dir else None
    card_root = trained_on.get("root")
    if root is None and card_root and Path(card_root).exists():
        root = Path(card_root)
    root = root or paths.find_dataset_dir(dataset)
    if root is None:
        return SampleSet([], f"no {dataset!r} data found for sample images (set data_dir)")
    try:
        index = scan(dataset, root, **(trained_on.get("options") or {}))
    except (ValueError, OSError, TypeError) as error:  # DatasetError is a ValueError; TypeError: an unknown option
        return SampleSet([], f"no sample images: {error}")
    if len(index.frame) == 0:
        return SampleSet([], f"the {dataset!r} data at {root} holds no images")
    index, positions, source = _test_rows(index, card)
    labels = index.frame["label"].to_numpy()
    picked = _balanced_pick(labels, positions, n * CANDIDATES_PER_SAMPLE, seed)
    files, where = _sample_files(index, picked)
    source += where
    candidates = SampleSet(files, "", [index.class_names[int(labels[p])] for p in picked])
    choice = None if isinstance(models, dict) or not models else best_model(models)
    chosen, mistakes = _with_a_mistake(candidates, choice, n) if choice else (list(range(min(n, len(picked)))), "")
    return SampleSet([candidates.paths[i] for i in chosen], f"{len(chosen)} samples from {source}{mistakes}",
                     [candidates.labels[i] for i in chosen])


def _sample_files(index: DatasetIndex, positions: Sequence[int]) -> tuple[list[Path], str]:
    """Image files of the rows at ``positions``: their own files, or, for a dataset that keeps its images in
    one array file (BreastMNIST, PCam), PNG copies in a new temporary folder; and that folder, in words."""
    from PIL import Image

    if "array_key" not in index.frame.columns:
        return [Path(index.frame["path"].iloc[p]) for p in positions], ""
    folder = Path(tempfile.mkdtemp(prefix=f"bclib-samples-{index.name}-"))
    files = []
    for position in positions:
        file = folder / f"{index.name}-{index.frame['patient_id'].iloc[position]}.png"
        Image.fromarray(index.load_image(position)).save(file)
        files.append(file)
    return files, f" (images of {Path(index.frame['path'].iloc[0]).name}, written as PNG files to {folder})"


def _with_a_mistake(candidates: SampleSet, choice: ModelChoice, n: int) -> tuple[list[int], str]:
    """The first ``n`` candidates (balanced classes) with, when the model gets none of them but some other
    candidate wrong at its threshold, that one instead of the last of its class; and what was found, in words."""
    first = list(range(min(n, len(candidates.paths))))
    try:
        predictor = Predictor.load(choice.path)
        decisions = [p.decision for p in predictor.predict_sources(candidates.paths)]
    except Exception as error:  # samples without the check rather than none
        return first, f"; not checked for mistakes ({type(error).__name__}: {error})"
    wrong = [i for i, (decision, truth) in enumerate(zip(decisions, candidates.labels)) if decision != truth]
    where = f"{predictor.model_name} at its threshold {predictor.threshold:.2f}"
    if not wrong:
        return first, (f"; of the {len(decisions)} images drawn to pick the samples from, {where} calls every one "
                       "right, so none shown is wrong")
    shown = first
    if not set(first) & set(wrong):
        same_class = [i for i in first if candidates.labels[i] == candidates.labels[wrong[0]]] or first
        shown = [wrong[0] if i == same_class[-1] else i for i in first]
    count = sum(i in wrong for i in shown)
    return shown, (f"; {count} of them {'is' if count == 1 else 'are'} called wrongly by {where} (of the "
                   f"{len(decisions)} images drawn to pick the samples from, it calls {len(wrong)} wrongly)")
