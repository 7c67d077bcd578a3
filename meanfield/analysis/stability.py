"""The edge of stability of gradient descent (docs/design.md §1.9): when a run's sharpness
first reaches 2/dt, and where it stays afterwards.

Gradient descent θ ← θ − dt P ∇R is stable near a minimum when dt λ_max(P^½ H P^½) < 2. With
the sharpness S(t) = ``hessian_eigenvalue_max`` at the snapshots, the ratio

    q(t) = S(t) · dt / 2

is 1 at the edge. :func:`edge_crossing` reads, from a series of q: the first snapshot time
t_edge with q ≥ ``level`` (0.9 by default: "reaches the edge"), the median of q over the
snapshots from t_edge on (where it hovers), and q at t = 0 and its maximum.
:func:`edge_of_stability` does it for every run of a trajectory that recorded the sharpness.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

SHARPNESS = "hessian_eigenvalue_max"


@dataclass(frozen=True)
class EdgeCrossing:
    """What a sharpness series says about the edge, all as ratios q = S dt / 2.

    ``t_edge``: the first snapshot time with q ≥ ``level`` (None: never); ``hover``: the
    median of q over the snapshots from t_edge on (None: never reached); ``initial``: q at the
    first snapshot; ``peak``: the largest q; ``dt``: the step the ratios use."""

    dt: float
    level: float
    initial: float
    peak: float
    t_edge: Optional[float]
    hover: Optional[float]


def edge_crossing(times, sharpness, dt: float, level: float = 0.9) -> EdgeCrossing:
    """The :class:`EdgeCrossing` of the series ``sharpness`` (S at ``times``, increasing) under
    gradient descent of step ``dt``: q = S dt / 2, t_edge the first time with q ≥ ``level``,
    hover the median of q from there on. Non-finite values (a snapshot after a failure) are
    dropped first."""
    times, sharpness = np.asarray(times, float), np.asarray(sharpness, float)
    if times.shape != sharpness.shape or times.ndim != 1:
        raise ValueError(f"times {times.shape} and sharpness {sharpness.shape} must be one series")
    if not (dt > 0 and level > 0):
        raise ValueError(f"dt ({dt}) and level ({level}) must be positive")
    keep = np.isfinite(sharpness)
    times, ratio = times[keep], sharpness[keep] * dt / 2
    if not ratio.size:
        raise ValueError("the sharpness series has no finite value")
    reached = np.flatnonzero(ratio >= level)
    first = int(reached[0]) if reached.size else None
    return EdgeCrossing(dt=float(dt), level=float(level), initial=float(ratio[0]), peak=float(ratio.max()),
                        t_edge=None if first is None else float(times[first]),
                        hover=None if first is None else float(np.median(ratio[first:])))


def run_step(run) -> Optional[float]:
    """The step a fixed-step run of a trajectory took: its integrator's dt (for a dt_factor run
    the dt it resolved to), shortened as the stepping loop does to n = ceil(Δ / dt) equal steps
    per snapshot interval Δ when dt does not divide Δ (docs/design.md §3.4); None for a run
    that does not step at a fixed dt."""
    integrator = run.attrs.get("integrator")
    if not isinstance(integrator, dict) or not integrator.get("dt") or integrator.get("method") == "rk45":
        return None
    dt, times = float(integrator["dt"]), np.asarray(run.times, float)
    if times.size < 2:
        return dt
    from solvers.integrate import even_step

    step = even_step(float(times[1] - times[0]), dt)
    return dt if abs(step - dt) <= 1e-12 * dt else step  # dt itself when it divides the interval


def edge_of_stability(trajectory, level: float = 0.9) -> dict[str, EdgeCrossing]:
    """Run name -> :class:`EdgeCrossing` for every fixed-step run of ``trajectory`` (a
    Trajectory or a file's path) that recorded ``hessian_eigenvalue_max``."""

    from ..storage import Trajectory

    if isinstance(trajectory, (str, Path)):
        from ..storage import open_trajectory as open_file

        with open_file(trajectory) as opened:
            return edge_of_stability(opened, level)
    if not isinstance(trajectory, Trajectory):
        raise TypeError(f"a Trajectory or a path, not {type(trajectory).__name__}")
    out = {}
    for name in trajectory.runs:
        run = trajectory[name]
        dt = run_step(run)
        if dt is None or SHARPNESS not in run.measures:
            continue
        series = run.series(SHARPNESS)
        out[name] = edge_crossing(series.time, series.value, dt, level)
    return out


def format_edges(edges: dict[str, EdgeCrossing]) -> str:
    """The table of :func:`edge_of_stability`: one line per run."""
    lines = [f"{'run':<12} {'dt':>6} {'2/dt':>6} {'q(0)':>6} {'t_edge':>7} {'hover':>6} {'peak':>6}"]
    for name, e in edges.items():
        t_edge = "never" if e.t_edge is None else f"{e.t_edge:g}"
        hover = "-" if e.hover is None else f"{e.hover:.3g}"
        lines.append(f"{name:<12} {e.dt:>6.3g} {2 / e.dt:>6.3g} {e.initial:>6.3g} {t_edge:>7} {hover:>6} "
                     f"{e.peak:>6.3g}")
    lines.append(f"q = hessian_eigenvalue_max * dt / 2; t_edge: first q >= {next(iter(edges.values())).level:g}; "
                 "hover: median q from t_edge on" if edges
                 else "no run recorded hessian_eigenvalue_max at a fixed step")
    return "\n".join(lines)


def edge_figure(trajectory, output) -> Path:
    """The figure of :func:`edge_of_stability`: q = S dt / 2 against time, one curve per run
    (the edge q = 1 dashed), and each run's training loss below (log scale). ``trajectory``:
    a Trajectory or a file's path; ``output``: the figure's path (.png, .pdf, .svg)."""

    from matplotlib.figure import Figure

    from ..pictures.figures import run_colors, save_figure

    if isinstance(trajectory, (str, Path)):
        from ..storage import open_trajectory as open_file

        with open_file(trajectory) as opened:
            return edge_figure(opened, output)
    edges = edge_of_stability(trajectory)
    if not edges:
        from ..errors import UsageError

        raise UsageError(f"{trajectory.path or trajectory.name}: no fixed-step run recorded {SHARPNESS} "
                         "(record.measures)")
    colors = run_colors(list(edges))
    fig = Figure(figsize=(6.4, 6.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    for name, edge in edges.items():
        run = trajectory[name]
        series = run.series(SHARPNESS)
        top.plot(series.time, series.value * edge.dt / 2, color=colors[name], lw=1.4,
                 label=f"{name} (dt {edge.dt:g})")
        loss = run.series(run.fit_measure)
        bottom.plot(loss.time, loss.value, color=colors[name], lw=1.2)
    top.axhline(1.0, color="black", ls="--", lw=1, label="edge: sharpness = 2/dt")
    top.set_ylabel("sharpness x dt / 2")
    top.legend(fontsize="small")
    bottom.set_yscale("log")
    bottom.set_ylabel("training loss")
    bottom.set_xlabel("model time t")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"{trajectory.name}: {SHARPNESS} against the edge of stability")
    return save_figure(fig, output)
