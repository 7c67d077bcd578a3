"""Figures: the files meanfield draws into (formats by suffix, checked before any drawing;
saving, each failure a UsageError naming the file), and ``meanfield plot``, the measures of
every run of a trajectory in one figure.

The plot has a panel for each measure some run records: how well each run fits (train and
test loss, or the population risk with infinite data), the relative displacement of the
input weights (``displacement_w``), the kernel distance and the gap to the ``ntk`` run
(``gap_ntk``), all against model time on log-log axes (points at t = 0, and zeros, have no
place on a log axis and are left out). The colours of the runs and the loss curves are
shared with ``meanfield animate``, which draws them beneath its panels. Files are read only
through :class:`meanfield.Trajectory`. ``meanfield analyze --figure`` and
``--phase-diagram`` save through here too.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..model import measures
from ..storage import Series, Trajectory, open_trajectory
from ..storage.layout import lacks_test_set

FORMATS = (".png", ".pdf", ".svg")
"""The suffixes of the figure files we write; matplotlib picks the format from the suffix."""

DPI = 120
"""The resolution of a raster (.png) figure."""


def check_figure_path(path) -> Path:
    """``path`` as a Path, checked to end in one of FORMATS (case-insensitive).

    UsageError naming the file and the allowed suffixes otherwise, so that a wrong name
    fails before anything is computed or drawn.
    """
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise UsageError(f"{path}: cannot write {path.suffix or 'a file without suffix'}; "
                         f"use one of {', '.join(FORMATS)}")
    return path


def save_figure(fig, path) -> Path:
    """Write the matplotlib Figure ``fig`` to ``path`` (at DPI) and return ``path`` as a Path.

    The format follows the suffix (checked by ``check_figure_path``); an OSError (no such
    directory, no permission, a full disk) becomes a UsageError naming the file.
    """
    path = check_figure_path(path)
    try:
        fig.savefig(path, dpi=DPI)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the figure ({exc})") from exc
    return path


FIT_TITLE = "loss (train solid, test dashed) or population risk"
"""The title of the loss curves; FIT_TITLE_NO_TEST where the data have no test set."""

FIT_TITLE_NO_TEST = "training loss (no test set)"

PANELS = (("fit", FIT_TITLE), *measures.PANELS)
"""(measure, title) of each panel of ``plot``, in order: the loss curves ("fit": each run's
loss_train and loss_test, or its risk), then each measure with a ``panel`` in the table of
measures (:mod:`meanfield.model.measures`)."""

FIT_STYLES = {"loss_train": "-", "loss_test": "--", "risk": "-"}
"""How each fit measure is drawn: train and risk solid, test dashed."""


def run_colors(names) -> dict[str, str]:
    """One colour per run, the same in every picture of one file (not the red and blue of the signs of a_i)."""
    palette = ["C2", "C1", "C4", "C5", "C6", "C8", "C9", "C7"]
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def fit_series(run) -> dict[str, Series]:
    """The fit measures of a run that it records: loss_train and loss_test, or risk."""
    return {measure: run.series(measure) for measure in FIT_STYLES if measure in run.measures}


def fit_title(trajectory: Trajectory) -> str:
    """The title of the loss curves of ``trajectory``: without a test set, only the training loss is drawn."""
    return FIT_TITLE_NO_TEST if lacks_test_set(trajectory.h5) else FIT_TITLE


def draw_losses(ax, trajectory: Trajectory, runs, colors, *, log_time: bool = False) -> dict:
    """Train (solid) and test (dashed) loss, or the population risk, of each run; returns
    {(run, measure): Line2D}. Later runs (in the order of ``colors``) are drawn thinner, so
    curves that coincide all show."""
    lines = {}
    for name in runs:
        if name not in trajectory:
            continue
        run = trajectory[name]
        width = max(2.4 - 0.6 * list(colors).index(name), 0.9)
        for index, (measure, series) in enumerate(fit_series(run).items()):
            label = run.label if index == 0 else None
            (lines[name, measure],) = ax.plot(*positive(series, log_time=log_time), FIT_STYLES[measure],
                                              color=colors[name], lw=width, label=label)
    ax.set_yscale("log")
    ax.set_ylabel("loss" if not any(m == "risk" for _, m in lines) else "loss / risk")
    return lines


def positive(series: Series, *, log_time: bool = False):
    """The points a log axis can show: value > 0 (and t > 0 on a log time axis), finite."""
    keep = np.isfinite(series.value) & (series.value > 0)
    if log_time:
        keep &= series.time > 0
    return series.time[keep], series.value[keep]


def figure_of_measures(trajectory: Trajectory):
    """The ``plot`` figure: one panel per measure the file has (see PANELS)."""
    from matplotlib.figure import Figure

    runs = trajectory.runs
    colors = run_colors(runs)
    recorded = {name: trajectory[name] for name in runs}

    def has(measure):
        return any(fit_series(run) if measure == "fit" else measure in run.measures for run in recorded.values())

    panels = [(measure, title) for measure, title in PANELS if has(measure)]
    if not panels:
        raise UsageError(f"{trajectory.path or trajectory.name} has no measures to plot "
                         f"(runs: {', '.join(runs) or 'none'})")
    columns = 1 if len(panels) == 1 else 2
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(5.6 * columns, 3.6 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (measure, title) in zip(axes, panels):
        if measure == "fit":
            draw_losses(ax, trajectory, runs, colors, log_time=True)
            ax.legend(fontsize="small")
        else:
            for name, run in recorded.items():
                if measure in run.measures:
                    ax.plot(*positive(run.series(measure), log_time=True), color=colors[name], lw=1.4, label=name)
            ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_title(fit_title(trajectory) if measure == "fit" else title, fontsize="medium")
        ax.set_xlabel("model time t")
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"{trajectory.name}: {len(runs)} run(s)")
    return fig


def plot(trajectory, output=None) -> Path:
    """Draw the measures of a trajectory (a :class:`Trajectory` or a file's path) into
    ``output`` (default: FILE.png, or NAME.png for an in-memory trajectory); returns it."""
    given = isinstance(trajectory, Trajectory)
    if output is None:
        output = trajectory.default_output(".png") if given else Path(trajectory).with_suffix(".png")
    output = check_figure_path(output)
    with nullcontext(trajectory) if given else open_trajectory(trajectory) as opened:
        fig = figure_of_measures(opened)
    return save_figure(fig, output)
