"""Boxes shown above or after a notebook's outputs and in the prediction app: warnings, notes, conclusions."""
from __future__ import annotations

import html

from IPython import get_ipython
from IPython.display import display

SYNTHETIC_BANNER = ("SYNTHETIC DEMO DATA: generated patches, not patients. The results show that the pipeline runs; "
                    "no metric here says anything about cancer.")
#: Each kind's colours, and the sign in front of its text. Styles are inline, so a notebook output,
#: its HTML export and an ipywidgets HTML widget all keep them.
BANNER_STYLES = {
    "warning": ("background:#fdecea;color:#8a1f11;border:1px solid #e6a39a;font-weight:bold", "&#9888; "),
    "error": ("color:#8a1f11;border:1px solid #e6a39a", ""),
    "info": ("background:#fff8e1;border:1px solid #f0d58c", "&#9432; "),
    "note": ("background:#f1f8e9;color:#33691e;border:1px solid #c5e1a5", ""),
    "conclusion": ("background:#eef4fb;color:#1f3b57;border:1px solid #9fbfdf", ""),
}


def banner_html(text: str, kind: str = "warning") -> str:
    """A box holding plain ``text`` (escaped here): ``warning``, ``error``, ``info``, ``note`` or ``conclusion``."""
    if kind not in BANNER_STYLES:
        raise ValueError(f"banner kind must be one of {sorted(BANNER_STYLES)}, got {kind!r}")
    style, sign = BANNER_STYLES[kind]
    body = html.escape(text).replace("\n", "<br>")
    return (f'<div class="bclib-banner bclib-{kind}" style="{style};padding:6px 10px;border-radius:6px;'
            f'font-family:sans-serif;margin:4px 0">{sign}{body}</div>')


def in_notebook() -> bool:
    """True inside an IPython kernel, where rich output is displayed."""
    return get_ipython() is not None


def show_banner(text: str, kind: str = "warning") -> None:
    """Display :func:`banner_html` in a notebook (with the text as its plain version); print it elsewhere."""
    if in_notebook():
        display({"text/html": banner_html(text, kind), "text/plain": text}, raw=True)
    else:
        print(text)
