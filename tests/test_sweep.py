"""The sweep engine: grid validation, the process pool against Dask, failures, resume."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import meanfield as mf
from meanfield.cli import main
from meanfield.config.loading import parse_scenario
from meanfield.errors import UsageError
from meanfield.sweeps.execution import point_status, run_sweep
from meanfield.sweeps.grid import load_sweep, parse_sweep
from meanfield.sweeps.table import read_table

BASE = {
    "name": "tiny",
    "seed": 3,
    "data": {"task": "teacher_student", "dim": 2, "n_train": 16, "n_test": 16},
    "model": {"width": 8, "activation": "relu"},
    "runs": {"rich": "mean_field", "lazy": {"parameterization": {"preset": "lazy", "alpha": 10}}},
    "train": {"t_end": 0.4, "integrator": {"method": "euler", "dt": 0.05}},
    "record": {"every": 0.2},
}


def sweep_text(grid, **extra) -> str:
    return yaml.safe_dump({"base": BASE, "grid": grid, **extra}, sort_keys=False)


def serial():
    """An in-process executor: the engine's logic without process start-up."""
    return ThreadPoolExecutor(max_workers=1)


# ------------------------------------------------------------------ the grid
def test_points_are_the_product_in_order_with_labels_and_scenarios_as_set_would_make_them():
    sweep = parse_sweep(sweep_text({
        "model.width": [8, 16],
        "runs.lazy.parameterization": {"weak": {"preset": "lazy", "alpha": 2}, "strong": {"preset": "lazy", "alpha": 50}},
    }))
    assert [p.id for p in sweep.points] == ["p0000", "p0001", "p0002", "p0003"]
    assert [tuple(p.coords.values()) for p in sweep.points] == [(8, "weak"), (8, "strong"), (16, "weak"), (16, "strong")]
    by_set = parse_scenario(yaml.safe_dump(BASE), overrides=["model.width=16", "runs.lazy.parameterization={preset: lazy, alpha: 50}"])
    assert sweep.points[3].scenario == by_set


def test_replicates_spawn_child_seeds_of_the_base_seed():
    sweep = parse_sweep(sweep_text({"model.width": [8]}, replicates=3))
    expected = [int(c.generate_state(1)[0]) for c in np.random.SeedSequence(BASE["seed"]).spawn(3)]
    assert [p.scenario.seed for p in sweep.points] == expected
    assert len(set(expected)) == 3


@pytest.mark.parametrize("grid, words", [
    ({"model.widht": [8, 16]}, ["p0000", "model.widht", "unknown key", "allowed here", "width"]),
    ({"model.width": []}, ["model.width", "empty"]),
    ({"model.width": ["wide"]}, ["p0000", "model.width", "integer"]),
    ({"model.width": [8, -4]}, ["p0001", "model.width = -4", "model.width: must be > 0"]),
    ({"model.width": 8}, ["model.width", "list of values"]),
    ({"runs.ghost": [None]}, ["no run 'ghost'"]),
    ({}, ["grid is a mapping"]),
])
def test_a_malformed_grid_is_rejected_with_the_key_and_what_is_allowed(grid, words):
    with pytest.raises(UsageError) as info:
        parse_sweep(sweep_text(grid), source="s.yaml")
    for word in words:
        assert word in str(info.value), str(info.value)


def test_a_malformed_sweep_runs_nothing_and_exits_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(sweep_text({"model.width": [8, 16], "train.t_end": [0.4, "long"]}))
    result = CliRunner().invoke(main, ["sweep", str(path), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "p0001" in result.output and "train.t_end" in result.output
    assert not (tmp_path / "out").exists()
    path.write_text(sweep_text({"model.width": [8]}, grids={"x": [1]}))
    result = CliRunner().invoke(main, ["sweep", str(path)])
    assert result.exit_code == 2 and "unknown key 'grids'" in result.output


def test_a_base_path_is_relative_to_the_sweep_file_and_bundled_names_work(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"base": "base.yaml", "grid": {"seed": [1, 2]}}))
    sweep = load_sweep(tmp_path / "s.yaml")
    assert sweep.name == "s" and [p.scenario.seed for p in sweep.points] == [1, 2]
    assert len(parse_sweep(yaml.safe_dump({"base": "quickstart", "grid": {"seed": [1]}})).points) == 1


# ------------------------------------------------------------------ running
def test_a_failing_point_is_recorded_and_the_others_complete(tmp_path):
    sweep = parse_sweep(sweep_text({"runs.rich.parameterization.lr": [1.0, 1e9, 2.0]}))
    result = run_sweep(sweep, tmp_path / "out", executor=serial())
    table = read_table(tmp_path / "out")
    assert list(table["status"]) == ["complete", "failed", "complete"]
    assert "non-finite" in table["reason"][1] or "diverge" in table["reason"][1]
    assert result.failed == 1 and result.ran == 3
    assert np.isfinite(table["rich.loss_train"][[0, 2]]).all()
    assert table["rich.status"][1] == "failed" and table["lazy.status"][1] == "complete"


def test_each_point_file_equals_the_same_scenario_simulated_alone(tmp_path):
    sweep = parse_sweep(sweep_text({"model.width": [8, 12]}))
    run_sweep(sweep, tmp_path / "out", executor=serial())
    alone = tmp_path / "alone.h5"
    mf.simulate(sweep.points[1].scenario, alone).close()
    with h5py.File(tmp_path / "out/points/p0001.h5", "r") as a, h5py.File(alone, "r") as b:
        for key in ("particles/rich/position/value", "observables/lazy/loss_test/value"):
            np.testing.assert_array_equal(a[key][()], b[key][()])


def test_a_directory_is_not_reused_without_resume_and_resume_refuses_another_sweep(tmp_path):
    sweep = parse_sweep(sweep_text({"model.width": [8]}))
    run_sweep(sweep, tmp_path / "out", executor=serial())
    with pytest.raises(UsageError, match="--resume"):
        run_sweep(sweep, tmp_path / "out", executor=serial())
    other = parse_sweep(sweep_text({"model.width": [8, 16]}))
    with pytest.raises(UsageError, match="different sweep"):
        run_sweep(other, tmp_path / "out", executor=serial(), resume=True)
    again = run_sweep(sweep, tmp_path / "out", executor=serial(), resume=True)
    assert (again.ran, again.skipped) == (0, 1)


@pytest.mark.slow
def test_a_second_process_on_a_sweep_directory_is_refused_naming_the_first(tmp_path):
    from meanfield.storage import WriterLock

    path = tmp_path / "tiny.yaml"
    path.write_text(sweep_text({"model.width": [8]}))
    run_sweep(load_sweep(path), tmp_path / "out", executor=serial())
    with WriterLock(tmp_path / "out" / "sweep"):  # another process: this one, from a subprocess's view
        done = subprocess.run([sys.executable, "-m", "meanfield.cli", "-q", "sweep", path, "-o", tmp_path / "out",
                               "--resume"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and f"being written by another process (pid {os.getpid()}" in done.stderr
    assert not (tmp_path / "out" / "sweep.lock").exists()


@pytest.mark.slow
def test_the_process_pool_and_a_dask_local_cluster_give_identical_results(tmp_path):
    pytest.importorskip("distributed")
    from meanfield.sweeps.execution import dask_executor

    sweep = parse_sweep(sweep_text({"model.width": [8, 16], "seed": [0, 1]}))
    run_sweep(sweep, tmp_path / "pool", workers=2, threads=1)
    with dask_executor(workers=2) as executor:
        run_sweep(sweep, tmp_path / "dask", executor=executor, threads=1)
    pool, dask = read_table(tmp_path / "pool"), read_table(tmp_path / "dask")
    assert list(pool["status"]) == list(dask["status"]) == ["complete"] * 4
    for column in pool.measure_columns():
        np.testing.assert_array_equal(pool[column], dask[column], err_msg=column)
    for point in sweep.points:
        assert _particles_digest(tmp_path / "pool" / point.file) == _particles_digest(tmp_path / "dask" / point.file)


def _particles_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with h5py.File(path, "r") as h5:
        for run in ("rich", "lazy"):
            digest.update(h5[f"particles/{run}/position/value"][()].tobytes())
            digest.update(h5[f"observables/{run}/f_test/value"][()].tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------ killing and resuming
SLOW_BASE = {**BASE, "train": {"t_end": 6.0, "integrator": {"method": "euler", "dt": 0.002}}, "record": {"every": 0.5}}


def _start_sweep(tmp_path: Path, points: int, workers: int = 1, t_end: float = 6.0) -> tuple[subprocess.Popen, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "slow.yaml"
    base = {**SLOW_BASE, "train": {**SLOW_BASE["train"], "t_end": t_end}}
    path.write_text(yaml.safe_dump({"base": base, "grid": {"seed": list(range(points))}}))
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "meanfield.cli", "sweep", str(path), "-o", str(out),
                                "--workers", str(workers)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    return process, out


def _wait_for_rows(out: Path, rows: int, process: subprocess.Popen, limit: float = 240) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read().decode()
        try:
            if len(read_table(out)) >= rows:
                return
        except UsageError:
            pass
        time.sleep(0.1)
    raise AssertionError("the sweep made no progress")


def _fingerprints(out: Path) -> dict[str, tuple]:
    return {p.name: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted((out / "points").glob("*.h5")) if point_status(p) == "complete"}


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM to the sweep", "SIGKILL to every process"])
def test_resume_after_a_kill_runs_only_the_points_not_complete(tmp_path, how):
    process, out = _start_sweep(tmp_path, points=4)
    _wait_for_rows(out, 1, process)
    if how.startswith("SIGTERM"):
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 130
    else:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    complete = _fingerprints(out)
    assert 1 <= len(complete) < 4
    result = CliRunner().invoke(main, ["sweep", str(tmp_path / "slow.yaml"), "-o", str(out), "--resume",
                                       "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert f"{4 - len(complete)} point(s) run" in result.output and f"{len(complete)} already complete" in result.output
    after = _fingerprints(out)
    assert {name: after[name] for name in complete} == complete  # untouched
    table = read_table(out)
    assert list(table["status"]) == ["complete"] * 4, list(table["reason"])
    assert list(table["point"]) == [f"p000{i}" for i in range(4)]


def _kill_holder(out: Path, point: str, process: subprocess.Popen, limit: float = 240) -> int:
    """SIGKILL the worker that writes ``point`` (the pid in its file's lock) once it has written
    a snapshot or two; its pid."""
    lock = out / "points" / f"{point}.h5.lock"
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read().decode()
        try:
            pid = json.loads(lock.read_text())["pid"]
        except (OSError, ValueError, KeyError):
            time.sleep(0.05)
            continue
        time.sleep(0.2)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue  # it finished meanwhile
        return pid
    raise AssertionError(f"no worker took {point}")


@pytest.mark.slow
def test_a_killed_worker_loses_no_point_and_one_that_always_dies_fails_alone(tmp_path):
    """A worker SIGKILLed mid-point breaks the local pool (BrokenProcessPool for every point in
    flight or queued): the pool starts again and runs them, the killed point from its
    checkpoint (or from the start, where the kill left its file unreadable), to the same
    numbers as a run never killed. A point whose worker dies every time fails after
    MAX_LOSSES tries; the other points complete."""
    from meanfield.sweeps.execution import MAX_LOSSES

    # points of several seconds each (3 on a quiet machine): each kill lands while its point runs
    process, out = _start_sweep(tmp_path, points=4, workers=2, t_end=20.0)
    _kill_holder(out, "p0001", process)
    assert process.wait(timeout=600) == 0, process.stdout.read().decode()
    table = read_table(out)
    assert list(table["status"]) == ["complete"] * 4, list(table["reason"])
    point = load_sweep(tmp_path / "slow.yaml").points[1]
    mf.simulate(point.scenario, tmp_path / "clean.h5").close()
    assert _particles_digest(out / "points/p0001.h5") == _particles_digest(tmp_path / "clean.h5")

    process, out = _start_sweep(tmp_path / "poison", points=4, workers=2, t_end=20.0)
    for _ in range(MAX_LOSSES):
        _kill_holder(out, "p0002", process)
    assert process.wait(timeout=600) == 0, process.stdout.read().decode()
    table = read_table(out)
    assert list(table["status"]) == ["complete", "complete", "failed", "complete"], list(table["reason"])
    assert table["reason"][2].startswith(f"worker lost {MAX_LOSSES} time(s) while running this point")


def test_a_resume_that_cannot_read_its_file_starts_the_point_again(tmp_path, monkeypatch):
    """A SIGKILLed worker can leave a file whose header reads but whose last chunks do not
    (HDF5: "filter returned failure during read"): the resume's OSError restarts the point."""
    from meanfield.engine import driver

    sweep = parse_sweep(sweep_text({"seed": [0]}))
    run_sweep(sweep, tmp_path / "out", executor=serial())
    path = tmp_path / "out/points/p0000.h5"
    with h5py.File(path, "r+") as h5:
        h5["parameters/lazy"].attrs["status"] = "interrupted"
    assert point_status(path) == "unfinished"
    simulate = driver.simulate

    def unreadable_on_resume(scenario, output, resume=False, **options):
        if resume:
            raise OSError("Can't synchronously read data (filter returned failure during read)")
        return simulate(scenario, output, resume=resume, **options)

    monkeypatch.setattr(driver, "simulate", unreadable_on_resume)
    run_sweep(sweep, tmp_path / "out", executor=serial(), resume=True)
    table = read_table(tmp_path / "out")
    assert list(table["status"]) == ["complete"] and point_status(path) == "complete"
    assert np.isfinite(table["lazy.loss_test"][0])


@pytest.mark.slow
def test_analyze_fits_the_sweep_and_names_what_is_allowed(tmp_path):
    sweep = parse_sweep(sweep_text({"model.width": [8, 16, 32], "seed": [0, 1]}))
    run_sweep(sweep, tmp_path / "out", executor=serial())
    result = CliRunner().invoke(main, ["analyze", str(tmp_path / "out"), "--figure", str(tmp_path / "f.png"),
                                       "--phase-diagram", str(tmp_path / "phase.svg")])
    assert result.exit_code == 0, result.output
    assert "rich" in result.output and "lazy" in result.output and "exponent" in result.output
    assert (tmp_path / "out/analysis.csv").exists() and (tmp_path / "f.png").stat().st_size > 0
    assert "<svg" in (tmp_path / "phase.svg").read_text()
    regimes = (tmp_path / "out/regimes.csv").read_text().splitlines()
    assert regimes[0] == "point,model.width,seed,rich.measured_regime,lazy.measured_regime" and len(regimes) == 7
    result = CliRunner().invoke(main, ["analyze", str(tmp_path / "out"), "--against", "model.depth"])
    assert result.exit_code == 2 and "model.width" in result.output
    result = CliRunner().invoke(main, ["analyze", str(tmp_path / "out"), "--measure", "t"])
    assert result.exit_code == 2 and "displacement_w" in result.output


@pytest.mark.slow
def test_pool_workers_run_blas_and_numba_on_the_threads_they_are_given(tmp_path):
    from meanfield.sweeps.execution import THREAD_VARIABLES, _default_executor

    before = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    with _default_executor(None, workers=1, threads=1) as pool:
        seen = pool.submit(_threads_in_worker).result()
    assert seen["numba"] == 1 and all(n == 1 for n in seen["blas"]), seen
    assert {name: os.environ.get(name) for name in THREAD_VARIABLES} == before  # this process's unchanged


def _threads_in_worker():
    import numba
    import threadpoolctl

    return {"numba": numba.get_num_threads(), "blas": [info["num_threads"] for info in threadpoolctl.threadpool_info()]}


# ------------------------------------------------------------------ the public API
@pytest.mark.slow
def test_a_sweep_from_python_a_base_scenario_and_a_grid(tmp_path):
    base = mf.load_scenario(BASE)
    sweep = mf.load_sweep(base, {"model.width": [8, 12]}, replicates=2)
    first = sweep.points[0]
    assert first.scenario == base.replace({"model.width": 8, "seed": first.coords["seed"]})
    assert len(sweep.points) == 4 and sweep.name == "tiny"
    seen = []
    result = mf.sweep(sweep, output=tmp_path / "out", workers=1, threads=1, on_point=lambda point, row: seen.append(point.id))
    assert (result.ran, result.failed) == (4, 0) and sorted(seen) == ["p0000", "p0001", "p0002", "p0003"]
    table = mf.open_sweep(tmp_path / "out").table
    assert list(table["model.width"]) == [8, 8, 12, 12] and list(table["status"]) == ["complete"] * 4
    ds = result.to_xarray()
    assert dict(ds.sizes) == {"model.width": 2, "seed": 2}
    with result.trajectory("p0002") as traj:
        assert traj.scenario.model.width == 12
        assert traj["rich"].final()["loss_train"] == table["rich.loss_train"][2]
    with pytest.raises(UsageError, match="replicates goes with a grid"):
        mf.load_sweep("width_theorem", replicates=2)
    with pytest.raises(UsageError, match="holds no sweep|no such file"):
        mf.open_sweep(tmp_path / "nothing")
