"""A sweep's results table (``meanfield.sweeps.table``) as families, and what is fitted on them.

Rows are grouped by every grid key except the one swept against and ``seed`` (seeds are
replicates, each an observation of its own); only complete points enter. A family is one
group and one run with the measure: ``scaling`` fits its power law and its m -> infinity
limit (``stats``), ``regimes`` gives every point the phase of its family, ``thresholds``
where the measure crosses a level along the swept key.

The phase is given only for the displacement measures (``REGIME_MEASURES``); the exponent
of a loss says nothing about laziness. The width exponent sees width only: a ``lazy`` run at a
fixed alpha moves ~ 1/alpha at every width, so it is ``critical`` against m, and lazy only
against alpha. So a critical family's rich or lazy comes from the size of its movement, not
from its exponent: it is the measured regime ``meanfield inspect`` gives its points at the
largest value of the swept key (``RecordedRun.verdict``, the one rule of
``diagnostics.verdict``), ``ScalingRow.verdict``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..model.diagnostics import regime_numbers, verdict
from ..model.measures import DISPLACEMENT_MEASURES, TEST_MEASURES
from ..storage.layout import NO_TEST_SET
from ..sweeps.table import Table, python_scalar, read_table
from .stats import RICH_LAZY, Extrapolation, PowerLawFit, classify, crossing, extrapolate, power_law

REPLICATE = "seed"
"""The column whose values are replicates, never a group coordinate."""

REGIME_MEASURES = DISPLACEMENT_MEASURES
"""The measures (relative displacements) whose width exponent names a regime, read off the table
of measures (``meanfield.model.measures``): displacement_wb, recorded on request, is one of them."""


@dataclass(frozen=True)
class ScalingRow:
    """One family: a group of the sweep (its coordinates), one run, its fits and regimes."""

    group: dict
    run: str
    fit: PowerLawFit
    extrapolation: Extrapolation
    regime: str  # linear | critical | condensed | undetermined; "" for a measure that names none
    predicted: str  # the run's predicted_regime where the group agrees on one, "mixed" if not
    note: str = ""  # why a fit is missing
    verdict: str = ""
    """What ``meanfield inspect`` measures (``RecordedRun.verdict``: rich | lazy | unstable | unknown)
    of the family's points at its largest x, "mixed" where they differ; "" for a measure that names
    no regime."""
    verdict_at: float = math.nan
    """That largest x (e.g. the largest width)."""

    @property
    def n(self) -> int:
        """The number of points in the power law (replicates counted apart)."""
        return self.fit.n

    @property
    def words(self) -> str:
        """The measured regime as rich / lazy / condensed / undetermined ("" if none): by the
        exponent where it names one (linear: lazy, condensed, undetermined), and for a critical
        family, whose movement keeps its size as m grows, by that size: :attr:`verdict`."""
        if self.regime == "critical":
            return self.verdict if self.verdict in ("rich", "lazy", "unstable", "mixed") else ""
        return RICH_LAZY.get(self.regime, "")


@dataclass(frozen=True)
class Family:
    """One group of the sweep (its coordinates) and one run: the points that enter its fits."""

    group: dict
    run: str
    index: np.ndarray  # the table's row numbers of the complete points of the group with a value
    x: np.ndarray
    y: np.ndarray
    predicted: str  # the run's predicted_regime where the group agrees on one, "mixed" if not


def axes(table: Table) -> list[str]:
    """The axes of a sweep: its grid keys, then ``seed`` if seeds vary without being one."""
    keys = list(table.grid_keys)
    if REPLICATE not in keys and REPLICATE in table.columns and len(distinct(table[REPLICATE])) > 1:
        keys.append(REPLICATE)
    return keys


def measures(table: Table) -> dict[str, list[str]]:
    """Every numeric measure of the table with the runs that have it: {measure: [run, ...]}."""
    found: dict[str, list[str]] = {}
    for column in table.measure_columns():
        run, _, measure = column.rpartition(".")
        found.setdefault(measure, []).append(run)
    return found


def scaling(table, measure: str = "displacement_w", against: str = "model.width", runs=None,
            confidence: float = 0.95, tol: float = 0.1) -> list[ScalingRow]:
    """The power law (and m -> inf extrapolation) of ``measure`` against ``against`` for every
    group of the sweep and every run, one ScalingRow per family in the order the groups
    first appear; ``table`` is a Table or a sweep directory.

    A family whose power law cannot be fitted has NaN numbers and its reason in ``note``;
    the extrapolation is NaN where it cannot be made (fewer than 3 distinct widths, no
    convergence). UsageError for an unknown measure, grid key or run.
    """
    table = as_table(table)
    return [_scale(table, family, measure, confidence, tol) for family in group_families(table, measure, against, runs)]


def regimes(table, measure: str = "displacement_w", against: str = "model.width", runs=None,
            confidence: float = 0.95, tol: float = 0.1) -> dict[str, np.ndarray]:
    """The measured regime of every point, from its family's fit: {``<run>.measured_regime``:
    one string per row of the table}, "" where the point did not enter a fit (failed, or
    no value)."""
    table = as_table(table)
    out: dict[str, np.ndarray] = {}
    for family in group_families(table, measure, against, runs):
        column = out.setdefault(f"{family.run}.measured_regime", np.full(len(table), "", dtype=object))
        column[family.index] = _regime(fit_family(family, confidence)[0], measure, tol)
    return out


def _scale(table: Table, family: Family, measure: str, confidence: float, tol: float) -> ScalingRow:
    """The family's row: its power law, its extrapolation (NaN with a note where it cannot be made),
    phase and, for a displacement measure, the verdict at its largest x."""
    fit, notes = fit_family(family, confidence)
    try:
        extrapolation = extrapolate(family.x, family.y, confidence)
    except (ValueError, RuntimeError, np.linalg.LinAlgError) as exc:
        extrapolation, notes = Extrapolation.missing(len(family.x), confidence), notes + [f"limit: {exc}"]
    size, at = family_verdict(table, family) if measure in REGIME_MEASURES else ("", math.nan)
    return ScalingRow(family.group, family.run, fit, extrapolation, _regime(fit, measure, tol), family.predicted,
                      "; ".join(notes), size, at)


def family_verdict(table: Table, family: Family) -> tuple[str, float]:
    """(the measured regime of the family's points at its largest x, that x): the one label of
    :func:`point_verdict` they share, or "mixed"."""
    at = float(family.x.max())
    labels = distinct(point_verdict(table, family.run, i) for i in family.index[family.x == at])
    return (labels[0] if len(labels) == 1 else "mixed"), at


def point_verdict(table: Table, run: str, i: int) -> str:
    """What ``meanfield inspect`` calls run ``run`` of the table's point ``i``: the
    ``RecordedRun.verdict()`` of the point's file where the sweep directory holds it, else
    ``diagnostics.verdict`` (the same rule) on the run's final measures in the table (the
    relative weight change and the kernel distance; the loss series a catapult is read from,
    and the solver, are in the file only: a run of the table alone is judged as a particle run)."""
    from ..storage import open_trajectory

    directory = table.meta.get("directory")
    if directory is not None and "file" in table.columns:
        path = Path(directory) / str(table["file"][i])
        if path.is_file():
            try:
                with open_trajectory(path) as trajectory:
                    if run in trajectory.runs:
                        return trajectory[run].verdict()[0]
            except (UsageError, OSError):
                pass  # an unreadable file: the table's numbers
    prefix = f"{run}."
    final = {column[len(prefix):]: float(table[column][i]) for column in table.measure_columns()
             if column.startswith(prefix) and not math.isnan(float(table[column][i]))}
    return verdict("particles", regime_numbers(final))[0]


def fit_family(family: Family, confidence: float) -> tuple[PowerLawFit, list[str]]:
    """(the family's PowerLawFit, []), or (a NaN fit, [why]) where it cannot be fitted."""
    try:
        return power_law(family.x, family.y, confidence), []
    except ValueError as exc:
        return PowerLawFit.missing(len(family.x), confidence), [f"power law: {exc}"]


def _regime(fit: PowerLawFit, measure: str, tol: float) -> str:
    """The phase ``classify`` gives the fit, for a displacement measure; "" for any other measure."""
    return classify(fit, tol) if measure in REGIME_MEASURES else ""


def group_families(table: Table, measure: str, against: str, runs) -> list[Family]:
    """The families of the table: for each group of the other grid keys (seeds apart, in the
    order the groups first appear) and each run, the complete points with a value of
    ``<run>.<measure>``; a family without any is left out. UsageError for an unknown
    measure, grid key or run."""
    runs = _runs_with(table, measure, against, runs)
    keys = [k for k in axes(table) if k not in (against, REPLICATE)]
    complete = np.flatnonzero(is_complete(table))
    groups: dict[tuple, list[int]] = {}
    for i in complete:
        groups.setdefault(tuple(python_scalar(table[k][i]) for k in keys), []).append(int(i))
    x = np.asarray(table[against], np.float64)
    families = []
    for coordinates, members in groups.items():
        for run in runs:
            y = np.asarray(table[f"{run}.{measure}"], np.float64)
            index = np.asarray([i for i in members if not np.isnan(y[i])], dtype=np.int64)
            if len(index):
                families.append(Family(dict(zip(keys, coordinates)), run, index, x[index], y[index],
                                       _predicted(table, run, index)))
    return families


def _runs_with(table: Table, measure: str, against: str, runs) -> list[str]:
    """The runs to analyse; UsageError naming what exists when measure, against or runs do not."""
    found = measures(table)
    if measure not in found:
        why = f" ({NO_TEST_SET})" if measure in TEST_MEASURES and "loss_train" in found else ""
        raise UsageError(f"no measure {measure!r} in this sweep{why}; measures: {', '.join(sorted(found)) or 'none'}")
    grid = axes(table)
    if against not in grid:
        raise UsageError(f"{against!r} is not a grid key of this sweep; grid keys: {', '.join(grid) or 'none'}")
    if table[against].dtype.kind not in "fi":
        raise UsageError(f"grid key {against!r} holds labels, not numbers: nothing to fit a power law against")
    if runs is None:
        return found[measure]
    runs = [runs] if isinstance(runs, str) else list(runs)
    unknown = [r for r in runs if r not in found[measure]]
    if unknown:
        raise UsageError(f"no run {', '.join(map(repr, unknown))} with {measure}; runs: {', '.join(found[measure])}")
    return runs


def _predicted(table: Table, run: str, index) -> str:
    """The run's predicted regime at the rows ``index``: the one label, "mixed" if they differ, "" if none."""
    column = table.columns.get(f"{run}.predicted_regime")
    if column is None:
        return ""
    labels = distinct(column[index])
    return str(labels[0]) if len(labels) == 1 else "mixed"


def is_complete(table: Table) -> np.ndarray:
    """A boolean per row: the point is complete (every row, for a table without ``status``)."""
    status = table.columns.get("status")
    return np.ones(len(table), bool) if status is None else np.asarray(status).astype(str) == "complete"


def distinct(values) -> list:
    """The distinct values, in the order they first appear, as Python scalars."""
    return list(dict.fromkeys(python_scalar(v) for v in values))


def as_table(table) -> Table:
    """The Table itself, or the table of a sweep directory (or of its results.h5), which
    remembers the directory (``meta["directory"]``: where its point files are)."""
    if isinstance(table, Table):
        return table
    found = read_table(table)
    path = Path(table)
    found.meta.setdefault("directory", path if path.is_dir() else path.parent)
    return found


def rows_within(table: Table, against: str, lo=None, hi=None) -> Table:
    """A Table of the rows with ``against`` in [lo, hi] (None: no bound; the table itself if
    both are None). UsageError for a key that is not numeric, or a range with no point."""
    if lo is None and hi is None:
        return table
    if against not in table.columns or table[against].dtype.kind not in "fi":
        raise UsageError(f"a fit range needs a numeric grid key; {against!r} is not one")
    x = np.asarray(table[against], np.float64)
    keep = (x >= (-np.inf if lo is None else lo)) & (x <= (np.inf if hi is None else hi))
    if not keep.any():
        raise UsageError(f"no point has {against} in [{lo}, {hi}]; its values: {', '.join(map(str, distinct(x)))}")
    return Table({k: v[keep] for k, v in table.columns.items()}, table.grid_keys, table.name, table.sweep_yaml,
                 dict(table.meta))


@dataclass(frozen=True)
class ThresholdRow:
    """One family's crossing x* of the level (NaN with a note where it is outside the grid)."""

    group: dict
    run: str
    crossing: float
    note: str = ""


def thresholds(table, measure: str, against: str, level: float, runs=None) -> list[ThresholdRow]:
    """For every group and run, a ThresholdRow with the ``against`` value x* at which
    ``measure`` falls below ``level`` (``crossing``): e.g. the sample size n* a learner needs
    to reach a test loss. NaN with a note where x* lies outside the grid."""
    rows = []
    for family in group_families(as_table(table), measure, against, runs):
        x = crossing(family.x, family.y, level)
        first = np.exp(np.log(family.y[family.x == family.x.min()]).mean())
        note = "" if not math.isnan(x) else (
            f"already below {level:g} at the smallest {against}" if first < level else f"never below {level:g}")
        rows.append(ThresholdRow(family.group, family.run, x, note))
    return rows


def threshold_scaling(rows: list[ThresholdRow], by: str,
                      confidence: float = 0.95) -> list[tuple[dict, str, PowerLawFit]]:
    """The power law x* = c by^k of the crossings against the group key ``by`` (e.g. the
    sample complexity n* ~ d^k), fitted by ``power_law`` (log x* on log by, Student-t
    interval on k), per run and per group of the other keys: a list of (the other keys'
    coordinates, run, PowerLawFit), a NaN fit where it cannot be made. UsageError if
    ``by`` is not a group key."""
    families: dict[tuple, list[ThresholdRow]] = {}
    for row in rows:
        if by not in row.group:
            raise UsageError(f"--by {by}: not a grid key of this sweep besides the x axis; "
                             f"keys: {', '.join(row.group) or 'none'}")
        rest = tuple((k, v) for k, v in row.group.items() if k != by)
        families.setdefault((rest, row.run), []).append(row)
    out = []
    for (rest, run), members in families.items():
        try:
            fit = power_law([m.group[by] for m in members], [m.crossing for m in members], confidence)
        except ValueError:
            fit = PowerLawFit.missing(len(members), confidence)
        out.append((dict(rest), run, fit))
    return out


def family_label(run: str, group: dict) -> str:
    """A family in words: 'ntk runs.std.parameterization=strong'."""
    return " ".join([run, *(f"{k}={v}" for k, v in group.items())])
