"""ImageNet weights for the transfer backbones: the Keras cache, a local file, or (loudly) none.

:func:`resolve_weights` looks in the Keras cache (``$KERAS_HOME/models/``) first, accepts a local
file, tries one short download, and without internet falls back to a random initialisation with a
banner nobody can miss; the :class:`WeightsChoice` it returns is recorded on the model and its card.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import tempfile
import urllib.error
import warnings
from dataclasses import dataclass
from pathlib import Path

from bclib.display import show_banner

#: Backbones with ImageNet weights, and where keras.applications downloads them from.
BASE_URLS = {
    "mobilenetv2": "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/",
    "resnet50": "https://storage.googleapis.com/tensorflow/keras-applications/resnet/",
}
#: Input sizes for which MobileNetV2 has its own ImageNet file (others use the 224 one).
MOBILENETV2_SIZES = (96, 128, 160, 192, 224)
#: md5 of the ResNet50 no-top file, as keras.applications checks it.
RESNET50_NOTOP_MD5 = "4d473c1dd8becc155b73f8504c6f6626"


class WeightsError(ValueError):
    """The requested weights cannot be used (missing file, no download, unknown backbone)."""


@dataclass(frozen=True)
class WeightsChoice:
    """Which weights a backbone gets.

    ``requested``: what the caller asked for (``"imagenet"``, a path, or ``None``);
    ``used``: ``"imagenet"``, ``"file:<path>"`` or ``"random"``; ``path``: the file loaded
    (``None`` for random); ``banner``: a warning text to show (empty when all is well).
    """

    requested: str | None
    used: str
    path: str | None
    banner: str = ""

    @property
    def is_pretrained(self) -> bool:
        return self.used != "random"

    def to_card(self) -> dict:
        """The ``weights`` entry of a model card."""
        note = self.banner or {
            "imagenet": "ImageNet weights from the Keras cache",
            "random": "randomly initialised (trained from scratch)",
        }.get(self.used, f"weights loaded from {self.path}")
        return {"requested": self.requested, "used": self.used, "note": note}


def keras_home() -> Path:
    """``$KERAS_HOME`` read now (Keras itself reads it once, at import), else ``~/.keras``."""
    value = os.environ.get("KERAS_HOME")
    return Path(value).expanduser() if value else Path("~/.keras").expanduser()


def weights_cache_dir() -> Path:
    return keras_home() / "models"


def _check_backbone(backbone: str) -> str:
    name = backbone.lower()
    if name not in BASE_URLS:
        raise WeightsError(f"no ImageNet weights known for backbone {backbone!r}; choose one of {sorted(BASE_URLS)}")
    return name


def weights_file_name(backbone: str, input_size: int = 96) -> str:
    """The file name keras.applications uses for the no-top ImageNet weights of ``backbone``.

    MobileNetV2 (width 1.0) has one file per input size 96, 128, 160, 192 or 224; any other size
    uses the 224 file, as Keras does. ResNet50 has a single file.
    """
    name = _check_backbone(backbone)
    if name == "resnet50":
        return "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    rows = input_size if input_size in MOBILENETV2_SIZES else 224
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5"


def _banner(backbone: str, file_name: str, reason: str) -> str:
    return "\n".join([
        "NO IMAGENET WEIGHTS: backbone randomly initialised; results are NOT transfer learning.",
        f"Backbone {backbone}: {reason}",
        "To fix: on a machine with internet, download",
        f"    {BASE_URLS[backbone]}{file_name}",
        f"and copy it into {weights_cache_dir()}/ (the Keras cache, $KERAS_HOME/models),",
        "or pass weights=<path to that .h5 file> (notebook parameter `weights`).",
    ])


def _download(backbone: str, file_name: str, timeout: float) -> Path:
    """One Keras download into the cache, with a short socket timeout; raises on failure.

    Keras' own "Downloading data from" line and progress bar are kept out of the notebook: the
    banner or note that follows says what happened.
    """
    import keras

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            path = keras.utils.get_file(
                file_name,
                BASE_URLS[backbone] + file_name,
                cache_subdir="models",
                cache_dir=str(keras_home()),
                file_hash=RESNET50_NOTOP_MD5 if backbone == "resnet50" else None,
            )
    finally:
        socket.setdefaulttimeout(previous)
    return Path(path)


def download_failure(error: BaseException) -> str:
    """Why a download failed, in a few words: the network error beneath Keras' message where there is one."""
    for candidate in (error, error.__cause__, error.__context__):
        if isinstance(candidate, urllib.error.HTTPError):
            return f"the download server answered {candidate.code} {candidate.reason}"
        if isinstance(candidate, urllib.error.URLError):
            return f"no connection to the download server: {candidate.reason}"
    return f"{type(error).__name__}: {error}"


def resolve_weights(
    backbone: str,
    weights: str | os.PathLike | None = "imagenet",
    allow_random: bool = True,
    input_size: int = 96,
    download: bool = True,
    timeout: float = 10.0,
    announce: bool = True,
) -> WeightsChoice:
    """Decide which weights ``backbone`` gets; never builds a model.

    ``weights``: ``"imagenet"`` (the Keras cache, else one download attempt), a path to a
    weights file (must exist), or ``None`` (random initialisation, asked for).
    When ImageNet weights cannot be had: with ``allow_random`` the choice is ``"random"`` with a
    loud banner; without it a :class:`WeightsError` says how to fix it. ``announce`` shows the
    choice (the banner, or a note naming the weights file).
    """
    choice = _choose(backbone, weights, allow_random, input_size, download, timeout)
    if announce:
        show_banner(choice.banner or f"{backbone} weights: {choice.to_card()['note']}",
                    "warning" if choice.banner else "note")
    return choice


def _choose(backbone: str, weights: str | os.PathLike | None, allow_random: bool, input_size: int, download: bool,
            timeout: float) -> WeightsChoice:
    name = _check_backbone(backbone)
    if weights is None:
        return WeightsChoice(requested=None, used="random", path=None)
    requested = str(weights)
    if requested != "imagenet":
        path = Path(requested).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"weights file {requested!r} does not exist; pass weights='imagenet', None, or an existing "
                f".h5 / .weights.h5 file"
            )
        return WeightsChoice(requested=requested, used=f"file:{path.resolve()}", path=str(path.resolve()))

    file_name = weights_file_name(name, input_size)
    cached = weights_cache_dir() / file_name
    if cached.is_file():
        return WeightsChoice(requested="imagenet", used="imagenet", path=str(cached))
    reason = f"{file_name} is not in {weights_cache_dir()}"
    if download:
        try:
            return WeightsChoice(requested="imagenet", used="imagenet", path=str(_download(name, file_name, timeout)))
        except Exception as error:  # no network, DNS, timeout, hash mismatch
            reason += f" and the download failed ({download_failure(error)})"
    else:
        reason += " and downloading was switched off"
    if not allow_random:
        raise WeightsError(
            f"ImageNet weights for {name} are unavailable: {reason}. Copy {file_name} into "
            f"{weights_cache_dir()}/ or pass weights=<path>; or allow_random_weights=True to train from a "
            "random initialisation (then it is not transfer learning)"
        )
    return WeightsChoice(requested="imagenet", used="random", path=None, banner=_banner(name, file_name, reason))


def _is_legacy_h5(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            return "layer_names" in handle.attrs or "model_weights" in handle
    except OSError:
        return False


def _load(model, path: Path) -> None:
    if path.name.endswith((".keras", ".weights.h5")) or _is_legacy_h5(path):
        model.load_weights(str(path))
        return
    with tempfile.TemporaryDirectory(prefix="bclib_weights_") as folder:
        alias = Path(folder) / "backbone.weights.h5"
        try:
            alias.symlink_to(path.resolve())
        except OSError:
            shutil.copyfile(path, alias)
        model.load_weights(str(alias))


def load_weights_file(model, path: str | os.PathLike) -> None:
    """Load a weights file into ``model`` whatever its flavour.

    Accepts the legacy Keras 2 ``.h5`` files that keras.applications downloads, Keras 3
    ``.weights.h5`` files (also when renamed to a plain ``.h5``, e.g. placed in the cache) and
    ``.keras`` archives. Raises :class:`WeightsError` with the reason when they do not fit.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _load(model, path)
    except Exception as error:
        raise WeightsError(
            f"could not load weights from {str(path)!r} into {model.name}: {error} (is it the no-top file of "
            "the same backbone?)"
        ) from None
    skipped = [w for w in caught if "freshly-initialized" in str(w.message) or "Skipping" in str(w.message)]
    if skipped:
        raise WeightsError(
            f"{str(path)!r} only partly fits {model.name} ({len(skipped)} parts left at their random "
            "initialisation): is it the no-top file of the same backbone?"
        )
