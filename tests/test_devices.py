"""bclib.devices: float32 on a CPU, mixed precision on request with float32 outputs, back to the default."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from bclib import devices
from bclib.models import builders as models


def test_devices_on_cpu_stay_float32():
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this test checks the CPU-only configuration")
    info = devices.configure()
    assert info.policy == "float32" and not info.mixed_precision and info.as_dict()["n_gpus"] == 0
    assert keras.mixed_precision.global_policy().name == "float32"
    assert isinstance(devices.strategy(), tf.distribute.Strategy) and devices.replicas() == 1
    text = devices.describe()
    assert "TensorFlow" in text and "float32" in text and "CPU only" in text
    with pytest.raises(ValueError, match="mixed_precision"):
        devices.configure(mixed_precision="yes")
    devices.reset()


def test_mixed_precision_keeps_float32_outputs():
    try:
        info = devices.configure(mixed_precision=True)
        assert info.policy == "mixed_float16"
        model = models.build_model("baseline_cnn", input_size=32)
        convolution = next(layer for layer in model.layers if isinstance(layer, keras.layers.SeparableConv2D))
        assert convolution.compute_dtype == "float16"
        assert model.output.dtype == "float32"
        assert np.asarray(model(np.zeros((2, 32, 32, 3), "float32"), training=False)).dtype == np.float32
    finally:
        devices.reset()
    assert devices.current() is None
    assert keras.mixed_precision.global_policy().name == "float32"
