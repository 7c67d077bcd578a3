"""Integrators: orders of convergence against exact solutions, and the stepping loop."""

import math

import numpy as np
import pytest
from scipy.linalg import expm

from solvers.integrate import (
    RK4,
    RK45,
    SGD,
    Euler,
    EulerMaruyama,
    Heun,
    LoopState,
    integrate,
    make_stepper,
    snapshot_times,
)

# a damped rotation: y' = A y, solved exactly by expm
A = np.array([[-0.5, 2.0, 0.0], [-2.0, -0.5, 0.3], [0.1, 0.0, -1.0]])
Y0 = np.array([1.0, -0.5, 2.0])


def linear_field(t, y, batch=None):
    return A @ y, 0.5 * float(y @ y)


def final_error(stepper, t_end=1.0):
    out = integrate(linear_field, LoopState(0.0, 0, Y0.copy()), stepper, [t_end])
    assert out.status == "complete" and out.state.t == t_end
    return np.linalg.norm(out.state.y - expm(A * t_end) @ Y0)


@pytest.mark.parametrize("method, order", [(Euler, 1), (Heun, 2), (RK4, 4)])
def test_fixed_step_order(method, order):
    dts = np.array([0.1, 0.05, 0.025, 0.0125])
    errors = [final_error(method(dt)) for dt in dts]
    slope = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    print(f"{method.__name__}: fitted order {slope:.3f}")
    assert abs(slope - order) < 0.3


@pytest.mark.parametrize("rtol", [1e-4, 1e-6, 1e-8])
def test_rk45_meets_tolerance(rtol):
    stepper = RK45(rtol=rtol, atol=rtol * 1e-3)
    out = integrate(linear_field, LoopState(0.0, 0, Y0.copy()), stepper, [2.0])
    exact = expm(A * 2.0) @ Y0
    relative = np.linalg.norm(out.state.y - exact) / np.linalg.norm(exact)
    assert relative < 10 * rtol
    # tighter tolerance -> more steps (the controller is doing something)
    assert out.state.step >= 3


def test_rk45_is_fifth_order_at_fixed_step():
    # with a huge tolerance every step is accepted; force the step with dt_max
    errors, dts = [], np.array([0.2, 0.1, 0.05])
    for dt in dts:
        stepper = RK45(rtol=1e3, atol=1e3, dt=dt, dt_max=dt)
        errors.append(final_error(stepper))
    slope = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    assert abs(slope - 5) < 0.3


def test_rk45_rejects_and_recovers():
    # a first trial step far too large must be rejected, then the answer is still right
    stepper = RK45(rtol=1e-8, atol=1e-11, dt=5.0)
    out = integrate(linear_field, LoopState(0.0, 0, Y0.copy()), stepper, [1.0])
    assert out.state.n_rejected >= 1
    assert np.allclose(out.state.y, expm(A) @ Y0, rtol=1e-6)


def test_snapshots_land_exactly_on_requested_times():
    times = snapshot_times(0.0, 1.0, 0.3)
    assert np.allclose(times, [0.3, 0.6, 0.9, 1.0])
    for stepper in (RK4(0.07), RK45(rtol=1e-6, atol=1e-9)):
        seen = []
        integrate(linear_field, LoopState(0.0, 0, Y0.copy()), stepper, times,
                  on_snapshot=lambda s: seen.append((s.t, s.y.copy())))
        assert [t for t, _ in seen] == list(times)
        for t, y in seen:
            assert np.allclose(y, expm(A * t) @ Y0, rtol=1e-5)


def test_exact_steps_take_dt_itself_and_snapshot_at_the_first_step_at_or_after_each_time():
    """Euler on y' = A y with exact steps is y_k = (I + dt A)^k y_0 at t_k = k dt; a save time
    is recorded at the first k with k dt >= it, once even when one step passes two of them;
    resumed from a snapshot, the run retraces the uninterrupted one."""
    dt, times = 0.3, [0.25, 1.0, 2.0, 2.05, 3.0]
    seen = []
    out = integrate(linear_field, LoopState(0.0, 0, Y0.copy()), Euler(dt), times, exact_steps=True,
                    on_snapshot=seen.append)
    steps = [1, 4, 7, 10]  # 2.0 and 2.05 share step 7 (t = 2.1); 3.0 is reached at step 10 within rounding
    assert [s.step for s in seen] == steps
    for state, k in zip(seen, steps):
        assert state.t == pytest.approx(k * dt, rel=1e-14)
        np.testing.assert_allclose(state.y, np.linalg.matrix_power(np.eye(3) + dt * A, k) @ Y0, rtol=1e-13)
    assert out.state.step == 10
    rest = integrate(linear_field, seen[1], Euler(dt), [t for t in times if t > seen[1].t], exact_steps=True)
    assert np.array_equal(rest.state.y, out.state.y) and rest.state.step == out.state.step


def test_the_loop_makes_new_states_and_leaves_the_start_as_it_was():
    """LoopState is frozen: integrate returns new states, every snapshot handed out stays as it
    was handed, and the caller's starting state (rk45's h included) is unchanged."""
    start = LoopState(0.0, 0, Y0.copy())
    seen = []
    out = integrate(linear_field, start, RK45(rtol=1e-6, atol=1e-9), [0.5, 1.0], on_snapshot=seen.append)
    assert (start.t, start.step, start.h, start.n_rejected) == (0.0, 0, None, 0)
    assert np.array_equal(start.y, Y0)
    assert [s.t for s in seen] == [0.5, 1.0] and seen[-1] is out.state
    assert seen[0].step < seen[1].step and seen[0].h is not None and seen[0].rng is None  # no RNG given
    with pytest.raises(AttributeError):
        out.state.t = 2.0


def test_stop_loss_stops_early_with_a_snapshot():
    def decay(t, y, batch=None):
        return -y, float(y @ y)

    seen = []
    out = integrate(decay, LoopState(0.0, 0, np.ones(2)), RK4(0.01), [10.0],
                    on_snapshot=lambda s: seen.append(s.t), stop_loss=1e-2)
    assert out.status == "stop_loss"
    # |y|^2 = 2 exp(-2t) < 1e-2 first at t = log(200) / 2
    assert abs(out.state.t - math.log(200) / 2) < 0.02
    assert seen == [out.state.t]


def test_divergence_is_reported_not_written():
    def blow_up(t, y, batch=None):
        with np.errstate(over="ignore"):
            return y**2, float(y[0])

    seen = []
    out = integrate(blow_up, LoopState(0.0, 0, np.ones(1)), Euler(0.5), [10.0],
                    on_snapshot=lambda s: seen.append(s.t))
    assert out.status == "diverged"
    assert "smaller dt than 0.5" in out.message
    assert np.all(np.isfinite(out.state.y)) and seen == []


def test_rk45_reports_collapsing_step():
    def blow_up(t, y, batch=None):
        return y**2, float(y[0])

    out = integrate(blow_up, LoopState(0.0, 0, np.ones(1)), RK45(dt_min=1e-6), [2.0])
    assert out.status == "diverged" and "rtol" in out.message
    assert out.state.t < 1.0  # the exact solution 1/(1-t) blows up at t = 1


def test_euler_maruyama_stationary_variance_of_ornstein_uhlenbeck():
    # dY = -Y dt + sqrt(2 tau) dB; the EM chain y <- (1-h) y + sqrt(2 tau h) xi has the
    # exact stationary variance tau / (1 - h/2)
    tau, h, n = 0.3, 0.1, 40_000

    def ou(t, y, batch=None):
        return -y, math.nan

    rng = np.random.default_rng(1)
    out = integrate(ou, LoopState(0.0, 0, np.zeros(n)), EulerMaruyama(h, tau), [8.0], rng=rng)
    expected = tau / (1 - h / 2)
    sample_var = out.state.y.var()
    standard_error = expected * math.sqrt(2 / n)
    assert abs(sample_var - expected) < 4 * standard_error
    # and the discretisation bias is visible: tau itself is more than 4 SE away
    assert abs(sample_var - tau) > 4 * standard_error


def test_euler_maruyama_without_temperature_is_euler():
    a = integrate(linear_field, LoopState(0.0, 0, Y0.copy()), EulerMaruyama(0.01, 0.0), [1.0])
    b = integrate(linear_field, LoopState(0.0, 0, Y0.copy()), Euler(0.01), [1.0])
    assert np.array_equal(a.state.y, b.state.y)


class LeastSquares:
    """Linear regression: the field is -grad of (1/2n) |X y - t|^2, with minibatches."""

    def __init__(self, n=64, d=3, seed=0):
        rng = np.random.default_rng(seed)
        self.X = rng.standard_normal((n, d))
        self.target = rng.standard_normal(n)
        self.n_samples = n

    def __call__(self, t, y, batch=None):
        X, target = (self.X, self.target) if batch is None else (self.X[batch], self.target[batch])
        residual = X @ y - target
        return -X.T @ residual / len(target), 0.5 * float(residual @ residual) / len(target)


def test_sgd_with_full_batch_is_gradient_descent():
    field = LeastSquares()
    rng = np.random.default_rng(0)
    a = integrate(field, LoopState(0.0, 0, np.zeros(3)), SGD(0.1, field.n_samples), [1.0], rng=rng)
    b = integrate(field, LoopState(0.0, 0, np.zeros(3)), Euler(0.1), [1.0])
    assert np.allclose(a.state.y, b.state.y, rtol=1e-13)


def test_sgd_minibatch_step_is_unbiased():
    field = LeastSquares()
    rng = np.random.default_rng(0)
    y = np.array([0.3, -0.2, 0.1])
    stepper = SGD(1.0, 8)
    draws = np.array([stepper.step(field, 0.0, y, 1.0, rng).y - y for _ in range(4000)])
    full = field(0.0, y)[0]
    standard_error = draws.std(axis=0) / math.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - full) < 4 * standard_error)
    assert np.all(draws.std(axis=0) > 0)  # the batches do differ


@pytest.mark.parametrize("method", ["rk45", "euler_maruyama", "sgd"])
def test_resume_from_a_snapshot_retraces_the_run(method):
    field = LeastSquares()
    stepper = make_stepper(method, dt=0.05, temperature=0.1, batch_size=8, rtol=1e-5, atol=1e-8)
    times = snapshot_times(0.0, 2.0, 0.5)
    rng = np.random.default_rng(3)
    saved = {}

    def keep(state):
        assert state.rng == rng.bit_generator.state  # the snapshot carries the stream's state
        saved[state.t] = state  # frozen: kept as handed

    full = integrate(field, LoopState(0.0, 0, np.zeros(3)), stepper, times, on_snapshot=keep, rng=rng)
    state = saved[1.0]
    rng2 = np.random.default_rng()
    rng2.bit_generator.state = state.rng
    rest = integrate(field, state, stepper, times[times > 1.0], rng=rng2)
    assert np.array_equal(rest.state.y, full.state.y)
    assert rest.state.step == full.state.step
