"""The ridge of an ntk run and the t -> infinity limit of its squared-loss flow
(docs/design.md §1.6): the limit against numpy.linalg.solve of the kernel system, the flow at
large t against the limit, the ridge flow against a plain NumPy Euler integration of
df/dt = -(1/n) K (f - y) - lambda (f - f_0), and the run's constants in the file, the
summary and the results table."""

import numpy as np
import pytest
from click.testing import CliRunner

import meanfield as mf
from meanfield.cli import main
from solvers.ntk import FunctionSpaceField, LinearizedSquared

N, N_TEST = 12, 7


def kernel_problem(seed=0, rank=None):
    """A positive definite (or, with ``rank``, singular) kernel on train and test points
    together, K = F F^T with random features F, and labels and a start f_0."""
    rng = np.random.default_rng(seed)
    F = rng.normal(size=(N + N_TEST, rank or 3 * N)) / np.sqrt(rank or 3 * N)
    K_all = F @ F.T
    return dict(K=K_all[:N, :N], Kt=K_all[N:, :N], y=rng.normal(size=N), f0=0.3 * rng.normal(size=N),
                f0t=0.3 * rng.normal(size=N_TEST))


def solved(p, ridge=0.0):
    return LinearizedSquared(p["K"], p["y"], p["f0"], p["Kt"], p["f0t"], ridge=ridge)


# ----------------------------------------------------------------------------- the limit
@pytest.mark.parametrize("ridge", [0.05, 1e-3])
def test_ridge_limit_is_kernel_ridge_regression_from_f0(ridge):
    """f = f_0 + K (K + n lambda I)^-1 (y - f_0) on train, the same with K(X*, X) on test."""
    p = kernel_problem()
    alpha = np.linalg.solve(p["K"] + N * ridge * np.eye(N), p["y"] - p["f0"])
    f_train, f_test = solved(p, ridge).limit()
    np.testing.assert_allclose(f_train, p["f0"] + p["K"] @ alpha, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(f_test, p["f0t"] + p["Kt"] @ alpha, rtol=1e-10, atol=1e-12)


def test_ridgeless_limit_interpolates_on_an_invertible_kernel():
    p = kernel_problem()
    assert np.linalg.cond(p["K"]) < 1e4
    alpha = np.linalg.solve(p["K"], p["y"] - p["f0"])
    f_train, f_test = solved(p).limit()
    np.testing.assert_allclose(f_train, p["y"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(f_test, p["f0t"] + p["Kt"] @ alpha, rtol=1e-10, atol=1e-10)


def test_ridgeless_limit_on_a_singular_kernel_is_the_projection_onto_its_range():
    """rank 5 < n: f(X) = f_0 + K K^+ (y - f_0) (the projection), f(X*) = f_0 + K* K^+ (y - f_0)."""
    p = kernel_problem(seed=1, rank=5)
    assert np.linalg.matrix_rank(p["K"]) == 5
    pinv = np.linalg.pinv(p["K"], hermitian=True)
    f_train, f_test = solved(p).limit()
    np.testing.assert_allclose(f_train, p["f0"] + p["K"] @ pinv @ (p["y"] - p["f0"]), atol=1e-10)
    np.testing.assert_allclose(f_test, p["f0t"] + p["Kt"] @ pinv @ (p["y"] - p["f0"]), atol=1e-9)
    assert not np.allclose(f_train, p["y"], atol=1e-3)  # a projection, not an interpolation


@pytest.mark.parametrize("ridge", [0.0, 0.02])
def test_the_flow_at_large_t_reaches_the_limit(ridge):
    p = kernel_problem()
    exact = solved(p, ridge)
    slowest = exact.eigenvalues[exact.eigenvalues > 0].min() / N + ridge  # mu_min
    late = exact.predict(40.0 / slowest)  # e^-40 of the start left in the slowest mode
    for got, want in zip(late, exact.limit()):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    early = exact.predict(0.1 / slowest)
    assert not np.allclose(early[1], exact.limit()[1], atol=1e-3)


# ----------------------------------------------------------------------------- the ridge flow
def euler(p, ridge, t_end, dt):
    """df/dt = -(1/n) K(., X) (f(X) - y) - lambda (f - f_0) on [X; X*], by Euler steps."""
    K_all = np.vstack([p["K"], p["Kt"]])
    f0 = np.concatenate([p["f0"], p["f0t"]])
    f = f0.copy()
    for _ in range(round(t_end / dt)):
        f = f + dt * (-(K_all @ (f[:N] - p["y"])) / N - ridge * (f - f0))
    return f


def test_the_ridge_flow_is_the_euler_limit_of_its_equation():
    """Euler's error against the closed form halves with the step (first order) and is small."""
    p, ridge, t = kernel_problem(), 0.3, 2.0
    f_train, f_test = solved(p, ridge).predict(t)
    exact = np.concatenate([f_train, f_test])
    errors = [np.abs(euler(p, ridge, t, dt) - exact).max() for dt in (0.02, 0.01)]
    assert 0.45 < errors[1] / errors[0] < 0.55
    assert errors[1] < 1e-3 * np.abs(exact).max()
    plain = np.concatenate(solved(p).predict(t))
    assert np.abs(plain - exact).max() > 100 * errors[1]  # the ridge changes the flow


def test_the_ridge_flow_starts_at_f0_and_ridge_zero_is_the_plain_flow():
    p = kernel_problem()
    f_train, f_test = solved(p, 0.5).predict(0.0)
    assert np.array_equal(f_train, p["f0"]) and np.array_equal(f_test, p["f0t"])
    times = np.array([0.5, 3.0])
    for with_zero, plain in zip(solved(p, 0.0).predict(times),
                                LinearizedSquared(p["K"], p["y"], p["f0"], p["Kt"], p["f0t"]).predict(times)):
        assert np.array_equal(with_zero, plain)


@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_the_integrated_field_adds_the_ridge_term(loss):
    p = kernel_problem()
    y = np.sign(p["y"]) if loss == "logistic" else p["y"]
    f0 = np.concatenate([p["f0"], p["f0t"]])
    field = FunctionSpaceField(p["K"], y, loss, p["Kt"], ridge=0.4, f0=f0)
    f = f0 + np.random.default_rng(5).normal(size=f0.size)
    slope = (f[:N] - y) if loss == "squared" else -y / (1 + np.exp(y * f[:N]))
    want = -np.vstack([p["K"], p["Kt"]]) @ slope / N - 0.4 * (f - f0)
    got, _ = field(0.0, f)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_the_integrated_ridge_flow_matches_the_closed_form():
    from solvers.integrate import RK45, LoopState, integrate

    p, ridge = kernel_problem(), 0.2
    field = FunctionSpaceField(p["K"], p["y"], "squared", p["Kt"], ridge=ridge,
                               f0=np.concatenate([p["f0"], p["f0t"]]))
    out = integrate(field, LoopState(0.0, 0, field.initial_state(p["f0"], p["f0t"])), RK45(rtol=1e-11, atol=1e-13),
                    [3.0])
    np.testing.assert_allclose(out.state.y, np.concatenate(solved(p, ridge).predict(3.0)), atol=1e-9)


def test_solvers_refuse_a_negative_ridge_and_a_ridge_without_f0():
    p = kernel_problem()
    with pytest.raises(ValueError, match="ridge must be finite and >= 0"):
        solved(p, -0.1)
    with pytest.raises(ValueError, match="ridge must be finite and >= 0"):
        FunctionSpaceField(p["K"], p["y"], "squared", ridge=np.nan)
    with pytest.raises(ValueError, match="a ridge needs f0"):
        FunctionSpaceField(p["K"], p["y"], "squared", ridge=0.1)


# ----------------------------------------------------------------------------- ntk runs
SCENARIO = {
    "name": "limits",
    "data": {"task": "teacher_student", "dim": 3, "n_train": 24, "n_test": 16, "teacher": {"width": 2}},
    "model": {"width": 64, "activation": "tanh"},
    "runs": {"ntk": {"solver": "ntk", "ridge": 0.01}},
    "train": {"t_end": 4.0},
    "record": {"every": 2.0},
}


def losses(traj, name="ntk"):
    final = traj[name].final()
    return final["loss_train"], final["loss_test"]


@pytest.mark.parametrize("ridge", [0.0, 0.01])
def test_an_ntk_run_stores_its_limit_and_a_late_flow_reaches_it(ridge):
    """loss_*_limit are the losses (same definition) the flow reaches as t grows."""
    changes = {"runs.ntk.ridge": ridge}
    traj = mf.simulate(mf.load_scenario(SCENARIO, changes))
    run = traj["ntk"]
    assert run.attrs["ridge"] == ridge
    assert set(run.constants) == {"loss_train_limit", "loss_test_limit"}
    final = run.final()
    assert final["loss_test_limit"] == run.constants["loss_test_limit"]
    assert final["loss_train_limit"] < final["loss_train"]
    limit = run.constants["loss_train_limit"], run.constants["loss_test_limit"]
    late = mf.simulate(mf.load_scenario(SCENARIO, {**changes, "train.t_end": 1e9, "record.every": 1e9}))
    np.testing.assert_allclose(losses(late), limit, rtol=1e-6, atol=1e-12)
    assert float(run.to_dataset()["loss_test_limit"]) == limit[1]
    assert "loss_test_limit" in traj.summary()


def test_the_limit_in_the_run_is_kernel_ridge_regression_on_the_files_data():
    """With the analytic kernel of a linear network, K(x, x') = eta_a (w_var x.x') + a_var eta_w x.x'
    (no bias) is written here, and the limit's losses are those of numpy.linalg.solve's fit."""
    ridge = 0.05
    sc = mf.load_scenario(SCENARIO, {"model.activation": "linear", "runs.ntk.kernel": "analytic",
                                     "runs.ntk.ridge": ridge})
    traj = mf.simulate(sc)
    data = traj.data
    w_var = sc.model.init.w_std ** 2 / sc.data.dim
    a_var = sc.model.init.a_std ** 2
    gram = lambda A, B: (w_var + a_var) * A @ B.T  # noqa: E731 - eta_a = eta_w = lr = 1 (ntk preset)
    alpha = np.linalg.solve(gram(data.X_train, data.X_train) + len(data.y_train) * ridge * np.eye(len(data.y_train)),
                            data.y_train)
    train = 0.5 * np.mean((gram(data.X_train, data.X_train) @ alpha - data.y_train) ** 2)
    test = 0.5 * np.mean((gram(data.X_test, data.X_train) @ alpha - data.y_test) ** 2)
    constants = traj["ntk"].constants
    np.testing.assert_allclose([constants["loss_train_limit"], constants["loss_test_limit"]], [train, test],
                               rtol=1e-9)


def test_a_logistic_ntk_run_with_a_ridge_is_integrated_and_has_no_limit():
    sc = mf.load_scenario(SCENARIO, {"data": {"task": "gaussian_mixture", "dim": 3, "n_train": 24, "n_test": 16},
                                     "loss": "logistic", "train.integrator": {"method": "rk4", "dt": 0.1}})
    with_ridge = mf.simulate(sc)["ntk"]
    plain = mf.simulate(sc.replace({"runs.ntk.ridge": 0.0}))["ntk"]
    assert with_ridge.constants == {} and "loss_test_limit" not in with_ridge.final()
    # the ridge holds f back near f_0: a higher training loss than the plain flow
    assert with_ridge.final()["loss_train"] > plain.final()["loss_train"]
    text = mf.plan(sc).describe()
    assert "ridge 0.01: integrated (logistic loss: no closed-form limit)" in text


def test_dry_run_shows_the_ridge_and_the_stored_limit():
    result = CliRunner().invoke(main, ["simulate", "quickstart", "--dry-run", "--set", "runs.ntk.ridge=0.001"])
    assert result.exit_code == 0, result.output
    assert ("kernel flow with the empirical kernel, ridge 0.001: closed form; its t -> infinity limit stored as "
            "loss_train_limit, loss_test_limit") in result.output


@pytest.mark.parametrize("value, words", [
    ("-1", "runs.ntk.ridge: must be >= 0 (got -1)"),
    (".inf", "runs.ntk.ridge: must be a finite number, not inf"),
])
def test_a_bad_ridge_is_one_clear_error(tmp_path, value, words):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\ndata: {task: teacher_student, dim: 3}\nmodel: {width: 8}\n"
                    f"runs:\n  ntk: {{solver: ntk, ridge: {value}}}\n")
    result = CliRunner().invoke(main, ["simulate", str(path), "--dry-run"])
    assert result.exit_code == 2
    assert f"{path}:5: {words}" in result.output


def test_ridge_is_a_key_of_ntk_runs_only(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\ndata: {task: teacher_student, dim: 3}\nmodel: {width: 8}\n"
                    "runs:\n  rich: {solver: particles, ridge: 0.1}\n")
    result = CliRunner().invoke(main, ["simulate", str(path), "--dry-run"])
    assert result.exit_code == 2
    assert f"{path}:5: unknown key 'runs.rich.ridge'; allowed here: solver, parameterization" in result.output
