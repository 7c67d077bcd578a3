"""The table of run kinds and the table of measures (meanfield.model.kinds, meanfield.model.measures): every
class of meanfield.engine.runs agrees with its row, every list of measures is read off the one table,
and validating a scenario loads no Numba."""

import subprocess
import sys

import pytest

import meanfield as mf
from meanfield.engine import plan, runs
from meanfield.model import kinds, measures

SAMPLES = {
    "name": "kinds",
    "data": {"task": "teacher_student", "dim": 3, "n_train": 20, "n_test": 10, "teacher": {"width": 2}},
    "model": {"width": 6, "activation": "relu"},
    "runs": {"particles": "mean_field", "tangent": {"solver": "tangent"}, "ntk": {"solver": "ntk"}},
    "train": {"t_end": 0.2, "integrator": {"method": "euler", "dt": 0.1}},
    "record": {"every": 0.1, "measures": [name for name in measures.OPTIONAL_MEASURES
                                          if name not in measures.MARGIN_MEASURES]},  # a regression task
}
MODES = {
    "samples": {},
    "population": {"data": {"task": "teacher_student", "dim": 3, "population": True, "teacher": {"width": 2}},
                   "runs": {"particles": "mean_field", "tangent": {"solver": "tangent"}},
                   "record": {"every": 0.1, "measures": ["displacement_wb"]}},
    "logistic": {"data": {"task": "gaussian_mixture", "dim": 3, "n_train": 20, "n_test": 10}, "loss": "logistic",
                 "record": {"every": 0.1, "measures": list(measures.OPTIONAL_MEASURES)},
                 "runs": {"particles": "mean_field", "ntk": {"solver": "ntk", "kernel": "analytic"}}},
}


def scenarios():
    for mode, overrides in MODES.items():
        scenario = mf.load_scenario({**SAMPLES, **overrides})
        for spec in scenario.runs.values():
            yield scenario, spec


def test_every_kind_has_one_class_and_every_scenario_entry_one_kind():
    assert set(runs.RUN_CLASSES) == set(kinds.KINDS)
    assert all(cls.kind.name == name for name, cls in runs.RUN_CLASSES.items())
    picked = {runs.run_class(scenario, spec).kind.name for scenario, spec in scenarios()}
    assert picked == set(kinds.KINDS)  # the three modes above meet every row
    assert set(kinds.SOLVERS) == {row.solver for row in kinds.KIND_TABLE}


@pytest.mark.parametrize("name", list(kinds.KINDS))
def test_every_class_agrees_with_its_row(name):
    cls, row = runs.RUN_CLASSES[name], kinds.KINDS[name]
    assert issubclass(cls, runs.FlowRun) == row.steps != issubclass(cls, runs.ExactRun)
    assert issubclass(cls, runs.ParticleRun) == row.particles
    assert issubclass(cls, runs.ParticleFlow) == row.noise  # the stepper that takes the temperature
    assert ("constants" in vars(cls)) == row.limits
    for scenario, spec in scenarios():
        if runs.run_class(scenario, spec) is not cls:
            continue
        assert (scenario.data.population, spec.solver) == (row.population, row.solver)
        assert scenario.loss == row.loss or row.loss is None
        shapes = cls.measure_shapes(scenario, 10)
        assert ("kernel_distance" in shapes) == row.tracks_kernel
        assert ("wasserstein2" in shapes) == row.particles
        assert any(m in shapes for m in measures.CURVATURE_MEASURES) == row.curvature


def test_a_kind_is_picked_by_solver_data_and_loss():
    assert kinds.kind_of("ntk", False, "squared").name == "kernel_flow_closed_form"
    assert kinds.kind_of("ntk", False, "logistic").name == "kernel_flow_integrated"
    assert kinds.kind_of("tangent", True, "squared").name == "tangent_on_population"
    assert kinds.kind_of("ntk", True, "squared").name == "kernel_flow_closed_form"  # refused by the schema
    with pytest.raises(KeyError, match="unknown solver"):
        kinds.kind_of("magic", False, "squared")
    assert kinds.particle_solvers() == ("particles", "tangent")
    assert not kinds.can("magic", "particles")


def test_validation_loads_no_numba():
    code = ("import sys; import meanfield as mf; mf.load_scenario('quickstart'); "
            "mf.load_scenario('chizat_bach'); "
            "assert not [m for m in sys.modules if m.split('.')[0] == 'numba'], 'numba loaded'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_schema_does_not_import_the_run_layer():
    code = ("import sys; import meanfield.config.scenario; "
            "assert not {'meanfield.engine.runs', 'meanfield.engine.plan', 'meanfield.engine.driver'} & set(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_each_measure_once_and_every_list_read_off_the_table():
    names = [m.name for m in measures.MEASURE_TABLE]
    assert len(names) == len(set(names))
    columns = set(kinds.Kind._fields)
    for m in measures.MEASURE_TABLE:
        assert m.by in columns | {""}, m
        assert m.data in ("", "samples", "population") and m.needs in ("", "test_set", "teacher", "output_bias",
                                                                        "reference", "w2_particles"), m
    assert set(measures.CURVATURE_MEASURES) <= set(measures.OPTIONAL_MEASURES)
    from meanfield import storage
    from meanfield.config import scenario

    assert scenario.CURVATURE_MEASURES is measures.CURVATURE_MEASURES
    assert storage.layout.NO_TEST_SET.endswith("loss_test, f_test and gap_ntk are not recorded")
    from meanfield.pictures.figures import PANELS

    assert [name for name, _ in PANELS] == ["fit", "displacement_w", "kernel_distance", "gap_ntk"]
    assert measures.kinds_recording("kernel_distance") == ("particles_on_data", "particles_on_population")
    assert measures.kinds_recording("risk") == ("particles_on_population", "tangent_on_population")
    assert measures.kinds_recording("loss_train_limit") == ("kernel_flow_closed_form",)
    from meanfield.model.diagnostics import OF_PARTICLES

    assert all(measures.MEASURES[name].by == "particles" for name in OF_PARTICLES)


def test_every_measure_per_snapshot_is_recorded_by_some_kind():
    """A row nothing records is a measure no one can read."""
    seen = set()
    for scenario, spec in scenarios():
        seen |= set(plan.recorded_measures(scenario, next(k for k, v in scenario.runs.items() if v is spec),
                                                    10))
    seen |= {"output_bias"}  # needs model.output_bias, not set above
    assert seen == {m.name for m in measures.MEASURE_TABLE if not m.constant}
