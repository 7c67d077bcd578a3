"""``meanfield plot``: the measures of every run of a trajectory file, as one figure.

Panels, each only where some run of the file records the measure: train and test loss,
relative displacement of the input weights (``displacement_w``), kernel distance and the
gap to the ``ntk`` run (``gap_ntk``), all against model time on log-log axes (points at
t = 0, and zeros, have no place on a log axis and are left out).

The pieces both pictures share live here: the order of the runs, their labels and
colours, and the loss curves (``meanfield animate`` draws them beneath its panels).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import storage
from .errors import UsageError
from .figures import check_figure_path, save_figure

PANELS = (
    ("loss", "loss (train solid, test dashed)"),
    ("displacement_w", "relative displacement |W(t) - W(0)| / |W(0)|"),
    ("kernel_distance", "kernel distance 1 - cos(K(0), K(t))"),
    ("gap_ntk", "gap to the ntk run (rms over the test set)"),
)
"""(measure, title) of each panel of ``plot``, in order; "loss" stands for loss_train and loss_test."""


class Series(NamedTuple):
    time: np.ndarray
    value: np.ndarray


# ----------------------------------------------------------------------------- the runs of a file
def run_label(h5, name: str) -> str:
    """A run's name with what it is: 'rich (mean_field)', 'ntk (kernel flow, empirical)'."""
    attrs = h5["parameters"][name].attrs
    solver = _text(attrs.get("solver", "particles"))
    if solver == "ntk":
        return f"{name} (kernel flow, {_text(attrs.get('kernel', '?'))})"
    if solver == "tangent":
        return f"{name} (tangent)"
    preset = _text(attrs.get("preset", "?"))
    alpha = attrs.get("alpha")
    return f"{name} ({preset}{f', alpha = {float(alpha):g}' if alpha is not None else ''})"


def run_colors(names) -> dict[str, str]:
    """One colour per run, the same in every picture of one file (not the red and blue of the signs of a_i)."""
    palette = ["C2", "C1", "C4", "C5", "C6", "C8", "C9", "C7"]
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def read_measure(h5, run: str, measure: str) -> Series | None:
    """One scalar measure of one run (complete frames only), or None if the run lacks it."""
    element = h5.get(f"observables/{run}/{measure}")
    if element is None or element["value"].ndim != 1:
        return None
    n = min(element["time"].shape[0], element["value"].shape[0])
    return Series(element["time"][:n], element["value"][:n])


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# ----------------------------------------------------------------------------- drawing
def draw_losses(ax, h5, runs, colors, *, log_time: bool = False) -> dict:
    """Train (solid) and test (dashed) loss of each run; returns {(run, measure): Line2D}.

    Later runs (in the order of ``colors``) are drawn thinner, so curves that coincide all show.
    """
    lines = {}
    for name in runs:
        width = max(2.4 - 0.6 * list(colors).index(name), 0.9)
        for measure, style in (("loss_train", "-"), ("loss_test", "--")):
            series = read_measure(h5, name, measure)
            if series is None:
                continue
            label = run_label(h5, name) if measure == "loss_train" else None
            (lines[name, measure],) = ax.plot(*_positive(series, log_time=log_time), style, color=colors[name], lw=width, label=label)
    ax.set_yscale("log")
    ax.set_ylabel("loss")
    return lines


def _positive(series: Series, *, log_time: bool = False):
    """The points a log axis can show: value > 0 (and t > 0 on a log time axis), finite."""
    keep = np.isfinite(series.value) & (series.value > 0)
    if log_time:
        keep &= series.time > 0
    return series.time[keep], series.value[keep]


def figure_of_measures(h5):
    """The ``plot`` figure: one panel per measure the file has (see PANELS)."""
    from matplotlib.figure import Figure

    runs = storage.list_runs(h5)
    colors = run_colors(runs)
    panels = [(m, title) for m, title in PANELS if any(
        read_measure(h5, run, "loss_train" if m == "loss" else m) is not None for run in runs)]
    if not panels:
        raise UsageError(f"{h5.filename} has no measures to plot (runs: {', '.join(runs) or 'none'})")
    columns = 1 if len(panels) == 1 else 2
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(5.6 * columns, 3.6 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (measure, title) in zip(axes, panels):
        if measure == "loss":
            draw_losses(ax, h5, runs, colors, log_time=True)
            ax.legend(fontsize="small")
        else:
            for name in runs:
                series = read_measure(h5, name, measure)
                if series is not None:
                    ax.plot(*_positive(series, log_time=True), color=colors[name], lw=1.4, label=name)
            ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("model time t")
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"{storage.scenario_of(h5).get('name', Path(h5.filename).stem)}: {len(runs)} run(s)")
    return fig


def plot(path, output=None) -> Path:
    """Draw the measures of the trajectory file at ``path`` into ``output`` (default: FILE.png)."""
    output = Path(output) if output else Path(path).with_suffix(".png")
    output = check_figure_path(output)
    with storage.open_trajectory(path) as h5:
        fig = figure_of_measures(h5)
    return save_figure(fig, output)

