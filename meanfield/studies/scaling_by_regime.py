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

The second part, the loss against time on a power-law target (Bordelon, Atanasov & Pehlevan
2025, "How feature learning can improve neural scaling laws", arXiv 2409.17858): the data task
``power_law`` on the circle (d = 2, unit inputs, degree-k energy E_k ~ k^-2 on the even k <= 256),
a bias-free relu network, ``lazy`` (the analytic NTK's flow, an ``ntk`` run) and ``rich`` (the
mean-field particles, m = 512, rk45), n = 2048 training points, the test loss on 4096 fresh ones
against t, three seeds (:data:`POWER_LAW`, run into ``power_law/`` of the study's directory). The
NTK's eigenvalue of degree k falls as k^-2 on the circle, so the target's source exponent is
beta = 1/2 (outside the kernel's RKHS: a hard task in their words). The lazy reference is the
closed form L(t) = 1/2 sum_k E_k exp(-2 lambda_k t) (:func:`meanfield.analysis.learning_curve.flow_loss`,
lambda_k the Funk-Hecke eigenvalues of the run's own kernel), t^-beta at large t; the exponents are
least-squares slopes of log loss on log t over every seed's snapshot in :data:`WINDOW`. Their
prediction for the feature-learning regime, chi = 2 beta/(1 + beta) = 2/3 for beta < 1 (and
chi = beta for beta > 1), is for their model (a linear two-layer network with projected
features, trained online), not ours (a relu network trained on all its weights on a fixed
training set): we compare with it within 0.1 (set before the run) and mark it unchecked (we read
the abstract and the caption of their Figure 1, not the formula's page). The reduced check: one
seed, n = 512, m = 128, t to 300 (window 30 to 300).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from .base import Reference, Study, reduced_sweep, run_sweep_into

NAME = "scaling_by_regime"
POWER_LAW_DIR = "power_law"
"""The power-law target's runs, one trajectory per seed, in this folder of the study's directory."""
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

BETA = 0.5
"""The power-law target's source exponent against the relu NTK on the circle: decay 1 / a = 2."""
SEEDS = (0, 1, 2)
"""The power-law target's seeds (each its own data, u and particles); the quick check: the first."""


def chi_rich(beta: float) -> float:
    """chi = beta max(1, 2/(1 + beta)): Bordelon, Atanasov & Pehlevan's exponent of L ~ t^-chi with
    feature learning (their Figure 1; 2 beta/(1 + beta) for the hard tasks beta < 1)."""
    return beta * max(1.0, 2.0 / (1.0 + beta))


POWER_LAW = {
    "name": "scaling_by_regime_power_law",
    "data": {"task": "power_law", "dim": 2, "n_train": 2048, "n_test": 4096,
             "power_law": {"decay": 2 * BETA, "max_degree": 256, "degrees": "even"}},
    "model": {"width": 512, "activation": "relu", "bias": False, "init": {"symmetric": True}},
    "loss": "squared",
    "runs": {"rich": {"solver": "particles", "parameterization": {"preset": "mean_field"}},
             "lazy": {"solver": "ntk", "kernel": "analytic", "parameterization": {"preset": "mean_field"}}},
    "train": {"t_end": 1000.0, "integrator": {"method": "rk45", "dt": 0.1, "rtol": 1.0e-4}},
    "record": {"every": 1.0, "clock": "log", "per_decade": 8, "particles": False},
}
"""The power-law target's scenario (the module's docstring); the seed is each run's. The exponents are
fitted over its last decade of time, t_end/10 <= t <= t_end."""


def _quick_power_law(scenario: dict) -> dict:
    """The reduced check's power-law scenario: n = 512, 1024 test points, m = 128, t to 300."""
    data = {**scenario["data"], "n_train": 512, "n_test": 1024}
    return {**scenario, "data": data, "model": {**scenario["model"], "width": 128},
            "train": {**scenario["train"], "t_end": 300.0}}

POWER_REFERENCES = (
    Reference("power law: lazy (ntk) loss / closed form 1/2 sum E_k exp(-2 lambda_k t), at the window's end",
              1.0, tolerance=0.15),
    Reference("power law: lazy exponent of the loss in t - the closed form's, same times", 0.0, tolerance=0.05),
    Reference(f"power law: rich exponent of the loss in t, chi = 2 beta/(1 + beta), beta = {BETA}",
              round(chi_rich(BETA), 4), tolerance=0.1, quick=False, checked=False),
    Reference("power law: rich exponent - lazy exponent (feature learning speeds up a hard task)", "> 0"),
)
REFERENCES = REFERENCES + POWER_REFERENCES


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


def power_law_curves(directory) -> list[dict]:
    """One row per power-law trajectory in ``directory``/power_law: its seed, the times t, the
    test loss of ``lazy`` and ``rich`` and the closed form at t (from the lazy run's own kernel:
    its Funk-Hecke eigenvalues to the target's highest degree, and the target's energies)."""
    import meanfield as mf

    from ..analysis.learning_curve import flow_loss
    from ..analysis.spectrum import kernel_spectrum
    from ..model.data import power_law_energies
    from .learning_curves import ntk_function

    rows = []
    for file in sorted((Path(directory) / POWER_LAW_DIR).glob("seed*.h5")):
        with mf.open(file) as trajectory:
            scenario, row = trajectory.scenario, {"seed": int(trajectory.scenario.seed)}
            for name in RUNS:
                loss = trajectory[name].measure("loss_test")
                row["t"], row[name] = np.asarray(loss["time"], dtype=float), np.asarray(loss.values, dtype=float)
            attrs = trajectory["lazy"].attrs
        energies = power_law_energies(scenario.data)
        kernel = ntk_function(attrs, scenario.model.bias, scenario.model.activation)
        spectrum = kernel_spectrum(kernel, scenario.data.dim, len(energies) - 1)
        row["closed"] = flow_loss(row["t"], spectrum.nonnegative(), energies)
        row["t_end"] = float(scenario.train.t_end)
        rows.append(row)
    return rows


def power_law_fits(curves: list[dict]) -> dict:
    """``lazy``, ``rich``, ``closed`` -> the power law of the loss against t fitted over every
    seed's snapshots in the last decade, t_end/10 <= t <= t_end."""
    from ..analysis.stats import power_law

    out = {}
    for name in (*RUNS, "closed"):
        t = np.concatenate([row["t"][(row["t"] >= row["t_end"] / 10) & (row["t"] <= row["t_end"])] for row in curves])
        loss = np.concatenate([row[name][(row["t"] >= row["t_end"] / 10) & (row["t"] <= row["t_end"])]
                               for row in curves])
        out[name] = power_law(t, loss)
    return out


def _measure_power_law(path: Path) -> dict:
    curves = power_law_curves(path)
    if not curves:
        return {}
    fitted = power_law_fits(curves)
    lazy, rich, closed = (-fitted[name].exponent for name in (*RUNS, "closed"))
    ratio = np.mean([row["lazy"][-1] / row["closed"][-1] for row in curves])
    values = (float(ratio), lazy - closed, rich, rich - lazy)
    return {ref.quantity: value for ref, value in zip(POWER_REFERENCES, values)}


def measure(path: Path, quick: bool = False) -> dict:
    return {**_measure_stripe(path), **_measure_power_law(path)}


def _measure_stripe(path: Path) -> dict:
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
    return "\n".join(lines + power_law_summary(directory))


def power_law_summary(directory) -> list[str]:
    """The power-law target's lines: the exponents of the loss in t with their 95% intervals,
    lazy and rich, beside the closed form's and Bordelon et al.'s, and lazy / closed form at t_end."""
    curves = power_law_curves(directory)
    if not curves:
        return []
    fitted = power_law_fits(curves)
    t_end = curves[0]["t_end"]

    def text(name):
        fit = fitted[name]
        return f"{-fit.exponent:.3f} [{-fit.exponent_ci[1]:.3f}, {-fit.exponent_ci[0]:.3f}]"

    ratios = ", ".join(f"{row['lazy'][-1] / row['closed'][-1]:.3f}" for row in curves)
    return [f"power law (d = 2, beta = {BETA}, {len(curves)} seeds): exponent of the test loss in t over "
            f"{t_end / 10:g} <= t <= {t_end:g}",
            f"  lazy {text('lazy')}, closed form {text('closed')} (beta = {BETA} as t -> inf); lazy / closed form at "
            f"t = {t_end:g}: {ratios}",
            f"  rich {text('rich')}, Bordelon, Atanasov & Pehlevan's 2 beta/(1 + beta) = {chi_rich(BETA):.3f}"]


def draw(path: Path, figure: Path) -> Path:
    """One panel per d: the test error against p (log-log), each seed's point and the mean,
    lazy and rich, with the fitted power laws and the published slopes."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    from ..pictures.figures import save_figure

    rows = points(path)
    fitted = fits(rows)
    dims = sorted({row["d"] for row in rows})
    curves = power_law_curves(path)
    panels = max(len(dims) + bool(curves), 1)
    fig = Figure(figsize=(5.5 * panels, 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, panels))
    if curves:
        _draw_power_law(axes[-1], curves)
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


def _draw_power_law(ax, curves: list[dict]) -> None:
    """The power-law target's test loss against t (log-log), every seed, lazy, rich and the closed
    form, with the fitted slopes over the last decade and Bordelon et al.'s 2 beta/(1 + beta)."""
    fitted = power_law_fits(curves)
    labels = {"lazy": "lazy (ntk)", "rich": "rich (mean field)", "closed": "closed form"}
    for colour, name in (("C1", "lazy"), ("C0", "rich"), ("k", "closed")):
        for i, row in enumerate(curves):
            keep = row["t"] > 0
            fit = fitted[name]
            label = f"{labels[name]}: slope {fit.exponent:.2f}" if i == 0 else None
            ax.loglog(row["t"][keep], row[name][keep], "--" if name == "closed" else "-", color=colour, lw=1,
                      alpha=0.8, label=label)
    t_end = curves[0]["t_end"]
    window = np.array([t_end / 10, t_end])
    anchor = fitted["rich"].prefactor * window[0] ** fitted["rich"].exponent
    ax.loglog(window, anchor * (window / window[0]) ** -chi_rich(BETA), ":", color="C0", lw=2,
              label=f"Bordelon et al.: slope {-chi_rich(BETA):.2f}")
    ax.set(xlabel="t", ylabel="test loss", title=f"power-law target on the circle, beta = {BETA}")
    ax.legend(fontsize=8)


def _quick(raw: dict) -> None:
    raw["base"]["data"]["n_test"] = 2000
    raw["base"]["train"]["t_end"] = 1.0e4
    raw["grid"] = {"data.dim": [2], "data.n_train": [256, 96, 32]}


def run(quick: bool, directory: Path, workers=None, resume: bool = False) -> Path:
    path = run_sweep_into(reduced_sweep(NAME, _quick) if quick else NAME, directory, quick, workers, resume)
    run_power_law(path, quick, resume)
    return path


def run_power_law(directory: Path, quick: bool = False, resume: bool = False) -> Path:
    """The power-law target's runs, one file per seed, into ``directory``/power_law (``resume``:
    a seed whose file is there already is continued from its checkpoints, or kept when complete)."""
    import meanfield as mf

    folder = Path(directory) / POWER_LAW_DIR
    folder.mkdir(parents=True, exist_ok=True)
    scenario = _quick_power_law(POWER_LAW) if quick else POWER_LAW
    for seed in SEEDS[:1] if quick else SEEDS:
        output = folder / f"seed{seed}.h5"
        mf.simulate({**scenario, "seed": seed}, output=output, resume=resume and output.exists())
    return folder


STUDIES = (Study(
    name=NAME, title="stripe model, hinge loss: test error against p, and a power-law target: loss against t, "
                     "lazy (NTK) against rich (mean field)",
    citation="Paccolat, Petrini, Geiger, Tyloo & Wyart (2021), Geometric compression of invariant manifolds in "
             "neural nets (arXiv 2007.11471): epsilon ~ p^-beta, beta_lazy = d/(3d-2), "
             "beta_feature = (2d-1)/(3d-2) (the tolerances 0.15 are ours, set before the run); Bordelon, Atanasov "
             "& Pehlevan (2025), How feature learning can improve neural scaling laws (arXiv 2409.17858): "
             "L ~ t^-chi, chi = 2 beta/(1 + beta) with feature learning for beta < 1 (unchecked)",
    kind="sweep", source=NAME, references=REFERENCES, run_study=run, measure=measure, draw=draw,
    full_time="30 points, 477 s; power law 3 runs, about 100 s"),)
