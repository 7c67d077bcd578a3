"""The output bias (model.output_bias): f(x) = s sum_i a_i sigma(w_i . x + b_i) + c, with c
trained at the rate eta_c, in the particle field, the tangent model and both kernels."""

import math

import numpy as np
import pytest
from reference import dloss, dsigma, loss, sigma

import meanfield as mf
from meanfield.config.loading import parse_scenario
from meanfield.engine import runs
from meanfield.engine.plan import plan
from meanfield.errors import UsageError
from meanfield.model.data import make_dataset
from solvers.activations import activation_code
from solvers.fields import ParticleField, ParticleLayout
from solvers.losses import loss_code
from solvers.ntk import TangentField, analytic_kernels, empirical_ntk
from solvers.particles import predict, risk_and_gradient


def problem(m=7, n=23, d=3, seed=0):
    rng = np.random.default_rng(seed)
    a, W, b = rng.standard_normal(m), rng.standard_normal((m, d)), 0.5 * rng.standard_normal(m)
    X = rng.standard_normal((n, d))
    return a, W, b, X, np.sign(rng.standard_normal(n))


def numpy_network(a, W, b, X, s, act, c):
    return s * sigma(act, X @ W.T + b) @ a + c


def numpy_gradients(a, W, b, X, y, s, act, loss_name, c, loss_scale):
    """(R, dR/da, dR/dW, dR/db, dR/dc) of R = loss_scale mean_k loss(f_k + c, y_k), plain NumPy."""
    Z = X @ W.T + b
    f = s * sigma(act, Z) @ a + c
    lp = loss_scale * dloss(loss_name, f, y) / len(y)
    G = s * lp[:, None] * dsigma(act, Z) * a
    return (loss_scale * loss(loss_name, f, y).mean(), s * sigma(act, Z).T @ lp, G.T @ X, G.sum(axis=0), lp.sum())


@pytest.mark.parametrize("act, loss_name", [("tanh", "squared"), ("relu", "logistic"), ("erf", "squared")])
def test_the_gradient_in_c_against_numpy_and_finite_differences(act, loss_name):
    a, W, b, X, y = problem()
    s, c, scale = 0.4, 0.3, 0.7
    code, lcode = activation_code(act), loss_code(loss_name)
    risk, ga, gW, gb, gc = risk_and_gradient(a, W, b, X, y, s, code, lcode, scale, c=c)
    want = numpy_gradients(a, W, b, X, y, s, act, loss_name, c, scale)
    for got, expected in zip((risk, ga, gW, gb, gc), want):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
    h = 1e-6
    plus = risk_and_gradient(a, W, b, X, y, s, code, lcode, scale, c=c + h)[0]
    minus = risk_and_gradient(a, W, b, X, y, s, code, lcode, scale, c=c - h)[0]
    assert gc == pytest.approx((plus - minus) / (2 * h), rel=1e-7)
    np.testing.assert_allclose(predict(a, W, b, X, s, code, c), numpy_network(a, W, b, X, s, act, c), rtol=1e-13)
    assert len(risk_and_gradient(a, W, b, X, y, s, code, lcode, scale)) == 4  # without c: as before


def test_the_particle_field_moves_c_by_minus_eta_c_dR_dc():
    a, W, b, X, y = problem()
    layout = ParticleLayout(7, 3, bias=True, output_bias=True)
    field = ParticleField(layout, X, y, s=0.4, eta_a=1.3, eta_w=0.6, activation=activation_code("tanh"),
                          loss=loss_code("squared"), loss_scale=0.7, eta_c=2.5)
    state = layout.pack(a, W, b, c=0.3)
    assert state.size == layout.size == 7 * 5 + 1 and layout.c_of(state)[0] == 0.3
    velocity, reported = field(0.0, state)
    _, ga, gW, gb, gc = numpy_gradients(a, W, b, X, y, 0.4, "tanh", "squared", 0.3, 0.7)
    va, vW, vb = layout.split(velocity)
    np.testing.assert_allclose(va, -1.3 * ga, rtol=1e-12)
    np.testing.assert_allclose(vW, -0.6 * gW, rtol=1e-12)
    np.testing.assert_allclose(vb, -0.6 * gb, rtol=1e-12)
    assert layout.c_of(velocity)[0] == pytest.approx(-2.5 * gc, rel=1e-12)
    assert reported == pytest.approx(loss("squared", numpy_network(a, W, b, X, 0.4, "tanh", 0.3), y).mean(), rel=1e-12)


# ----------------------------------------------------------------------------- a particle run, end to end
SCENARIO = {
    "name": "bias",
    "seed": 2,
    "data": {"task": "teacher_student", "dim": 3, "n_train": 15, "n_test": 9, "teacher": {"width": 2}},
    "model": {"width": 6, "activation": "tanh", "bias": True, "output_bias": True,
              "init": {"b_std": 0.3, "c_std": 0.8}},
    "runs": {"rich": {"parameterization": {"preset": "mean_field", "lr_c": 0.7}}},
    "train": {"t_end": 0.5, "integrator": {"method": "euler", "dt": 0.05}},
    "record": {"every": 0.25, "dtype": "float64"},
}


def inputs_of(scenario):
    the_plan = plan(scenario)
    data = make_dataset(scenario.data, runs.rng_for(scenario.seed, 0))
    draws = runs.initial_draws(scenario, runs.rng_for(scenario.seed, 1))
    return the_plan, data, draws


def test_a_particle_run_with_an_output_bias_is_euler_on_the_network_plus_c():
    scenario = mf.load_scenario(SCENARIO)
    the_plan, data, draws = inputs_of(scenario)
    r = the_plan.resolved["rich"]
    assert (r.eta_c, r.c_std) == (0.7, 0.8) and r.eta_a == 6.0
    a, W, b = draws.z_a * r.a_std, draws.Z_w * r.w_std, draws.z_b * r.b_std
    c = 0.8 * draws.z_c
    X, y = data.X_train, data.y_train
    losses, biases = [], []
    for step in range(11):
        if step % 5 == 0:
            losses.append(loss("squared", numpy_network(a, W, b, X, r.s, "tanh", c), y).mean())
            biases.append(c)
        if step == 10:
            break
        _, ga, gW, gb, gc = numpy_gradients(a, W, b, X, y, r.s, "tanh", "squared", c, 1.0)
        a, W, b, c = a - 0.05 * r.eta_a * ga, W - 0.05 * r.eta_w * gW, b - 0.05 * r.eta_w * gb, c - 0.05 * 0.7 * gc
    with mf.simulate(scenario) as trajectory:
        rich = trajectory["rich"]
        np.testing.assert_allclose(rich.series("output_bias").value, biases, rtol=1e-12)
        np.testing.assert_allclose(rich.series("loss_train").value, losses, rtol=1e-12)
        last = rich.frame(-1)
        np.testing.assert_allclose(last.W, W, rtol=1e-12)
        f_test = numpy_network(a, W, b, data.X_test, r.s, "tanh", c)
        np.testing.assert_allclose(rich.series("f_test").value[-1], f_test, rtol=1e-12)
        assert rich.attrs["eta_c"] == 0.7 and rich.attrs["c_std"] == 0.8
    assert abs(biases[-1] - biases[0]) > 1e-3  # c moved


def test_the_output_bias_is_off_by_default_and_leaves_runs_as_they_were():
    plain = {**SCENARIO, "model": {**SCENARIO["model"], "output_bias": False, "init": {"b_std": 0.3}},
             "runs": {"rich": "mean_field"}}
    scenario = mf.load_scenario(plain)
    assert plan(scenario).resolved["rich"].eta_c is None
    with mf.simulate(scenario) as trajectory:
        assert "output_bias" not in trajectory["rich"].measures and "eta_c" not in trajectory["rich"].attrs


# ----------------------------------------------------------------------------- kernels
def jacobian(a, W, b, X, s, act):
    """d f / d theta for theta = (a, W, b, c), rows the points, plain NumPy."""
    Z = X @ W.T + b
    D = s * dsigma(act, Z) * a
    J_W = (D[:, :, None] * X[:, None, :]).reshape(len(X), -1)
    return np.hstack([s * sigma(act, Z), J_W, D, np.ones((len(X), 1))])


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_the_empirical_ntk_with_an_output_bias_is_c_J_diag_eta_J_T(act):
    a, W, b, X, _ = problem()
    X2 = np.random.default_rng(3).standard_normal((5, 3))
    s, eta_a, eta_w, eta_c, scale = 0.4, 1.3, 0.6, 2.5, 0.7
    eta = np.concatenate([np.full(7, eta_a), np.full(7 * 3, eta_w), np.full(7, eta_w), [eta_c]])
    want = scale * (jacobian(a, W, b, X, s, act) * eta) @ jacobian(a, W, b, X2, s, act).T
    K = empirical_ntk(a, W, b, X, X2, s=s, eta_a=eta_a, eta_w=eta_w, act=act, loss_scale=scale, eta_c=eta_c)
    np.testing.assert_allclose(K, want, rtol=1e-12)
    gram = empirical_ntk(a, W, b, X, s=s, eta_a=eta_a, eta_w=eta_w, act=act, loss_scale=scale, eta_c=eta_c)
    np.testing.assert_allclose(gram, scale * (jacobian(a, W, b, X, s, act) * eta) @ jacobian(a, W, b, X, s, act).T,
                               rtol=1e-12)
    assert np.array_equal(gram, gram.T)


def test_the_analytic_ntk_with_an_output_bias_is_neural_tangents_readout_with_b_std():
    """neural-tangents' Dense(m, W1, b1), Relu(), Dense(1, W2, b2) in NTK parameterization, from the
    closed forms it uses (docs: FACTS): q = W1^2 x.x'/d + b1^2, NNGP = W2^2 E[phi phi'] + b2^2,
    NTK = NNGP + W2^2 E[phi_dot phi_dot'] q12. Ours trains (a, w, b, c) at the rates of its
    standard-normal parameters: eta = (W2^2, W1^2/d, b1^2) and eta_c = b2^2."""
    X = np.random.default_rng(4).standard_normal((6, 3))
    W1, b1, W2, b2, d = 1.3, 0.4, 0.9, 0.6, 3
    q = W1**2 * X @ X.T / d + b1**2
    norms = np.sqrt(np.outer(np.diag(q), np.diag(q)))
    t = np.arccos(np.clip(q / norms, -1, 1))
    e_ss = norms * (np.sin(t) + (np.pi - t) * np.cos(t)) / (2 * np.pi)
    e_dd = (np.pi - t) / (2 * np.pi)
    nt_ntk = W2**2 * e_ss + b2**2 + W2**2 * e_dd * q
    _, ntk = analytic_kernels(X, act="relu", w_var=W1**2 / d, b_var=b1**2, a_var=W2**2, eta_a=W2**2,
                              eta_w=W1**2 / d, eta_b=b1**2, eta_c=b2**2)
    np.testing.assert_allclose(ntk, nt_ntk, rtol=1e-12, atol=1e-14)
    _, without = analytic_kernels(X, act="relu", w_var=W1**2 / d, b_var=b1**2, a_var=W2**2, eta_a=W2**2,
                                  eta_w=W1**2 / d, eta_b=b1**2)
    np.testing.assert_allclose(ntk - without, b2**2, rtol=1e-13)


KERNELS = {**SCENARIO, "model": {**SCENARIO["model"], "activation": "erf",
                                 "init": {"b_std": 0.3, "c_std": 0.8, "symmetric": True}},
           "runs": {"empirical": {"solver": "ntk", "parameterization": {"preset": "ntk", "lr_c": 0.7}},
                    "analytic": {"solver": "ntk", "kernel": "analytic", "parameterization": {"preset": "lazy",
                                                                                             "alpha": 2.0,
                                                                                             "lr_c": 0.7}}}}


@pytest.mark.parametrize("name", ["empirical", "analytic"])
def test_a_kernel_run_gains_loss_scale_eta_c_and_starts_from_c0(name):
    with_bias = mf.load_scenario(KERNELS)
    without = mf.load_scenario(KERNELS, {"model.output_bias": False, "model.init.c_std": 0.0,
                                         **{f"runs.{run}.parameterization.lr_c": None for run in KERNELS["runs"]}})
    kernels = {}
    for scenario in (with_bias, without):
        the_plan, data, draws = inputs_of(scenario)
        run = runs.make_run(name, scenario.runs[name], the_plan.resolved[name],
                            runs.RunInputs(scenario, data, draws, the_plan.times, activation_code("erf"),
                                           loss_code("squared")))
        kernels[scenario.model.output_bias] = run.kernels()
        if scenario.model.output_bias:
            c0 = 0.8 * draws.z_c
    scale = 0.25 if name == "analytic" else 1.0  # lazy, alpha = 2: loss scale 1/alpha^2
    for got, plain in zip(kernels[True][:2], kernels[False][:2]):
        np.testing.assert_allclose(got - plain, scale * 0.7, rtol=1e-12)
    np.testing.assert_allclose(kernels[True][2] - kernels[False][2], c0, rtol=1e-12)
    if name == "analytic":
        assert np.all(kernels[True][2] == c0)  # f_0 = c_0: the symmetric start with the scenario's c_0


# ----------------------------------------------------------------------------- the tangent model
def test_the_tangent_field_with_an_output_bias_follows_the_kernel_flow_with_eta_c():
    a, W, b, X, y = problem(seed=5)
    numbers = dict(s=0.4, eta_a=1.3, eta_w=0.6, act="tanh", loss_scale=0.7)
    field = TangentField(a, W, b, X, y, loss="logistic", c0=0.3, eta_c=2.5, **numbers)
    theta0 = field.initial_state()
    assert field.layout.c_of(theta0)[0] == 0.3
    f0 = field.predict(theta0, X)
    np.testing.assert_allclose(f0, numpy_network(a, W, b, X, 0.4, "tanh", 0.3), rtol=1e-13)
    rng = np.random.default_rng(6)
    theta = theta0 + 0.1 * rng.standard_normal(theta0.size)  # the tangent model is linear in theta
    velocity, _ = field(0.0, theta)
    f = field.predict(theta, X)
    moved = field.predict(theta + velocity, X) - f  # = J velocity
    K = empirical_ntk(a, W, b, X, eta_c=2.5, **numbers)
    np.testing.assert_allclose(moved, -K @ dloss("logistic", f, y) / len(y), rtol=1e-10, atol=1e-13)
    assert field.layout.c_of(velocity)[0] == pytest.approx(-2.5 * 0.7 * dloss("logistic", f, y).mean(), rel=1e-12)


def test_the_tangent_run_meets_the_empirical_kernel_flow_of_its_particles():
    """Squared loss: the tangent run (rk4, small steps) and the closed-form kernel flow of the same
    particles, both with an output bias, agree at every snapshot (gap_ntk)."""
    scenario = mf.load_scenario(SCENARIO, {
        "runs": {"ntk": {"solver": "ntk", "parameterization": {"preset": "ntk", "lr_c": 0.7}},
                 "tangent": {"solver": "tangent", "parameterization": {"preset": "ntk", "lr_c": 0.7}}},
        "train.integrator": {"method": "rk4", "dt": 0.01}, "train.t_end": 2.0, "record.every": 0.5})
    with mf.simulate(scenario) as trajectory:
        tangent = trajectory["tangent"]
        gaps = tangent.series("gap_ntk").value
        assert gaps.max() < 1e-8 * np.abs(tangent.series("f_test").value).max()
        bias = tangent.series("output_bias").value
        assert abs(bias[-1] - bias[0]) > 1e-3


# ----------------------------------------------------------------------------- the keys
@pytest.mark.parametrize("changes, message", [
    ({"model.output_bias": 3}, "model.output_bias: must be true or false"),
    ({"model.init.c_std": -1.0}, "model.init.c_std: must be >= 0"),
    ({"model.output_bias": False, "runs.rich.parameterization.lr_c": None},
     "init.c_std = 0.8 is the spread of the output bias c, and output_bias is false"),
    ({"model.output_bias": False, "model.init.c_std": 0.0},
     "runs.rich.parameterization.lr_c is the learning rate of the output bias c, and model.output_bias is false"),
    ({"runs.rich.parameterization.lr_c": 0.0}, "runs.rich.parameterization.lr_c: must be > 0"),
    ({"data.population": True, "model.bias": False, "model.init.b_std": 0.0},
     "model.output_bias must be false"),
])
def test_bad_output_bias_keys_are_explained(changes, message):
    with pytest.raises(UsageError, match=message):
        mf.load_scenario(SCENARIO, changes)


def test_an_output_bias_key_is_named_with_its_line():
    text = ("name: s\ndata: {task: teacher_student, dim: 2, n_train: 8, n_test: 8}\n"
            "model:\n  width: 4\n  init: {c_std: 0.5}\nruns: {rich: mean_field}\n")
    with pytest.raises(UsageError, match="^s.yaml:3: model: init.c_std = 0.5 is the spread of the output bias"):
        parse_scenario(text, source="s.yaml")


def test_dry_run_shows_eta_c():
    text = plan(mf.load_scenario(SCENARIO)).describe()
    assert "eta_c = 0.7, c_std = 0.8" in text
    assert "eta_c" not in plan(mf.load_scenario(SCENARIO, {"model.output_bias": False, "model.init.c_std": 0.0,
                                                           "runs.rich.parameterization.lr_c": None})).describe()


def test_eta_c_defaults_to_lr_unscaled_by_the_width():
    scenario = mf.load_scenario(SCENARIO, {"runs.rich.parameterization": {"preset": "mean_field", "lr": 0.3}})
    r = plan(scenario).resolved["rich"]
    assert r.eta_c == 0.3 and r.eta_a == pytest.approx(0.3 * 6) and math.isclose(r.s, 1 / 6)
