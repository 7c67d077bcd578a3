"""Chizat & Bach (2020), the implicit bias of the logistic loss for wide two-layer relu
networks: trained on both layers, the normalised network converges to the F1 (variation-norm)
max-margin classifier; trained on the output layer alone, to the F2 (kernel) one; in their
clusters task with d - 3 spurious coordinates the first keeps its test error as d grows and
the second does not.

Two bundled files, their headers the setup: the scenario ``scenarios/implicit_bias.yaml``
(d = 3, n = 64, to t = 1e24 on a logarithmic clock: the margins against time and the
particles) and the sweep ``scenarios/sweeps/implicit_bias.yaml`` (d = 3..25, n = 256, to
t = 1e10: the test error against d). The references are computed here, independently of the
runs (meanfield.analysis.max_margin): gamma_F1 / 2 by the LP over neuron directions on S^2 for
``both``, the hard-margin SVM of the ``output`` run's own features (its fixed first layer) and
of the arc-cosine kernel (m -> infinity). The study's directory holds the sweep and, beside its
points, the scenario's file MARGINS. The reduced check: m = 64, the scenario with n = 32 to
t = 1e8, the sweep with n = 64 at d = 3 and 10 to t = 1e5.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from .base import Reference, Study, reduced_sweep, run_sweep_into

NAME = "implicit_bias"
MARGINS = "margins.h5"
"""The scenario's trajectory file, in the study's directory."""
AXIS = "data.dim"
RUNS = ("both", "output")
CLOSE = 0.05
"""A normalised margin is 'within 5%' of its reference from the first snapshot where
|margin / reference - 1| <= CLOSE (and stays there)."""

REFERENCES = (
    Reference("both layers: normalised margin at t_end / (F1 max margin / 2, LP), d = 3", 1.0, tolerance=0.05,
              quick_tolerance=0.25),
    Reference("output layer: normalised margin at t_end / F2 max margin of its features (SVM), d = 3", 1.0,
              tolerance=0.05, quick_tolerance=0.25),
    Reference("output layer: test error at the largest d - at d = 3 (the kernel classifier degrades)", "> 0.05",
              quick=False),
    Reference("both layers: test error at the largest d - at d = 3 (F1 ignores spurious coordinates)", "< 0.05",
              quick=False),
    Reference("test error at the largest d, both layers / output layer", "< 1"),
)


def test_error(f, y) -> float:
    """The share of points with y f(x) <= 0."""
    return float(np.mean(np.asarray(y) * np.asarray(f) <= 0))


def _within(times, ratios, close: float = CLOSE) -> float:
    """The first snapshot time from which |ratio - 1| <= close holds to the end (NaN if never)."""
    bad = np.flatnonzero(np.abs(np.asarray(ratios) - 1) > close)
    if bad.size == 0:
        return float(times[0])
    return float(times[bad[-1] + 1]) if bad[-1] + 1 < len(times) else math.nan


def point_results(trajectory, f1: bool) -> dict:
    """One point's numbers: per run the times, the normalised margins and the test error at the
    end; the references (F2 of the output run's features and of the arc-cosine kernel, and
    with ``f1`` gamma_F1 / 2 by the LP)."""
    from ..analysis.max_margin import chizat_bach_f1_margin, f1_max_margin, relu_feature_kernel

    data = trajectory.data
    X, y = data.X_train, data.y_train
    out = {"runs": {}}
    for name in RUNS:
        run = trajectory[name]
        series = run.measure("normalized_margin")
        f_test = np.asarray(run.measure("f_test").values)[-1]
        out["runs"][name] = {"times": np.asarray(series["time"]), "margins": np.asarray(series.values),
                             "test_error": test_error(f_test, data.y_test)}
    W = trajectory["output"].frame(0).W
    features = np.maximum(X @ W.T, 0.0)
    m, d = W.shape
    w_var = float(trajectory.scenario.model.init.w_std) ** 2 / d
    out["f2_features"] = _svm_margin(features @ features.T / m, y)
    out["f2_kernel"] = _svm_margin(w_var * relu_feature_kernel(X), y)
    if f1:
        f1 = f1_max_margin(X, y, count=4000, refine=3)
        out["f1_half"], out["f1_atoms"] = chizat_bach_f1_margin(f1), f1.directions
    return out


def margins(directory) -> dict | None:
    """The :func:`point_results` of the scenario's file (with gamma_F1 / 2), None without one."""
    import meanfield as mf

    path = Path(directory) / MARGINS
    if not path.exists():
        return None
    with mf.open(path) as trajectory:
        return point_results(trajectory, f1=True) if trajectory.complete else None


def _svm_margin(K, y) -> float:
    """The hard-margin SVM's margin, NaN where the kernel does not separate the data (m < n
    features may not)."""
    from ..analysis.max_margin import f2_max_margin

    try:
        return f2_max_margin(K, y).margin
    except ValueError:
        return math.nan


def per_dimension(directory) -> dict[int, list[dict]]:
    """d -> the :func:`point_results` of the sweep's complete points (no LP)."""
    import meanfield as mf

    results = mf.open_sweep(directory)
    found = defaultdict(list)
    for _, row in results.table.iterrows():
        if str(row["status"]) != "complete":
            continue
        d = int(row[AXIS])
        with results.trajectory(row["point"]) as trajectory:
            found[d].append(point_results(trajectory, f1=False))
    return dict(sorted(found.items()))


def ratios(point: dict) -> dict[str, np.ndarray]:
    """Each run's normalised margin over its reference against time: both / (gamma_F1 / 2),
    output / the F2 max margin of its features."""
    out = {"both": point["runs"]["both"]["margins"] / point["f1_half"]} if "f1_half" in point else {}
    out["output"] = point["runs"]["output"]["margins"] / point["f2_features"]
    return out


def summary(directory) -> str:
    """The margins beside their references (and when they came within 5%) and the test errors
    against d, as text."""
    table = per_dimension(directory)
    lines = []
    scenario = margins(directory)
    sources = ([("scenario, d = 3", scenario)] if scenario else []) + [
        (f"sweep, d = {d:>2}", point) for d, points in table.items() for point in points]
    if sources:
        for where, point in sources:
            r = ratios(point)
            for name in RUNS:
                run = point["runs"][name]
                text = (f"{where} {name:>6}: test error {run['test_error']:.3f}, "
                        f"normalised margin {run['margins'][-1]:.5g}")
                if name in r:
                    ref = point["f1_half"] if name == "both" else point["f2_features"]
                    text += (f" / reference {ref:.5g} = {r[name][-1]:.4f} at t = {run['times'][-1]:.3g}"
                             f" (within 5% from t = {_within(run['times'], r[name]):.3g})")
                lines.append(text)
            lines.append(f"{' ' * len(where)}         F2 max margin: its features {point['f2_features']:.5g}, "
                         f"the arc-cosine kernel (m -> inf) {point['f2_kernel']:.5g}")
    return "\n".join(lines)


def _mean_error(table: dict, d: int, run: str) -> float:
    return float(np.mean([point["runs"][run]["test_error"] for point in table[d]]))


def measure(path: Path, quick: bool = False) -> dict:
    table, scenario = per_dimension(path), margins(path)
    measured = {}
    if scenario is not None:
        r = ratios(scenario)
        measured.update({REFERENCES[0].quantity: float(r["both"][-1]), REFERENCES[1].quantity: float(r["output"][-1])})
    largest = max(table, default=3)
    if 3 in table and largest > 3:
        measured[REFERENCES[2].quantity] = _mean_error(table, largest, "output") - _mean_error(table, 3, "output")
        measured[REFERENCES[3].quantity] = _mean_error(table, largest, "both") - _mean_error(table, 3, "both")
        output = _mean_error(table, largest, "output")
        measured[REFERENCES[4].quantity] = _mean_error(table, largest, "both") / output if output > 0 else math.nan
    return measured


def draw(path: Path, figure: Path) -> Path:
    """Three panels: the normalised margins over their references against time (d = 3), the
    test errors against d, and the both-layers run's neurons at the end (d = 3) as directions
    of the plane weighted by |a_j| |w_j| (Chizat & Bach's picture of the F1 solution's few atoms)."""
    from matplotlib.figure import Figure

    import meanfield as mf

    from ..pictures.figures import save_figure

    table, point = per_dimension(path), margins(path)
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    left, middle, right = fig.subplots(1, 3)
    if point is not None:
        for name, ratio in ratios(point).items():
            times = point["runs"][name]["times"]
            keep = times > 0
            reference = "F1 max margin / 2 (LP)" if name == "both" else "F2 max margin (SVM, its features)"
            left.semilogx(times[keep], ratio[keep], "o-", ms=3, color="C0" if name == "both" else "C1",
                          label=f"{name}: / {reference}")
        left.axhline(1, color="gray", lw=1)
        left.axhspan(1 - CLOSE, 1 + CLOSE, color="gray", alpha=0.15)
    left.set(xlabel="t", ylabel="normalised margin / reference", title="margins at d = 3 (5% band grey)",
             ylim=(0, 1.1))
    left.legend(fontsize=7)
    dims = list(table)
    for name in RUNS:
        middle.plot(dims, [_mean_error(table, d, name) for d in dims], "o-", label=f"{name} layer" + ("s" if name ==
                                                                                                      "both" else ""))
    middle.set(xlabel="d", ylabel="test error", title="test error against d (spurious coordinates d - 3)")
    middle.legend(fontsize=8)
    if point is not None:
        with mf.open(Path(path) / MARGINS) as trajectory:
            _draw_neurons(right, trajectory, point["f1_atoms"])
    return save_figure(fig, Path(figure))


def _angles(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The direction of each w = (w_0, w_1, w_2) in degrees: the angle of (w_1, w_2) and the
    elevation of w_0 (the bias coordinate, x_0 = 1)."""
    return (np.degrees(np.arctan2(W[:, 2], W[:, 1])),
            np.degrees(np.arctan2(W[:, 0], np.linalg.norm(W[:, 1:3], axis=1))))


def _draw_neurons(ax, trajectory, atoms: np.ndarray) -> None:
    """The both-layers run's neurons at t = 0 and at the end, each at its direction (the angle
    of (w_1, w_2), the elevation of the bias w_0), its area the mass |a_j| |w_j| the F1 norm
    counts; crosses: the directions of the LP's F1 max-margin solution, found independently."""
    for index, style in ((0, "C7"), (-1, "C3")):
        frame = trajectory["both"].frame(index)
        mass = np.abs(frame.a) * np.linalg.norm(frame.W, axis=1)
        ax.scatter(*_angles(frame.W), s=400 * mass / mass.max(), c=style, alpha=0.6,
                   label="t = 0" if index == 0 else f"t = {trajectory['both'].t:.3g}")
    ax.scatter(*_angles(atoms), marker="x", s=60, c="k", label="the LP's F1 atoms")
    ax.set(xlabel="angle of (w_1, w_2), degrees", ylabel="elevation of w_0 (the bias), degrees",
           title="neurons (size: |a_j| |w_j|), both layers, d = 3")
    ax.legend(fontsize=8)


QUICK_SCENARIO = {"data.n_train": 32, "data.n_test": 500, "model.width": 64, "train.t_end": 1.0e8,
                  "record.per_decade": 2}


def _quick(raw: dict) -> None:
    base = raw["base"]
    base["data"].update(n_train=64, n_test=500)
    base["model"]["width"] = 64
    base["train"]["t_end"] = 1.0e5
    raw["grid"] = {AXIS: [3, 10]}


def run(quick: bool, directory: Path, workers=None, resume: bool = False) -> Path:
    """The sweep into ``directory``, then the scenario into its MARGINS (kept when complete and
    ``resume``)."""
    import meanfield as mf

    directory = run_sweep_into(reduced_sweep(NAME, _quick) if quick else NAME, directory, quick, workers, resume)
    path = directory / MARGINS
    if not (resume and path.exists() and margins(directory) is not None):
        scenario = mf.load_scenario(NAME, QUICK_SCENARIO if quick else ())
        mf.simulate(scenario, path, overwrite=True, threads=1 if quick else None).close()
    return directory


STUDIES = (Study(
    name=NAME, title="implicit bias of the logistic loss: F1 and F2 max margins, and the test error against d",
    citation="Chizat & Bach (2020), Implicit bias of gradient descent for wide two-layer neural networks trained "
             "with the logistic loss, COLT (arXiv 2002.04486): the limits of the normalised margin (F1 max margin, "
             "both layers; F2, the output layer) and their numerical test error against d (the thresholds 0.05 "
             "are ours: the paper shows curves)",
    kind="sweep", source=NAME, references=REFERENCES, run_study=run, measure=measure, draw=draw,
    full_time="5 points and a scenario, 11.5 min (4 min of CPU)"),)
