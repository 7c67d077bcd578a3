"""Faults a real machine has: a second writer, a reader holding a lock, a full disk, a
file-size limit, a damaged file. Each is played with real processes, and each must end in
one ``Error:`` line with the file either untouched or valid and resumable."""

import json
import os
import resource
import shutil
import subprocess
import sys
import textwrap

import h5py
import pytest
from test_cli import file_contents

import meanfield as mf
from meanfield import storage

SCENARIO = textwrap.dedent(
    """\
    name: robust
    seed: 5
    data: {task: teacher_student, dim: 3, n_train: 40, n_test: 30, teacher: {width: 2}}
    model: {width: 64, activation: tanh, bias: true, init: {b_std: 0.5}}
    runs:
      rich: mean_field
      lazy: {parameterization: {preset: lazy, alpha: 10}}
    train: {t_end: 2.0, integrator: {method: euler, dt: 0.05}}
    record: {every: 0.25}
    """
)

HOOK = textwrap.dedent(
    """\
    import os, sys
    from meanfield.engine import driver
    from meanfield.cli import main
    def fill(directory):  # write zeros until the disk is full
        with open(os.path.join(directory, "filler"), "wb", buffering=0) as f:
            try:
                while True:
                    f.write(bytes(4096))
            except OSError:
                pass
    snapshot = driver.Recorder.snapshot
    def snapshot_then(self, state):
        out = snapshot(self, state)
        if self.run.name == "rich" and abs(state.t - 0.5) < 1e-9:
            {action}
        return out
    driver.Recorder.snapshot = snapshot_then
    sys.exit(main(sys.argv[1:]))
    """
)
"""A ``meanfield`` command line that does ``action`` once run 'rich' has written its
snapshot at t = 0.5 (the third): hold the file, fill the disk, ..."""


def meanfield(*args, action=None, **kwargs):
    code = HOOK.format(action=action or "pass")
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=300, **kwargs)


@pytest.fixture
def scenario_file(tmp_path):
    path = tmp_path / "robust.yaml"
    path.write_text(SCENARIO)
    return path


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in stderr, stderr
    return lines[0]


# ----------------------------------------------------------------------------- one writer
@pytest.mark.slow
def test_a_second_writer_is_refused_and_the_first_file_survives(scenario_file, tmp_path):
    out = tmp_path / "out.h5"
    first = subprocess.Popen(
        [sys.executable, "-c", HOOK.format(action="print('holding', flush=True); sys.stdin.readline()"),
         "-q", "simulate", scenario_file, "-o", out],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "holding"  # the first writer is mid-run
        second = meanfield("-q", "simulate", scenario_file, "-o", out, "--overwrite")
        line = one_error_line(second.stderr)
        assert second.returncode == 2
        assert f"being written by another process (pid {first.pid}" in line
        resumed = meanfield("-q", "simulate", scenario_file, "-o", out, "--resume")
        assert resumed.returncode == 2 and f"pid {first.pid}" in one_error_line(resumed.stderr)
        first.stdin.write("go on\n")
        first.stdin.close()
        assert first.wait(timeout=300) == 0, first.stderr.read()
    finally:
        first.kill()
        first.wait()
    with mf.open(out) as trajectory:  # the first run's file, whole
        assert trajectory.complete and trajectory["rich"].t == 2.0
    assert not storage.ownership.lock_path(out).exists()


@pytest.mark.slow
def test_a_held_lock_names_its_holder_and_a_dead_holder_leaves_no_lock(scenario_file, tmp_path):
    out = tmp_path / "out.h5"
    assert meanfield("-q", "simulate", scenario_file, "-o", out).returncode == 0
    before = file_contents(out)
    with storage.WriterLock(out):
        refused = meanfield("-q", "simulate", scenario_file, "-o", out, "--overwrite")
        assert refused.returncode == 2 and f"pid {os.getpid()}" in one_error_line(refused.stderr)
    assert file_contents(out) == before
    # a writer killed mid-run (no cleanup at all) leaves its lock file, which holds nothing
    killed = meanfield("-q", "simulate", scenario_file, "-o", out, "--overwrite", action="os._exit(9)")
    assert killed.returncode == 9 and storage.ownership.lock_path(out).exists()
    resumed = meanfield("-q", "simulate", scenario_file, "-o", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert file_contents(out) == before


@pytest.mark.slow
def test_a_reader_holding_an_hdf5_lock_does_not_stop_a_rerun(scenario_file, tmp_path):
    out = tmp_path / "out.h5"
    assert meanfield("-q", "simulate", scenario_file, "-o", out).returncode == 0
    with h5py.File(out, "r") as notebook:  # h5py's default: a shared lock on the file
        seed_before = notebook["parameters"].attrs["seed"]
        resumed = meanfield("-q", "simulate", scenario_file, "-o", out, "--resume", "--set", "seed=6")
        assert resumed.returncode == 2  # another scenario: nothing to continue
        rerun = meanfield("-q", "simulate", scenario_file, "-o", out, "--overwrite", "--set", "seed=6")
        assert rerun.returncode == 0, rerun.stderr
        assert notebook["parameters"].attrs["seed"] == seed_before  # the reader still reads its file
        assert notebook["observables/rich/loss_train/value"].shape[0] == 9
    with mf.open(out) as trajectory:
        assert trajectory.seed == 6 and trajectory.complete


@pytest.mark.slow
def test_continuing_a_file_another_process_holds_open_says_so(scenario_file, tmp_path):
    out = tmp_path / "out.h5"
    assert meanfield("-q", "simulate", scenario_file, "-o", out, action="raise KeyboardInterrupt").returncode == 130
    with h5py.File(out, "r"):
        refused = meanfield("-q", "simulate", scenario_file, "-o", out, "--resume")
        assert refused.returncode == 2 and "open in another process" in one_error_line(refused.stderr)
    assert meanfield("-q", "simulate", scenario_file, "-o", out, "--resume").returncode == 0


@pytest.mark.slow
def test_an_existing_output_names_the_flag_that_fits(scenario_file, tmp_path):
    out = tmp_path / "out.h5"
    assert meanfield("-q", "simulate", scenario_file, "-o", out, action="raise KeyboardInterrupt").returncode == 130
    unfinished = meanfield("-q", "simulate", scenario_file, "-o", out)
    assert unfinished.returncode == 2 and "unfinished run of this scenario: continue it with --resume" in (
        one_error_line(unfinished.stderr))
    other = meanfield("-q", "simulate", scenario_file, "-o", out, "--set", "seed=6")
    assert other.returncode == 2 and "runs of another scenario: replace it with --overwrite" in (
        one_error_line(other.stderr))
    assert meanfield("-q", "simulate", scenario_file, "-o", out, "--resume").returncode == 0
    finished = meanfield("-q", "simulate", scenario_file, "-o", out)
    assert finished.returncode == 2 and "finished runs of this scenario" in one_error_line(finished.stderr)


# ----------------------------------------------------------------------------- room
def limit_file_size(nbytes):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, resource.RLIM_INFINITY))


@pytest.mark.slow
def test_a_file_size_limit_is_checked_before_starting(scenario_file, tmp_path):
    out = tmp_path / "out.h5"
    estimate = mf.plan(mf.load_scenario(scenario_file)).estimated_bytes
    refused = meanfield("-q", "simulate", scenario_file, "-o", out, preexec_fn=limit_file_size(int(estimate) // 2))
    line = one_error_line(refused.stderr)
    assert refused.returncode == 2 and "file-size limit (ulimit -f)" in line and "record.every" in line
    assert not out.exists()


def test_no_room_mid_run_stops_between_snapshots_and_resumes_bit_for_bit(scenario_file, tmp_path, monkeypatch):
    whole, parts = tmp_path / "whole.h5", tmp_path / "parts.h5"
    scenario = mf.load_scenario(scenario_file)
    mf.simulate(scenario, whole).close()
    free = {"bytes": 1e12}
    monkeypatch.setattr(storage.ownership, "room", lambda path: (free["bytes"], "a test's disk"))
    writes = []

    def append(self, *args, **kwargs):  # the disk fills up after the third snapshot of run 'rich'
        append_snapshot(self, *args, **kwargs)
        writes.append(self.name)
        if writes.count("rich") == 3:
            free["bytes"] = 1e3

    append_snapshot = storage.RunWriter.append
    monkeypatch.setattr(storage.RunWriter, "append", append)
    with pytest.raises(mf.RunFailed, match="no room for snapshot 3 of run 'rich'.*continue it with --resume"):
        mf.simulate(scenario, parts)
    with mf.open(parts) as trajectory:  # readable, three snapshots; no room left for the status either
        assert trajectory["rich"].status == "running" and len(trajectory["rich"].times) == 3
    free["bytes"] = 1e12
    mf.simulate(scenario, parts, resume=True).close()
    assert file_contents(parts) == file_contents(whole)


def on_a_disk_that_fills_up(scenario_file, tmp_path, guarded=True) -> dict:
    """Run the scenario on a real 1 MB file system (a tmpfs in a user namespace, where the
    machine allows one; else skip) that another writer fills after the third snapshot of run
    'rich'; then empty it and continue with --resume. ``guarded=False`` hides the free space
    from the run (as a quota would). Returns what each command did and the file's frames."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare: cannot mount a small file system")
    disk = tmp_path / "disk"
    disk.mkdir()
    hide = "" if guarded else "from meanfield.storage import writer; writer.check_room = lambda *a: None; "
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(f"""\
        import json, os, shutil, subprocess, sys
        import meanfield as mf
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_robustness import HOOK
        from pathlib import Path
        disk = Path({str(disk)!r}); out = disk / "out.h5"
        def cli(*args, action="pass"):
            return subprocess.run([sys.executable, "-c", HOOK.format(action=action), *map(str, args)],
                                  capture_output=True, text=True)
        failed = cli("-q", "simulate", {str(scenario_file)!r}, "-o", out, action={hide!r} + f"fill({{str(disk)!r}})")
        if not out.exists():
            sys.exit(failed.stderr)
        inspected = cli("-q", "inspect", out)
        os.remove(disk / "filler")
        resumed = cli("-q", "simulate", {str(scenario_file)!r}, "-o", out, "--resume")
        shutil.copy(out, {str(tmp_path / "resumed.h5")!r})
        print(json.dumps(dict(code=failed.returncode, stderr=failed.stderr, inspect=inspected.returncode,
                              resumed=resumed.returncode, resumed_stderr=resumed.stderr)))
    """))
    mount = f"mount -t tmpfs -o size=1m none {disk} && exec {sys.executable} {driver}"
    done = subprocess.run(["unshare", "-rm", "sh", "-c", mount], capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and "mount" in done.stderr + done.stdout and "{" not in done.stdout:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    assert done.stdout.strip(), done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_full_disk_mid_run_leaves_a_resumable_file(scenario_file, tmp_path):
    whole = tmp_path / "whole.h5"
    mf.simulate(mf.load_scenario(scenario_file), whole).close()
    result = on_a_disk_that_fills_up(scenario_file, tmp_path)
    line = one_error_line(result["stderr"])
    assert result["code"] == 1 and "no room for snapshot 3 of run 'rich'" in line and "--resume" in line
    assert result["inspect"] == 0
    assert result["resumed"] == 0, result["resumed_stderr"]
    assert file_contents(tmp_path / "resumed.h5") == file_contents(whole)


@pytest.mark.slow
def test_a_write_error_the_run_could_not_foresee_is_one_error_line(scenario_file, tmp_path):
    """A quota or a race with another writer: the HDF5 library's own write fails. No
    traceback, no crash on exit; --resume continues the file or says to start again."""
    result = on_a_disk_that_fills_up(scenario_file, tmp_path, guarded=False)
    assert result["code"] == 1 and "writing failed (No space left on device)" in one_error_line(result["stderr"])
    if result["resumed"] != 0:
        assert result["resumed"] == 2 and "--overwrite" in one_error_line(result["resumed_stderr"])


# ----------------------------------------------------------------------------- damaged files
@pytest.mark.slow
@pytest.mark.parametrize("command", [["inspect"], ["plot"], ["animate"], ["simulate", "SCENARIO", "--resume"]])
def test_a_damaged_file_is_one_error_line(scenario_file, tmp_path, command):
    out = tmp_path / "out.h5"
    assert meanfield("-q", "simulate", scenario_file, "-o", out).returncode == 0
    with open(out, "r+b") as f:
        f.truncate(out.stat().st_size // 2)
    args = [scenario_file if a == "SCENARIO" else a for a in command]
    if args[0] == "simulate":
        args += ["-o", out]
    else:
        args.insert(1, out)
    done = meanfield("-q", *args)
    assert done.returncode == 2 and str(out) in one_error_line(done.stderr)
