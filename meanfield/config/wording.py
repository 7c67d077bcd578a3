"""A validation error in plain words: where (the file, the line, the dotted key, or the
``--set`` that gave it) and what is allowed, from pydantic's errors."""

from __future__ import annotations

import re
import typing
from typing import Annotated, Any, Union

from pydantic import (
    BaseModel,
    ValidationError,
)

from .. import messages
from .scenario import Scenario
from .sections import (
    CustomPreset,
    KernelRunSpec,
    LazyPreset,
    MeanFieldPreset,
    MuPPreset,
    NTKPreset,
    ParticleRunSpec,
    StandardPreset,
    TangentRunSpec,
)

MAX_TOLD = 10
"""The most validation errors a message words, one line each; the rest are counted."""


def _explain(exc: ValidationError, source: str, lines: dict, overridden: set, how: str = "--set") -> str:
    """One line per validation error, the first :data:`MAX_TOLD` of them, then how many more."""
    told = []
    errors = exc.errors()
    for error in errors[:MAX_TOLD]:
        loc = _user_path(error["loc"])
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):  # the tag is a key of its own
            loc += (error["ctx"]["discriminator"].strip("'"),)
        dotted = ".".join(str(part) for part in loc)
        where = _where(source, loc or _leading_key(error["msg"]), lines, overridden, how)
        told.append(f"{where}: {_wording(error, dotted)}")
    if len(errors) > MAX_TOLD:
        told.append(f"{source}: ... and {len(errors) - MAX_TOLD:,} more errors like these (fix the ones above first)")
    return "\n".join(told)


QUOTED = r"'([^']*)'"
"""A name in pydantic's list of what it expected ("'relu', 'tanh' or 'erf'")."""


def _wording(error: dict, dotted: str) -> str:
    """One validation error in the project's words (pydantic's own for what it says plainly)."""
    kind, given = error["type"], error.get("input")
    if kind == "extra_forbidden":
        return messages.unknown_key(dotted, _allowed_keys(error["loc"][:-1]))
    if kind == "finite_number":
        return f"{dotted}: must be a finite number, not {given}"
    if kind in ("literal_error", "union_tag_invalid"):
        expected = error["ctx"].get("expected") or error["ctx"].get("expected_tags", "")
        given = error["ctx"].get("tag", given)
        return f"{dotted}: {messages.not_one_of(given, re.findall(QUOTED, expected))}"
    if kind == "union_tag_not_found":
        return f"{dotted}: missing: give one of {', '.join(_PRESETS if dotted.endswith('preset') else _RUNS)}"
    allowed = _allowed_keys(error["loc"]) if kind in messages.MAPPING_KINDS else ()
    text = messages.plain(kind, error.get("ctx"), allowed) or error["msg"]
    text = _relocate(text.removeprefix("Value error, "), dotted)
    quoted = isinstance(given, str) and repr(given) in text  # the message names it already
    got = "" if isinstance(given, (dict, BaseModel)) or given is None or quoted else f" (got {given!r})"
    return f"{dotted + ': ' if dotted else ''}{text}{got}"


def _leading_key(message: str) -> tuple:
    """The key path a scenario-wide rule's message starts with ('runs.x.integrator: ...'), so
    that the message gets that key's line; () when it starts with none."""
    head, sep, _ = message.removeprefix("Value error, ").partition(": ")
    return tuple(head.split(".")) if sep and re.fullmatch(r"[A-Za-z_][\w\-]*(\.[\w\-]+)+", head) else ()


def _relocate(text: str, dotted: str) -> str:
    """An integrator's message names train.integrator (IntegratorSpec's home): at a run's own
    integrator (``dotted`` runs.<name>.integrator[.key]) it names that one instead."""
    if dotted.startswith("runs.") and ".integrator" in dotted:
        return text.replace("train.integrator", dotted[: dotted.index(".integrator")] + ".integrator")
    return text


def _user_path(loc: tuple) -> tuple:
    """Drop pydantic's union tags (e.g. 'lazy' in runs.x.parameterization.lazy.alpha)."""
    out = []
    for part in loc:
        if out and out[-1] == "parameterization" and part in _PRESETS:
            continue
        if len(out) == 2 and out[0] == "runs" and part in _RUNS:
            continue
        out.append(part)
    return tuple(out)


def _how(how, path: tuple) -> str:
    """The word an override's message uses: one for every key, or key path -> word."""
    return how.get(path, "") if isinstance(how, dict) else how


def _where(source: str, loc: tuple, lines: dict, overridden: set, how) -> str:
    """The file and line of key path ``loc``, or the override that set it (or, for a key
    the file does not give, the override that wrote the mapping it is missing from)."""
    for cut in range(len(loc), 0, -1):
        if loc[:cut] in overridden:  # ``how``: one word for every key, or key path -> word
            return f"{source} ({_how(how, loc[:cut])} {'.'.join(map(str, loc[:cut]))})"
    inside = sorted(path for path in overridden if len(loc) > 1 and path[:len(loc) - 1] == loc[:-1])
    if inside and loc[:-1] not in lines:
        return f"{source} ({_how(how, inside[0])} {'.'.join(map(str, inside[0]))})"
    for cut in range(len(loc), 0, -1):
        if loc[:cut] in lines:
            return f"{source}:{lines[loc[:cut]]}"
    return source


_PRESETS = {
    cls.model_fields["preset"].default: cls
    for cls in (MeanFieldPreset, NTKPreset, StandardPreset, LazyPreset, MuPPreset, CustomPreset)
}


_RUNS = {cls.model_fields["solver"].default: cls for cls in (ParticleRunSpec, TangentRunSpec, KernelRunSpec)}


def _allowed_keys(loc: tuple) -> list[str]:
    """The keys the schema allows at a dotted location (for 'unknown key' messages)."""
    model: Any = Scenario
    for part in loc:
        model = _section_type(model, part)
        if model is None:
            return []
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _section_type(model, part):
    if isinstance(model, type) and issubclass(model, BaseModel):
        field = model.model_fields.get(part)
        return None if field is None else _strip(field.annotation)
    if typing.get_origin(model) is dict:
        return _strip(typing.get_args(model)[1])
    if model == "parameterization":
        return _PRESETS.get(part)
    if model == "run":
        return _RUNS.get(part)
    return None


def _strip(annotation):
    """Unwrap Optional/Annotated; a union of presets becomes a marker resolved by tag."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _strip(typing.get_args(annotation)[0])
    if origin is Union:
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return _strip(members[0])
        return "run" if ParticleRunSpec in members else "parameterization"
    return annotation
