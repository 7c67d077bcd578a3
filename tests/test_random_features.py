"""A fixed first layer (``lr_w: 0``, random features) and the biases' own learning rate
(``lr_b``, eta_b = lr_b m^-C_w) in every run kind that trains biases (docs/design.md §2.2)."""

import math

import numpy as np
import pytest
from recorded import measures
from reference import dsigma, sigma
from reference_ntk import jacobian

import meanfield as mf
from meanfield.engine import runs
from meanfield.engine.plan import plan, run_inputs
from meanfield.model.parameterization import resolve
from solvers.ntk import analytic_kernels, empirical_ntk

M = 40
SCENARIO = {
    "name": "random-features",
    "seed": 4,
    "data": {"dim": 3, "n_train": 24, "n_test": 10, "teacher": {"activation": "tanh"}},
    "model": {"width": M, "activation": "tanh", "bias": True, "init": {"a_std": 1.3, "w_std": 1.1, "b_std": 0.6}},
    "runs": {"rf": {"parameterization": {"preset": "mean_field", "lr": 0.8, "lr_w": 0}}},
    "train": {"t_end": 0.5, "integrator": {"method": "euler", "dt": 0.1}},
    "record": {"every": 0.5, "dtype": "float64"},
}


def started(overrides=()):
    """Every run of the scenario, started, on its data (and the data)."""
    scenario = mf.load_scenario(SCENARIO, overrides)
    the_plan = plan(scenario)
    inputs = run_inputs(scenario, the_plan.times)
    made = {name: runs.make_run(name, spec, the_plan.resolved[name], inputs) for name, spec in scenario.runs.items()}
    return {name: (run, run.start()) for name, run in made.items()}, inputs.data


def test_lr_w_zero_keeps_the_first_layer_and_trains_a_as_numpy_does(tmp_path):
    made, data = started()
    run, state = made["rf"]
    a, W0, b0 = (np.array(v) for v in run.particles(state))
    out = tmp_path / "rf.h5"
    mf.simulate(SCENARIO, out).close()
    X, y, n = data.X_train, data.y_train, len(data.y_train)
    S = sigma("tanh", X @ W0.T + b0)
    for _ in range(5):  # plain gradient descent on a alone: s = 1/m, eta_a = m lr
        residual = S @ a / M - y
        a = a - 0.1 * 0.8 * M * S.T @ residual / (M * n)
    with mf.open(out) as trajectory:
        P = trajectory["rf"].particles()
        assert np.array_equal(P.position.values, np.broadcast_to(W0, P.position.shape))
        assert np.array_equal(P.bias.values, np.broadcast_to(b0, P.bias.shape))
        assert np.allclose(P.amplitude.values[-1], a, rtol=1e-12, atol=1e-14)
        assert np.abs(P.amplitude.values[-1] - P.amplitude.values[0]).max() > 1e-2
        attrs = trajectory["rf"].attrs
        assert attrs["eta_w"] == 0.0 and attrs["predicted_regime"] == "lazy"
        assert "random features" in attrs["predicted_regime_reason"]
        # measured lazy, and the textbook table (of networks whose kernel can move) has no row for it
        assert trajectory["rf"].verdict()[0] == "lazy" and trajectory["rf"].table_regime() is None
    assert measures(out, "rf")["displacement_w"].value.max() == 0.0


def test_the_particle_field_with_lr_b_is_the_numpy_gradient_and_its_finite_differences():
    made, data = started({"runs": {"b": {"parameterization": {"preset": "ntk", "lr": 0.8, "lr_b": 2.5}}}})
    run, state = made["b"]
    a, W, b = (np.array(v) for v in run.particles(state))
    X, y, n, s = data.X_train, data.y_train, len(data.y_train), M**-0.5

    def risk(bias):
        return 0.5 * np.mean((s * sigma("tanh", X @ W.T + bias) @ a - y) ** 2)

    residual = s * sigma("tanh", X @ W.T + b) @ a - y
    G = residual[:, None] * dsigma("tanh", X @ W.T + b) * a * s / n  # dR/dz_ki
    dy, _ = run.field(0.0, state.y)
    vb = dy[M + M * 3:]
    assert np.allclose(vb, -2.5 * G.sum(axis=0), rtol=1e-12, atol=1e-15)
    assert np.allclose(dy[M:M + M * 3], -0.8 * (G.T @ X).ravel(), rtol=1e-12, atol=1e-15)
    h = 1e-6
    fd = np.array([(risk(b + h * e) - risk(b - h * e)) / (2 * h) for e in np.eye(M)])
    assert np.allclose(vb, -2.5 * fd, rtol=1e-6, atol=1e-10)


def test_lr_b_equal_to_lr_w_gives_the_same_arrays_bit_for_bit(tmp_path):
    kinds = {"particles": {}, "tangent": {"solver": "tangent"}, "ntk": {"solver": "ntk"},
             "analytic": {"solver": "ntk", "kernel": "analytic"}}
    files = {}
    for name, extra in (("plain", {}), ("with_b", {"lr_b": 1.3})):
        runs_ = {kind: {**spec, "parameterization": {"preset": "ntk", "lr": 0.7, "lr_w": 1.3, **extra}}
                 for kind, spec in kinds.items()}
        files[name] = tmp_path / f"{name}.h5"
        overrides = {"runs": runs_, "record.measures": ["ntk_eigenvalue_max"], "model.activation": "erf"}
        mf.simulate(mf.load_scenario(SCENARIO, overrides), files[name]).close()
    for kind in kinds:
        plain, with_b = measures(files["plain"], kind), measures(files["with_b"], kind)
        assert set(plain) == set(with_b) and len(plain) >= 3
        for name in plain:
            assert np.array_equal(plain[name].value, with_b[name].value, equal_nan=True), (kind, name)
    with mf.open(files["plain"]) as one, mf.open(files["with_b"]) as other:
        for kind in ("particles", "tangent"):
            P, Q = one[kind].particles(), other[kind].particles()
            for field in ("amplitude", "position", "bias"):
                assert np.array_equal(getattr(P, field).values, getattr(Q, field).values), (kind, field)
        assert other["particles"].attrs["eta_b"] == other["particles"].attrs["eta_w"] == 1.3


def test_the_tangent_run_and_the_kernels_take_eta_b(tmp_path):
    lr_b = 3.0
    made, data = started({"runs": {"t": {"solver": "tangent", "parameterization": {"preset": "ntk", "lr_b": lr_b}},
                                   "k": {"solver": "ntk", "parameterization": {"preset": "ntk", "lr_b": lr_b}},
                                   "rfb": {"solver": "ntk", "parameterization": {"preset": "ntk", "lr_w": 0,
                                                                                   "lr_b": lr_b}}}})
    run, state = made["t"]
    a, W, b = (np.array(v) for v in run.particles(state))
    X, s = data.X_train, M**-0.5
    J = jacobian(a, W, b, X, s, "tanh")
    for name, eta_w in (("k", 1.0), ("rfb", 0.0)):
        eta = np.concatenate([np.ones(M), np.full(M * 3, eta_w), np.full(M, lr_b)])
        K = (J * eta) @ J.T  # the explicit Jacobian's c J P J^T
        assert np.allclose(made[name][0].kernels()[0], K, rtol=1e-12, atol=1e-13), name
        assert np.allclose(empirical_ntk(a, W, b, X, s=s, eta_a=1.0, eta_w=eta_w, act="tanh", eta_b=lr_b), K,
                           rtol=1e-12, atol=1e-13)
    # the tangent field's bias velocity: -eta_b dR/db at theta_0 (f_lin = f_0 there)
    residual = s * sigma("tanh", X @ W.T + b) @ a - data.y_train
    dy, _ = run.field(0.0, state.y)
    assert np.allclose(dy[M + 3 * M:], -lr_b * J[:, M + 3 * M:].T @ residual / len(X), rtol=1e-12, atol=1e-15)
    # the analytic kernel with eta_b: a_var E[s' s'] (eta_w x.x' + eta_b) + eta_a E[s s], from the
    # kernels with eta_b = eta_w and with the dot product switched off (eta_w = 0)
    args = dict(act="erf", w_var=0.4, b_var=0.3, a_var=1.7)
    _, K_w = analytic_kernels(X, **args, eta_a=0.0, eta_w=1.0, eta_b=0.0)
    _, K_b = analytic_kernels(X, **args, eta_a=0.0, eta_w=0.0, eta_b=1.0)
    _, K = analytic_kernels(X, **args, eta_a=0.0, eta_w=2.0, eta_b=5.0)
    assert np.allclose(K, 2.0 * K_w + 5.0 * K_b, rtol=1e-13, atol=1e-15)


def test_lr_w_zero_in_the_population_flow_keeps_w(tmp_path):
    scenario = mf.load_scenario({
        "name": "rf-population", "data": {"dim": 3, "population": True},
        "model": {"width": 20, "activation": "erf"},
        "runs": {"rf": {"parameterization": {"preset": "mup", "lr_w": 0}}},
        "train": {"t_end": 1.0, "integrator": {"method": "rk4", "dt": 0.05}}, "record": {"every": 0.5}})
    out = tmp_path / "population.h5"
    mf.simulate(scenario, out).close()
    with mf.open(out) as trajectory:
        P = trajectory["rf"].particles()
        assert np.array_equal(P.position.values, np.broadcast_to(P.position.values[0], P.position.shape))
        assert np.abs(P.amplitude.values[-1] - P.amplitude.values[0]).max() > 1e-4
        risk = trajectory["rf"].series("risk").value
        assert risk[-1] < risk[0]


@pytest.mark.parametrize("preset, label, kappa", [
    ("mean_field", "lazy", 0.0), ("ntk", "lazy", 0.0), ("mup", "lazy", 0.0), ("standard", "unstable", 1.0)])
def test_a_fixed_first_layer_is_predicted_a_random_features_kernel_regime(preset, label, kappa):
    scenario = mf.load_scenario(SCENARIO, {"runs": {"rf": {"parameterization": {"preset": preset, "lr_w": 0}}}})
    regime = resolve(scenario.runs["rf"].parameterization, scenario.model, 3).regime
    assert (regime.label, regime.kappa, regime.r) == (label, kappa, math.inf)
    assert "random features" in regime.reason
    # trained biases (lr_b > 0) are first-layer parameters that move: the ordinary prediction
    trained = mf.load_scenario(SCENARIO, {"runs": {"rf": {"parameterization": {"preset": preset, "lr_w": 0,
                                                                                "lr_b": 1}}}})
    assert "random features" not in resolve(trained.runs["rf"].parameterization, trained.model, 3).regime.reason


def test_dry_run_shows_eta_b():
    from click.testing import CliRunner

    from meanfield.cli import main

    result = CliRunner().invoke(main, ["simulate", "quickstart", "--dry-run", "--set", "model.width=100", "--set",
                                       "model.bias=true", "--set",
                                       "runs={b: {parameterization: {preset: mean_field, lr_b: 0.5}}}"])
    assert result.exit_code == 0, result.output
    assert "b: mean_field: s = 0.01, eta_a = 100, eta_w = 100, a_std = 1, eta_b = 50; predicted rich" in result.output
