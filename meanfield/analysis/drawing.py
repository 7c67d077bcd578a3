"""The figures of a scaling analysis (matplotlib, imported when a figure is drawn)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..pictures.figures import check_figure_path, save_figure
from .families import Family, as_table, family_label, fit_family, group_families
from .phase import phase_points
from .stats import PowerLawFit

PHASE_COLORS = {"linear": "tab:blue", "critical": "tab:green", "condensed": "tab:red", "undetermined": "0.6"}
"""The colour of each phase (``stats.classify``) in the phase diagram."""


def figure(table, measure: str, against: str, path, runs=None, confidence: float = 0.95) -> Path:
    """Draw ``measure`` against ``against`` on log-log axes: per group and run, the mean over
    seeds at each value (markers, min-max bars) and the fitted power law (dashed). The
    format follows the suffix (.png, .pdf, .svg); returns the path written."""
    from matplotlib.figure import Figure

    path = check_figure_path(path)
    table = as_table(table)
    families = group_families(table, measure, against, runs)
    if not families:
        raise UsageError(f"no complete point of this sweep has a value of {measure}: nothing to draw")
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    for i, family in enumerate(families):
        _draw(ax, family, fit_family(family, confidence)[0], f"C{i % 10}")
    ax.set(xscale="log", yscale="log", xlabel=against, ylabel=measure, title=f"{table.name or 'sweep'}: {measure}")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def _draw(ax, family: Family, fit: PowerLawFit, color: str) -> None:
    """One family on ``ax``: the mean of its replicates at each x with min-max bars, and its law (dashed)."""
    xs = np.unique(family.x)
    replicates = [family.y[family.x == x] for x in xs]
    mean = np.array([r.mean() for r in replicates])
    bars = [mean - [r.min() for r in replicates], [r.max() for r in replicates] - mean]
    label = family_label(family.run, family.group)
    if not math.isnan(fit.exponent):
        label += f" (exponent {fit.exponent:+.2f})"
    ax.errorbar(xs, mean, yerr=bars, fmt="o", color=color, capsize=3, label=label)
    if not math.isnan(fit.exponent):
        dense = np.geomspace(xs.min(), xs.max(), 50)
        ax.plot(dense, fit(dense), "--", color=color, lw=1.2)


def phase_figure(table, path, gamma_key: str = "predicted_gamma",
                 gamma_prime_key: str = "predicted_gamma_prime", measure: str = "displacement_w",
                 against: str = "model.width", runs=None, confidence: float = 0.95, tol: float = 0.1) -> Path:
    """Draw the (gamma, gamma') plane: the published linear and condensed regions (shaded)
    and their critical boundary (black lines), each width family a disc coloured by its
    measured phase and labelled with its exponent; a family whose measured phase is not the
    published one is circled by a black X. The format follows the suffix (.png, .pdf, .svg);
    returns the path written."""
    from matplotlib.figure import Figure

    path = check_figure_path(path)
    points = phase_points(table, gamma_key, gamma_prime_key, measure, against, runs, confidence, tol)
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
