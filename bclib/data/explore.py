"""Dataset exploration for notebook 01: tables a learner reads before any model is trained."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from PIL import Image

from bclib.data.index import DatasetIndex


def class_balance(index: DatasetIndex) -> pd.DataFrame:
    """Images per class, their share, and the ratio to the largest class."""
    counts = index.frame["label"].value_counts().reindex(range(index.num_classes), fill_value=0)
    table = pd.DataFrame({"class": index.class_names, "images": counts.to_numpy()})
    table["share"] = table["images"] / max(1, table["images"].sum())
    table["vs_largest"] = table["images"] / max(1, table["images"].max())
    return table


def patient_table(index: DatasetIndex) -> pd.DataFrame:
    """One row per patient: images, images per class, and the positive fraction."""
    frame = index.frame
    table = pd.crosstab(frame["patient_id"], frame["label"]).reindex(columns=range(index.num_classes), fill_value=0)
    table.columns = [str(name) for name in index.class_names]
    table.insert(0, "images", table.sum(axis=1))
    if index.positive_label is not None:
        table["positive_fraction"] = table[str(index.class_names[index.positive_label])] / table["images"]
    return table.sort_values("images", ascending=False)


def image_sizes(index: DatasetIndex) -> pd.DataFrame:
    """Width and height of every file, read from headers only (fast, no decoding)."""

    def size_of(path: str) -> tuple[int, int]:
        try:
            with Image.open(path) as image:
                return image.size
        except OSError:
            return (-1, -1)

    if "array_key" in index.frame.columns:
        shape = index.load_image(0).shape
        return pd.DataFrame({"width": shape[1], "height": shape[0]}, index=index.frame.index)
    with ThreadPoolExecutor(max_workers=4) as pool:
        sizes = list(pool.map(size_of, index.frame["path"]))
    return pd.DataFrame(sizes, columns=["width", "height"], index=index.frame.index)


def size_anomalies(index: DatasetIndex, expected: int | None = None) -> pd.DataFrame:
    """Images whose size differs from the most common one (IDC: edge patches under 50x50)."""
    sizes = image_sizes(index)
    expected_size = sizes.value_counts().idxmax() if expected is None else (expected, expected)
    odd = (sizes["width"] != expected_size[0]) | (sizes["height"] != expected_size[1])
    return index.frame.loc[odd, ["path", "label_name", "patient_id"]].join(sizes[odd]).reset_index(drop=True)


#: A pixel is tissue when its darkest channel is below this (the near-white background and fat are not).
TISSUE_BELOW = 220


def tissue_mask(images: np.ndarray) -> np.ndarray:
    """True for the tissue pixels of ``images`` (..., 3): those whose darkest channel is below :data:`TISSUE_BELOW`."""
    return np.asarray(images).min(axis=-1) < TISSUE_BELOW


def colour_statistics(images: np.ndarray, labels: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """Per class: the mean and standard deviation of each RGB channel over tissue pixels, and the spread
    (standard deviation) of the patches' own mean tissue brightness."""
    rows = []
    for label, name in enumerate(class_names):
        chosen = np.asarray(images[labels == label])
        if len(chosen) == 0:
            continue
        mask = tissue_mask(chosen)
        pixels = chosen[mask].astype(np.float64)
        row = {"class": name, "images": int(len(chosen)), "tissue_share": float(mask.mean())}
        for channel, channel_name in enumerate("RGB"):
            row[f"{channel_name}_mean"] = pixels[:, channel].mean()
            row[f"{channel_name}_std"] = pixels[:, channel].std()
        row["patch_brightness_std"] = float(np.nanstd(patch_brightness(chosen)))
        rows.append(row)
    return pd.DataFrame(rows)


def patch_brightness(images: np.ndarray) -> np.ndarray:
    """Each patch's mean intensity over its tissue pixels (NaN for a patch without tissue)."""
    images = np.asarray(images, dtype=np.float64)
    mask = tissue_mask(images)
    totals = (images.mean(axis=-1) * mask).sum(axis=(1, 2))
    counts = mask.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, totals / counts, np.nan)


def sample_positions(labels: np.ndarray, per_class: int, seed: int = 0) -> dict[int, np.ndarray]:
    """Up to ``per_class`` random positions of each label (seeded)."""
    rng = np.random.default_rng(seed)
    chosen = {}
    for label in np.unique(labels):
        positions = np.flatnonzero(labels == label)
        chosen[int(label)] = np.sort(rng.choice(positions, size=min(per_class, len(positions)), replace=False))
    return chosen


def balanced_sample(images: np.ndarray, labels: np.ndarray, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``per_class`` images of each label, read from a (memory-mapped) array in order."""
    chosen = sample_positions(labels, per_class, seed)
    positions = np.sort(np.concatenate(list(chosen.values())))
    return np.asarray(images[positions]), np.asarray(labels[positions])
