"""Dataset exploration for notebook 01: tables a learner reads before any model is trained, the words
the series' sentences use for a dataset, and notebook 01's conclusions."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image

from bclib.data.index import DatasetIndex


@dataclass(frozen=True)
class DatasetWords:
    """How sentences name a dataset and its images, so that a conclusion is true on every dataset."""

    title: str                   # "IDC", "BreastMNIST"
    image: str                   # "patch" (cut from a larger image) or "image"
    images: str                  # the plural
    kind: str                    # what the images are: "H&E histopathology patches", "ultrasound images"
    stained_tissue: bool         # H&E histology: tissue, stain and nuclei words apply
    one_image_per_patient: bool  # no patient ids published: every image counts as its own patient

    @property
    def indefinite(self) -> str:
        """``a patch``, ``an image``."""
        return ("an " if self.image[0] in "aeiou" else "a ") + self.image

    def count(self, number: int) -> str:
        """``1 patch``, ``1,234 patches``."""
        return f"{number:,} {self.image if number == 1 else self.images}"


#: name -> (title, image, images, kind, stained tissue); any other dataset gets neutral words.
_DATASET_WORDS = {
    "idc": ("IDC", "patch", "patches", "H&E histopathology patches", True),
    "pcam": ("PCam", "patch", "patches", "H&E histopathology patches", True),
    "breakhis": ("BreakHis", "image", "images", "H&E histopathology images", True),
    "breastmnist": ("BreastMNIST", "image", "images", "ultrasound images", False),
    "mias": ("MIAS", "image", "images", "mammograms", False),
}


def dataset_words(name: str, one_image_per_patient: bool = False) -> DatasetWords:
    """The words for dataset ``name`` (a registry name, e.g. ``"breastmnist"``)."""
    title, image, images, kind, stained = _DATASET_WORDS.get(name, (name, "image", "images", "images", False))
    return DatasetWords(title, image, images, kind, stained, one_image_per_patient)


def index_words(index: DatasetIndex) -> DatasetWords:
    """The words for a scanned dataset; it has one image per patient when no patient id repeats."""
    return dataset_words(index.name, bool(len(index)) and index.frame["patient_id"].nunique() == len(index))


def card_words(card: dict) -> DatasetWords:
    """The words for the dataset a model card records (IDC's for a card without one)."""
    dataset, split = card.get("dataset") or {}, card.get("split") or {}
    images, patients = split.get("images") or {}, split.get("patients") or {}
    return dataset_words(dataset.get("name", "idc"), bool(images) and images == patients)


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


# ----- notebook 01's conclusions -------------------------------------------------------------------------
def about_text(index: DatasetIndex, words: DatasetWords) -> str:
    """What this run's data is: the dataset, its images, patients and classes."""
    title = f"the synthetic {words.title} demo" if index.synthetic else words.title
    patients = int(index.frame["patient_id"].nunique())
    kind = f"generated {words.images} in {words.title}'s layout" if index.synthetic else words.kind
    text = f"this run uses {title}: {len(index):,} {kind}"
    text += "" if words.one_image_per_patient else f" of {patients:,} patients"
    names = [str(name) for name in index.class_names]
    if index.positive_label is None:
        text += f" in {len(names)} classes: {', '.join(names)}."
    else:
        negative = names[1 - index.positive_label]
        text += (f", labelled {names[index.positive_label]} (the positive class: the disease, which the models look "
                 f"for) or {negative} (the negative class).")
    if words.one_image_per_patient:
        text += (f" {words.title} publishes no patient ids, so every image counts as its own patient: where the "
                 "notebooks say patients, read images.")
    return text


def class_balance_text(balance: pd.DataFrame, words: DatasetWords) -> str:
    """The majority class against always answering it (``balance``: ``images`` and ``share`` by class, largest first)."""
    majority, minority = balance.index[0], balance.index[-1]
    share = balance["share"].iloc[0]
    ratio = balance["images"].iloc[0] / balance["images"].iloc[-1]
    return (f"{share:.1%} of the {words.images} are {majority}, {ratio:.2f} per {minority} {words.image}. A model "
            f"that always answers '{majority}' is right {share:.1%} of the time without looking at a single image: "
            "accuracy alone says little on such data, so this series reports metrics that look at each class "
            "separately (notebook 02 defines them).")


def patient_spread_text(patients: pd.DataFrame, words: DatasetWords, positive_name: str | None) -> str:
    """How many images the patients give and how their positive share varies (``patients``: ``images`` and
    ``positive_share`` by patient)."""
    sizes = patients["images"]
    if words.one_image_per_patient:
        text = (f"{words.title} gives no patient ids, so each of its {len(patients):,} images counts as a patient of "
                "its own")
        return text + ("." if positive_name is None else
                       f": a patient's {positive_name} share is 0 % or 100 %, and how alike the images of one "
                       "person are cannot be seen here.")
    heavy = sizes.quantile(0.9) > 2 * sizes.median()
    if sizes.min() == sizes.max():
        text = f"each of the {len(patients):,} patients gives {words.count(int(sizes.min()))}: they weigh the same."
    else:
        text = (f"{len(patients):,} patients give between {sizes.min():,} and {sizes.max():,} {words.images} "
                f"(median {sizes.median():.0f}): "
                + (f"the top tenth give more than {sizes.quantile(0.9):.0f} each, so a few patients weigh much more "
                   "than the others." if heavy else "they weigh about the same."))
    if positive_name is not None:
        text += (f" Their {positive_name} share ranges from {patients['positive_share'].min():.0%} to "
                 f"{patients['positive_share'].max():.0%}: how much disease {words.indefinite} shows depends on "
                 "whose it is.")
    return text


def brightness_text(colours: pd.DataFrame, words: DatasetWords) -> str:
    """Whether the classes differ in mean brightness beyond the spread within a class (``colours`` from
    :func:`colour_statistics`, indexed by class)."""
    brightness = colours[["R_mean", "G_mean", "B_mean"]].mean(axis=1)
    gap, spread = brightness.max() - brightness.min(), colours["patch_brightness_std"].mean()
    subject = f"{brightness.idxmin()} tissue" if words.stained_tissue else f"{brightness.idxmin()} {words.images}"
    text = (f"{subject} {'is' if words.stained_tissue else 'are'} darker on average (mean intensity "
            f"{brightness.min():.0f} against {brightness.max():.0f} for {brightness.idxmax()}, a gap of {gap:.0f}), while "
            f"the {words.images} of one class spread by about {spread:.0f} around their class's mean brightness: ")
    if spread > gap / 2:
        return text + (f"the classes overlap widely, so brightness alone cannot tell {words.indefinite}'s "
                       f"class and the network must learn {'the tissue' if words.stained_tissue else 'the image'}'s "
                       "structure.")
    return text + ("the classes barely overlap in brightness, so on this data brightness alone goes a long way (a model "
                   + ("could learn the stain rather than the tissue: notebook 04's stain jitter works against that)."
                      if words.stained_tissue else
                      "could learn the brightness rather than what the images show: notebook 04's brightness and "
                      "contrast jitter works against that)."))


def size_text(anomalies: pd.DataFrame, n_images: int, pack_size: int, words: DatasetWords) -> str:
    """How many images are not ``pack_size`` square, and what the cache does with them (``anomalies`` from
    :func:`size_anomalies`)."""
    if not len(anomalies):
        return f"every {words.image} here is {pack_size}x{pack_size}: nothing to pad or shrink."
    area = anomalies["width"] * anomalies["height"]
    smaller = int(((anomalies["width"] <= pack_size) & (anomalies["height"] <= pack_size)).sum())
    extreme = anomalies.loc[area.idxmin() if smaller else area.idxmax()]
    text = (f"{len(anomalies):,} of {words.count(n_images)} {'is' if len(anomalies) == 1 else 'are'} not "
            f"{pack_size}x{pack_size} (the {'smallest' if smaller else 'largest'} is "
            f"{extreme['width']}x{extreme['height']}): the cache ")
    if len(anomalies) == 1:
        return text + ("pads it with white" if smaller else "shrinks it keeping its aspect ratio, then pads it") + \
            "; nothing is stretched."
    actions = []
    if smaller:
        actions.append("pads the smaller ones with white")
    if smaller < len(anomalies):
        actions.append("shrinks the larger ones keeping their aspect ratio, then pads them")
    return text + " and ".join(actions) + "; nothing is stretched."


def split_text(summary: pd.DataFrame, overlap: set, words: DatasetWords, positive_name: str | None) -> str:
    """Patients on both sides of the split, and the positive share of each part (``summary`` from
    ``Split.summary()``)."""
    if words.one_image_per_patient:
        text = (f"{words.title} gives no patient ids, so a split by patient is a split by image: if one person gave "
                "several images, they may sit in two parts, and no split of this data can prevent it.")
    else:
        text = f"{len(overlap)} patients are in both train and test."
    if positive_name is None or "positive_fraction" not in summary.columns:
        return text
    shares = summary["positive_fraction"]
    why = "the luck of the draw" if words.one_image_per_patient else "whole patients move together"
    parts = ", ".join(f"{share:.1%} in {name}" for name, share in shares.items())
    return text + (f" The {positive_name} share is {parts}: {why}, so the shares differ by up to "
                   f"{round(100 * shares.max(), 1) - round(100 * shares.min(), 1):.1f} points between the parts"
                   + ("." if words.one_image_per_patient else ", the price of an honest test."))
