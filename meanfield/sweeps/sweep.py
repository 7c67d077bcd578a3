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

Points run through any ``concurrent.futures.Executor``: a local process pool by default,
Dask distributed (``Client(address).get_executor()``, or a ``LocalCluster``) for
clusters. The worker that runs a point is the only writer of its file
``DIR/points/<id>.h5``; each worker sets its Numba (and BLAS) thread count before it
computes. The main process writes ``DIR/results.csv`` and ``DIR/results.h5`` (see
:mod:`meanfield.sweeps.table`) after every finished point. A point that fails is recorded with
its reason and the others go on; ``resume`` re-runs only the points whose file is not
complete (an interrupted point continues from its checkpoint).

This module imports no Numba at import time: a worker process sets its thread count
before the numerical core is loaded.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import itertools
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import yaml

from ..config.bundled import SWEEP_DIR, bundled_sweeps, display_name, resolve_path, scenario_path
from ..config.loading import read_text, read_yaml, relative_to, set_key, validate_scenario
from ..config.scenario import Scenario
from ..engine.threads import THREAD_VARIABLES, apply, using
from ..errors import SweepFailed, UsageError, as_path, did_you_mean, expect_stops, stop_requested
from ..storage import WriterLock, open_trajectory
from .table import Table, cell_text, python_scalar, read_table, write_table

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
    name = raw.get("name") or default_name
    points = list(_points(layers.base, layers.base_source, grid_axes, source, how,
                          {key: "--grid" for key in axes or {}}))
    return Sweep(str(name), layers.description, layers.base, grid_axes, points, layers.parents, layers.origins,
                 layers.removed)


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
            values = yaml.safe_load(f"[{text}]")
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
            plan(scenario)  # what only a plan finds: the data file, the size budget
        except UsageError as exc:
            raise UsageError(f"{source}: point {point_id} ({settings}): {exc}") from None
        yield Point(index, point_id, coords, scenario)


# ---------------------------------------------------------------------- one point
@dataclass(frozen=True)
class Task:
    """What a worker needs for one point (plain data: it travels to other processes)."""

    point: str
    scenario_yaml: str
    output: str
    threads: int


@dataclass
class PointResult:
    """What a worker sends back: the point's status, why it failed, its wall time and final measures."""

    point: str
    status: str
    reason: str = ""
    seconds: float = math.nan
    measures: dict = field(default_factory=dict)


def run_point(task: Task) -> PointResult:
    """Run one point into its own file (continuing it when the file holds an unfinished run),
    on the point's threads.

    Never raises for a point that fails: the failure is the outcome, so the sweep goes on.
    """
    with using(task.threads):
        return _run_point(task)


def _run_point(task: Task) -> PointResult:
    from ..errors import RunFailed

    start = time.perf_counter()
    status, reason = "complete", ""
    try:
        from ..config.loading import parse_scenario
        from ..engine.driver import simulate  # the numerical core: a stop may come while it loads

        scenario = parse_scenario(task.scenario_yaml, source=task.point)
        resume = _resumable(task.output)
        if not resume and Path(task.output).exists():
            os.remove(task.output)  # an unreadable remnant of a killed worker
        try:
            simulate(scenario, task.output, resume=resume)[0].close()
        except OSError:
            if not resume:
                raise
            # a killed worker's file whose header reads but whose last chunks do not
            # (HDF5 "filter returned failure during read"): start the point again
            os.remove(task.output)
            simulate(scenario, task.output)[0].close()
        measures = final_measures(task.output)
    except KeyboardInterrupt:
        if _POOL_WORKER:  # the sweep is stopping: the file is closed and marked interrupted
            os._exit(130)
        raise
    except RunFailed as exc:
        status, reason = "failed", str(exc)
    except Exception as exc:  # noqa: BLE001 - any error of one point is that point's outcome
        if _POOL_WORKER and stop_requested():  # the stop, cut into an import (ImportError): not the point's fault
            os._exit(130)
        status, reason = "failed", f"{type(exc).__name__}: {exc}"
    if status != "complete":
        try:
            measures = final_measures(task.output)
        except Exception:  # noqa: BLE001 - a failed point's file may hold nothing readable
            measures = {}
    return PointResult(task.point, status, reason, time.perf_counter() - start, measures)


_POOL_WORKER = False


def _init_pool_worker(threads: int) -> None:
    """A local pool worker: its thread counts, and SIGTERM stops it the way Ctrl-C does."""
    global _POOL_WORKER
    _POOL_WORKER = True
    apply(threads)
    expect_stops()


def _resumable(output: str) -> bool:
    """True if ``output`` is a trajectory file of ours that a resume can continue."""
    if not Path(output).exists():
        return False
    try:
        with open_trajectory(output) as trajectory:
            trajectory.runs
        return True
    except (UsageError, OSError, KeyError):
        return False


def _done_before(directory: Path, point: Point, resume: bool) -> bool:
    """A point that ``resume`` skips: its file is complete."""
    return resume and point_status(directory / point.file) == "complete"


def point_status(output: str | Path) -> str:
    """``complete`` if every run of the file is complete, else ``missing`` or ``unfinished``."""
    if not Path(output).exists():
        return "missing"
    try:
        with open_trajectory(output) as trajectory:
            return "complete" if trajectory.complete else "unfinished"
    except (UsageError, OSError, KeyError):
        return "unfinished"


def final_measures(output: str | Path) -> dict[str, Any]:
    """``<run>.<measure>``: the last value of every scalar measure of every run in the file,
    with ``<run>.t`` (the time reached), ``<run>.status``, ``<run>.ended`` (how a complete run
    ended: 't_end' or 'stop_loss') and the run's predicted regime numbers."""
    out: dict[str, Any] = {}
    try:
        trajectory = open_trajectory(output)
    except (UsageError, OSError):
        return out
    with trajectory:
        for run in trajectory:
            out[f"{run.name}.t"] = run.t
            out.update({f"{run.name}.{k}": v for k, v in run.final().items()})
            out[f"{run.name}.status"] = run.status.split(":")[0]
            out[f"{run.name}.ended"] = run.ended or ""  # t_end | stop_loss; '' if not complete
            for attr in PREDICTED:
                if attr in run.attrs:
                    out[f"{run.name}.{attr}"] = python_scalar(run.attrs[attr])
    return out


PREDICTED = ("predicted_regime", "predicted_r", "predicted_kappa", "predicted_gamma", "predicted_gamma_prime",
             "predicted_luo_phase")


# ------------------------------------------------------------------------- the engine
@dataclass
class SweepResult:
    """A sweep directory and how its last run went: ``ran`` points run now, ``skipped``
    already complete, ``failed``, ``seconds`` of wall time, ``interrupted``. The results
    are read from the directory: ``table`` (pandas), :meth:`to_xarray`, :meth:`trajectory`."""

    directory: Path
    ran: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = math.nan
    interrupted: bool = False

    @classmethod
    def open(cls, directory) -> SweepResult:
        """The result of a sweep directory written earlier (its counts unknown: zeros)."""
        directory = as_path(directory, "open a sweep")
        read_table(directory)  # a clear error if it holds no sweep
        return cls(directory)

    @property
    def table(self):
        """The results table as a ``pandas.DataFrame``: one row per point, its grid
        coordinates, seed, status, and every run's final measures as ``<run>.<measure>``."""
        import pandas as pd

        return pd.DataFrame(read_table(self.directory).columns)

    def to_xarray(self):
        """The sweep as an ``xarray.Dataset`` with one dimension per grid axis (see
        :func:`meanfield.analysis.to_dataset`)."""
        from ..analysis import to_dataset

        return to_dataset(self.directory)

    @property
    def unconverged(self) -> dict[str, list[str]]:
        """point -> its runs that ran to t_end with the loss above ``train.stop_loss > 0``."""
        from ..analysis.convergence import unconverged

        return unconverged(read_table(self.directory))

    def trajectory(self, point: str):
        """The trajectory file of one point (``"p0003"``), open for reading."""
        points = sorted(path.stem for path in (self.directory / POINTS_DIR).glob("*.h5"))
        if not isinstance(point, str) or point not in points:
            listed = f"{points[0]} .. {points[-1]}, {len(points)} in all" if len(points) > 2 else ", ".join(points)
            raise UsageError(f"sweep {self.directory} has no point {point!r} (points: {listed or 'none yet'}; a point "
                             f"is named by its id, the table's 'point' column){did_you_mean(point, points)}")
        return open_trajectory(self.directory / POINTS_DIR / f"{point}.h5")

    def __repr__(self) -> str:
        return (f"<meanfield.SweepResult {self.directory}: {self.ran} run, {self.skipped} already complete, "
                f"{self.failed} failed{', interrupted' if self.interrupted else ''}>")


def run_sweep(
    sweep: Sweep,
    directory: str | Path,
    *,
    executor: Optional[Executor] = None,
    workers: Optional[int] = None,
    threads: Optional[int] = None,
    resume: bool = False,
    on_point: Callable[[Point, dict], None] = lambda point, row: None,
) -> SweepResult:
    """Run every point of ``sweep`` into ``directory`` and return the results table.

    ``executor``: any ``concurrent.futures.Executor`` (e.g. a Dask client's); by default a
    local process pool of ``workers`` processes (default: the CPU count), each with
    ``threads`` Numba threads (default: CPUs / workers). ``on_point`` is called in this
    process after each point with the point and its table row.
    """
    directory = Path(directory)
    _claim_directory(directory, sweep, resume)
    with WriterLock(directory / "sweep"):  # one sweep process per directory
        (directory / POINTS_DIR).mkdir(exist_ok=True)
        rows = _previous_rows(directory) if resume else {}
        todo, done = [], {}
        for point in sweep.points:
            output = directory / point.file
            if _done_before(directory, point, resume):
                previous = rows.get(point.id, {})
                done[point.id] = _row(point, PointResult(point.id, "complete", "", previous.get("seconds", math.nan),
                                                         final_measures(output)))
            else:
                todo.append(point)
        cpus = os.cpu_count() or 1
        workers = workers or min(cpus, max(1, len(todo)))
        threads = threads or max(1, cpus // workers)
        start, failed, interrupted = time.perf_counter(), 0, False
        with _default_executor(executor, workers, threads) as pool:
            futures = {pool.submit(run_point, Task(p.id, p.scenario.resolved_yaml(),
                                                   str((directory / p.file).resolve()), threads)): p
                       for p in todo}
            _save(directory, sweep, done)
            try:
                for future in as_completed(futures):
                    point = futures[future]
                    try:
                        outcome = future.result()
                    except Exception as exc:  # noqa: BLE001 - a worker that died takes only its point
                        outcome = PointResult(point.id, "failed", f"worker lost: {type(exc).__name__}: {exc}")
                    done[point.id] = _row(point, outcome)
                    failed += outcome.status != "complete"
                    _save(directory, sweep, done)
                    on_point(point, done[point.id])
            except KeyboardInterrupt:
                interrupted = True
                for future in futures:
                    future.cancel()
                _stop_workers()
        _save(directory, sweep, done)
        return SweepResult(directory, len(todo), len(sweep.points) - len(todo), failed,
                           time.perf_counter() - start, interrupted)


def execute(sweep: Sweep, directory=None, *, workers: Optional[int] = None, threads: Optional[int] = None,
            engine: str = "process", scheduler: Optional[str] = None, resume: bool = False, progress: bool = False,
            on_point: Optional[Callable[[Point, dict], None]] = None, log: Callable[[str], None] = lambda m: None,
            ) -> SweepResult:
    """Run ``sweep`` into ``directory`` (default ./<name>) on a local process pool or on Dask
    (``engine="dask"``: a local cluster of ``workers``; ``scheduler``: that cluster's), with
    progress over the points to run (``progress``: :class:`meanfield.engine.progress.PointsBar`) or a
    ``log`` line per point."""
    from ..engine.progress import PointsBar

    if engine not in ("process", "dask"):
        raise UsageError(f"engine {engine!r}: use 'process' or 'dask'")
    if scheduler and workers:
        raise UsageError("--workers is for local runs; with --scheduler the cluster has its own workers")
    directory = Path(directory or sweep.name)
    use_dask = engine == "dask" or scheduler is not None
    executor = dask_executor(scheduler, workers, threads or 1) if use_dask else contextlib.nullcontext()
    to_run = sum(not _done_before(directory, point, resume) for point in sweep.points)
    bar = PointsBar(to_run, enabled=progress, log=log)

    def after_point(point, row):
        bar.update(point, row)
        if on_point is not None:
            on_point(point, row)

    with executor as pool, bar:
        result = run_sweep(sweep, directory, executor=pool, workers=workers,
                           threads=threads or (1 if use_dask else None), resume=resume, on_point=after_point)
    return check_outcome(result)


def check_outcome(result: SweepResult, shown: int = 3) -> SweepResult:
    """``result``, unless every point that ran failed and none was complete before: then a
    :class:`UsageError` if the workers died at start-up under a script without a
    ``__main__`` guard (:func:`unguarded_script`), else :class:`SweepFailed` with the first
    ``shown`` reasons."""
    if result.interrupted or result.ran == 0 or result.skipped or result.failed < result.ran:
        return result
    failed = [row for row in read_table(result.directory).rows() if row["status"] != "complete"]
    script = unguarded_script()
    if script and any("BrokenProcessPool" in str(row["reason"]) for row in failed):
        raise UsageError(
            f"every point of the sweep failed: its worker processes died as they started (BrokenProcessPool). "
            f"{script} has no `if __name__ == \"__main__\":` guard, and each worker (a spawned process) "
            f"imports it and starts the sweep again. Put the lines that start the sweep under the guard: "
            f"`if __name__ == \"__main__\":` then, indented, `res = mf.sweep(...)` and what uses it")
    reasons = "; ".join(f"{row['point']}: {row['reason']}" for row in failed[:shown])
    more = f" (and {len(failed) - shown} more, in {result.directory}/results.csv)" if len(failed) > shown else ""
    raise SweepFailed(f"every point of the sweep failed ({len(failed)} of {len(failed)}): {reasons}{more}", result)


def unguarded_script() -> Optional[str]:
    """The path of this process's main script if it is a Python file without an
    ``if __name__ == "__main__":`` guard (each spawned worker runs such a script's top level
    again); None otherwise (a notebook, the console command, a guarded script)."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path or not str(path).endswith(".py"):
        return None
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    return None if any(_is_main_guard(node) for node in ast.walk(tree)) else str(path)


def _is_main_guard(node) -> bool:
    """Whether ``node`` is ``if __name__ == "__main__":`` (either side of the comparison)."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    sides = [node.test.left, *node.test.comparators]
    return (any(isinstance(side, ast.Name) and side.id == "__name__" for side in sides)
            and any(isinstance(side, ast.Constant) and side.value == "__main__" for side in sides))


def _claim_directory(directory: Path, sweep: Sweep, resume: bool) -> None:
    """Create the sweep directory; refuse to mix two sweeps, or to start over on a finished one."""
    stored = directory / SWEEP_COPY
    if stored.exists():
        if not resume:
            raise UsageError(f"{directory} already holds a sweep: continue it with --resume, "
                             "or choose another directory with -o")
        if stored.read_text() != sweep.as_yaml():
            raise UsageError(f"{directory} holds a different sweep ({stored} differs from this one): "
                             "--resume continues the same sweep only; choose another directory with -o")
        return
    if resume:
        raise UsageError(f"--resume: {directory} holds no sweep (run without --resume first)")
    if directory.exists() and any(directory.iterdir()):
        raise UsageError(f"{directory} exists and is not empty: choose a new directory with -o")
    directory.mkdir(parents=True, exist_ok=True)
    partial = stored.with_name(SWEEP_COPY + ".partial")
    partial.write_text(sweep.as_yaml())
    os.replace(partial, stored)


def _previous_rows(directory: Path) -> dict[str, dict]:
    try:
        return {row["point"]: row for row in read_table(directory).rows()}
    except UsageError:
        return {}


def _row(point: Point, outcome: PointResult) -> dict:
    row = {"point": point.id, **point.coords}
    row.setdefault("seed", point.scenario.seed)
    row.update(status=outcome.status, ended=point_ended(outcome), stop_loss=point.scenario.train.stop_loss,
               reason=outcome.reason, seconds=outcome.seconds, file=point.file)
    row.update(outcome.measures)
    return row


def point_ended(outcome: PointResult) -> str:
    """How a complete point ended: 'stop_loss' if every run stopped at the scenario's
    ``stop_loss``, 't_end' if a run ran to t_end (with ``stop_loss > 0``: that run did not
    converge); '' for a point that is not complete."""
    ends = [value for key, value in outcome.measures.items() if key.endswith(".ended")]
    if outcome.status != "complete" or not ends:
        return ""
    return "stop_loss" if all(end == "stop_loss" for end in ends) else "t_end"


def _save(directory: Path, sweep: Sweep, done: dict[str, dict]) -> Table:
    rows = [done[p.id] for p in sweep.points if p.id in done]
    return write_table(directory, rows, sweep.grid_keys, name=sweep.name, sweep_yaml=sweep.as_yaml())


@contextmanager
def _default_executor(executor: Optional[Executor], workers: int, threads: int):
    """The given executor as is, or a local process pool (spawned: no forked OpenMP state)."""
    if executor is not None:
        yield executor
        return
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_pool_worker, initargs=(threads,))
    try:
        with _thread_environment(threads):  # spawned workers load BLAS before their initializer runs
            yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)




@contextmanager
def _thread_environment(threads: int):
    """The thread-count variables set to ``threads`` in this process's environment (which
    the workers it spawns inherit), restored afterwards."""
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update({name: str(threads) for name in THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _stop_workers() -> None:
    """Ask this process's worker processes to stop: each marks its run interrupted and exits."""
    for child in multiprocessing.active_children():
        child.terminate()


# ---------------------------------------------------------------------------- dask
@contextmanager
def dask_executor(scheduler: Optional[str] = None, workers: Optional[int] = None, threads: int = 1):
    """A Dask distributed executor: a client of the scheduler at ``scheduler``, or of a local
    cluster of ``workers`` single-threaded worker processes. Needs the ``dask`` extra."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise UsageError("the Dask engine needs dask.distributed: pip install 'meanfield[dask]'") from None
    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise UsageError(f"--scheduler {scheduler}: cannot reach the Dask scheduler ({exc})") from None
        with client:
            yield client.get_executor()
        return
    cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=40)
    with cluster, Client(cluster) as client:
        yield client.get_executor()
