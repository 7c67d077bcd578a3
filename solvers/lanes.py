"""Jobs run side by side on the thread governor's count, each BLAS call on one thread, and
the per-thread buffers they write into (docs/design.md §1.1, §6.4).

A computation split into jobs fixed by the problem's size, whose results are combined in the
jobs' order, gives the same bits on any number of threads: :func:`run_jobs` runs
``work(j)`` for every job on min(jobs, Numba's thread count) threads of a pool (the count a
run's thread governor sets), the BLAS held on one thread meanwhile, since OpenBLAS's own
threads split a product by their count and change its last bits (docs/design.md §6.3). The
large-d particle step (:mod:`solvers.particles`) and the tangent model
(:class:`solvers.ntk.TangentField`) run their BLAS work so.
"""

import os
import threading

import numpy as np

_WORKSPACE = threading.local()


def scratch(name, shape, dtype):
    """An array of ``shape`` and ``dtype`` over this thread's buffer ``name``, which grows to
    the largest request and is kept between calls: a fresh allocation of a block's arrays
    at every block costs its page faults (a fresh m x n allocation: measured 70-150 ms for
    64 MiB on the shared machine). Its contents are not defined; :func:`release_workspace`
    frees this thread's buffers."""
    dtype = np.dtype(dtype)
    need = int(np.prod(shape)) * dtype.itemsize
    buffers = getattr(_WORKSPACE, "buffers", None)
    if buffers is None:
        buffers = _WORKSPACE.buffers = {}
    buf = buffers.get(name)
    if buf is None or buf.nbytes < need:
        buffers[name] = None
        buf = buffers[name] = np.empty(need, dtype=np.uint8)
    return buf[:need].view(dtype).reshape(shape)


def release_workspace():
    """Free the calling thread's buffers (allocated again when needed; the pool's threads
    keep theirs)."""
    _WORKSPACE.buffers = None


_POOLS = {}
_POOLS_LOCK = threading.Lock()


def _forget_pools():
    """In a forked child: the parent's pools' threads do not exist there (fresh ones on demand)."""
    global _POOLS_LOCK
    _POOLS.clear()
    _POOLS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)


def _pool(threads):
    """A pool of ``threads`` threads for the jobs (made once per count, kept)."""
    from concurrent.futures import ThreadPoolExecutor

    with _POOLS_LOCK:
        if threads not in _POOLS:
            _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="meanfield-lane")
        return _POOLS[threads]


_BLAS = None


def blas_controller():
    """threadpoolctl's controller of the BLAS libraries loaded, made once (scanning them costs
    about 1 ms): NumPy's and SciPy's, which is another library, loaded here first, since a
    limit reaches only the libraries loaded."""
    global _BLAS
    if _BLAS is None:
        import scipy.linalg  # noqa: F401  (SciPy's own OpenBLAS, which the solvers use)
        import threadpoolctl

        _BLAS = threadpoolctl.ThreadpoolController().select(user_api="blas")
    return _BLAS


def one_blas_thread():
    """The BLAS on one thread for the duration (threadpoolctl; then its count before): the
    jobs run their products concurrently, each on one core, and a product's bits do not
    depend on the BLAS's count."""
    return blas_controller().limit(limits=1)


def run_jobs(jobs, work):
    """work(j) for j = 0 .. jobs - 1, on min(jobs, Numba's thread count) threads (the thread
    governor's count, docs/design.md §6.4), the BLAS on one thread. ``work`` writes its own
    results; what they are combined into, in the jobs' order, is the caller's."""
    import numba

    threads = min(jobs, numba.get_num_threads())
    with one_blas_thread():
        if threads <= 1:
            for job in range(jobs):
                work(job)
        else:
            list(_pool(threads).map(work, range(jobs)))
