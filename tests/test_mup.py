"""The ``mup`` preset (Yang & Hu's muP for SGD) is ``mean_field`` in other coordinates, and a
fixed output layer (``lr_a: 0``): its lazy-limit kernel is the arc-cosine kernel of degree 0
times x.x' (docs/design.md §2.2, §1.6)."""

import math

import numpy as np
import pytest
from recorded import measures
from reference import dsigma, sigma
from reference_ntk import per_particle_ntk

import meanfield as mf
from meanfield.engine import runs
from meanfield.engine.plan import plan, run_inputs
from solvers.ntk import analytic_kernels, empirical_ntk

M = 60  # not a power of two: a_mf = m a_mup is then not exact in floating point
SCENARIO = {
    "name": "mup",
    "seed": 3,
    "data": {"dim": 3, "n_train": 30, "n_test": 20, "teacher": {"activation": "tanh"}},
    "model": {"width": M, "activation": "tanh", "bias": True, "init": {"a_std": 1.5, "w_std": 1.2, "b_std": 0.5}},
    "runs": {"mf": {"parameterization": {"preset": "mean_field", "lr": 0.7}},
             "mup": {"parameterization": {"preset": "mup", "lr": 0.7}}},
    "train": {"t_end": 2.0, "integrator": {"method": "rk4", "dt": 0.05}},
    "record": {"every": 0.5, "dtype": "float64"},
}


def started(overrides=()):
    """Every run of the scenario, started, on its data (and the data)."""
    scenario = mf.load_scenario(SCENARIO, overrides)
    the_plan = plan(scenario)
    inputs = run_inputs(scenario, the_plan.times)
    made = {name: runs.make_run(name, spec, the_plan.resolved[name], inputs) for name, spec in scenario.runs.items()}
    return {name: (run, run.start()) for name, run in made.items()}, inputs.data


def test_mup_is_yang_and_hus_table_for_sgd():
    # the field of a mup run, written in muP's own terms in plain NumPy: f = sum_i a_i sigma(w_i.x + b_i)
    # (no multiplier), a_i(0) of std a_std / m trained at lr / m, w_i(0) of std w_std / sqrt(d) at lr m
    made, data = started()
    run, state = made["mup"]
    a, W, b = run.particles(state)
    z = np.random.default_rng(np.random.SeedSequence([3, 1]))  # the shared draws: z_a, Z_w, z_b
    z_a, Z_w, z_b = z.standard_normal(M), z.standard_normal((M, 3)), z.standard_normal(M)
    assert np.allclose(a, 1.5 / M * z_a, rtol=1e-15) and np.allclose(W, 1.2 / math.sqrt(3) * Z_w, rtol=1e-15)
    assert np.allclose(b, 0.5 * z_b, rtol=1e-15)
    X, y = data.X_train, data.y_train
    Z = X @ W.T + b
    residual = sigma("tanh", Z) @ a - y  # R = (1/n) sum_k (f_k - y_k)^2 / 2
    n = len(y)
    va = -(0.7 / M) * sigma("tanh", Z).T @ residual / n
    G = (residual[:, None] * dsigma("tanh", Z) * a) / n  # dR/dz_ki
    vW, vb = -(0.7 * M) * G.T @ X, -(0.7 * M) * G.sum(axis=0)
    dy, loss = run.field(0.0, state.y)
    assert loss == pytest.approx(0.5 * np.mean(residual**2), rel=1e-13)
    assert np.allclose(dy, np.concatenate([va, vW.ravel(), vb]), rtol=1e-12, atol=1e-15)


def test_mup_run_is_the_mean_field_run_with_a_scaled_by_m(tmp_path):
    # from the same draws: the same f and losses to rounding, the same w_i and b_i, a_mf = m a_mup
    out = tmp_path / "mup.h5"
    mf.simulate(SCENARIO, out).close()
    rich, mup = measures(out, "mf"), measures(out, "mup")
    for name in ("f_test", "loss_train", "loss_test", "displacement_w", "displacement_a", "kernel_distance"):
        scale = np.max(np.abs(rich[name].value))
        assert scale > 0 and np.max(np.abs(rich[name].value - mup[name].value)) <= 1e-13 * scale, name
    assert rich["displacement_w"].value[-1] > 0.05 and rich["loss_train"].value[-1] < 0.8 * rich["loss_train"].value[0]
    with mf.open(out) as trajectory:
        P, Q = trajectory["mf"].particles(), trajectory["mup"].particles()
        assert np.allclose(Q.position.values, P.position.values, rtol=1e-13, atol=1e-15)
        assert np.allclose(Q.bias.values, P.bias.values, rtol=1e-13, atol=1e-15)
        assert np.allclose(M * Q.amplitude.values, P.amplitude.values, rtol=1e-13, atol=1e-15)
        assert not np.allclose(Q.amplitude.values, P.amplitude.values)
        assert [trajectory[name].attrs["predicted_regime"] for name in ("mf", "mup")] == ["rich", "rich"]


# ------------------------------------------------------------------ a fixed output layer


def test_a_particle_run_with_lr_a_zero_keeps_a_and_trains_w_as_numpy_does(tmp_path):
    overrides = {"runs": {"fixed": {"parameterization": {"preset": "mean_field", "lr": 0.7, "lr_a": 0}}},
                 "train.integrator": {"method": "euler", "dt": 0.1}, "train.t_end": 0.5}
    made, data = started(overrides)
    run, state = made["fixed"]
    a0, W, b = (np.array(v) for v in run.particles(state))
    out = tmp_path / "fixed.h5"
    mf.simulate(mf.load_scenario(SCENARIO, overrides), out).close()
    X, y, n = data.X_train, data.y_train, len(data.y_train)
    for _ in range(5):  # plain gradient descent on (W, b) with a fixed, eta_w = m lr, s = 1/m
        Z = X @ W.T + b
        residual = sigma("tanh", Z) @ a0 / M - y
        G = residual[:, None] * dsigma("tanh", Z) * a0 / (M * n)
        W, b = W - 0.1 * 0.7 * M * G.T @ X, b - 0.1 * 0.7 * M * G.sum(axis=0)
    with mf.open(out) as trajectory:
        P = trajectory["fixed"].particles()
        assert np.array_equal(P.amplitude.values, np.broadcast_to(a0, P.amplitude.shape))
        assert np.allclose(P.position.values[-1], W, rtol=1e-12, atol=1e-14)
        assert np.allclose(P.bias.values[-1], b, rtol=1e-12, atol=1e-14)
        assert np.abs(P.position.values[-1] - P.position.values[0]).max() > 1e-2
        assert trajectory["fixed"].attrs["eta_a"] == 0.0
    assert measures(out, "fixed")["displacement_a"].value.max() == 0.0


def arc_cosine_kernel(X, a_var, w_var, b_var):
    """a_var E[relu'(u) relu'(v)] (x.x' + 1) = a_var (pi - theta) / (2 pi) (x.x' + 1), theta the
    angle between the lifted inputs (sqrt(w_var) x, sqrt(b_var)): plain NumPy, the angle as
    2 atan2(|u - v|, |u + v|) of the unit vectors (arccos of the cosine loses digits near 0)."""
    U = np.hstack([math.sqrt(w_var) * X, np.full((len(X), 1), math.sqrt(b_var))])
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    diff = np.linalg.norm(U[:, None] - U[None, :], axis=2)
    theta = 2 * np.arctan2(diff, np.linalg.norm(U[:, None] + U[None, :], axis=2))
    return a_var * (np.pi - theta) / (2 * np.pi) * (X @ X.T + 1.0)


def test_the_lazy_kernel_with_fixed_output_weights_is_the_arc_cosine_kernel_of_degree_zero():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((6, 3))
    a_var, w_var, b_var = 1.7, 0.4, 0.3
    _, K = analytic_kernels(X, act="relu", w_var=w_var, b_var=b_var, a_var=a_var, eta_a=0.0, eta_w=1.0)
    assert np.allclose(K, arc_cosine_kernel(X, a_var, w_var, b_var), rtol=1e-12, atol=1e-14)
    # the empirical NTK of a wide ntk-scaled network (s = 1/sqrt(m)) with a fixed: its mean
    # over the particles, within five standard errors of the Monte-Carlo mean
    m = 40000
    a = math.sqrt(a_var) * rng.standard_normal(m)
    W, b = math.sqrt(w_var) * rng.standard_normal((m, 3)), math.sqrt(b_var) * rng.standard_normal(m)
    K_m = empirical_ntk(a, W, b, X, s=m**-0.5, eta_a=0.0, eta_w=1.0, act="relu")
    spread = per_particle_ntk(a, W, b, X, 0.0, 1.0, "relu").std(axis=0) / math.sqrt(m)
    assert np.all(np.abs(K_m - K) <= 5 * spread) and np.all(spread < 0.03 * np.abs(K).max())


def test_an_ntk_run_with_lr_a_zero_has_that_kernel_and_the_lazy_particles_follow_it(tmp_path):
    overrides = {"model.activation": "relu", "model.init.symmetric": True,
                 "runs": {"ntk": {"solver": "ntk", "parameterization": {"preset": "lazy", "alpha": 1000, "lr_a": 0}},
                          "lazy": {"parameterization": {"preset": "lazy", "alpha": 1000, "lr_a": 0}},
                          "limit": {"solver": "ntk", "kernel": "analytic", "parameterization": {"preset": "ntk", "lr_a": 0}}}}
    made, data = started(overrides)
    kernel_train, _, f0 = made["limit"][0].kernels()
    assert np.allclose(kernel_train, arc_cosine_kernel(data.X_train, 1.5**2, 1.2**2 / 3, 0.5**2), rtol=1e-12)
    assert np.array_equal(f0, np.zeros_like(f0))
    out = tmp_path / "limit.h5"
    mf.simulate(mf.load_scenario(SCENARIO, overrides), out).close()
    ntk, lazy = measures(out, "ntk"), measures(out, "lazy")
    scale = np.sqrt(np.mean(ntk["f_test"].value[-1] ** 2))
    # measured: 5.8e-10 at most (with the output layer trained too, lazy moves 0.055 away from this kernel)
    assert np.all(lazy["gap_ntk"].value < 1e-6 * scale) and scale > 0.1


def test_dry_run_shows_the_mup_numbers_and_a_fixed_output_layer():
    from click.testing import CliRunner

    from meanfield.cli import main

    result = CliRunner().invoke(main, ["simulate", "quickstart", "--dry-run", "--set", "model.width=100", "--set",
                                       "runs={mup: {parameterization: {preset: mup, lr: 2}}, "
                                       "fixed: {solver: ntk, kernel: analytic, parameterization: {preset: ntk, lr_a: 0}}}"])
    assert result.exit_code == 0, result.output
    assert "mup: mup: s = 1, eta_a = 0.02, eta_w = 200, a_std = 0.01; predicted rich" in result.output
    assert "fixed: ntk: s = 0.1, eta_a = 0, eta_w = 1, a_std = 1; predicted lazy" in result.output
    assert "the output weights are fixed (lr_a = 0)" in result.output


def test_lr_a_zero_keeps_a_fixed_with_infinite_data_too(tmp_path):
    # the population particle flow and the exactly solved population tangent model (P^1/2 with zeros)
    scenario = mf.load_scenario({
        "name": "fixed-population", "data": {"dim": 3, "population": True},
        "model": {"width": 20, "activation": "erf"},
        "runs": {"fixed": {"parameterization": {"preset": "mup", "lr_a": 0}},
                 "tangent": {"solver": "tangent", "parameterization": {"preset": "ntk", "lr_a": 0}}},
        "train": {"t_end": 1.0, "integrator": {"method": "rk4", "dt": 0.05}}, "record": {"every": 0.5}})
    out = tmp_path / "population.h5"
    mf.simulate(scenario, out).close()
    with mf.open(out) as trajectory:
        for name in ("fixed", "tangent"):
            P = trajectory[name].particles()
            assert np.array_equal(P.amplitude.values, np.broadcast_to(P.amplitude.values[0], P.amplitude.shape))
            assert np.abs(P.position.values[-1] - P.position.values[0]).max() > 1e-3, name
            risk = trajectory[name].series("risk").value
            assert risk[-1] < risk[0], name
