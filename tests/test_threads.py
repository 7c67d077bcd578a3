"""The thread count: asked for (--threads, MEANFIELD_THREADS, mf.set_threads), or chosen by
measurement while a run steps; never changing a result."""

import os
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner
from test_cli import file_contents

import meanfield as mf
from meanfield.cli import main
from meanfield.engine import threads
from meanfield.engine.threads import ThreadGovernor


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", 0])
def test_a_thread_count_must_be_a_whole_number_of_at_least_one(value):
    with pytest.raises(mf.UsageError, match="whole number of threads >= 1"):
        threads.requested(value)


@pytest.mark.parametrize("value, count", [(None, None), ("auto", None), ("", None), ("3", 3), (2, 2)])
def test_auto_or_nothing_means_choose_by_measurement(value, count):
    assert threads.requested(value) == count


def test_a_bad_environment_variable_is_one_error_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MEANFIELD_THREADS", "many")
    result = CliRunner().invoke(main, ["-q", "simulate", "quickstart", "-o", str(tmp_path / "q.h5")])
    assert result.exit_code == 2 and "MEANFIELD_THREADS = 'many'" in result.output
    assert not (tmp_path / "q.h5").exists()


class FakeMachine:
    """A clock, and the seconds a step takes at each thread count (changed by the test)."""

    def __init__(self, seconds_per_step):
        self.now, self.seconds_per_step, self.count = 0.0, dict(seconds_per_step), None

    def clock(self):
        return self.now

    def set_count(self, count):
        self.count = count

    def run(self, governor, steps):
        for _ in range(steps):
            self.now += self.seconds_per_step[self.count]
            governor.step()


def test_the_governor_keeps_the_faster_count_and_follows_the_load():
    machine = FakeMachine({2: 0.010, 1: 0.016})  # quiet: two threads faster
    governor = ThreadGovernor((1, 2), machine.set_count, window=0.1, period=1.0, max_period=8.0, clock=machine.clock)
    machine.run(governor, 100)
    assert governor.current == 2 and machine.count == 2
    assert governor.history[0] == (1, pytest.approx(0.016), pytest.approx(0.010))
    machine.run(governor, 3000)  # unchanged: the probes back off to max_period
    assert governor.wait == 8.0 and governor.current == 2
    machine.seconds_per_step[2] = 0.040  # a busy process beside: two threads wait for each other
    machine.run(governor, 1000)
    assert governor.current == 1 and machine.count == 1
    switch = next(i for i, (count, mine, other) in enumerate(governor.history) if count == 2 and other < mine)
    assert governor.history[switch][1] == pytest.approx(0.040)  # found at the first probe under load
    machine.seconds_per_step[2] = 0.010  # quiet again
    machine.run(governor, 2000)
    assert governor.current == 2 and machine.count == 2


def test_the_governor_costs_a_quiet_run_little():
    """The fraction of a quiet run's time spent probing the slower count, over a long run."""
    machine = FakeMachine({2: 0.010, 1: 0.017})
    governor = ThreadGovernor((1, 2), machine.set_count, clock=machine.clock)
    machine.run(governor, 60_000)  # ten minutes of steps at two threads
    ideal = 60_000 * 0.010
    assert machine.now / ideal - 1 < 0.01


@pytest.mark.slow
def test_switching_threads_during_a_run_changes_no_bit(tmp_path):
    """A run whose Numba thread count flips at every step writes the file a one-thread run writes."""
    code = textwrap.dedent(f"""\
        import contextlib, numba, meanfield as mf
        from meanfield.engine import driver
        class Flip:
            def __init__(self): self.n = 0
            def paused(self): return contextlib.nullcontext()
            def step(self, state):
                self.n += 1
                numba.set_num_threads(1 + self.n % 2)
        scenario = mf.load_scenario("quickstart", {{"runs": {{"rich": "mean_field", "lazy": {{"parameterization":
            {{"preset": "lazy", "alpha": 10}}}}}}, "train.t_end": 2.0, "model.width": 512}})
        driver.thread_governor = lambda **_: Flip()
        mf.simulate(scenario, {str(tmp_path / "flipping.h5")!r}).close()
        driver.thread_governor = lambda **_: None
        numba.set_num_threads(1)
        mf.simulate(scenario, {str(tmp_path / "one.h5")!r}).close()
    """)
    env = {**os.environ, "NUMBA_NUM_THREADS": "2"}
    env.pop("MEANFIELD_THREADS", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert file_contents(tmp_path / "flipping.h5") == file_contents(tmp_path / "one.h5")


def test_a_fixed_count_is_the_runs_and_then_the_process_setting_is_back():
    pytest.importorskip("numba")
    import numba

    most = numba.config.NUMBA_NUM_THREADS
    with threads.using(1):
        assert numba.get_num_threads() == 1 and threads.governor() is None
    assert numba.get_num_threads() == most
    assert (threads.governor() is None) == (most < 2)


@pytest.mark.parametrize("given, seen", [(None, "20"), ("28", "28")])
def test_importing_meanfield_shortens_the_openblas_spin_unless_the_user_chose(given, seen):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if given is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = given
    code = "import meanfield, numpy, os; print(os.environ['OPENBLAS_THREAD_TIMEOUT'])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.stdout.strip() == seen, done.stderr


def test_meanfield_threads_and_a_threads_argument_are_one_setting():
    """MEANFIELD_THREADS=1 sets what --threads 1 (threads=1) sets: Numba's threads and the
    BLAS's (NumPy's and SciPy's, every BLAS library loaded), one setting under two spellings."""
    code = textwrap.dedent("""
        import sys, numba, numpy, threadpoolctl
        from meanfield.engine import threads
        with threads.using(None if sys.argv[1] == "None" else int(sys.argv[1])):
            numpy.dot(numpy.ones(4), numpy.ones(4))
            blas = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
            print(numba.get_num_threads(), sorted(set(blas)), len(blas) >= 2, threads.governor())
    """)
    env = {k: v for k, v in os.environ.items() if k not in threads.THREAD_VARIABLES + (threads.ENV,)}

    def seen(argument, **extra):
        done = subprocess.run([sys.executable, "-c", code, argument], capture_output=True, text=True, timeout=120,
                              env={**env, **extra})
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert seen("None", MEANFIELD_THREADS="1") == seen("1") == "1 [1] True None"


EVERY_KIND = textwrap.dedent("""\
    name: kinds
    seed: 1
    data: {task: teacher_student, dim: 10, n_train: 300, n_test: 400, teacher: {width: 3}}
    model: {width: 256, activation: relu}
    runs:
      rich: mean_field
      lazy: {parameterization: {preset: lazy, alpha: 10}}
      tangent: {solver: tangent, parameterization: ntk}
      empirical: {solver: ntk, kernel: empirical, parameterization: ntk}
      analytic: {solver: ntk, kernel: analytic, parameterization: ntk}
    train: {t_end: 0.4, integrator: {method: euler, dt: 0.1}}
    record: {every: 0.2, w2_particles: 256}
    """)


@pytest.mark.slow
def test_every_dataset_of_every_run_kind_is_the_same_at_any_thread_count(tmp_path):
    """--threads 1, --threads 2, MEANFIELD_THREADS=2 and the default (by measurement, the BLAS
    left at all cores) write the same file, kernel runs and gap_ntk included: a run holds the
    BLAS (NumPy's and SciPy's) at one thread outside the steps of kinds whose BLAS work is
    thread-invariant. With the BLAS on two threads this scenario's eigendecompositions and
    products differed in the last bits (4 datasets; the population tangent run's 6)."""
    scenario = tmp_path / "kinds.yaml"
    scenario.write_text(EVERY_KIND)
    env = {k: v for k, v in os.environ.items() if k not in threads.THREAD_VARIABLES + (threads.ENV,)}

    def written(name, *args, **extra):
        out = tmp_path / f"{name}.h5"
        done = subprocess.run([sys.executable, "-m", "meanfield.cli", "-q", "simulate", str(scenario), "-o", str(out),
                               *args], capture_output=True, text=True, timeout=300, env={**env, **extra})
        assert done.returncode == 0, done.stderr
        return file_contents(out)

    one = written("one", "--threads", "1")
    assert written("two", "--threads", "2") == one
    assert written("env", MEANFIELD_THREADS="2") == one
    assert written("default") == one


BIG = EVERY_KIND.replace("width: 256", "width: 1100").replace("w2_particles: 256", "w2_particles: 64")
"""Every kind at sizes that reach OpenBLAS's threaded paths: norms of 11 000 weights
(``np.linalg.norm`` is a dot product, threaded above 10^4 values), kernels of 300 samples
(eigh, Cholesky) and products of 1100 x 300 features."""

POPULATION = textwrap.dedent("""\
    name: population
    seed: 0
    data: {task: teacher_student, dim: 5, population: true, teacher: {width: 3, activation: relu}}
    model: {width: 128, activation: relu}
    runs:
      rich: mean_field
      tangent: {solver: tangent, parameterization: {preset: lazy, alpha: 1000}}
    train: {t_end: 0.4, integrator: {method: rk4, dt: 0.1}}
    record: {every: 0.2}
    """)


def _blas_counts():
    import threadpoolctl
    return sorted({info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"})


def _datasets(path):
    """Every dataset of a file as bytes (exact, NaN included)."""
    import h5py
    import numpy as np

    out = {}
    with h5py.File(path, "r") as h5:
        h5.visititems(lambda name, obj: out.__setitem__(name, np.asarray(obj[()]).tobytes())
                      if isinstance(obj, h5py.Dataset) else None)
    return out


@pytest.mark.parametrize("text", [BIG, POPULATION], ids=["every_kind", "population"])
def test_every_dataset_is_the_same_at_one_and_two_blas_and_numba_threads(text, tmp_path, monkeypatch):
    """Numba and the BLAS at 1 and at 2 threads around the run (``mf.set_threads``) and in it
    (``threads=``): the same bits in every dataset, the kernel runs' eigendecompositions, the
    population tangent run's and every norm over 10^4 values included. That the sizes reach
    OpenBLAS's threaded paths is checked too: with the BLAS let on 2 threads inside the run
    (``RUN_BLAS_THREADS = 2``), some datasets differ (4 of the first scenario's, 6 of the
    second's, on the machine that wrote this)."""
    import scipy.linalg  # noqa: F401  (SciPy's OpenBLAS, another library, loaded before its count is read)
    import threadpoolctl

    default = [info for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"]
    scenario = tmp_path / "s.yaml"
    scenario.write_text(text)
    files = []
    try:
        for around, inside in [(1, 1), (2, 2), (2, 1), (1, 2)]:
            mf.set_threads(around)
            assert _blas_counts() == [around]
            files.append(tmp_path / f"{around}-{inside}.h5")
            mf.simulate(mf.load_scenario(scenario), files[-1], threads=inside).close()
            assert _blas_counts() == [around]  # the process's setting back after the run
    finally:
        mf.set_threads(None)
    first = _datasets(files[0])
    assert len(first) > 20
    for other in files[1:]:
        assert _datasets(other) == first, other.name
    assert [info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"] == \
        [info["num_threads"] for info in default]  # set_threads(None): the process's own count back
    if all(info["internal_api"] == "openblas" and info["num_threads"] >= 2 for info in default):
        monkeypatch.setattr(threads, "RUN_BLAS_THREADS", 2)
        mf.simulate(mf.load_scenario(scenario), tmp_path / "blas2.h5", threads=2).close()
        loose = _datasets(tmp_path / "blas2.h5")
        assert loose.keys() == first.keys() and loose != first


LARGE_D = textwrap.dedent("""\
    name: large_d
    seed: 1
    data: {task: teacher_student, dim: 100, n_train: 701, n_test: 97, teacher: {width: 2}}
    model: {width: 301, activation: tanh, bias: true}
    runs: {rich: mean_field}
    train: {t_end: 0.6, integrator: {method: rk4, dt: 0.1}, dtype: float32}
    record: {every: 0.3}
    """)
"""A float32 particle run on the GEMM path (d >= BLAS_MIN_D), its m and n odd: OpenBLAS's
Haswell kernels gave such products other bits on 2 threads than on 1, padding or not."""


def test_a_large_d_particle_run_keeps_its_bits_at_every_thread_count(tmp_path):
    """The GEMM path's products on one BLAS thread in the steps (the particle kind does not
    declare them invariant), the run's Numba count on every core: the file a one-thread
    run writes."""
    from solvers.particles import BLAS_MIN_D

    numba = pytest.importorskip("numba")
    most = min(numba.config.NUMBA_NUM_THREADS, os.cpu_count() or 1)
    if most < 2:
        pytest.skip("one core")
    scenario = tmp_path / "large_d.yaml"
    scenario.write_text(LARGE_D)
    assert mf.load_scenario(scenario).data.dim >= BLAS_MIN_D
    files = {}
    for count in (1, most):
        seen = _Seen()
        files[count] = tmp_path / f"{count}.h5"
        mf.simulate(mf.load_scenario(scenario), files[count], threads=count, progress=seen).close()
        assert seen.counts == {1}  # the steps' BLAS on one thread
    assert _datasets(files[most]) == _datasets(files[1])


class _Seen:
    """A progress bar that records the BLAS's thread count at every step."""

    def __init__(self):
        self.counts = set()

    def __call__(self, name, t0, t_end):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *_):
        return False

    def update_state(self, state):
        self.counts.update(_blas_counts())


@pytest.mark.parametrize("invariant", [False, True])
def test_the_steps_of_a_thread_invariant_kind_run_the_blas_at_the_runs_count(invariant, monkeypatch):
    """``--threads 2``: the BLAS on 2 threads in the steps of a kind whose BLAS work is
    thread-invariant (``Run.blas_invariant``), on one in every other kind's; the process's
    count back afterwards."""
    from meanfield.engine import runs

    monkeypatch.setattr(runs.ParticlesOnData, "blas_invariant", invariant)
    seen = _Seen()
    scenario = mf.load_scenario("quickstart", {"runs": {"rich": "mean_field"}, "train.t_end": 0.4,
                                               "model.width": 64, "data.n_train": 64, "data.n_test": 64})
    mf.simulate(scenario, None, threads=2, progress=seen).close()
    assert seen.counts == ({2} if invariant else {1})


def test_the_governor_switches_the_blas_with_numba():
    """A governor made with ``blas=True`` sets both counts at its start and at each switch."""
    numba = pytest.importorskip("numba")
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one core")
    with threads.for_a_run(None), threads.blas_for_steps(True):
        governor = threads.governor(blas=True)
        assert governor is not None and numba.get_num_threads() == 1 and _blas_counts() == [1]
        governor.set_count(2)
        assert numba.get_num_threads() == 2 and _blas_counts() == [2]
    assert threads.governor(blas=True, most=1) is None
