"""The two phases of transfer learning, as notebooks 05 and 06 run them.

Phase 1 trains the head on backbone features computed once (the backbone is frozen, so its output
never changes); phase 2 unfreezes the top of the backbone and fine-tunes at a lower learning rate
with BatchNorm kept in inference mode.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bclib.models import features
from bclib.models import builders as models
from bclib.models import training as train

RANDOM_WEIGHTS_BANNER = (
    "NO IMAGENET WEIGHTS: the backbone starts from random initialisation, so this is NOT transfer "
    "learning and its scores say nothing about what pretrained features would do."
)


@dataclass
class Phase1Result:
    """Phase 1: the head trained on cached features, and the measured speed-up."""

    head: Any
    history: pd.DataFrame
    seconds: float
    extraction_seconds: float
    speedup: pd.DataFrame
    speedup_factor: float


def show_weights(model: Any) -> dict:
    """Display which weights the backbone really has (a loud banner when random); return the card entry."""
    record = models.weights_record(model)
    choice = getattr(model, "bclib_weights", None)
    banner = getattr(choice, "banner", None) or (RANDOM_WEIGHTS_BANNER if record.get("used") == "random" else None)
    try:
        from IPython.display import HTML, display

        if record.get("used") == "random":
            text = (banner or RANDOM_WEIGHTS_BANNER).replace("\n", "<br>")
            display(HTML(f'<div style="border:3px solid #b00020;color:#b00020;padding:8px 12px;font-weight:bold">{text}</div>'))
        else:
            display(HTML(f'<div style="border:2px solid #2e7d32;color:#2e7d32;padding:6px 12px">Backbone weights: {record.get("used")}</div>'))
    except ImportError:  # outside IPython: plain text
        print(banner or f"Backbone weights: {record.get('used')}")
    return record


def estimate_batchnorm_statistics(model: Any, images: np.ndarray, batch_size: int = 256) -> int:
    """Set the backbone's BatchNorm moving statistics from ``images`` (raw RGB 0..255).

    A randomly initialised backbone has moving means 0 and variances 1, which in inference mode
    leave its activations unnormalised: deep in the network they vanish or explode and every patch
    gets the same features (the head then learns nothing). Running one large batch through the
    backbone in training mode with momentum 0 replaces those statistics by the batch's, layer by
    layer, without training any weight. Used only when ImageNet weights are missing.
    Returns the number of BatchNorm layers updated.
    """
    import tensorflow as tf

    batch = tf.convert_to_tensor(np.asarray(images[:batch_size], dtype=np.float32))
    return models.calibrate_batchnorm(models.get_backbone(model), model.get_layer("preprocess")(batch))


def _rows_key(positions: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(positions, dtype=np.int64).tobytes()).hexdigest()[:12]


def train_head_on_cached_features(
    session: Any,
    model: Any,
    image_size: int,
    epochs: int,
    learning_rate: float,
    class_weight: dict | None = None,
) -> Phase1Result:
    """Compute frozen-backbone features once for train and val, train the head on them, put it back.

    The speed-up is measured in this run, on the same patches: a training epoch through the frozen
    backbone against an epoch on the cached features (``speedup_images`` patches of the profile).
    """
    seed = int(session.params["seed"])
    batch_size = int(session.params["batch_size"])
    weights_used = models.weights_record(model).get("used")
    if weights_used == "random":
        sample = _resized_sample(session, image_size, 256, seed)
        count = estimate_batchnorm_statistics(model, sample)
        print(f"random backbone: {count} BatchNorm layers given statistics from {len(sample)} training patches "
              "(no weight trained; without this every patch would get the same features)")
    extractor, _ = models.backbone_and_head(model)
    started = time.perf_counter()
    cached: dict[str, np.ndarray] = {}
    for split_name in ("train", "val"):
        positions = session.positions(split_name)
        key = features.feature_key(
            model=model.name, weights=weights_used, size=int(image_size), seed=seed,
            cache=str(getattr(session.cache, "key", "")), rows=_rows_key(positions),
        ) if weights_used != "random" else None
        data = session.dataset(split_name, image_size=image_size, batch_size=batch_size, training=False)
        cached[split_name] = features.extract_features(extractor, data, batch_size=batch_size, cache_key=key)
    extraction_seconds = time.perf_counter() - started
    print(f"features of {len(cached['train']):,} train + {len(cached['val']):,} val patches: "
          f"{cached['train'].shape[1]} values each, computed in {extraction_seconds:.1f} s")

    head_result = features.train_head_on_features(
        cached["train"], session.labels("train"), cached["val"], session.labels("val"),
        epochs=int(epochs), batch_size=batch_size, learning_rate=float(learning_rate),
        num_classes=session.num_classes, class_weight=class_weight,
        patience=int(session.params["patience"]), seed=seed,
    )
    features.attach_head(model, head_result.head)
    head_result.history.to_csv(session.out_dir / "phase1_history.csv", index=False)

    n_batches = max(1, int(session.params.get("speedup_images", 512)) // batch_size)
    timing = features.compare_epoch_times(
        model,
        session.dataset("train", image_size=image_size, batch_size=batch_size, training=False),
        cached["train"], session.labels("train"), batch_size=batch_size, max_batches=n_batches, epochs=2,
    )
    speedup = pd.DataFrame(
        [
            {"training path": "through the frozen backbone", "seconds per epoch": timing["backbone_seconds_per_epoch"],
             "images per second": timing["images"] / max(timing["backbone_seconds_per_epoch"], 1e-9)},
            {"training path": "on cached features", "seconds per epoch": timing["features_seconds_per_epoch"],
             "images per second": timing["images"] / max(timing["features_seconds_per_epoch"], 1e-9)},
        ]
    ).set_index("training path")
    print(f"measured on {timing['images']} patches, 2 epochs each (first one left out as warm-up): "
          f"cached features are {timing['speedup']:.0f}x faster per epoch; extraction cost once: {extraction_seconds:.1f} s")
    return Phase1Result(
        head=head_result.head,
        history=head_result.history,
        seconds=extraction_seconds + float(head_result.training.seconds),
        extraction_seconds=extraction_seconds,
        speedup=speedup,
        speedup_factor=float(timing["speedup"]),
    )


def _resized_sample(session: Any, image_size: int, count: int, seed: int) -> np.ndarray:
    """A seeded sample of training patches at the model's input size (raw 0..255 floats)."""
    from bclib.data.pipeline import resize_images

    positions = session.positions("train")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(positions, size=min(count, len(positions)), replace=False))
    return resize_images(session.cache.images[chosen], image_size)


def fine_tune(
    session: Any,
    model: Any,
    image_size: int,
    epochs: int,
    learning_rate: float,
    layers: int,
    class_weight: dict | None = None,
    max_images: int | None = None,
    augmenter: Any = None,
) -> train.TrainResult:
    """Phase 2: unfreeze the backbone's top ``layers`` (BatchNorm stays frozen), recompile, train.

    ``max_images`` trains on a seeded subset of the training split (CPU-sized runs); validation
    always uses the whole validation split.
    """
    trainable = models.unfreeze_top(model, n_layers=int(layers))
    models.compile_model(model, learning_rate=float(learning_rate), num_classes=session.num_classes)
    positions = session.positions("train")
    if max_images and len(positions) > int(max_images):
        rng = np.random.default_rng(int(session.params["seed"]))
        positions = np.sort(rng.choice(positions, size=int(max_images), replace=False))
    print(f"fine-tuning {trainable} backbone layers (BatchNorm frozen) on {len(positions):,} training patches "
          f"at learning rate {learning_rate:g}")
    return train.fit(
        model,
        session.dataset("train", image_size=image_size, positions=positions, augmenter=augmenter),
        session.dataset("val", image_size=image_size),
        epochs=int(epochs),
        patience=int(session.params["patience"]),
        out_dir=session.out_dir,
        class_weight=class_weight,
        seed=int(session.params["seed"]),
    )
