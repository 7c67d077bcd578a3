"""The one place where Numba options are set.

Every compiled kernel of :mod:`solvers` is built with :func:`jit` or :func:`jit_parallel`.
The fastmath flags are a subset on purpose: plain ``fastmath=True`` adds ``nnan``/``ninf``,
under which ``np.isnan`` is folded to False and NaN detection silently stops working.
``cache=True`` keeps the compiled code on disk so a fresh process starts fast.
With ``NUMBA_DISABLE_JIT=1`` both helpers return the plain Python function.
"""

import numba

NUMBA_OPTIONS = dict(
    cache=True,
    nogil=True,
    fastmath={"reassoc", "contract", "arcp", "nsz"},
    error_model="numpy",
)


def _wrap(extra, args, kwargs):
    options = {**NUMBA_OPTIONS, **extra, **kwargs}
    if len(args) == 1 and callable(args[0]):
        return numba.njit(**options)(args[0])
    return numba.njit(*args, **options)


def jit(*args, **kwargs):
    """``numba.njit`` with :data:`NUMBA_OPTIONS`; usable as ``@jit`` or ``@jit(...)``."""
    return _wrap({}, args, kwargs)


def jit_parallel(*args, **kwargs):
    """Like :func:`jit` with ``parallel=True`` (use ``numba.prange`` for the parallel loop)."""
    return _wrap({"parallel": True}, args, kwargs)
