"""bclib: breast-cancer image classification, the package behind the notebook series.

For education and research, not for diagnosis.
"""
from __future__ import annotations

__version__ = "0.1.0"

DISCLAIMER = "For education and research, not for diagnosis."

__all__ = ["__version__", "DISCLAIMER"]
