"""``meanfield analyze``: the scaling of a sweep as text, and the files written beside it
(``analysis.csv``, one row per family; ``regimes.csv``, one row per point)."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..model.diagnostics import RICH_THRESHOLD
from ..sweeps.table import Table, csv_cell, python_scalar, write_atomically
from .convergence import format_unconverged, unconverged
from .drawing import figure, phase_figure
from .families import (
    REGIME_MEASURES,
    ScalingRow,
    ThresholdRow,
    as_table,
    axes,
    family_label,
    regimes,
    rows_within,
    scaling,
    threshold_scaling,
    thresholds,
)

ANALYSIS_CSV, REGIMES_CSV = "analysis.csv", "regimes.csv"


def report(directory, measure: str = "displacement_w", against: str = "model.width", runs=None,
           confidence: float = 0.95, tol: float = 0.1) -> str:
    """The scaling of a sweep directory as a plain-text table (``format_report`` of ``scaling``)."""
    return format_report(scaling(directory, measure, against, runs, confidence, tol), measure, against,
                         confidence, tol)


def format_report(rows: list[ScalingRow], measure: str, against: str, confidence: float = 0.95,
                  tol: float = 0.1) -> str:
    """The rows as text: one line per family (group coordinates, run, n, exponent [lo, hi],
    m -> inf limit [lo, hi], measured and predicted regime), the law above, the rule and
    any notes below."""
    keys = list(dict.fromkeys(k for row in rows for k in row.group))
    header = [*keys, "run", "n", f"exponent [{confidence:.0%}]", f"limit {against}->inf", "measured", "predicted"]
    lines = [[*(str(row.group.get(k, "")) for k in keys), row.run, str(row.n),
              _with_interval(row.fit.exponent, row.fit.exponent_ci, "+.3f"),
              _with_interval(row.extrapolation.limit, row.extrapolation.limit_ci, ".3g")
              + (" flat" if row.extrapolation.flat else ""),
              _regime_text(row, against), row.predicted or "-"] for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines)]
    aligned = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in [header, *lines]]
    text = [f"{measure} ~ c {against}^exponent (log-log least squares, seeds as replicates); "
            f"limit: {measure} = a + b {against}^-p",
            *aligned]
    if not rows:
        text.append(f"(no complete point of this sweep has a value of {measure})")
    if any(row.extrapolation.flat for row in rows):
        text.append(f"flat: no correction b {against}^-p resolved (F-test): the limit is the mean over the points")
    if any(row.regime for row in rows):
        text.append(f"regime (Luo et al. 2021): linear = lazy if exponent < -{tol:g}, critical if |exponent| <= "
                    f"{tol:g}, condensed if > {tol:g}; undetermined if the interval crosses the band; a critical "
                    f"family is rich or lazy by the size of its movement: what meanfield inspect measures of its "
                    f"points at the largest {against} (relative weight change or kernel distance above "
                    f"{RICH_THRESHOLD:g}: rich)")
    text += [f"note: {family_label(row.run, row.group)}: {row.note}" for row in rows if row.note]
    return "\n".join(text)


def write_analysis(directory, rows: list[ScalingRow], measure: str, against: str) -> Path:
    """Write the rows as ``analysis.csv`` in the sweep directory (replaced atomically); returns its path."""
    return _write_records(_directory(directory) / ANALYSIS_CSV, [_record(row, measure, against) for row in rows])


def write_regimes(directory, table: Table, measured: dict[str, np.ndarray]) -> Path:
    """Write ``regimes.csv`` in the sweep directory: each point's coordinates and the measured
    regime of each run (from ``regimes``: the regime of the width family the point belongs
    to); returns its path."""
    keys = ["point", *axes(table)]
    records = [{**{k: python_scalar(table[k][i]) for k in keys if k in table.columns},
                **{name: column[i] for name, column in measured.items()}} for i in range(len(table))]
    return _write_records(_directory(directory) / REGIMES_CSV, records)


def _write_records(path: Path, records: list[dict]) -> Path:
    """Write the records as CSV at ``path`` (replaced atomically), one column per key in the
    order keys first appear; returns ``path``."""
    names = list(dict.fromkeys(k for record in records for k in record))

    def write(partial):
        with open(partial, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(names)
            writer.writerows([csv_cell(record.get(k, "")) for k in names] for record in records)

    write_atomically(path, write)
    return path


@dataclass
class Analysis:
    """What ``meanfield analyze`` finds in a sweep: ``rows``, one fit per family (a
    ``ScalingRow``: the run, its group of grid values, the power law with its interval, the
    m -> infinity limit, the measured and predicted regime); ``crossings``, where the measure
    falls below a threshold (``ThresholdRow`` rows, when one was asked for); ``report``, all of
    it as text; ``files``, what was written. ``str()`` is what the command prints."""

    rows: list[ScalingRow]
    crossings: list[ThresholdRow]
    report: str
    files: list[Path] = field(default_factory=list)
    unconverged: dict[str, list[str]] = field(default_factory=dict)
    """point -> the runs that ran to t_end above stop_loss (``convergence.unconverged``)."""

    def __str__(self) -> str:
        return "\n".join([self.report, *(f"wrote {path}" for path in self.files)])


def analyze(directory, measure: str = "displacement_w", against: str = "model.width", runs=None,
            figure_path=None, confidence: float = 0.95, tol: float = 0.1, within=(None, None),
            threshold: float | None = None, by: str | None = None, phase_path=None, phases_path=None) -> Analysis:
    """``meanfield analyze``: the scaling of a sweep directory (an :class:`Analysis`), written
    beside it as ``analysis.csv`` (one row per family) and, for a displacement measure,
    ``regimes.csv`` (one row per point); drawn into ``figure_path`` and, with ``phase_path``,
    Luo et al.'s phase diagram, if given. ``within = (lo, hi)`` keeps the points with
    ``against`` in [lo, hi] (either end None: open). With ``threshold``, also where the
    measure crosses that level along ``against`` and, with ``by``, how that crossing scales
    with ``by`` (``threshold_scaling``). A sweep with a dt_factor axis also gets the phase of
    every point (lazy, catapult, diverged: ``catapult.phase_rows``), written as ``phases.csv``,
    and their edges along c per family in the report (``phases``); ``phases_path`` draws
    them (``catapult.phases_figure``)."""
    if by is not None and threshold is None:
        raise UsageError("--by goes with --threshold LEVEL")
    table = rows_within(as_table(directory), against, *within)
    rows = scaling(table, measure, against, runs, confidence, tol)
    written = [write_analysis(directory, rows, measure, against)]
    if measure in REGIME_MEASURES:
        written.append(write_regimes(directory, table, regimes(table, measure, against, runs, confidence, tol)))
    if figure_path is not None:
        written.append(figure(table, measure, against, figure_path, runs, confidence))
    if phase_path is not None:
        written.append(phase_figure(directory, phase_path))
    text = [format_report(rows, measure, against, confidence, tol)]
    not_converged = unconverged(table)
    if not_converged:
        text.append(format_unconverged(not_converged, len(table)))
    phases = _phases(directory, runs, written, phases_path)
    if phases:
        text.append(phases)
    crossings = []
    if threshold is not None:
        crossings = thresholds(table, measure, against, threshold, runs)
        text.append(format_threshold(table, measure, against, threshold, by, runs, confidence))
    return Analysis(rows, crossings, "\n".join(text), written, not_converged)


def _phases(directory, runs, written: list, phases_path) -> str:
    """The catapult phases of a sweep with a dt_factor axis (their edges as text; phases.csv and
    the figure appended to ``written``); '' for any other sweep (``phases_path`` then an error)."""
    from . import catapult

    key = catapult.factor_key(directory)
    if key is None:
        if phases_path is not None:
            raise UsageError("--phases-figure needs a sweep with a dt_factor axis (the step c * 2 / lambda_0)")
        return ""
    rows = catapult.phase_rows(directory, runs)
    written.append(catapult.write_phases(directory, rows))
    if phases_path is not None:
        written.append(catapult.phases_figure(rows, phases_path, key))
    return catapult.format_phases(catapult.phase_edges(rows), key)


def format_threshold(table, measure: str, against: str, level: float, by: str | None = None, runs=None,
                     confidence: float = 0.95) -> str:
    """The crossings of ``level`` per family (``thresholds``) and, with ``by``, their power
    law in ``by`` (``threshold_scaling``), as text."""
    rows = thresholds(table, measure, against, level, runs)
    text = [f"{against}* where {measure} falls below {level:g} (log-log interpolation between grid points):"]
    text += [f"  {family_label(row.run, row.group)}: {row.crossing:.4g}" + (f"  ({row.note})" if row.note else "")
             for row in rows]
    if by is not None:
        text.append(f"{against}* ~ c {by}^k ({confidence:.0%} interval):")
        text += [f"  {family_label(run, rest)}: k = {_with_interval(fit.exponent, fit.exponent_ci, '+.2f')} "
                 f"(n = {fit.n})" for rest, run, fit in threshold_scaling(rows, by, confidence)]
    return "\n".join(text)


def _record(row: ScalingRow, measure: str, against: str) -> dict:
    """The row as one record of analysis.csv: its coordinates, then its fits' numbers by column name."""
    fit, ext = row.fit, row.extrapolation
    return {**row.group, "run": row.run, "measure": measure, "against": against, "n": row.n,
            "exponent": fit.exponent, "exponent_lo": fit.exponent_ci[0], "exponent_hi": fit.exponent_ci[1],
            "prefactor": fit.prefactor, "r2": fit.r2, "residual_std": fit.residual_std,
            "limit": ext.limit, "limit_lo": ext.limit_ci[0], "limit_hi": ext.limit_ci[1],
            "limit_flat": ext.flat, "b": ext.b, "p": ext.p, "p_lo": ext.p_ci[0], "p_hi": ext.p_ci[1],
            "regime": row.regime, "regime_words": row.words, "verdict": row.verdict, "verdict_at": row.verdict_at,
            "predicted_regime": row.predicted, "note": row.note}


def _with_interval(value: float, interval: tuple[float, float], spec: str) -> str:
    """'value [lo, hi]' in the format ``spec``; '-' for NaN."""
    if math.isnan(value):
        return "-"
    return f"{value:{spec}} [{interval[0]:{spec}}, {interval[1]:{spec}}]"


def _regime_text(row: ScalingRow, against: str = "model.width") -> str:
    """The measured regime with its rich / lazy word where that differs: 'linear (lazy)',
    'critical (lazy)'; with the verdict at the largest x where it and the exponent's word
    disagree on laziness: 'linear (lazy; rich at model.width = 64)', 'condensed (lazy at
    model.width = 64)' (still small there); '-' if none."""
    if not row.regime:
        return "-"
    words = [] if row.words in (row.regime, "") else [row.words]
    if (row.verdict not in ("", "unknown") and row.words not in ("", "undetermined")
            and (row.verdict == "lazy") != (row.words == "lazy")):
        words.append(f"{row.verdict} at {against} = {row.verdict_at:g}")
    return row.regime + (f" ({'; '.join(words)})" if words else "")


def _directory(path) -> Path:
    """The sweep directory of a directory or of its results file."""
    path = Path(path)
    return path if path.is_dir() else path.parent
