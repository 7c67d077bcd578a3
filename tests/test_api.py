"""The public API a notebook drives: scenarios in and edited, simulations in memory and on
disk, trajectories read back, bad input as UsageError."""

import h5py
import numpy as np
import pytest

import meanfield as mf
from meanfield.scenario import parse_scenario

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
    with pytest.raises(mf.UsageError, match="model.width: Input should be greater than 0"):
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
