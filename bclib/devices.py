"""Devices: GPU detection, mixed precision and the distribution strategy.

Call :func:`configure` once, before building models (the policy applies to layers created afterwards):
on a GPU it turns on ``mixed_float16``, on a CPU everything stays float32. Model outputs are float32
in every case (the output layers of :mod:`bclib.models.builders` force it).
"""
from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field

import keras
import tensorflow as tf

_CONFIGURED: "DeviceInfo | None" = None
_STRATEGY: "tf.distribute.Strategy | None" = None


@dataclass
class DeviceInfo:
    """What :func:`configure` found and chose."""

    gpus: list[str] = field(default_factory=list)
    mixed_precision: bool = False
    policy: str = "float32"
    strategy: str = "default"
    cpu_count: int = 1

    def as_dict(self) -> dict:
        return {**asdict(self), "n_gpus": len(self.gpus)}


def gpu_names() -> list[str]:
    """Names of the visible GPUs (empty on a CPU-only machine)."""
    return [tf.config.experimental.get_device_details(device).get("device_name", device.name)
            for device in tf.config.list_physical_devices("GPU")]


def configure(mixed_precision: bool | str = "auto") -> DeviceInfo:
    """Set the Keras dtype policy for this process and return a :class:`DeviceInfo`.

    ``"auto"`` means mixed precision when a GPU is present. GPU memory growth is switched on so
    several notebooks can share one GPU.
    """
    global _CONFIGURED
    if mixed_precision not in ("auto", True, False):
        raise ValueError(f"mixed_precision must be 'auto', True or False, got {mixed_precision!r}")
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except (ValueError, RuntimeError):  # already initialised: keep what is set
            pass
    use_mixed = bool(gpus) if mixed_precision == "auto" else mixed_precision
    policy = "mixed_float16" if use_mixed else "float32"
    keras.mixed_precision.set_global_policy(policy)
    _CONFIGURED = DeviceInfo(gpus=gpu_names(), mixed_precision=use_mixed, policy=policy,
                             strategy=type(strategy()).__name__, cpu_count=os.cpu_count() or 1)
    return _CONFIGURED


def reset() -> None:
    """Back to Keras' default float32 policy, as before :func:`configure`."""
    global _CONFIGURED
    keras.mixed_precision.set_global_policy("float32")
    _CONFIGURED = None


def current() -> DeviceInfo | None:
    """The last :func:`configure` result (``None`` before the first call)."""
    return _CONFIGURED


def strategy() -> tf.distribute.Strategy:
    """``MirroredStrategy`` over all GPUs when there are several (one per process), else the default."""
    global _STRATEGY
    if len(tf.config.list_physical_devices("GPU")) > 1:
        if _STRATEGY is None:
            _STRATEGY = tf.distribute.MirroredStrategy()
        return _STRATEGY
    return tf.distribute.get_strategy()


def replicas() -> int:
    """How many copies of the model train in parallel (the global batch is per-replica x this)."""
    return int(strategy().num_replicas_in_sync)


def describe() -> str:
    """One line for a notebook's set-up: versions, devices, precision."""
    info = _CONFIGURED or DeviceInfo(
        gpus=gpu_names(), policy=keras.mixed_precision.global_policy().name, cpu_count=os.cpu_count() or 1
    )
    where = f"{len(info.gpus)} GPU(s): {', '.join(info.gpus)}" if info.gpus else f"CPU only ({info.cpu_count} cores)"
    return (f"TensorFlow {tf.__version__}, Keras {keras.__version__}, Python {platform.python_version()}; {where}; "
            f"{info.policy}")
