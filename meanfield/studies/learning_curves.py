"""Learning curves of kernel regression against their closed form (the bundled sweep
``scenarios/sweeps/learning_curves.yaml``): the test error E_g of the ``ntk`` runs' t -> infinity
limit (ridgeless regression with the analytic NTK, ``loss_test_limit`` = E_g / 2 without label
noise) against n, beside the theory of Bordelon, Canatar & Pehlevan (2020) computed from the
same kernel's spectrum on the sphere and each seed's teacher (docs/design.md §1.10), and the rich
(mean-field) runs of the same scenarios.

For each point: the NTK the run used, as a function of the cosine (unit-sphere inputs; the
weights of the run's own parameterization, as :meth:`meanfield.engine.runs.KernelFlow.kernels`
takes them), its Funk-Hecke spectrum up to the degree L whose harmonics number at least
100 n_max (at least 20), the kernel's trace beyond L as an effective ridge, the teacher's
energy per degree (exact), and the theory's E_g at that n. Per n the means over the seeds
(the theory averaged over the seeds' teachers as the measurement is); the exponents are
least-squares slopes of log E_g on log n over the n in :data:`FIT_RANGE`. The reduced check
runs n = 40, 160, 640 with two seeds and a short rich run.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from .base import Reference, Study, reduced_sweep, run_sweep_into

NAME = "learning_curves"
AXIS = "data.n_train"
FIT_RANGE = (160, 2560)
"""The n over which the exponents are fitted (the quick check: its 160 and 640)."""
DEGREES_DRAWN = 6
"""The figure's right panel: the theory's error per degree for l = 0..6 (the odd l >= 3 of a
relu teacher are 0 and left out)."""
ASYMPTOTIC_N = (1e5, 1e6)
"""Where the theory's own local exponent is compared with the power law's -3/(d-1)."""

REFERENCES = (
    Reference("E_g ntk / theory, n = 40 (mean of the seeds)", 1.0, tolerance=0.3),
    Reference("E_g ntk / theory, n = 160", 1.0, tolerance=0.15, quick_tolerance=0.3),
    Reference("E_g ntk / theory, n = 640", 1.0, tolerance=0.15, quick_tolerance=0.3),
    Reference("E_g ntk / theory, n = 2560", 1.0, tolerance=0.15, quick=False),
    Reference("exponent of E_g in n, ntk runs - theory's, same n", 0.0, tolerance=0.1, quick_tolerance=0.2),
    Reference("exponent of the theory as n -> inf (-3/(d-1): lambda_l ~ l^-d, c_l ~ l^-4)", -0.75, tolerance=0.03,
              checked=False),
    Reference("exponent of E_g in n, rich runs - ntk runs' (rich learns faster)", "< 0", quick=False, checked=False),
)


def ntk_function(attrs: dict, bias: bool, activation: str):
    """The analytic NTK of a run (its resolved numbers ``attrs``) as a function of the cosine
    t between two unit inputs: :func:`solvers.ntk.analytic_kernels` at (e_1, t e_1 + sqrt(1 -
    t^2) e_2), with the weights c s^2 m eta of :meth:`meanfield.engine.runs.KernelFlow.kernels`."""
    from solvers.ntk import analytic_kernels

    weight = attrs["loss_scale"] * attrs["s"] ** 2 * attrs["width"]

    def k(t):
        t = np.clip(np.asarray(t, dtype=np.float64), -1.0, 1.0)
        others = np.stack([t, np.sqrt(1.0 - t * t)], axis=1)
        _, K = analytic_kernels(np.array([[1.0, 0.0]]), others, act=activation, w_var=attrs["w_std"] ** 2,
                                b_var=attrs["b_std"] ** 2 if bias else 0.0, a_var=attrs["a_std"] ** 2,
                                eta_a=weight * attrs["eta_a"], eta_w=weight * attrs["eta_w"], bias=bias)
        return K[0]

    return k


def degree_for(d: int, n_max: float) -> int:
    """The smallest L >= 20 whose harmonics of degree <= L number at least 100 n_max."""
    from ..analysis.spectrum import degeneracy

    L, count = 0, 0.0
    while count < 100 * n_max or L < 20:
        count += float(degeneracy(d, L))
        L += 1
    return L


def per_size(directory, quick: bool = False) -> dict[int, dict[str, list]]:
    """n -> lists over the seeds of ``ntk`` (E_g of the ntk limit), ``rich`` (E_g of the rich
    run at t_end) and ``theory`` (E_g predicted for that seed's teacher); E_g = 2 loss_test -
    sigma^2 (test labels carry the label noise sigma)."""
    import meanfield as mf

    from ..analysis.learning_curve import learning_curve
    from ..analysis.spectrum import kernel_spectrum, teacher_coefficients

    results = mf.open_sweep(directory)
    rows = [row for _, row in results.table.iterrows() if str(row["status"]) == "complete"]
    if not rows:
        return {}
    n_max = max(int(row[AXIS]) for row in rows)
    spectra, out = {}, defaultdict(lambda: defaultdict(list))
    for row in rows:
        with results.trajectory(row["point"]) as trajectory:
            scenario, teacher = trajectory.scenario, trajectory.teacher
            ntk, rich = trajectory["ntk"], trajectory["rich"] if "rich" in trajectory else None
            noise = scenario.data.noise ** 2
            d, n = scenario.data.dim, int(row[AXIS])
            key = (d, tuple(sorted((k, ntk.attrs[k]) for k in ("s", "eta_a", "eta_w", "a_std", "w_std", "b_std",
                                                                   "loss_scale", "width"))))
            if key not in spectra:
                k = ntk_function(ntk.attrs, scenario.model.bias, scenario.model.activation)
                spectra[key] = kernel_spectrum(k, d, degree_for(d, n_max))
            spectrum = spectra[key]
            c = teacher_coefficients(teacher.a, teacher.W, teacher.activation, len(spectrum.eigenvalues) - 1)
            theory = learning_curve(n, spectrum.nonnegative(), spectrum.degeneracies, c,
                                    noise=noise, tail=max(spectrum.tail, 0.0))
            out[n]["ntk"].append(2 * ntk.constants["loss_test_limit"] - noise)
            out[n]["theory"].append(float(theory.error))
            if rich is not None:
                out[n]["rich"].append(2 * rich.final()["loss_test"] - noise)
    return {n: dict(values) for n, values in sorted(out.items())}


def exponent(sizes, values, low: float, high: float) -> float:
    """The least-squares slope of log(values) on log(n) for low <= n <= high (NaN below two sizes)."""
    sizes, values = np.asarray(sizes, dtype=float), np.asarray(values, dtype=float)
    keep = (sizes >= low) & (sizes <= high) & (values > 0)
    if keep.sum() < 2:
        return math.nan
    return float(np.polyfit(np.log(sizes[keep]), np.log(values[keep]), 1)[0])


def theory_exponent_at_infinity(directory) -> float:
    """The theory's local exponent d log E_g / d log n between :data:`ASYMPTOTIC_N`, for the
    first point's kernel and teacher (L from :func:`degree_for` at the largest n there)."""
    import meanfield as mf

    from ..analysis.learning_curve import learning_curve
    from ..analysis.spectrum import kernel_spectrum, teacher_coefficients

    results = mf.open_sweep(directory)
    rows = [row for _, row in results.table.iterrows() if str(row["status"]) == "complete"]
    with results.trajectory(rows[0]["point"]) as trajectory:
        scenario, teacher, attrs = trajectory.scenario, trajectory.teacher, trajectory["ntk"].attrs
    d = scenario.data.dim
    spectrum = kernel_spectrum(ntk_function(attrs, scenario.model.bias, scenario.model.activation), d,
                               degree_for(d, ASYMPTOTIC_N[1]))
    c = teacher_coefficients(teacher.a, teacher.W, teacher.activation, len(spectrum.eigenvalues) - 1)
    curve = learning_curve(np.array(ASYMPTOTIC_N), spectrum.nonnegative(), spectrum.degeneracies, c,
                           tail=max(spectrum.tail, 0.0))
    return float(np.diff(np.log(curve.error))[0] / np.diff(np.log(ASYMPTOTIC_N))[0])


def _means(table: dict, name: str) -> tuple[list, list]:
    sizes = [n for n in table if table[n].get(name)]
    return sizes, [float(np.mean(table[n][name])) for n in sizes]


def measure(path: Path, quick: bool = False) -> dict:
    table = per_size(path, quick)
    if not table:
        return {}
    out = {}
    for ref, n in zip(REFERENCES[:4], (40, 160, 640, 2560)):
        if n in table:
            out[ref.quantity] = float(np.mean(table[n]["ntk"]) / np.mean(table[n]["theory"]))
    low, high = FIT_RANGE
    sizes, ntk = _means(table, "ntk")
    _, theory = _means(table, "theory")
    ntk_exponent = exponent(sizes, ntk, low, high)
    out[REFERENCES[4].quantity] = ntk_exponent - exponent(sizes, theory, low, high)
    out[REFERENCES[5].quantity] = theory_exponent_at_infinity(path)
    if not quick:
        rich_sizes, rich = _means(table, "rich")
        if rich_sizes:
            out[REFERENCES[6].quantity] = exponent(rich_sizes, rich, low, high) - ntk_exponent
    return out


def format_sizes(table: dict) -> str:
    """The table of :func:`per_size`: means and standard errors over the seeds, and the exponents."""
    lines = [f"{'n':>6}  {'theory':>10}  {'ntk':>10}  {'+-':>9}  {'ntk/theory':>10}  {'rich':>10}  {'+-':>9}"]
    for n, row in table.items():
        ntk, rich = np.asarray(row["ntk"]), np.asarray(row.get("rich", [math.nan]))
        lines.append(f"{n:6d}  {np.mean(row['theory']):10.4g}  {ntk.mean():10.4g}  {_se(ntk):9.2g}  "
                     f"{ntk.mean() / np.mean(row['theory']):10.3f}  {rich.mean():10.4g}  {_se(rich):9.2g}")
    low, high = FIT_RANGE
    slopes = {name: exponent(*_means(table, name), low, high) for name in ("theory", "ntk", "rich")}
    lines.append(f"exponents of E_g in n for {low} <= n <= {high}: "
                 + ", ".join(f"{name} {value:+.3f}" for name, value in slopes.items()))
    return "\n".join(lines)


def _se(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan


def draw_sizes(table: dict, path, curve=None) -> Path:
    """E_g against n, log-log: the theory (mean over the seeds' teachers; on a fine grid where
    ``curve`` = :func:`theory_curve`'s (n, E_g, E_l / c_l) is given, else at the sweep's n), the
    ntk limit and the rich runs (means over the seeds, standard errors), with the fitted
    exponents; with ``curve``, beside it the theory's error per degree relative to its energy
    against n (Bordelon et al.'s spectral principle: the degrees are learnt in order)."""
    from matplotlib.figure import Figure

    from ..pictures.figures import save_figure

    low, high = FIT_RANGE
    fig = Figure(figsize=(10, 4.0) if curve is not None else (5.2, 4.0), layout="constrained")
    ax, right = fig.subplots(1, 2) if curve is not None else (fig.subplots(), None)
    sizes, theory = _means(table, "theory")
    line = curve[:2] if curve is not None else (sizes, theory)
    ax.loglog(*line, "-", color="k", lw=1.5,
              label=f"theory (Bordelon et al. 2020), slope {exponent(sizes, theory, low, high):+.2f}")
    for name, color, marker in (("ntk", "tab:orange", "o"), ("rich", "tab:blue", "s")):
        sizes, means = _means(table, name)
        if not sizes:
            continue
        errors = [_se(table[n][name]) for n in sizes]
        label = "NTK regression (t -> inf)" if name == "ntk" else "rich (mean-field, t = t_end)"
        ax.errorbar(sizes, means, yerr=np.nan_to_num(errors), fmt=marker, ms=4, color=color, capsize=2,
                    label=f"{label}, slope {exponent(sizes, means, low, high):+.2f}")
    ax.set(xlabel="n (training samples)", ylabel="test error E_g = E (f - f*)^2",
           title="learning curves on the sphere")
    ax.legend(fontsize=7)
    if right is not None:
        grid, _, shares = curve
        for degree in range(shares.shape[1]):
            if degree < 3 or degree % 2 == 0:
                right.semilogx(grid, shares[:, degree], label=f"l = {degree}")
        right.set(xlabel="n (training samples)", ylabel="E_l / c_l, theory (> 1: amplified by 1/(1 - gamma))",
                  title="the degrees learnt one after another")
        right.legend(fontsize=7)
    return save_figure(fig, Path(path))


def theory_curve(directory, points: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The theory on a log grid of ``points`` n across the sweep's sizes, averaged over the
    teachers of the seeds (one complete point per seed; the kernel of the first): ``(n, E_g,
    E_l / c_l)``, the last for the degrees l <= :data:`DEGREES_DRAWN` (the fraction of each
    degree's energy not yet learnt)."""
    import meanfield as mf

    from ..analysis.learning_curve import learning_curve
    from ..analysis.spectrum import kernel_spectrum, teacher_coefficients

    results = mf.open_sweep(directory)
    rows = [row for _, row in results.table.iterrows() if str(row["status"]) == "complete"]
    sizes = [int(row[AXIS]) for row in rows]
    grid = np.geomspace(min(sizes), max(sizes), points)
    curves, shares, spectrum, seen = [], [], None, set()
    for row in rows:
        with results.trajectory(row["point"]) as trajectory:
            scenario, teacher = trajectory.scenario, trajectory.teacher
            if (scenario.seed, scenario.data.seed) in seen:
                continue
            seen.add((scenario.seed, scenario.data.seed))
            if spectrum is None:
                d = scenario.data.dim
                k = ntk_function(trajectory["ntk"].attrs, scenario.model.bias, scenario.model.activation)
                spectrum = kernel_spectrum(k, d, degree_for(d, max(sizes)))
        c = teacher_coefficients(teacher.a, teacher.W, teacher.activation, len(spectrum.eigenvalues) - 1)
        curve = learning_curve(grid, spectrum.nonnegative(), spectrum.degeneracies, c,
                               noise=scenario.data.noise ** 2, tail=max(spectrum.tail, 0.0))
        curves.append(curve.error)
        shares.append(curve.by_group[:, :DEGREES_DRAWN + 1] / np.where(c > 0, c, np.inf)[:DEGREES_DRAWN + 1])
    return grid, np.mean(curves, axis=0), np.mean(shares, axis=0)


def draw(path: Path, figure: Path) -> Path:
    return draw_sizes(per_size(path), figure, theory_curve(path))


def _quick(raw: dict) -> None:
    raw["base"]["data"]["n_test"] = 1000
    raw["base"]["train"]["t_end"] = 50.0
    raw["base"]["record"]["every"] = 50.0
    raw["grid"] = {AXIS: [640, 160, 40], "seed": [0, 1]}


def run(quick: bool, directory: Path, workers=None, resume: bool = False) -> Path:
    return run_sweep_into(reduced_sweep(NAME, _quick) if quick else NAME, directory, quick, workers, resume)


STUDIES = (Study(
    name=NAME, title="learning curves of NTK regression on the sphere against the spectral theory, and a rich network",
    citation="Bordelon, Canatar & Pehlevan (2020), Spectrum dependent learning curves in kernel regression and "
             "wide neural networks, ICML (arXiv 2002.02561); Canatar, Bordelon & Pehlevan (2021), Nat. Commun. 12, "
             "2914 (arXiv 2006.13198)",
    kind="sweep", source=NAME, references=REFERENCES, run_study=run, measure=measure, draw=draw,
    full_time="36 points, 395 s"),)
