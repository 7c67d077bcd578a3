"""Random-features double descent against Mei & Montanari's exact asymptotics (the bundled sweep
``scenarios/sweeps/random_features_double_descent.yaml``, its header the design; docs/design.md §7.6).

The learner is an ``ntk`` run on the empirical kernel of the initial particles with a fixed first
layer (``lr_w: 0``): exactly random-features regression on N = m/2 relu features (symmetric init:
mirrored pairs share w_j), and its t -> infinity limit is the ridgeless (minimum-norm) or ridge
estimator (docs/design.md §1.6). The measured test error is R = 2 loss_test_limit - tau^2 (the
test labels carry the noise, R excludes it), averaged over seeds at each N/n, against
:func:`meanfield.analysis.random_features.rf_test_error` at psi1 = N/d, psi2 = n/d with the
sweep's own d, n, tau, |beta| and ridge (Mei & Montanari's lambda = d ridge / lr).

The "published" numbers are the paper's formula evaluated here (its implementation is tested
against a brute-force random-features regression in tests/test_rf_asymptotics.py); no number
was read off the paper's figures, so they are marked unchecked. The reduced check: N/n = 0.4, 1,
3, 10 and three seeds (seconds).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..analysis.random_features import rf_ridge_from_kernel_ridge, rf_test_error
from .base import Reference, Study, reduced_sweep, run_sweep_into

NAME = "random_features_double_descent"
RUNS = ("ridgeless", "ridge")
D, N_TRAIN, TAU, F1, RIDGE = 100, 300, 0.5, 1.0, 1e-4
"""The bundled sweep's d, n, noise, teacher norm and ridge (the references' formula values;
:func:`measure` reads the sweep's own from its results)."""
LAMBDA = rf_ridge_from_kernel_ridge(RIDGE, D)
TOP = 1e3
"""The figure's upper limit of R."""
AWAY = 0.25
"""Points with |N/n - 1| < AWAY are left out of the agreement: there the ridgeless error of one
draw at finite d is heavy-tailed (at N = n its mean is infinite)."""


def _formula(ratio: float, lam: float = 0.0) -> float:
    return rf_test_error(ratio * N_TRAIN / D, N_TRAIN / D, lam=lam, F1=F1, tau=TAU)


def _value(ratio: float, lam: float = 0.0) -> float:
    return round(_formula(ratio, lam), 3)


REFERENCES = (
    Reference("ridgeless R at N/n = 0.4", _value(0.4), tolerance=round(0.15 * _value(0.4), 3),
              quick_tolerance=round(0.25 * _value(0.4), 3), checked=False),
    Reference("ridgeless R at N/n = 3", _value(3.0), tolerance=round(0.15 * _value(3.0), 3),
              quick_tolerance=round(0.25 * _value(3.0), 3), checked=False),
    Reference("ridgeless R at N/n = 10", _value(10.0), tolerance=round(0.15 * _value(10.0), 3),
              quick_tolerance=round(0.25 * _value(10.0), 3), checked=False),
    Reference(f"ridge (lambda = {LAMBDA:g}) R at N/n = 1", _value(1.0, LAMBDA),
              tolerance=round(0.15 * _value(1.0, LAMBDA), 3), quick_tolerance=round(0.25 * _value(1.0, LAMBDA), 3),
              checked=False),
    Reference(f"largest |R / formula - 1| over N/n with |N/n - 1| >= {AWAY:g}, both runs", "< 0.15", quick=False),
    Reference("ridgeless R(N = n) / R(N = 10 n) (formula: infinite at N = n)", "> 10"),
    Reference(f"ridge (lambda = {LAMBDA:g}): R against N/n", "no peak"),
)


def _settings(table) -> dict:
    """d, n, tau, |beta| and each run's Mei-Montanari lambda, from the sweep stored with the results."""
    import yaml

    base = yaml.safe_load(table.sweep_yaml)["base"]
    data, runs = base["data"], base["runs"]
    lr = {run: float(runs[run].get("parameterization", {}).get("lr", 1.0)) for run in RUNS}
    return {"d": int(data["dim"]), "n": int(data["n_train"]), "tau": float(data.get("noise", 0.0)),
            "F1": float(data.get("teacher", {}).get("norm", 1.0)),
            "lam": {run: rf_ridge_from_kernel_ridge(float(runs[run].get("ridge", 0.0)), int(data["dim"]), lr[run])
                    for run in RUNS}}


def curves(path: Path) -> dict:
    """run -> (N/n, mean R over seeds, its standard error, the formula at N/n), from a results
    directory; R = 2 loss_test_limit - tau^2 per point."""
    from ..sweeps.table import read_table

    table = read_table(path)
    s = _settings(table)
    ok = np.array([str(v) == "complete" for v in table["status"]])
    ratio = np.asarray(table["model.width"], float)[ok] / 2 / s["n"]
    out = {}
    for run in RUNS:
        r = 2 * np.asarray(table[f"{run}.loss_test_limit"], float)[ok] - s["tau"] ** 2
        xs = np.unique(ratio)
        mean = np.array([r[ratio == x].mean() for x in xs])
        sem = np.array([r[ratio == x].std(ddof=1) / math.sqrt((ratio == x).sum()) if (ratio == x).sum() > 1
                        else math.nan for x in xs])
        theory = np.array([rf_test_error(x * s["n"] / s["d"], s["n"] / s["d"], lam=s["lam"][run], F1=s["F1"],
                                         tau=s["tau"]) for x in xs])
        out[run] = (xs, mean, sem, theory)
    return out


def _at(curve, ratio: float) -> float:
    xs, mean = curve[0], curve[1]
    hit = np.isclose(xs, ratio)
    return float(mean[hit][0]) if hit.any() else math.nan


def measure(path: Path, quick: bool = False) -> dict:
    c = curves(path)
    out = {}
    for ref, run, ratio in zip(REFERENCES[:4], ("ridgeless", "ridgeless", "ridgeless", "ridge"), (0.4, 3, 10, 1)):
        value = _at(c[run], ratio)
        if not math.isnan(value):
            out[ref.quantity] = value
    deviations = [abs(m / t - 1) for run in RUNS for x, m, t in zip(c[run][0], c[run][1], c[run][3])
                  if abs(x - 1) >= AWAY]
    out[REFERENCES[4].quantity] = max(deviations)
    out[REFERENCES[5].quantity] = _at(c["ridgeless"], 1.0) / _at(c["ridgeless"], 10.0)
    xs, mean, sem, _ = c["ridge"]
    # a peak: R rises from one N/n to the next by more than twice the standard errors of both
    margin = 2 * np.hypot(np.nan_to_num(sem[1:]), np.nan_to_num(sem[:-1]))
    out[REFERENCES[6].quantity] = "peak" if np.any(np.diff(mean) > margin) else "no peak"
    return out


def draw(path: Path, figure: Path) -> Path:
    from matplotlib.figure import Figure

    from ..pictures.figures import check_figure_path, save_figure

    figure = check_figure_path(figure)
    from ..sweeps.table import read_table

    s = _settings(read_table(path))
    c = curves(path)
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    dense = np.geomspace(min(c["ridgeless"][0].min(), 0.1), max(c["ridgeless"][0].max(), 10), 400)
    for i, run in enumerate(RUNS):
        xs, mean, sem, _ = c[run]
        theory = [rf_test_error(x * s["n"] / s["d"], s["n"] / s["d"], lam=s["lam"][run], F1=s["F1"], tau=s["tau"])
                  for x in dense]
        label = "ridgeless" if run == "ridgeless" else f"ridge, lambda = {s['lam'][run]:g}"
        ax.plot(dense, theory, "-", color=f"C{i}", lw=1.2, label=f"Mei & Montanari, {label}")
        ax.errorbar(xs, mean, yerr=np.nan_to_num(sem), fmt="o", color=f"C{i}", capsize=3,
                    label=f"ntk run, empirical kernel, lr_w 0 ({label})")
        for x, value in zip(xs, mean):
            if value > TOP:  # off the axes (the ridgeless point at N = n): a marker at the top, and its value
                ax.plot([x], [TOP / 1.3], "^", color=f"C{i}")
                ax.annotate(f"R = {value:.2g}", (x, TOP / 1.3), xytext=(6, -4), textcoords="offset points",
                            fontsize="small", color=f"C{i}")
    ax.axvline(1.0, color="0.6", ls=":", lw=1)
    ax.set(xscale="log", yscale="log", ylim=(0.08, TOP), xlabel="N / n (features per sample)",
           ylabel="test error R (noise excluded)",
           title=f"random features, relu, d = {s['d']}, n = {s['n']}, tau = {s['tau']:g}")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left")
    return save_figure(fig, figure)


def _quick(raw: dict) -> None:
    raw["grid"] = {"model.width": [240, 600, 1800, 6000], "seed": [0, 1, 2]}


def run(quick: bool, directory: Path, workers=None, resume: bool = False) -> Path:
    return run_sweep_into(reduced_sweep(NAME, _quick) if quick else NAME, directory, quick, workers, resume)


STUDIES = (Study(
    name=NAME, title="random-features double descent: ridgeless peak at N = n, removed by a ridge",
    citation="Mei & Montanari (2019), The generalization error of random features regression: precise asymptotics "
             "and double descent curve, arXiv 1908.05355 (relu: mu_1 = 1/2, mu_* = 0.3014)",
    kind="sweep", source=NAME, references=REFERENCES, run_study=run, measure=measure, draw=draw,
    full_time="84 points, 120 s"),)
