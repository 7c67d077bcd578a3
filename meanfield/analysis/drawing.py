"""The figures of a scaling analysis (matplotlib, imported when a figure is drawn)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..figures import figure_path, save_figure
from .families import Family, as_table, family_label, fit_family, group_families
from .stats import PowerLawFit


def figure(table, measure: str, against: str, path, runs=None, confidence: float = 0.95) -> Path:
    """Draw ``measure`` against ``against`` on log-log axes: per group and run, the mean over
    seeds at each value (markers, min-max bars) and the fitted power law (dashed). The
    format follows the suffix (.png, .pdf, .svg)."""
    from matplotlib.figure import Figure

    path = figure_path(path)
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
    xs = np.unique(family.x)
    groups = [family.y[family.x == x] for x in xs]
    mean = np.array([g.mean() for g in groups])
    bars = [mean - [g.min() for g in groups], [g.max() for g in groups] - mean]
    label = family_label(family.run, family.group)
    if not math.isnan(fit.exponent):
        label += f" (exponent {fit.exponent:+.2f})"
    ax.errorbar(xs, mean, yerr=bars, fmt="o", color=color, capsize=3, label=label)
    if not math.isnan(fit.exponent):
        dense = np.geomspace(xs.min(), xs.max(), 50)
        ax.plot(dense, fit(dense), "--", color=color, lw=1.2)
