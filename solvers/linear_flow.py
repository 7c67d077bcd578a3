"""What every exactly solved linear gradient flow here shares (the NTK closed form, the
population tangent model): a positive semi-definite eigendecomposition, the stable factor
phi(x) = (1 - e^-x) / x, and time checks.

A flow du/dt = -(M u + g) with M = V diag(lam) V^T >= 0 is solved mode by mode:
u_k(t) = e^{-lam_k t} u_k(0) - t phi(lam_k t) g_k, with phi(0) = 1 carrying the lam -> 0 limit.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import blas, lapack

NEGATIVE_EIGENVALUE_TOLERANCE = 1e-6
"""An eigenvalue below -this * lam_max means the matrix is not positive semi-definite."""


def phi(x):
    """phi(x) = -expm1(-x) / x = (1 - e^-x) / x, with its limit 1 at x = 0 (x >= 0)."""
    out = np.ones_like(x)
    nonzero = x > 0
    out[nonzero] = -np.expm1(-x[nonzero]) / x[nonzero]
    return out


def _symmetric_part(M):
    """(M + M^T)/2 as float64; a symmetric M is returned as it is (bit for bit its own part)."""
    M = np.asarray(M, dtype=np.float64)
    return M if np.array_equal(M, M.T) else 0.5 * (M + M.T)


def _checked_spectrum(lam, what):
    """Eigenvalues (ascending) of a matrix that should be positive semi-definite, cleaned.

    An eigensolver resolves eigenvalues only to about eps lam_max: those up to
    n eps lam_max (the rank tolerance of numpy's pinv and matrix_rank) are set to 0, so
    null directions stay at rest at any t, however large. An eigenvalue below
    -NEGATIVE_EIGENVALUE_TOLERANCE lam_max raises ValueError (not positive semi-definite).
    """
    size = lam.size
    top = max(float(np.max(np.abs(lam))) if size else 0.0, np.finfo(float).tiny)
    if size and lam[0] < -NEGATIVE_EIGENVALUE_TOLERANCE * top:
        raise ValueError(f"{what} is not positive semi-definite: eigenvalue {lam[0]:.3g} "
                         f"against a largest {top:.3g}")
    lam[lam <= size * np.finfo(float).eps * top] = 0.0
    return lam


def psd_eigh(M, what="the matrix"):
    """(lam, V) with (M + M^T)/2 = V diag(lam) V^T (LAPACK syevd, divide and conquer),
    the spectrum checked and cleaned by :func:`_checked_spectrum`."""
    lam, V = np.linalg.eigh(_symmetric_part(M))
    return _checked_spectrum(lam, what), V


class FactoredEigh:
    """(M + M^T)/2 = V diag(lam) V^T with the eigenvectors kept in factored form, V = Q U:

        M = Q T Q^T     Householder reduction to a tridiagonal T (LAPACK dsytrd),
                        Q = H_1 ... H_{n-1}, H_i = I - tau_i v_i v_i^T;
        T = U diag(lam) U^T     eigen-decomposition of T (dstevd, divide and conquer).

    These are the first two of the three stages of LAPACK's syevd (numpy.linalg.eigh);
    the third, forming V = Q U (2 n^3 flops), is left out: :meth:`apply` and
    :meth:`apply_transpose` multiply p vectors by V or V^T through U and the reflectors
    (BLAS-3 dormqr) in O(n^2 p). That is what a flow solved at a few times needs, and it
    saves about a third of eigh's time at n = 1000 and half at n = 2000. The eigenvalues
    are those syevd computes (same reduction, same tridiagonal solver), checked and
    cleaned as in :func:`psd_eigh`.

    All the work runs in scipy's LAPACK and BLAS: pip's numpy and scipy each bring an
    OpenBLAS whose idle threads spin for about 0.1 s after a call, and a call into one
    while the other's threads spin runs about twice as long on 2 cores.
    """

    def __init__(self, M, what="the matrix"):
        M = _symmetric_part(M)
        n = M.shape[0]
        self.n = n
        if n <= 1:
            self.eigenvalues = _checked_spectrum(M.diagonal().copy(), what)
            self._U, self._reflectors, self._tau = np.eye(n, order="F"), None, None
            return
        # M.T is M, F-contiguous: dsytrd reads its lower triangle without a transposing copy
        c, diag, off, tau, info = lapack.dsytrd(M.T, lower=1,
                                                lwork=int(lapack.dsytrd_lwork(n, lower=1)[0]))
        _lapack_check(info, "dsytrd")
        lam, U, info = lapack.dstevd(diag, off, compute_v=1, overwrite_d=1, overwrite_e=1)
        _lapack_check(info, "dstevd")
        self.eigenvalues = _checked_spectrum(lam, what)
        self._U = U
        # v_i = (0, ..., 0, 1, c[i + 2:, i]): the reflectors of a QR of the rows below the first
        self._reflectors = np.asfortranarray(c[1:, : n - 1])
        self._tau = tau

    def _apply_q(self, C, trans):
        """Q C (trans b"N") or Q^T C (b"T"), C (n, p); Q leaves the first row alone."""
        C = np.array(C, dtype=np.float64, order="F", ndmin=2)
        if self._reflectors is None or C.shape[1] == 0:
            return C
        p = C.shape[1]
        lwork = p * _DORMQR_BLOCK + _DORMQR_T_SIZE
        rows, _, info = lapack.dormqr(b"L", trans, self._reflectors, self._tau,
                                      np.asfortranarray(C[1:]), lwork, overwrite_c=1)
        _lapack_check(info, "dormqr")
        C[1:] = rows
        return C

    def apply(self, C):
        """V C for C (n, p): U C, then the reflectors. Returns (n, p), F-ordered."""
        C = np.asfortranarray(C, dtype=np.float64)
        return self._apply_q(blas.dgemm(1.0, self._U, C) if self.n else C, b"N")

    def apply_transpose(self, C):
        """V^T C for C (n, p): the reflectors, then U^T. Returns (n, p), F-ordered."""
        QtC = self._apply_q(C, b"T")
        return blas.dgemm(1.0, self._U, QtC, trans_a=1) if self.n else QtC

    @property
    def eigenvectors(self):
        """V (n, n) formed explicitly (the back-transformation left out above; 2 n^3 flops)."""
        return self._apply_q(self._U, b"N")


_DORMQR_BLOCK, _DORMQR_T_SIZE = 64, 65 * 64
"""dormqr's block size and the size of its triangular factor: its optimal workspace is
p * block + t_size for p right-hand sides."""


def _lapack_check(info, routine):
    if info != 0:
        raise np.linalg.LinAlgError(f"LAPACK {routine} failed (info = {info})")


def as_times(t):
    """(t as an array, t as a column (T, 1)); times must be finite and >= 0."""
    t_arr = np.asarray(t, dtype=np.float64)
    if np.any(t_arr < 0) or not np.all(np.isfinite(t_arr)):
        raise ValueError("times must be finite and >= 0")
    return t_arr, np.atleast_1d(t_arr)[:, None]
