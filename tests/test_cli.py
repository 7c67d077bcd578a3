"""The command line end to end on a tiny scenario: the file layout, resume, determinism, bad input."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import meanfield as mf
from meanfield.cli import main
from meanfield.config.loading import parse_scenario
from meanfield.engine import driver
from meanfield.engine.progress import ModelTimeBar
from meanfield.engine.runs import initial_draws, initial_particles, rng_for
from meanfield.model.data import make_dataset
from meanfield.model.parameterization import resolve
from solvers.activations import activation_code
from solvers.particles import predict

TINY = textwrap.dedent(
    """\
    # a tiny scenario for the tests
    name: tiny
    seed: 3
    data: {task: teacher_student, dim: 3, n_train: 40, n_test: 30, teacher: {width: 2}}
    model: {width: 16, activation: tanh, bias: true, init: {b_std: 0.5, symmetric: true}}
    runs:
      rich: mean_field
      lazy: {parameterization: {preset: lazy, alpha: 10}}
      noisy: {parameterization: ntk}
    train:
      t_end: 2.0
      integrator: {method: rk45, rtol: 1.0e-7, atol: 1.0e-10}
    record: {every: 0.5}
    """
)


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def invoke(*args):
    return CliRunner().invoke(main, ["-q", *map(str, args)])


def recorded(path, name, read):
    """``read(run)`` for run ``name`` of the file at ``path``, read through the public API
    (inside: the file is closed afterwards)."""
    with mf.open(path) as trajectory:
        return read(trajectory[name])


def file_contents(path):
    """Every dataset and attribute in a file, for exact comparisons."""
    out = {}
    with h5py.File(path, "r") as h5:
        def visit(name, obj):
            out.update({f"{name}@{k}": np.asarray(v).tolist() for k, v in obj.attrs.items()})
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()].tolist()
        h5.visititems(visit)
    return out


def test_simulate_writes_the_h5md_layout(tiny, tmp_path):
    out = tmp_path / "tiny.h5"
    result = invoke("simulate", tiny, "-o", out)
    assert result.exit_code == 0, result.output
    with h5py.File(out, "r") as h5:
        assert list(h5["h5md"].attrs["version"]) == [1, 1]
        scenario = yaml.safe_load(h5["parameters"].attrs["scenario"])
        assert scenario["model"]["width"] == 16 and h5["parameters"].attrs["seed"] == 3
        for run in ("rich", "lazy", "noisy"):
            assert h5[f"parameters/{run}"].attrs["status"] == "complete"
            position = h5[f"particles/{run}/position"]
            assert position["value"].shape == (5, 16, 3) and position["value"].dtype == np.float32
            assert list(position["time"][:]) == [0.0, 0.5, 1.0, 1.5, 2.0]
            assert h5[f"particles/{run}/amplitude/value"].shape == (5, 16)
            assert h5[f"particles/{run}/bias/value"].shape == (5, 16)
            assert h5[f"observables/{run}/loss_train/value"].shape == (5,)
            assert h5[f"particles/{run}/box"].attrs["dimension"] == 3
        assert h5["data/X_train"].shape == (40, 3) and h5["data/teacher/W"].shape == (2, 3)


def test_stored_measures_agree_with_an_independent_evaluation(tiny, tmp_path):
    out = tmp_path / "tiny.h5"
    invoke("simulate", tiny, "-o", out)
    scenario = parse_scenario(TINY)
    data = make_dataset(scenario.data, rng_for(scenario.seed, 0))
    with mf.open(out) as trajectory:
        rich, lazy = trajectory["rich"], trajectory["lazy"]
        resolved = resolve(scenario.runs["rich"].parameterization, scenario.model, 3)
        # the initial particles are the shared draws scaled by the preset; symmetric: f_0 = 0
        draws = initial_draws(scenario, rng_for(scenario.seed, 1))
        a0, W0, b0 = initial_particles(draws, resolved, True)
        first, last = rich.frame(0), rich.frame(-1)
        assert np.allclose(first.W, W0, rtol=1e-6)
        assert np.allclose(first.a[:8], -first.a[8:])
        assert np.allclose(predict(a0, W0, b0, data.X_test, resolved.s, activation_code("tanh")), 0, atol=1e-15)
        # loss from the float32 snapshot, in plain NumPy, against the stored float64 measure
        f = resolved.s * np.tanh(data.X_train @ last.W.T + last.b) @ last.a
        assert np.isclose(np.mean(0.5 * (f - data.y_train) ** 2), rich.final()["loss_train"], rtol=1e-4)
        moved = np.linalg.norm(last.W - W0) / np.linalg.norm(W0)
        assert np.isclose(moved, rich.final()["displacement_w"], rtol=1e-4)
        # lazy alpha = 10 moves its neurons far less than the mean-field run
        assert lazy.final()["displacement_w"] < 0.3 * rich.final()["displacement_w"]


def test_same_seed_gives_the_same_file(tiny, tmp_path):
    invoke("simulate", tiny, "-o", tmp_path / "a.h5")
    invoke("simulate", tiny, "-o", tmp_path / "b.h5")
    assert file_contents(tmp_path / "a.h5") == file_contents(tmp_path / "b.h5")


class InterruptAt(ModelTimeBar):
    """A progress bar that presses Ctrl-C once model time passes ``t_stop`` in run ``name``."""

    def __init__(self, name, t0, t_end, stop):
        super().__init__(name, t0, t_end, enabled=False)
        self.stop = stop

    def update_state(self, state):
        if self.name == self.stop[0] and state.t > self.stop[1]:
            raise KeyboardInterrupt


@pytest.mark.parametrize("method", ["rk45", "euler_maruyama", "sgd"])
def test_resume_after_interruption_equals_the_uninterrupted_run(tmp_path, method):
    overrides = [f"train.integrator.method={method}", "train.integrator.dt=0.05"]
    if method != "rk45":  # a fixed step: no tolerances
        overrides = [f"train.integrator={{method: {method}, dt: 0.05}}"]
    if method == "euler_maruyama":
        overrides.append("train.temperature=0.01")
    if method == "sgd":
        overrides.append("train.integrator.batch_size=8")
    scenario = parse_scenario(TINY, overrides=overrides)
    whole, parts = tmp_path / "whole.h5", tmp_path / "parts.h5"
    mf.simulate(scenario, whole).close()
    with pytest.raises(KeyboardInterrupt):
        mf.simulate(scenario, parts, progress=lambda *a: InterruptAt(*a, stop=("lazy", 1.2)))
    with h5py.File(parts, "r") as h5:  # a valid file, the run marked interrupted
        assert h5["parameters/lazy"].attrs["status"] == "interrupted"
        assert h5["parameters/rich"].attrs["status"] == "complete"
        assert h5["observables/lazy/loss_train/value"].shape[0] == 3
    trajectory, reports = driver.simulate(scenario, str(parts), resume=True)
    trajectory.close()
    assert file_contents(parts) == file_contents(whole)
    rich = next(report for report in reports if report.name == "rich")
    assert rich.status == "complete (already in the file)" and rich.t == 2.0
    assert rich.measures["loss_train"] == recorded(whole, "rich", lambda run: run.final()["loss_train"])


def test_dry_run_writes_nothing(tiny, tmp_path):
    result = invoke("simulate", tiny, "--dry-run", "-o", tmp_path / "x.h5")
    assert result.exit_code == 0
    assert "predicted rich" in result.output and "predicted lazy" in result.output
    assert not (tmp_path / "x.h5").exists()


def test_inspect_shows_runs_and_final_measures(tiny, tmp_path):
    out = tmp_path / "tiny.h5"
    invoke("simulate", tiny, "-o", out)
    result = invoke("inspect", out)
    assert result.exit_code == 0
    lines = {line.split()[0]: line.split()[1:] for line in result.output.splitlines()[2:] if line.strip()}
    assert lines["parameterization"] == ["mean_field", "lazy", "ntk"]  # the scenario's order
    assert lines["status"] == ["complete"] * 3
    assert len(lines["loss_test"]) == 3 and len(lines["kernel_distance"]) == 3
    assert "rich: measured rich: relative weight change" in result.output
    assert "lazy: measured lazy" in result.output


ENDINGS = textwrap.dedent(
    """\
    name: endings
    data: {task: teacher_student, dim: 2, n_train: 30, n_test: 20}
    model: {width: 16}
    runs:
      ntk: {solver: ntk}
      rich: mean_field
      slow: {parameterization: {preset: mean_field, lr: 1.0e-9}}
    train: {t_end: 5.0, stop_loss: 0.02, integrator: {method: rk4, dt: 0.05}}
    record: {every: 0.5}
    """
)


def test_how_a_run_ended_is_recorded_reported_and_inspected(tmp_path):
    """A run that reached stop_loss and one that reached t_end above it: the file records
    which (attrs ended, t_stop), the report line and ``inspect`` say it with the numbers,
    and a run whose loss did not move is warned about."""
    scenario = parse_scenario(ENDINGS)
    out = tmp_path / "endings.h5"
    trajectory, reports = driver.simulate(scenario, str(out))
    trajectory.close()
    lines = {report.name: report.line() for report in reports}
    summary = invoke("inspect", out).output
    with mf.open(out) as trajectory:
        runs = {name: trajectory[name] for name in trajectory.runs}
        loss = {name: run.final()["loss_train"] for name, run in runs.items()}
        for name in ("ntk", "rich"):  # a closed form and a flow
            run = runs[name]
            assert run.status == "complete" and run.ended == "stop_loss" and run.t_stop == run.t < 5.0
            assert loss[name] < 0.02
            said = f"reached stop_loss 0.02 at t = {run.t_stop:.4g}, loss_train {loss[name]:.4g}"
            assert f"{name}: complete: {said}" in lines[name] and f"complete: {said}" in summary
        slow = runs["slow"]
        assert slow.ended == "t_end" and slow.t_stop == slow.t == 5.0 and loss["slow"] > 0.02
        said = f"t_end 5 reached, loss_train {loss['slow']:.4g} above stop_loss 0.02"
        assert f"slow: complete: {said}" in lines["slow"] and f"complete: {said}" in summary
        assert "ended" not in slow.attrs and slow.to_dataset().attrs["ended"] == "t_end"
    assert "loss_train has not moved from its start" in lines["slow"]
    assert "has not moved" not in lines["rich"] + lines["ntk"]


def test_a_file_without_how_its_runs_ended_still_reads(tiny, tmp_path):
    """Files written before the ``ended`` and ``t_stop`` attributes: read as unknown."""
    out = tmp_path / "tiny.h5"
    assert invoke("simulate", tiny, "-o", out).exit_code == 0
    with h5py.File(out, "r+") as h5:
        for name in ("rich", "lazy", "noisy"):
            del h5[f"parameters/{name}"].attrs["ended"], h5[f"parameters/{name}"].attrs["t_stop"]
    with mf.open(out) as trajectory:
        rich = trajectory["rich"]
        assert rich.status == "complete" and rich.ended is None and np.isnan(rich.t_stop)
        assert "complete:" not in trajectory.summary() and "rich" in trajectory.summary()


def test_scenarios_lists_the_bundled_ones():
    result = invoke("scenarios")
    assert result.exit_code == 0 and "quickstart" in result.output


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.widht=3", "unknown key 'model.widht'; allowed here: width, activation, bias, output_bias, init"),
        ("model.width=-4", "model.width: must be > 0"),
        ("model.width=many", "model.width: must be an integer"),
        ("runs.rich.parameterization.alpha=3", "unknown key 'runs.rich.parameterization.alpha'"),
        ("train.integrator.method=leapfrog", "train.integrator.method: 'leapfrog' is not one of euler, heun"),
        ("model.width", "write it as dotted.key=value"),
    ],
)
def test_bad_overrides_are_usage_errors(tiny, tmp_path, override, message):
    out = tmp_path / "x.h5"
    result = invoke("simulate", tiny, "-o", out, "--set", override)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_unknown_key_in_the_file_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(TINY.replace("seed: 3", "seed: 3\nsede: 4"))
    result = invoke("simulate", path)
    assert result.exit_code == 2
    assert f"{path}:4: unknown key 'sede'" in result.output


def test_missing_and_foreign_files_are_usage_errors(tmp_path):
    result = invoke("simulate", tmp_path / "nope.yaml")
    assert result.exit_code == 2 and "no such scenario file" in result.output
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as h5:
        h5["x"] = 1
    result = invoke("inspect", foreign)
    assert result.exit_code == 2 and "not a meanfield trajectory file" in result.output
    text = tmp_path / "text.h5"
    text.write_text("hello")
    result = invoke("inspect", text)
    assert result.exit_code == 2 and str(text) in result.output


def test_resume_refuses_a_file_of_another_scenario(tiny, tmp_path):
    out = tmp_path / "tiny.h5"
    invoke("simulate", tiny, "-o", out)
    before = file_contents(out)
    result = invoke("simulate", tiny, "-o", out, "--resume", "--set", "seed=4")
    assert result.exit_code == 2 and "scenario" in result.output
    assert file_contents(out) == before


@pytest.mark.slow
def test_a_diverging_run_fails_cleanly(tiny, tmp_path):
    out = tmp_path / "tiny.h5"
    result = invoke("simulate", tiny, "-o", out, "--set", "runs.noisy.parameterization.lr=1e6",
                    "--set", "train.integrator={method: euler, dt: 1.0}", "--set", "train.t_end=30")
    assert result.exit_code == 1
    assert "run 'noisy' failed: the state became non-finite" in result.output
    assert "smaller dt than 1" in result.output and "Warning" not in result.output
    with mf.open(out) as trajectory:
        noisy = trajectory["noisy"]
        assert noisy.status.startswith("failed: ")
        assert 2 < noisy.frames < 61 and np.all(np.isfinite(noisy.particles()["amplitude"]))
        assert trajectory["rich"].status == "complete"


@pytest.mark.slow
def test_sigterm_leaves_a_valid_resumable_file(tiny, tmp_path):
    out = tmp_path / "tiny.h5"
    # a long run, stopped by SIGTERM once its first snapshots are written
    code = textwrap.dedent(f"""
        import os, signal
        from meanfield.engine import driver
        from meanfield.cli import main
        snapshot = driver.Recorder.snapshot
        def snapshot_then_stop(self, state):
            out = snapshot(self, state)
            if state.t > 0.6:
                os.kill(os.getpid(), signal.SIGTERM)
            return out
        driver.Recorder.snapshot = snapshot_then_stop
        main(["-q", "simulate", {str(tiny)!r}, "-o", {str(out)!r}, "--set", "train.t_end=100"])
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr
    assert "continue with --resume" in done.stderr
    assert recorded(out, "rich", lambda run: run.status) == "interrupted"


def test_logistic_loss_refuses_a_file_without_pm1_labels(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.ones((10, 2)), y=np.arange(10.0))
    path = tmp_path / "s.yaml"
    path.write_text(f"name: f\ndata: {{task: file, dim: 2, path: {tmp_path / 'd.npz'}}}\n"
                    "loss: logistic\nruns: {rich: mean_field}\n")
    result = invoke("simulate", path, "-o", tmp_path / "f.h5")
    assert result.exit_code == 2 and "needs labels y = +1 or -1" in result.output
    assert not (tmp_path / "f.h5").exists()


def test_file_task_runs_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, 2))
    np.savez(tmp_path / "d.npz", X=X, y=np.sin(X[:, 0]))
    path = tmp_path / "s.yaml"
    path.write_text(f"name: f\ndata: {{task: file, dim: 2, path: {tmp_path / 'd.npz'}}}\n"
                    "model: {width: 8}\nruns: {rich: mean_field, ntk: {solver: ntk}}\n"
                    "train: {t_end: 1.0}\nrecord: {every: 0.5}\n")
    result = invoke("simulate", path, "-o", tmp_path / "f.h5")
    assert result.exit_code == 0, result.output
    assert recorded(tmp_path / "f.h5", "rich", lambda run: run.measure("f_test").shape) == (3, 25)


def test_simulate_refuses_to_overwrite_a_foreign_file(tiny, tmp_path):
    foreign = tmp_path / "mine.h5"
    with h5py.File(foreign, "w") as h5:
        h5["precious"] = np.arange(3)
    result = invoke("simulate", tiny, "-o", foreign)
    assert result.exit_code == 2 and "refusing to overwrite" in result.output
    with h5py.File(foreign, "r") as h5:
        assert list(h5["precious"][:]) == [0, 1, 2]


def test_bad_yaml_names_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nruns: {rich: mean_field\n")
    result = invoke("simulate", path)
    assert result.exit_code == 2 and f"{path}:3:1: not valid YAML" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_population_rejects_a_teacher_without_closed_form(tmp_path):
    result = invoke("simulate", "chizat_bach", "-o", tmp_path / "p.h5", "--set", "data.teacher.activation=tanh")
    assert result.exit_code == 2 and "data.teacher.activation must be one of" in result.output
    assert not (tmp_path / "p.h5").exists()


@pytest.mark.slow
def test_snapshots_are_thinned_to_fit_the_size_budget(tiny, tmp_path):
    overrides = ["model.width=2000", "runs.noisy=null", "runs.lazy=null", "record.every=0.01",
                 "record.max_file_mb=2", "train.integrator={method: euler, dt: 0.01}"]
    scenario = parse_scenario(TINY, overrides=overrides)
    the_plan = mf.plan(scenario)
    assert the_plan.every > 0.01 and "record.every raised from 0.01" in the_plan.notes[0]
    assert the_plan.estimated_bytes <= 2e6
    out = tmp_path / "thin.h5"
    mf.simulate(scenario, out).close()
    assert out.stat().st_size <= 2e6
    frames = recorded(out, "rich", lambda run: run.times)
    assert 10 < len(frames) < 201 and frames[-1] == 2.0


def test_an_existing_output_is_replaced_only_with_overwrite(tiny, tmp_path):
    out = tmp_path / "tiny.h5"
    assert invoke("simulate", tiny, "-o", out, "--set", "train.t_end=0.5").exit_code == 0
    before = file_contents(out)
    result = invoke("simulate", tiny, "-o", out)
    assert result.exit_code == 2 and "another scenario: replace it with --overwrite" in result.output
    assert file_contents(out) == before
    result = invoke("simulate", tiny, "-o", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert recorded(out, "rich", lambda run: run.t) == 2.0
    assert invoke("simulate", tiny, "-o", out, "--resume", "--overwrite").exit_code == 2


def test_resume_accepts_a_file_written_before_a_key_existed(tiny, tmp_path):
    # the file stores its resolved scenario; one written before data.seed existed lacks the key
    out = tmp_path / "tiny.h5"
    invoke("simulate", tiny, "-o", out)
    with h5py.File(out, "r+") as h5:
        stored = yaml.safe_load(h5["parameters"].attrs["scenario"])
        del stored["data"]["seed"]
        h5["parameters"].attrs["scenario"] = yaml.safe_dump(stored, sort_keys=False)
    before = file_contents(out)
    result = invoke("simulate", tiny, "-o", out, "--resume")
    assert result.exit_code == 0, result.output
    assert file_contents(out) == before  # every run already complete: nothing rewritten
    result = invoke("simulate", tiny, "-o", out, "--resume", "--set", "data.seed=5")  # a value of its own differs
    assert result.exit_code == 2 and "scenario differs" in result.output


class StopCutIntoAnImport(ModelTimeBar):
    """SIGTERM arrives (the CLI's handler installed) while an import runs: the interrupt comes
    out of the import as an ImportError, as Python reports a module whose loading it cut short."""

    def __init__(self, name, t0, t_end):
        super().__init__(name, t0, t_end, enabled=False)

    def update_state(self, state):
        if self.name == "lazy" and state.t > 1.2:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)  # the handler runs at the next bytecode; never reached
            except KeyboardInterrupt:
                raise ImportError("initialization failed") from None


def test_a_stop_that_surfaces_as_another_error_leaves_the_run_interrupted(tmp_path):
    from meanfield.cli import sigterm_as_interrupt

    scenario = parse_scenario(TINY)
    whole, parts = tmp_path / "whole.h5", tmp_path / "parts.h5"
    mf.simulate(scenario, whole).close()
    with sigterm_as_interrupt(), pytest.raises(KeyboardInterrupt):
        mf.simulate(scenario, parts, progress=StopCutIntoAnImport)
    with h5py.File(parts, "r") as h5:  # interrupted, resumable: not failed
        assert h5["parameters/lazy"].attrs["status"] == "interrupted"
    driver.simulate(scenario, str(parts), resume=True)[0].close()
    assert file_contents(parts) == file_contents(whole)
    from meanfield.errors import stop_requested

    assert not stop_requested()  # once the command is over, later errors in this process are errors
