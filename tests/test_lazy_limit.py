"""Chizat, Oyallon & Bach (2019): the lazy preset approaches the NTK run as alpha grows.

The same symmetric particles (f_0 = 0) run under `lazy` with alpha in {10, 100, 1000} and as
kernel gradient flow with their own empirical NTK (which is the kernel of `lazy` at every
alpha). Their bound: for a smooth activation the test-prediction gap is O(1/alpha). For
relu the linearisation is not smooth (the gradient jumps where a neuron's sign flips on a
data point) and the gap shrinks more slowly; the test prints what it measured.
"""

import numpy as np
import pytest
from recorded import measures

import meanfield as mf
from meanfield.config.loading import parse_scenario

ALPHAS = (10, 100, 1000)
SCENARIO = """
name: lazy-limit
seed: 1
data: {{task: teacher_student, dim: 3, n_train: 40, n_test: 50, teacher: {{width: 2, activation: {act}}}}}
model: {{width: 64, activation: {act}, init: {{symmetric: true}}}}
runs:
  ntk: {{solver: ntk, kernel: empirical}}
{lazy_runs}
train:
  t_end: 2.0
  integrator: {{method: rk45, rtol: 1.0e-10, atol: 1.0e-13}}
record: {{every: 1.0, particles: false}}
"""


def final_gaps(tmp_path, act):
    lazy_runs = "\n".join(f"  lazy{a}: {{parameterization: {{preset: lazy, alpha: {a}}}}}" for a in ALPHAS)
    scenario = parse_scenario(SCENARIO.format(act=act, lazy_runs=lazy_runs))
    out = tmp_path / f"{act}.h5"
    mf.simulate(scenario, out).close()
    scale = np.sqrt(np.mean(measures(out, "ntk")["f_test"].value[-1] ** 2))
    return np.array([measures(out, f"lazy{a}")["gap_ntk"].value[-1] for a in ALPHAS]) / scale


@pytest.mark.parametrize("act", ["erf", "tanh"])
def test_smooth_activation_gap_shrinks_like_one_over_alpha(tmp_path, act):
    gaps = final_gaps(tmp_path, act)
    slope = np.polyfit(np.log(ALPHAS), np.log(gaps), 1)[0]
    print(f"{act}: relative gap to the ntk run {gaps}, fitted slope {slope:.3f}")
    assert slope <= -0.85
    assert gaps[-1] < 1e-2


def test_relu_gap_shrinks_too(tmp_path):
    gaps = final_gaps(tmp_path, "relu")
    slope = np.polyfit(np.log(ALPHAS), np.log(gaps), 1)[0]
    print(f"relu: relative gap to the ntk run {gaps}, fitted slope {slope:.3f}")
    assert np.all(np.diff(gaps) < 0) and slope < -0.3


@pytest.mark.parametrize("loss, data", [
    ("squared", "data.teacher.activation=relu"),
    ("logistic", "data={task: gaussian_mixture, dim: 3, n_train: 40, n_test: 50}"),
])
def test_tangent_run_matches_the_kernel_run_from_the_same_particles(tmp_path, loss, data):
    # the finite-width linearized network, integrated in parameter space, and kernel gradient
    # flow with the same particles' NTK are one dynamics: their test predictions agree
    scenario = parse_scenario(SCENARIO.format(act="tanh", lazy_runs="  tangent: {solver: tangent}"),
                              overrides=[f"loss={loss}", data])
    out = tmp_path / "tangent.h5"
    mf.simulate(scenario, out).close()
    tangent, ntk = measures(out, "tangent"), measures(out, "ntk")
    scale = np.sqrt(np.mean(ntk["f_test"].value[-1] ** 2))
    assert np.all(tangent["gap_ntk"].value < 1e-7 * scale)
    assert np.allclose(tangent["loss_train"].value, ntk["loss_train"].value, rtol=1e-7)


def test_a_reference_that_stops_early_is_compared_with_the_predictions_it_stopped_with(tmp_path):
    # logistic loss: the ntk reference is integrated, and stop_loss ends it before the rich run
    scenario = parse_scenario(SCENARIO.format(act="tanh", lazy_runs="  rich: mean_field"), overrides=[
        "loss=logistic", "data={task: gaussian_mixture, dim: 3, n_train: 40, n_test: 50}",
        "train.integrator={method: euler, dt: 0.05}", "train.t_end=6", "train.stop_loss=0.63",
        "runs.ntk.parameterization={preset: ntk, lr: 20}"])
    out = tmp_path / "stop.h5"
    mf.simulate(scenario, out).close()
    ntk, rich = measures(out, "ntk"), measures(out, "rich")
    assert ntk["f_test"].time[-1] < rich["gap_ntk"].time[-1]  # the reference stopped first
    gap, f_rich = rich["gap_ntk"], rich["f_test"].value
    late = gap.time > ntk["f_test"].time[-1]
    expected = np.sqrt(np.mean((f_rich[late] - ntk["f_test"].value[-1]) ** 2, axis=1))
    assert late.any() and np.all(np.isfinite(gap.value))
    np.testing.assert_allclose(gap.value[late], expected, rtol=1e-5)
