"""Gaussian expectations of activations in closed form, and the angle they depend on.

For (u, v) centred Gaussian with covariance [[q11, q12], [q12, q22]] and
t = arccos(q12 / sqrt(q11 q22)) (the angle between u and v as vectors of L2):

    activation  E[sigma(u) sigma(v)]                                 E[sigma'(u) sigma'(v)]
    relu        sqrt(q11 q22) (sin t + (pi - t) cos t) / (2 pi)      (pi - t) / (2 pi)
    erf         (2/pi) arcsin(2 q12 / sqrt((1 + 2 q11)(1 + 2 q22)))  (4/pi) / sqrt((1 + 2 q11)(1 + 2 q22) - 4 q12^2)
    linear      q12                                                  1
    quadratic   q11 q22 + 2 q12^2                                    4 q12

(relu: the arc-cosine kernel of Cho & Saul, with E[sigma' sigma'] = 0 where q11 q22 = 0, since
relu'(0) = 0; erf: the arcsine kernel of Williams.) The second column is the derivative of
the first in q12 (Price's theorem). Two users: the analytic NNGP and NTK
(:func:`solvers.ntk.analytic_kernels`, u = w.x + b and v = w.x' + b over random w, b) and the
population kernel U(w, v) = E[sigma(w.x) sigma(v.x)] over x ~ N(0, I)
(:mod:`solvers.population`, q11 = |w|^2, q12 = w.v, q22 = |v|^2).

What is here:

- :func:`angles`: the angle t between vectors by Kahan's formula, accurate near 0 and pi;
- :func:`relu_moments`, :func:`erf_moments`, :func:`linear_moments`, :func:`quadratic_moments`
  (the table, element-wise on NumPy arrays) and :func:`gaussian_moments` (by activation);
- :func:`acos_poly` and :func:`asin_poly`: arccos and arcsin by a branch-free polynomial, for
  Numba kernels (libm's acos does not vectorise here); the N-body kernels of
  :mod:`solvers.population` evaluate the relu and erf rows of the table with them.

Everything is float64.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.distance import cdist

from ._jit import jit
from .catalog import ERF, LINEAR, QUADRATIC, RELU, activation_code

# ------------------------------------------------------------------ the angle


def angles(U1, U2=None):
    """t[i, j], the angle between rows U1[i] and U2[j] (U2 None: U1 with itself), in [0, pi]:
    t = 2 atan2(|u - v|, |u + v|) on the unit vectors u, v. Accurate near 0 and pi, where
    arccos of the cosine loses half the digits (1e-8 for parallel rows); identical rows give
    t = 0 exactly. A zero row is left at zero: its angle to every row is pi/2."""

    def unit(U):
        r = np.linalg.norm(U, axis=1, keepdims=True)
        return U / np.where(r > 0, r, 1.0)

    V1 = unit(U1)
    V2 = V1 if U2 is None else unit(U2)
    return 2.0 * np.arctan2(cdist(V1, V2), cdist(V1, -V2))


# ------------------------------------------------------------------ the moments, NumPy


def relu_moments(norm, t):
    """(E[relu(u) relu(v)], E[relu'(u) relu'(v)]) from norm = sqrt(q11 q22) and the angle t
    between u and v (module table): norm (sin t + (pi - t) cos t) / (2 pi) and
    (pi - t) / (2 pi), the latter 0 where norm = 0 (relu'(0) = 0). Element-wise."""
    e_ss = norm * (np.sin(t) + (np.pi - t) * np.cos(t)) / (2.0 * np.pi)
    e_dd = np.where(norm > 0, (np.pi - t) / (2.0 * np.pi), 0.0)
    return e_ss, e_dd


def erf_moments(q11, q12, q22):
    """(E[erf(u) erf(v)], E[erf'(u) erf'(v)]) = ((2/pi) arcsin(2 q12 / sqrt(p)),
    (4/pi) / sqrt(p - 4 q12^2)), p = (1 + 2 q11)(1 + 2 q22) (the arcsine argument clipped to
    [-1, 1]). Element-wise."""
    p = (1.0 + 2.0 * q11) * (1.0 + 2.0 * q22)
    e_ss = (2.0 / np.pi) * np.arcsin(np.clip(2.0 * q12 / np.sqrt(p), -1.0, 1.0))
    e_dd = (4.0 / np.pi) / np.sqrt(p - 4.0 * q12 * q12)
    return e_ss, e_dd


def linear_moments(q12):
    """(E[u v], E[1]) = (q12, 1), as new arrays of the shape of q12."""
    return q12.copy(), np.ones_like(q12)


def quadratic_moments(q11, q12, q22):
    """(E[u^2 v^2], E[2u 2v]) = (q11 q22 + 2 q12^2, 4 q12). Element-wise."""
    return q11 * q22 + 2.0 * q12 * q12, 4.0 * q12


def gaussian_moments(q11, q12, q22, act):
    """(E[sigma(u) sigma(v)], E[sigma'(u) sigma'(v)]) for (u, v) ~ N(0, [[q11, q12], [q12, q22]]),
    element-wise over broadcast arrays, in closed form (module table) for relu, erf, linear
    and quadratic; ``act`` a name or code. For relu, t = arccos(rho) with
    rho = q12 / sqrt(q11 q22) clipped to [-1, 1] (rho = 0 where q11 q22 = 0); given vectors
    rather than their covariance, :func:`angles` and :func:`relu_moments` are more accurate
    near t = 0 and pi."""
    code = activation_code(act)
    q11, q12, q22 = np.broadcast_arrays(*(np.asarray(q, dtype=np.float64) for q in (q11, q12, q22)))
    if code == RELU:
        norm = np.sqrt(q11 * q22)
        rho = np.clip(q12 / np.where(norm > 0, norm, 1.0), -1.0, 1.0)
        return relu_moments(norm, np.arccos(rho))
    if code == ERF:
        return erf_moments(q11, q12, q22)
    if code == LINEAR:
        return linear_moments(q12)
    if code == QUADRATIC:
        return quadratic_moments(q11, q12, q22)
    raise ValueError(f"no closed-form Gaussian moments for activation {act!r}: "
                     "relu, erf, linear and quadratic have them")


# ------------------------------------------------------------------ arccos, branch-free (Numba)

# asin(u) = u + u^3 P(u^2) on 0 <= u <= 1/2: P interpolates (asin(sqrt y) - sqrt y) / y^1.5
# at 13 Chebyshev nodes of [0, 1/4] (computed with mpmath at 50 digits, rounded to float64).
_ASIN_P = (
    0.16666666666666669,
    0.07499999999998433,
    0.04464285714635543,
    0.030381944138531247,
    0.02237217294214989,
    0.017352392720869973,
    0.013971212973552933,
    0.011479177415184906,
    0.01032281435018578,
    0.005457506718640358,
    0.01740087944269402,
    -0.014851887071247204,
    0.028757851367421566,
)
(_P0, _P1, _P2, _P3, _P4, _P5, _P6, _P7, _P8, _P9, _P10, _P11, _P12) = _ASIN_P


@jit(inline="always")
def _asin_core(x):
    """(small, r) with small = |x| < 1/2 and r = asin(|x|) if small else asin(sqrt((1 - |x|)/2)),
    both from the one polynomial, computed without branches (selects only)."""
    ax = abs(x)
    small = ax < 0.5
    y = ax * ax if small else (1.0 - ax) * 0.5
    u = ax if small else math.sqrt(y)
    p = _P12
    p = p * y + _P11
    p = p * y + _P10
    p = p * y + _P9
    p = p * y + _P8
    p = p * y + _P7
    p = p * y + _P6
    p = p * y + _P5
    p = p * y + _P4
    p = p * y + _P3
    p = p * y + _P2
    p = p * y + _P1
    p = p * y + _P0
    return small, u + u * y * p


@jit(inline="always")
def acos_poly(x):
    """arccos x for a scalar x in [-1, 1], branch-free: pi/2 - asin x for |x| < 1/2, else
    2 asin(sqrt((1 - x)/2)) (x > 0) or pi - 2 asin(sqrt((1 + x)/2)) (x < 0). Max error
    against np.arccos 4.4e-16 (one ulp of pi) on [-1, 1]; acos_poly(1) = 0 exactly.
    Inlined into the Numba code that calls it."""
    small, r = _asin_core(x)
    if small:
        return 0.5 * math.pi - (r if x >= 0.0 else -r)
    return 2.0 * r if x > 0.0 else math.pi - 2.0 * r


@jit(inline="always")
def asin_poly(x):
    """arcsin x for a scalar x in [-1, 1] by the same polynomial (relative error ~1 ulp near 0):
    asin |x| for |x| < 1/2, else pi/2 - 2 asin(sqrt((1 - |x|)/2)); with the sign of x.
    Inlined into the Numba code that calls it."""
    small, r = _asin_core(x)
    v = r if small else 0.5 * math.pi - 2.0 * r
    return v if x >= 0.0 else -v
