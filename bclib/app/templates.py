"""The prediction app's HTML, read from ``template.html``: one ``<template id="...">`` per piece.

:func:`render` fills a piece's ``${name}`` placeholders. Banners come from :func:`bclib.display.banner_html`.
"""
from __future__ import annotations

import re
from functools import cache
from importlib import resources
from string import Template

TEMPLATE_FILE = "template.html"

_PIECE = re.compile(r'<template id="([\w-]+)">(.*?)</template>', re.DOTALL)
#: A line break between two tags or placeholders disappears; any other becomes one space.
_BREAK_BETWEEN_TAGS = re.compile(r"(?<=[>}])\s*\n\s*(?=[<$])")
_LINE_BREAK = re.compile(r"\s*\n\s*")


@cache
def pieces() -> dict[str, Template]:
    """Every piece of the template file by its id, with the line breaks of the file removed."""
    text = resources.files(__package__).joinpath(TEMPLATE_FILE).read_text(encoding="utf-8")
    found = {}
    for name, body in _PIECE.findall(text):
        compact = _LINE_BREAK.sub(" ", _BREAK_BETWEEN_TAGS.sub("", body.strip()))
        found[name] = Template(compact)
    return found


def render(piece: str, **values: object) -> str:
    """The piece ``piece`` with its placeholders filled; values go in as given, so escape text first."""
    if piece not in pieces():
        raise ValueError(f"{TEMPLATE_FILE} has no piece {piece!r}; it has {sorted(pieces())}")
    return pieces()[piece].substitute(values)
