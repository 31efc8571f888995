"""bclib: breast-cancer image classification, the package behind the notebook series.

For education and research, not for diagnosis. In a notebook kernel it imports TensorFlow with its
C++ start-up messages kept out of the notebook: they reach standard error before any log level is
read, so only a redirect hides them.
"""
from __future__ import annotations

import os
import sys

__version__ = "0.1.0"

DISCLAIMER = "For education and research, not for diagnosis."


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and probe its devices with file descriptor 2 pointed at /dev/null."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow

        tensorflow.config.list_physical_devices()  # the CUDA probe logs its own failure
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


if "ipykernel" in sys.modules:
    import_tensorflow_quietly()
