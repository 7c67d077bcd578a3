"""rk45 at its default tolerances on a relu flow costs no more than a few times a fixed-step
rk4 of the same accuracy (issue 13: its step used to collapse).

A relu teacher-student in mean-field scaling (m = 32, d = 2, n = 64, t up to 10), four draws.
Accuracy: the largest relative rms error, over four snapshot times, of the predictions on 256
test inputs, against rk4 at dt = T / 2048. Cost: evaluations of the vector field, all of them
(rk45: the first one, and 6 per step tried, rejected ones included; rk4: 4 per step). The rk4
of the same accuracy is the cheapest of dt = T / 4, T / 8, ..., T / 1024 at least as accurate.
"""

import numpy as np
import pytest

from meanfield.config.sections import DataSpec, IntegratorSpec, MeanFieldPreset, ModelSpec
from meanfield.model.data import make_dataset
from meanfield.model.parameterization import resolve
from solvers.activations import activation_code
from solvers.fields import ParticleField, ParticleLayout
from solvers.integrate import RK4, RK45, LoopState, integrate, make_stepper
from solvers.losses import loss_code
from solvers.particles import predict

M, D, N, T = 32, 2, 64, 10.0
TIMES = T / 4 * np.arange(1, 5)
SEEDS = range(4)
RELU = activation_code("relu")


def teacher_student(seed):
    """The mean-field particle field of a relu student on a relu teacher, its start, and
    ``predictions(y)``: the network's outputs on held-out inputs."""
    data = make_dataset(DataSpec(task="teacher_student", dim=D, n_train=N, n_test=256), np.random.default_rng(seed))
    r = resolve(MeanFieldPreset(), ModelSpec(width=M), D)
    rng = np.random.default_rng(1000 + seed)
    layout = ParticleLayout(M, D, False)
    y0 = layout.pack(r.a_std * rng.standard_normal(M), r.w_std * rng.standard_normal((M, D)))
    field = ParticleField(layout, data.X_train, data.y_train, s=r.s, eta_a=r.eta_a, eta_w=r.eta_w,
                          activation=RELU, loss=loss_code("squared"))
    return field, y0, lambda y: predict(*layout.split(y), data.X_test, r.s, RELU)


def solve(field, y0, predictions, stepper):
    """(evaluations of the field, the predictions at TIMES)."""
    seen = []
    out = integrate(field, LoopState(0.0, 0, y0.copy()), stepper, TIMES,
                    on_snapshot=lambda state: seen.append(predictions(state.y)))
    assert out.status == "complete"
    return out.n_evaluations, np.array(seen)


def error(got, reference):
    """max over snapshot times of rms(got - reference) / rms(reference)."""
    return float(np.max(np.sqrt(np.mean((got - reference) ** 2, axis=1) / np.mean(reference**2, axis=1))))


def costs_at_equal_accuracy(seed):
    field, y0, predictions = teacher_student(seed)
    _, reference = solve(field, y0, predictions, RK4(T / 2048))
    rk45_cost, rk45_out = solve(field, y0, predictions, make_stepper("rk45"))
    accuracy = error(rk45_out, reference)
    rk4 = [solve(field, y0, predictions, RK4(T / 2**k)) for k in range(2, 11)]
    assert error(rk4[-1][1], reference) < accuracy / 10, "the reference is not converged far enough to judge rk45"
    rk4_cost = min(cost for cost, out in rk4 if error(out, reference) <= accuracy)
    print(f"seed {seed}: rk45 {rk45_cost} evaluations, error {accuracy:.1e}; rk4 of that accuracy {rk4_cost}")
    return rk45_cost, rk4_cost


def test_the_schema_and_the_stepper_share_rk45s_defaults():
    spec, stepper = IntegratorSpec(method="rk45"), RK45()
    assert (spec.rtol, spec.atol, spec.dt_min) == (stepper.rtol, stepper.atol, stepper.dt_min)
    assert make_stepper("rk45") == stepper


@pytest.mark.slow
def test_rk45_on_relu_costs_a_few_times_rk4_of_the_same_accuracy():
    costs = np.array([costs_at_equal_accuracy(seed) for seed in SEEDS])
    ratio = costs[:, 0].sum() / costs[:, 1].sum()
    print(f"rk45 / rk4 evaluations at equal accuracy, over {len(SEEDS)} draws: {ratio:.2f}")
    assert ratio <= 3.0
