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
- :func:`quadrature_kernel_moments` and :func:`quadrature_moments`: the same two expectations
  for any activation of the catalog by a two-dimensional trapezoidal rule (below), for those
  without a closed form (tanh, sigmoid, softplus);
- :func:`acos_poly` and :func:`asin_poly`: arccos and arcsin by a branch-free polynomial, for
  Numba kernels (libm's acos does not vectorise here); the N-body kernels of
  :mod:`solvers.population` evaluate the relu and erf rows of the table with them.

Everything is float64.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from scipy.spatial.distance import cdist

from ._jit import jit, jit_parallel
from .activations import sigma_pair, sigma_pair_reflected
from .catalog import ERF, LINEAR, QUADRATIC, RELU, SIGMOID, SOFTPLUS, TANH, activation_code

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


# ------------------------------------------------------------------ the moments by quadrature
#
# (u, v) = (sqrt(q11) g1, a g1 + b g2), a = q12 / sqrt(q11), b = sqrt(q22 - a^2), g ~ N(0, I_2)
# (the Cholesky factor of the covariance; a = 0 where q11 = 0), and
#
#     E[F(u, v)] ~ sum_{i, j} h^2 phi(g_i) phi(g_j) F(u_ij, v_ij),   g_i = i h,  g_i^2 + g_j^2 <= L^2,
#
# the trapezoidal rule on the plane cut to the disc of radius L (phi the standard normal
# density). For an integrand analytic in a strip |Im g| < delta the rule's error falls like
# exp(-2 pi delta / h) (Trefethen & Weideman 2014, "The exponentially convergent trapezoidal
# rule", SIAM Review 56(3)), and the cut-off leaves out the mass e^(-L^2 / 2) (L = 8: 1.3e-14).
# sigma(u) = sigma(sqrt(q) g) is analytic in |Im g| < delta_sigma / sqrt(q) (tanh: poles at
# z = i pi/2; sigmoid, softplus: i pi; erf entire), so the step is set in the pre-activation's
# units, h = min(H_MAX, STEP[act] / sqrt(max(q11, q22))): the accuracy is then the same at every
# scale of q, and the work per pair grows like max(q11, q22) (about pi (L / h)^2 nodes: 3200 for
# tanh at q = 1, half of them evaluated: g and -g are taken together). Tensor Gauss-Hermite does
# worse on these saturating activations (its nodes spread out to |g| ~ sqrt(2 n) and thin out
# near 0): measured on tanh, 96^2 nodes left 3e-10 at q = 1 and 4e-4 at q = 9.
# Accuracy: tests/test_kernels.py.

QUADRATURE_CUTOFF = 8.0
"""L: the rule sums over the disc g1^2 + g2^2 <= L^2 of standard-normal coordinates."""

QUADRATURE_H_MAX = 0.5
"""The largest step in standard-normal units (the Gaussian's own resolution)."""

QUADRATURE_STEP = {TANH: 0.25, SIGMOID: 0.5, SOFTPLUS: 0.6, ERF: 0.35}
"""The step in the pre-activation's units, by activation code (any other: 0.25): the largest of
a grid at which the rule stayed within 1e-12 of itself at step 0.1 on 65 covariances (q11, q22 in
[0.05, 25], rho in [-1, 1], many near 1); e.g. tanh measured 2.7e-13 at 0.25, 1.1e-10 at 0.3."""


@jit(inline="always")
def _pair_moments(code, q11, q12, q22, h, cutoff):
    """(E[sigma(u) sigma(v)], E[sigma'(u) sigma'(v)]) for one covariance by the rule above. The
    nodes g and -g are taken together (the disc is symmetric): sigma at -z comes from sigma at z
    by the activation's symmetry (:func:`solvers.activations.sigma_pair_reflected`), which
    halves the evaluations."""
    r = math.sqrt(q11)
    a = q12 / r if r > 0.0 else 0.0
    b = math.sqrt(max(q22 - a * a, 0.0))
    n = int(cutoff / h)
    norm = h / math.sqrt(2.0 * math.pi)
    w = np.empty(n + 1)
    for i in range(n + 1):
        w[i] = norm * math.exp(-0.5 * (i * h) ** 2)
    e_ss = 0.0
    e_dd = 0.0
    for i in range(n + 1):
        g1 = i * h
        su, du = sigma_pair(code, r * g1, 1.0)
        rest = cutoff * cutoff - g1 * g1
        nj = int(math.sqrt(rest) / h) if rest > 0.0 else 0
        s_pos, d_pos, s_neg, d_neg = 0.0, 0.0, 0.0, 0.0  # the inner sums of rows i and -i
        for j in range(-nj, nj + 1):
            if i == 0 and j < 0:
                continue  # row 0: (0, j) and (0, -j) together, from j >= 0
            z = a * g1 + b * (j * h)
            sv, dv = sigma_pair(code, z, 1.0)
            wj = w[abs(j)]
            s_pos += wj * sv
            d_pos += wj * dv
            if i > 0 or j > 0:
                sr, dr = sigma_pair_reflected(code, z, sv, dv)
                s_neg += wj * sr
                d_neg += wj * dr
        if i == 0:
            e_ss += w[0] * su * (s_pos + s_neg)
            e_dd += w[0] * du * (d_pos + d_neg)
        else:
            sur, dur = sigma_pair_reflected(code, r * g1, su, du)
            e_ss += w[i] * (su * s_pos + sur * s_neg)
            e_dd += w[i] * (du * d_pos + dur * d_neg)
    return e_ss, e_dd


@jit_parallel
def _kernel_moments(code, q11, q12, q22, steps, cutoff, symmetric, e_ss, e_dd):
    """e_ss[k, l], e_dd[k, l] for the covariances (q11[k], q12[k, l], q22[l]) at the steps
    steps[k, l]; ``symmetric``: q12 is a Gram block (q22 = q11), only l <= k is integrated and
    mirrored, so the result is exactly symmetric. Rows in parallel; each pair's sum runs in a
    fixed order, so the result does not depend on the thread count."""
    n1, n2 = q12.shape
    for k in numba.prange(n1):
        last = min(k + 1, n2) if symmetric else n2
        for col in range(last):
            ss, dd = _pair_moments(code, q11[k], q12[k, col], q22[col], steps[k, col], cutoff)
            e_ss[k, col] = ss
            e_dd[k, col] = dd
            if symmetric:
                e_ss[col, k] = ss
                e_dd[col, k] = dd


def quadrature_steps(code: int, q_max):
    """The rule's step h in standard-normal units: min(H_MAX, STEP[act] / sqrt(q_max)), q_max =
    max(q11, q22) (H_MAX where q_max = 0)."""
    q_max = np.asarray(q_max, dtype=np.float64)
    scale = np.sqrt(np.where(q_max > 0, q_max, 1.0))
    return np.where(q_max > 0, np.minimum(QUADRATURE_H_MAX, QUADRATURE_STEP.get(code, 0.25) / scale),
                    QUADRATURE_H_MAX)


def quadrature_kernel_moments(q11, q12, q22, act, symmetric=False):
    """(E[sigma(u) sigma(v)], E[sigma'(u) sigma'(v)]), each (n1, n2), for the covariances
    [[q11[k], q12[k, l]], [q12[k, l], q22[l]]] (q11 (n1,), q12 (n1, n2), q22 (n2,)) by the
    trapezoidal rule of this section, for any activation of the catalog (``act`` a name or a
    code). ``symmetric``: q12 is square and symmetric with q22 = q11 (a Gram matrix), and the
    result is exactly symmetric. Memory: the outputs and the steps, three n1 x n2 arrays; the
    quadrature itself works pair by pair. Time O(n1 n2 max(q11, q22) / STEP^2)."""
    code = activation_code(act)
    q11, q22 = (np.ascontiguousarray(np.ravel(q), dtype=np.float64) for q in (q11, q22))
    q12 = np.ascontiguousarray(q12, dtype=np.float64)
    if q12.shape != (q11.size, q22.size):
        raise ValueError(f"q12 {q12.shape} does not match q11 ({q11.size},) and q22 ({q22.size},)")
    if np.any(q11 < 0) or np.any(q22 < 0):
        raise ValueError("the variances q11 and q22 must be >= 0")
    steps = quadrature_steps(code, np.maximum(q11[:, None], q22[None, :]))
    e_ss, e_dd = np.empty(q12.shape), np.empty(q12.shape)
    if q12.size:
        _kernel_moments(code, q11, q12, q22, steps, QUADRATURE_CUTOFF, bool(symmetric), e_ss, e_dd)
    return e_ss, e_dd


def quadrature_moments(q11, q12, q22, act):
    """(E[sigma(u) sigma(v)], E[sigma'(u) sigma'(v)]) element-wise over broadcast arrays of
    covariances, by the rule of :func:`quadrature_kernel_moments` (a column of pairs)."""
    q11, q12, q22 = np.broadcast_arrays(*(np.asarray(q, dtype=np.float64) for q in (q11, q12, q22)))
    shape, n = q12.shape, q12.size
    e_ss, e_dd = np.empty((n, 1)), np.empty((n, 1))
    flat = [np.ascontiguousarray(np.ravel(q)) for q in (q11, q12, q22)]
    code = activation_code(act)
    steps = quadrature_steps(code, np.maximum(flat[0], flat[2]))[:, None]
    if n:
        # each row k is its own pair (q11[k], q12[k], q22[k]): a (1, 1) problem per row
        for k in range(n):
            _kernel_moments(code, flat[0][k:k + 1], flat[1][k:k + 1, None], flat[2][k:k + 1],
                            steps[k:k + 1], QUADRATURE_CUTOFF, False, e_ss[k:k + 1], e_dd[k:k + 1])
    return e_ss.reshape(shape), e_dd.reshape(shape)


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
