"""``-p KEY=VALUE`` overrides checked against the notebooks' declared defaults before a run starts.

A notebook's ``parameters`` cell declares each name with a literal default (read by papermill's
``inspect_notebook``); its type is the type a value must have. ``None`` is always accepted (the
profile's or the notebook's choice), an integer is accepted where a float is declared, and a
default of ``None`` accepts anything.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any, Iterable

#: Declared type -> (the types accepted, what the message calls it).
ACCEPTED: dict[type, tuple[tuple[type, ...], str]] = {
    bool: ((bool,), "true or false"),
    int: ((int,), "a whole number"),
    float: ((int, float), "a number"),
    str: ((str,), "a quoted or plain text"),
    list: ((list,), "a JSON list"),
    dict: ((dict,), "a JSON object"),
}


def parameter_defaults(notebook: str | os.PathLike) -> dict[str, str]:
    """Name -> the default's source text in the notebook's ``parameters`` cell (empty without one)."""
    import papermill

    return {name: str(info.get("default")) for name, info in papermill.inspect_notebook(str(notebook)).items()}


def _declared_type(source: str) -> type | None:
    """The type of a literal default (a tuple counts as a list), or None for None and for non-literals."""
    try:
        value = ast.literal_eval(source)
    except (ValueError, SyntaxError):
        return None
    declared = list if isinstance(value, tuple) else type(value)
    return declared if declared in ACCEPTED else None


def fits(value: Any, declared: type | None) -> bool:
    """Whether ``value`` may replace a default of type ``declared``."""
    if value is None or declared is None:
        return True
    accepted, _ = ACCEPTED[declared]
    return isinstance(value, accepted) and (declared is bool or not isinstance(value, bool))


def check_parameter_types(parameters: dict[str, Any], notebooks: Iterable[str | os.PathLike]) -> None:
    """Raise ValueError for the first value whose type differs from a declared default of that name."""
    if not parameters:
        return
    for notebook in notebooks:
        for key, source in parameter_defaults(notebook).items():
            declared = _declared_type(source)
            if key in parameters and not fits(parameters[key], declared):
                value = parameters[key]
                raise ValueError(
                    f"-p {key}={value!r}: notebook {Path(notebook).stem} declares {key} = {source}, so {key} takes "
                    f"{ACCEPTED[declared][1]} ({declared.__name__}), not a {type(value).__name__}; nothing was run"
                )
