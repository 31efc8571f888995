"""Learning curves: training vs validation, one panel per metric."""
from __future__ import annotations

from typing import Sequence

import matplotlib.figure
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def plot_history(history, metrics: Sequence[str] = ("loss", "auc"), title: str | None = None) -> matplotlib.figure.Figure:
    """Train (solid) and validation (dashed) curves of each metric in ``history``.

    ``history``: what ``model.fit`` returns, its ``.history`` dict, or a ``history.csv`` read back
    (columns ``loss``, ``val_loss``, ``auc``, ...). Metrics missing from it are left out. A dotted
    line marks the epoch of the highest validation AUC.
    """
    history = pd.DataFrame(getattr(history, "history", history))
    if history.empty:
        raise ValueError("the history is empty: nothing to plot")
    present = [m for m in metrics if m in history.columns or f"val_{m}" in history.columns]
    if not present:
        raise ValueError(f"none of {list(metrics)} in the history columns {list(history.columns)}")
    epochs = history["epoch"].to_numpy() if "epoch" in history.columns else np.arange(1, len(history) + 1)
    best_epoch = None
    if "val_auc" in history.columns and history["val_auc"].notna().any():
        best_epoch = int(epochs[int(np.nanargmax(history["val_auc"].to_numpy(dtype=float)))])
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], present):
        if metric in history.columns:
            ax.plot(epochs, history[metric], marker="o", color="#4c72b0", label="train")
        if f"val_{metric}" in history.columns:
            ax.plot(epochs, history[f"val_{metric}"], marker="o", linestyle="--", color="#dd8452", label="validation")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(metric)
        if len(epochs) < 15:
            ax.set_xticks(epochs)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
