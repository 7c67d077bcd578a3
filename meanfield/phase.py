"""The phase diagram of Luo, Xu, Ma & Zhang (2021) from a sweep: each width family placed at
its (gamma, gamma'), coloured by the phase its measured width exponent names, over the
published boundary.

Luo et al. (JMLR 22(71), 2021) write f(x) = (1/alpha) sum_k a_k sigma(w_k . x) with
a_k ~ N(0, beta1^2), w_k ~ N(0, beta2^2 I), and

    gamma  = lim -log(beta1 beta2 / alpha) / log m,     gamma' = lim -log(beta1 / beta2) / log m.

In meanfield's ``custom`` preset (s = m^-A, a_std m^-B, w_std fixed) that is gamma = A + B,
gamma' = B (``parameterization.predict_regime``; every point file stores both, and the
results table has them as ``<run>.predicted_gamma`` and ``<run>.predicted_gamma_prime``).
The published phases, from the relative change of the input weights as m -> infinity:

    linear     gamma < 1 or gamma' > gamma - 1       RD -> 0
    condensed  gamma > 1 and gamma' < gamma - 1      RD -> infinity
    critical   on the boundary: gamma = 1, gamma' <= 0, and gamma' = gamma - 1, gamma >= 1.

The measured phase of a family is ``analysis.classify`` of its fitted exponent of
``displacement_w`` against the width (linear < -tol, critical |p| <= tol, condensed > tol,
undetermined when the interval crosses the band).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import analysis
from .errors import UsageError
from .figures import figure_path, save_figure
from .parameterization import predict_regime
from .table import Table, python_scalar, read_table

PHASE_COLORS = {"linear": "tab:blue", "critical": "tab:green", "condensed": "tab:red", "undetermined": "0.6"}


@dataclass(frozen=True)
class PhasePoint:
    """One width family of a sweep at its (gamma, gamma'): measured and published phase."""

    run: str
    group: dict
    gamma: float
    gamma_prime: float
    exponent: float
    exponent_ci: tuple[float, float]
    measured: str  # linear | critical | condensed | undetermined
    predicted: str  # Luo et al.'s phase at (gamma, gamma')
    n: int

    @property
    def agrees(self) -> bool:
        return self.measured == self.predicted


def luo_phase(gamma: float, gamma_prime: float) -> str:
    """Luo et al.'s phase at (gamma, gamma') (the rule of ``parameterization.predict_regime``)."""
    return predict_regime(gamma - gamma_prime, gamma_prime, 0.0, 0.0).luo_phase


def phase_points(table_or_dir, gamma_key: str = "predicted_gamma", gamma_prime_key: str = "predicted_gamma_prime",
                 measure: str = "displacement_w", against: str = "model.width", runs=None,
                 confidence: float = 0.95, tol: float = 0.1) -> list[PhasePoint]:
    """Every width family (group of the other grid keys x run) of the sweep with its gamma,
    gamma', fitted exponent and phases.

    ``gamma_key`` and ``gamma_prime_key`` name, per run, the column ``<run>.<key>`` (the
    default: the predicted numbers every point stores), or else a column of the table
    itself (a numeric grid key). A family whose points disagree on gamma is an error.
    """
    table = table_or_dir if isinstance(table_or_dir, Table) else read_table(table_or_dir)
    rows = analysis.scaling(table, measure, against=against, runs=runs, confidence=confidence, tol=tol)
    complete = np.asarray(table["status"]).astype(str) == "complete" if "status" in table.columns \
        else np.ones(len(table), bool)
    points = []
    for row in rows:
        mask = complete & ~np.isnan(np.asarray(table[f"{row.run}.{measure}"], np.float64))
        for key, value in row.group.items():
            mask &= np.asarray([python_scalar(v) == value for v in table[key]], dtype=bool)
        gamma = _value(table, row.run, gamma_key, mask)
        gamma_prime = _value(table, row.run, gamma_prime_key, mask)
        measured = analysis.classify(row.fit, tol)
        points.append(PhasePoint(row.run, dict(row.group), gamma, gamma_prime, row.fit.exponent,
                                 tuple(row.fit.exponent_ci), measured, luo_phase(gamma, gamma_prime), row.n))
    return points


def _value(table: Table, run: str, key: str, mask: np.ndarray) -> float:
    column = table.columns.get(f"{run}.{key}")
    if column is None:
        column = table.columns.get(key)
    if column is None:
        raise UsageError(f"no column {run}.{key} or {key} in this sweep: cannot place run {run!r} "
                         f"on the (gamma, gamma') plane")
    values = np.unique(np.asarray(column[mask], np.float64))
    if len(values) != 1:
        raise UsageError(f"run {run!r}: the points of one width family have {key} = "
                         f"{', '.join(f'{v:g}' for v in values) or 'nothing'}; expected one value")
    return float(values[0])


def phase_figure(table_or_dir, path, gamma_key: str = "predicted_gamma",
                 gamma_prime_key: str = "predicted_gamma_prime", measure: str = "displacement_w",
                 against: str = "model.width", runs=None, confidence: float = 0.95, tol: float = 0.1) -> Path:
    """Draw the (gamma, gamma') plane: the published linear and condensed regions (shaded)
    and their critical boundary (black lines), each width family a disc coloured by its
    measured phase and labelled with its exponent; a family whose measured phase is not the
    published one is circled by a black X. The format follows the suffix (.png, .pdf, .svg)."""
    from matplotlib.figure import Figure

    path = figure_path(path)
    points = phase_points(table_or_dir, gamma_key, gamma_prime_key, measure, against, runs, confidence, tol)
    if not points:
        raise UsageError(f"no width family with {measure} in this sweep: nothing to draw")
    g = np.array([p.gamma for p in points])
    gp = np.array([p.gamma_prime for p in points])
    pad = 0.5
    x0, x1 = min(g.min(), 1.0) - pad, max(g.max(), 1.0) + pad
    y0, y1 = min(gp.min(), 0.0) - pad, max(gp.max(), 0.0) + pad

    fig = Figure(figsize=(7.6, 5.2), layout="constrained")
    ax = fig.subplots()
    # the published regions: condensed = {gamma > 1, gamma' < gamma - 1}, linear = the rest
    ax.fill_between([x0, x1], y0, y1, color=PHASE_COLORS["linear"], alpha=0.10, lw=0)
    xs = np.linspace(1.0, x1, 50)
    ax.fill_between(xs, y0, np.minimum(xs - 1.0, y1), color=PHASE_COLORS["condensed"], alpha=0.13, lw=0)
    ax.plot([1.0, 1.0], [y0, 0.0], "k-", lw=1.5)
    ax.plot([1.0, x1], [0.0, x1 - 1.0], "k-", lw=1.5, label="critical (Luo et al. 2021)")
    ax.text(x0 + 0.05, y1 - 0.12, "linear", color=PHASE_COLORS["linear"], va="top", fontsize="large")
    ax.text(x1 - 0.05, y0 + 0.08, "condensed", color=PHASE_COLORS["condensed"], ha="right", fontsize="large")

    seen, placed = set(), {}
    shared = {}
    for p in points:
        shared[(p.gamma, p.gamma_prime)] = shared.get((p.gamma, p.gamma_prime), 0) + 1
    for p in points:
        label = None if p.measured in seen else f"measured {p.measured}"
        seen.add(p.measured)
        ax.scatter([p.gamma], [p.gamma_prime], s=160, color=PHASE_COLORS[p.measured], edgecolor="k",
                   zorder=3, label=label)
        if not p.agrees:
            ax.scatter([p.gamma], [p.gamma_prime], s=260, marker="x", color="k", lw=2.0, zorder=4,
                       label=None if "disagree" in seen else "measured != published")
            seen.add("disagree")
        text = "nan" if math.isnan(p.exponent) else f"{p.exponent:+.2f}"
        k = placed[(p.gamma, p.gamma_prime)] = placed.get((p.gamma, p.gamma_prime), -1) + 1
        if shared[(p.gamma, p.gamma_prime)] > 1:  # several families at one point: name each
            text += f" {p.run}" + "".join(f" {key}={value}" for key, value in p.group.items())
        ax.annotate(text, (p.gamma, p.gamma_prime), xytext=(9, 7 - 11 * k), textcoords="offset points",
                    fontsize="small")
    ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel="gamma", ylabel="gamma'", aspect="equal",
           title=f"phase diagram: exponent of {measure} vs {against}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    return save_figure(fig, path)
