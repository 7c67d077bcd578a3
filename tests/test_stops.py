"""Every stop is honoured and every stop message is true (issue 26): a SIGINT or SIGTERM
only sets a flag, honoured at the run's next safe point, so no finaliser can swallow it; a
stop before the file exists says that nothing was written; a resume of a damaged file
leaves it as it was. The slow stress test sends 100 signals at random moments."""

import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np
import pytest
from test_cli import TINY

import meanfield as mf

SMALL = textwrap.dedent(
    """\
    name: small
    seed: 3
    data: {task: teacher_student, dim: 3, n_train: 100, n_test: 30, teacher: {width: 2}}
    model: {width: 128, activation: tanh, bias: true, init: {b_std: 0.5, symmetric: true}}
    runs:
      rich: mean_field
      lazy: {parameterization: {preset: lazy, alpha: 10}}
    train:
      t_end: 10.0
      integrator: {method: rk45, rtol: 1.0e-7, atol: 1.0e-10}
    record: {every: 1.0}
    """
)
STRESS = int(os.environ.get("MEANFIELD_STRESS_SIGNALS", "50"))  # of each kind

HOOK = textwrap.dedent(
    """\
    import os, signal, sys, time, weakref
    from meanfield.engine import driver, runs
    from meanfield.cli import main
    def stop(signum):  # from inside a weakref finaliser, where a raised KeyboardInterrupt is lost
        class Thing: pass
        thing = Thing()
        def finalise():
            os.kill(os.getpid(), signum)
            time.sleep(0.2)  # the handler runs here, inside the finaliser
        weakref.finalize(thing, finalise)
        del thing
    {patch}
    sys.exit(main(sys.argv[1:]))
    """
)

MID_RUN = """
snapshot = driver.Recorder.snapshot
def snapshot_then_stop(self, state):
    out = snapshot(self, state)
    if self.run.name == "rich" and abs(state.t - 0.5) < 1e-9:
        stop(signal.{signal})
    return out
driver.Recorder.snapshot = snapshot_then_stop
"""

AT_START = """
make_run = runs.make_run
def make_run_then_stop(*args, **kwargs):
    if not getattr(runs, "stopped", False):  # one stop, as the first run is built
        runs.stopped = True
        stop(signal.{signal})
    return make_run(*args, **kwargs)
runs.make_run = make_run_then_stop
"""


def meanfield(*args, patch=""):
    code = HOOK.format(patch=patch)
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def exactly(value):
    """A value's dtype, shape and bytes (strings as themselves), for bit-for-bit comparisons."""
    value = np.asarray(value)
    return (value.dtype.str, value.shape, value.tolist() if value.dtype.hasobject else value.tobytes())


def dataset_bytes(path) -> dict:
    """Every dataset's bytes and every attribute of a file."""
    out = {}
    with h5py.File(path, "r") as h5:
        def visit(name, obj):
            out.update({f"{name}@{k}": exactly(v) for k, v in obj.attrs.items()})
            if isinstance(obj, h5py.Dataset):
                out[name] = exactly(obj[()])
        h5.visititems(visit)
    return out


def status(path, run="rich"):
    with h5py.File(path, "r") as h5:
        return h5[f"parameters/{run}"].attrs["status"]


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_stop_raised_inside_a_finaliser_still_ends_the_run(tiny, tmp_path, signum):
    out = tmp_path / "tiny.h5"
    done = meanfield("-q", "simulate", tiny, "-o", out, patch=MID_RUN.format(signal=signum))
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == f"interrupted: {out} is valid; continue with --resume"
    assert status(out) == "interrupted"
    whole = tmp_path / "whole.h5"
    assert meanfield("-q", "simulate", tiny, "-o", whole).returncode == 0
    resumed = meanfield("-q", "simulate", tiny, "-o", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert dataset_bytes(out) == dataset_bytes(whole)


def test_a_stop_before_the_file_exists_says_that_nothing_was_written(tiny, tmp_path):
    out = tmp_path / "tiny.h5"
    done = meanfield("-q", "simulate", tiny, "-o", out, patch=AT_START.format(signal="SIGINT"))
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == f"interrupted before writing {out}: no file was written; run the command again"
    assert not out.exists()


SECOND_STOP = """
make_run = runs.make_run
def make_run_slowly(*args, **kwargs):  # a first stop meets a long start-up (a compilation): a second ends it
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.1)
    os.kill(os.getpid(), signal.{signal})
    time.sleep(60)
    return make_run(*args, **kwargs)
runs.make_run = make_run_slowly
"""


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_second_stop_ends_a_long_start_up_at_once(tiny, tmp_path, signum):
    out = tmp_path / "tiny.h5"
    began = time.perf_counter()
    done = meanfield("-q", "simulate", tiny, "-o", out, patch=SECOND_STOP.format(signal=signum))
    assert done.returncode == 130, done.stderr
    assert time.perf_counter() - began < 30  # not the 60 s the start-up would take
    assert done.stderr.strip() == mf.errors.SECOND_STOP
    assert not out.exists()
    again = meanfield("-q", "simulate", tiny, "-o", out)  # what the message says to do works
    assert again.returncode == 0, again.stderr


def command_line() -> str:
    """The installed ``meanfield`` console script, as a user runs it."""
    script = shutil.which("meanfield", path=os.path.dirname(sys.executable))
    assert script, "the meanfield console script is installed beside this Python"
    return script


def stopped_during_imports(args, signum):
    """``meanfield ARGS`` sent ``signum`` as soon as it catches it, while the package imports."""
    process = subprocess.Popen([command_line(), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    while process.poll() is None and not catches_sigterm(process.pid):
        time.sleep(0.001)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    return process.returncode, stdout, stderr.strip()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_during_the_imports_is_honoured_and_told_truly(tiny, tmp_path, signum):
    out = tmp_path / "tiny.h5"
    code, _, stderr = stopped_during_imports(["-q", "simulate", tiny, "-o", out], signum)
    assert (code, stderr) == (130, f"interrupted before writing {out}: no file was written; run the command again")
    assert not out.exists()
    code, stdout, stderr = stopped_during_imports(["scenarios"], signum)
    assert (code, stdout, stderr) == (130, "", "interrupted during start-up: nothing was done; run the command again")


def test_only_the_command_line_notes_stops_from_its_first_import(monkeypatch):
    original = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(sys, "argv", ["/usr/lib/python3/site-packages/ipykernel_launcher.py"])
    assert mf.errors.stop_early() == {} and signal.getsignal(signal.SIGINT) is original  # a library changes nothing
    monkeypatch.setattr(sys, "argv", ["/home/me/.venv/bin/meanfield", "simulate"])
    try:
        replaced = mf.errors.stop_early()
        assert set(replaced) == {signal.SIGINT, signal.SIGTERM} and replaced[signal.SIGINT] is original
        assert signal.getsignal(signal.SIGINT) is mf.errors.note_stop
        os.kill(os.getpid(), signal.SIGINT)  # noted, not raised
        time.sleep(0.01)
    finally:
        came = mf.errors.end_early_stops()
    assert came and not mf.errors.stop_requested()
    assert signal.getsignal(signal.SIGINT) is original  # the command's own Ctrl-C is Python's again


def test_a_resume_of_a_damaged_file_leaves_it_as_it_was_and_says_to_start_again(tiny, tmp_path):
    # a kernel run, the reference whose f_test a resume reads back; 512 test points: an f_test frame
    # fills a chunk of its own, with a checksum: the library sees its damage
    tiny.write_text(TINY.replace("n_test: 30", "n_test: 512").replace(
        "runs:\n", "runs:\n  kernel: {solver: ntk, kernel: empirical, parameterization: ntk}\n"))
    out = tmp_path / "tiny.h5"
    assert meanfield("-q", "simulate", tiny, "-o", out, patch=MID_RUN.format(signal="SIGTERM")).returncode == 130
    with h5py.File(out, "r") as h5:  # damage a chunk the resume reads back (the reference run's f_test)
        chunks = [h5["observables/kernel/f_test/value"].id.get_chunk_info(frame) for frame in range(5)]
    with open(out, "r+b") as f:
        for chunk in chunks:
            f.seek(chunk.byte_offset + 2)
            f.write(b"\xff" * (chunk.size - 4))
    done = meanfield("-q", "simulate", tiny, "-o", out, "--resume")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"Error: {out}: cannot continue run 'kernel'") and "--overwrite" in lines[0]
    assert status(out) == "interrupted"  # not 'failed: OSError ...' (nor 'running')


# ----------------------------------------------------------------------------- the stress test
def cli(*args) -> list:
    """``meanfield -q simulate ARGS`` by the console script: its stops are noted from its first import."""
    return [command_line(), "-q", "simulate", *map(str, args)]


def catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM: the command line's stops are noted (from the
    start of its first import)."""
    with open(f"/proc/{pid}/status") as f:
        caught = next(line for line in f if line.startswith("SigCgt:")).split()[1]
    return bool(int(caught, 16) >> (signal.SIGTERM - 1) & 1)


def started(command) -> tuple:
    """The process of ``command`` once its command line is up, and that moment."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while process.poll() is None and not catches_sigterm(process.pid):
        time.sleep(0.002)
    return process, time.perf_counter()


def stopped_once(scenario, out, signum, delay: float, whole: dict) -> str:
    """Start the run, send ``signum`` ``delay`` s after its command line is up, check what the
    stop left and continue it; returns the outcome: interrupted | before the file | after the end."""
    process, ready = started(cli(scenario, "-o", out))
    assert process.returncode is None, process.stderr.read()
    time.sleep(max(0.0, ready + delay - time.perf_counter()))
    process.send_signal(signum)
    stderr = process.communicate(timeout=120)[1].strip()
    if process.returncode in (0, -signum):  # the stop came once the last run was complete
        # exit 0: the command saw it; -signum: it came as the process was tearing down, after the
        # command had given the signal its default action back (the CI run met one): nothing lost
        assert stderr in ("", f"stop received after the last run completed: {out} is complete"), stderr
        assert dataset_bytes(out) == whole
        return "after the end"
    assert process.returncode == 130, (signum, delay, stderr)
    if stderr == f"interrupted before writing {out}: no file was written; run the command again":
        assert not out.exists()
        return "before the file"
    assert stderr == f"interrupted: {out} is valid; continue with --resume", stderr
    resumed = subprocess.run(cli(scenario, "-o", out, "--resume"), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0 and resumed.stderr == "", resumed.stderr
    assert dataset_bytes(out) == whole, (signum, delay)
    return "interrupted"


@pytest.mark.slow
def test_every_stop_at_a_random_moment_ends_the_run_truthfully_and_resumes_bit_for_bit(tmp_path):
    """STRESS SIGINTs and STRESS SIGTERMs (50 each by default), each at a random moment
    between the moment the command line catches them (the start of its imports) and the end of an
    uninterrupted run, two runs at a time."""
    scenario = tmp_path / "small.yaml"
    scenario.write_text(SMALL)
    whole_path = tmp_path / "whole.h5"
    warm = subprocess.run(cli(scenario, "-o", whole_path), capture_output=True, text=True, timeout=300)
    assert warm.returncode == 0, warm.stderr  # compiles the kernels: the runs below start from the cache
    whole = dataset_bytes(whole_path)

    def timed(out):
        process, ready = started(cli(scenario, "-o", out))
        assert process.wait(timeout=120) == 0, process.stderr.read()
        return time.perf_counter() - ready  # start-up to the end: the last snapshot lies just before it

    with ThreadPoolExecutor(max_workers=2) as pool:  # two at a time, as the stops below
        span = statistics.mean(pool.map(timed, [tmp_path / "timed0.h5", tmp_path / "timed1.h5"]))
    moments = random.Random(26)
    trials = [(signum, moments.uniform(0, span)) for signum in [signal.SIGINT, signal.SIGTERM] * STRESS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(lambda item: stopped_once(scenario, tmp_path / f"run{item[0]}.h5", *item[1], whole),
                                 enumerate(trials)))
    counts = {outcome: outcomes.count(outcome) for outcome in set(outcomes)}
    print(f"{len(trials)} stops over {span:.2f} s: {counts}")
    assert counts.get("interrupted", 0) >= len(trials) // 10  # start-up is most of the span; runs are cut too
