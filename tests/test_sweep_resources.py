"""What a sweep's workers take of the machine: threads chosen by measurement within each
worker's share of the cores (or fixed), and memory checked for the workers that run at once."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner
from test_sweep import BASE, serial, sweep_text

import meanfield as mf
from meanfield.cli import main
from meanfield.engine import driver, memory, threads
from meanfield.engine.memory import size_text
from meanfield.sweeps import execution
from meanfield.sweeps.execution import WORKER_BYTES, check_memory, run_sweep
from meanfield.sweeps.grid import parse_sweep


@pytest.fixture
def governors(monkeypatch):
    """The governor each run of the sweep made (None: a fixed count), in order."""
    made = []

    def recorded(**options):
        governor = threads.governor(**options)
        made.append(None if governor is None else governor.counts)
        return governor

    monkeypatch.setattr(driver, "thread_governor", recorded)
    monkeypatch.delenv(threads.ENV, raising=False)
    return made


@pytest.mark.parametrize("cpus, workers, fixed, counts", [
    (4, 2, None, (1, 2)),  # two cores a worker: each run chooses between one and two threads
    (4, 4, None, None),    # one worker per core: one thread, nothing to choose
    (4, 2, 1, None),       # --threads 1: fixed, as before
])
def test_a_sweep_worker_governs_its_threads_within_its_share(cpus, workers, fixed, counts, governors, monkeypatch,
                                                           tmp_path):
    numba = pytest.importorskip("numba")
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one core")
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    sweep = parse_sweep(sweep_text({"model.width": [8]}))
    result = run_sweep(sweep, tmp_path / "out", executor=serial(), workers=workers, threads=fixed)
    assert result.failed == 0
    assert governors == [counts] * 2  # the point's two runs (rich, lazy)


def test_the_share_caps_the_governor_and_goes_back():
    numba = pytest.importorskip("numba")
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one core")
    with threads.at_most(1):
        assert threads.governor() is None
    with threads.at_most(2):
        assert threads.governor().counts == (1, 2)
    assert threads.governor().counts == (1, numba.config.NUMBA_NUM_THREADS)


def _two_points(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(sweep_text({"model.width": [8, 64]}))
    sweep = mf.load_sweep(str(path))
    peaks = sorted((mf.plan(point.scenario).memory.peak for point in sweep.points), reverse=True)
    return path, sweep, peaks


def _lower(sweep):
    """What the largest point's plan names to lower for its largest allocation."""
    return max((mf.plan(p.scenario).memory for p in sweep.points), key=lambda m: m.peak).dominant.lower


def test_workers_running_at_once_must_fit_in_memory_together(tmp_path, monkeypatch):
    """Available memory between one worker's need and two workers': one worker runs, two are
    refused with the need (the two points' peaks and two workers' own memory), what is
    available and what to change; nothing is written."""
    path, sweep, peaks = _two_points(tmp_path)
    one, two = peaks[0] + WORKER_BYTES, peaks[0] + peaks[1] + 2 * WORKER_BYTES
    available = int((one + two) / 2)
    check_memory(list(sweep.points), workers=1, available=available)
    with pytest.raises(mf.UsageError) as refused:
        check_memory(list(sweep.points), workers=2, available=available)
    message = str(refused.value)
    assert f"2 workers at once need about {size_text(two)} of memory" in message
    assert f"{size_text(available)} are available: run at most 1 worker at once (--workers 1)" in message
    assert message.endswith(f"or lower {_lower(sweep)}")

    monkeypatch.setattr(memory, "available_bytes", lambda: available)
    result = CliRunner().invoke(main, ["-q", "sweep", str(path), "--workers", "2", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "2 workers at once need about" in lines[0] and "--workers 1" in lines[0]
    assert not (tmp_path / "out").exists()


def test_memory_for_no_worker_at_all_names_the_size_to_lower(tmp_path):
    _, sweep, peaks = _two_points(tmp_path)
    with pytest.raises(mf.UsageError) as refused:
        check_memory(list(sweep.points), workers=2, available=int(peaks[1]))
    assert str(refused.value).endswith(f"are available: lower {_lower(sweep)}")


def test_a_sweep_on_another_executor_is_not_checked_against_this_machine(tmp_path, monkeypatch):
    """A Dask cluster's workers have their own memory: only the local pool is checked here."""
    sweep = parse_sweep(sweep_text({"model.width": [8]}))
    monkeypatch.setattr(execution, "check_memory", lambda *a, **k: pytest.fail("checked"))
    assert run_sweep(sweep, tmp_path / "out", executor=serial(), workers=4).failed == 0


assert BASE  # the sweeps above are test_sweep's tiny base scenario
