"""The curvature measures (docs/design.md §1.9): ntk_eigenvalue_max against numpy.linalg.eigvalsh
of the explicit kernel c J P J^T / n (J written here in plain NumPy), hessian_eigenvalue_max
against the Hessian by finite differences of the gradient, and their identity at a
zero-residual point of the squared loss."""

import numpy as np
import pytest

import meanfield as mf
from meanfield.engine.plan import plan
from meanfield.errors import UsageError
from meanfield.model import curvature as mc
from solvers import curvature as cv
from solvers.activations import ACTIVATIONS, activation_code, d2sigma, dsigma
from solvers.losses import loss_code, loss_derivative, loss_second_derivative
from solvers.ntk import empirical_ntk
from solvers.particles import BLAS_MIN_D

NP_ACT = {"tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
          "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(float))}


def parts(rng, m, d, n, bias=True, c_out=0.3):
    a, W, X = rng.standard_normal(m), rng.standard_normal((m, d)), rng.standard_normal((n, d))
    b = rng.standard_normal(m) if bias else None
    return a, W, b, X, c_out


def split(theta, m, d, bias, out):
    a, W = theta[:m], theta[m:m + m * d].reshape(m, d)
    b = theta[m + m * d:m + m * d + m] if bias else np.zeros(m)
    c = theta[-1] if out else 0.0
    return a, W, b, c


def np_f(theta, X, m, d, s, act, bias, out):
    """f(X) = s sum_i a_i sigma(w_i . x + b_i) + c, plain NumPy."""
    a, W, b, c = split(theta, m, d, bias, out)
    return s * NP_ACT[act][0](X @ W.T + b) @ a + c


def np_jacobian(theta, X, m, d, s, act, bias, out):
    """J = df(X)/dtheta (n x p), plain NumPy, in the layout [a, W, b, c]."""
    a, W, b, _ = split(theta, m, d, bias, out)
    Z = X @ W.T + b
    S, D = NP_ACT[act][0](Z), NP_ACT[act][1](Z)
    cols = [s * S, (s * (D * a)[:, :, None] * X[:, None, :]).reshape(len(X), m * d)]
    if bias:
        cols.append(s * D * a)
    if out:
        cols.append(np.ones((len(X), 1)))
    return np.hstack(cols)


def np_gradient(theta, X, y, m, d, s, act, bias, out, loss, c):
    """dR/dtheta = c/n J^T l'(f, y), plain NumPy (squared: f - y; logistic: -y sigmoid(-y f))."""
    f = np_f(theta, X, m, d, s, act, bias, out)
    lp = f - y if loss == "squared" else -y / (1 + np.exp(y * f))
    return c / len(X) * np_jacobian(theta, X, m, d, s, act, bias, out).T @ lp


def rates_of(m, d, bias, out, eta_a, eta_w, eta_c):
    return np.concatenate([np.full(m, eta_a), np.full(m * d, eta_w), np.full(m * bias, eta_w),
                           np.full(int(out), eta_c)])


# ----------------------------------------------------------------------------- derivatives
@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_second_derivative_of_each_activation_is_the_derivative_of_its_first(act):
    code, h = activation_code(act), 1e-5
    for z in (-1.7, -0.3, 0.4, 2.1):  # away from relu's kink
        fd = (dsigma.py_func(code, z + h) - dsigma.py_func(code, z - h)) / (2 * h)
        assert d2sigma.py_func(code, z) == pytest.approx(fd, rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_second_derivative_of_each_loss_is_the_derivative_of_its_first(loss):
    code, h = loss_code(loss), 1e-5
    for f, y in ((-1.3, 1.0), (0.2, -1.0), (2.5, 1.0)):
        fd = (loss_derivative.py_func(code, f + h, y) - loss_derivative.py_func(code, f - h, y)) / (2 * h)
        assert loss_second_derivative.py_func(code, f, y) == pytest.approx(fd, rel=1e-8)


@pytest.mark.parametrize("d", [3, BLAS_MIN_D])  # J^T v: the fused kernel, then BLAS
@pytest.mark.parametrize("bias,out", [(True, True), (False, False)])
def test_jacobian_products_are_those_of_the_explicit_jacobian(bias, out, d):
    rng = np.random.default_rng(1)
    m, n, s = 6, 9, 0.4
    a, W, b, X, c = parts(rng, m, d, n, bias, 0.3 if out else None)
    net = cv.TwoLayerNet(a, W, b, X, s, activation_code("tanh"), c_out=c)
    theta = np.concatenate([a, W.ravel(), b if bias else [], [c] if out else []])
    J = np_jacobian(theta, X, m, d, s, "tanh", bias, out)
    u, v = rng.standard_normal(net.size), rng.standard_normal(n)
    np.testing.assert_allclose(net.f(), np_f(theta, X, m, d, s, "tanh", bias, out), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(net.jvp(u), J @ u, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(net.vjp(v), J.T @ v, rtol=1e-12, atol=1e-13)


# ----------------------------------------------------------------------------- the NTK
@pytest.mark.parametrize("dense_size", [cv.DENSE_SIZE, 0])
def test_ntk_eigenvalue_max_is_the_top_eigenvalue_of_the_explicit_kernel_over_n(dense_size):
    """Exact (dense) and Lanczos (dense_size 0) against eigvalsh of c J P J^T / n."""
    rng = np.random.default_rng(2)
    m, d, n, s, loss_scale = 7, 3, 40, 0.5, 1.7
    eta = dict(eta_a=0.8, eta_w=2.5, eta_c=0.6)
    a, W, b, X, c = parts(rng, m, d, n)
    net = cv.TwoLayerNet(a, W, b, X, s, activation_code("relu"), c_out=c)
    theta = np.concatenate([a, W.ravel(), b, [c]])
    J = np_jacobian(theta, X, m, d, s, "relu", True, True)
    K = loss_scale * J @ np.diag(rates_of(m, d, True, True, **eta)) @ J.T / n
    want = np.linalg.eigvalsh(K)[::-1][:3]
    op = cv.ntk_operator(net, net.rates(eta["eta_a"], eta["eta_w"], eta["eta_c"]), loss_scale)
    got = cv.top_eigenvalues(op, 3, rng.standard_normal(n), dense_size=dense_size)
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_ntk_eigenvalue_max_is_that_of_the_probe_kernel_code():
    """The same number from the kernel every run's kernel measures use (solvers.ntk.empirical_ntk)."""
    rng = np.random.default_rng(3)
    a, W, b, X, _ = parts(rng, 8, 2, 30)
    r = dict(s=0.3, eta_a=1.3, eta_w=0.7, loss_scale=2.0)
    K = empirical_ntk(a, W, b, X, X, act=activation_code("tanh"), **r)
    net = cv.TwoLayerNet(a, W, b, X, r["s"], activation_code("tanh"))
    value = mc.ntk_eigenvalue_max(net, net.rates(r["eta_a"], r["eta_w"]), r["loss_scale"],
                                            rng.standard_normal(30))
    assert value == pytest.approx(np.linalg.eigvalsh(K)[-1] / 30, rel=1e-12)


# ----------------------------------------------------------------------------- the Hessian
@pytest.mark.parametrize("loss", ["squared", "logistic"])
@pytest.mark.parametrize("dense_size", [cv.DENSE_SIZE, 0])
def test_hessian_eigenvalue_max_against_finite_differences_of_the_gradient(loss, dense_size):
    rng = np.random.default_rng(4)
    m, d, n, s, c_loss = 5, 2, 12, 0.6, 1.4
    eta = dict(eta_a=0.9, eta_w=1.8, eta_c=0.5)
    a, W, b, X, c = parts(rng, m, d, n)
    y = np.sign(rng.standard_normal(n)) if loss == "logistic" else rng.standard_normal(n)
    theta = np.concatenate([a, W.ravel(), b, [c]])
    args = (X, y, m, d, s, "tanh", True, True, loss, c_loss)
    h = 1e-5
    H = np.stack([(np_gradient(theta + h * e, *args) - np_gradient(theta - h * e, *args)) / (2 * h)
                  for e in np.eye(len(theta))], axis=1)
    root = np.sqrt(rates_of(m, d, True, True, **eta))
    M = root[:, None] * (0.5 * (H + H.T)) * root[None, :]
    net = cv.TwoLayerNet(a, W, b, X, s, activation_code("tanh"), c_out=c)
    rates = net.rates(eta["eta_a"], eta["eta_w"], eta["eta_c"])
    first, second = cv.loss_derivatives(loss_code(loss), net.f(), y)
    op = cv.hessian_operator(net, rates, c_loss, first, second)
    u = rng.standard_normal(net.size)
    np.testing.assert_allclose(op.matvec(u), M @ u, rtol=1e-7, atol=1e-8)
    want = np.linalg.eigvalsh(M)[-1]
    got = mc.hessian_eigenvalue_max(net, y, loss_code(loss), rates, c_loss, rng.standard_normal(net.size))
    assert got == pytest.approx(want, rel=1e-7)
    lanczos = cv.top_eigenvalues(op, 1, rng.standard_normal(net.size), dense_size=dense_size)[0]
    assert lanczos == pytest.approx(want, rel=1e-7)


def test_hessian_equals_ntk_at_a_zero_residual_point_of_the_squared_loss():
    """y = f(X): l' = 0 and l'' = 1, so P^1/2 H P^1/2 = P^1/2 c J^T J P^1/2 / n, whose nonzero
    spectrum is that of c J P J^T / n."""
    rng = np.random.default_rng(5)
    a, W, b, X, c = parts(rng, 9, 3, 25)
    net = cv.TwoLayerNet(a, W, b, X, 0.4, activation_code("erf"), c_out=c)
    rates = net.rates(1.1, 2.3, 0.4)
    v0 = rng.standard_normal(200)
    ntk = mc.ntk_eigenvalue_max(net, rates, 1.5, v0)
    hessian = mc.hessian_eigenvalue_max(net, net.f(), loss_code("squared"), rates, 1.5, v0)
    assert hessian == pytest.approx(ntk, rel=1e-11)
    away = mc.hessian_eigenvalue_max(net, net.f() + rng.standard_normal(25), loss_code("squared"),
                                               rates, 1.5, v0)
    assert away != pytest.approx(ntk, rel=1e-6)


# ----------------------------------------------------------------------------- the runs
BASE = {
    "name": "curv",
    "seed": 3,
    "data": {"task": "teacher_student", "dim": 3, "n_train": 30, "n_test": 10, "teacher": {"width": 2}},
    "model": {"width": 8, "activation": "tanh", "bias": True, "output_bias": True},
    "runs": {"rich": "mean_field", "tangent": {"solver": "tangent"}, "kernel": {"solver": "ntk"}},
    "train": {"t_end": 0.4, "integrator": {"method": "euler", "dt": 0.05}},
    "record": {"every": 0.2, "dtype": "float64",
               "measures": ["ntk_eigenvalue_max", "hessian_eigenvalue_max"]},
}


def explicit_curvature(frame, c_out, data, attrs, loss="squared"):
    """(ntk, hessian) of the stored particles from the explicit J and the finite-difference Hessian."""
    m, d = frame.W.shape
    theta = np.concatenate([frame.a, frame.W.ravel(), frame.b, [c_out]])
    X, y, s = data.X_train, data.y_train, attrs["s"]
    rates = rates_of(m, d, True, True, attrs["eta_a"], attrs["eta_w"], attrs["eta_c"])
    J = np_jacobian(theta, X, m, d, s, "tanh", True, True)
    ntk = np.linalg.eigvalsh(attrs["loss_scale"] * J @ np.diag(rates) @ J.T / len(X))[-1]
    args, h = (X, y, m, d, s, "tanh", True, True, loss, attrs["loss_scale"]), 1e-5
    H = np.stack([(np_gradient(theta + h * e, *args) - np_gradient(theta - h * e, *args)) / (2 * h)
                  for e in np.eye(len(theta))], axis=1)
    root = np.sqrt(rates)
    return ntk, np.linalg.eigvalsh(root[:, None] * (0.5 * (H + H.T)) * root[None, :])[-1]


def test_particle_and_tangent_runs_record_both_measures_and_the_kernel_run_none():
    with mf.simulate(mf.load_scenario(BASE)) as trajectory:
        data = trajectory.data
        rich = trajectory["rich"]
        ntk, hessian = rich.measure("ntk_eigenvalue_max"), rich.measure("hessian_eigenvalue_max")
        bias = rich.measure("output_bias")
        for index in (0, -1):
            want = explicit_curvature(rich.frame(index), float(bias[index]), data, rich.attrs)
            assert float(ntk[index]) == pytest.approx(want[0], rel=1e-10)
            assert float(hessian[index]) == pytest.approx(want[1], rel=1e-6)
        assert float(ntk[0]) != float(ntk[-1])  # the particles moved
        tangent = trajectory["tangent"]
        t_ntk = np.asarray(tangent.measure("ntk_eigenvalue_max"))
        want = explicit_curvature(tangent.frame(0), float(tangent.measure("output_bias")[0]), data, tangent.attrs)
        assert np.all(t_ntk == t_ntk[0]) and t_ntk[0] == pytest.approx(want[0], rel=1e-10)
        # a linear model with squared loss: H = c J^T J / n at theta_0, the NTK's spectrum
        np.testing.assert_allclose(tangent.measure("hessian_eigenvalue_max"), t_ntk, rtol=1e-10)
        assert "ntk_eigenvalue_max" not in trajectory["kernel"].measures


def test_measures_are_reproducible_and_absent_unless_asked(tmp_path):
    paths = [tmp_path / "one.h5", tmp_path / "two.h5"]
    for path in paths:
        mf.simulate(mf.load_scenario(BASE, {"loss": "logistic", "data": {"task": "gaussian_mixture", "dim": 3,
                                                                        "n_train": 30, "n_test": 10}}), path).close()
    values = []
    for path in paths:
        with mf.open(path) as trajectory:
            values.append([np.asarray(trajectory[run].measure(name)).tolist() for run in ("rich", "tangent")
                           for name in ("ntk_eigenvalue_max", "hessian_eigenvalue_max")])
    assert values[0] == values[1]
    with mf.simulate(mf.load_scenario(BASE, {"record.measures": []})) as trajectory:
        assert not {"ntk_eigenvalue_max", "hessian_eigenvalue_max"} & set(trajectory["rich"].measures)


def test_a_scenario_of_ntk_runs_alone_refuses_the_curvature_measures():
    with pytest.raises(UsageError, match=r"record.measures: ntk_eigenvalue_max, hessian_eigenvalue_max are recorded "
                                         r"by particle and tangent runs, and every run here is an ntk run"):
        mf.load_scenario(BASE, {"runs": {"kernel": {"solver": "ntk"}}})


def test_population_mode_refuses_the_curvature_measures():
    with pytest.raises(UsageError, match="record.measures: hessian_eigenvalue_max are taken on a training set"):
        mf.load_scenario({"name": "p", "data": {"population": True, "dim": 3},
                          "runs": {"rich": "mean_field"}, "record": {"measures": ["hessian_eigenvalue_max"]}})


# ----------------------------------------------------------------------------- dt_factor
def test_dt_factor_sets_dt_from_the_initial_kernel_of_each_run_and_stores_it():
    scenario = mf.load_scenario(BASE, {"train.integrator": {"method": "euler", "dt_factor": 0.3},
                                       "runs.kernel": None, "record.every": 0.4})
    with mf.simulate(scenario) as trajectory:
        data = trajectory.data
        for name in ("rich", "tangent"):
            run = trajectory[name]
            want = explicit_curvature(run.frame(0), float(run.measure("output_bias")[0]), data, run.attrs)[0]
            assert run.attrs["lambda_0"] == pytest.approx(want, rel=1e-10)
            assert run.attrs["integrator"]["dt_factor"] == 0.3
            assert run.attrs["integrator"]["dt"] == pytest.approx(0.3 * 2 / want, rel=1e-10)
            assert run.attrs["lambda_0"] == float(run.measure("ntk_eigenvalue_max")[0])
    text = plan(scenario).describe()
    assert "step (train.integrator.dt_factor): dt = c * 2 / lambda_0 = 0.3 * 2 / " in text
    assert "every step of it (a snapshot at the first step at or after each snapshot time)" in text


def test_a_run_stepped_with_dt_factor_is_the_run_stepped_with_the_dt_it_gives():
    """Its steps are dt itself (never shortened to land on a snapshot, docs/design.md §3.4): at
    its last snapshot it is the run given that dt, ending there, after as many steps."""
    by_factor = mf.load_scenario(BASE, {"train.integrator": {"method": "heun", "dt_factor": 0.2},
                                        "runs.kernel": None, "runs.tangent": None, "record.measures": []})
    with mf.simulate(by_factor) as trajectory:
        run = trajectory["rich"]
        dt, steps, t = run.attrs["integrator"]["dt"], run.measure("loss_train").step.values, run.t
        np.testing.assert_allclose(run.times, steps * dt, rtol=1e-12)
        want = run.final()["loss_train"]
    assert by_factor.train.t_end <= t < by_factor.train.t_end + dt
    by_dt = by_factor.replace({"train.integrator": {"method": "heun", "dt": dt}, "train.t_end": t, "record.every": t})
    with mf.simulate(by_dt) as trajectory:
        assert trajectory["rich"].measure("loss_train").step.values[-1] == steps[-1]
        assert trajectory["rich"].final()["loss_train"] == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("factor,grows", [(0.95, False), (1.05, True)])
def test_euler_on_the_tangent_model_is_stable_below_dt_factor_one_and_not_above(factor, grows):
    """Squared loss, tangent model: f - y follows r <- (I - dt K/n) r exactly, whose top mode
    grows when dt lambda_0 > 2, i.e. dt_factor > 1."""
    scenario = mf.load_scenario(BASE, {"runs": {"tangent": {"solver": "tangent"}}, "record.measures": [],
                                       "train.integrator": {"method": "euler", "dt_factor": factor}})
    scenario = scenario.replace({"train.t_end": 200 * 2 * factor / plan(scenario).steps["tangent"][1],
                                 "record.every": 1e9})
    with mf.simulate(scenario) as trajectory:
        loss = trajectory["tangent"].measure("loss_train").values
    assert (loss[-1] > 10 * loss[0]) == grows and (loss[-1] < loss[0]) != grows


def test_dt_factor_is_validated():
    with pytest.raises(UsageError, match=r"train.integrator: dt = 0.1 and dt_factor = 0.5 both set the step"):
        mf.load_scenario(BASE, {"train.integrator": {"method": "euler", "dt": 0.1, "dt_factor": 0.5}})
    with pytest.raises(UsageError, match=r"dt_factor sets a fixed step, and 'rk45' chooses its own"):
        mf.load_scenario(BASE, {"train.integrator": {"method": "rk45", "dt_factor": 0.5}})
    with pytest.raises(UsageError, match=r"train.integrator.dt_factor: must be > 0"):
        mf.load_scenario(BASE, {"train.integrator": {"method": "euler", "dt_factor": 0}})
    with pytest.raises(UsageError, match=r"train.integrator.dt_factor scales the step to the training set's NTK"):
        mf.load_scenario({"name": "p", "data": {"population": True, "dim": 3}, "runs": {"rich": "mean_field"},
                          "train": {"integrator": {"method": "euler", "dt_factor": 0.5}}})
    # a run's own step, given either way, replaces the shared one
    own = mf.load_scenario(BASE, {"train.integrator": {"method": "euler", "dt_factor": 0.5},
                                  "runs.rich": {"parameterization": "mean_field", "integrator": {"dt": 0.01}}})
    assert own.integrator_of(own.runs["rich"]).dt == 0.01 and own.integrator_of(own.runs["rich"]).dt_factor is None


def test_an_ntk_run_takes_lambda_0_from_its_kernel_as_the_tangent_run_from_its_particles():
    """The same kernel (empirical, same parameterization) by two independent routes: the ntk
    run's BLAS-built K(X, X) and the tangent run's matrix-free products."""
    scenario = mf.load_scenario(BASE, {"loss": "logistic", "record.measures": [],
                                       "data": {"task": "gaussian_mixture", "dim": 3, "n_train": 30, "n_test": 10},
                                       "train.integrator": {"method": "euler", "dt_factor": 0.5}})
    steps = plan(scenario).steps
    assert set(steps) == {"rich", "tangent", "kernel"}
    assert steps["kernel"][1] == pytest.approx(steps["tangent"][1], rel=1e-10)
    with mf.simulate(scenario) as trajectory:
        assert trajectory["kernel"].attrs["lambda_0"] == pytest.approx(steps["kernel"][1], rel=1e-12)
