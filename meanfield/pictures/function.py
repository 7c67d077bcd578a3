"""``mf.plot_function``: what the runs learned, along a line through input space, beside the target.

One panel per run, side by side (rich and lazy from the same particles, the ``ntk`` run's
kernel predictor), sharing the vertical axis. Each panel draws along x(u) = x_0 + u v:

- the run's prediction at the chosen snapshot (:meth:`meanfield.RecordedRun.predict`, solid)
  and at t = 0 (dotted);
- the target: the noiseless teacher f*(x(u)) where the task has one (black, dashed), and the
  training samples nearest the line (the ``near`` share of them, closest first) as points
  (u_k, y_k), u_k = (x_k - x_0) . v their position along it.

The line: ``line=(x_start, x_end)`` gives it (u from 0 to 1, v = x_end - x_start); by default
it goes through the training inputs' mean (0 with infinite data) along the first teacher
neuron's direction w*_1 / |w*_1| where there is a teacher, else the training inputs' first
principal direction, for u in [-R, R], R = 2.5 times the spread of the inputs along it (2.5
for Gaussian inputs with infinite data). Files are read only through :class:`meanfield.Trajectory`.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Optional, Sequence

import numpy as np

from ..errors import UsageError
from ..messages import did_you_mean
from ..model.prediction import target
from ..storage import Trajectory, open_trajectory
from .figures import run_colors, save_figure

SPAN = 2.5
"""The default line covers u in [-SPAN s, SPAN s], s the inputs' spread along it."""


def default_line(data) -> tuple[np.ndarray, np.ndarray, float]:
    """(x_0, v unit, R) of the default line: see the module docstring."""
    X = data.X_train
    centre = np.zeros(data.teacher.W.shape[1]) if X is None else X.mean(axis=0)
    if data.teacher is not None:
        v = data.teacher.W[0] / np.linalg.norm(data.teacher.W[0])
    else:
        v = np.linalg.svd(X - centre, full_matrices=False)[2][0]
    spread = 1.0 if X is None else float(np.std((X - centre) @ v))
    return centre, v, SPAN * spread


def function_figure(trajectory: Trajectory, runs: Optional[Sequence[str]] = None, *, time: Optional[float] = None,
                    line=None, points: int = 201, near: float = 0.1):
    """The figure of :func:`plot_function` (a matplotlib Figure, no display needed)."""
    from matplotlib.figure import Figure

    names = list(trajectory.runs if runs is None else runs)
    for name in names:
        if name not in trajectory:
            raise UsageError(f"plot_function: no run {name!r} (runs: {', '.join(trajectory.runs)})"
                             + did_you_mean(name, trajectory.runs))
    if not names:
        raise UsageError("plot_function: no runs to draw")
    data = trajectory.data
    if line is None:
        x0, v, R = default_line(data)
        u = np.linspace(-R, R, points)
        along = "along w*_1" if data.teacher is not None else "along the inputs' first principal direction"
    else:
        x0, x1 = (np.asarray(end, dtype=np.float64) for end in line)
        d = trajectory.scenario.data.dim
        if x0.shape != (d,) or x1.shape != (d,) or np.array_equal(x0, x1):
            raise UsageError(f"plot_function: line=(x_start, x_end), two different points of dimension {d}")
        v, u = x1 - x0, np.linspace(0.0, 1.0, points)
        along = "from x_start (u = 0) to x_end (u = 1)"
    X = x0 + u[:, None] * v
    colors = run_colors(trajectory.runs)
    fig = Figure(figsize=(4.2 * len(names), 3.6), layout="constrained")
    axes = fig.subplots(1, len(names), sharey=True, squeeze=False)[0]
    f_star = target(data.teacher, X) if data.teacher is not None else None
    sample_u, sample_y = _nearest_samples(data, x0, v, near)
    for ax, name in zip(axes, names):
        run = trajectory[name]
        if f_star is not None:
            ax.plot(u, f_star, "--", color="black", lw=1.2, label="target f*")
        if sample_u is not None:
            ax.plot(sample_u, sample_y, ".", color="0.45", ms=4, label="training samples near the line")
        ax.plot(u, run.predict(X, time=run.times[0]), ":", color=colors[name], lw=1.2, label="t = 0")
        at = run.times[-1] if time is None else run.times[run._index_at(time)]
        ax.plot(u, run.predict(X, time=time), "-", color=colors[name], lw=2.0, label=f"t = {at:g}")
        ax.set_title(run.label, fontsize="medium")
        ax.set_xlabel("u (position along the line)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    axes[0].set_ylabel("f(x(u))")
    fig.suptitle(f"{trajectory.name}: the learned functions {along}")
    return fig


def _nearest_samples(data, x0, v, near: float):
    """(u_k, y_k) of the ``near`` share of training samples closest to the line (None without samples)."""
    if data.X_train is None or near <= 0:
        return None, None
    unit = v / np.linalg.norm(v)
    offset = data.X_train - x0
    u = offset @ v / (v @ v)
    distance = np.linalg.norm(offset - np.outer(offset @ unit, unit), axis=1)
    keep = np.argsort(distance, kind="stable")[:max(1, int(round(near * len(u))))]
    return u[keep], data.y_train[keep]


def plot_function(trajectory, runs=None, *, time=None, line=None, output=None, points: int = 201, near: float = 0.1):
    """Draw each run's learned function along a line beside the target (a :class:`Trajectory`
    or a file's path); returns the matplotlib Figure, also saved to ``output`` when given."""
    given = isinstance(trajectory, Trajectory)
    with nullcontext(trajectory) if given else open_trajectory(trajectory) as opened:
        fig = function_figure(opened, runs, time=time, line=line, points=points, near=near)
    if output is not None:
        save_figure(fig, output)
    return fig
