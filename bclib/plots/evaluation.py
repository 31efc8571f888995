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


def reliability_grid(run: Any, columns: int = 3, platt: bool = False) -> matplotlib.figure.Figure:
    """One reliability diagram per model of ``run`` on test, with the bin counts below it: the observed
    positive fraction per bin of predicted probability, uncalibrated and after the temperature (and, with
    ``platt``, the Platt scaling) fitted on validation."""
    from bclib.evaluation.calibration import (
        apply_platt, apply_temperature, expected_calibration_error, fit_platt, reliability_data,
    )

    columns = min(columns, len(run.names))
    rows = -(-len(run.names) // columns)
    fig = plt.figure(figsize=(4.4 * columns, 5.0 * rows), layout="constrained")
    grid = fig.add_gridspec(rows, columns)
    truth = run.truth("test").astype(int)
    for number, name in enumerate(run.names):
        cell = grid[divmod(number, columns)].subgridspec(2, 1, height_ratios=[3, 1.2])
        ax = fig.add_subplot(cell[0])
        ax_count = fig.add_subplot(cell[1], sharex=ax)
        temperature, scores = run.temperature(name), run.scores(name, "test")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
        series = {"uncalibrated": scores, f"T = {temperature:.2f}": apply_temperature(scores, temperature)}
        if platt:
            series["Platt"] = apply_platt(scores, *fit_platt(run.truth("val").astype(int), run.scores(name, "val")))
        for offset, (label, values) in enumerate(series.items()):
            table = reliability_data(truth, values)
            width = (table["bin_high"] - table["bin_low"]) / len(series)
            filled = table[table["count"] > 0]
            ece = expected_calibration_error(truth, values)
            ax.plot(filled["mean_probability"], filled["positive_fraction"], "o-", ms=4,
                    label=f"{label} (ECE {ece:.3f})")
            ax_count.bar(table["bin_low"] + width * (offset + 0.5), table["count"], width=width, alpha=0.8)
        ax.set(ylabel="observed positive fraction", title=f"{name}: reliability on test", xlim=(0, 1), ylim=(0, 1))
        ax.tick_params(labelbottom=False)  # the counts below carry the x axis
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
        ax_count.set(xlabel="predicted probability of the positive class", ylabel="patches per bin")
        ax_count.set_xticks(np.linspace(0, 1, 6))
        ax_count.set_yscale("log")
        ax_count.set_ylim(bottom=0.8)  # so the axis shows 1, 10, 100... whatever the counts
        ax_count.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, numticks=4))
        ax_count.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax_count.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        ax_count.set_title("test patches per bin (colours as above)", fontsize=8)
    return fig


def leakage_differences(series: Any) -> matplotlib.figure.Figure:
    """The leakage lesson's difference itself (:func:`bclib.evaluation.leakage.memoriser_lesson`): image-level
    minus patient-level test ROC-AUC for each seed with its patient interval, and their mean with its interval."""
    table, result = series.table, series.difference
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    positions = np.arange(len(table))
    ax.errorbar(positions, table["difference"], yerr=[table["difference"] - table["ci low"],
                                                      table["ci high"] - table["difference"]],
                fmt="o", color="C0", capsize=3, label="one seed, 95 % patient interval")
    mean_position = len(table) + 0.6
    interval = result["ci"] or [result["difference"]] * 2
    ax.errorbar([mean_position], [result["difference"]], yerr=[[result["difference"] - interval[0]],
                                                             [interval[1] - result["difference"]]],
                fmt="D", color="C3", capsize=4, ms=7, label="mean over seeds, 95 % patient interval")
    ax.axhline(0, color="k", lw=0.8, ls="--")
    ax.set_xticks([*positions, mean_position], [*(str(seed) for seed in table.index), "mean"])
    ax.set(xlabel="seed (which half of each test patient's patches is seen in training)",
           ylabel="ROC-AUC difference\n(image-level - patient-level)",
           title=f"Leakage: {result['k']} nearest neighbours on colour statistics, same test patches")
    ax.legend(fontsize=7, loc="best")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def gradcam(run: Any, name: str, per_group: int = 4) -> matplotlib.figure.Figure:
    """Model ``name``'s Grad-CAM examples (:meth:`~bclib.evaluation.compare.RunComparison.gradcam`), a pair of
    axes each: the image titled with its group and truth, its overlay titled with P(positive); a colour bar."""
    from bclib.evaluation.explain import overlay

    examples = run.gradcam(name, per_group)
    n, positive_name = len(examples.images), run.positive_name
    columns = max(1, min(per_group, n))
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(2.5 * columns + 0.8, 1.55 * rows + 0.5), squeeze=False,
                             layout="constrained")
    for position in range(rows * columns):
        ax_image, ax_overlay = axes[position // columns, 2 * (position % columns): 2 * (position % columns) + 2]
        ax_image.axis("off")
        ax_overlay.axis("off")
        if position >= n:
            continue
        image = examples.images[position]
        truth = run.session.class_names[int(examples.labels[position])]
        ax_image.imshow(image, interpolation="nearest")
        ax_image.set_title(f"{examples.groups[position]}\ntruth: {truth}", fontsize=7)
        ax_overlay.imshow(overlay(image, examples.heatmaps[position], colormap=GRADCAM_COLORMAP), interpolation="nearest")
        ax_overlay.set_title(f"P({positive_name}) = {float(examples.scores[position]):.2f}", fontsize=7)
    scale = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0, 1), GRADCAM_COLORMAP)
    bar = fig.colorbar(scale, ax=axes, shrink=0.8, fraction=0.03, pad=0.01)
    bar.set_label(f"Grad-CAM for P({positive_name})\n(1: the image's strongest)", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    height, width = examples.feature_size
    fig.suptitle(f"{name}: Grad-CAM of the P({positive_name}) score, from its {height}x{width} last feature map",
                 fontsize=9)
    return fig


def slide_view(mosaic: np.ndarray, extent: Sequence[float], truth_map: np.ndarray, prob_map: np.ndarray,
               positive_name: str = "IDC") -> matplotlib.figure.Figure:
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
    return fig
