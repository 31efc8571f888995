"""Figures of the data itself: class balance, patients, sample grids, colours, augmentations."""
from __future__ import annotations

from typing import Mapping

import matplotlib
import matplotlib.figure
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from bclib.data.explore import tissue_mask


def class_balance(table: pd.DataFrame, title: str = "Images per class") -> matplotlib.figure.Figure:
    """Bar chart of images per class, with counts and shares written on the bars."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    bars = ax.bar(table["class"], table["images"], color=sns.color_palette("Set2", len(table)))
    for bar, count, share in zip(bars, table["images"], table["share"]):
        ax.annotate(f"{count:,}\n({share:.0%})", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.margins(y=0.25)
    fig.tight_layout()
    return fig


def patients_overview(table: pd.DataFrame, skew_for_log: float = 10.0) -> matplotlib.figure.Figure:
    """Histograms over patients: images per patient, and each patient's positive share (binary data).

    The images axis is logarithmic when the largest patient has more than ``skew_for_log`` times the
    median number of images, so the many small patients stay readable beside a few large ones.
    """
    has_fraction = "positive_fraction" in table.columns
    fig, axes = plt.subplots(1, 2 if has_fraction else 1, figsize=(10 if has_fraction else 5, 3.2), squeeze=False)
    axes = axes[0]
    counts = table["images"]
    logarithmic = bool(len(counts) and counts.min() > 0 and counts.max() > skew_for_log * counts.median())
    sns.histplot(counts, bins=30, log_scale=logarithmic, ax=axes[0], color="#4c72b0")
    axes[0].set_xlabel("images per patient" + (" (log scale)" if logarithmic else ""))
    axes[0].set_title(f"{len(table)} patients")
    if has_fraction:
        sns.histplot(table["positive_fraction"], bins=20, binrange=(0, 1), ax=axes[1], color="#c44e52")
        axes[1].set_xlabel("positive share")
        axes[1].set_title("share of each patient's images that are positive")
    for ax in axes:
        ax.set_ylabel("patients")
    fig.tight_layout()
    return fig


def sample_grid(images_by_class: dict[str, np.ndarray], columns: int = 8) -> matplotlib.figure.Figure:
    """One row of sample images per class, the class name on the left."""
    rows = len(images_by_class)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.2, rows * 1.3), squeeze=False)
    for row, (name, images) in enumerate(images_by_class.items()):
        for column in range(columns):
            ax = axes[row, column]
            ax.axis("off")
            if column < len(images):
                ax.imshow(images[column])
        axes[row, 0].set_title(name, loc="left", fontsize=10)
    fig.tight_layout()
    return fig


def colour_histograms(images: np.ndarray, labels: np.ndarray, class_names: list[str]) -> matplotlib.figure.Figure:
    """Per-channel intensity histograms of each class over its tissue pixels (:func:`bclib.data.explore.tissue_mask`).

    Each curve is a density (area 1), so classes with different numbers of pixels compare directly.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    tissue = {}  # label -> (tissue pixels, 3)
    for label in range(len(class_names)):
        chosen = images[labels == label]
        tissue[label] = chosen[tissue_mask(chosen)]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3), sharey=True)
    for channel, (ax, colour) in enumerate(zip(axes, ("red", "green", "blue"))):
        for label, name in enumerate(class_names):
            pixels = tissue[label][:, channel]
            if pixels.size:
                ax.hist(pixels, bins=64, range=(0, 255), histtype="step", density=True, label=name, linewidth=1.5)
        ax.set_title(f"{colour} channel, tissue pixels")
        ax.set_xlabel("intensity")
    axes[0].set_ylabel("density")
    axes[0].legend()
    fig.tight_layout()
    return fig


def split_overview(summary: pd.DataFrame) -> matplotlib.figure.Figure:
    """Patients and images per split, and the positive fraction of each."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    summary = summary.reset_index() if "split" not in summary.columns else summary
    sns.barplot(data=summary, x="split", y="images", ax=axes[0], color="#4c72b0")
    axes[0].set_title("images per split")
    if "positive_fraction" in summary.columns:
        sns.barplot(data=summary, x="split", y="positive_fraction", ax=axes[1], color="#c44e52")
        axes[1].set_ylim(0, 1)
        axes[1].set_ylabel("positive share")
        axes[1].set_title("positive share per split")
    fig.tight_layout()
    return fig


def _transform_title(settings: dict) -> str:
    """``RandomZoomCrop`` with ``{"zoom": 0.1, "seed": 1}`` -> ``"ZoomCrop\\nzoom 0.1"`` (seeds left out)."""
    name = str(settings.pop("layer")).removeprefix("Random")
    values = [f"{key} {value}" for key, value in settings.items()
              if key != "seed" and isinstance(value, (int, float, str)) and not isinstance(value, bool)]
    return "\n".join([name, *values[:2]])


def augmentation_examples(images_by_class: Mapping[str, np.ndarray], augmentation) -> matplotlib.figure.Figure:
    """A row per patch of ``images_by_class`` (uint8 RGB), a column per layer of ``augmentation`` (a
    ``keras.Sequential``) applied alone, then the whole stack; a panel a draw left unchanged says so.

    Fresh copies of the layers are used, so training's random state is untouched and seeded layers
    show the same draws every time.
    """
    import keras

    from bclib.data.augment import describe_layers

    row_names = [name for name, images in images_by_class.items() for _ in range(len(images))]
    originals = np.concatenate([np.asarray(images) for images in images_by_class.values()])
    if len(originals) == 0:
        raise ValueError("no images to augment: images_by_class holds no patches")
    batch = originals.astype("float32")
    copies = [type(layer).from_config(layer.get_config()) for layer in augmentation.layers]
    columns = [("original", originals)]
    for layer, settings in zip(copies, describe_layers(augmentation)):
        columns.append((_transform_title(settings), np.asarray(layer(batch, training=True))))
    whole = keras.Sequential([type(layer).from_config(layer.get_config()) for layer in augmentation.layers])
    columns.append(("all together", np.asarray(whole(batch, training=True))))

    rows = len(originals)
    fig, axes = plt.subplots(rows, len(columns), figsize=(len(columns) * 1.45, rows * 1.45 + 0.6), squeeze=False)
    for column, (title, images) in enumerate(columns):
        axes[0, column].set_title(title, fontsize=8)
        for row in range(rows):
            ax = axes[row, column]
            ax.imshow(np.clip(images[row], 0, 255).astype(np.uint8))
            ax.set_xticks([])
            ax.set_yticks([])
            if column and np.array_equal(images[row], batch[row]):
                ax.text(0.5, 0.04, "unchanged by this draw", transform=ax.transAxes, ha="center", va="bottom",
                        fontsize=7, bbox={"facecolor": "white", "alpha": 0.85, "linewidth": 0})
    for row, name in enumerate(row_names):
        axes[row, 0].set_ylabel(name, fontsize=9)
    fig.tight_layout()
    return fig
