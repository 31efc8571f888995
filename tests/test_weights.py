"""ImageNet weights resolution: cache file names, local files, the no-internet fallback."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from bclib.models import builders as models
from bclib.models.weights import (
    WeightsError,
    keras_home,
    resolve_weights,
    weights_cache_dir,
    weights_file_name,
)

SIZE = 32
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_file_names_follow_keras_applications():
    assert weights_file_name("mobilenetv2", 96) == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5"
    assert weights_file_name("mobilenetv2", 160).endswith("_1.0_160_no_top.h5")
    assert weights_file_name("mobilenetv2", 50).endswith("_1.0_224_no_top.h5")  # other sizes use the 224 file
    assert weights_file_name("resnet50", 50) == "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with pytest.raises(WeightsError, match="baseline"):
        weights_file_name("baseline_cnn")


def test_keras_home_is_read_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert keras_home() == tmp_path / "kh"
    assert weights_cache_dir() == tmp_path / "kh" / "models"


def test_no_weights_offline_falls_back_to_random_with_banner(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_home"))
    choice = resolve_weights("mobilenetv2", "imagenet", input_size=96, timeout=3.0)
    if choice.used == "imagenet":  # a machine with internet downloaded the real file
        assert Path(choice.path).is_file()
        return
    assert choice.used == "random" and choice.path is None and not choice.is_pretrained
    assert "NO IMAGENET WEIGHTS" in choice.banner and "NOT transfer learning" in choice.banner
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5" in choice.banner
    assert str(tmp_path / "empty_home" / "models") in choice.banner
    shown = capsys.readouterr().out
    assert "NO IMAGENET WEIGHTS" in shown
    assert "Downloading data from" not in shown  # Keras' own download line: the banner says what happened
    assert "URL fetch failure" not in choice.banner   # the network error itself, not Keras' wrapper with the URL
    card = choice.to_card()
    assert card["used"] == "random" and card["requested"] == "imagenet" and "NOT transfer" in card["note"]
    assert "====" not in card["note"]


def test_allow_random_false_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_home"))
    with pytest.raises(WeightsError, match="allow_random_weights"):
        resolve_weights("resnet50", "imagenet", allow_random=False, download=False)


def test_missing_local_file_is_an_error(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_weights("mobilenetv2", str(tmp_path / "nope.h5"))


def test_none_means_random_without_banner(capsys):
    choice = resolve_weights("resnet50", None)
    assert choice.used == "random" and choice.banner == "" and choice.requested is None
    assert "randomly initialised" in capsys.readouterr().out  # announced as a note
    assert choice.to_card() == {"requested": None, "used": "random",
                                "note": "randomly initialised (trained from scratch)"}
    resolve_weights("resnet50", None, announce=False)
    assert capsys.readouterr().out == ""


@pytest.fixture(scope="module")
def fake_backbone_files(tmp_path_factory):
    """Weights of a random-init MobileNetV2 backbone, in Keras 3 and in legacy (keras.applications) format."""
    from keras.src.legacy.saving import legacy_h5_format
    import h5py

    folder = tmp_path_factory.mktemp("fake_weights")
    keras.utils.set_random_seed(123)
    backbone = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), include_top=False, weights=None)
    modern = folder / "fake.weights.h5"
    backbone.save_weights(str(modern))
    legacy = folder / "legacy_no_top.h5"
    with h5py.File(legacy, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, backbone)
    return backbone.get_weights(), modern, legacy


def _assert_same_weights(model, expected):
    actual = models.get_backbone(model).get_weights()
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("flavour", ["modern", "legacy"])
def test_file_in_keras_cache_is_used(fake_backbone_files, tmp_path, monkeypatch, flavour):
    expected, modern, legacy = fake_backbone_files
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    cache = tmp_path / "home" / "models"
    cache.mkdir(parents=True)
    shutil.copyfile(modern if flavour == "modern" else legacy, cache / weights_file_name("mobilenetv2", SIZE))
    model = models.build_model("mobilenetv2", input_size=SIZE, weights="imagenet", allow_random_weights=False)
    assert model.bclib_weights.used == "imagenet" and model.bclib_weights.is_pretrained
    assert model.bclib_weights.banner == ""
    assert model.bclib_weights.to_card() == {"requested": "imagenet", "used": "imagenet",
                                             "note": "ImageNet weights from the Keras cache"}
    _assert_same_weights(model, expected)


def test_local_file_path_is_used(fake_backbone_files):
    expected, modern, _ = fake_backbone_files
    model = models.build_model("mobilenetv2", input_size=SIZE, weights=str(modern))
    assert model.bclib_weights.used == f"file:{modern.resolve()}"
    assert os.path.samefile(model.bclib_weights.path, modern)
    _assert_same_weights(model, expected)


def test_wrong_file_gives_a_clear_error(fake_backbone_files, tmp_path):
    _, modern, _ = fake_backbone_files
    with pytest.raises(WeightsError, match="could not load weights|only partly fits"):
        models.build_model("resnet50", input_size=SIZE, weights=str(modern))


def test_download_failure_names_the_network_error_beneath_keras_message():
    import socket
    import urllib.error

    from bclib.models.weights import download_failure

    try:
        try:
            raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))
        except urllib.error.URLError as error:
            raise Exception(f"URL fetch failure on https://example.org/w.h5: None -- {error.reason}")
    except Exception as wrapped:
        assert download_failure(wrapped) == "no connection to the download server: [Errno -2] Name or service not known"
    assert download_failure(ValueError("hash mismatch")) == "ValueError: hash mismatch"
    missing = urllib.error.HTTPError("https://example.org/w.h5", 404, "Not Found", {}, None)
    assert download_failure(missing) == "the download server answered 404 Not Found"
