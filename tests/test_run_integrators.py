"""Per-run integrators (runs.<name>.integrator) and the optional measure displacement_wb."""

import h5py
import numpy as np
import pytest

import meanfield as mf
from meanfield.config.loading import parse_scenario
from meanfield.engine import runs
from meanfield.engine.plan import plan
from meanfield.errors import UsageError
from meanfield.model import diagnostics

BASE = {
    "name": "steps",
    "seed": 5,
    "data": {"task": "teacher_student", "dim": 3, "n_train": 24, "n_test": 12, "teacher": {"width": 2}},
    "model": {"width": 8, "activation": "tanh", "bias": True, "init": {"b_std": 0.4}},
    "runs": {"linear": "ntk", "condensed": {"parameterization": "mean_field",
                                            "integrator": {"method": "euler", "dt": 0.004}}},
    "train": {"t_end": 0.4, "integrator": {"method": "rk4", "dt": 0.1}},
    "record": {"every": 0.2, "dtype": "float64"},
}


def run_contents(path, run):
    """Every dataset and attribute of one run (its parameters, particles, observables, checkpoint)."""
    out = {}
    with h5py.File(path, "r") as h5:
        for group in ("parameters", "particles", "observables", "checkpoint"):
            if run not in h5[group]:
                continue
            root = h5[group][run]
            out.update({f"{group}@{k}": np.asarray(v).tolist() for k, v in root.attrs.items()})

            def visit(name, obj, group=group):
                out.update({f"{group}/{name}@{k}": np.asarray(v).tolist() for k, v in obj.attrs.items()})
                if isinstance(obj, h5py.Dataset):
                    out[f"{group}/{name}"] = obj[()].tolist()
            root.visititems(visit)
    return out


FIT = ("observables/loss_train/value", "observables/loss_test/value")


def assert_same_run(got: dict, want: dict) -> None:
    """Every entry equal, bit for bit, but the mean losses: those of identical predictions
    (f_test is compared exactly) once differed in the last bit between two simulations in one
    process of the full suite (the loss kernel's sum, not the run), so they are held to 1e-15."""
    assert sorted(got) == sorted(want)
    assert {k: v for k, v in got.items() if k not in FIT} == {k: v for k, v in want.items() if k not in FIT}
    for key in FIT:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-15, atol=0)


def test_each_run_steps_as_if_alone_with_its_integrator_as_train_integrator(tmp_path):
    both = tmp_path / "both.h5"
    mf.simulate(mf.load_scenario(BASE), both).close()
    for name, integrator in (("linear", BASE["train"]["integrator"]),
                             ("condensed", BASE["runs"]["condensed"]["integrator"])):
        spec = {k: v for k, v in BASE["runs"][name].items() if k != "integrator"} \
            if isinstance(BASE["runs"][name], dict) else BASE["runs"][name]
        alone = tmp_path / f"{name}.h5"
        mf.simulate(mf.load_scenario({**BASE, "runs": {name: spec}, "train": {**BASE["train"], "integrator": integrator}}),
                    alone).close()
        got, want = run_contents(both, name), run_contents(alone, name)
        assert_same_run(got, want)
        assert len(want) > 20


def test_the_run_integrator_is_stored_and_counts_its_own_steps():
    scenario = mf.load_scenario(BASE)
    with mf.simulate(scenario) as trajectory:
        assert trajectory["condensed"].attrs["integrator"]["dt"] == 0.004
        assert trajectory["linear"].attrs["integrator"] == scenario.train.integrator.model_dump()
    assert scenario.integrator_of(scenario.runs["condensed"]).dt == 0.004
    assert scenario.integrator_of(scenario.runs["linear"]) is scenario.train.integrator
    assert [scenario.integrator_key(name) for name in scenario.runs] == ["train.integrator",
                                                                        "runs.condensed.integrator"]


def test_a_run_integrator_without_a_method_changes_train_integrators_keys():
    # {dt: ...} alone: the shared method with a step of its own; with a method: complete (the schema's defaults)
    scenario = mf.load_scenario({**BASE, "runs": {
        "smaller": {"parameterization": "mean_field", "integrator": {"dt": 0.01}},
        "adaptive": {"parameterization": "mean_field", "integrator": {"method": "rk45"}}}})
    assert scenario.integrator_of(scenario.runs["smaller"]).model_dump() == {
        **scenario.train.integrator.model_dump(), "dt": 0.01}
    adaptive = scenario.integrator_of(scenario.runs["adaptive"])
    assert adaptive.method == "rk45" and adaptive.dt is None and adaptive.rtol == 1e-3
    by_set = mf.load_scenario(BASE, ["runs.condensed.integrator={dt: 0.02}"])  # --set replaces the mapping
    assert by_set.integrator_of(by_set.runs["condensed"]).method == "rk4"  # train.integrator's
    assert mf.load_scenario(by_set.model_dump()) == by_set  # the resolved scenario reads back the same


def test_the_plan_checks_each_run_with_its_integrator():
    notes = plan(mf.load_scenario(BASE, {"record.every": 0.05})).notes
    assert notes == ["run linear: train.integrator.dt 0.1 > record.every 0.05: steps shortened to 0.05 to land on "
                     "every snapshot"]
    notes = plan(mf.load_scenario(BASE, {"record.every": 0.05, "train.integrator.dt": 0.01,
                                         "runs.condensed.integrator.dt": 0.5})).notes
    assert notes == ["run condensed: runs.condensed.integrator.dt 0.5 > record.every 0.05: steps shortened to 0.05 "
                     "to land on every snapshot"]
    with pytest.raises(UsageError, match=r"train.t_end / runs.condensed.integrator.dt = 100000 / 1e-05 = 1e\+10 "
                                         r"steps per run.*raise runs.condensed.integrator.dt to at least 0.0001"):
        plan(mf.load_scenario(BASE, {"train.t_end": 1e5, "record.every": 1e3, "runs.condensed.integrator.dt": 1e-5}))


def test_the_memory_of_a_run_is_that_of_its_own_method():
    scenario = mf.load_scenario(BASE, {"runs.condensed.integrator": {"method": "rk45"}})
    spec = scenario.runs["condensed"]
    own = runs.run_class(scenario, spec).memory(scenario, spec, 24, 12, 3)
    alone = mf.load_scenario(BASE, {"runs.condensed": {"parameterization": "mean_field"},
                                    "train.integrator": {"method": "rk45"}})
    assert own == runs.run_class(alone, alone.runs["condensed"]).memory(alone, alone.runs["condensed"], 24, 12, 3)
    plain = mf.load_scenario(BASE)
    spec = plain.runs["condensed"]
    assert own != runs.run_class(plain, spec).memory(plain, spec, 24, 12, 3)  # rk45 holds more stages than euler


def test_dry_run_shows_each_runs_integrator_when_they_differ():
    text = plan(mf.load_scenario(BASE)).describe()
    assert "    integrator (train.integrator): rk4, dt 0.1" in text
    assert "    integrator (runs.condensed.integrator): euler, dt 0.004" in text
    same = plan(mf.load_scenario(BASE, {"runs.condensed.integrator": {"method": "rk4", "dt": 0.1}})).describe()
    assert "integrator (" not in same


def test_temperature_needs_euler_maruyama_in_every_run_that_steps():
    noisy = {"train.temperature": 0.01, "train.integrator": {"method": "euler_maruyama", "dt": 0.01}}
    with pytest.raises(UsageError, match="set runs.condensed.integrator.method: euler_maruyama"):
        mf.load_scenario(BASE, noisy)
    own = {**noisy, "runs.condensed.integrator.method": "euler_maruyama"}
    assert mf.load_scenario(BASE, own).train.temperature == 0.01
    every_run_its_own = {"train.temperature": 0.01, "runs.linear.integrator": {"method": "euler_maruyama", "dt": 0.1},
                         "runs.condensed.integrator.method": "euler_maruyama"}
    assert mf.load_scenario(BASE, every_run_its_own).train.integrator.method == "rk4"  # no run uses it
    with pytest.raises(UsageError, match="set train.integrator.method: euler_maruyama"):
        mf.load_scenario(BASE, {"train.temperature": 0.01, "runs.condensed.integrator.method": "euler_maruyama"})


SCENARIO = """\
name: s
data: {task: teacher_student, dim: 2, n_train: 8, n_test: 8}
model: {width: 4}
runs:
  rich:
    parameterization: mean_field
    integrator: {EXTRA}
"""


@pytest.mark.parametrize("extra, message", [
    ("{method: euler}", "s.yaml:7: runs.rich.integrator: method 'euler' takes a fixed step: set runs.rich.integrator.dt"),
    ("{method: sgd, dt: 0.1}", "s.yaml:7: runs.rich.integrator: method 'sgd' needs runs.rich.integrator.batch_size"),
    ("{method: rk4, dt: -1}", "s.yaml:7: runs.rich.integrator.dt: must be > 0"),
    ("{method: leapfrog, dt: 0.1}", "s.yaml:7: runs.rich.integrator.method: 'leapfrog' is not one of euler, heun, rk4"),
    ("{method: rk4, dt: 0.1, tol: 1}", "s.yaml:7: unknown key 'runs.rich.integrator.tol'; allowed here: method, dt"),
    ("{method: euler, dt: 0.1, rtol: 1.0e-4}", "runs.rich.integrator: rtol: only the adaptive method 'rk45'"),
])
def test_a_bad_run_integrator_is_named_with_its_line(extra, message):
    with pytest.raises(UsageError) as error:
        parse_scenario(SCENARIO.replace("{EXTRA}", extra), source="s.yaml")
    assert message in str(error.value)


@pytest.mark.parametrize("changes, message", [
    ({"runs.exact": {"solver": "ntk", "integrator": {"method": "euler", "dt": 0.1}}},
     r"runs.exact.integrator: run 'exact' \(ntk\) is solved in closed form here and takes no steps"),
    ({"data.population": True, "runs.linear": None, "runs.condensed.integrator": {"method": "sgd", "dt": 0.1,
                                                                                  "batch_size": 4},
      "model.bias": False, "model.init.b_std": 0.0},
     "there are no samples to draw minibatches from: runs.condensed.integrator.method not sgd"),
])
def test_run_integrators_where_they_cannot_apply_are_refused(changes, message):
    with pytest.raises(UsageError, match=message):
        mf.load_scenario(BASE, changes)


def test_an_integrated_kernel_flow_takes_its_own_integrator():
    logistic = {"data": {"task": "gaussian_mixture", "dim": 3, "n_train": 24, "n_test": 12}, "loss": "logistic",
                "runs": {"ntk": {"solver": "ntk", "integrator": {"method": "euler", "dt": 0.05}}}}
    scenario = mf.load_scenario({**BASE, **logistic})
    with mf.simulate(scenario) as trajectory:
        assert trajectory["ntk"].attrs["integrator"]["method"] == "euler"


# ----------------------------------------------------------------------------- displacement_wb
def test_displacement_wb_is_the_relative_change_of_weights_and_biases_together():
    rng = np.random.default_rng(0)
    W0, b0 = rng.standard_normal((5, 3)), rng.standard_normal(5)
    W, b = W0 + 0.1 * rng.standard_normal((5, 3)), b0 + 0.3 * rng.standard_normal(5)
    want = np.sqrt(np.sum((W - W0) ** 2) + np.sum((b - b0) ** 2)) / np.sqrt(np.sum(W0**2) + np.sum(b0**2))
    assert diagnostics.displacement_wb(W, b, W0, b0) == pytest.approx(want, rel=1e-14)
    assert diagnostics.displacement_wb(W, None, W0, None) == diagnostics.relative_change(W, W0)


def test_displacement_wb_is_recorded_on_request_by_the_runs_with_particles():
    scenario = mf.load_scenario(BASE, {"runs.tangent": {"solver": "tangent"}, "runs.kernel": {"solver": "ntk"},
                                       "record.measures": ["displacement_wb"]})
    with mf.simulate(scenario) as trajectory:
        for name in ("linear", "condensed", "tangent"):
            run = trajectory[name]
            first, last = run.frame(0), run.frame(-1)
            want = np.sqrt(np.sum((last.W - first.W) ** 2) + np.sum((last.b - first.b) ** 2)) / np.sqrt(
                np.sum(first.W**2) + np.sum(first.b**2))
            got = run.final()["displacement_wb"]
            assert got == pytest.approx(want, rel=1e-12) and got > 0
            assert got != pytest.approx(run.final()["displacement_w"], rel=1e-6)
        assert "displacement_wb" not in trajectory["kernel"].measures
        # inspect shows it like any other measure, beside displacement_w ("-" where a run has none)
        lines = trajectory.summary().splitlines()
        names = [line.split()[0] for line in lines[1:] if line.strip()]
        assert names.index("displacement_wb") == names.index("displacement_w") + 1
        cells = next(line for line in lines if line.startswith("displacement_wb")).split()[1:]
        assert cells == [f"{trajectory[name].final()['displacement_wb']:.4g}" if name != "kernel" else "-"
                         for name in trajectory.runs]
    with mf.simulate(mf.load_scenario(BASE)) as trajectory:
        assert "displacement_wb" not in trajectory["condensed"].measures
        assert "displacement_wb" not in trajectory.summary()


def test_record_measures_are_validated():
    with pytest.raises(UsageError, match=r"record.measures.0: 'wb' is not one of displacement_wb, margin, normalized_margin, "
                                          r"ntk_eigenvalue_max, "
                                          r"hessian_eigenvalue_max$"):
        mf.load_scenario(BASE, {"record.measures": ["wb"]})
    with pytest.raises(UsageError, match="record.measures: displacement_wb given twice"):
        mf.load_scenario(BASE, {"record.measures": ["displacement_wb", "displacement_wb"]})


def test_a_run_integrator_on_a_closed_form_run_is_named_with_its_line():
    text = SCENARIO.replace("{EXTRA}", "{method: euler, dt: 0.1}").replace("parameterization: mean_field",
                                                                          "solver: ntk")
    with pytest.raises(UsageError, match=r"^s.yaml:7: runs.rich.integrator: run 'rich' \(ntk\) is solved in closed "
                                         "form here and takes no steps: remove its integrator$"):
        parse_scenario(text, source="s.yaml")


def test_resume_continues_each_run_with_its_own_integrator(tmp_path):
    from meanfield.engine.progress import ModelTimeBar

    class InterruptAt(ModelTimeBar):
        def update_state(self, state):
            if self.name == "condensed" and state.t > 0.25:
                raise KeyboardInterrupt

    scenario = mf.load_scenario(BASE, {"runs.condensed.integrator": {"method": "rk45", "rtol": 1e-5}})
    whole, parts = tmp_path / "whole.h5", tmp_path / "parts.h5"
    mf.simulate(scenario, whole).close()
    with pytest.raises(KeyboardInterrupt):
        mf.simulate(scenario, parts, progress=lambda *a: InterruptAt(*a, enabled=False))
    with h5py.File(parts, "r") as h5:
        assert h5["parameters/condensed"].attrs["status"] == "interrupted"
        assert h5["checkpoint/condensed"].attrs["stepper"] != '{"h": null}'  # rk45's next step was kept
    mf.simulate(scenario, parts, resume=True).close()
    for name in scenario.runs:
        assert_same_run(run_contents(parts, name), run_contents(whole, name))
