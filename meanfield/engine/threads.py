"""How many threads the numerical core uses (docs/design.md §6.4).

A fixed count comes from ``simulate --threads T``, ``mf.simulate(..., threads=T)`` or the
environment variable ``MEANFIELD_THREADS``; it sets Numba's threads and the BLAS's. Without
one, the count is chosen *by measurement while the run steps* (:class:`ThreadGovernor`):
on a quiet machine every core helps, but beside another CPU-bound process (a laptop, a
shared node) an OpenMP worker that has to wait for a busy core makes every parallel kernel
wait for it, and two threads can be several times slower than one. The governor times the
steps at the current count, now and then tries the other, and keeps the faster.

Changing the count never changes a result: the kernels split their work into chunks fixed
by the problem's size, not by the thread count, and reduce them in a fixed order.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from contextlib import contextmanager
from typing import Callable, Optional

from ..errors import UsageError

ENV = "MEANFIELD_THREADS"
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

_fixed: Optional[int] = None  # set by set_threads; None: MEANFIELD_THREADS, else by measurement
_most: Optional[int] = None  # the most threads a governor may choose (a sweep worker's share), None: all


def requested(threads=None, source: str = "threads") -> Optional[int]:
    """``threads`` checked (None stays None: choose by measurement)."""
    if threads is None or (isinstance(threads, str) and threads.strip() in ("", "auto")):
        return None
    try:
        count = int(threads)
    except (TypeError, ValueError):
        count = 0
    if count < 1 or str(count) != str(threads).strip():
        raise UsageError(f"{source} = {threads!r}: give a whole number of threads >= 1, or 'auto' to choose "
                         "by measurement")
    return count


def fixed_count() -> Optional[int]:
    """The fixed thread count of this process: :func:`set_threads`'s, else ``MEANFIELD_THREADS``'s,
    else None (each run chooses by measurement)."""
    if _fixed is not None:
        return _fixed
    return requested(os.environ.get(ENV), ENV)


def set_threads(threads: Optional[int]) -> None:
    """Fix the number of threads of the numerical core in this process (Numba's, and the BLAS's
    through threadpoolctl); ``None`` goes back to ``MEANFIELD_THREADS`` or, without
    it, to choosing by measurement during each run (Numba's count and the BLAS's back to
    the process's first: every core, or ``NUMBA_NUM_THREADS`` and ``OPENBLAS_NUM_THREADS``).

    Parameters
    ----------
    threads : int or None
        The thread count (at least 1), or None.
    """
    global _fixed
    _fixed = requested(threads)
    count = fixed_count()
    if count is not None:
        apply(count)
        _blas_limits(count)
    elif "numba" in sys.modules:
        import numba

        apply(numba.config.NUMBA_NUM_THREADS)
        for library, first in zip(_blas().lib_controllers, _blas_first):
            library.set_num_threads(first)


@contextmanager
def using(threads: Optional[int]):
    """``threads`` fixed for the duration, then the process's setting back. ``None`` is the
    process's fixed count (:func:`set_threads`'s, else ``MEANFIELD_THREADS``'s) applied the
    same way, Numba's threads and the BLAS's, so ``MEANFIELD_THREADS=1`` and ``threads=1``
    are one setting; without one, nothing changes (each run chooses by measurement)."""
    if threads is None:
        threads = fixed_count()  # a bad MEANFIELD_THREADS is refused before anything starts
    if threads is None:
        yield
        return
    global _fixed
    before, _fixed = _fixed, requested(threads)
    apply(_fixed)
    try:
        with _blas_limits(_fixed):
            yield
    finally:
        _fixed = before
        if "numba" in sys.modules:
            import numba

            apply(fixed_count() or numba.config.NUMBA_NUM_THREADS)


@contextmanager
def at_most(threads: Optional[int]):
    """The most threads a run's governor may choose, for the duration (``None``: every core
    Numba has): a sweep worker's share of the cores, ``cpus // workers``."""
    global _most
    before, _most = _most, threads
    try:
        yield
    finally:
        _most = before


def apply(threads: int) -> None:
    """Set this process's Numba thread count (and, before the numerical core is loaded, the
    BLAS's too: through the environment, the only way for a fresh worker process)."""
    if "numba" not in sys.modules:
        os.environ.update({name: str(threads) for name in THREAD_VARIABLES})
        return
    import numba

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


_blas_first: list[int] = []  # the BLAS libraries' thread counts when first seen: the process's own


def _blas():
    """threadpoolctl's controller of the BLAS libraries loaded, the solvers' own
    (``solvers.lanes.blas_controller``)."""
    from solvers.lanes import blas_controller

    controller = blas_controller()
    if not _blas_first:
        _blas_first[:] = [library.num_threads for library in controller.lib_controllers]
    return controller


def _blas_limits(threads: int):
    """The BLAS's thread count set to ``threads`` (a context manager that restores it; in
    effect until then). About 20 microseconds."""
    return _blas().limit(limits=threads)


def set_blas_threads(threads: int) -> None:
    """The BLAS's thread count set to ``threads`` now (inside a :func:`_blas_limits` scope,
    which restores its own count at its end): the governor's switch."""
    for library in _blas().lib_controllers:
        library.set_num_threads(threads)


def one_blas_thread():
    """The BLAS and LAPACK on one thread for the duration (a context manager, then the count
    before): the one place for BLAS work whose result depends on the BLAS's thread count.
    Measured with OpenBLAS 0.3.30 and 0.3.31 (SciPy's, NumPy's) (docs/design.md §6.4): the
    dot product of more than 10^4 values (``np.linalg.norm``, ``x @ y``), LAPACK's ``eigh``,
    ``eigvalsh``, ``sytrd`` and Cholesky solves, GEMM itself at shapes whose split between
    threads falls off the kernel's blocks (``(300, 2560) @ (2560, 307)``: different bits on 2
    threads), and gemv at shapes with an odd side (``(1001, 500) @ v``), with the SkylakeX
    kernels and the Haswell ones. A run holds the BLAS here except in the steps of the run
    kinds whose BLAS work is thread-invariant (``Run.blas_invariant``: the integrated kernel
    flow alone, whose step has no BLAS call)."""
    return _blas_limits(1)


RUN_BLAS_THREADS = 1
"""The BLAS's (and LAPACK's) thread count while a run computes, outside the steps of a run
kind whose BLAS work is thread-invariant (``Run.blas_invariant``, where it is the run's
count: :func:`blas_for_steps`): OpenBLAS's LAPACK (the kernel runs' eigendecomposition and
solves), its long dot products and some of its products (GEMM at some shapes) reduce in an
order that depends on its thread count, so a kernel run's datasets and every run's gap_ntk
changed in the last bits between thread counts. One fixed count makes every dataset
independent of the thread settings (docs/design.md §6.4). Snapshots keep it in every kind:
the measures' norms, dot products and GEMMs are the BLAS's."""


@contextmanager
def for_a_run(threads: Optional[int]):
    """The thread settings of a run: ``threads`` as :func:`using` takes it for Numba, and the
    BLAS on :data:`RUN_BLAS_THREADS` for the duration (then the process's settings back);
    :func:`blas_for_steps` gives the BLAS the run's count where that changes no bit."""
    with using(threads), _blas_limits(RUN_BLAS_THREADS):
        yield


def blas_for_steps(invariant: bool):
    """The BLAS's count for a run's steps: the run's fixed count (``--threads T``,
    ``MEANFIELD_THREADS``), or one thread where the governor chooses (it starts on one and
    switches the BLAS with Numba: :func:`governor` with ``blas=True``), when the run kind's
    BLAS work is thread-invariant (``invariant``); else nothing changes (one thread)."""
    if not invariant:
        return contextlib.nullcontext()
    return _blas_limits(fixed_count() or 1)


def governor(blas: bool = False, most: Optional[int] = None) -> Optional[ThreadGovernor]:
    """A governor for the next run, between one thread and ``most`` (default: :func:`at_most`'s,
    else Numba's threads), or None when the count is fixed or ``most`` is 1. With ``blas`` its switches
    set the BLAS's count too (inside :func:`blas_for_steps`, which restores it)."""
    import numba

    most = min(most or _most or numba.config.NUMBA_NUM_THREADS, numba.config.NUMBA_NUM_THREADS)
    if fixed_count() is not None or most < 2:
        return None
    if not blas:
        return ThreadGovernor(counts=(1, most), set_count=numba.set_num_threads)

    def both(count: int) -> None:
        numba.set_num_threads(count)
        set_blas_threads(count)

    return ThreadGovernor(counts=(1, most), set_count=both)


class ThreadGovernor:
    """Keeps the faster of two thread counts while a run steps: call :meth:`step` after
    every step.

    Each *trial* times at least ``window`` seconds of steps at one count (the time per step
    over the window, snapshots left out: :meth:`paused`). A probe is two
    trials, the current count and then the other; the faster wins (the other only if it is
    faster by ``margin``). The run starts on ``counts[0]`` (one thread: beside a busy
    process two threads can be ten times slower) and probes at once; after a probe
    that keeps the count, the wait until the next doubles (from ``period`` up to
    ``max_period``); a switch resets it. A probe costs at most ``window`` seconds at the
    slower count, a small share of a run once the waits have grown.
    """

    def __init__(self, counts: tuple[int, int], set_count: Callable[[int], None], *, window: float = 0.1,
                 period: float = 4.0, max_period: float = 64.0, margin: float = 0.05,
                 clock: Callable[[], float] = time.perf_counter):
        self.counts, self.set_count, self.clock = counts, set_count, clock
        self.window, self.period, self.max_period, self.margin = window, period, max_period, margin
        self.current = counts[0]
        self.wait = period
        self.history: list[tuple[int, float, float]] = []  # (count, seconds per step at it, the other's)
        self._measured: Optional[float] = None  # seconds per step at the current count, this probe
        self._trial = self._start_trial(self.current)
        set_count(self.current)

    def _start_trial(self, count: int) -> list:
        return [count, self.clock(), 0]  # count, start, steps

    def other(self) -> int:
        return self.counts[1] if self.current == self.counts[0] else self.counts[0]

    def step(self, *_) -> None:
        """One more step done."""
        if self._trial is None:
            if self.clock() >= self._next_probe:
                self._trial = self._start_trial(self.current)
            return
        count, start, steps = self._trial
        self._trial[2] = steps = steps + 1
        elapsed = self.clock() - start
        per_step = elapsed / steps
        if elapsed < self.window:
            return
        if count == self.current and self._measured is None:
            self._measured = per_step
            self.set_count(self.other())
            self._trial = self._start_trial(self.other())
            return
        self._decide(per_step)

    @contextmanager
    def paused(self):
        """Work that is not a step (a snapshot: measures and a write) left out of the trial's
        time: steps are alike, snapshots are not, and a trial holds few of them."""
        began = self.clock()
        try:
            yield
        finally:
            if self._trial is not None:
                self._trial[1] += self.clock() - began

    def _decide(self, other_per_step: float) -> None:
        mine = self._measured
        self.history.append((self.current, mine, other_per_step))
        if other_per_step < mine * (1 - self.margin):
            self.current = self.other()
            self.wait = self.period
        else:
            self.wait = min(2 * self.wait, self.max_period)
        self.set_count(self.current)
        self._measured, self._trial = None, None
        self._next_probe = self.clock() + self.wait
