"""Boxes a notebook shows above or after its outputs: warnings, notes and conclusions."""
from __future__ import annotations

import html

SYNTHETIC_BANNER = ("SYNTHETIC DEMO DATA: generated patches, not patients. The results show that the pipeline runs; "
                    "no metric here says anything about cancer.")
BANNER_COLOURS = {"warning": "#b00020", "note": "#2e7d32", "conclusion": "#1f4e79"}


def banner_html(text: str, kind: str = "warning") -> str:
    """A bordered HTML box: ``warning`` (red), ``note`` (green) or ``conclusion`` (blue)."""
    colour = BANNER_COLOURS[kind]
    weight = "bold" if kind == "warning" else "normal"
    body = html.escape(text).replace("\n", "<br>")
    return (f'<div style="border:2px solid {colour};color:{colour};padding:6px 12px;margin:6px 0;'
            f'font-weight:{weight}">{body}</div>')


def show_banner(text: str, kind: str = "warning") -> None:
    """Display :func:`banner_html` in a notebook (with the text as its plain version); print it elsewhere."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        get_ipython = None
    if get_ipython is None or get_ipython() is None:
        print(text)
        return
    display({"text/html": banner_html(text, kind), "text/plain": text}, raw=True)
