"""The hinge loss l(f, y) = max(0, 1 - y f) in every solver that takes a loss (docs/design.md §1.2):
the particles' gradient against finite differences away from the kink, the tangent and the
function-space kernel flows against the network's own field, the schema's refusals, and a tiny
run end to end."""

import os
import sys

import numpy as np
import pytest

import meanfield as mf
from meanfield.errors import UsageError
from solvers.activations import ACTIVATIONS
from solvers.fields import ParticleField, ParticleLayout
from solvers.losses import LOSSES
from solvers.ntk import FunctionSpaceField, TangentField, empirical_ntk
from solvers.particles import predict, risk_and_gradient

sys.path.insert(0, os.path.dirname(__file__))
import reference as ref  # noqa: E402

HINGE = LOSSES["hinge"]


def problem(m=7, n=23, d=3, seed=0):
    rng = np.random.default_rng(seed)
    a, W, b = rng.normal(size=m), rng.normal(size=(m, d)) / np.sqrt(d), 0.3 * rng.normal(size=m)
    X, y = rng.normal(size=(n, d)), np.sign(rng.normal(size=n))
    return a, W, b, X, y


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_particle_gradient_under_hinge_matches_finite_differences(act):
    """dR/dtheta of R = c (1/n) sum_k max(0, 1 - y_k f(x_k)) against central differences of R,
    at a point where no sample sits within the differences' reach of the kink y f = 1 (nor,
    for relu, of a neuron's kink w . x + b = 0), so R is smooth there."""
    a, W, b, X, y = problem()
    s, c, h, code = 0.6, 0.7, 1e-6, ACTIVATIONS[act]
    f = predict(a, W, b, X, s, code)
    assert np.min(np.abs(y * f - 1.0)) > 1e-3 and np.min(np.abs(W @ X.T + b[:, None])) > 1e-4
    assert 0 < np.sum(y * f < 1) < len(y)  # some samples on each side of the kink
    risk, ga, gW, gb = risk_and_gradient(a, W, b, X, y, s, code, HINGE, loss_scale=c)
    assert risk == pytest.approx(c * np.mean(np.maximum(0.0, 1.0 - y * f)), rel=1e-14)
    theta = np.concatenate([a, W.ravel(), b])
    m, d = W.shape

    def R(v):
        return risk_and_gradient(v[:m], v[m:m + m * d].reshape(m, d), v[m + m * d:], X, y, s, code, HINGE,
                                 loss_scale=c)[0]

    fd = np.array([(R(theta + h * e) - R(theta - h * e)) / (2 * h) for e in np.eye(theta.size)])
    np.testing.assert_allclose(np.concatenate([ga, gW.ravel(), gb]), fd, rtol=1e-6, atol=1e-9)


def test_tangent_and_function_space_fields_take_the_hinge_loss():
    """At theta_0 the tangent model's field is the network's, and the kernel flow's
    df/dt = -(1/n) K l'(f, y) is the plain NumPy product with l' = -y [y f < 1]."""
    a, W, b, X, y = problem(seed=3)
    numbers = dict(s=0.5, eta_a=0.8, eta_w=1.3, loss_scale=0.7)
    tangent = TangentField(a, W, b, X, y, act="tanh", loss="hinge", **numbers)
    network = ParticleField(ParticleLayout(*W.shape, True), X, y, activation=ACTIVATIONS["tanh"], loss=HINGE,
                            **numbers)
    theta0 = tangent.initial_state()
    (v_lin, l_lin), (v_net, l_net) = tangent(0.0, theta0), network(0.0, theta0)
    np.testing.assert_allclose(v_lin, v_net, rtol=1e-11, atol=1e-14)
    assert l_lin == pytest.approx(l_net, rel=1e-12)
    K = empirical_ntk(a, W, b, X, act="tanh", **numbers)
    f = predict(a, W, b, X, numbers["s"], ACTIVATIONS["tanh"])
    field = FunctionSpaceField(K, y, "hinge")
    df, loss = field(0.0, f.copy())
    np.testing.assert_allclose(df, -K @ ref.dloss("hinge", f, y) / len(y), rtol=1e-12, atol=1e-15)
    assert loss == pytest.approx(np.mean(np.maximum(0.0, 1.0 - y * f)), rel=1e-14)


SCENARIO = {
    "name": "hinge", "loss": "hinge",
    "data": {"task": "gaussian_mixture", "dim": 3, "n_train": 24, "n_test": 12},
    "model": {"width": 16, "activation": "relu"},
    "runs": {"rich": "mean_field", "tangent": {"solver": "tangent"}, "ntk": {"solver": "ntk"}},
    "train": {"t_end": 2.0, "integrator": {"method": "rk4", "dt": 0.05}},
    "record": {"every": 1.0},
}


def test_a_tiny_hinge_run_end_to_end():
    """Every kind of run on data trains under the hinge loss, and its training loss falls; the
    network's loss_train is the mean hinge loss, in plain NumPy, of its stored particles
    (float32 in the file: a relative 1e-5)."""
    with mf.simulate(mf.load_scenario(SCENARIO)) as trajectory:
        for name in ("rich", "tangent", "ntk"):
            loss = trajectory[name].series("loss_train").value
            assert trajectory[name].status == "complete" and np.all(np.isfinite(loss)) and loss[-1] < loss[0]
        rich, data = trajectory["rich"], trajectory.data
        frame = rich.frame(-1)
        f = ref.predict(frame.a, frame.W, None, data.X_train, rich.attrs["s"], "relu")
        want = np.mean(np.maximum(0.0, 1.0 - data.y_train * f))
        assert rich.final()["loss_train"] == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("changes, message", [
    ({"data": {"task": "teacher_student"}}, "loss 'hinge' needs labels \\+-1; task 'teacher_student' is a regression"),
    ({"data": {"task": "teacher_student", "population": True}, "runs": {"rich": "mean_field"}},
     "loss must be squared"),
])
def test_the_schema_refuses_hinge_where_it_does_not_apply(changes, message):
    with pytest.raises(UsageError, match=message):
        mf.load_scenario({**SCENARIO, **changes})
