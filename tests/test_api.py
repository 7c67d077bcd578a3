"""The public API a notebook drives: scenarios in and edited, simulations in memory and on
disk, trajectories read back, bad input as UsageError."""

import re
import shutil

import h5py
import numpy as np
import pytest

import meanfield as mf
from meanfield.config.loading import parse_scenario

TINY = {
    "name": "tiny",
    "seed": 2,
    "data": {"task": "teacher_student", "dim": 3, "n_train": 24, "n_test": 12, "teacher": {"width": 2}},
    "model": {"width": 10, "activation": "tanh", "init": {"symmetric": True}},
    "runs": {"rich": "mean_field", "lazy": {"parameterization": {"preset": "lazy", "alpha": 10}},
             "ntk": {"solver": "ntk"}},
    "train": {"t_end": 1.0, "integrator": {"method": "rk4", "dt": 0.1}},
    "record": {"every": 0.5},
}


def datasets(h5: h5py.File) -> dict:
    out = {}
    h5.visititems(lambda name, obj: out.update({name: obj[()].tolist()}) if isinstance(obj, h5py.Dataset) else None)
    return out


def test_every_public_name_is_documented():
    for name in mf.__all__:
        assert getattr(mf, name).__doc__, name


def test_the_api_table_names_every_public_attribute_of_a_recorded_run():
    """The API table's row for RecordedRun (docs/getting_started.md, moved from the README)
    lists what a run offers: every public attribute, those set per run (name, status, ended,
    t_stop, ...) and those of the class."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "docs" / "getting_started.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `RecordedRun` |"))
    listed = set(re.findall(r"`\.([a-z_0-9]+)", row))
    with mf.simulate(mf.load_scenario(TINY)) as trajectory:
        run = trajectory["rich"]
        public = {name for name in [*vars(run), *dir(type(run))] if not name.startswith("_")}
    assert {"ended", "t_stop"} <= public
    assert public - listed == set(), f"getting_started.md's RecordedRun row lacks {sorted(public - listed)}"


def test_load_scenario_takes_a_name_a_path_a_mapping_or_a_scenario(tmp_path):
    bundled = mf.load_scenario("quickstart")
    assert bundled.name == "quickstart" and bundled.model.width == 512
    path = tmp_path / "s.yaml"
    path.write_text(bundled.resolved_yaml())
    assert mf.load_scenario(path) == bundled
    assert mf.load_scenario(TINY).model.width == 10
    assert mf.load_scenario(bundled) is bundled
    assert mf.load_scenario("quickstart", ["model.width=64"]).model.width == 64
    assert mf.load_scenario("quickstart", {"model.width": 64}).model.width == 64
    assert mf.load_scenario(TINY, {"seed": 5}).seed == 5 and TINY["seed"] == 2  # the mapping is not edited


def test_replace_edits_and_validates_like_set():
    sc = mf.load_scenario(TINY)
    wider = sc.replace({"model.width": 20, "runs.ntk": None}, seed=7)
    assert (wider.model.width, list(wider.runs), wider.seed) == (20, ["rich", "lazy"], 7)
    assert sc.model.width == 10 and "ntk" in sc.runs  # a new scenario; the old one unchanged
    assert wider.replace({"runs.lazy.parameterization.alpha": 100}).runs["lazy"].parameterization.alpha == 100
    with pytest.raises(mf.UsageError, match="unknown key 'model.widht'; allowed here: width"):
        sc.replace({"model.widht": 3})
    with pytest.raises(mf.UsageError, match="model.width: must be > 0"):
        sc.replace({"model.width": -1})
    with pytest.raises(mf.UsageError, match="there is no run 'nope'"):
        sc.replace({"runs.nope": None})


def test_bad_sources_are_usage_errors(tmp_path):
    with pytest.raises(mf.UsageError, match="no such scenario file"):
        mf.load_scenario("no-such-scenario")
    with pytest.raises(mf.UsageError, match="unknown key 'sede'"):
        mf.load_scenario({**TINY, "sede": 1})
    with pytest.raises(mf.UsageError, match="not a meanfield trajectory file"):
        mf.open(tmp_path / "missing.h5")


def test_an_in_memory_simulation_is_the_file_a_disk_run_writes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with mf.simulate(TINY) as in_memory:
        assert in_memory.path is None and list(tmp_path.iterdir()) == []
        assert in_memory.runs == ["rich", "lazy", "ntk"]
        saved = in_memory.save(tmp_path / "saved.h5")
        memory_datasets = datasets(in_memory.h5)
    with mf.simulate(TINY, tmp_path / "disk.h5") as on_disk:
        assert on_disk.path == str(tmp_path / "disk.h5")
        assert datasets(on_disk.h5) == memory_datasets
    with mf.open(saved) as reopened:
        assert datasets(reopened.h5) == memory_datasets


def test_a_trajectory_reads_back_what_the_runs_did(tmp_path):
    with mf.simulate(TINY) as traj:
        assert traj.scenario == mf.load_scenario(TINY) and traj.seed == 2 and traj.complete
        rich, ntk = traj["rich"], traj["ntk"]
        assert (rich.solver, rich.preset, rich.predicted_regime, rich.status) == (
            "particles", "mean_field", "rich", "complete")
        assert rich.attrs["s"] == pytest.approx(1 / 10) and rich.attrs["eta_w"] == pytest.approx(10)
        assert ntk.solver == "ntk" and not ntk.has_particles and ntk.attrs["kernel"] == "empirical"
        loss = rich.measure("loss_train")
        assert loss.dims == ("time",) and list(loss.time.values) == [0.0, 0.5, 1.0]
        assert loss.values[-1] < loss.values[0]
        particles = rich.particles()
        assert particles.position.shape == (3, 10, 3) and particles.amplitude.shape == (3, 10)
        np.testing.assert_allclose(particles.amplitude.values[0, :5], -particles.amplitude.values[0, 5:])
        assert "gap_ntk" in rich.measures and "gap_ntk" not in ntk.measures
        assert traj.data.X_train.shape == (24, 3) and traj.data.teacher.W.shape == (2, 3)
        tree = traj.to_xarray()
        assert set(tree.children) == {"data", "rich", "lazy", "ntk"}
        assert tree["lazy"]["position"].shape == (3, 10, 3)
        summary = traj.summary()
        assert "tiny (in memory): 3 run(s)" in summary and "rich: measured" in summary


def test_gap_ntk_compares_with_the_reference_predictions(tmp_path):
    with mf.simulate(TINY) as traj:
        reference = traj["ntk"].series("f_test").value
        for name in ("rich", "lazy"):
            run = traj[name]
            expected = np.sqrt(np.mean((run.series("f_test").value - reference) ** 2, axis=1))
            np.testing.assert_allclose(run.series("gap_ntk").value, expected, rtol=1e-12)


def test_a_diverging_run_raises_with_the_valid_trajectory():
    diverging = mf.load_scenario(TINY, {"runs.rich.parameterization.lr": 1e9, "train.t_end": 20})
    with pytest.raises(mf.RunFailed, match="run 'rich' failed") as failure:
        mf.simulate(diverging)
    trajectory = failure.value.trajectory
    assert trajectory["rich"].status.startswith("failed: ") and trajectory["lazy"].status == "complete"
    assert np.all(np.isfinite(trajectory["rich"].particles().position.values))


def test_an_existing_file_is_continued_or_replaced_only_when_asked(tmp_path):
    out = tmp_path / "t.h5"
    mf.simulate(TINY, out).close()
    with pytest.raises(mf.UsageError, match="exists and holds the finished runs of this scenario: replace it with --overwrite"):
        mf.simulate(TINY, out)
    mf.simulate(mf.load_scenario(TINY, {"seed": 3}), out, overwrite=True).close()
    with mf.open(out) as traj:
        assert traj.seed == 3
    with mf.simulate(mf.load_scenario(TINY, {"seed": 3}), out, resume=True) as traj:  # nothing left to do
        assert traj.complete
    with pytest.raises(mf.UsageError, match="resume needs the file"):
        mf.simulate(TINY, resume=True)


def test_plan_says_what_would_run_and_builds_nothing():
    plan = mf.plan(parse_scenario("name: p\nmodel: {width: 100}\nruns: {rich: mean_field, ntk: {solver: ntk}}\n"))
    assert plan.resolved["rich"].s == pytest.approx(0.01) and plan.resolved["ntk"].s == pytest.approx(0.1)
    assert plan.resolved["rich"].regime.label == "rich" and plan.reference == "ntk"
    assert "predicted lazy" in plan.describe("x.h5") and "would write x.h5" in plan.describe("x.h5")


# ----------------------------------------------------------------------------- what `import meanfield` shows
def test_dir_shows_the_public_api_only():
    assert dir(mf) == sorted(mf.__all__) == mf.__all__
    for hidden in ("Callable", "Mapping", "Optional", "Path", "Union", "os", "annotations"):
        assert hidden not in dir(mf)
    for name in mf.__all__:
        getattr(mf, name)


def test_the_result_types_are_public_and_analysis_loads_scipy_only_when_asked_for():
    """Plan, Sweep and Analysis, what plan, load_sweep and analyze return, are names of the
    package; Analysis is imported on first use (its module loads SciPy, import meanfield does not)."""
    import subprocess
    import sys

    from meanfield.analysis import Analysis

    assert isinstance(mf.plan(TINY), mf.Plan)
    assert isinstance(mf.load_sweep(TINY, {"model.width": [8, 16]}), mf.Sweep)
    assert mf.Analysis is Analysis
    code = ("import sys, meanfield as mf\n"
            "assert 'scipy' not in sys.modules, 'scipy at import'\n"
            "from meanfield import Analysis\n"
            "assert 'scipy' in sys.modules and Analysis.__name__ == 'Analysis'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


# ----------------------------------------------------------------------------- wrong arguments: UsageError
@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """TINY on disk: rich and lazy with particles (3 snapshots, t = 0, 0.5, 1), ntk without."""
    path = tmp_path_factory.mktemp("recorded") / "tiny.h5"
    mf.simulate(TINY, path).close()
    return path


def test_particles_of_a_kernel_run_name_the_runs_that_have_them(recorded):
    with mf.open(recorded) as traj:
        for read in (lambda: traj["ntk"].particles(), lambda: traj["ntk"].frame(0)):
            with pytest.raises(mf.UsageError, match=r"^run 'ntk' records no particles \(a kernel run: it records "
                                                    r"predictions only\); runs with particles: rich, lazy$"):
                read()


def test_a_frame_index_is_checked_against_the_snapshots(recorded):
    with mf.open(recorded) as traj:
        rich = traj["rich"]
        np.testing.assert_array_equal(rich.frame(-3).W, rich.frame(0).W)
        np.testing.assert_array_equal(rich.frame(np.int64(2)).a, rich.frame(-1).a)
        for index in (3, 1000, -4):
            with pytest.raises(mf.UsageError, match=rf"^frame {index} out of range: run 'rich' has 3 frames \(0..2\)$"):
                rich.frame(index)
        for index in (1.5, "0", True):
            with pytest.raises(mf.UsageError, match=rf"^frame {re.escape(repr(index))}: give a whole snapshot index"):
                rich.frame(index)


def test_a_frame_at_a_time_is_the_nearest_snapshot_within_the_recorded_range(recorded):
    with mf.open(recorded) as traj:
        lazy = traj["lazy"]
        np.testing.assert_array_equal(lazy.frame(time=0.5).W, lazy.frame(1).W)
        np.testing.assert_array_equal(lazy.frame(time=0.8).W, lazy.frame(2).W)
        np.testing.assert_array_equal(lazy.frame(time=0).a, lazy.frame(0).a)
        for time in (1.01, -0.1, 100):
            with pytest.raises(mf.UsageError, match=rf"^time {time:g} outside the recorded range of run 'lazy': "
                                                    r"0 to 1 \(3 snapshots\)$"):
                lazy.frame(time=time)
        for time in (float("nan"), "1"):
            with pytest.raises(mf.UsageError, match="give a model time as a finite number"):
                lazy.frame(time=time)
        with pytest.raises(mf.UsageError, match="a snapshot index, frame\\(-1\\), or a time.*not both"):
            lazy.frame(1, time=0.5)
        with pytest.raises(mf.UsageError, match="not neither"):
            lazy.frame()


def test_unknown_runs_and_measures_name_what_exists_and_the_closest(recorded):
    with mf.open(recorded) as traj:
        with pytest.raises(mf.UsageError, match=r"has no run 'rch' \(runs: rich, lazy, ntk\); did you mean 'rich'\?$"):
            traj["rch"]
        with pytest.raises(mf.UsageError, match=r"has no run 'xyz' \(runs: rich, lazy, ntk\)$"):
            traj["xyz"]
        with pytest.raises(mf.UsageError, match=r"a run is named by a str, e.g. traj\['rich'\] .*not int 0$"):
            traj[0]
        rich = traj["rich"]
        with pytest.raises(mf.UsageError, match=r"^run 'rich' has no measure 'loss_tset' \(measures: .*loss_test.*\); "
                                                r"did you mean 'loss_test'\?$"):
            rich.measure("loss_tset")
        for read in (rich.measure, rich.series):
            with pytest.raises(mf.UsageError, match=r"^run 'rich': a measure is named by a str.*not NoneType None$"):
                read(None)
    with mf.simulate(mf.load_scenario(TINY, {"runs.ntk": None})) as in_memory:
        with pytest.raises(mf.UsageError,
                           match=r"^trajectory 'tiny' \(in memory\) has no run 'ntk' \(runs: rich, lazy\)$"):
            in_memory["ntk"]


def test_a_closed_trajectory_says_it_is_closed(recorded):
    traj = mf.open(recorded)
    rich = traj["rich"]
    traj.close()
    assert repr(traj).endswith("tiny.h5: closed>")
    for read in (lambda: traj["rich"], lambda: traj.runs, lambda: traj.summary()):
        with pytest.raises(mf.UsageError, match=r"tiny.h5 is closed: open it again"):
            read()
    for read in (lambda: rich.measure("loss_train"), lambda: rich.frame(0), lambda: rich.particles(), rich.final):
        with pytest.raises(mf.UsageError, match=r"^run 'rich': its trajectory is closed"):
            read()


def test_the_library_functions_refuse_what_they_cannot_take(recorded, tmp_path):
    path_expected = "give a file path \\(a str or pathlib.Path\\), not int 3"
    with mf.open(recorded) as traj:
        calls = [("open a trajectory", lambda: mf.open(3)), ("save a trajectory", lambda: traj.save(3)),
                 ("plot", lambda: mf.plot(3)), ("plot's output", lambda: mf.plot(traj, 3)),
                 ("animate's output", lambda: mf.animate(traj, 3)),
                 ("edge_of_stability", lambda: mf.edge_of_stability(3)),
                 ("edge_figure's output", lambda: mf.edge_figure(traj, 3)), ("open a sweep", lambda: mf.open_sweep(3)),
                 ("analyze", lambda: mf.analyze(3)), ("simulate's output", lambda: mf.simulate(TINY, 3)),
                 ("open a sweep", lambda: mf.SweepResult.open(3))]  # a list: two calls say the same words
        for what, call in calls:
            with pytest.raises(mf.UsageError, match=f"^{re.escape(what)}: {path_expected}$"):
                call()
        with pytest.raises(mf.UsageError, match=r"animate has no option 'evry' \(options: runs, fps, every.*\); "
                                                r"did you mean 'every'\?"):
            mf.animate(traj, tmp_path / "m.gif", evry=2)
        for name, value in (("fps", "a"), ("every", 1.5), ("fps", True)):
            with pytest.raises(mf.UsageError, match=rf"^animate: {name} is a whole number >= 1, not "):
                mf.animate(traj, tmp_path / "m.gif", **{name: value})
        for level in ("x", 0, -1, float("nan"), None):
            with pytest.raises(mf.UsageError, match=r"^edge_of_stability: level is a positive number"):
                mf.edge_of_stability(traj, level)
    with pytest.raises(mf.UsageError, match=r"^log: give a function that takes one line of text.*not int 3$"):
        mf.simulate(TINY, log=3)
    with pytest.raises(mf.UsageError, match=r"^progress: give True, False, None .* not str 'yes'$"):
        mf.simulate(TINY, progress="yes")
    assert list(tmp_path.iterdir()) == []
    for call in (lambda: mf.load_scenario(3), lambda: mf.plan(3), lambda: mf.simulate(None)):
        with pytest.raises(mf.UsageError, match=r"^a scenario is a bundled scenario's name, a YAML file's path"):
            call()
    for overrides in (3, "model.width=64", ["model.width", 64]):
        with pytest.raises(mf.UsageError, match=r"^overrides: give a mapping .* or a list of 'key=value' strings"):
            mf.load_scenario(TINY, overrides)
    with pytest.raises(mf.UsageError, match=r"^a sweep is a bundled study's name.*not int 3$"):
        mf.load_sweep(3)
    with pytest.raises(mf.UsageError, match=r"^grid: give a mapping of dotted keys to lists of values.*not list"):
        mf.sweep(TINY, grid=[64, 128], output=tmp_path / "never")
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_point_that_is_not_there_names_the_points(recorded, tmp_path):
    (tmp_path / "points").mkdir()
    for index in range(4):
        shutil.copyfile(recorded, tmp_path / "points" / f"p{index:04d}.h5")
    result = mf.SweepResult(tmp_path)
    with result.trajectory("p0002") as traj:
        assert traj.runs == ["rich", "lazy", "ntk"]
    with pytest.raises(mf.UsageError, match=r"has no point 'p0020' \(points: p0000 .. p0003, 4 in all; .*\); "
                                            r"did you mean 'p000\d'\?$"):
        result.trajectory("p0020")
    with pytest.raises(mf.UsageError, match=r"has no point 3 \(points: p0000 .. p0003, 4 in all"):
        result.trajectory(3)


@pytest.mark.slow
def test_animate_takes_runs_as_the_command_line_does(recorded, tmp_path):
    with mf.open(recorded) as traj:
        movies = {label: mf.animate(traj, tmp_path / f"{label}.gif", runs=runs).output.read_bytes()
                  for label, runs in (("list", ["lazy"]), ("text", "lazy"), ("both", " rich, lazy"))}
    assert movies["text"] == movies["list"] != movies["both"]
