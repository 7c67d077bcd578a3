"""Infinite data ("population" mode, docs/design.md §1.5): the risk as an N-body energy.

Inputs x ~ N(0, I_d); student f(x) = s sum_i a_i sigma(w_i . x) (no bias), teacher
f*(x) = sum_j a*_j sigma*(w*_j . x); with the loss scale c the population risk is

    R = (c/2) E[(f - f*)^2]
      = (c/2) [ s^2 sum_ij a_i a_j U(w_i, w_j) - 2 s sum_ij a_i a*_j U_x(w_i, w*_j)
                + sum_jk a*_j a*_k U*(w*_j, w*_k) ]

with U(w, v) = E[sigma1(w.x) sigma2(v.x)] for the pair of activations (sigma1, sigma2)
(student-student, student-teacher, teacher-teacher), and its exact gradient

    dR/da_i = c [ s^2 sum_j a_j U(w_i, w_j) - s sum_j a*_j U_x(w_i, w*_j) ]
    dR/dw_i = c a_i [ s^2 sum_j a_j grad_1 U(w_i, w_j) - s sum_j a*_j grad_1 U_x(w_i, w*_j) ]

(the j = i term included: the factor 2 of the double sum absorbs grad U(w, w) = 2 grad_1 U(w, w)).
Here grad_1 U(w, v) = E[sigma1'(w.x) x sigma2(v.x)] with relu'(0) = 0, the convention of
the data-mode field: it is the gradient of U in w wherever w != 0, and 0 at w = 0 for relu.

Closed forms, with q11 = |w|^2, q22 = |v|^2, q12 = w.v, t = angle(w, v), A = 1 + 2 q11,
B = 1 + 2 q22, k = 2/sqrt(pi), g = 1/sqrt(2 pi), every gradient written grad_1 U = alpha v + beta w:

    pair (sigma1, sigma2)  U                                   alpha                  beta
    relu, relu   |w||v| (sin t + (pi - t) cos t) / (2 pi)     (pi - t) / (2 pi)      |v| sin t / (2 pi |w|)
    erf, erf     (2/pi) arcsin(2 q12 / sqrt(A B))              (4/pi) / sqrt(A B - 4 q12^2)   -2 q12 alpha / A
    linear, linear        q12                                  1                      0
    quadratic, quadratic  q11 q22 + 2 q12^2                    4 q12                  2 q22
    relu, linear | linear, relu   q12 / 2                      1/2                    0
    erf, linear   k q12 / sqrt(A)                              k / sqrt(A)            -2 q12 alpha / A
    linear, erf   k q12 / sqrt(B)                              k / sqrt(B)            0
    erf, relu     (k/2) q12 / sqrt(A)                          (k/2) / sqrt(A)        -2 q12 alpha / A
    relu, erf     (k/2) q12 / sqrt(B)                          (k/2) / sqrt(B)        0
    relu, quadratic   g (|w| q22 + q12^2 / |w|)                2 g q12 / |w|          g (q22 - q12^2 / q11) / |w|
    quadratic, relu   g (q11 |v| + q12^2 / |v|)                2 g q12 / |v|          2 g |v|
    quadratic with linear or erf (either order): 0 (an odd function of x)

(relu with linear, erf or quadratic from relu(z) = (z + |z|)/2 and Stein's lemma; relu-first
pairs have alpha = beta = 0 at w = 0; terms divided by |v| are 0 at v = 0.) For one activation
with itself, U and alpha are the Gaussian moments E[sigma(u) sigma(v)] and E[sigma'(u) sigma'(v)]
of (u, v) = (w.x, v.x), evaluated by :mod:`solvers.gaussian` (relu: alpha = 0 where w = 0 or
v = 0), and beta = 2 dU/dq11.

Only relu-relu and erf-erf need an N-body sum over pairs: every other pair is of finite rank
in (w, v) (U is q12 or q12^2 times functions of |w| and |v|), so its sums over j reduce to
sum_j c_j h(v_j) v_j and sum_j c_j h(v_j) v_j v_j^T: O((m + k) d^2). The N-body sums are a
Numba kernel, parallel over particles i (each writes only its own slots: the result does not
depend on the number of threads), tiled over j, with memory O(m d). For relu it evaluates
arccos by a branch-free polynomial (:func:`solvers.gaussian.acos_poly`, max error 4.4e-16 on
[-1, 1]; erf: arcsin by :func:`solvers.gaussian.asin_poly`): libm's acos does not vectorise here.
t = arccos(w.v / (|w||v|)) is accurate to about 1e-8 when w
and v are within 1e-8 rad (the cosine's rounding); the self term j = i is exact (t = 0).

The lazy side: :func:`tangent_gram` (the Gram matrix of the tangent features) and
:class:`PopulationTangent` (the linearized flow solved exactly).

Everything is float64.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import prange

from ._jit import jit, jit_parallel
from .catalog import (
    ACTIVATION_TABLE,
    ERF,
    LINEAR,
    POPULATION_ACTIVATIONS,
    QUADRATIC,
    RELU,
    activation_code,
)
from .fields import ParticleLayout
from .gaussian import (
    acos_poly,
    angles,
    asin_poly,
    erf_moments,
    linear_moments,
    quadratic_moments,
    relu_moments,
)
from .linear_flow import as_times, phi, psd_eigh
from .particles import pack_tiles, quad_dots

_TWO_PI = 2.0 * math.pi
_K = 2.0 / math.sqrt(math.pi)  # erf'(0)
_G = 1.0 / math.sqrt(2.0 * math.pi)

PARTICLE_BLOCK = 8
"""Particles i per parallel job of the N-body kernel (a multiple of 4)."""


def _population_code(act):
    """The code of activation ``act`` (name or code) if it has closed-form population
    kernels (:data:`solvers.catalog.POPULATION_ACTIVATIONS`); ValueError naming the supported
    pairs otherwise."""
    code = activation_code(act)
    if not ACTIVATION_TABLE[code].population:
        names = POPULATION_ACTIVATIONS
        pairs = ", ".join(f"({p}, {q})" for p in names for q in names)
        raise ValueError(
            f"no closed-form population kernel for activation {ACTIVATION_TABLE[code].name!r}; "
            f"supported: every pair of {', '.join(names)}: {pairs}"
        )
    return code


def _population_codes(act, act2):
    """(code1, code2) of :func:`_population_code`; ``act2`` None: the same as ``act``."""
    c1 = _population_code(act)
    return c1, (c1 if act2 is None else _population_code(act2))


def _matrix(W, name):
    """W as a C-contiguous float64 array, checked to be 2-D (particles x dimension)."""
    W = np.ascontiguousarray(W, dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(f"{name} must be 2-D (particles x dimension), got shape {W.shape}")
    return W


# ------------------------------------------------------------------ closed forms, NumPy


def _safe_inv(x):
    """1/x element-wise where x > 0, else 0 (a zero particle contributes nothing)."""
    return np.divide(1.0, x, out=np.zeros_like(x), where=x > 0)


def _pair_scalars(c1, c2, q11, q12, q22, angle=None):
    """(U, alpha, beta) of the module table, element-wise over broadcast q11, q12, q22,
    with grad_1 U = alpha v + beta w. For a pair of one activation, U and alpha are the
    Gaussian moments E[sigma(u) sigma(v)] and E[sigma'(u) sigma'(v)] of :mod:`solvers.gaussian`
    (u = w.x, v = v.x) and beta = 2 dU/dq11. relu-relu needs ``angle``, t = angle(w, v)."""
    q11, q12, q22 = np.broadcast_arrays(q11, q12, q22)
    n1, n2 = np.sqrt(q11), np.sqrt(q22)
    zero = np.zeros(q12.shape)
    if c1 == RELU and c2 == RELU:
        t = np.broadcast_to(angle, q12.shape)
        U, alpha = relu_moments(n1 * n2, t)
        beta = n2 * np.sin(t) * _safe_inv(n1) / _TWO_PI
        return U, alpha, beta
    if c1 == ERF and c2 == ERF:
        U, alpha = erf_moments(q11, q12, q22)
        return U, alpha, -2.0 * q12 * alpha / (1.0 + 2.0 * q11)
    if c1 == LINEAR and c2 == LINEAR:
        return (*linear_moments(q12), zero)
    if c1 == QUADRATIC and c2 == QUADRATIC:
        return (*quadratic_moments(q11, q12, q22), 2.0 * q22)
    if (c1, c2) == (RELU, LINEAR):
        return 0.5 * q12, np.where(n1 > 0, 0.5, 0.0), zero
    if (c1, c2) == (LINEAR, RELU):
        return 0.5 * q12, np.full(q12.shape, 0.5), zero
    if c1 in (ERF, LINEAR) and c2 in (ERF, LINEAR, RELU) and ERF in (c1, c2):
        # erf with linear or relu (relu's half): k q12 / sqrt(A) or k q12 / sqrt(B)
        scale = _K * (0.5 if RELU in (c1, c2) else 1.0)
        if c1 == ERF:
            A = 1.0 + 2.0 * q11
            alpha = scale / np.sqrt(A)
            return alpha * q12, alpha, -2.0 * q12 * alpha / A
        alpha = scale / np.sqrt(1.0 + 2.0 * q22)
        return alpha * q12, alpha, zero
    if (c1, c2) == (RELU, ERF):
        alpha = np.where(n1 > 0, 0.5 * _K / np.sqrt(1.0 + 2.0 * q22), 0.0)
        return 0.5 * _K * q12 / np.sqrt(1.0 + 2.0 * q22), alpha, zero
    if (c1, c2) == (RELU, QUADRATIC):
        inv1 = _safe_inv(n1)
        p = q12 * inv1  # v . w/|w|
        U = _G * (n1 * q22 + p * q12)
        return U, 2.0 * _G * p, _G * (q22 - p * p) * inv1
    if (c1, c2) == (QUADRATIC, RELU):
        inv2 = _safe_inv(n2)
        return _G * (q11 * n2 + q12 * q12 * inv2), 2.0 * _G * q12 * inv2, 2.0 * _G * n2
    if QUADRATIC in (c1, c2):  # with linear or erf: odd in x
        return zero, zero, zero
    raise AssertionError((c1, c2))


def _pair_all(W1, W2, act, act2):
    """(W1, W2, (U, alpha, beta)): the arrays checked, and :func:`_pair_scalars` for every pair
    of rows (i, j), shape (m1, m2), with q11 = |w1_i|^2, q12 = w1_i . w2_j, q22 = |w2_j|^2
    and, for relu-relu, t by :func:`solvers.gaussian.angles`."""
    c1, c2 = _population_codes(act, act2)
    W1, W2 = _matrix(W1, "W1"), _matrix(W2, "W2")
    if W1.shape[1] != W2.shape[1]:
        raise ValueError(f"W1 {W1.shape} and W2 {W2.shape} differ in dimension")
    q11 = np.einsum("ij,ij->i", W1, W1)[:, None]
    q22 = np.einsum("ij,ij->i", W2, W2)[None, :]
    q12 = W1 @ W2.T
    angle = angles(W1, W2) if (c1, c2) == (RELU, RELU) else None
    return W1, W2, _pair_scalars(c1, c2, q11, q12, q22, angle)


def pair_U(W1, W2, act, act2=None):
    """U[i, j] = E[sigma1(w1_i . x) sigma2(w2_j . x)], x ~ N(0, I_d), in closed form (module
    table); sigma1 = ``act``, sigma2 = ``act2`` (default ``act``). Shape (m1, m2).
    The relu-relu angle is Kahan's (accurate for nearly parallel rows). Reference quality."""
    return _pair_all(W1, W2, act, act2)[2][0]


def pair_grad_U(W1, W2, act, act2=None):
    """G[i, j] = grad_1 U(w1_i, w2_j) = E[sigma1'(w1_i . x) x sigma2(w2_j . x)] = alpha w2_j
    + beta w1_i (module table; relu'(0) = 0). Shape (m1, m2, d). Reference quality, small sizes."""
    W1, W2, (_, alpha, beta) = _pair_all(W1, W2, act, act2)
    return alpha[:, :, None] * W2[None, :, :] + beta[:, :, None] * W1[:, None, :]


def pair_hessian_U(W1, W2, act, act2=None):
    """H[i, j] = E[sigma1'(w1_i . x) sigma2'(w2_j . x) x x^T] = grad_2 grad_1 U, shape
    (m1, m2, d, d), in closed form for relu, erf, linear and quadratic with themselves
    (the blocks of the tangent Gram matrix), with e = w/|w|, f the unit vector of the part
    of v orthogonal to w, t = angle(w, v), A, B, Delta = A B - 4 q12^2:

        relu:      [(pi - t) I + sin t (cos t (e e^T - f f^T) + sin t (e f^T + f e^T))] / (2 pi)
                   (0 if w = 0 or v = 0: relu'(0) = 0)
        erf:       (4/pi) Delta^-1/2 [I - (2/Delta)(B w w^T - 2 q12 (w v^T + v w^T) + A v v^T)]
        linear:    I
        quadratic: 4 [q12 I + w v^T + v w^T]
    """
    c1, c2 = _population_codes(act, act2)
    if c1 != c2:
        raise ValueError("pair_hessian_U is for one activation with itself")
    W1, W2 = _matrix(W1, "W1"), _matrix(W2, "W2")
    m1, d = W1.shape
    m2 = W2.shape[0]
    eye = np.eye(d)
    w = W1[:, None, :]
    v = W2[None, :, :]
    q12 = W1 @ W2.T
    outer = lambda x, y: x[..., :, None] * y[..., None, :]  # noqa: E731
    if c1 == LINEAR:
        return np.broadcast_to(eye, (m1, m2, d, d)).copy()
    if c1 == QUADRATIC:
        return 4.0 * (q12[..., None, None] * eye + outer(w, v) + outer(v, w))
    q11 = np.einsum("ij,ij->i", W1, W1)[:, None]
    q22 = np.einsum("ij,ij->i", W2, W2)[None, :]
    if c1 == ERF:
        A, B = 1.0 + 2.0 * q11, 1.0 + 2.0 * q22
        delta = A * B - 4.0 * q12 * q12
        inner = (B[..., None, None] * outer(w, w) + A[..., None, None] * outer(v, v)
                 - 2.0 * q12[..., None, None] * (outer(w, v) + outer(v, w)))
        return ((4.0 / np.pi) / np.sqrt(delta))[..., None, None] * (
            eye - (2.0 / delta)[..., None, None] * inner)
    if c1 == RELU:
        t = angles(W1, W2)
        n1, n2 = np.sqrt(q11), np.sqrt(q22)
        e = np.broadcast_to(W1[:, None, :] * _safe_inv(n1)[..., None], (m1, m2, d))
        vperp = v - (q12 * _safe_inv(n1))[..., None] * e
        f = vperp * _safe_inv(np.linalg.norm(vperp, axis=-1))[..., None]
        st, ct = np.sin(t)[..., None, None], np.cos(t)[..., None, None]
        H = ((np.pi - t)[..., None, None] * eye
             + st * (ct * (outer(e, e) - outer(f, f)) + st * (outer(e, f) + outer(f, e)))) / _TWO_PI
        H[~((n1 > 0) & (n2 > 0))] = 0.0
        return H
    raise AssertionError(c1)


# ------------------------------------------------------------------ sums over j


def _finite_rank(c1, c2, W, V, c):
    """(S, G) with S_i = sum_j c_j U(w_i, v_j), G_i = sum_j c_j grad_1 U(w_i, v_j) for a
    pair other than relu-relu and erf-erf, through the moments of the v_j: O((m + k) d^2)."""
    m, d = W.shape
    q11 = np.einsum("ij,ij->i", W, W)
    q22 = np.einsum("ij,ij->i", V, V)
    n1, n2 = np.sqrt(q11), np.sqrt(q22)
    S = np.zeros(m)
    G = np.zeros((m, d))
    if QUADRATIC in (c1, c2) and {c1, c2} & {LINEAR, ERF}:
        return S, G  # quadratic with linear or erf: 0
    if c1 == QUADRATIC and c2 == QUADRATIC:
        Q = c @ q22
        M = (V * c[:, None]).T @ V
        MW = W @ M
        S = q11 * Q + 2.0 * np.einsum("ij,ij->i", W, MW)
        G = 2.0 * Q * W + 4.0 * MW
        return S, G
    if (c1, c2) == (RELU, QUADRATIC):
        inv1 = _safe_inv(n1)
        Q = c @ q22
        M = (V * c[:, None]).T @ V
        MW = W @ M
        wMw = np.einsum("ij,ij->i", W, MW)
        S = _G * (n1 * Q + wMw * inv1)
        G = _G * ((Q * inv1 - wMw * inv1**3)[:, None] * W + 2.0 * inv1[:, None] * MW)
        return S, G
    if (c1, c2) == (QUADRATIC, RELU):
        inv2 = _safe_inv(n2)
        N1 = c @ n2
        M = (V * (c * inv2)[:, None]).T @ V
        MW = W @ M
        S = _G * (q11 * N1 + np.einsum("ij,ij->i", W, MW))
        G = 2.0 * _G * (N1 * W + MW)
        return S, G
    # U = h1(|w|) h2(|v|) q12 (linear, relu, erf mixed): sum_j c_j U = h1 w . (sum_j c_j h2 v_j)
    h2 = {LINEAR: 1.0, RELU: 1.0, ERF: 1.0 / np.sqrt(1.0 + 2.0 * q22)}[c2] * np.ones_like(q22)
    scale = (_K if ERF in (c1, c2) else 1.0) * (0.5 if RELU in (c1, c2) else 1.0)
    Sv = scale * ((c * h2) @ V)
    p = W @ Sv
    if c1 == ERF:
        A = 1.0 + 2.0 * q11
        h1 = 1.0 / np.sqrt(A)
        return h1 * p, h1[:, None] * (Sv[None, :] - (2.0 * p / A)[:, None] * W)
    S = p
    G = np.broadcast_to(Sv, (m, d)).copy()
    if c1 == RELU:
        G[n1 == 0] = 0.0
    return S, G


# ------------------------------------------------------------------ the N-body kernel


def source_tile_size(d):
    """Particles j (the source side of the sums, :class:`_Source`) per tile of the N-body
    kernel: the (d, T) tile of the v_j (at most 16 KiB) stays in L1. Not
    :func:`solvers.particles.tile_size`, which tiles data points and stops at 64."""
    t = 256
    while t > 32 and d * t > 2048:
        t //= 2
    return t


@jit(inline="always")
def _relu_quad(D, T, x, wl, fq, f1, cn, cc, j0, iself, z, g, red):
    """One tile of pairs (i0 + p, j0 + jj), relu-relu, for the four particles p of a quad
    (rows of wl; fq their 1/|w|): each load of v_j serves four dot products z = w.v_j. With
    cos = z fq_p f1_j clipped to [-1, 1] (f1_j = 1/|v_j|; cos = 1 exactly for the self pair
    j = i, when iself = i0; iself < 0: no self pairs) and t = arccos cos (by
    :func:`solvers.gaussian.acos_poly`), adds sum_j cn_j (sin t + (pi - t) cos) to red[p]
    and sum_j cn_j sin t to red[4 + p] (cn_j = c_j |v_j|) and writes g[p, jj] = c_j (pi - t)."""
    quad_dots(D, T, x, wl, 0.0, 0.0, 0.0, 0.0, z)
    for p in range(4):
        fi = fq[p]
        su = 0.0
        sb = 0.0
        for jj in range(T):
            cs = z[p, jj] * fi * f1[j0 + jj]
            cs = min(max(cs, -1.0), 1.0)
            cs = 1.0 if j0 + jj == iself + p else cs
            pt = math.pi - acos_poly(cs)
            sn = math.sqrt(max((1.0 - cs) * (1.0 + cs), 0.0))
            cnj = cn[j0 + jj]
            su += cnj * (sn + pt * cs)
            sb += cnj * sn
            g[p, jj] = cc[j0 + jj] * pt
        red[p] += su
        red[4 + p] += sb


@jit(inline="always")
def _erf_quad(D, T, x, wl, fq, f1, cc, j0, z, g, red):
    """One tile of pairs, erf-erf, for the four particles of a quad (as :func:`_relu_quad`):
    with z = w.v_j, r = 2 z fq_p f1_j (fq = A^-1/2, f1 = B^-1/2), adds sum_j c_j asin r
    (by :func:`solvers.gaussian.asin_poly`) to red[p] and sum_j c_j f1_j z / sqrt(1 - r^2)
    to red[4 + p], writes g[p, jj] = c_j f1_j / sqrt(1 - r^2)."""
    quad_dots(D, T, x, wl, 0.0, 0.0, 0.0, 0.0, z)
    for p in range(4):
        fi = fq[p]
        su = 0.0
        sb = 0.0
        for jj in range(T):
            q = z[p, jj]
            f1j = f1[j0 + jj]
            r = 2.0 * q * fi * f1j
            cj = cc[j0 + jj]
            su += cj * asin_poly(r)
            gj = cj * f1j / math.sqrt(1.0 - r * r)
            sb += gj * q
            g[p, jj] = gj
        red[p] += su
        red[4 + p] += sb


@jit(inline="always")
def _accumulate_quad(D, T, x, g, acc):
    """acc[p, k] += sum_jj g[p, jj] x[k, jj] for the four particles p."""
    for k in range(D):
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        for jj in range(T):
            xv = x[k, jj]
            s0 += g[0, jj] * xv
            s1 += g[1, jj] * xv
            s2 += g[2, jj] * xv
            s3 += g[3, jj] * xv
        acc[0, k] += s0
        acc[1, k] += s1
        acc[2, k] += s2
        acc[3, k] += s3


@jit(inline="always")
def _finish(kind, D, i, su, sb, fi, w, acc, S, G):
    """S_i and G_i from the sums of particle i (see :func:`_make_nbody`)."""
    if kind == 0:
        # S = |w| su / 2pi; G = (acc + sb w / |w|) / 2pi; 0 at w = 0 (relu'(0) = 0)
        S[i] = su / (fi * _TWO_PI) if fi > 0.0 else 0.0
        for k in range(D):
            G[i, k] = (acc[k] + sb * fi * w[k]) / _TWO_PI if fi > 0.0 else 0.0
    else:
        # S = (2/pi) su; G = (4/pi) fi (acc - 2 fi^2 sb w)
        S[i] = (2.0 / math.pi) * su
        h = (4.0 / math.pi) * fi
        for k in range(D):
            G[i, k] = h * (acc[k] - 2.0 * fi * fi * sb * w[k])


def _make_nbody(D):
    T = source_tile_size(D)

    @jit_parallel
    def nbody(kind, W, fW, Vp, f1, cn, cc, self_pairs, S, G, pblock):
        """S_i = sum_j c_j U(w_i, v_j), G_i = sum_j c_j grad_1 U(w_i, v_j) for relu-relu
        (kind 0; fW = 1/|w_i|, f1 = 1/|v_j|, cn = c_j |v_j|) or erf-erf (kind 1;
        fW = A_i^-1/2, f1 = B_j^-1/2), v_j packed in tiles Vp (n_tiles, D, T), zero-padded
        with c_j = 0. The number of rows of W is a multiple of 4 and so is pblock: each job
        owns particles [blk * pblock, (blk + 1) * pblock) and takes them four at a time."""
        m = W.shape[0]
        n_tiles = Vp.shape[0]
        n_blocks = (m + pblock - 1) // pblock
        for blk in prange(n_blocks):
            z = np.empty((4, T))
            g4 = np.empty((4, T))
            wl = np.empty((4, D))
            fq = np.empty(4)
            acc4 = np.empty((4, D))
            red = np.empty(8)
            lo = blk * pblock
            hi = min(m, (blk + 1) * pblock)
            for i0 in range(lo, hi, 4):
                for p in range(4):
                    for k in range(D):
                        wl[p, k] = W[i0 + p, k]
                        acc4[p, k] = 0.0
                    fq[p] = fW[i0 + p]
                    red[p] = 0.0
                    red[4 + p] = 0.0
                iself = i0 if self_pairs else -8
                for tt in range(n_tiles):
                    j0 = tt * T
                    x = Vp[tt]
                    if kind == 0:
                        _relu_quad(D, T, x, wl, fq, f1, cn, cc, j0, iself, z, g4, red)
                    else:
                        _erf_quad(D, T, x, wl, fq, f1, cc, j0, z, g4, red)
                    _accumulate_quad(D, T, x, g4, acc4)
                for p in range(4):
                    _finish(kind, D, i0 + p, red[p], red[4 + p], fq[p], wl[p], acc4[p], S, G)

    return nbody


_nbody = functools.cache(_make_nbody)
"""The N-body kernel for dimension d (built on first use)."""


class _Source:
    """The particles v_j with weights c_j on the j side of the sums, packed once for the kernel."""

    def __init__(self, V, c, code):
        self.V = V
        self.c = c
        self.code = code
        k, d = V.shape
        self.T = source_tile_size(d)
        n_tiles = -(-k // self.T)
        self.Vp = pack_tiles(V, n_tiles, self.T)
        size = n_tiles * self.T
        q = np.einsum("ij,ij->i", V, V)
        self.f1 = np.zeros(size)
        self.cn = np.zeros(size)
        self.cc = np.zeros(size)
        self.cc[:k] = c
        if code == RELU:
            n = np.sqrt(q)
            self.f1[:k] = _safe_inv(n)
            self.cn[:k] = c * n
        elif code == ERF:
            self.f1[:k] = 1.0 / np.sqrt(1.0 + 2.0 * q)


def _sums(c1, c2, W, src, self_pairs):
    """(S, G): S_i = sum_j c_j U(w_i, v_j), G_i = sum_j c_j grad_1 U(w_i, v_j)."""
    m, d = W.shape
    if c1 != c2 or c1 not in (RELU, ERF) or m == 0 or src.V.shape[0] == 0:
        if m == 0 or src.V.shape[0] == 0:
            return np.zeros(m), np.zeros((m, d))
        return _finite_rank(c1, c2, W, src.V, src.c)
    m4 = -(-m // 4) * 4  # the kernel takes particles four at a time: pad with zero rows
    if m4 != m:
        W = np.concatenate([W, np.zeros((m4 - m, d))])
    q = np.einsum("ij,ij->i", W, W)
    if c1 == RELU:
        fW = _safe_inv(np.sqrt(q))
    else:
        fW = 1.0 / np.sqrt(1.0 + 2.0 * q)
    S = np.empty(m4)
    G = np.empty((m4, d))
    _nbody(d)(0 if c1 == RELU else 1, W, fW, src.Vp, src.f1, src.cn, src.cc, bool(self_pairs),
              S, G, PARTICLE_BLOCK)
    return S[:m], G[:m]


# ------------------------------------------------------------------ risk and gradient


class _Teacher:
    """The teacher side of the risk: packed particles, codes and the constant
    sum_jk a*_j a*_k U*(w*_j, w*_k)."""

    def __init__(self, teacher_a, teacher_W, act, teacher_act):
        self.code, self.tcode = _population_code(act), _population_code(teacher_act)
        self.W = _matrix(teacher_W, "teacher_W")
        self.a = np.ascontiguousarray(teacher_a, dtype=np.float64)
        if self.a.shape != (self.W.shape[0],):
            raise ValueError(f"teacher_a {self.a.shape} does not match teacher_W {self.W.shape}")
        self.src = _Source(self.W, self.a, self.tcode)
        S, _ = _sums(self.tcode, self.tcode, self.W, self.src, True)
        self.energy = float(self.a @ S)

    def risk_and_gradient(self, a, W, s, loss_scale, out=None):
        """(R, dR/da, dR/dW) for the student (a, W), from the sums of :func:`_sums` over the
        student (S, G) and over the teacher (S*, G*) and the teacher's constant E*:

            R = (c/2) [s^2 a . S - 2 s a . S* + E*],  dR/da = c (s^2 S - s S*),
            dR/dW_i = c a_i (s^2 G_i - s G*_i)

        ``out=(ga, gW)``: buffers for the gradients."""
        m, d = W.shape
        if d != self.W.shape[1] and self.W.shape[0]:
            raise ValueError(f"student dimension {d} differs from the teacher's {self.W.shape[1]}")
        code = self.code
        Ss, Gs = _sums(code, code, W, _Source(W, a, code), True)
        St, Gt = _sums(code, self.tcode, W, self.src, False)
        c, s = float(loss_scale), float(s)
        risk = 0.5 * c * (s * s * float(a @ Ss) - 2.0 * s * float(a @ St) + self.energy)
        if out is None:
            ga, gW = np.empty(m), np.empty((m, d))
        else:
            ga, gW = out
        np.multiply(c * s * s, Ss, out=ga)
        ga -= c * s * St
        np.multiply(s * s, Gs, out=gW)
        gW -= s * Gt
        gW *= (c * a)[:, None]
        return risk, ga, gW


def _student(a, W):
    """(a, W) as float64 arrays, checked: a (m,), W (m, d)."""
    W = _matrix(W, "W")
    a = np.ascontiguousarray(a, dtype=np.float64)
    if a.shape != (W.shape[0],):
        raise ValueError(f"a {a.shape} does not match W {W.shape}")
    return a, W


def population_gradient(a, W, teacher_a, teacher_W, *, s, act, teacher_act, loss_scale=1.0,
                        out=None):
    """``(risk, grad_a, grad_W)``: the population risk R and its exact gradients (module
    docstring), O(m^2 d + m k d) by the N-body kernel (relu-relu, erf-erf pairs) or
    O((m + k) d^2) (every other pair). ``out=(ga, gW)``: optional float64 buffers (m,), (m, d)."""
    a, W = _student(a, W)
    return _Teacher(teacher_a, teacher_W, act, teacher_act).risk_and_gradient(a, W, s, loss_scale, out)


def population_risk(a, W, teacher_a, teacher_W, *, s, act, teacher_act, loss_scale=1.0):
    """R = (c/2) [s^2 a^T U a - 2 s a^T U_x a* + a*^T U* a*] exactly, from the reference
    closed forms (:func:`pair_U`), O(m^2 d). A float."""
    a, W = _student(a, W)
    tW = _matrix(teacher_W, "teacher_W")
    ta = np.asarray(teacher_a, dtype=np.float64)
    uu = a @ pair_U(W, W, act) @ a
    ux = a @ pair_U(W, tW, act, teacher_act) @ ta if tW.shape[0] else 0.0
    tt = ta @ pair_U(tW, tW, teacher_act) @ ta if tW.shape[0] else 0.0
    return float(0.5 * loss_scale * (s * s * uu - 2.0 * s * ux + tt))


class PopulationField:
    """The population gradient flow as a vector field for ``solvers.integrate``:

        da_i/dt = -eta_a dR/da_i,   dw_i/dt = -eta_w dR/dw_i

    on the flat state [a (m), W.ravel() (m d)] of ``layout`` (no bias). ``field(t, y)``
    returns ``(dy, R / loss_scale)``: the unscaled population risk (c = 1), as the data-mode
    ``ParticleField`` returns its unscaled training loss. No minibatches.
    """

    def __init__(self, layout: ParticleLayout, teacher_a, teacher_W, *, s, eta_a, eta_w, act,
                 teacher_act, loss_scale=1.0):
        if layout.bias:
            raise ValueError("population mode has no bias: use ParticleLayout(m, d, bias=False)")
        self.layout = layout
        self.teacher = _Teacher(teacher_a, teacher_W, act, teacher_act)
        if self.teacher.W.shape[0] and self.teacher.W.shape[1] != layout.d:
            raise ValueError(f"teacher dimension {self.teacher.W.shape[1]} != layout.d = {layout.d}")
        self.s, self.eta_a, self.eta_w = float(s), float(eta_a), float(eta_w)
        self.loss_scale = float(loss_scale)
        self._buffers = (np.empty(layout.m), np.empty((layout.m, layout.d)))

    def __call__(self, t, state, batch=None):
        if batch is not None:
            raise NotImplementedError("the population field has no minibatches (infinite data)")
        a, W, _ = self.layout.split(np.asarray(state, dtype=np.float64))
        risk, ga, gW = self.teacher.risk_and_gradient(a, W, self.s, self.loss_scale, self._buffers)
        velocity = np.empty(self.layout.size)
        va, vW, _ = self.layout.split(velocity)
        np.multiply(ga, -self.eta_a, out=va)
        np.multiply(gW, -self.eta_w, out=vW)
        return velocity, risk / self.loss_scale


# ------------------------------------------------------------------ the lazy side


def tangent_gram(a0, W0, *, s, act):
    """G = E[Phi(x) Phi(x)^T], Phi = grad_theta f(x; theta_0) at theta_0 = [a0, W0.ravel()]
    (f = s sum_i a_i sigma(w_i . x)), in closed form, shape (m (d + 1), m (d + 1)):

        G[a_i, a_j]     = s^2 U(w_i, w_j)
        G[a_i, w_j]     = s^2 a_j E[sigma(w_i.x) sigma'(w_j.x) x] = s^2 a_j grad_1 U(w_j, w_i)
        G[w_i, w_j]     = s^2 a_i a_j E[sigma'(w_i.x) sigma'(w_j.x) x x^T]    (:func:`pair_hessian_U`)

    for relu, erf, linear and quadratic."""
    a, W = _student(a0, W0)
    code = _population_code(act)
    m, d = W.shape
    s2 = float(s) ** 2
    n = m * (d + 1)
    G = np.empty((n, n))
    G[:m, :m] = s2 * pair_U(W, W, code)
    grad = pair_grad_U(W, W, code)  # [j, i, :] = grad_1 U(w_j, w_i)
    aw = s2 * np.transpose(grad, (1, 0, 2)) * a[None, :, None]  # [i, j, :]
    G[:m, m:] = aw.reshape(m, m * d)
    G[m:, :m] = G[:m, m:].T
    H = pair_hessian_U(W, W, code) * (s2 * np.outer(a, a))[:, :, None, None]  # [i, j, k, l]
    G[m:, m:] = np.transpose(H, (0, 2, 1, 3)).reshape(m * d, m * d)
    return 0.5 * (G + G.T)


class PopulationTangent:
    """The tangent model f_lin(x) = f_0(x) + Phi(x) . (theta - theta_0), theta = [a, W.ravel()],
    trained by the population gradient flow, solved exactly. Its risk is quadratic,

        R(theta) = (c/2) [dtheta^T G dtheta + 2 dtheta^T h + E(f_0 - f*)^2],   dtheta = theta - theta_0,

    with G = :func:`tangent_gram` and h = E[Phi (f_0 - f*)] = grad R(theta_0) / c, and the flow
    d dtheta/dt = -c P (G dtheta + h), P = diag(eta_a (m times), eta_w (m d times)), is
    solved through one symmetric eigendecomposition P^1/2 G P^1/2 = V diag(lam) V^T: with
    b = V^T P^1/2 h,

        dtheta(t) = P^1/2 V z(t),   z_k(t) = b_k expm1(-c lam_k t) / lam_k = -c t b_k phi(c lam_k t)
        R(t)      = (c/2) [E(f_0 - f*)^2 - 2 c t sum_k b_k^2 phi(2 c lam_k t)]

    with phi(x) = -expm1(-x)/x, phi(0) = 1 (stable for small eigenvalues; R(t) decreases).
    Eigenvalues up to size * eps * lam_max are rounding and taken as 0; there b_k is rounding
    too (h lies in the range of G, since n^T Phi = 0 almost surely for a null vector n), so
    those modes are left at rest. ``state(t)`` and ``risk(t)`` take a time t >= 0 or an array
    of times (then one row per time). ``risk`` is R with the loss scale c, as
    :func:`population_risk`.
    """

    def __init__(self, a0, W0, teacher_a, teacher_W, *, s, eta_a, eta_w, act, teacher_act,
                 loss_scale=1.0):
        a, W = _student(a0, W0)
        m, d = W.shape
        self.c = float(loss_scale)
        if self.c <= 0:
            raise ValueError("loss_scale must be positive")
        if eta_a < 0 or eta_w < 0:
            raise ValueError("learning rates must be >= 0")
        self.theta0 = np.concatenate([a, W.ravel()])
        R0, ga, gW = population_gradient(a, W, teacher_a, teacher_W, s=s, act=act,
                                         teacher_act=teacher_act, loss_scale=self.c)
        self.risk0 = R0
        self.h = np.concatenate([ga, gW.ravel()]) / self.c
        self.gram = tangent_gram(a, W, s=s, act=act)
        self.eta = np.concatenate([np.full(m, float(eta_a)), np.full(m * d, float(eta_w))])
        q = np.sqrt(self.eta)
        lam, V = psd_eigh(q[:, None] * self.gram * q[None, :], "the preconditioned Gram matrix")
        self.eigenvalues = lam
        self._range = lam > 0
        self._QV = (q[:, None] * V)[:, self._range]
        self._b = (V.T @ (q * self.h))[self._range]
        self._lam = lam[self._range]

    def state(self, t):
        """theta(t) = theta_0 + P^1/2 V z(t), flat [a, W.ravel()] (rows for an array of t)."""
        t_arr, tau = as_times(t)
        z = -self.c * tau * self._b * phi(self.c * self._lam * tau)  # (T, r)
        theta = self.theta0 + z @ self._QV.T
        return theta[0] if t_arr.ndim == 0 else theta

    def risk(self, t):
        """The tangent model's population risk R(t) (with the loss scale c)."""
        t_arr, tau = as_times(t)
        drop = 2.0 * self.c * tau[:, 0] * (phi(2.0 * self.c * self._lam * tau) @ (self._b ** 2))
        R = self.risk0 - 0.5 * self.c * drop
        return float(R[0]) if t_arr.ndim == 0 else R
