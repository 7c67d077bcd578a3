"""The trajectory file: H5MD 1.1 layout, round trips, resume, crash safety, readability by others."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

import meanfield as mf
from meanfield import storage
from meanfield.errors import UsageError
from meanfield.model.state import RunState

SCENARIO = "name: test\nseed: 3\nmodel: {width: 8}\n"
M, D, K = 8, 3, 5  # particles, input dimension, length of the vector measure
MEASURES = {"loss_train": (), "loss_test": (), "f_test": (K,)}
RUN_ATTRS = {
    "solver": "particles",
    "parameterization": "mean_field",
    "s": 0.125,
    "eta_a": 8.0,
    "eta_w": 8.0,
    "symmetric": True,
    "integrator": {"method": "rk45", "rtol": 1e-6},
}


def snapshot(i: int, rng=None):
    """A deterministic snapshot number i: (a, W, b, measures)."""
    rng = rng or np.random.default_rng(i)
    a, W, b = rng.normal(size=M), rng.normal(size=(M, D)), rng.normal(size=M)
    measures = {"loss_train": 1.0 / (i + 1), "loss_test": 2.0 / (i + 1), "f_test": rng.normal(size=K)}
    return a, W, b, measures


def make_file(path, frames=3, *, bias=True, particles=True):
    """A file with a particle run `rich` and an observables-only run `ntk`, `frames` snapshots each."""
    tf = storage.create(path, scenario_yaml=SCENARIO, seed=3)
    rng = np.random.default_rng(0)
    teacher = SimpleNamespace(a=np.ones(2) / 2, W=rng.normal(size=(2, D)), activation="relu")
    X_train, y_train = rng.normal(size=(10, D)), rng.normal(size=10)
    X_test, y_test = rng.normal(size=(K, D)), rng.normal(size=K)
    tf.write_data(X_train, y_train, X_test, y_test, teacher)
    layout = dict(m=M, d=D, bias=bias, dtype=np.float32, measures=MEASURES)
    rich = tf.add_run("rich", attrs=RUN_ATTRS, particles=particles, **layout)
    ntk = tf.add_run("ntk", attrs={"solver": "ntk"}, particles=False, **layout)
    for i in range(frames):
        a, W, b, measures = snapshot(i)
        rich.append(10 * i, 0.5 * i, (a, W, b if bias else None), measures)
        ntk.append(10 * i, 0.5 * i, None, measures)
    return tf, rich, ntk


# ----------------------------------------------------------------------------- layout
def test_layout_follows_h5md_and_design(tmp_path):
    path = tmp_path / "t.h5"
    make_file(path)[0].close()
    with h5py.File(path, "r") as f:
        assert list(f["h5md"].attrs["version"]) == [1, 1]
        assert f["h5md/author"].attrs["name"]
        assert f["h5md/creator"].attrs["name"] == "meanfield"
        assert "version" in f["h5md/creator"].attrs
        params = f["parameters"].attrs
        assert (params["format"], params["format_version"], params["seed"]) == ("meanfield", 1, 3)
        assert params["scenario"] == SCENARIO
        for name in ("X_train", "y_train", "X_test", "y_test", "teacher/a", "teacher/W"):
            assert isinstance(f["data"][name], h5py.Dataset), name
        assert f["data/teacher/W"].shape == (2, D)
        assert f["data/teacher"].attrs["activation"] == "relu"

        assert f["parameters/rich"].attrs["status"] == "running"
        assert f["parameters/rich"].attrs["solver"] == "particles"
        assert json.loads(f["parameters/rich"].attrs["integrator"]) == RUN_ATTRS["integrator"]

        box = f["particles/rich/box"]
        assert box.attrs["dimension"] == D
        assert [s.decode() if isinstance(s, bytes) else s for s in box.attrs["boundary"]] == ["none"] * D
        shapes = {"position": (3, M, D), "amplitude": (3, M), "bias": (3, M)}
        for element, shape in shapes.items():
            group = f["particles/rich"][element]
            assert group["value"].shape == shape
            assert group["step"].dtype == np.int64 and group["time"].dtype == np.float64
            assert list(group["step"]) == [0, 10, 20]
        for run in ("rich", "ntk"):
            assert f[f"observables/{run}/loss_train/value"].shape == (3,)
            assert f[f"observables/{run}/f_test/value"].shape == (3, K)
        assert "ntk" not in f.get("particles", {})
    with mf.open(path) as trajectory:
        assert trajectory.runs == ["rich", "ntk"]


def test_elements_of_a_run_share_step_and_time_by_hard_links(tmp_path):
    path = tmp_path / "t.h5"
    make_file(path)[0].close()
    with h5py.File(path, "r") as f:
        rich = [f[f"particles/rich/{e}"] for e in ("position", "amplitude", "bias")]
        rich += [f[f"observables/rich/{m}"] for m in MEASURES]
        for key in ("step", "time"):
            ids = {g[key].id for g in rich}
            assert len(ids) == 1
            assert f[f"observables/ntk/loss_train/{key}"].id not in ids  # runs do not share


SERIES = ("/step", "/time", "/value")


def test_growing_datasets_are_extendable_one_frame_per_chunk_uncompressed(tmp_path):
    path = tmp_path / "t.h5"
    make_file(path)[0].close()
    with h5py.File(path, "r") as f:
        growing = []
        f.visititems(lambda name, obj: growing.append(obj) if name.endswith(SERIES) else None)
        assert growing
        for ds in growing:
            assert ds.maxshape[0] is None and ds.maxshape[1:] == ds.shape[1:], ds.name
            # uncompressed: a shared chunk, written again at every snapshot, keeps its place (a kill
            # cannot spoil its earlier frames), and a frame of particles is written 5-20x faster
            assert ds.compression is None and not ds.shuffle, ds.name
            assert ds.fletcher32 == (ds.chunks[0] == 1), ds.name  # a frame of its own: a checksum
            assert ds.chunks[1:] == ds.shape[1:], ds.name  # a frame is never split across chunks
            assert not ds.dims[0].keys(), ds.name  # no dimension scales
        assert f["particles/rich/position/value"].dtype == np.float32
        assert f["observables/rich/loss_train/value"].dtype == np.float64


def test_large_frames_get_one_chunk_each_small_ones_are_grouped(tmp_path):
    tf = storage.create(tmp_path / "t.h5", scenario_yaml=SCENARIO, seed=0)
    m = storage.CHUNK_BYTES // 4  # one float32 amplitude frame = CHUNK_BYTES
    tf.add_run("big", attrs={}, m=m, d=2, bias=False, particles=True, dtype="float32",
               measures={"loss": ()})
    position = tf.h5["particles/big/position/value"]
    amplitude = tf.h5["particles/big/amplitude/value"]
    assert position.chunks == (1, m, 2) and amplitude.chunks == (1, m)
    assert tf.h5["particles/big/position/step"].chunks == (storage.CHUNK_BYTES // 8,)
    tf.close()


def test_default_snapshot_dtype_is_float32(tmp_path):
    tf = storage.create(tmp_path / "t.h5", scenario_yaml=SCENARIO, seed=0)
    tf.add_run("rich", attrs={}, m=4, d=2, bias=False, particles=True, measures={})
    assert tf.h5["particles/rich/position/value"].dtype == np.float32
    tf.close()


# ----------------------------------------------------------------------------- round trips
def test_append_then_read_back(tmp_path):
    path = tmp_path / "t.h5"
    tf, rich, _ = make_file(path, frames=4)
    assert rich.frames == 4
    rich.status = "complete"
    tf.close()

    with mf.open(path) as trajectory:
        run = trajectory["rich"]
        assert run.status == "complete" and run.frames == 4
        assert run.attrs == RUN_ATTRS
        np.testing.assert_array_equal(run.times, 0.5 * np.arange(4))
        for i in range(4):
            a, W, b, measures = snapshot(i)
            frame = run.frame(i)
            np.testing.assert_allclose(frame.a, a, rtol=1e-6)
            np.testing.assert_allclose(frame.W, W, rtol=1e-6)
            np.testing.assert_allclose(frame.b, b, rtol=1e-6)
            for name, value in measures.items():
                np.testing.assert_array_equal(run.series(name).value[i], value)  # float64: exact
        ntk = trajectory["ntk"]
        assert not ntk.has_particles and ntk.status == "running"
        assert set(ntk.measures) == set(MEASURES)
        with pytest.raises(UsageError, match="run .ntk. records no particles"):
            ntk.frame(0)


def test_run_without_bias_has_no_bias_element(tmp_path):
    path = tmp_path / "t.h5"
    make_file(path, bias=False)[0].close()
    with h5py.File(path, "r") as f:
        assert set(f["particles/rich"]) == {"box", "position", "amplitude"}
    with mf.open(path) as trajectory:
        assert trajectory["rich"].frame(-1).b is None and "bias" not in trajectory["rich"].particles()


def test_a_bad_snapshot_writes_nothing(tmp_path):
    tf, rich, _ = make_file(tmp_path / "t.h5", frames=2)
    a, W, b, measures = snapshot(2)
    with pytest.raises(ValueError, match="loss_test"):
        rich.append(20, 1.0, (a, W, b), {"loss_train": 0.1})
    with pytest.raises(ValueError, match="shape"):
        rich.append(20, 1.0, (a, W.T, b), measures)
    assert rich.frames == 2
    assert tf.h5["particles/rich/position/value"].shape[0] == 2
    tf.close()


def test_checkpoint_round_trip_restores_state_and_random_stream(tmp_path):
    path = tmp_path / "t.h5"
    tf, rich, _ = make_file(path, frames=2)
    assert rich.load_checkpoint() is None
    gen = np.random.default_rng(42)
    gen.normal(size=7)  # advance the stream
    state = np.random.default_rng(1).normal(size=M * (D + 2))
    rich.save_checkpoint(RunState(1.25, 123, state.astype(np.float32), h=0.0123, rng=gen.bit_generator.state))
    expected = gen.normal(size=5)
    tf.close()

    with storage.open_for_resume(path, same_scenario=lambda text: text == SCENARIO) as tf:
        checkpoint, frames = tf.run("rich").load_checkpoint()
    assert checkpoint.y.dtype == np.float64  # always full precision
    np.testing.assert_array_equal(checkpoint.y, state.astype(np.float32))
    assert (checkpoint.t, checkpoint.step, checkpoint.h, frames) == (1.25, 123, 0.0123, 2)
    restored = np.random.default_rng()
    restored.bit_generator.state = checkpoint.rng
    np.testing.assert_array_equal(restored.normal(size=5), expected)


def test_checkpoint_is_overwritten_in_place_and_resized(tmp_path):
    tf, rich, _ = make_file(tmp_path / "t.h5", frames=1)
    rng_state = np.random.default_rng(0).bit_generator.state
    rich.save_checkpoint(RunState(1.0, 1, np.arange(4.0), rng=rng_state))
    a, W, b, measures = snapshot(1)
    rich.append(10, 1.0, (a, W, b), measures)
    rich.save_checkpoint(RunState(2.0, 2, np.arange(6.0), rng=rng_state))
    checkpoint, frames = rich.load_checkpoint()
    np.testing.assert_array_equal(checkpoint.y, np.arange(6.0))
    assert (checkpoint.t, frames) == (2.0, 2)
    assert list(tf.h5["checkpoint/rich"]) == ["state"]
    tf.close()


def test_truncate_then_append_continues(tmp_path):
    path = tmp_path / "t.h5"
    make_file(path, frames=5)[0].close()
    with storage.open_for_resume(path, same_scenario=lambda text: text == SCENARIO) as tf:
        rich = tf.run("rich")
        assert rich.frames == 5
        rich.truncate(2)
        assert rich.frames == 2
        a, W, b, measures = snapshot(7)
        rich.append(99, 9.5, (a, W, b), measures)
        tf.run("ntk").truncate(0)
    with h5py.File(path, "r") as f:
        assert list(f["particles/rich/position/step"]) == [0, 10, 99]
        assert f["particles/rich/bias/value"].shape == (3, M)
        assert f["observables/rich/f_test/value"].shape == (3, K)
        assert f["observables/ntk/loss_train/value"].shape == (0,)
    with mf.open(path) as trajectory:
        run = trajectory["rich"]
        np.testing.assert_array_equal(run.times, [0.0, 0.5, 9.5])
        np.testing.assert_allclose(run.frame(2).W, W, rtol=1e-6)
        np.testing.assert_array_equal(run.series("f_test").value[2], measures["f_test"])


def test_status_values(tmp_path):
    tf, rich, _ = make_file(tmp_path / "t.h5", frames=0)
    for status in ("complete", "interrupted", "failed: loss is nan at t = 3.5", "running"):
        rich.status = status
        assert rich.status == status
    with pytest.raises(ValueError):
        rich.status = "done"
    tf.close()


# ----------------------------------------------------------------------------- refusing files
def refusal(path, why: str) -> str:
    return re.escape(f"{path} is not a meanfield trajectory file ({why})")


def test_open_for_resume_refuses_a_different_scenario(tmp_path):
    path = tmp_path / "t.h5"
    make_file(path)[0].close()
    with pytest.raises(UsageError, match=re.escape(f"{path}: cannot resume, the scenario differs")):
        storage.open_for_resume(path, same_scenario=lambda text: text == SCENARIO + "# edited\n")
    with storage.open_for_resume(path, same_scenario=lambda text: text == SCENARIO) as tf:  # the file was left closed
        assert tf.runs == ["rich", "ntk"] and tf.run("rich").frames == 3


def test_open_for_resume_refuses_other_hdf5_files(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(UsageError, match=refusal(path, "no /h5md group")):
        storage.open_for_resume(path, same_scenario=lambda text: text == SCENARIO)
    with h5py.File(path, "a") as f:  # H5MD, but not ours
        f.create_group("h5md")
        f.create_group("parameters")
    with pytest.raises(UsageError, match="format"):
        storage.open_for_resume(path, same_scenario=lambda text: text == SCENARIO)


def test_refuses_files_that_are_not_hdf5_or_missing(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5\n")
    with pytest.raises(UsageError, match=refusal(text, "not an HDF5 file")):
        storage.open_for_resume(text, same_scenario=lambda text: text == SCENARIO)
    missing = tmp_path / "missing.h5"
    with pytest.raises(UsageError, match=refusal(missing, "no such file")):
        storage.open_trajectory(missing)
    with pytest.raises(UsageError, match="no such file"):
        mf.open(missing)


def test_refuses_a_newer_format_version(tmp_path):
    path = tmp_path / "t.h5"
    make_file(path)[0].close()
    with h5py.File(path, "a") as f:
        f["parameters"].attrs["format_version"] = storage.FORMAT_VERSION + 1
    with pytest.raises(UsageError, match="newer"):
        storage.open_trajectory(path)


def test_unknown_run_names_the_file_and_the_runs(tmp_path):
    path = tmp_path / "t.h5"
    make_file(path)[0].close()
    with mf.open(path) as trajectory, pytest.raises(UsageError, match="has no run 'lazy' \\(runs: rich, ntk\\)"):
        trajectory["lazy"]


# ----------------------------------------------------------------------------- crash and live reading
WRITER = """
import os, sys
import numpy as np
from meanfield import storage
tf = storage.create(sys.argv[1], scenario_yaml="x: 1\\n", seed=0)
run = tf.add_run("rich", attrs={}, m=64, d=3, bias=False, particles=True, dtype="float32",
                 measures={"loss": ()})
for i in range(int(sys.argv[2])):
    run.append(i, 0.1 * i, (np.full(64, i), np.full((64, 3), i), None), {"loss": 1.0 / (i + 1)})
print("written", flush=True)
sys.stdin.readline()   # the parent reads the file while this process holds it open
os._exit(0)            # die without closing the file or running any clean-up
"""


def test_file_stays_readable_when_the_writer_dies_and_while_it_writes(tmp_path):
    path = tmp_path / "t.h5"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    writer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WRITER), str(path), "7"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert writer.stdout.readline().strip() == "written"
        with mf.open(path) as live:  # the writer still has the file open
            assert live["rich"].frames == 7
        writer.stdin.write("\n")
        writer.stdin.flush()
        assert writer.wait(timeout=30) == 0
    finally:
        writer.kill()
    with mf.open(path) as trajectory:
        run = trajectory["rich"]
        assert run.status == "running"
        np.testing.assert_array_equal(run.particles()["amplitude"].values[:, 0], np.arange(7))
        np.testing.assert_array_equal(run.series("loss").value, 1.0 / np.arange(1, 8))
    with storage.open_for_resume(path, same_scenario=lambda text: text == "x: 1\n") as tf:  # and can be resumed
        assert tf.run("rich").frames == 7


# ----------------------------------------------------------------------------- other readers
def test_xarray_reads_every_element(tmp_path):
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    path = tmp_path / "t.h5"
    make_file(path)[0].close()
    def open_group(group):
        return xr.open_dataset(path, engine="h5netcdf", phony_dims="sort", group=group)

    with open_group("particles/rich/position") as ds:
        assert ds["value"].shape == (3, M, D)
        np.testing.assert_array_equal(ds["step"].values, [0, 10, 20])
    with open_group("observables/rich/f_test") as ds:
        np.testing.assert_array_equal(ds["value"].values[1], snapshot(1)[3]["f_test"])
    with open_group("data") as ds:
        assert ds["X_train"].shape == (10, D)
    if hasattr(xr, "open_datatree"):  # the whole file at once
        with xr.open_datatree(path, engine="h5netcdf", phony_dims="sort") as tree:
            assert tree["observables/ntk/loss_train/value"].shape == (3,)


def test_pyh5md_reads_the_particles(tmp_path):
    pyh5md = pytest.importorskip("pyh5md")
    path = tmp_path / "t.h5"
    make_file(path)[0].close()
    with pyh5md.File(str(path), "r") as f:
        position = pyh5md.element(f.particles_group("rich"), "position")
        assert position.value.shape == (3, M, D)
        np.testing.assert_array_equal(position.step[:], [0, 10, 20])


# ----------------------------------------------------------------------------- size estimate
def test_estimate_bounds_an_incompressible_file(tmp_path):
    path = tmp_path / "t.h5"
    frames, m, d = 20, 256, 3
    tf = storage.create(path, scenario_yaml=SCENARIO, seed=0)
    run = tf.add_run("rich", attrs={}, m=m, d=d, bias=True, particles=True, dtype="float32",
                     measures={"loss": (), "f": (K,)})
    rng = np.random.default_rng(0)
    for i in range(frames):
        run.append(i, i, (rng.normal(size=m), rng.normal(size=(m, d)), rng.normal(size=m)),
                   {"loss": rng.normal(), "f": rng.normal(size=K)})
    run.save_checkpoint(RunState(1.0, 1, rng.normal(size=m * (d + 2)), rng={}))
    tf.close()
    estimate = storage.estimate_bytes(frames=frames, m=m, d=d, bias=True, particles=True,
                                      n_measures=1 + K, itemsize=4)
    assert os.path.getsize(path) <= estimate < 3 * os.path.getsize(path)


# ----------------------------------------------------------------------------- the reading API
def datasets(path) -> dict:
    """Every dataset of a file (under every name) and its values."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.update({name: obj[()].tolist()}) if isinstance(obj, h5py.Dataset) else None)
    return out


def test_measures_and_particles_as_xarray(tmp_path):
    path = tmp_path / "t.h5"
    make_file(path, frames=3)[0].close()
    with mf.open(path) as trajectory:
        run = trajectory["rich"]
        loss = run.measure("loss_train")
        assert loss.dims == ("time",) and list(loss["time"].values) == [0.0, 0.5, 1.0]
        assert list(loss["step"].values) == [0, 10, 20]
        np.testing.assert_array_equal(loss.values, [1.0, 0.5, 1 / 3])
        f_test = run.measure("f_test")
        assert f_test.dims == ("time", "test_point") and f_test.shape == (3, K)
        particles = run.particles()
        assert particles["position"].dims == ("time", "particle", "dim")
        assert particles["position"].shape == (3, M, D) and particles["bias"].shape == (3, M)
        np.testing.assert_allclose(particles["amplitude"].values[1], snapshot(1)[0], rtol=1e-6)
        with pytest.raises(UsageError, match="no measure 'risk'"):
            run.measure("risk")

        tree = trajectory.to_xarray()
        assert set(tree.children) == {"data", "rich", "ntk"}
        assert tree["rich"]["loss_test"].shape == (3,) and tree["rich"]["position"].shape == (3, M, D)
        assert "position" not in tree["ntk"].dataset and tree["ntk"]["f_test"].shape == (3, K)
        np.testing.assert_array_equal(tree["data"]["X_train"].values, trajectory.data.X_train)
        assert tree["data"]["teacher_W"].shape == (2, D) and tree.attrs["seed"] == 3


def test_a_snapshot_being_written_is_left_out(tmp_path):
    path = tmp_path / "t.h5"
    make_file(path, frames=3)[0].close()
    with h5py.File(path, "a") as f:  # the writer got as far as the positions of a fourth snapshot
        f["particles/rich/position/value"].resize(4, axis=0)
    with mf.open(path) as trajectory:
        run = trajectory["rich"]
        assert run.frames == 3 and run.particles()["position"].shape == (3, M, D)
        assert run.measure("loss_test").shape == (3,)


def test_an_in_memory_file_is_the_same_file_and_can_be_saved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    writer, _, _ = make_file(None, frames=2)
    trajectory = writer.finish()
    assert trajectory.path is None and trajectory["rich"].frames == 2
    assert list(tmp_path.iterdir()) == []  # nothing on disk
    saved = trajectory.save(tmp_path / "saved.h5")
    make_file(tmp_path / "disk.h5", frames=2)[0].close()
    assert datasets(saved) == datasets(tmp_path / "disk.h5")
    with pytest.raises(UsageError, match="exists"):
        trajectory.save(saved)
    trajectory.close()
    with mf.open(saved) as reopened:
        assert reopened.runs == ["rich", "ntk"] and reopened.seed == 3


def test_a_run_whose_layout_was_cut_short_is_not_in_the_file_and_is_laid_out_again(tmp_path, monkeypatch):
    # a stop (SIGTERM, a kill) while add_run creates the measures' datasets one by one
    from meanfield.storage import writer

    made, create = [], writer._create_element

    def stopped_at_the_third(*args):
        if len(made) == 2:
            raise KeyboardInterrupt
        made.append(args)
        return create(*args)

    path = tmp_path / "t.h5"
    measures = {"loss_train": (), "loss_test": (), "f_test": (4,), "displacement_w": ()}
    with storage.create(path, scenario_yaml=SCENARIO, seed=3) as tf:
        monkeypatch.setattr(writer, "_create_element", stopped_at_the_third)
        with pytest.raises(KeyboardInterrupt):
            tf.add_run("rich", attrs=RUN_ATTRS, m=4, d=2, bias=False, particles=True, measures=measures)
        assert tf.runs == [] and "rich" in tf.h5["particles"]  # remains, but no run
        monkeypatch.setattr(writer, "_create_element", create)
        run = tf.add_run("rich", attrs=RUN_ATTRS, m=4, d=2, bias=False, particles=True, measures=measures)
        run.append(0, 0.0, (np.ones(4), np.ones((4, 2)), None), {"loss_train": 1.0, "loss_test": 2.0,
                                                                 "f_test": np.zeros(4), "displacement_w": 0.0})
        assert tf.runs == ["rich"] and sorted(tf.h5["observables/rich"]) == sorted(measures)
    with mf.open(path) as trajectory:
        assert trajectory["rich"].final()["loss_test"] == 2.0 and trajectory["rich"].status == "running"
