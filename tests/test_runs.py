"""The run contract (docs/design.md §6.1): each scenario entry is one kind of run, built
cheaply, heavy only once started, measuring exactly what it says it records."""

import numpy as np
import pytest

import meanfield as mf
from meanfield.engine import runs
from meanfield.engine.plan import plan
from meanfield.model.data import make_dataset
from meanfield.model.state import RunState
from solvers.activations import activation_code
from solvers.losses import loss_code

BASE = {
    "name": "kinds",
    "data": {"task": "teacher_student", "dim": 3, "n_train": 20, "n_test": 10, "teacher": {"width": 2}},
    "model": {"width": 6, "activation": "relu"},
    "runs": {"rich": "mean_field", "tangent": {"solver": "tangent"}, "ntk": {"solver": "ntk"}},
    "train": {"t_end": 0.2, "integrator": {"method": "euler", "dt": 0.1}},
    "record": {"every": 0.1},
}
POPULATION = {"data": {"task": "teacher_student", "dim": 3, "population": True, "teacher": {"width": 2}},
              "runs": {"rich": "mean_field", "tangent": {"solver": "tangent"}}}
LOGISTIC = {"data": {"task": "gaussian_mixture", "dim": 3, "n_train": 20, "n_test": 10}, "loss": "logistic"}


def built(overrides):
    """Every run of the scenario, built (not started), on its data."""
    scenario = mf.load_scenario(BASE, overrides)
    the_plan = plan(scenario)
    data = make_dataset(scenario.data, runs.rng_for(scenario.seed, 0))
    inputs = runs.RunInputs(scenario, data, runs.initial_draws(scenario, runs.rng_for(scenario.seed, 1)),
                            the_plan.times, activation_code(scenario.model.activation), loss_code(scenario.loss))
    return {name: runs.make_run(name, spec, the_plan.resolved[name], inputs) for name, spec in scenario.runs.items()}


def test_a_flow_run_takes_the_plans_lambda_0_as_is_and_measures_its_own_otherwise():
    """make_run hands a measured lambda_0 to the run's constructor (every flow kind keeps it,
    no second eigensolve); without one the run measures it once, from its own kernel."""
    scenario = mf.load_scenario(BASE, LOGISTIC)
    the_plan = plan(scenario)
    data = make_dataset(scenario.data, runs.rng_for(scenario.seed, 0))
    inputs = runs.RunInputs(scenario, data, runs.initial_draws(scenario, runs.rng_for(scenario.seed, 1)),
                            the_plan.times, activation_code(scenario.model.activation), loss_code(scenario.loss))
    for name, spec in scenario.runs.items():
        run = runs.make_run(name, spec, the_plan.resolved[name], inputs, 123.5)
        assert isinstance(run, runs.FlowRun) and run.lambda_0 == 123.5 and "lambda_0" not in vars(run)
    rich = built(LOGISTIC)["rich"]
    rich.start()
    assert rich.lambda_0 == rich.initial_ntk_eigenvalue() > 0


@pytest.mark.parametrize("overrides, kinds", [
    ({}, {"rich": runs.ParticlesOnData, "tangent": runs.TangentOnData, "ntk": runs.KernelFlowClosedForm}),
    (POPULATION, {"rich": runs.ParticlesOnPopulation, "tangent": runs.TangentOnPopulation}),
    (LOGISTIC, {"rich": runs.ParticlesOnData, "tangent": runs.TangentOnData, "ntk": runs.KernelFlowIntegrated}),
])
def test_each_entry_is_one_kind_that_measures_what_it_records(overrides, kinds):
    made = built(overrides)
    assert {name: type(run) for name, run in made.items()} == kinds
    for run in made.values():
        state = run.start()
        assert (state.t, state.step) == (0.0, 0)
        if isinstance(run, runs.ExactRun):
            states = list(run.states(np.array([0.0, 0.1, 0.2])))
            assert [(s.t, s.step) for s in states] == [(0.0, 0), (0.1, 1), (0.2, 2)]
            state = states[-1]
        else:
            assert callable(run.field) and run.stepper is not None
            dy, _ = run.field(0.0, state.y)
            assert dy.shape == state.y.shape
        measured = run.measure(state)
        assert {name: np.shape(value) for name, value in measured.items()} == run.measures
        assert (run.particles(state) is None) == (run.solver == "ntk") == (not run.records_particles)
        run.close()


def test_building_is_cheap_the_kernels_come_when_a_run_starts(monkeypatch):
    def no_kernels(*args, **kwargs):
        raise AssertionError("a kernel was built")

    monkeypatch.setattr(runs.kernels, "train_test_ntk", no_kernels)
    monkeypatch.setattr(runs.kernels, "empirical_ntk", no_kernels)
    made = built({})  # the ntk run's n x n kernel, the probe kernels: none yet
    with pytest.raises(AssertionError, match="a kernel was built"):
        made["ntk"].start()


def test_a_run_continues_from_its_checkpoint_in_its_own_precision():
    rich = built({"train.dtype": "float32"})["rich"]
    start = rich.start()
    assert start.y.dtype == np.float32
    checkpoint = RunState(0.1, 1, start.y.astype(np.float64) + 1.0, h=None, rng={"any": "state"})
    resumed = rich.start(checkpoint)
    assert (resumed.t, resumed.step, resumed.rng) == (0.1, 1, {"any": "state"})
    assert resumed.y.dtype == np.float32 and np.array_equal(resumed.y, start.y + 1)


def test_w2_particles_0_leaves_wasserstein2_out_and_changes_no_other_measure():
    """record.w2_particles: 0 records no wasserstein2 (the costliest measure of a snapshot at
    large m); every other measure has the bits of the same run with it."""
    # one thread fixed: the thread counts a governor picks by timing are not what this compares
    with_w2 = mf.simulate(mf.load_scenario(BASE), threads=1)
    without = mf.simulate(mf.load_scenario(BASE, {"record": {**BASE["record"], "w2_particles": 0}}), threads=1)
    for name in ("rich", "tangent"):
        kept = set(with_w2.h5[f"observables/{name}"])
        assert "wasserstein2" in kept
        assert set(without.h5[f"observables/{name}"]) == kept - {"wasserstein2"}
        for measure in kept - {"wasserstein2"}:
            got = without.h5[f"observables/{name}/{measure}/value"][()]
            want = with_w2.h5[f"observables/{name}/{measure}/value"][()]
            if name == "rich":
                np.testing.assert_array_equal(got, want, err_msg=measure)
            else:  # the tangent model's steps go through the BLAS, whose last bit can follow where the
                # arrays lie in memory, which a measure more or less moves: loss_train differed by one
                # unit in the last place (1.9e-16) after other tests in the same process, where two
                # identical runs agreed bit for bit
                np.testing.assert_allclose(got, want, rtol=1e-14, atol=0, err_msg=measure)
    assert "wasserstein2" not in built({"record": {"w2_particles": 0}})["rich"].measures
