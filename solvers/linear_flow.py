"""What every exactly solved linear gradient flow here shares (the NTK closed form, the
population tangent model): a positive semi-definite eigendecomposition, the stable factor
phi(x) = (1 - e^-x) / x, and time checks.

A flow du/dt = -(M u + g) with M = V diag(lam) V^T >= 0 is solved mode by mode:
u_k(t) = e^{-lam_k t} u_k(0) - t phi(lam_k t) g_k, with phi(0) = 1 carrying the lam -> 0 limit.
"""

from __future__ import annotations

import numpy as np

NEGATIVE_EIGENVALUE_TOLERANCE = 1e-6
"""An eigenvalue below -this * lam_max means the matrix is not positive semi-definite."""


def phi(x):
    """phi(x) = -expm1(-x) / x = (1 - e^-x) / x, with its limit 1 at x = 0 (x >= 0)."""
    out = np.ones_like(x)
    nonzero = x > 0
    out[nonzero] = -np.expm1(-x[nonzero]) / x[nonzero]
    return out


def psd_eigh(M, what="the matrix"):
    """(lam, V) with (M + M^T)/2 = V diag(lam) V^T (LAPACK syevd, divide and conquer).

    eigh resolves eigenvalues only to about eps lam_max: those up to size eps lam_max (the
    rank tolerance of numpy's pinv and matrix_rank) are set to 0, so null directions stay
    at rest at any t, however large. An eigenvalue below
    -NEGATIVE_EIGENVALUE_TOLERANCE lam_max raises ValueError (not positive semi-definite).
    """
    M = np.asarray(M, dtype=np.float64)
    if not np.array_equal(M, M.T):  # a symmetric M is its own (M + M^T)/2, bit for bit
        M = 0.5 * (M + M.T)
    lam, V = np.linalg.eigh(M)
    size = lam.size
    top = max(float(np.max(np.abs(lam))) if size else 0.0, np.finfo(float).tiny)
    if size and lam[0] < -NEGATIVE_EIGENVALUE_TOLERANCE * top:
        raise ValueError(f"{what} is not positive semi-definite: eigenvalue {lam[0]:.3g} "
                         f"against a largest {top:.3g}")
    lam[lam <= size * np.finfo(float).eps * top] = 0.0
    return lam, V


def as_times(t):
    """(t as an array, t as a column (T, 1)); times must be finite and >= 0."""
    t_arr = np.asarray(t, dtype=np.float64)
    if np.any(t_arr < 0) or not np.all(np.isfinite(t_arr)):
        raise ValueError("times must be finite and >= 0")
    return t_arr, np.atleast_1d(t_arr)[:, None]
