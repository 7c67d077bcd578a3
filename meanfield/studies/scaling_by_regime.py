"""Paccolat, Petrini, Geiger, Tyloo & Wyart (2021), the stripe model: test error against the
number of samples p for a relu network trained with the hinge loss, lazy against rich.

The bundled sweep ``scenarios/sweeps/scaling_by_regime.yaml`` (its header is the setup): the
``stripe`` task (x ~ N(0, I_d), y = +1 iff -0.3 < x_1 < 1.18549), two runs on the same data,
``rich`` (mean-field particles, both layers) and ``lazy`` (the analytic NTK's kernel flow with
the hinge loss), p = 32 ... 512, d = 2 and 3, three seeds. The test error of a run is the share
of test points with y f(x) <= 0 at t_end; its exponent beta (epsilon ~ p^-beta) is the
least-squares slope of log epsilon on log p over every seed's point, with its 95% Student-t
interval (:func:`meanfield.analysis.stats.power_law`). Published: beta_lazy = d/(3d-2),
beta_feature = (2d-1)/(3d-2) (the paper's abstract). The tolerance 0.15 on each exponent was
set before the study was run. The reduced check: d = 2, p = 32, 96 and 256, one seed, 2 000
test points, t_end = 1e4: the rich runs reach zero training loss and the error falls with p in
both regimes. It cannot resolve the exponents (with one seed and p <= 256 their 95% intervals
span several units; the lazy slope there is 0.94, pre-asymptotic), so it does not measure them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from .base import Reference, Study, reduced_sweep, run_sweep_into

NAME = "scaling_by_regime"
RUNS = ("lazy", "rich")
DIMS = (2, 3)
TOLERANCE = 0.15
"""Each measured exponent is compared with the published one within 0.15 (set beforehand)."""


def beta_lazy(d: int) -> float:
    """beta_lazy = d / (3d - 2) (Paccolat et al. 2021)."""
    return d / (3 * d - 2)


def beta_feature(d: int) -> float:
    """beta_feature = (2d - 1) / (3d - 2) for a stripe (one informative direction; Paccolat et al. 2021)."""
    return (2 * d - 1) / (3 * d - 2)


PUBLISHED = {"lazy": beta_lazy, "rich": beta_feature}


def _exponent(run: str, d: int) -> str:
    formula = "d/(3d-2)" if run == "lazy" else "(2d-1)/(3d-2)"
    return f"beta, {run} ({'NTK kernel flow' if run == 'lazy' else 'mean field'}), d = {d}: {formula}"


REFERENCES = tuple(Reference(_exponent(run, d), round(PUBLISHED[run](d), 4), tolerance=TOLERANCE, quick=False)
                   for d in DIMS for run in RUNS) + (
    Reference("beta rich - beta lazy, d = 2 (feature learning raises the exponent; published 0.25)", "> 0",
              quick=False),
    Reference("largest training loss at t_end, rich, every point (their protocol: trained to zero hinge loss)",
              0.0, checked=False),
    Reference("test error at the largest p / at the smallest p, lazy, d = 2", "< 1"),
    Reference("test error at the largest p / at the smallest p, rich, d = 2", "< 1"),
)


def test_error(f, y) -> float:
    """The share of points with y f(x) <= 0."""
    return float(np.mean(np.asarray(y) * np.asarray(f) <= 0))


def points(directory) -> list[dict]:
    """One row per complete point and run: d, p, seed, run, test error, and the training loss
    and margin min_i y_i f(x_i) at t_end (zero loss: margin >= 1, the hinge's late phase)."""
    import meanfield as mf

    results = mf.open_sweep(directory)
    rows = []
    for _, row in results.table.iterrows():
        if str(row["status"]) != "complete":
            continue
        with results.trajectory(row["point"]) as trajectory:
            y_test = trajectory.data.y_test
            for name in RUNS:
                run = trajectory[name]
                f_test = np.asarray(run.measure("f_test").values)[-1]
                rows.append({"d": int(row["data.dim"]), "p": int(row["data.n_train"]), "seed": int(row["seed"]),
                             "run": name, "t": float(run.t), "test_error": test_error(f_test, y_test),
                             "loss_train": float(np.asarray(run.measure("loss_train").values)[-1]),
                             "margin": float(np.asarray(run.measure("margin").values)[-1])})
    return rows


def fits(rows: list[dict]) -> dict:
    """(run, d) -> the power-law fit of the test error against p (every seed's point), where
    it has at least three points at two p (and no error of 0)."""
    from ..analysis.stats import power_law

    grouped = defaultdict(list)
    for row in rows:
        grouped[row["run"], row["d"]].append((row["p"], row["test_error"]))
    out = {}
    for key, pairs in grouped.items():
        p, err = np.array(pairs, dtype=float).T
        if len(p) >= 3 and len(set(p)) >= 2 and np.all(err > 0):
            out[key] = power_law(p, err)
    return out


def _mean_error(rows, run: str, d: int, p: int) -> float:
    values = [row["test_error"] for row in rows if (row["run"], row["d"], row["p"]) == (run, d, p)]
    return float(np.mean(values)) if values else math.nan


def measure(path: Path, quick: bool = False) -> dict:
    rows = points(path)
    fitted = fits(rows)
    measured = {}
    for d in DIMS:
        for run in RUNS:
            if (run, d) in fitted:
                measured[_exponent(run, d)] = -fitted[run, d].exponent
    if ("rich", 2) in fitted and ("lazy", 2) in fitted:
        measured[REFERENCES[4].quantity] = fitted["lazy", 2].exponent - fitted["rich", 2].exponent
    rich = [row["loss_train"] for row in rows if row["run"] == "rich"]
    if rich:
        measured[REFERENCES[5].quantity] = max(rich)
    sizes = sorted({row["p"] for row in rows if row["d"] == 2})
    if len(sizes) >= 2:
        for ref, run in zip(REFERENCES[6:], RUNS):
            low = _mean_error(rows, run, 2, sizes[0])
            measured[ref.quantity] = _mean_error(rows, run, 2, sizes[-1]) / low if low > 0 else math.nan
    return measured


def summary(directory) -> str:
    """Per d and run: the mean test error at each p (over seeds), the fitted beta with its 95%
    interval beside the published one, and the late phase reached (zero training loss)."""
    rows = points(directory)
    fitted = fits(rows)
    lines = []
    for d in sorted({row["d"] for row in rows}):
        sizes = sorted({row["p"] for row in rows if row["d"] == d})
        lines.append(f"d = {d}   p: " + "  ".join(f"{p:>7d}" for p in sizes))
        for run in RUNS:
            mine = [row for row in rows if (row["run"], row["d"]) == (run, d)]
            errors = "  ".join(f"{_mean_error(rows, run, d, p):7.4f}" for p in sizes)
            text = f"  {run:>4} error {errors}"
            if (run, d) in fitted:
                fit = fitted[run, d]
                low, high = -fit.exponent_ci[1], -fit.exponent_ci[0]
                text += f"   beta {-fit.exponent:.3f} [{low:.3f}, {high:.3f}], published {PUBLISHED[run](d):.3f}"
            zero = sum(row["loss_train"] == 0 for row in mine)
            text += (f"; zero training loss in {zero} of {len(mine)} points, at t_end {mine[0]['t']:.3g}"
                     f" (largest training loss {max(row['loss_train'] for row in mine):.2g},"
                     f" smallest margin {min(row['margin'] for row in mine):.3g})")
            lines.append(text)
    return "\n".join(lines)


def draw(path: Path, figure: Path) -> Path:
    """One panel per d: the test error against p (log-log), each seed's point and the mean,
    lazy and rich, with the fitted power laws and the published slopes."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    from ..pictures.figures import save_figure

    rows = points(path)
    fitted = fits(rows)
    dims = sorted({row["d"] for row in rows})
    fig = Figure(figsize=(5.5 * max(len(dims), 1), 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(len(dims), 1)))
    for ax, d in zip(axes, dims):
        sizes = np.array(sorted({row["p"] for row in rows if row["d"] == d}), dtype=float)
        for colour, run in zip(("C1", "C0"), RUNS):
            mine = [row for row in rows if (row["run"], row["d"]) == (run, d)]
            ax.loglog([row["p"] for row in mine], [row["test_error"] for row in mine], ".", color=colour, alpha=0.4)
            ax.loglog(sizes, [_mean_error(rows, run, d, int(p)) for p in sizes], "o", color=colour)
            if (run, d) in fitted:
                fit = fitted[run, d]
                low, high = -fit.exponent_ci[1], -fit.exponent_ci[0]
                ax.loglog(sizes, fit.prefactor * sizes**fit.exponent, "-", color=colour,
                          label=f"{run}: beta {-fit.exponent:.2f} [{low:.2f}, {high:.2f}]")
                middle = math.exp(np.mean(np.log(sizes)))
                anchor = fit.prefactor * middle**fit.exponent
                ax.loglog(sizes, anchor * (sizes / middle) ** -PUBLISHED[run](d), "--", color=colour, lw=1,
                          label=f"{run}: published {PUBLISHED[run](d):.2f}")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set(xlabel="p (training samples)", ylabel="test error", title=f"stripe, hinge loss, d = {d}")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return save_figure(fig, Path(figure))


def _quick(raw: dict) -> None:
    raw["base"]["data"]["n_test"] = 2000
    raw["base"]["train"]["t_end"] = 1.0e4
    raw["grid"] = {"data.dim": [2], "data.n_train": [256, 96, 32]}


def run(quick: bool, directory: Path, workers=None, resume: bool = False) -> Path:
    return run_sweep_into(reduced_sweep(NAME, _quick) if quick else NAME, directory, quick, workers, resume)


STUDIES = (Study(
    name=NAME, title="stripe model, hinge loss: test error against p, lazy (NTK) against rich (mean field)",
    citation="Paccolat, Petrini, Geiger, Tyloo & Wyart (2021), Geometric compression of invariant manifolds in "
             "neural nets (arXiv 2007.11471): epsilon ~ p^-beta, beta_lazy = d/(3d-2), "
             "beta_feature = (2d-1)/(3d-2) (the tolerances 0.15 are ours, set before the run)",
    kind="sweep", source=NAME, references=REFERENCES, run_study=run, measure=measure, draw=draw,
    full_time="30 points, 477 s"),)
