"""The bundled scale studies (scenarios/sweeps/chizat_oyallon_bach.yaml, single_index_samples.yaml):
they parse and validate, their grids are what their headers say, and reduced grids reproduce
the headline of each (a few seconds):

- Chizat, Oyallon & Bach: our lazy runs are their GD (against a NumPy transcription of it,
  from the same start, to rounding); the test loss grows with the scale tau to the ntk run's,
  and the first layer's relative change falls like tau^-2 in the lazy range;
- single index: at d = 16 and n = 256 the mean-field network beats NTK regression, and both
  learn the target at n = 1024.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import yaml

import meanfield as mf
from meanfield.config.bundled import SWEEP_DIR
from meanfield.model.parameterization import resolve
from meanfield.sweeps.execution import run_sweep
from meanfield.sweeps.grid import load_sweep, parse_sweep
from meanfield.sweeps.table import read_table

DIMS = [16, 32, 64]
N_TRAIN = [8192, 4096, 2048, 1024, 512, 256, 128]


TAUS = [float(f"{10 ** (k / 10):.4g}") for k in range(-22, 11)]
"""Chizat, Oyallon & Bach's scales of the initialization, 10^(-2.2:0.1:1), as the sweep labels them."""


def test_chizat_oyallon_bach_is_their_setup_on_their_tau_grid():
    sweep = load_sweep("chizat_oyallon_bach")
    assert sweep.grid_keys == ["runs.lazy.parameterization", "seed"]
    assert len(sweep.points) == len(TAUS) * 2
    assert sorted({p.coords["runs.lazy.parameterization"] for p in sweep.points}) == TAUS
    for point in sweep.points:
        sc, tau = point.scenario, point.coords["runs.lazy.parameterization"]
        m, d = sc.model.width, sc.data.dim
        assert (m, d, sc.data.n_train, sc.data.n_test) == (50, 100, 1000, 1000)
        assert sc.data.inputs == "unit_sphere" and sc.model.init.symmetric  # |x| = 1, f_0 = 0
        teacher = sc.data.teacher
        assert (teacher.width, teacher.activation, teacher.a, teacher.W) == (3, "relu", "random_sign", "random")
        assert sorted(sc.runs) == ["lazy", "ntk"] and sc.runs["ntk"].kernel == "empirical"
        # their steps: eta = min(10, 0.1 / tau^2) on (b, A) = tau (a, w), 10^4 of them (the mapping in the header)
        lazy = resolve(sc.runs["lazy"].parameterization, sc.model, d)
        eta = min(10.0, 0.1 / tau**2)
        assert math.isclose(lazy.s, tau**2)  # alpha / m = tau^2: f = tau^2 sum_i a_i relu(w_i . x)
        assert lazy.a_std == 1.0 and math.isclose(lazy.w_std, 1.0)  # a_i, w_i standard normal: (b, A) = tau N(0, 1)
        assert sc.train.integrator.method == "euler"
        # their step moves (a, w) = (b, A) / tau by -(eta / tau^2) grad L; one Euler step by -dt eta loss_scale grad L
        dt = sc.train.integrator.dt
        assert math.isclose(dt * lazy.eta_a * lazy.loss_scale, eta / tau**2)
        assert math.isclose(dt * lazy.eta_w * lazy.loss_scale, eta / tau**2)
        assert math.isclose(sc.train.t_end / dt, 1e4)


def test_single_index_grid_is_dim_by_n_train_with_both_learners():
    sweep = load_sweep("single_index_samples")
    assert sweep.grid_keys == ["data.dim", "data.n_train"]
    assert len(sweep.points) == len(DIMS) * len(N_TRAIN)
    assert [p.coords["data.n_train"] for p in sweep.points[:len(N_TRAIN)]] == N_TRAIN  # largest first
    for point in sweep.points:
        scenario = point.scenario
        assert scenario.data.task == "single_index" and scenario.data.degree == 2
        assert scenario.runs["rich"].solver == "particles"
        assert scenario.runs["rich"].parameterization.preset == "mean_field"
        assert scenario.runs["ntk"].solver == "ntk" and scenario.runs["ntk"].kernel == "analytic"


def _reduced(name: str, grid: dict, **data):
    """The bundled sweep with a smaller grid (and data keys of its inline base changed)."""
    raw = yaml.safe_load((SWEEP_DIR / f"{name}.yaml").read_text())
    raw["base"]["data"].update(data)
    raw["grid"] = grid
    return parse_sweep(yaml.safe_dump(raw, sort_keys=False), root=SWEEP_DIR, default_name=name)


def _by(table, key):
    return {v: i for i, v in enumerate(table[key].tolist())}


def their_gd(X, y, X_test, y_test, A, b, step, steps):
    """Chizat, Oyallon & Bach's GD, transcribed from their description: f(x) = sum_i b_i relu(A_i . x),
    half the MSE, both layers stepped together; the final test loss and ||A - A_0|| / ||A_0||."""
    A0, n = A.copy(), len(y)
    for _ in range(steps):
        H = np.maximum(A @ X.T, 0.0)  # [m, n]
        r = (b @ H - y) / n
        grad_A = (b[:, None] * (H > 0)) @ (X * r[:, None])
        grad_b = H @ r
        A, b = A - step * grad_A, b - step * grad_b
    f_test = b @ np.maximum(A @ X_test.T, 0.0)
    return 0.5 * np.mean((f_test - y_test) ** 2), np.linalg.norm(A - A0) / np.linalg.norm(A0)


@pytest.mark.slow
def test_reduced_chizat_oyallon_bach_is_their_gd_and_shows_their_figure(tmp_path):
    # their setup at d = 20, n = 100, 200 test points: their 10^4 steps, six of their scales (6 s)
    taus = [0.01, 0.1, 0.3162, 1, 3.162, 10]
    raw = yaml.safe_load((SWEEP_DIR / "chizat_oyallon_bach.yaml").read_text())
    raw["base"]["data"].update(dim=20, n_train=100, n_test=200)
    raw["base"]["model"]["init"]["w_std"] = math.sqrt(20)  # w_i ~ N(0, I_d)
    raw["base"]["record"] = {"every": 5000.0, "particles": True, "dtype": "float64"}
    axis = raw["grid"]["runs.lazy.parameterization"]
    raw["grid"] = {"runs.lazy.parameterization": {tau: axis[tau] for tau in taus}, "seed": [0]}
    sweep = parse_sweep(yaml.safe_dump(raw, sort_keys=False), root=SWEEP_DIR, default_name="cob")
    result = run_sweep(sweep, tmp_path / "cob", executor=ThreadPoolExecutor(1), threads=1)
    assert result.failed == 0
    loss, disp = {}, {}
    for point in sweep.points:
        tau = point.coords["runs.lazy.parameterization"]
        with mf.open(result.directory / point.file) as trajectory:
            data, lazy = trajectory.data, trajectory["lazy"]
            start = lazy.particles().isel(time=0)  # (a, w) at t = 0; theirs is (b, A) = tau (a, w)
            loss[tau], disp[tau] = lazy.final()["loss_test"], lazy.final()["displacement_w"]
            ntk_loss = trajectory["ntk"].final()["loss_test"]
        theirs = their_gd(data.X_train, data.y_train, data.X_test, data.y_test, tau * start["position"].values,
                          tau * start["amplitude"].values, min(10.0, 0.1 / tau**2), 10_000)
        np.testing.assert_allclose([loss[tau], disp[tau]], theirs, rtol=1e-9)  # the same GD (measured 1e-12)
    # their figure: the test loss grows with tau to the plateau of the linearized model (the ntk run)
    # measured: 0.0041, 0.0063, 0.0107, 0.0130 at tau = 0.01 ... 1; 0.01283 at tau = 10, ntk 0.01283
    assert loss[0.01] < loss[0.1] < loss[0.3162] < loss[1]
    assert loss[0.01] < 0.5 * loss[10]
    assert abs(loss[10] / ntk_loss - 1) < 1e-3
    # lazy range: the first layer moves like 1/alpha = tau^-2 (measured -2.00)
    slope = math.log(disp[10] / disp[3.162]) / math.log(10 / 3.162)
    assert -2.1 < slope < -1.9, slope
    assert disp[0.01] > 1.0  # the rich run moves its neurons by O(1) (5.6)


@pytest.mark.slow
def test_reduced_single_index_rich_needs_fewer_samples_than_ntk(tmp_path):
    sweep = _reduced("single_index_samples", {"data.dim": [16], "data.n_train": [1024, 256]})
    result = run_sweep(sweep, tmp_path / "si", executor=ThreadPoolExecutor(1), threads=1)
    assert result.failed == 0
    table = read_table(result.directory)
    row = _by(table, "data.n_train")
    rich, ntk = table["rich.loss_test"], table["ntk.loss_test"]
    # measured: n = 256: rich 0.038, ntk 0.143; n = 1024: rich 0.0041, ntk 0.014 (trivial: 0.5)
    assert rich[row[256]] < 0.05 < ntk[row[256]]
    assert rich[row[256]] < 0.5 * ntk[row[256]]
    assert rich[row[1024]] < 0.02 and ntk[row[1024]] < 0.03
    assert table["rich.teacher_alignment"][row[1024]] > 0.6  # 0.81: the neurons found u

