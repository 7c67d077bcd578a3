"""The particle vector field and its integration: layout, weight decay, rk4 order on the real flow."""

import numpy as np
import pytest
from reference import risk_and_gradient as risk_and_gradient_np

from solvers.activations import activation_code
from solvers.fields import ParticleField, ParticleLayout, WeightDecay
from solvers.integrate import RK4, RK45, LoopState, integrate
from solvers.losses import loss_code

M, D, N = 12, 3, 30


@pytest.fixture
def problem():
    rng = np.random.default_rng(7)
    X, y = rng.standard_normal((N, D)), rng.standard_normal(N)
    layout = ParticleLayout(M, D, bias=True)
    y0 = layout.pack(rng.standard_normal(M), rng.standard_normal((M, D)) / np.sqrt(D), 0.3 * rng.standard_normal(M))
    return X, y, layout, y0


def make_field(X, y, layout, **kw):
    return ParticleField(layout, X, y, s=1 / M, eta_a=M * 0.7, eta_w=M * 1.3,
                         activation=activation_code("tanh"), loss=loss_code("squared"), **kw)


def test_layout_round_trip(problem):
    _, _, layout, y0 = problem
    a, W, b = layout.split(y0)
    assert layout.size == M * (D + 2) and W.shape == (M, D)
    assert np.array_equal(layout.pack(a, W, b), y0)


def test_field_is_the_preconditioned_gradient_with_weight_decay(problem):
    X, y, layout, state = problem
    a, W, b = layout.split(state)
    velocity, loss = WeightDecay(make_field(X, y, layout), 0.1)(0.0, state)
    risk, ga, gW, gb = risk_and_gradient_np(a, W, b, X, y, 1 / M, "tanh", "squared")
    va, vW, vb = layout.split(velocity)
    assert np.allclose(va, -M * 0.7 * ga - 0.1 * a, rtol=1e-12, atol=1e-14)
    assert np.allclose(vW, -M * 1.3 * gW - 0.1 * W, rtol=1e-12, atol=1e-14)
    assert np.allclose(vb, -M * 1.3 * gb - 0.1 * b, rtol=1e-12, atol=1e-14)
    assert np.isclose(loss, risk)


def test_minibatch_field_uses_only_the_batch(problem):
    X, y, layout, state = problem
    batch = np.array([1, 4, 5, 20])
    full = make_field(X[batch], y[batch], layout)(0.0, state)
    sub = make_field(X, y, layout)(0.0, state, batch=batch)
    assert np.allclose(full[0], sub[0], rtol=1e-13) and np.isclose(full[1], sub[1])


def test_rk4_on_the_particle_flow_converges_at_order_four(problem):
    X, y, layout, y0 = problem
    field = make_field(X, y, layout)
    T = 2.0
    reference = integrate(field, LoopState(0.0, 0, y0), RK45(rtol=1e-13, atol=1e-15), [T]).state.y
    dts = np.array([0.2, 0.1, 0.05])
    errors = [np.linalg.norm(integrate(field, LoopState(0.0, 0, y0), RK4(dt), [T]).state.y - reference)
              for dt in dts]
    slope = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    print(f"rk4 on the particle flow: fitted order {slope:.2f}, error at dt = 0.05: {errors[-1]:.2e}")
    assert abs(slope - 4) < 0.3
    assert errors[-1] < 1e-6
