"""Chizat, Oyallon & Bach (2019), the scale of the initialization: their two-layer experiment
in their setup (the bundled sweep ``scenarios/sweeps/chizat_oyallon_bach.yaml``, its header
the mapping of their GD onto the ``lazy`` preset, alpha = m tau^2).

For each scale tau (the grid's label) the means over the seeds of what their figure shows: the
lazy run's test loss at the end of training and the best over the snapshots, the first layer's
relative change ||A_t - A_0|| / ||A_0|| (``displacement_w``), the training loss and the ntk
run's test loss (the tau -> infinity limit). The reduced check is the grid of
tests/test_studies_scale.py: d = 20, n = 100, 200 test points, their 10^4 steps, six of their
scales, one seed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from .base import Reference, Study, reduced_sweep, run_sweep_into

NAME = "chizat_oyallon_bach"
AXIS = "runs.lazy.parameterization"
COLUMNS = ("loss_test", "best_loss_test", "displacement_w", "loss_train", "ntk_loss_test")
QUICK_TAUS = (0.01, 0.1, 0.3162, 1, 3.162, 10)

REFERENCES = (
    Reference("test loss against tau", "rises"),
    Reference("test loss at the largest tau / the ntk run's (the linearized model's plateau)", 1.0, tolerance=1e-3),
    Reference("best test loss over training / at its end, largest tau (lazy side)", "< 1", quick=False),
    Reference("exponent of ||A_t - A_0||/||A_0|| in tau, 1 <= tau <= 10 (O(1/alpha), alpha = m tau^2)", -2.0,
              tolerance=0.1),
)


def per_scale(directory) -> dict[float, dict[str, float]]:
    """tau -> the mean over the seeds of each of COLUMNS."""
    import meanfield as mf

    results = mf.open_sweep(directory)
    values = defaultdict(lambda: defaultdict(list))
    for _, row in results.table.iterrows():
        if str(row["status"]) != "complete":
            continue
        with results.trajectory(row["point"]) as trajectory:
            lazy, ntk = trajectory["lazy"], trajectory["ntk"]
            final = lazy.final()
            measured = {"loss_test": final["loss_test"], "best_loss_test": float(lazy.measure("loss_test").min()),
                        "displacement_w": final["displacement_w"], "loss_train": final["loss_train"],
                        "ntk_loss_test": ntk.final()["loss_test"]}
        for name, value in measured.items():
            values[float(row[AXIS])][name].append(value)
    return {tau: {name: float(np.mean(v)) for name, v in columns.items()} for tau, columns in sorted(values.items())}


def exponent(taus, values, low: float, high: float) -> float:
    """The least-squares slope of log(values) against log(tau) for low <= tau <= high."""
    taus, values = np.asarray(taus), np.asarray(values)
    keep = (taus >= low) & (taus <= high)
    if keep.sum() < 2:
        return math.nan
    return float(np.polyfit(np.log(taus[keep]), np.log(values[keep]), 1)[0])


def format_scales(table: dict) -> str:
    """The table of :func:`per_scale` and the exponents of the change in tau, as text."""
    lines = ["tau       " + "  ".join(f"{name:>14}" for name in COLUMNS)]
    for tau, row in table.items():
        lines.append(f"{tau:<8g}  " + "  ".join(f"{row[name]:14.4g}" for name in COLUMNS))
    taus, change = list(table), [row["displacement_w"] for row in table.values()]
    lines.append(f"exponent of displacement_w in tau: {exponent(taus, change, 1, 10):+.2f} for 1 <= tau <= 10, "
                 f"{exponent(taus, change, 0, 0.0631):+.2f} for tau <= 0.063")
    return "\n".join(lines)


def _rises(taus: list, loss: list) -> str:
    """'rises' when the test loss grows with tau up to tau = 1 (1% slack between neighbours) and
    the smallest tau's is below half the largest tau's."""
    small = [value for tau, value in zip(taus, loss) if tau <= 1]
    steady = all(b >= 0.99 * a for a, b in zip(small, small[1:]))
    return "rises" if steady and loss[0] < 0.5 * loss[-1] else "does not rise"


def measure(path: Path, quick: bool = False) -> dict:
    table = per_scale(path)
    if not table:
        return {}
    taus = list(table)
    loss = [table[t]["loss_test"] for t in taus]
    last = table[taus[-1]]
    return {
        REFERENCES[0].quantity: _rises(taus, loss),
        REFERENCES[1].quantity: last["loss_test"] / last["ntk_loss_test"],
        REFERENCES[2].quantity: last["best_loss_test"] / last["loss_test"],
        REFERENCES[3].quantity: exponent(taus, [table[t]["displacement_w"] for t in taus], 1, 10),
    }


def draw_scales(table: dict, path) -> Path:
    """Their figure's axes: test loss x 1000 against tau (end, best), and the change of the
    first layer against tau with the tau^-2 guide."""
    from matplotlib.figure import Figure

    from ..pictures.figures import save_figure

    taus = list(table)
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.semilogx(taus, [1e3 * table[t]["loss_test"] for t in taus], "k", lw=2.5, label="end of training")
    left.semilogx(taus, [1e3 * table[t]["best_loss_test"] for t in taus], ":k", lw=2.5,
                  label="best throughout training")
    left.axhline(1e3 * table[taus[-1]]["ntk_loss_test"], color="tab:orange", lw=1, label="ntk run (tau -> inf)")
    left.set(xlabel="tau", ylabel="test loss x 1000", title="test loss (their figure's axes)")
    left.legend(fontsize=8)
    right.loglog(taus, [table[t]["displacement_w"] for t in taus], "o-", ms=3, label="||A_t - A_0|| / ||A_0||")
    guide = [t for t in taus if t >= 1]
    if guide:
        right.loglog(guide, [table[guide[0]]["displacement_w"] * (t / guide[0]) ** -2 for t in guide], "--",
                     color="gray", label="tau^-2")
    right.set(xlabel="tau", title="relative change of the first layer")
    right.legend(fontsize=8)
    return save_figure(fig, Path(path))


def draw(path: Path, figure: Path) -> Path:
    return draw_scales(per_scale(path), figure)


def _quick(raw: dict) -> None:
    raw["base"]["data"].update(dim=20, n_train=100, n_test=200)
    raw["base"]["model"]["init"]["w_std"] = math.sqrt(20)  # w_i ~ N(0, I_d)
    raw["base"]["record"] = {"every": 5000.0, "particles": False}
    axis = raw["grid"][AXIS]
    raw["grid"] = {AXIS: {tau: axis[tau] for tau in QUICK_TAUS}, "seed": [0]}


def run(quick: bool, directory: Path, workers=None, resume: bool = False) -> Path:
    return run_sweep_into(reduced_sweep(NAME, _quick) if quick else NAME, directory, quick, workers, resume)


STUDIES = (Study(
    name=NAME, title="the scale of the initialization: lazy training as tau grows",
    citation="Chizat, Oyallon & Bach (2019), On lazy training in differentiable programming, NeurIPS, Sec. 3 "
             "(a figure, no table: the test loss rises with tau to the linearized model's)",
    kind="sweep", source=NAME, references=REFERENCES, run_study=run, measure=measure, draw=draw,
    full_time="66 points, 408 s"),)
