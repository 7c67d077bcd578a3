"""The phases of a learning-rate sweep (Lewkowycz, Bahri, Dyer, Sohl-Dickstein & Gur-Ari
2020): lazy, catapult or diverged, per point, and their edges along the step factor c of
``dt = c * 2 / lambda_0`` (docs/design.md §7.5).

The rule for one run, from its training loss L_t and the top eigenvalue of its tangent
kernel lambda_t (``ntk_eigenvalue_max``) at the snapshots (t = 0 first), and its step dt:

    diverged     the run failed (its state became non-finite), or its last loss is not
                 below its first: L_T >= L_0
    lazy         the loss never rises above its start, max_t L_t <= L_0, and the kernel stays
                 within ``lazy_tol`` (5%) of its start: max_t |lambda_t / lambda_0 - 1| <= lazy_tol
    catapult     the loss rises by more than ``rise`` (10) times its start, max_t L_t > rise L_0,
                 then converges (L_T < L_0), and the kernel ends flatter than the step allows
                 for stability: lambda_T dt < 2 (with dt = c 2 / lambda_0: lambda_T / lambda_0 < 1 / c)
    undetermined anything else (a small rise, or a kernel that moved without a catapult)

The edges of a family (one run, one group of the other grid keys, seeds pooled) along c:
the lower edge lies between the largest c up to which every point is lazy and the next c of
the grid; the upper edge between the smallest c from which every point diverges and the c
of the grid before it. Each is reported as that interval and its midpoint.

A single run's verdict (``diagnostics.verdict``, docs/design.md §1.8) reads the same ratios
(``diagnostics.regime_numbers``) with a rise of 1.1x; the phase here asks for the 10x rise of
a wide network's catapult (its loss peak grows like m) and for the step's own bound lambda_T dt < 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import UsageError
from ..model.diagnostics import regime_numbers
from ..sweeps.table import python_scalar, write_atomically
from .families import REPLICATE, as_table

PHASES = ("lazy", "catapult", "diverged", "undetermined")
PHASES_CSV = "phases.csv"
LAZY_TOL, RISE = 0.05, 10.0


def catapult_phase(loss, kernel, dt: float, failed: bool = False, lazy_tol: float = LAZY_TOL,
                   rise: float = RISE) -> str:
    """The phase of one run (module docstring): ``loss`` its training loss and ``kernel`` its
    ntk_eigenvalue_max at the snapshots, the first at t = 0; ``dt`` its step; ``failed``
    whether the run ended diverged."""
    loss, kernel = np.asarray(loss, np.float64), np.asarray(kernel, np.float64)
    if len(loss) == 0 or len(kernel) == 0:
        raise ValueError("catapult_phase needs the loss and the kernel at t = 0 at least")
    with np.errstate(all="ignore"):
        ratios = regime_numbers({}, loss, kernel)  # the ratios a run's verdict reads (docs/design.md §1.8)
        if failed or not np.all(np.isfinite(loss)) or not ratios["loss_end_ratio"] < 1:
            return "diverged"
        if ratios["loss_peak_ratio"] <= 1 and np.max(np.abs(kernel / kernel[0] - 1)) <= lazy_tol:
            return "lazy"
        if ratios["loss_peak_ratio"] > rise and ratios["lambda_ratio"] * kernel[0] * dt < 2:
            return "catapult"
    return "undetermined"


@dataclass(frozen=True)
class PhaseRow:
    """One run of one point: its coordinates, step factor c, the numbers behind its phase."""

    point: str
    run: str
    group: dict  # the other grid keys (seed excluded)
    seed: object
    c: float
    dt: float
    peak: float  # max_t L_t / L_0
    kernel_ratio: float  # lambda_T / lambda_0
    kernel_step: float  # lambda_T dt
    phase: str


@dataclass(frozen=True)
class PhaseEdges:
    """The edges of one family along c: ``lower`` (lazy -> not lazy) and ``upper`` (-> every
    point diverged), each an interval (c_below, c_above) of grid values or None when the grid
    does not bracket it; ``phases`` the phases at each c (c -> sorted list, seeds pooled)."""

    run: str
    group: dict
    lower: Optional[tuple[float, float]]
    upper: Optional[tuple[float, float]]
    phases: dict

    @staticmethod
    def middle(edge) -> float:
        return math.nan if edge is None else 0.5 * (edge[0] + edge[1])


def factor_key(table) -> Optional[str]:
    """The grid key of the step factor (one ending in ``dt_factor``), or None."""
    keys = [key for key in as_table(table).grid_keys if key.split(".")[-1] == "dt_factor"]
    if len(keys) > 1:
        raise UsageError(f"the sweep has {len(keys)} dt_factor axes ({', '.join(keys)}): phases need one")
    return keys[0] if keys else None


def phase_rows(directory, runs=None, lazy_tol: float = LAZY_TOL, rise: float = RISE) -> list[PhaseRow]:
    """The phase of every run of every point of a sweep directory with a dt_factor axis, read
    from the point files (``loss_train`` and ``ntk_eigenvalue_max`` at every snapshot: the
    scenario must record ``record.measures: [ntk_eigenvalue_max]``)."""
    from ..storage import open_trajectory

    directory = _directory(directory)
    table = as_table(directory)
    key = factor_key(table)
    if key is None:
        raise UsageError("phases need a sweep with a dt_factor axis (train.integrator.dt_factor or "
                         "runs.<name>.integrator.dt_factor)")
    others = [k for k in table.grid_keys if k not in (key, REPLICATE)]
    rows = []
    for i, record in enumerate(table.rows()):
        if record.get("status") not in ("complete", "failed"):
            continue
        path = directory / "points" / f"{record['point']}.h5"
        if not path.exists():
            continue
        with open_trajectory(path) as trajectory:
            for name in trajectory.runs:
                if runs and name not in runs:
                    continue
                run = trajectory[name]
                if "ntk_eigenvalue_max" not in run.measures or "loss_train" not in run.measures:
                    if runs:
                        raise UsageError(f"run {name!r} of point {record['point']} has no loss_train and "
                                         f"ntk_eigenvalue_max: record.measures: [ntk_eigenvalue_max]")
                    continue
                rows.append(_row(record, name, run, others, lazy_tol, rise))
    return rows


def _row(record: dict, name: str, run, others: list, lazy_tol: float, rise: float) -> PhaseRow:
    loss = np.asarray(run.measure("loss_train").values, np.float64)
    kernel = np.asarray(run.measure("ntk_eigenvalue_max").values, np.float64)
    integrator = run.attrs["integrator"]
    dt, c = float(integrator["dt"]), float(integrator["dt_factor"])
    phase = catapult_phase(loss, kernel, dt, run.status.startswith("failed"), lazy_tol, rise)
    with np.errstate(all="ignore"):
        return PhaseRow(record["point"], name, {k: python_scalar(record[k]) for k in others},
                        python_scalar(record.get(REPLICATE)), c, dt, float(np.max(loss) / loss[0]),
                        float(kernel[-1] / kernel[0]), float(kernel[-1] * dt), phase)


def phase_edges(rows: list[PhaseRow]) -> list[PhaseEdges]:
    """The edges of every family (run x group of the other grid keys) along c (module docstring)."""
    families: dict[tuple, list[PhaseRow]] = {}
    for row in rows:
        families.setdefault((row.run, tuple(row.group.items())), []).append(row)
    edges = []
    for (run, group), members in families.items():
        cs = sorted({row.c for row in members})
        at = {c: sorted(row.phase for row in members if row.c == c) for c in cs}
        lazy = [all(p == "lazy" for p in at[c]) for c in cs]
        gone = [all(p == "diverged" for p in at[c]) for c in cs]
        k = next((j for j, ok in enumerate(lazy) if not ok), len(cs))  # first c not all lazy
        lower = (cs[k - 1], cs[k]) if 0 < k < len(cs) else None
        j = len(cs)
        while j > 0 and gone[j - 1]:
            j -= 1  # cs[j:] all diverged
        upper = (cs[j - 1], cs[j]) if 0 < j < len(cs) else None
        edges.append(PhaseEdges(run, dict(group), lower, upper, at))
    return edges


def format_phases(edges: list[PhaseEdges], key: str) -> str:
    """The edges per family as text, the rule below."""
    groups = list(dict.fromkeys(k for edge in edges for k in edge.group))
    header = [*groups, "run", "lazy -> catapult (c)", "-> diverged (c)", "phases along c"]
    lines = []
    for edge in edges:
        along = "  ".join(f"{c:g}:{_summary(p)}" for c, p in edge.phases.items())
        lines.append([*(str(edge.group.get(g, "")) for g in groups), edge.run, _edge_text(edge.lower),
                      _edge_text(edge.upper), along])
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines)]
    aligned = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in [header, *lines]]
    return "\n".join([
        f"phases along {key} = c, dt = c * 2 / lambda_0 (Lewkowycz et al. 2020; docs/design.md §7.5):", *aligned,
        f"rule: lazy (L never above L_0, lambda within {LAZY_TOL:.0%} of lambda_0) | catapult (max L > {RISE:g} L_0, "
        f"L_T < L_0, lambda_T dt < 2) | diverged (failed or L_T >= L_0); "
        f"L lazy, C catapult, D diverged, U undetermined; edges: midpoint [grid values around it]"])


def write_phases(directory, rows: list[PhaseRow]) -> Path:
    """``phases.csv`` in the sweep directory: one line per run of each point; returns its path."""
    import csv

    path = _directory(directory) / PHASES_CSV
    groups = list(dict.fromkeys(k for row in rows for k in row.group))
    names = ["point", "run", *groups, "seed", "c", "dt", "peak", "kernel_ratio", "kernel_step", "phase"]

    def write(partial):
        with open(partial, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(names)
            for row in rows:
                writer.writerow([row.point, row.run, *(row.group.get(g, "") for g in groups), row.seed,
                                 repr(row.c), repr(row.dt), repr(row.peak), repr(row.kernel_ratio),
                                 repr(row.kernel_step), row.phase])

    write_atomically(path, write)
    return path


PHASE_STYLE = {"lazy": ("tab:blue", "o"), "catapult": ("tab:orange", "s"), "diverged": ("tab:red", "x"),
               "undetermined": ("0.5", "^")}
"""The colour and marker of each phase in the figure."""


def phases_figure(rows: list[PhaseRow], path, key: str = "dt_factor") -> Path:
    """Per run, two panels against c (log axis): lambda_T / lambda_0 of every converged point
    (coloured by phase, offset by width) with the catapult's bound 1 / c (lambda_T dt = 2), and
    the phase of every point, one row per width (seeds side by side). Returns the path written."""
    from matplotlib.figure import Figure

    from ..pictures.figures import check_figure_path, save_figure

    path = check_figure_path(path)
    if not rows:
        raise UsageError("no point of this sweep has a phase: nothing to draw")
    runs = list(dict.fromkeys(row.run for row in rows))
    fig = Figure(figsize=(11, 3.6 * len(runs)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(runs), 2, squeeze=False))
    for (left, right), run in zip(axes, runs):
        mine = [row for row in rows if row.run == run]
        groups = list(dict.fromkeys(_group_text(row.group) for row in mine))
        cs = np.array(sorted({row.c for row in mine}))
        for row in mine:
            color, marker = PHASE_STYLE[row.phase]
            g = groups.index(_group_text(row.group))
            if row.phase != "diverged" and np.isfinite(row.kernel_ratio):
                left.scatter(row.c * (1 + 0.015 * (g - (len(groups) - 1) / 2)), row.kernel_ratio, color=color,
                             marker=marker, s=22)
            seeds = sorted({r.seed for r in mine if r.c == row.c and r.group == row.group}, key=str)
            offset = (seeds.index(row.seed) - (len(seeds) - 1) / 2) * 0.18 / max(len(seeds), 1)
            right.scatter(row.c, g + offset, color=color, marker=marker, s=26)
        dense = np.geomspace(cs.min(), cs.max(), 100)
        left.plot(dense, 1 / dense, "k--", lw=1, label="1 / c (lambda_T dt = 2)")
        left.axhline(1, color="0.7", lw=0.8)
        left.set(xscale="log", yscale="log", xlabel=f"c ({key})", ylabel="lambda_T / lambda_0",
                 title=f"{run}: the kernel at the end")
        right.set(xscale="log", xlabel=f"c ({key})", yticks=range(len(groups)), yticklabels=groups,
                  ylim=(-0.6, len(groups) - 0.4), title=f"{run}: phase per point")
        for edge in (1, 2):
            right.axvline(edge, color="0.7", lw=0.8, ls=":")
        for phase, (color, marker) in PHASE_STYLE.items():
            right.scatter([], [], color=color, marker=marker, label=phase)
        right.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
        left.legend(fontsize="small")
        ticks = [c for c in (0.25, 0.5, 1, 2, 4, 8, 16, 32) if cs.min() <= c <= cs.max()]
        for ax in (left, right):
            ax.grid(True, which="major", alpha=0.3)
            ax.set_xticks(ticks, [f"{c:g}" for c in ticks])
            ax.set_xticks([], minor=True)
    return save_figure(fig, path)


def _group_text(group: dict) -> str:
    return ", ".join(f"{k.split('.')[-1]} {v}" for k, v in group.items()) or "all"


def _summary(phases: list[str]) -> str:
    """'L' for all lazy, 'LLC' for two lazy and a catapult: one letter per seed."""
    return "".join(p[0].upper() for p in phases)


def _edge_text(edge) -> str:
    if edge is None:
        return "- (not bracketed)"
    return f"{PhaseEdges.middle(edge):.3g} [{edge[0]:g}, {edge[1]:g}]"


def _directory(path) -> Path:
    path = Path(path)
    return path if path.is_dir() else path.parent


__all__ = ["PHASES", "PHASES_CSV", "PhaseEdges", "PhaseRow", "catapult_phase", "factor_key", "format_phases",
           "phase_edges", "phase_rows", "phases_figure", "write_phases"]
