"""Sweeps: a grid of scenarios, one trajectory file per point, one results table.

A sweep file has a ``base`` (a scenario: inline, a path relative to the sweep file, or a
bundled scenario's name) and a ``grid``: axes named by the dotted keys ``--set`` takes,
each a list of values or a mapping ``label: value`` (the label is the coordinate the
table shows). Its points are the product of the axes, the last axis fastest, numbered
``p0000, p0001, ...``; each is the base with its values set, validated as a scenario
before anything runs, so any point can be re-run alone with ``meanfield simulate``.
``replicates: R`` adds a ``seed`` axis with R seeds spawned from the base seed
(``numpy.random.SeedSequence(seed).spawn(R)``).

``extends: NAME`` (a bundled sweep's name, or a path relative to the extending file) starts
from another sweep (itself possibly extending a third; a cycle is an error): its ``base`` is
deep-merged into the inherited one (mappings key by key, a null removes the key; a ``base``
that is a name or path replaces it), its ``grid`` replaces the inherited axes of the same
key in their place, appends new ones and removes those set to null, and its ``name``,
``description`` and ``replicates`` (null: none) override (docs/design.md §7.2).

How the points run is :mod:`meanfield.sweeps.execution`'s.
"""

from __future__ import annotations

import copy
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

from ..config.bundled import SWEEP_DIR, bundled_sweeps, display_name, resolve_path, scenario_path
from ..config.loading import load_yaml, read_text, read_yaml, relative_to, set_key, validate_scenario
from ..config.scenario import Scenario
from ..config.sections import plain_name
from ..errors import UsageError
from ..messages import did_you_mean
from .table import cell_text

SWEEP_KEYS = ("name", "description", "extends", "base", "grid", "replicates")
POINTS_DIR = "points"
SWEEP_COPY = "sweep.yaml"


# ------------------------------------------------------------------------- the sweep
@dataclass(frozen=True)
class Axis:
    """One grid axis: a dotted scenario key, the values it takes and their labels in the table."""

    key: str
    labels: tuple
    values: tuple


@dataclass(frozen=True)
class Point:
    """One point of the grid: its id, its coordinates (axis key -> label) and its scenario."""

    index: int
    id: str
    coords: dict
    scenario: Scenario
    memory: Any = field(default=None, compare=False, repr=False)
    """Its plan's peak memory (:class:`meanfield.engine.plan.MemoryEstimate`), for the check of
    the workers that run at once."""

    @property
    def file(self) -> str:
        return f"{POINTS_DIR}/{self.id}.h5"


@dataclass
class Sweep:
    """A validated sweep: its name, base scenario (raw mapping), axes, and every point; for
    a sweep that extends others, ``extends`` (the chain of parents, nearest first),
    ``origins`` (axis key -> where it comes from: 'inherited from P', 'replaced', 'new')
    and ``removed`` (axis key -> the parent it was removed from)."""

    name: str
    description: str
    base: dict
    axes: list[Axis]
    points: list[Point]
    extends: list[str] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)

    @property
    def grid_keys(self) -> list[str]:
        return [axis.key for axis in self.axes]

    def describe(self, directory) -> str:
        """What ``--dry-run`` prints: the points, the sweeps it extends, the axes (and for an
        extending sweep where each comes from, and those removed), the runs, what would be written."""
        lines = [f"sweep {self.name}: {len(self.points)} point(s), every one valid"]
        if self.extends:
            lines.append(f"  extends {' -> '.join(self.extends)}")
        for axis in self.axes:
            origin = f"   ({self.origins[axis.key]})" if axis.key in self.origins else ""
            lines.append(f"  {axis.key}: {', '.join(map(str, axis.labels))}{origin}")
        lines += [f"  {key}: removed (inherited from {parent})" for key, parent in self.removed.items()]
        lines.append(f"  runs per point: {', '.join(self.points[0].scenario.runs)}")
        lines.append(f"would write {directory}/points/p0000.h5 ... and {directory}/results.csv, results.h5")
        return "\n".join(lines)

    def as_yaml(self) -> str:
        """The sweep as one self-contained YAML document (the base inlined, labels kept)."""
        grid = {axis.key: (list(axis.values) if axis.labels == axis.values
                           else dict(zip(axis.labels, axis.values))) for axis in self.axes}
        return yaml.safe_dump({"name": self.name, "description": self.description, "base": self.base,
                               "grid": grid}, sort_keys=False)


def make_sweep(source, grid=None, *, replicates: Optional[int] = None, overrides=(), axes=None) -> Sweep:
    """A validated sweep: ``source`` itself (a Sweep), a sweep file or bundled sweep's name
    (``grid`` None), or a base scenario (a Scenario, a mapping, a scenario file or bundled
    name) with ``grid`` (dotted key -> list of values, or mapping label -> value) and
    ``replicates``. ``overrides`` edit the base scenario as ``--set`` does (``key=value``
    strings, or a mapping key -> value); ``axes`` change a named sweep's grid as ``--grid``
    does (:func:`change_axes`)."""
    if isinstance(source, Sweep):
        if overrides or axes:
            raise UsageError("overrides and axes change a sweep as it is read: give its file or name, not a Sweep")
        return source
    if grid is None:
        if replicates is not None:
            raise UsageError("replicates goes with a grid: give the base scenario and grid=...")
        if not isinstance(source, (str, os.PathLike)):
            raise UsageError(f"a sweep is a sweep file's path or a bundled sweep's name, or a base scenario with "
                             f"grid=...: not {type(source).__name__} {source!r:.80}")
        return load_sweep(source, overrides=overrides, axes=axes)
    if axes:
        raise UsageError("axes changes the grid of a sweep file or bundled sweep; with a base scenario, "
                         "give the whole grid=...")
    base = source.model_dump(mode="json") if isinstance(source, Scenario) else source
    if isinstance(base, Path):
        base = str(base)
    raw = {"base": base, "grid": dict(grid)}
    if replicates is not None:
        raw["replicates"] = replicates
    name = Path(base).stem if isinstance(base, str) else str(base.get("name", "sweep"))
    return sweep_from_mapping(raw, source="<sweep>", lines={}, root=Path("."), default_name=name,
                              overrides=overrides)


def load_sweep(path: str | Path, *, overrides=(), axes=None) -> Sweep:
    """Read a sweep file (or a bundled sweep's name) and validate every point of its grid,
    after ``overrides`` (``--set``) and ``axes`` (``--grid``) if given."""
    path = resolve_path(path, SWEEP_DIR, bundled_sweeps, what="sweep")
    raw, lines = read_yaml(read_text(path, "sweep"), display_name(path))
    return sweep_from_mapping(raw, display_name(path), lines, path.parent, path.stem, overrides=overrides, axes=axes,
                              file=path)


def parse_sweep(text: str, source: str = "<sweep>", root: Path = Path("."), default_name: str = "sweep") -> Sweep:
    """A sweep from its YAML text; ``root`` is where a relative ``base`` path is looked for."""
    raw, lines = read_yaml(text, source)
    return sweep_from_mapping(raw, source, lines, root, default_name)


def sweep_from_mapping(raw, source: str, lines: dict, root: Path, default_name: str, *, overrides=(),
                       axes=None, file: Path | None = None) -> Sweep:
    """A sweep from its parsed mapping (``lines``: the line of each key, for messages), its base
    edited by ``overrides`` and its grid by ``axes`` (what ``--set`` and ``--grid`` give);
    ``file``: the sweep file it was read from, when ``source`` is a display name."""
    own = Path(file or source)
    chain = ((str(own.resolve()), source),) if own.is_file() else ()
    layers = _layers(raw, source, lines, root, chain)
    how = _override_base(layers, overrides)
    if axes:
        change_axes(layers, axes)
    grid_axes = list(layers.axes)
    if layers.replicates is not None:
        grid_axes.append(_replicate_axis(layers.replicates, layers.base, grid_axes, *layers.replicates_at))
        if layers.parents:
            layers.origins["seed"] = layers.replicates_origin
    name = _plain_sweep_name(raw.get("name") or default_name, source, lines)
    points = list(_points(layers.base, layers.base_source, grid_axes, source, how,
                          {key: "--grid" for key in axes or {}}))
    return Sweep(str(name), layers.description, layers.base, grid_axes, points, layers.parents, layers.origins,
                 layers.removed)


def _plain_sweep_name(name, source: str, lines: dict) -> str:
    """The sweep's name, which names its directory: a plain name (a sweep file from someone
    else does not decide where its results land), else a UsageError at its line."""
    where = f"{source}:{lines[('name',)]}" if ("name",) in lines else source
    if not isinstance(name, (str, int)) or isinstance(name, bool):
        raise UsageError(f"{where}: name: a sweep's name is a plain name (it names its directory), not {name!r}")
    try:
        return plain_name(str(name))
    except ValueError as exc:
        raise UsageError(f"{where}: name: {exc}") from None


# ------------------------------------------------------------ --set and --grid
def _override_base(layers: _Layers, overrides) -> dict:
    """Apply ``overrides`` (``key=value`` strings as ``--set`` takes them, or a mapping) to the
    base; the key paths they set -> the word an error names them by ('--set', 'override')."""
    from ..config.loading import _apply_overrides

    if not overrides:
        return {}
    layers.base = copy.deepcopy(layers.base)
    word = "override" if isinstance(overrides, dict) else "--set"
    return {path: word for path in _apply_overrides(layers.base, overrides, layers.base_source)}


def parse_grid_options(items) -> dict:
    """``--grid key=v1,v2,...`` options as a mapping key -> [values] (each value read as YAML,
    the whole as a YAML flow list: ``runs.ntk.parameterization={preset: ntk, lr: 0.1},ntk`` works)."""
    axes = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise UsageError(f"--grid {item!r}: write it as dotted.key=value1,value2,..., e.g. "
                             "--grid model.width=64,128,256")
        if key in axes:
            raise UsageError(f"--grid {key}: given twice; give every value of an axis in one --grid")
        try:
            values = load_yaml(f"[{text}]")
        except yaml.YAMLError as exc:
            raise UsageError(f"--grid {key}: {text!r} is not a YAML list of values "
                             f"({getattr(exc, 'problem', None) or 'cannot be read'}): write v1,v2,...") from None
        axes[key] = values
    return axes


def change_axes(layers: _Layers, axes: dict) -> None:
    """The grid with ``axes`` (dotted key -> values) applied as ``--grid`` does: an axis of the
    same key is replaced where it stands, a new key appended, a key set to None removed; for an
    axis that has labels (``label: value``), the values given are labels, and pick those points."""
    inherited = {axis.key: axis for axis in layers.axes}
    for key, values in axes.items():
        old = inherited.get(key)
        if values is None:
            if old is None:
                raise UsageError(f"--grid {key}: None removes an axis, and the sweep has no axis {key!r} "
                                 f"(its axes: {', '.join(inherited) or 'none'})")
            layers.removed[key] = "--grid"
            del inherited[key]
            continue
        if old is not None and old.labels != old.values and isinstance(values, list):
            inherited[key] = _labelled_subset(old, values)
            layers.origins[key] = f"--grid: {len(values)} of its {len(old.labels)} labels"
            continue
        (axis,) = _axes({key: values}, "--grid", {})
        layers.origins[key] = "--grid: new" if old is None else "--grid: replaced"
        inherited[key] = axis
    layers.axes = list(inherited.values())


def _labelled_subset(axis: Axis, chosen: list) -> Axis:
    """The points of a labelled axis whose labels are ``chosen`` (in that order); a value that
    is none of its labels is an error naming them."""
    picked = []
    for item in chosen:
        found = [k for k, label in enumerate(axis.labels) if _same_label(label, item)]
        if not found:
            raise UsageError(f"--grid {axis.key}: {cell_text(item)} is not one of its labels; the axis "
                             f"{axis.key} takes its labels: {', '.join(map(cell_text, axis.labels))}")
        if found[0] in picked:
            raise UsageError(f"--grid {axis.key}: the label {cell_text(item)} is listed twice")
        picked.append(found[0])
    return Axis(axis.key, tuple(axis.labels[k] for k in picked), tuple(axis.values[k] for k in picked))


def _same_label(label, item) -> bool:
    """Whether a value given on the command line names ``label`` (0.01 and '0.01' alike)."""
    if isinstance(label, bool) or isinstance(item, bool):
        return label is item
    if isinstance(label, (int, float)) and isinstance(item, (int, float)):
        return float(label) == float(item)
    return str(label) == str(item)


@dataclass
class _Layers:
    """A sweep file's keys with those of the sweeps it extends merged in: the base scenario
    (a raw mapping) and the name its errors go under, the axes, replicates (with the file and
    lines that set them), the description; and for --dry-run the parents (nearest first),
    where each axis comes from relative to the nearest parent, and the axes removed from it."""

    base: dict
    base_source: str
    axes: list[Axis]
    replicates: Any
    replicates_at: tuple
    description: str
    parents: list[str] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)
    replicates_origin: str = ""
    removed: dict[str, str] = field(default_factory=dict)


def _layers(raw, source: str, lines: dict, root: Path, chain: tuple) -> _Layers:
    """Read one sweep file's mapping over the sweeps it extends (``chain``: the files read
    so far, (resolved path, name) pairs, so that a cycle is refused)."""
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: a sweep is a mapping with the keys base and grid (or extends)")
    unknown = [key for key in raw if key not in SWEEP_KEYS]
    if unknown:
        raise UsageError(f"{_at(source, lines, unknown[0])}: unknown key {unknown[0]!r}; "
                         f"a sweep has: {', '.join(SWEEP_KEYS)}{did_you_mean(unknown[0], SWEEP_KEYS)}")
    if raw.get("extends") is None:
        for key in ("base", "grid"):
            if raw.get(key) is None:
                raise UsageError(f"{source}: the key {key!r} is required (base: a scenario; grid: dotted.key: "
                                 "[values]), unless the sweep extends another (extends: NAME)")
        base, base_source = _base_scenario(raw["base"], source, lines, root)
        return _Layers(base, base_source, _axes(raw["grid"], source, lines), raw.get("replicates"),
                       (source, lines), str(raw.get("description") or ""))
    layers, path = _parent(raw["extends"], source, lines, root, chain)
    parent = path.stem if path.parent == SWEEP_DIR else str(path)
    layers.parents = [parent, *layers.parents]
    layers.origins = {axis.key: f"inherited from {parent}" for axis in layers.axes}
    layers.removed = {}
    if raw.get("base") is not None:
        if isinstance(raw["base"], dict):
            layers.base = deep_merge(layers.base, raw["base"])
            layers.base_source = f"{source} (base, merged into {parent}'s)"
        else:
            layers.base, layers.base_source = _base_scenario(raw["base"], source, lines, root)
    if raw.get("grid") is not None:
        _merge_grid(layers, raw["grid"], source, lines, parent)
    if "replicates" in raw:
        inherited = layers.replicates
        layers.replicates, layers.replicates_at = raw["replicates"], (source, lines)
        layers.replicates_origin = "new" if inherited is None else f"replaced; {parent} had replicates: {inherited}"
        if raw["replicates"] is None and inherited is not None:
            layers.removed["seed"] = parent  # its replicates
    else:
        layers.replicates_origin = f"inherited from {parent}"
    if "description" in raw:
        layers.description = str(raw["description"] or "")
    if not layers.axes and layers.replicates is None:
        raise UsageError(f"{_at(source, lines, 'grid')}: without the axes removed, {parent}'s grid is empty: "
                         "keep or add one (grid: dotted.key: [values])")
    return layers


def _parent(extends, source: str, lines: dict, root: Path, chain: tuple) -> tuple[_Layers, Path]:
    """The sweep ``extends`` names (a path relative to the extending file, else a bundled
    sweep's name), read over its own parents, and its path; a cycle is refused, named."""
    where = _at(source, lines, "extends")
    if not isinstance(extends, str) or not extends:
        raise UsageError(f"{where}: extends names one sweep: a bundled sweep's name or a path relative to "
                         f"this file, got {extends!r}")
    path, bundled_path = root / extends, SWEEP_DIR / f"{Path(extends).stem}.yaml"
    if not path.is_file():
        if Path(extends).name != extends or Path(extends).suffix not in ("", ".yaml") or not bundled_path.is_file():
            raise UsageError(f"{where}: extends {extends!r}: no sweep file {path} and no bundled sweep of that "
                             f"name (bundled sweeps: {', '.join(bundled_sweeps()) or 'none'})")
        path = bundled_path
    resolved = str(path.resolve())
    if any(seen == resolved for seen, _ in chain):
        names = [name for _, name in chain] + [display_name(path)]
        raise UsageError(f"{where}: extends {extends!r} makes a cycle: {' -> '.join(names)}")
    raw, parent_lines = read_yaml(read_text(path, "sweep"), display_name(path))
    return _layers(raw, display_name(path), parent_lines, path.parent, (*chain, (resolved, display_name(path)))), path


def _merge_grid(layers: _Layers, grid, source: str, lines: dict, parent: str) -> None:
    """The extending file's grid over the inherited axes: an axis of the same key is
    replaced where it stands, a new key is appended, a key set to null is removed."""
    if not isinstance(grid, dict):
        raise UsageError(f"{_at(source, lines, 'grid')}: grid is a mapping of dotted keys to lists of values "
                         "(a key set to null removes an inherited axis)")
    inherited = {axis.key: axis for axis in layers.axes}
    for key in [key for key, values in grid.items() if values is None]:
        if key not in inherited:
            raise UsageError(f"{_at(source, lines, 'grid', key)}: grid {key}: null removes an inherited axis, and "
                             f"{parent} has no axis {key!r} (its axes: {', '.join(inherited) or 'none'})")
        layers.removed[key] = parent
        del layers.origins[key], inherited[key]
    given = {key: values for key, values in grid.items() if values is not None}
    own = {axis.key: axis for axis in _axes(given, source, lines)} if given else {}
    for key, axis in own.items():
        old = inherited.get(key)
        layers.origins[key] = "new" if old is None else f"replaced; {parent} had {', '.join(map(str, old.labels))}"
    layers.axes = [own.get(key, axis) for key, axis in inherited.items()] + [
        axis for key, axis in own.items() if key not in inherited]


def deep_merge(inherited, changes):
    """``inherited`` with ``changes`` merged in: mappings key by key (recursively), a null
    removes the key, any other value replaces. Neither argument is modified."""
    if not isinstance(inherited, dict) or not isinstance(changes, dict):
        return copy.deepcopy(changes)
    out = copy.deepcopy(inherited)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = deep_merge(out[key], value) if isinstance(out.get(key), dict) else copy.deepcopy(value)
    return out


def _at(source: str, lines: dict, *path) -> str:
    line = lines.get(tuple(path))
    return f"{source}:{line}" if line else source


def _base_scenario(base, source: str, lines: dict, root: Path) -> tuple[dict, str]:
    """The base scenario as a raw mapping, and the name its errors are reported under."""
    if isinstance(base, dict):  # written in the sweep file: its data paths are relative to that file
        return relative_to(base, root), f"{source} (base)"
    if not isinstance(base, str):
        raise UsageError(f"{_at(source, lines, 'base')}: base is a scenario: a mapping, a path or a bundled name")
    candidate = root / base
    path = candidate if candidate.exists() else scenario_path(base)
    raw, _ = read_yaml(read_text(path, "scenario"), display_name(path))
    if not isinstance(raw, dict):
        raise UsageError(f"{display_name(path)}: a scenario is a mapping of keys (name, data, model, runs, ...)")
    return relative_to(raw, path.parent), display_name(path)


def _axes(grid, source: str, lines: dict) -> list[Axis]:
    """The grid's axes; each key's values are a non-empty list or a mapping label -> value."""
    if not isinstance(grid, dict) or not grid:
        raise UsageError(f"{_at(source, lines, 'grid')}: grid is a mapping of dotted keys to lists of values, "
                         "e.g. grid: {model.width: [64, 256, 1024]}")
    axes = []
    for key, values in grid.items():
        where = _at(source, lines, "grid", key)
        if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
            raise UsageError(f"{where}: grid key {key!r} is not a dotted scenario key such as model.width")
        if isinstance(values, dict):
            labels, values = tuple(values), tuple(values.values())
            if not all(isinstance(label, (str, int, float)) for label in labels):
                raise UsageError(f"{where}: grid {key}: labels are strings or numbers")
        elif isinstance(values, list):
            labels = values = tuple(values)
            labels = tuple(v if isinstance(v, (str, int, float)) or v is None else cell_text(v) for v in values)
        else:
            raise UsageError(f"{where}: grid {key}: give a list of values (or a mapping label: value), "
                             f"got {values!r}")
        if not values:
            raise UsageError(f"{where}: grid {key}: the list of values is empty")
        if len(set(map(repr, labels))) != len(labels):
            raise UsageError(f"{where}: grid {key}: a value is listed twice")
        axes.append(Axis(key, labels, values))
    return axes


def _replicate_axis(replicates, base: dict, axes: list[Axis], source: str, lines: dict) -> Axis:
    """``replicates: R``: a seed axis of R seeds spawned from the base seed by SeedSequence."""
    where = _at(source, lines, "replicates")
    if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 1:
        raise UsageError(f"{where}: replicates is a positive integer (the number of seeds), got {replicates!r}")
    if any(axis.key == "seed" for axis in axes):
        raise UsageError(f"{where}: give either replicates or a seed axis in the grid, not both")
    root = base.get("seed", 0)
    if not isinstance(root, int):
        raise UsageError(f"{source}: base seed must be an integer to spawn replicates from, got {root!r}")
    seeds = tuple(int(child.generate_state(1)[0]) for child in np.random.SeedSequence(root).spawn(replicates))
    return Axis("seed", seeds, seeds)


def _points(base: dict, base_source: str, axes: list[Axis], source: str, set_by: Optional[dict] = None,
            axis_words: Optional[dict] = None):
    """Every point of the product, validated and planned: the first bad one is reported with its
    values (``set_by``: the base's key paths set by --set or overrides -> that word; ``axis_words``:
    axis key -> the word for an axis not from the file, '--grid'; for messages)."""
    axis_words = axis_words or {}
    from ..engine.plan import plan

    for index, choice in enumerate(itertools.product(*(range(len(axis.values)) for axis in axes))):
        raw = copy.deepcopy(base)
        point_id = f"p{index:04d}"
        coords, how = {}, dict(set_by or {})
        for axis, k in zip(axes, choice):
            coords[axis.key] = axis.labels[k]
            where = f"{source}: grid {axis.key} = {cell_text(axis.labels[k])}"
            how[set_key(raw, axis.key, copy.deepcopy(axis.values[k]), where=where)] = axis_words.get(axis.key, "grid")
        settings = ", ".join(f"{key} = {cell_text(label)}" for key, label in coords.items())
        try:
            scenario = validate_scenario(raw, base_source, overridden=set(how), how=how)
            memory = plan(scenario).memory  # what only a plan finds: the data file, the size budget
        except UsageError as exc:
            raise UsageError(f"{source}: point {point_id} ({settings}): {exc}") from None
        yield Point(index, point_id, coords, scenario, memory)
