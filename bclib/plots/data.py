"""Figures of the data itself: class balance, patients, sample grids, colours."""
from __future__ import annotations

import matplotlib

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns


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


def patients_overview(table: pd.DataFrame) -> matplotlib.figure.Figure:
    """Images per patient, and each patient's positive fraction (when the data is binary)."""
    has_fraction = "positive_fraction" in table.columns
    fig, axes = plt.subplots(1, 2 if has_fraction else 1, figsize=(10 if has_fraction else 5, 3.2), squeeze=False)
    axes = axes[0]
    sns.histplot(table["images"], bins=30, ax=axes[0], color="#4c72b0")
    axes[0].set_xlabel("images per patient")
    axes[0].set_title(f"{len(table)} patients")
    if has_fraction:
        sns.histplot(table["positive_fraction"], bins=20, ax=axes[1], color="#c44e52")
        axes[1].set_xlabel("positive fraction of a patient's images")
        axes[1].set_title("patients differ: split by patient")
    fig.tight_layout()
    return fig


def sample_grid(images_by_class: dict[str, np.ndarray], columns: int = 8, title: str | None = None) -> matplotlib.figure.Figure:
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
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def colour_histograms(images: np.ndarray, labels: np.ndarray, class_names: list[str]) -> matplotlib.figure.Figure:
    """Per-channel intensity histograms for each class (tissue pixels)."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3), sharey=True)
    for channel, (ax, colour) in enumerate(zip(axes, ("red", "green", "blue"))):
        for label, name in enumerate(class_names):
            chosen = images[labels == label][..., channel].ravel()
            if chosen.size:
                ax.hist(chosen, bins=64, range=(0, 255), histtype="step", density=True, label=name, linewidth=1.5)
        ax.set_title(f"{colour} channel")
        ax.set_xlabel("intensity")
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
        axes[1].set_title("positive fraction per split")
    fig.tight_layout()
    return fig


def augmentation_examples(images: np.ndarray, augmenter, n_versions: int = 6, seed: int = 0) -> matplotlib.figure.Figure:
    """Each row: an original patch, then ``n_versions`` random augmentations of it."""
    import tensorflow as tf

    import keras

    keras.utils.set_random_seed(seed)
    rows = len(images)
    fig, axes = plt.subplots(rows, n_versions + 1, figsize=((n_versions + 1) * 1.3, rows * 1.35), squeeze=False)
    batch = tf.convert_to_tensor(np.asarray(images), dtype=tf.float32)
    versions = [np.clip(np.asarray(augmenter(batch, training=True)), 0, 255).astype(np.uint8) for _ in range(n_versions)]
    for row in range(rows):
        axes[row, 0].imshow(images[row])
        for column in range(n_versions):
            axes[row, column + 1].imshow(versions[column][row])
    for ax in axes.ravel():
        ax.axis("off")
    axes[0, 0].set_title("original", fontsize=9)
    for column in range(n_versions):
        axes[0, column + 1].set_title(f"augmented {column + 1}", fontsize=9)
    fig.tight_layout()
    return fig
