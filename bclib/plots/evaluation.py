"""Figures of an evaluation: confusion matrix, reliability, patients, Grad-CAM, slides.

Every function returns a matplotlib Figure (the notebook that shows them carries the disclaimer).
``reliability_grid``, ``patients`` and ``gradcam`` draw one model or every model of a
:class:`~bclib.evaluation.compare.RunComparison`.
"""
from __future__ import annotations

from typing import Any, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

#: The colour map of every Grad-CAM overlay (0: no evidence, 1: the image's strongest).
GRADCAM_COLORMAP = "jet"


def confusion_matrix(matrix: Sequence[Sequence[int]], class_names: Sequence[str], positive_label: int | None = 1,
                     title: str | None = None, ax=None, xlabel: str = "predicted",
                     vmax: float | None = None) -> matplotlib.figure.Figure:
    """The confusion matrix (rows = truth, columns = prediction) with named classes.

    ``matrix`` is in label order (as :func:`bclib.evaluation.metrics.binary_metrics` gives it for binary
    data: ``[[tn, fp], [fn, tp]]`` with the negative class first). The positive class is marked.
    ``ax``: draw into this axes (of a larger figure) instead of a new figure; ``vmax``: the count
    drawn darkest (give several matrices the same one to compare their colours).
    """
    counts = np.asarray(matrix, dtype=float)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"the confusion matrix must be square, got shape {counts.shape}")
    names = [str(name) for name in class_names]
    if len(names) != counts.shape[0]:
        raise ValueError(f"{len(names)} class names for a {counts.shape[0]}x{counts.shape[0]} matrix")
    if len(names) == 2 and positive_label is not None:
        # binary metrics order the matrix negative first, positive second
        ordered = [names[1 - positive_label], names[positive_label]]
        names = [ordered[0], f"{ordered[1]} (positive)"]
    if ax is None:
        size = max(3.6, 1.1 * len(names) + 1.5)
        fig, ax = plt.subplots(figsize=(size, size * 0.9))
    else:
        fig = ax.figure
    darkest = vmax or counts.max() or 1
    ax.imshow(counts, cmap="Blues", vmin=0, vmax=darkest)
    for row in range(len(names)):
        for column in range(len(names)):
            dark = counts[row, column] > 0.6 * darkest
            ax.text(column, row, f"{int(counts[row, column]):,}", ha="center", va="center",
                    color="white" if dark else "black")
    ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 2 else 0, ha="right" if len(names) > 2 else "center")
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel=xlabel, ylabel="truth", title=title or "Confusion matrix")
    fig.tight_layout()
    return fig


def reliability_diagram(y_true, prob, prob_scaled=None, temperature: float | None = None, n_bins: int = 10,
                        positive_label: int = 1, axes=None) -> matplotlib.figure.Figure:
    """Reliability diagram (top) and bin counts (bottom), before and (optionally) after scaling.

    ``axes``: a (diagram, counts) pair of a larger figure to draw into instead of a new figure.
    """
    from bclib.evaluation.calibration import expected_calibration_error, reliability_data

    if axes is None:
        fig, axes = plt.subplots(2, 1, figsize=(5, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax, ax_count = axes
    fig = ax.figure
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    series = [("before", prob)]
    if prob_scaled is not None:
        series.append((f"after T = {temperature:.2f}" if temperature else "after scaling", prob_scaled))
    width = 1.0 / n_bins
    for offset, (name, values) in enumerate(series):
        table = reliability_data(y_true, values, n_bins, positive_label)
        ece = expected_calibration_error(y_true, values, n_bins, positive_label)
        filled = table[table["count"] > 0]
        ax.plot(filled["mean_probability"], filled["positive_fraction"], "o-", label=f"{name} (ECE {ece:.3f})")
        ax_count.bar(table["bin_low"] + width * (0.25 + 0.5 * offset), table["count"], width=width / 2, alpha=0.8,
                     label=name)
    ax.set(ylabel="observed positive fraction", title="Reliability", xlim=(0, 1), ylim=(0, 1))
    ax.tick_params(labelbottom=False)  # the counts below carry the x axis
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax_count.set(xlabel="predicted probability of the positive class", ylabel="images")
    ax_count.set_yscale("log")
    ax_count.set_ylim(bottom=0.8)  # so the axis shows 1, 10, 100... whatever the counts
    ax_count.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    return fig


def patients(run: Any, name: str) -> matplotlib.figure.Figure:
    """Model ``name``'s test patients, one dot each: the share of patches called positive against the true share.

    Dot size grows with the patient's image count (a legend gives three sizes); the five patients
    furthest from the diagonal (:func:`~bclib.evaluation.metrics.worst_patients`) are labelled.
    """
    from bclib.evaluation.metrics import fraction_correlation, worst_patients

    table = run.patient_table(name)
    fig, ax = plt.subplots(figsize=(4.8, 4.6))
    largest = max(1, int(table["n"].max()))

    def size(count):
        return 15 + 85 * np.asarray(count) / largest

    ax.scatter(table["true_fraction"], table["predicted_fraction"], s=size(table["n"]), alpha=0.6, edgecolor="k",
               linewidth=0.4)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    for _, patient in worst_patients(table).iterrows():
        ax.annotate(str(patient["patient_id"]), (patient["true_fraction"], patient["predicted_fraction"]), fontsize=7)
    for count in sorted({int(table["n"].min()), int(table["n"].median()), largest}):
        ax.scatter([], [], s=size(count), color="C0", alpha=0.6, edgecolor="k", linewidth=0.4, label=f"{count}")
    ax.legend(title="patches", fontsize=7, title_fontsize=7, loc="upper left", labelspacing=1.1)
    correlation = fraction_correlation(table)["pearson_predicted_fraction"]
    label = "undefined" if correlation is None else f"{correlation:.2f}"
    ax.set(xlabel="true positive fraction (per patient)", ylabel="share of patches called positive",
           xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
    ax.set_title(f"{name}: Patients (Pearson r = {label}, n = {len(table)})", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def reliability_grid(run: Any, columns: int = 3) -> matplotlib.figure.Figure:
    """One reliability diagram per model of ``run`` (test), before and after its validation-fitted temperature."""
    from bclib.evaluation.calibration import apply_temperature

    columns = min(columns, len(run.names))
    rows = -(-len(run.names) // columns)
    fig = plt.figure(figsize=(4.2 * columns, 4.8 * rows), layout="constrained")
    grid = fig.add_gridspec(rows, columns)
    truth = run.truth("test").astype(int)
    for number, name in enumerate(run.names):
        cell = grid[divmod(number, columns)].subgridspec(2, 1, height_ratios=[3, 1])
        diagram = fig.add_subplot(cell[0])
        temperature, scores = run.temperature(name), run.scores(name, "test")
        reliability_diagram(truth, scores, apply_temperature(scores, temperature), temperature,
                            axes=(diagram, fig.add_subplot(cell[1], sharex=diagram)))
        diagram.set_title(f"{name}: reliability on test")
    return fig


def gradcam_grid(images: np.ndarray, heatmaps: np.ndarray, labels: Sequence[int], probs: Sequence[float],
                 class_names: Sequence[str], positive_label: int = 1, alpha: float = 0.4,
                 columns: int = 4, captions: Sequence[str] | None = None,
                 title: str | None = None) -> matplotlib.figure.Figure:
    """Pairs of axes per image: the image, and its Grad-CAM overlay titled with P(positive); a colour bar.

    ``heatmaps`` explain the positive class's score; ``captions``: one line per image put before its
    truth (e.g. "false positive").
    """
    from bclib.evaluation.explain import overlay

    images = np.asarray(images)
    n = len(images)
    if not n == len(heatmaps) == len(labels) == len(probs):
        raise ValueError("images, heatmaps, labels and probs must have the same length")
    if n == 0:
        raise ValueError("no images to show")
    if captions is not None and len(captions) != n:
        raise ValueError(f"{len(captions)} captions for {n} images")
    columns = max(1, min(columns, n))
    rows = int(np.ceil(n / columns))
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(2.5 * columns + 0.8, 1.55 * rows + 0.5), squeeze=False,
                             layout="constrained")
    positive_name = class_names[positive_label]
    for position in range(rows * columns):
        ax_image, ax_overlay = axes[position // columns, 2 * (position % columns): 2 * (position % columns) + 2]
        ax_image.axis("off")
        ax_overlay.axis("off")
        if position >= n:
            continue
        ax_image.imshow(images[position], interpolation="nearest")
        truth = f"truth: {class_names[int(labels[position])]}"
        ax_image.set_title(truth if captions is None else f"{captions[position]}\n{truth}", fontsize=7)
        ax_overlay.imshow(overlay(images[position], heatmaps[position], alpha, GRADCAM_COLORMAP),
                          interpolation="nearest")
        ax_overlay.set_title(f"P({positive_name}) = {float(probs[position]):.2f}", fontsize=7)
    scale = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0, 1), GRADCAM_COLORMAP)
    bar = fig.colorbar(scale, ax=axes, shrink=0.8, fraction=0.03, pad=0.01)
    bar.set_label(f"Grad-CAM for P({positive_name})\n(1: the image's strongest)", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    fig.suptitle(title or f"Grad-CAM of the P({positive_name}) score: where the model looked, not where the "
                 "disease is", fontsize=9)
    return fig


def gradcam(run: Any, name: str, per_group: int = 4) -> matplotlib.figure.Figure:
    """Model ``name``'s Grad-CAM examples (:meth:`~bclib.evaluation.compare.RunComparison.gradcam`)."""
    examples = run.gradcam(name, per_group)
    height, width = examples.feature_size
    return gradcam_grid(examples.images, examples.heatmaps, examples.labels, examples.scores, run.session.class_names,
                        run.positive_label, columns=per_group, captions=examples.groups,
                        title=f"{name}: Grad-CAM of the P({run.positive_name}) score, from its {height}x{width} "
                              "last feature map")


def slide_view(mosaic: np.ndarray, extent: Sequence[float], truth_map: np.ndarray, prob_map: np.ndarray,
               patient_id: str | None = None, positive_name: str = "IDC") -> matplotlib.figure.Figure:
    """Three panels on the same slide coordinates: mosaic | ground-truth map | probability map."""
    if truth_map.shape != prob_map.shape:
        raise ValueError(f"truth and probability maps differ in shape: {truth_map.shape} vs {prob_map.shape}")
    height, width = truth_map.shape
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6 * max(0.5, min(1.6, height / max(width, 1)))))
    axes[0].imshow(mosaic, extent=extent)
    axes[0].set_title("slide mosaic")
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
    axes[1].imshow(np.ma.masked_invalid(truth_map), extent=extent, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    axes[1].set_title(f"truth ({positive_name} = yellow)")
    shown = axes[2].imshow(np.ma.masked_invalid(prob_map), extent=extent, cmap=cmap, vmin=0, vmax=1,
                           interpolation="nearest")
    axes[2].set_title(f"predicted P({positive_name})")
    for ax in axes:
        ax.set_xlabel("x (slide pixels)")
    axes[0].set_ylabel("y (slide pixels)")
    fig.colorbar(shown, ax=list(axes), shrink=0.8, fraction=0.02, pad=0.01)
    if patient_id is not None:
        fig.suptitle(f"patient {patient_id}")
    return fig
