"""Whole-slide views of one IDC patient from the patches' x/y coordinates, and a run's models on them.

IDC file names carry each patch's top-left pixel in the original slide
(``<patient>_idx5_x<X>_y<Y>_class<C>.png``); patches are ``patch_size`` (50) pixels apart.
:func:`build_mosaic` pastes the patches back at their places; :func:`label_map` and
:func:`probability_map` give one cell per patch on the same grid, ``NaN`` where the slide has
no patch (background that the dataset authors dropped). All three share one ``extent``
``(left, right, bottom, top)`` in slide pixels, ready for ``imshow(..., extent=extent)``.
:func:`slides` draws one model's probability map beside the truth for chosen patients.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def _checked_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """One patient's rows with ``x`` and ``y`` coordinates, renumbered 0..n-1."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"expected a DataFrame of one patient's patches, got {type(frame).__name__}")
    missing = [column for column in ("x", "y") if column not in frame.columns]
    if missing:
        raise ValueError(f"a slide view needs the IDC patch coordinates; the frame lacks {missing}")
    if frame.empty:
        raise ValueError("no patches to place")
    if "patient_id" in frame.columns and frame["patient_id"].nunique() > 1:
        raise ValueError(
            f"the frame holds {frame['patient_id'].nunique()} patients; select one patient's rows "
            "(frame[frame.patient_id == ...]) — coordinates of different slides overlap"
        )
    return frame.reset_index(drop=True)


def grid_cells(frame: pd.DataFrame, patch_size: int = 50
               ) -> tuple[np.ndarray, np.ndarray, tuple[int, int], tuple[float, float, float, float]]:
    """Each patch's (row, column) on the patch grid, the grid shape, and its extent in slide pixels."""
    frame = _checked_frame(frame)
    if patch_size < 1:
        raise ValueError(f"patch_size must be positive, got {patch_size}")
    x, y = frame["x"].to_numpy(dtype=np.int64), frame["y"].to_numpy(dtype=np.int64)
    x0, y0 = int(x.min()), int(y.min())
    columns = np.rint((x - x0) / patch_size).astype(int)
    rows = np.rint((y - y0) / patch_size).astype(int)
    shape = (int(rows.max()) + 1, int(columns.max()) + 1)
    extent = (float(x0), float(x0 + shape[1] * patch_size), float(y0 + shape[0] * patch_size), float(y0))
    return rows, columns, shape, extent


def build_mosaic(frame: pd.DataFrame, images, patch_size: int = 50,
                 background: int = 255) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Paste every patch at its x/y; return ``(rgb uint8 mosaic, extent)``.

    ``frame`` is one patient's rows (``x``, ``y``); ``images`` the patches in the same order.
    Patches smaller than ``patch_size`` (slide edges) are pasted as they are.
    """
    data = _checked_frame(frame)
    if len(images) != len(data):
        raise ValueError(f"{len(images)} images for {len(data)} rows")
    _, _, shape, extent = grid_cells(data, patch_size)
    height, width = shape[0] * patch_size, shape[1] * patch_size
    canvas = np.full((height, width, 3), background, dtype=np.uint8)
    tops = data["y"].to_numpy(dtype=np.int64) - int(extent[3])
    lefts = data["x"].to_numpy(dtype=np.int64) - int(extent[0])
    for top, left, patch in zip(tops, lefts, images):
        patch = np.asarray(patch, dtype=np.uint8)[: height - top, : width - left]
        canvas[top:top + patch.shape[0], left:left + patch.shape[1]] = patch
    return canvas, extent


def _cell_map(frame: pd.DataFrame, values: np.ndarray, patch_size: int) -> np.ndarray:
    rows, columns, shape, _ = grid_cells(frame, patch_size)
    grid = np.full(shape, np.nan, dtype=np.float64)
    grid[rows, columns] = values
    return grid


def label_map(frame: pd.DataFrame, patch_size: int = 50) -> np.ndarray:
    """The ground truth on the patch grid: 1.0 IDC, 0.0 non-IDC, ``NaN`` where no patch."""
    if "label" not in frame.columns:
        raise ValueError("the frame has no 'label' column")
    return _cell_map(frame, frame["label"].to_numpy(dtype=np.float64), patch_size)


def probability_map(frame: pd.DataFrame, probs, patch_size: int = 50) -> np.ndarray:
    """Predicted probabilities on the same grid as :func:`label_map` (``NaN`` where no patch)."""
    values = np.asarray(probs, dtype=np.float64).reshape(-1)
    if len(values) != len(frame):
        raise ValueError(f"{len(values)} probabilities for {len(frame)} patches")
    return _cell_map(frame, values, patch_size)


def slides(run: Any, name: str, patients: list[str]) -> tuple[dict[str, Any], pd.DataFrame]:
    """Model ``name`` of ``run`` (a :class:`~bclib.evaluation.compare.RunComparison`) on whole slides:
    mosaic | truth | predicted probability for each requested patient in the data, and a table of each
    shown patient's split, patches and within-slide ROC-AUC."""
    from bclib.evaluation.metrics import positive_probability, roc_auc
    from bclib.models.training import predict_probabilities
    from bclib.plots.evaluation import slide_view

    session = run.session
    frame = session.cache.index.frame
    if not {"x", "y"} <= set(frame.columns):
        print("this dataset carries no patch coordinates: no whole-slide view")
        return {}, pd.DataFrame()
    entry = run.entry(name)
    split_of = {str(patient): split for split in ("train", "val", "test")
                for patient in session.split.patients(split)}
    figures, rows = {}, []
    patient_ids = frame["patient_id"].astype(str).to_numpy()
    requested = list(dict.fromkeys(map(str, patients)))  # each patient once, in the order given
    absent = [patient for patient in requested if patient not in set(patient_ids)]
    if absent:
        print(f"not in the data at hand: {'patient' if len(absent) == 1 else 'patients'} {', '.join(absent)}")
    for patient in (patient for patient in requested if patient not in absent):
        positions = np.flatnonzero(patient_ids == patient)
        patient_frame = frame.iloc[positions].reset_index(drop=True)
        data = session.dataset("test", image_size=entry.input_size, training=False, positions=positions)
        scores = positive_probability(predict_probabilities(entry.model(), data), run.positive_label)
        truth = np.asarray(session.cache.labels)[positions] == run.positive_label
        canvas, extent = build_mosaic(patient_frame, images=session.cache.images[positions],
                                      patch_size=session.pack_size)
        fig = slide_view(canvas, extent, label_map(patient_frame.assign(label=truth.astype(int))),
                         probability_map(patient_frame, scores), positive_name=run.positive_name)
        where = split_of.get(patient, "unknown")
        fig.suptitle(f"patient {patient}: {where.upper()} split, {len(positions)} patches · {name}"
                     + ("" if where == "test" else "  (the model learnt from or was tuned on this patient)"))
        figures[f"slide_{patient}_{name}"] = fig
        rows.append({"patient": patient, "split": where, "patches": len(positions),
                     "positive_fraction": float(truth.mean()), "mean_probability": float(scores.mean()),
                     "roc_auc": roc_auc(truth.astype(int), scores) if 0 < truth.sum() < len(truth) else None})
    return figures, pd.DataFrame(rows)
