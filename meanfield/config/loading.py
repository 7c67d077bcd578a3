"""Reading a scenario: a bundled name, a file, a mapping or a Scenario; safe YAML; ``--set``
overrides.

Overrides (``--set model.width=4096``) edit the parsed mapping *before* validation, so a typo in
an override is caught as a typo in the file is. YAML is read with :class:`UniqueKeyLoader`
(``yaml.SafeLoader``, so nothing in a scenario can run code, that also refuses a key given
twice), from UTF-8 text. Errors name the file, the line, the dotted key and what is allowed
(:mod:`meanfield.config.wording`).
"""

from __future__ import annotations

import copy
import os
import typing
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import (
    ValidationError,
)

from .. import messages
from ..errors import UsageError
from .bundled import display_name
from .scenario import Scenario
from .sections import _expand_shorthand
from .wording import _explain, _where


def load_scenario(source, overrides=()) -> Scenario:
    """A validated scenario from a bundled scenario's name, a YAML file's path, a mapping of
    its keys, or a Scenario; ``overrides`` (a mapping of dotted keys to values, or
    ``--set``-style ``key=value`` strings) edit it before validation. UsageError names the
    file, the line and the key of anything invalid."""
    if isinstance(source, Scenario):
        return source.replace(overrides) if overrides else source
    if isinstance(source, typing.Mapping):
        raw = copy.deepcopy(dict(source))
        overridden = _apply_overrides(raw, overrides, "<scenario>")
        return validate_scenario(raw, "<scenario>", None, overridden, how="override")
    from .bundled import scenario_path

    path = scenario_path(source)
    return parse_scenario(read_text(path, "scenario"), source=str(path), overrides=overrides, directory=path.parent)


def read_text(path, what: str) -> str:
    """The text of a scenario or sweep file (``what``); UsageError naming the file when it
    cannot be read or is not UTF-8 text (a binary file, UTF-16)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x}: a binary or "
                         f"UTF-16 file?); a {what} is UTF-8 YAML text") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None


def parse_scenario(text: str, source: str = "<scenario>", overrides=(), directory=None) -> Scenario:
    """Validate a scenario's YAML text after applying ``overrides`` (``dotted.key=value``
    strings, as ``--set`` gives them, or a mapping of dotted keys to values). The text's
    relative data paths are taken from ``directory`` (the scenario file's; None: the working
    directory), an override's from the working directory."""
    raw, lines = read_yaml(text, source)
    _require_mapping(raw, source)
    if directory is not None:
        raw = relative_to(raw, Path(directory))
    how = "override" if isinstance(overrides, typing.Mapping) else "--set"
    return validate_scenario(raw, source, lines, _apply_overrides(raw, overrides, source), how=how)


DATA_PATHS = ("path", "test_path")
"""The data keys that name a file (task file)."""


def relative_to(raw, directory: Path):
    """``raw`` with its relative data paths (data.path, data.test_path) made absolute, taken
    from ``directory``: a scenario file's paths are relative to the file, as in every config
    format (``~`` is a home directory; an absolute path stays as it is)."""
    data = raw.get("data") if isinstance(raw, dict) else None
    if not isinstance(data, dict):
        return raw
    rebased = {key: os.path.normpath(directory.resolve() / Path(data[key]).expanduser()) for key in DATA_PATHS
               if isinstance(data.get(key), str) and data[key]}
    return {**raw, "data": {**data, **rebased}}


def _with_file_dim(raw, where) -> dict:
    """task file without data.dim: the dim of data.path's inputs, read from the file's header
    (``where``: the file and line, or the override, that gave data.path). A resolved scenario
    gives data.dim, so reading it back never touches the disk."""
    data = raw.get("data")
    if not (isinstance(data, dict) and data.get("task") == "file" and "dim" not in data
            and isinstance(data.get("path"), str) and data["path"]):
        return raw
    from ..model.data import file_dim  # loads NumPy: only a file task without data.dim needs it

    try:
        return {**raw, "data": {**data, "dim": file_dim(data["path"])}}
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None


def _apply_overrides(raw, overrides, source: str) -> set:
    """Apply ``overrides`` to the raw mapping; the set of key paths they touched."""
    _require_mapping(raw, source)
    if isinstance(overrides, typing.Mapping):
        return {set_key(raw, str(key), copy.deepcopy(value), where=f"override {key}")
                for key, value in overrides.items()}
    if isinstance(overrides, str):
        overrides = [overrides]
    return {apply_override(raw, item) for item in overrides}


MAX_DEPTH = 64
"""The deepest nesting of mappings and lists a scenario or sweep may have (a real one has 4 or
5 levels); deeper text is refused before the parser's recursion could run out of stack."""

MAX_NODES = 200_000
"""The most values (scalars, mappings, lists), counted after aliases are expanded, that a
scenario or sweep may hold: the bound that stops a "billion laughs" file (aliases of aliases,
9^9 values from 1 KB of text) before anything walks it."""


class _UniqueKeys:
    """A loader's constructor that refuses a key given twice in one mapping (YAML requires
    unique keys; PyYAML would keep the last one without a word). Keys merged in with ``<<``
    may be overridden, as YAML allows."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice in one mapping (first on line {seen[key]}): "
                    "keep one (the last would silently win)", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


class UniqueKeyLoader(_UniqueKeys, getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping: libyaml's, where
    PyYAML has it (a 50,000-key file in 0.3 s instead of 10)."""


class _PlainUniqueKeyLoader(_UniqueKeys, yaml.SafeLoader):
    """The same in pure Python, whose messages for text that is not YAML point at the column
    where it went wrong (libyaml's often at column 1): it words the errors."""


def expanded_size(node, sizes=None) -> int:
    """How many values the YAML tree of ``node`` holds once its aliases are expanded: an
    alias repeats its anchor's whole subtree. Computed once per node (aliases share nodes),
    so a 9^9 expansion is counted in microseconds, not walked."""
    sizes = {} if sizes is None else sizes
    if id(node) in sizes:
        return sizes[id(node)]
    total = 1
    if isinstance(node, yaml.MappingNode):
        total += sum(expanded_size(k, sizes) + expanded_size(v, sizes) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        total += sum(expanded_size(item, sizes) for item in node.value)
    sizes[id(node)] = total
    return total


class BoundExceeded(yaml.composer.ComposerError):
    """YAML text that nests deeper than :data:`MAX_DEPTH` or expands to more than
    :data:`MAX_NODES` values."""


def _nesting(text: str, loader_class) -> None:
    """BoundExceeded where ``text`` nests mappings and lists deeper than :data:`MAX_DEPTH`:
    checked on the parser's events, before anything recursive reads them."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=loader_class):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _too_deep(event.start_mark)
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.scanner.ScannerError as exc:  # libyaml's own bound (1000 levels of [ or {), met first
        if "nesting depth" in (exc.problem or ""):
            raise _too_deep(exc.problem_mark) from None
        raise


def _too_deep(mark) -> BoundExceeded:
    return BoundExceeded(None, None, f"nested deeper than {MAX_DEPTH} levels of mappings and lists (a scenario "
                         "has about 5)", mark)


def _bounded_tree(text: str, loader_class):
    """The YAML tree of ``text`` and the loader (of ``loader_class``) that read it, within the
    bounds (:class:`BoundExceeded`)."""
    _nesting(text, loader_class)
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is not None and (size := expanded_size(node)) > MAX_NODES:
            raise BoundExceeded(None, None, f"holds {size:,} values once its aliases (*name) are expanded; at most "
                                f"{MAX_NODES:,} are allowed", node.start_mark)
        return node, loader
    except BaseException:
        loader.dispose()
        raise


def _compose(text: str):
    """The YAML tree of ``text`` and the loader that read it; yaml.YAMLError where it is not
    YAML (worded by the pure-Python parser, whose marks point at the column that went wrong)
    or is not within the bounds."""
    try:
        return _bounded_tree(text, UniqueKeyLoader)
    except BoundExceeded:
        raise
    except yaml.MarkedYAMLError:
        if not hasattr(yaml, "CSafeLoader"):  # the error is the pure-Python parser's already
            raise
        _bounded_tree(text, _PlainUniqueKeyLoader)[1].dispose()  # raises its own error
        raise


def load_yaml(text: str):
    """Parse YAML text with :class:`UniqueKeyLoader`, within :data:`MAX_DEPTH` and
    :data:`MAX_NODES` (yaml.YAMLError if it is not valid or not within them)."""
    return _construct(*_compose(text))


def _construct(node, loader):
    try:
        return None if node is None else loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml(text: str, source: str) -> tuple[Any, dict]:
    """The parsed YAML and the line of each key path; UsageError with line:column if it is
    not YAML, gives a key twice in one mapping, nests too deep or expands too far."""
    source = display_name(source)
    try:
        node, loader = _compose(text)
        return _construct(node, loader), _key_lines(node)
    except yaml.reader.ReaderError as exc:  # a character YAML text cannot hold (e.g. NUL)
        raise UsageError(f"{source}: not YAML text: {exc.reason} (character #x{exc.character:04x} at "
                         f"position {exc.position}): a scenario or a sweep is UTF-8 YAML text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or "cannot be read"
        raise UsageError(f"{where}: not valid YAML: {problem}") from None


def validate_scenario(raw, source: str = "<scenario>", lines: Optional[dict] = None, overridden=(),
                      how: str = "--set") -> Scenario:
    """The scenario a raw mapping describes; errors name ``source``, the line (from ``lines``)
    or, for a key in ``overridden``, ``how`` it was set (``--set``, a sweep's grid); a bundled
    scenario is named, not shown as a path inside the package."""
    source = display_name(source)
    _require_mapping(raw, source)
    raw = _with_file_dim(raw, _where(source, ("data", "path"), lines or {}, set(overridden), how))
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise UsageError(_explain(exc, source, lines or {}, set(overridden), how)) from None


def _require_mapping(raw, source: str) -> None:
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: a scenario is a mapping of keys (name, data, model, runs, ...)")


def apply_override(raw: dict, item: str) -> tuple:
    """Apply one ``dotted.key=value`` to the raw mapping (value parsed as YAML); return the key path."""
    key, sep, value_text = item.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--set {item!r}: write it as dotted.key=value, e.g. model.width=1024")
    try:
        value = load_yaml(value_text)
    except yaml.constructor.ConstructorError as exc:  # valid YAML, but a key given twice
        raise UsageError(f"--set {item!r}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"--set {item!r}: the value is not valid YAML ({_yaml_problem(exc)}): close every "
                         "bracket and quote, or quote a string that holds them") from None
    return set_key(raw, key.strip(), value, where=f"--set {item}")


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What a YAML parser found wrong in a one-line value, and at which column of it."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None) or "cannot be read"
    context = getattr(exc, "context", None)
    at = f"at column {mark.column + 1}: " if mark is not None else ""
    return f"{at}{problem}" + (f", {context}" if context else "")


def set_key(raw: dict, key: str, value, where: str) -> tuple:
    """Set ``raw[k1][k2]... = value`` for ``key = "k1.k2..."`` (creating mappings on the way,
    expanding by-name shorthands); ``runs.NAME`` set to None removes that run. Returns the path."""
    keys = key.split(".")
    if len(keys) == 2 and keys[0] == "runs" and value is None:
        runs = raw.get("runs") or {}
        if keys[1] not in runs:
            raise UsageError(f"{where}: there is no run {keys[1]!r} (runs: {', '.join(runs) or 'none'})"
                             + messages.did_you_mean(keys[1], runs))
        del runs[keys[1]]
        return tuple(keys)
    node = raw
    for depth, part in enumerate(keys[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif isinstance(child, str):
            child = node[part] = _expand_shorthand(tuple(keys[: depth + 1]), child)
        if not isinstance(child, dict):
            raise UsageError(f"{where}: {'.'.join(keys[: depth + 1])} holds {child!r}, not a mapping of keys")
        node = child
    node[keys[-1]] = value
    return tuple(keys)




def _key_lines(node, path=()) -> dict[tuple, int]:
    """Map each key path of a composed YAML tree to its 1-based line number."""
    lines = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            sub = path + (key_node.value,)
            lines[sub] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, sub))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[path + (index,)] = item.start_mark.line + 1
            lines.update(_key_lines(item, path + (index,)))
    return lines
