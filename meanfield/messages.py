"""The wording of a refused name, in one place: what was given, what is allowed, and the
allowed name closest to it (:func:`difflib.get_close_matches`) when one is close.

Every unknown key and every unknown enumerated value (a task, an activation, a loss, an
integrator method, a preset, a solver, a kernel, a run, a bundled scenario) is told with
these, whether it came from a scenario file, a ``--set`` override or a sweep.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Optional


def closest(given: Any, allowed: Iterable) -> Optional[str]:
    """The allowed name closest to ``given`` (a name, or a number's text), or None when none is close."""
    if isinstance(given, (int, float)) and not isinstance(given, bool):
        given = str(given)
    if not isinstance(given, str) or not given:
        return None
    names = [str(name) for name in allowed]
    same_but_case = [name for name in names if name.lower() == given.lower()]
    if same_but_case:
        return same_but_case[0]
    match = difflib.get_close_matches(given, names, n=1, cutoff=0.6)
    return match[0] if match else None


def did_you_mean(given: Any, allowed: Iterable) -> str:
    """"; did you mean 'x'?" for the closest allowed name, or "" when none is close."""
    match = closest(given, allowed)
    return f"; did you mean {match!r}?" if match is not None else ""


def not_one_of(given: Any, allowed: Iterable) -> str:
    """"'particle' is not one of particles, tangent, ntk; did you mean 'particles'?"."""
    allowed = [str(name) for name in allowed]
    return f"{given!r} is not one of {', '.join(allowed)}{did_you_mean(given, allowed)}"


def unknown_key(dotted: str, allowed: Iterable) -> str:
    """"unknown key 'data.dimm'; allowed here: task, seed, dim, ...; did you mean 'dim'?"."""
    allowed = [str(name) for name in allowed]
    hint = did_you_mean(dotted.rsplit(".", 1)[-1], allowed)
    return f"unknown key {dotted!r}; allowed here: {', '.join(allowed) or 'none'}{hint}"


PLAIN = {
    "missing": "missing: this key is required",
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "too_short": "must not be empty",
    "string_too_short": "must not be empty",
}
"""What a schema check's kind says, in our words ({...}: the check's bound)."""

MAPPING_KINDS = ("dict_type", "model_type", "model_attributes_type")


def plain(kind: str, bounds: dict, allowed: Iterable = ()) -> Optional[str]:
    """A schema check's failure in our words (None for a kind without any): ``bounds`` the
    check's context (e.g. {"gt": 0}), ``allowed`` the keys a mapping expected here."""
    if kind in MAPPING_KINDS:
        keys = ", ".join(map(str, allowed))
        return "must be a mapping of keys" + (f" ({keys})" if keys else "")
    if kind not in PLAIN:
        return None
    return PLAIN[kind].format(**{key: _number(value) for key, value in (bounds or {}).items()})


def _number(value):
    """A bound as a user wrote it: an integer in full (a seed's 9223372036854775807, not
    9.22337e+18), a float in its shortest form."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{value:g}" if isinstance(value, float) else value
