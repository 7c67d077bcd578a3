"""The catapult phases (docs/design.md §7.5, meanfield/analysis/catapult.py): the rule on
constructed trajectories, on the uv model iterated here in plain NumPy, the edges of a family
along c, and a reduced grid of the bundled sweep `catapult` (seconds): its runs are gradient
descent on the uv model with the exact step c * 2 / lambda_0 (against NumPy from the same
start), lazy below c = 1 and a catapult in (1, 2) at the largest reduced width."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import meanfield as mf
from meanfield.analysis import PhaseRow, catapult_phase, factor_key, phase_edges, phase_rows
from meanfield.cli import main
from meanfield.config.bundled import SWEEP_DIR
from meanfield.sweeps.execution import run_sweep
from meanfield.sweeps.grid import load_sweep, parse_sweep


# ------------------------------------------------------------------ the rule, constructed
def test_the_rule_on_constructed_trajectories():
    t = np.arange(50.0)
    decay = np.exp(-0.3 * t)
    flat = np.ones(50)
    assert catapult_phase(decay, flat, dt=0.9) == "lazy"
    assert catapult_phase(decay, 1 + 0.04 * np.sin(t), dt=0.9) == "lazy"  # within 5%
    assert catapult_phase(decay, 1 - 0.06 * t / 49, dt=0.9) == "undetermined"  # the kernel moved 6%
    bump = decay.copy()
    bump[5] = 2.0
    assert catapult_phase(bump, flat, dt=0.9) == "undetermined"  # rose, not 10x
    # a catapult: the loss rises 100x, comes back below its start, the kernel ends below 2 / dt
    spike = np.exp(-0.5 * ((t - 10) / 3) ** 2) * 100 + decay * 1e-3
    spike[0] = 1.0
    kernel = np.where(t < 10, 1.0, 0.4)
    assert catapult_phase(spike, kernel, dt=1.5 * 2 / 1.0) == "catapult"  # lambda_T dt = 1.2
    assert catapult_phase(spike, kernel, dt=2.6 / 0.4) == "undetermined"  # lambda_T dt = 2.6: not flat enough
    exactly = np.concatenate([[1.0], spike[1:] * 10 / spike.max()])
    assert catapult_phase(exactly, kernel, dt=3.0) == "undetermined"  # exactly 10x: not more
    # diverged: failed, non-finite, or the loss ends at or above its start
    assert catapult_phase(decay, flat, dt=0.9, failed=True) == "diverged"
    assert catapult_phase(np.append(decay, np.nan), np.append(flat, 1), dt=0.9) == "diverged"
    assert catapult_phase(np.exp(0.3 * t), flat, dt=0.9) == "diverged"
    assert catapult_phase(np.ones(5), np.ones(5), dt=0.9) == "diverged"  # L_T = L_0: did not converge
    with pytest.raises(ValueError, match="at t = 0 at least"):
        catapult_phase([], [], dt=1.0)


def uv_model(m: int, c: float, steps: int, seed: int = 0):
    """Gradient descent on Lewkowycz et al.'s uv model, f = v.u / sqrt(m) (x = 1, y = 0,
    L = f^2 / 2), at eta = c * 2 / lambda_0, lambda = (|u|^2 + |v|^2) / m: (L_t, lambda_t, eta)."""
    rng = np.random.default_rng(seed)
    u, v = rng.standard_normal(m), rng.standard_normal(m)
    lam0 = (u @ u + v @ v) / m
    eta = c * 2 / lam0
    losses, kernels = [], []
    with np.errstate(all="ignore"):
        for _ in range(steps + 1):
            f = v @ u / np.sqrt(m)
            losses.append(0.5 * f * f)
            kernels.append((u @ u + v @ v) / m)
            u, v = u - eta * f * v / np.sqrt(m), v - eta * f * u / np.sqrt(m)
    return np.array(losses), np.array(kernels), eta


@pytest.mark.parametrize("c, phase", [(0.5, "lazy"), (0.9, "lazy"), (1.3, "catapult"), (1.8, "catapult"),
                                      (2.2, "diverged"), (4.0, "diverged")])
def test_the_rule_names_the_published_phase_of_the_uv_model_at_large_width(c, phase):
    loss, kernel, eta = uv_model(4096, c, 400)
    assert catapult_phase(loss, kernel, eta) == phase
    if phase == "catapult":  # the kernel ends flatter: lambda_T < 2 / eta, i.e. lambda_T / lambda_0 < 1 / c
        assert kernel[-1] / kernel[0] < 1 / c


# ------------------------------------------------------------------------- the edges
def _row(c, phase, seed=0, width=256, run="uv"):
    return PhaseRow("p", run, {"model.width": width}, seed, c, c, 1.0, 1.0, 1.0, phase)


def test_edges_bracket_the_last_all_lazy_and_the_first_all_diverged_c():
    rows = [_row(c, p, s) for c, ps in [(0.5, "LL"), (0.9, "LU"), (1.5, "CC"), (2.5, "CD"), (3, "DD"), (4, "DD")]
            for s, p in enumerate(ps)]
    rows = [PhaseRow(r.point, r.run, r.group, r.seed, r.c, r.dt, r.peak, r.kernel_ratio, r.kernel_step,
                     {"L": "lazy", "U": "undetermined", "C": "catapult", "D": "diverged"}[r.phase]) for r in rows]
    (edges,) = phase_edges(rows)
    assert edges.lower == (0.5, 0.9) and edges.upper == (2.5, 3)
    assert edges.middle(edges.lower) == pytest.approx(0.7) and edges.middle(None) != edges.middle(None)
    assert edges.phases[2.5] == ["catapult", "diverged"]
    # nothing lazy, nothing diverged: neither edge is bracketed; two widths, two families
    other = phase_edges([_row(1.5, "catapult"), _row(1.9, "catapult"), _row(1.5, "lazy", width=512)])
    assert [(e.group["model.width"], e.lower, e.upper) for e in other] == [(256, None, None), (512, None, None)]


# ------------------------------------------------------------------ the bundled sweeps
@pytest.mark.slow
def test_the_catapult_sweeps_are_the_uv_model_and_a_relu_network_along_c():
    sweep = load_sweep("catapult")
    assert sweep.grid_keys == ["model.width", "train.integrator.dt_factor", "seed"]
    cs = sorted({p.coords["train.integrator.dt_factor"] for p in sweep.points})
    assert min(cs) == 0.5 and max(cs) == 8 and any(1 < c < 2 for c in cs)
    assert sorted({p.coords["model.width"] for p in sweep.points}) == [256, 1024, 4096]
    sc = sweep.points[0].scenario
    assert (sc.data.dim, sc.data.n_train, sc.model.activation, sc.data.inputs) == (1, 1, "linear", "sphere")
    assert sc.data.teacher.a == [0.0] and list(sc.runs) == ["uv"]  # y = 0: L = f^2 / 2
    assert sc.runs["uv"].parameterization.preset == "ntk" and sc.train.integrator.method == "euler"
    assert "ntk_eigenvalue_max" in sc.record.measures
    relu = load_sweep("catapult_relu")
    sc = relu.points[0].scenario
    assert (sc.model.activation, sc.data.dim, sc.data.teacher.activation, list(sc.runs)) == ("relu", 5, "relu", ["relu"])
    assert relu.grid_keys == sweep.grid_keys


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    """The bundled catapult sweep at two widths, five step factors, one seed, with particles."""
    raw = yaml.safe_load((SWEEP_DIR / "catapult.yaml").read_text())
    raw["grid"] = {"model.width": [64, 512], "train.integrator.dt_factor": [0.5, 0.9, 1.5, 1.9, 2.5],
                   "seed": [0]}
    raw["base"]["train"]["t_end"] = 150.0
    raw["base"]["record"]["every"] = 4.0
    raw["base"]["record"]["dtype"] = "float64"  # the stored start is the start itself
    raw["base"]["record"]["particles"] = True
    sweep = parse_sweep(yaml.safe_dump(raw, sort_keys=False), root=SWEEP_DIR, default_name="catapult")
    directory = tmp_path_factory.mktemp("catapult")
    result = run_sweep(sweep, directory, executor=ThreadPoolExecutor(1), threads=1)
    assert result.failed == 2  # c = 2.5 at both widths
    return directory


@pytest.mark.slow
def test_a_point_is_gradient_descent_on_the_uv_model_with_the_exact_step(reduced):
    with mf.open(reduced / "points" / "p0007.h5") as trajectory:  # m = 512, c = 1.5
        run = trajectory["uv"]
        assert run.attrs["integrator"]["dt_factor"] == 1.5
        frame = run.frame(0)
        u, v, x = frame.W[:, 0].astype(np.float64), frame.a.astype(np.float64), trajectory.data.X_train[0, 0]
        loss, times = run.measure("loss_train").values, run.measure("loss_train")["time"].values
        lam0, dt = run.attrs["lambda_0"], run.attrs["integrator"]["dt"]
    assert lam0 == pytest.approx((u @ u + v @ v) * x * x / 512, rel=1e-12) and dt == pytest.approx(1.5 * 2 / lam0)
    steps = np.rint(times / dt).astype(int)
    np.testing.assert_allclose(times, steps * dt, rtol=1e-12)  # snapshots at whole steps
    assert np.all(np.diff(steps) >= 1) and steps[-1] * dt >= 150.0 > (steps[-1] - 1) * dt
    want, s = [], np.sqrt(512)
    for k in range(steps[-1] + 1):
        f = v @ u * x / s
        want.append(0.5 * f * f)
        u, v = u - dt * f * v * x / s, v - dt * f * u * x / s
    want = np.array(want)[steps]
    assert want.max() > 100 * want[0]  # a catapult
    np.testing.assert_allclose(loss, want, rtol=1e-9, atol=1e-12 * want.max())


@pytest.mark.slow
def test_reduced_grid_is_lazy_below_one_and_a_catapult_between_one_and_two(reduced):
    rows = {(r.group["model.width"], r.c): r for r in phase_rows(reduced)}
    assert len(rows) == 10
    for c in (0.5, 0.9):
        assert rows[512, c].phase == "lazy"
    for c in (1.5, 1.9):
        assert rows[512, c].phase == "catapult"
        assert rows[512, c].kernel_ratio < 1 / c and rows[512, c].kernel_step < 2
    assert rows[512, 2.5].phase == rows[64, 2.5].phase == "diverged"
    edges = {e.group["model.width"]: e for e in phase_edges(list(rows.values()))}
    assert edges[512].lower == (0.9, 1.5) and edges[512].upper == (1.9, 2.5)


@pytest.mark.slow
def test_analyze_reports_the_edges_writes_phases_csv_and_draws_them(reduced, tmp_path):
    figure = tmp_path / "phases.png"
    result = CliRunner().invoke(main, ["analyze", str(reduced), "--phases-figure", str(figure)])
    assert result.exit_code == 0, result.output
    assert "phases along train.integrator.dt_factor = c" in result.output
    line = next(ln for ln in result.output.splitlines() if ln.startswith("512 "))
    assert "1.2 [0.9, 1.5]" in line and "2.2 [1.9, 2.5]" in line and "0.5:L" in line and "2.5:D" in line
    assert figure.stat().st_size > 10_000
    csv = (reduced / "phases.csv").read_text().splitlines()
    assert csv[0].startswith("point,run,model.width,seed,c,dt,peak") and len(csv) == 11


def test_a_phases_figure_needs_a_dt_factor_axis(tmp_path):
    text = yaml.safe_dump({"base": {"name": "q", "data": {"n_train": 8, "n_test": 8}, "model": {"width": 8},
                                    "runs": {"rich": "mean_field"},
                                    "train": {"t_end": 0.1, "integrator": {"method": "euler", "dt": 0.05}}},
                           "grid": {"model.width": [8, 16]}})
    directory = run_sweep(parse_sweep(text), tmp_path / "q", executor=ThreadPoolExecutor(1), threads=1).directory
    assert factor_key(directory) is None
    out = CliRunner().invoke(main, ["analyze", str(directory), "--phases-figure", str(tmp_path / "p.png")])
    assert out.exit_code == 2 and "--phases-figure needs a sweep with a dt_factor axis" in out.output
