"""Harmonic analysis on the unit sphere S^(d-1) (docs/design.md §1.10): the number of spherical
harmonics of each degree and the Legendre polynomials of dimension d, which the spectrum of a
kernel (:mod:`meanfield.analysis.spectrum`) and the ``power_law`` target
(:mod:`meanfield.model.data`) are written in."""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln


def check_degree(d, L) -> tuple[int, int]:
    """(d, L) as integers, or a ValueError: the sphere needs d >= 2, a degree L >= 0."""
    if int(d) != d or d < 2:
        raise ValueError(f"the sphere S^(d-1) needs an integer d >= 2, got d = {d!r}")
    if int(L) != L or L < 0:
        raise ValueError(f"the highest degree L must be an integer >= 0, got {L!r}")
    return int(d), int(L)


def degeneracy(d: int, degree) -> np.ndarray:
    """N(d, l), the number of linearly independent spherical harmonics of degree l on
    S^(d-1): 1 for l = 0, (2l + d - 2)/l * C(l + d - 3, l - 1) for l >= 1 (2 for d = 2,
    2l + 1 for d = 3), as floats (they overflow int64 at large l and d), exact below 2^52."""
    d, _ = check_degree(d, 0)
    deg = np.asarray(degree, dtype=np.float64)
    if np.any(deg < 0) or np.any(deg != np.round(deg)):
        raise ValueError("degrees l must be integers >= 0")
    safe = np.maximum(deg, 1.0)
    log_binom = gammaln(safe + d - 2) - gammaln(safe) - gammaln(d - 1.0)  # C(l + d - 3, l - 1)
    value = np.where(deg == 0, 1.0, (2 * safe + d - 2) / safe * np.exp(log_binom))
    return np.where(value < 2.0**52, np.round(value), value)  # integers where a float holds them


def legendre(d: int, L: int, t) -> np.ndarray:
    """P_0(t), ..., P_L(t), the Legendre polynomials of dimension d with P_l(1) = 1, shape
    (L + 1, *t.shape), by the recurrence P_{l+1} = ((2l + d - 2) t P_l - l P_{l-1}) / (l + d - 2)
    (P_1 = t), stable for |t| <= 1; for d = 2, cos(l arccos t)."""
    d, L = check_degree(d, L)
    t = np.asarray(t, dtype=np.float64)
    if d == 2:  # Chebyshev: the recurrence's rounding grows like l^2 eps at t = +-1, cos does not
        return np.cos(np.arange(L + 1).reshape((-1,) + (1,) * t.ndim) * np.arccos(np.clip(t, -1.0, 1.0)))
    P = np.empty((L + 1, *t.shape))
    P[0] = 1.0
    if L >= 1:
        P[1] = t
    for j in range(1, L):  # degree j -> j + 1
        P[j + 1] = ((2 * j + d - 2) * t * P[j] - j * P[j - 1]) / (j + d - 2)
    return P
