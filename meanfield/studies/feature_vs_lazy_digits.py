"""Feature against lazy training on real data, beside Geiger, Spigler, Jacot & Wyart (2020): the bundled
sweep ``scenarios/sweeps/feature_vs_lazy_digits.yaml`` (its header the mapping of their alpha to ours,
alpha = alpha_G sqrt(h)).

Digits parity (scikit-learn's 8 x 8 digits, PCA to d = 10, 256 training and 512 test images, the
data fixed by data.seed while seed varies the start), a lazy run at each alpha and an ntk run (the
alpha -> infinity limit) per width h and seed. For each (alpha, h), over the seeds:

- the test error, the share of test points with sign f(x) != y, from the recorded f_test at the end;
- displacement_w and kernel_distance at the end (how far the features and the kernel moved);
- the fluctuations of the learned function, the mean over test points of the variance over seeds of f(x).

alpha*(h) is where displacement_w, the relative change of the first layer, falls through 1 (log-log
interpolation between the grid's alphas): the features stop moving by O(1). Its exponent in h is the
slope of log alpha* against log h, that of the fluctuations likewise at the largest alpha (the lazy side).
The feature side is the smallest alpha of the grid, 1 (mean field): at alpha = 0.3 Euler's dt = 0.2 is past
its stability edge (every run's training loss rises on the way; a smaller dt would cost the study 4x).
The reduced check: widths 64 and 256, alpha 1, 3, 10 and 1000, two seeds, 30 units of time.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from .base import Reference, Study, reduced_sweep, run_sweep_into

NAME = "feature_vs_lazy_digits"
ALPHA = "runs.lazy.parameterization.alpha"
WIDTH = "model.width"

REFERENCES = (
    Reference("exponent of alpha* in h, ours (theirs alpha*_G ~ h^-1/2, alpha = alpha_G sqrt(h))", 0.0,
              tolerance=0.15, quick_tolerance=0.3),
    Reference("test error at the largest alpha / the ntk run's (the alpha -> infinity limit)", 1.0,
              tolerance=0.05),
    Reference("displacement_w x alpha at the two largest alphas, widest net (lazy: O(1/alpha))", 1.0,
              tolerance=0.1),
    Reference("test error of the ntk run minus the feature side's (alpha = smallest) against h", "decreases"),
    Reference("exponent of the fluctuations of f over seeds in h, largest alpha", -1.0, tolerance=0.3, quick=False,
              checked=False),
    Reference("test error, feature side (smallest alpha) / lazy side (ntk run), widest net, PCA-reduced data", "< 1",
              quick=False, checked=False),
)


def per_point(directory) -> dict[tuple[float, int], dict[str, float]]:
    """(alpha, h) -> the measures over the seeds (see the module docstring), and 'ntk_error' the ntk run's."""
    import meanfield as mf

    results = mf.open_sweep(directory)
    values = defaultdict(lambda: defaultdict(list))
    for _, row in results.table.iterrows():
        if str(row["status"]) != "complete":
            continue
        with results.trajectory(row["point"]) as trajectory:
            y = trajectory.data.y_test
            lazy, ntk = trajectory["lazy"], trajectory["ntk"]
            f, f_ntk = lazy.series("f_test").value[-1], ntk.series("f_test").value[-1]
            final = lazy.final()
            key = (float(row[ALPHA]), int(row[WIDTH]))
            values[key]["error"].append(float(np.mean(np.sign(f) != y)))
            values[key]["ntk_error"].append(float(np.mean(np.sign(f_ntk) != y)))
            values[key]["displacement_w"].append(final["displacement_w"])
            values[key]["kernel_distance"].append(final["kernel_distance"])
            values[key]["f"].append(np.asarray(f, dtype=np.float64))
    table = {}
    for key, columns in sorted(values.items()):
        functions = np.array(columns.pop("f"))
        row = {name: float(np.mean(v)) for name, v in columns.items()}
        row["fluctuations"] = float(np.mean(np.var(functions, axis=0))) if len(functions) > 1 else math.nan
        table[key] = row
    return table


def crossover(alphas, displacement, level: float = 1.0) -> float:
    """The alpha where ``displacement`` (decreasing in alpha) falls through ``level``: log-log interpolation
    between the two grid points around it (NaN when it never crosses)."""
    for (a0, d0), (a1, d1) in zip(zip(alphas, displacement), zip(alphas[1:], displacement[1:])):
        if d0 >= level > d1 > 0:
            slope = (math.log(d1) - math.log(d0)) / (math.log(a1) - math.log(a0))
            return math.exp(math.log(a0) + (math.log(level) - math.log(d0)) / slope)
    return math.nan


def slope(x, y) -> float:
    """The least-squares slope of log y against log x (NaN with fewer than two finite points)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0]) if keep.sum() >= 2 else math.nan


def summary(table: dict) -> dict:
    """alphas, widths, alpha*(h) and the study's numbers from :func:`per_point`'s table."""
    alphas = sorted({a for a, _ in table})
    widths = sorted({h for _, h in table})
    stars = {h: crossover([a for a in alphas if (a, h) in table],
                          [table[a, h]["displacement_w"] for a in alphas if (a, h) in table]) for h in widths}
    top, wide = alphas[-1], widths[-1]
    lazy_tail = [table[a, wide]["displacement_w"] * a for a in alphas[-2:] if (a, wide) in table]
    return {"alphas": alphas, "widths": widths, "alpha_star": stars,
            "star_exponent": slope(widths, [stars[h] for h in widths]),
            "limit_ratio": table[top, wide]["error"] / table[top, wide]["ntk_error"],
            "tail": lazy_tail[-1] / lazy_tail[0] if len(lazy_tail) == 2 else math.nan,
            "fluctuation_exponent": slope(widths, [table[top, h]["fluctuations"] for h in widths]),
            "gaps": [table[alphas[0], h]["ntk_error"] - table[alphas[0], h]["error"] for h in widths],
            "feature_over_lazy": table[alphas[0], wide]["error"] / table[alphas[0], wide]["ntk_error"]}


def measure(path: Path, quick: bool = False) -> dict:
    table = per_point(path)
    if not table:
        return {}
    numbers = summary(table)
    gaps = numbers["gaps"]
    out = {REFERENCES[0].quantity: numbers["star_exponent"], REFERENCES[1].quantity: numbers["limit_ratio"],
           REFERENCES[2].quantity: numbers["tail"],
           REFERENCES[3].quantity: "decreases" if all(b < a for a, b in zip(gaps, gaps[1:])) else "does not decrease"}
    if not quick:
        out[REFERENCES[4].quantity] = numbers["fluctuation_exponent"]
        out[REFERENCES[5].quantity] = numbers["feature_over_lazy"]
    return out


def format_points(table: dict) -> str:
    """The per-point table and alpha*(h), as text (what docs/studies.md quotes)."""
    numbers = summary(table)
    lines = [f"{'alpha':>7} {'h':>5} {'error':>7} {'ntk':>7} {'disp_w':>8} {'kernel':>9} {'fluct':>9}"]
    for (alpha, h), row in table.items():
        lines.append(f"{alpha:7g} {h:5d} {row['error']:7.4f} {row['ntk_error']:7.4f} {row['displacement_w']:8.4g} "
                     f"{row['kernel_distance']:9.3g} {row['fluctuations']:9.3g}")
    lines.append("alpha*(h): " + ", ".join(f"h = {h}: {a:.3g}" for h, a in numbers["alpha_star"].items()))
    return "\n".join(lines)


def draw(path: Path, figure: Path) -> Path:
    """Test error against alpha per width (the ntk runs' as dashed levels), and displacement_w against alpha."""
    from matplotlib.figure import Figure

    from ..pictures.figures import save_figure

    table = per_point(path)
    numbers = summary(table)
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    for index, h in enumerate(numbers["widths"]):
        alphas = [a for a in numbers["alphas"] if (a, h) in table]
        color = f"C{index}"
        left.semilogx(alphas, [table[a, h]["error"] for a in alphas], "o-", color=color, label=f"h = {h}")
        left.axhline(np.mean([table[a, h]["ntk_error"] for a in alphas]), color=color, ls="--", lw=1)
        right.loglog(alphas, [table[a, h]["displacement_w"] for a in alphas], "o-", color=color, label=f"h = {h}")
        star = numbers["alpha_star"][h]
        if math.isfinite(star):
            right.axvline(star, color=color, ls=":", lw=1)
    left.set(xlabel="alpha (ours; theirs alpha / sqrt(h))", ylabel="test error (digits parity, d = 10)",
             title="test error; dashed: the ntk run (alpha -> inf)")
    right.axhline(1.0, color="gray", lw=0.8)
    right.set(xlabel="alpha", ylabel="||W_t - W_0|| / ||W_0||", title="the features move: alpha* (dotted) where 1")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    return save_figure(fig, Path(figure))


def _quick(raw: dict) -> None:
    raw["base"]["train"]["t_end"] = 30.0
    raw["base"]["record"] = {"every": 10.0, "particles": False}
    raw["grid"] = {ALPHA: [1.0, 3.0, 10.0, 1000.0], WIDTH: [64, 256], "seed": [0, 1]}


def run(quick: bool, directory: Path, workers=None, resume: bool = False) -> Path:
    return run_sweep_into(reduced_sweep(NAME, _quick) if quick else NAME, directory, quick, workers, resume)


STUDIES = (Study(
    name=NAME, title="feature against lazy training on digits parity: test error and crossover against alpha",
    citation="Geiger, Spigler, Jacot & Wyart (2020), Disentangling feature and lazy training in deep neural "
             "networks, arXiv 1906.08034: alpha*_G ~ h^-1/2 separates the regimes (alpha = alpha_G sqrt(h) here)",
    kind="sweep", source=NAME, references=REFERENCES, run_study=run, measure=measure, draw=draw,
    full_time="72 points, 103 s"),)
