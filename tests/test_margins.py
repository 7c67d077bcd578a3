"""The margin measures (docs/design.md §1.7): margin = min_k y_k f(x_k) on the training set and
normalized_margin, recorded on request, against a direct NumPy computation from the stored
particles (and the kernel flow's stored predictions), and refused where they do not apply."""

import os
import sys

import numpy as np
import pytest
import scipy.linalg

import meanfield as mf
from meanfield.errors import UsageError
from meanfield.model import diagnostics as dg
from solvers.ntk import analytic_kernels

sys.path.insert(0, os.path.dirname(__file__))
import reference as ref  # noqa: E402

SCENARIO = {
    "name": "margins", "loss": "logistic",
    "data": {"task": "gaussian_mixture", "dim": 3, "n_train": 24, "n_test": 12},
    "model": {"width": 16, "activation": "relu", "bias": True},
    "runs": {"rich": "mean_field"},
    "train": {"t_end": 3.0, "integrator": {"method": "rk4", "dt": 0.05}},
    "record": {"every": 1.0, "dtype": "float64", "measures": ["margin", "normalized_margin"]},
}


def test_particle_norm_and_margin_by_hand():
    """N(theta) for both layers (relu: s sum_i (a_i^2 + |w_i|^2 + b_i^2), quadratic: the 3/2 power)
    and for the output layer alone (s sqrt(m) |a|); the normalised margin is unchanged when the
    trained parameters are scaled, as a homogeneous network's must be."""
    rng = np.random.default_rng(0)
    a, W, b, X = rng.normal(size=5), rng.normal(size=(5, 3)), rng.normal(size=5), rng.normal(size=(9, 3))
    y = np.sign(rng.normal(size=9))
    s = 0.2
    assert dg.margin([1.0, -2.0, 3.0], [1, 1, -1]) == -3.0
    assert dg.particle_norm(a, W, b, s, 1, False) == pytest.approx(
        s * sum(a[i] ** 2 + W[i] @ W[i] + b[i] ** 2 for i in range(5)), rel=1e-14)
    assert dg.particle_norm(a, W, None, s, 2, False) == pytest.approx(
        s * sum((a[i] ** 2 + W[i] @ W[i]) ** 1.5 for i in range(5)), rel=1e-14)
    assert dg.particle_norm(a, W, b, s, 1, True) == pytest.approx(s * np.sqrt(5 * np.sum(a**2)), rel=1e-14)
    for act, k in (("relu", 1), ("quadratic", 2)):
        def normalized(a, W, b, output_only):
            f = ref.predict(a, W, b, X, s, act)
            return dg.margin(f, y) / dg.particle_norm(a, W, b, s, k, output_only)

        assert normalized(3 * a, 3 * W, 3 * b, False) == pytest.approx(normalized(a, W, b, False), rel=1e-12)
        assert normalized(3 * a, W, b, True) == pytest.approx(normalized(a, W, b, True), rel=1e-12)


def test_kernel_norm_is_the_rkhs_norm_of_a_kernel_predictor():
    """f = K alpha has ||f||_K^2 = alpha^T K alpha, also for a singular K (pseudo-inverse)."""
    rng = np.random.default_rng(1)
    F = rng.normal(size=(6, 4))
    for K in (F @ F.T + np.eye(6), F @ F.T):  # invertible, rank 4
        alpha = rng.normal(size=6)
        f = K @ alpha
        assert dg.kernel_norm(f, *scipy.linalg.eigh(K)) == pytest.approx(np.sqrt(alpha @ K @ alpha), rel=1e-9)


def test_margins_recorded_match_numpy_from_the_stored_particles_and_predictions():
    scenario = mf.load_scenario(SCENARIO)
    with mf.simulate(scenario) as trajectory:
        data, rich = trajectory.data, trajectory["rich"]
        s = rich.attrs["s"]
        margins = rich.series("margin").value
        normalized = rich.series("normalized_margin").value
        assert len(margins) == rich.frames == 4 and margins[-1] > margins[0]  # logistic loss: it grows
        for index in range(rich.frames):
            frame = rich.frame(index)
            f = s * (frame.a @ np.maximum(frame.W @ data.X_train.T + frame.b[:, None], 0.0))
            want = np.min(data.y_train * f)
            norm = s * np.sum(frame.a**2 + np.sum(frame.W**2, axis=1) + frame.b**2)
            assert margins[index] == pytest.approx(want, rel=1e-10, abs=1e-14)
            assert normalized[index] == pytest.approx(want / norm, rel=1e-10, abs=1e-14)


def test_the_kernel_flows_margins_match_its_closed_form_in_numpy():
    """With squared loss the kernel flow from f_0 = 0 is f_t(X) = y - V exp(-lam t / n) V^T y
    on the training set (K = V diag(lam) V^T, its analytic kernel, built here in NumPy from the
    run's stored numbers); its margin is min y f_t and its norm sqrt(f_t^T K^-1 f_t)."""
    scenario = mf.load_scenario({**SCENARIO, "loss": "squared", "runs": {"ntk": {"solver": "ntk", "kernel": "analytic"}}})
    with mf.simulate(scenario) as trajectory:
        data, ntk = trajectory.data, trajectory["ntk"]
        r = ntk.attrs
        weight = r["loss_scale"] * r["s"] ** 2 * r["width"]
        _, K = analytic_kernels(data.X_train, data.X_train, act="relu", w_var=r["w_std"] ** 2,
                                b_var=r["b_std"] ** 2, a_var=r["a_std"] ** 2, eta_a=weight * r["eta_a"],
                                eta_w=weight * r["eta_w"], bias=True)
        lam, V = np.linalg.eigh(K)
        y, n = data.y_train, len(data.y_train)
        margins, normalized = ntk.series("margin"), ntk.series("normalized_margin").value
        assert len(margins.time) == 4
        for t, got, got_normalized in zip(margins.time, margins.value, normalized):
            f = y - V @ (np.exp(-lam * t / n) * (V.T @ y))
            if t == 0:
                assert got == 0.0 and np.isnan(got_normalized)  # f_0 = 0: 0 / 0
                continue
            assert got == pytest.approx(np.min(y * f), rel=1e-9)
            assert got_normalized == pytest.approx(np.min(y * f) / np.sqrt(f @ np.linalg.solve(K, f)), rel=1e-6)


@pytest.mark.parametrize("changes, message", [
    ({"data": {"task": "teacher_student"}, "loss": "squared"}, "needs labels \\+-1, and task 'teacher_student'"),
    ({"model": {"width": 16, "activation": "tanh"}}, "activation 'tanh' is not homogeneous"),
    ({"model": {"width": 16, "output_bias": True}}, "the output bias c is not"),
    ({"runs": {"lin": {"solver": "tangent"}}}, "run 'lin' is the tangent model"),
    ({"runs": {"ntk": {"solver": "ntk", "kernel": "empirical"}}}, "run 'ntk' flows from its particles' f_0 != 0"),
    ({"runs": {"fixed_a": {"parameterization": {"preset": "mean_field", "lr_a": 0}}}},
     "run 'fixed_a' trains the input layer alone"),
])
def test_normalized_margin_is_refused_where_it_does_not_apply(changes, message):
    with pytest.raises(UsageError, match=message):
        mf.load_scenario({**SCENARIO, **changes})


def test_margin_alone_is_taken_by_every_run_on_labelled_data():
    """margin needs no homogeneity: a tangent run and an empirical kernel flow record it too."""
    scenario = mf.load_scenario({**SCENARIO, "runs": {"lin": {"solver": "tangent"}, "ntk": {"solver": "ntk"}},
                                 "model": {"width": 16, "activation": "tanh"},
                                 "record": {"every": 1.0, "measures": ["margin"]}})
    with mf.simulate(scenario) as trajectory:
        for name in ("lin", "ntk"):
            assert np.isfinite(trajectory[name].final()["margin"])
            assert "normalized_margin" not in trajectory[name].measures


def test_a_run_whose_input_layer_is_fixed_normalises_by_the_output_layer_alone():
    """eta_w = 0 (lr_w: 0): the run divides the margin by s sqrt(m) |a|, in NumPy from its
    particles after a few steps (the run is built with its resolved eta_w set to 0)."""
    import dataclasses

    from meanfield.engine.plan import plan
    from meanfield.engine.runs import RunInputs, data_rng, initial_draws, make_run, rng_for
    from meanfield.model.data import make_dataset
    from solvers.integrate import LoopState, integrate

    scenario = mf.load_scenario(SCENARIO)
    the_plan = plan(scenario)
    data = make_dataset(scenario.data, data_rng(scenario))
    inputs = RunInputs(scenario, data, initial_draws(scenario, rng_for(scenario.seed, 1)), the_plan.times, 0, 1)
    resolved = dataclasses.replace(the_plan.resolved["rich"], eta_w=0.0)
    run = make_run("rich", scenario.runs["rich"], resolved, inputs)
    state = run.start()
    out = integrate(run.field, LoopState(0.0, 0, state.y), run.stepper, the_plan.times[:1])
    a, W, b = run.particles(out.state)
    np.testing.assert_array_equal(W, run.initial[1])  # the input layer did not move
    f = resolved.s * (a @ np.maximum(W @ data.X_train.T + b[:, None], 0.0))
    got = run.measure(out.state)
    want = np.min(data.y_train * f)
    assert got["margin"] == pytest.approx(want, rel=1e-12)
    assert got["normalized_margin"] == pytest.approx(want / (resolved.s * np.sqrt(a.size) * np.linalg.norm(a)),
                                                     rel=1e-12)
