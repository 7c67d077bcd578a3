"""The jamming peak and the scaling of generalization with width (the bundled sweep
``scenarios/sweeps/jamming.yaml``, its header the design; docs/design.md §7.6).

At fixed data (data.seed 0) and n, widths across the interpolation threshold, eight
initialisations (seed 0..7) each. The lazy network is an ``ntk`` run on the empirical kernel of
the width-m particles (the lazy preset's alpha -> infinity limit, trained to t lr = 2e10), the
infinite-width one the same with the analytic kernel (eps_inf), the rich one a ``mean_field``
particle run. Per width h, over the initialisations s (squared loss, so exactly
mean_s eps_s - eps(fbar) = mean_s ||f_s - fbar||^2 / 2 on the test points):

    fbar_h     = mean_s f_s (test points)                     the ensemble average
    delta_h    = (mean_s mean_x (f_s - fbar_h)^2)^(1/2)       output fluctuations
    excess_h   = mean_s eps_s - eps(fbar_h)                   excess test error of one initialisation
    eps_h - eps_inf = mean_s eps_s - eps_inf                  its excess over the infinite width

Geiger et al. (arXiv 1901.01608, its abstract): ||f_N - fbar_N|| ~ N^-1/4 and eps_N - eps_inf ~
N^-1/2 (classification) beyond the jamming threshold N*, below which the training error is not
zero, where the test error has a cusp; they derive both from NTK fluctuations ~ h^-1/2 with
N ~ h^2 parameters (fixed-depth fully connected nets). For a two-layer net at fixed d the
mechanism gives h^-1/2 and h^-1 in the width h = m, the exponents measured here (power laws over
the widths from 128 on, Student-t 95% intervals). The lazy threshold: symmetric init makes
mirrored pairs' tangent features collinear, and for a positively homogeneous activation (relu)
sigma(w.x) = k^-1 (w.x) sigma'(w.x) lies in the span of the input-weight features
sigma'(w.x) x: P = (m/2) d independent tangent features ((m/2)(d + 1) otherwise), P* = n.

The reduced check: widths 20, 24, 28, 128, 256, 512 and four initialisations, lazy runs only.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .base import Reference, Study, reduced_sweep, run_sweep_into

NAME = "jamming"
FIT_FROM = 128
"""The smallest width of the power-law fits (6 m*, well beyond the threshold)."""

REFERENCES = (
    Reference("lazy: test-error peak at P/n, P = (m/2) d tangent features (jamming at N* ~ n)", 1.0, tolerance=0.25),
    Reference("lazy: peak test error / infinite-width test error", "> 2"),
    Reference("lazy: exponent of ||f_h - fbar_h|| in h beyond the threshold (N^-1/4, N ~ h^2)", -0.5,
              tolerance=0.1, quick_tolerance=0.2),
    Reference("lazy: exponent of eps_h - eps(fbar_h) in h beyond the threshold (N^-1/2, N ~ h^2)", -1.0,
              tolerance=0.2, quick_tolerance=0.4),
    Reference("lazy: exponent of eps_h - eps_inf in h beyond the threshold (N^-1/2, N ~ h^2)", -1.0,
              tolerance=0.3, quick=False),
    Reference("lazy, h >= 128: |eps(fbar_h) - eps_inf| / (eps_h - eps_inf), ensemble of 8", "< 0.5", quick=False),
)


def _settings(table) -> dict:
    import yaml

    from solvers.catalog import HOMOGENEITY

    base = yaml.safe_load(table.sweep_yaml)["base"]
    d = int(base["data"]["dim"])
    per_pair = d if base["model"].get("activation", "relu") in HOMOGENEITY else d + 1
    return {"d": d, "n": int(base["data"]["n_train"]), "per_pair": per_pair}


def ensembles(path: Path) -> dict:
    """Per width h of the lazy run: P/n, the seeds' test losses, the ensemble's loss eps(fbar),
    delta_h, excess_h, the infinite-width loss, and the rich run's test losses (if it ran)."""
    import meanfield as mf

    from ..sweeps.table import read_table

    table = read_table(path)
    s = _settings(table)
    ok = [i for i, status in enumerate(table["status"]) if str(status) == "complete"]
    widths = sorted({int(table["model.width"][i]) for i in ok})
    out = {}
    for h in widths:
        rows = [i for i in ok if int(table["model.width"][i]) == h]
        f, y = [], None
        for i in rows:
            with mf.open(Path(path) / str(table["file"][i])) as traj:
                f.append(traj["lazy"].series("f_test").value[-1])
                y = traj.data.y_test
        f = np.array(f)
        fbar = f.mean(axis=0)
        eps = np.array([float(table["lazy.loss_test"][i]) for i in rows])
        eps_bar = 0.5 * float(np.mean((fbar - y) ** 2))
        out[h] = {
            "P/n": h / 2 * s["per_pair"] / s["n"], "eps": eps, "eps_bar": eps_bar,
            "delta": math.sqrt(float(np.mean((f - fbar) ** 2))), "excess": float(eps.mean()) - eps_bar,
            "eps_inf": float(np.mean([float(table["infinite.loss_test"][i]) for i in rows])),
            "rich": (np.array([float(table["rich.loss_test"][i]) for i in rows])
                     if "rich.loss_test" in table.columns else None),
        }
    return out


def measure(path: Path, quick: bool = False) -> dict:
    from ..analysis.stats import power_law

    e = ensembles(path)
    widths = sorted(e)
    out = {}
    medians = {h: float(np.median(e[h]["eps"])) for h in widths}
    peak = max(widths, key=medians.get)
    out[REFERENCES[0].quantity] = e[peak]["P/n"]
    out[REFERENCES[1].quantity] = medians[peak] / e[peak]["eps_inf"]
    beyond = [h for h in widths if h >= FIT_FROM]
    if len(beyond) >= 3:
        out[REFERENCES[2].quantity] = power_law(beyond, [e[h]["delta"] for h in beyond]).exponent
        out[REFERENCES[3].quantity] = power_law(beyond, [e[h]["excess"] for h in beyond]).exponent
        above = [e[h]["eps"].mean() - e[h]["eps_inf"] for h in beyond]
        if not quick:
            out[REFERENCES[4].quantity] = power_law(beyond, above).exponent
        ratios = [abs(e[h]["eps_bar"] - e[h]["eps_inf"]) / a for h, a in zip(beyond, above)]
        out[REFERENCES[5].quantity] = max(ratios)
    return out


def draw(path: Path, figure: Path) -> Path:
    from matplotlib.figure import Figure

    from ..pictures.figures import check_figure_path, save_figure

    figure = check_figure_path(figure)
    e = ensembles(path)
    widths = np.array(sorted(e))
    x = np.array([e[h]["P/n"] for h in widths])
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    eps = [e[h]["eps"] for h in widths]
    median = np.array([np.median(v) for v in eps])
    spread = [median - [v.min() for v in eps], [v.max() for v in eps] - median]
    left.errorbar(x, median, yerr=spread, fmt="o-", color="C0", capsize=3,
                  label="lazy (ntk, empirical kernel): median and range over initialisations")
    left.plot(x, [e[h]["eps_bar"] for h in widths], "s--", color="C2", label="lazy, ensemble average fbar")
    left.axhline(np.mean([e[h]["eps_inf"] for h in widths]), color="k", ls=":", label="infinite width (analytic)")
    if e[widths[0]]["rich"] is not None:
        left.plot(x, [np.median(e[h]["rich"]) for h in widths], "^-", color="C3", label="rich (mean field, t = 200)")
    left.axvline(1.0, color="0.6", ls=":", lw=1)
    left.set(xscale="log", yscale="log", xlabel="P / n, P = (m/2) d independent tangent features", ylabel="test loss",
             title="the jamming peak at P = n")
    left.legend(fontsize="small")
    beyond = widths[widths >= FIT_FROM]
    for key, color, label in (("delta", "C0", "||f_h - fbar_h|| (fluctuations)"),
                              ("excess", "C1", "eps_h - eps(fbar_h) (excess error)")):
        values = np.array([e[h][key] for h in widths])
        right.plot(widths, values, "o", color=color, label=label)
        if len(beyond) >= 3:
            from ..analysis.stats import power_law

            fit = power_law(beyond, [e[h][key] for h in beyond])
            right.plot(beyond, fit(beyond), "-", color=color, lw=1.2,
                       label=f"fit h >= {FIT_FROM}: exponent {fit.exponent:+.2f} "
                             f"[{fit.exponent_ci[0]:+.2f}, {fit.exponent_ci[1]:+.2f}]")
    right.set(xscale="log", yscale="log", xlabel="width h = m",
              title="beyond it (published: h^-1/2 and h^-1)")
    right.legend(fontsize="small")
    from matplotlib.ticker import NullFormatter

    for ax in (left, right):
        ax.grid(True, which="major", alpha=0.3)
        ax.xaxis.set_minor_formatter(NullFormatter())
    return save_figure(fig, figure)


def _quick(raw: dict) -> None:
    raw["base"]["runs"].pop("rich")
    raw["grid"] = {"model.width": [20, 24, 28, 128, 256, 512], "seed": [0, 1, 2, 3]}


def run(quick: bool, directory: Path, workers=None, resume: bool = False) -> Path:
    return run_sweep_into(reduced_sweep(NAME, _quick) if quick else NAME, directory, quick, workers, resume)


STUDIES = (Study(
    name=NAME, title="the jamming peak at the interpolation threshold; fluctuations and excess error beyond it",
    citation="Spigler, Geiger, d'Ascoli, Sagun, Biroli & Wyart (2019), A jamming transition from under- to "
             "over-parametrization affects generalization in deep learning, arXiv 1810.09665; Geiger, Jacot, "
             "Spigler, Gabriel, Sagun, d'Ascoli, Biroli, Hongler & Wyart (2020), Scaling description of "
             "generalization with number of parameters in deep learning, arXiv 1901.01608",
    kind="sweep", source=NAME, references=REFERENCES, run_study=run, measure=measure, draw=draw,
    full_time="120 points, 155 s"),)
