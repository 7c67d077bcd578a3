"""The empirical vector field of the particle system (DESIGN section 1), fused and parallel.

Network and risk::

    f(x) = s * sum_i a_i sigma(w_i . x + b_i)
    R    = loss_scale * (1/n) sum_k loss(f(x_k), y_k)

and the exact gradients, with z_ik = w_i . x_k + b_i and l'_k = d loss/d f at (f(x_k), y_k)::

    dR/da_i = loss_scale * s/n sum_k l'_k sigma(z_ik)
    dR/dw_i = loss_scale * s/n sum_k l'_k a_i sigma'(z_ik) x_k
    dR/db_i = loss_scale * s/n sum_k l'_k a_i sigma'(z_ik)

Nothing of size m x n is ever allocated. Two passes:

1. forward, parallel over (tile of data points) x (fixed chunk of particles): each job owns
   its partial sums, reduced afterwards in a fixed order, so f does not depend on the
   number of threads;
2. backward, parallel over particles: each particle recomputes its z_ik tile by tile and
   writes only its own gradient slots (deterministic whatever the number of threads).

The data are packed as contiguous (d, tile) tiles, zero-padded, with l' = 0 on the padding.
For large d the products w_i . x_k go through BLAS on blocks of particles instead
(memory O(block * n)), see :data:`BLAS_MIN_D`.

Sums are accumulated in the dtype of the inputs (float32 inputs: float32 sums); the mean
loss is always summed in float64.
"""

import numpy as np
from numba import prange

from ._jit import jit, jit_parallel
from .activations import (
    ERF,
    LINEAR,
    QUADRATIC,
    RELU,
    SIGMOID,
    SOFTPLUS,
    TANH,
    activate_tile,
    activate_tile_value,
    sigma_pair,
)
from .losses import loss_and_derivative

BLAS_MIN_D = 32
"""From this input dimension on, w_i . x_k is computed by BLAS on blocks of particles
(measured at m = n = 4096 on 2 cores: fused and BLAS tie near d = 24 on one thread, the
fused kernel still wins at d = 32 on two, BLAS wins clearly from d = 48)."""

BLAS_BLOCK_ELEMENTS = 1 << 21
"""At most this many z_ik values exist at once on the BLAS path (16 MiB in float64)."""

PARTICLE_BLOCK = 16
"""Particles per parallel job of the fused backward pass."""

FORWARD_CHUNK = 512
"""The forward pass splits the particles into chunks of at least this many."""


# ---------------------------------------------------------------- fused kernels (small d)
#
# The kernels are built per input dimension D (a compile-time constant: the loops over
# the coordinates unroll and the loops over data points vectorise; with a run-time d they
# ran 3x slower). Each D compiles, and is cached on disk, separately.


def tile_size(d):
    """Data points per tile for dimension d: the (d, tile) block of X stays in L1."""
    t = 256
    while t > 64 and d * t > 1024:
        t //= 2
    return t


@jit(inline="always")
def _particle_fused(D, T, code, Xp, lp, w, bi, accw, one):
    """One particle, everything in one loop over data points (fast for D <= 2, where
    the accumulators stay in registers). D, T and ``code`` are constants at each call
    site (inlined), so the coordinate loops unroll and the activation branch folds."""
    zero = one - one
    acca = zero
    accb = zero
    for tt in range(Xp.shape[0]):
        t0 = tt * T
        for t in range(T):
            zt = bi
            for j in range(D):
                zt += w[j] * Xp[tt, j, t]
            s, ds = sigma_pair(code, zt, one)
            l = lp[t0 + t]
            acca += l * s
            g = l * ds
            accb += g
            for j in range(D):
                accw[j] += g * Xp[tt, j, t]
    return acca, accb


@jit(inline="always")
def _particle_tiled(D, T, code, Xp, lp, w, bi, accw, z, sv, dv, g, one):
    """One particle, tile by tile: z, then activate_tile, then one reduction loop per
    coordinate (for D >= 3, where one fused loop spills its accumulators)."""
    zero = one - one
    acca = zero
    accb = zero
    for tt in range(Xp.shape[0]):
        t0 = tt * T
        for t in range(T):
            zt = bi
            for j in range(D):
                zt += w[j] * Xp[tt, j, t]
            z[t] = zt
        activate_tile(code, z, sv, dv, T)
        for t in range(T):
            l = lp[t0 + t]
            acca += l * sv[t]
            gt = l * dv[t]
            g[t] = gt
            accb += gt
        for j in range(D):
            sj = zero
            for t in range(T):
                sj += g[t] * Xp[tt, j, t]
            accw[j] += sj
    return acca, accb


def _make_fused(D):
    T = tile_size(D)

    @jit_parallel
    def forward(a, W, b, Xp, code, n_chunks, out):
        """out[c, tt*T + t] = sum over particles i of chunk c of a_i sigma(w_i . x + b_i)."""
        n_tiles = Xp.shape[0]
        m = W.shape[0]
        chunk = (m + n_chunks - 1) // n_chunks
        for job in prange(n_tiles * n_chunks):
            tt = job // n_chunks
            c = job - tt * n_chunks
            z = np.empty(T, dtype=Xp.dtype)
            sv = np.empty(T, dtype=Xp.dtype)
            acc = np.zeros(T, dtype=Xp.dtype)
            x = Xp[tt]
            for i in range(c * chunk, min(m, (c + 1) * chunk)):
                bi = b[i]
                for t in range(T):
                    zt = bi
                    for j in range(D):
                        zt += W[i, j] * x[j, t]
                    z[t] = zt
                activate_tile_value(code, z, sv, T)
                ai = a[i]
                for t in range(T):
                    acc[t] += ai * sv[t]
            t0 = tt * T
            for t in range(T):
                out[c, t0 + t] = acc[t]

    @jit_parallel
    def backward(a, W, b, Xp, lp, code, ga, gW, gb, pblock):
        """Gradients with l' already scaled: ga_i = sum_k lp_k sigma(z_ik),
        gW_i = a_i sum_k lp_k sigma'(z_ik) x_k, gb_i = a_i sum_k lp_k sigma'(z_ik)."""
        m = W.shape[0]
        n_blocks = (m + pblock - 1) // pblock
        one = Xp.dtype.type(1.0)
        zero = one - one
        for blk in prange(n_blocks):
            z = np.empty(T, dtype=Xp.dtype)
            sv = np.empty(T, dtype=Xp.dtype)
            dv = np.empty(T, dtype=Xp.dtype)
            g = np.empty(T, dtype=Xp.dtype)
            accw = np.empty(D, dtype=Xp.dtype)
            w = np.empty(D, dtype=Xp.dtype)
            for i in range(blk * pblock, min(m, (blk + 1) * pblock)):
                for j in range(D):
                    w[j] = W[i, j]
                    accw[j] = zero
                bi = b[i]
                if D > 2:
                    acca, accb = _particle_tiled(
                        D, T, code, Xp, lp, w, bi, accw, z, sv, dv, g, one
                    )
                elif code == RELU:
                    acca, accb = _particle_fused(D, T, RELU, Xp, lp, w, bi, accw, one)
                elif code == TANH:
                    acca, accb = _particle_fused(D, T, TANH, Xp, lp, w, bi, accw, one)
                elif code == ERF:
                    acca, accb = _particle_fused(D, T, ERF, Xp, lp, w, bi, accw, one)
                elif code == SIGMOID:
                    acca, accb = _particle_fused(D, T, SIGMOID, Xp, lp, w, bi, accw, one)
                elif code == SOFTPLUS:
                    acca, accb = _particle_fused(D, T, SOFTPLUS, Xp, lp, w, bi, accw, one)
                elif code == LINEAR:
                    acca, accb = _particle_fused(D, T, LINEAR, Xp, lp, w, bi, accw, one)
                else:
                    acca, accb = _particle_fused(D, T, QUADRATIC, Xp, lp, w, bi, accw, one)
                ai = a[i]
                ga[i] = acca
                gb[i] = ai * accb
                for j in range(D):
                    gW[i, j] = ai * accw[j]

    return forward, backward


_FUSED = {}


def _fused(d):
    """The (forward, backward) fused kernels for dimension d (built on first use)."""
    k = _FUSED.get(d)
    if k is None:
        k = _FUSED[d] = _make_fused(d)
    return k


@jit_parallel
def _pack(X, n_tiles, tile):
    """X (n, d) -> contiguous tiles (n_tiles, d, tile), zero-padded."""
    n, d = X.shape
    Xp = np.zeros((n_tiles, d, tile), dtype=X.dtype)
    for tt in prange(n_tiles):
        t0 = tt * tile
        cnt = min(tile, n - t0)
        for t in range(cnt):
            for j in range(d):
                Xp[tt, j, t] = X[t0 + t, j]
    return Xp


@jit
def _reduce_rows(parts, n, out, scale):
    """out[k] = scale * sum_c parts[c, k], summed in the order c = 0, 1, ..."""
    for k in range(n):
        out[k] = parts[0, k]
    for c in range(1, parts.shape[0]):
        for k in range(n):
            out[k] += parts[c, k]
    for k in range(n):
        out[k] *= scale


# ---------------------------------------------------------------- BLAS path (large d)
#
# Z = W_block X^T by BLAS, the element-wise work fused in one pass of a Numba kernel
# over Z (in place), then a BLAS product again: memory O(block * n), never m x n.


def _blas_forward_rows(Z, b, i0, code):
    """Z[r, k] <- sigma(Z[r, k] + b_{i0+r}) in place."""
    B, n = Z.shape
    for r in prange(B):
        row = Z[r]
        bi = b[i0 + r]
        for k in range(n):
            row[k] += bi
        activate_tile_value(code, row, row, n)


def _blas_backward_rows(Z, a, b, i0, lp, code, ga, gb):
    """Z[r, k] <- a_i lp_k sigma'(z_ik) in place, ga_i = sum_k lp_k sigma(z_ik) and
    gb_i = sum_k Z[r, k] (after the update), for i = i0 + r."""
    B, n = Z.shape
    zero = Z.dtype.type(0.0)
    for r in prange(B):
        i = i0 + r
        bi = b[i]
        ai = a[i]
        sv = np.empty(n, dtype=Z.dtype)
        dv = np.empty(n, dtype=Z.dtype)
        row = Z[r]
        for k in range(n):
            row[k] += bi
        activate_tile(code, row, sv, dv, n)
        acca = zero
        accb = zero
        for k in range(n):
            l = lp[k]
            acca += l * sv[k]
            gk = l * dv[k]
            accb += gk
            row[k] = ai * gk
        ga[i] = acca
        gb[i] = ai * accb


# Numba's OpenMP threads and OpenBLAS's threads take turns on the same cores; the
# element-wise pass is O(n) per row against O(n d) for BLAS, so it runs serially there.
_blas_forward_rows = jit(_blas_forward_rows)
_blas_backward_rows = jit(_blas_backward_rows)


def _blas_rows(m, n):
    return int(max(1, min(m, BLAS_BLOCK_ELEMENTS // max(n, 1))))


def _forward_blas(a, W, b, X, code):
    m = W.shape[0]
    n = X.shape[0]
    acc = np.zeros(n, dtype=X.dtype)
    B = _blas_rows(m, n)
    Z = np.empty((B, n), dtype=X.dtype)
    XT = X.T
    for i0 in range(0, m, B):
        i1 = min(m, i0 + B)
        Zb = Z[: i1 - i0]
        np.matmul(W[i0:i1], XT, out=Zb)
        _blas_forward_rows(Zb, b, i0, code)
        acc += a[i0:i1] @ Zb
    return acc


def _backward_blas(a, W, b, X, lp, code, ga, gW, gb):
    m = W.shape[0]
    n = X.shape[0]
    B = _blas_rows(m, n)
    Z = np.empty((B, n), dtype=X.dtype)
    XT = X.T
    for i0 in range(0, m, B):
        i1 = min(m, i0 + B)
        Zb = Z[: i1 - i0]
        np.matmul(W[i0:i1], XT, out=Zb)
        _blas_backward_rows(Zb, a, b, i0, lp, code, ga, gb)
        np.matmul(Zb, X, out=gW[i0:i1])


# ---------------------------------------------------------------- public interface


def _prepare(a, W, b, X):
    W = np.asarray(W)
    X = np.asarray(X)
    dtype = np.result_type(W.dtype, X.dtype, np.float32)
    if dtype not in (np.float32, np.float64):
        dtype = np.dtype(np.float64)
    W = np.ascontiguousarray(W, dtype=dtype)
    X = np.ascontiguousarray(X, dtype=dtype)
    a = np.ascontiguousarray(a, dtype=dtype)
    if W.ndim != 2 or X.ndim != 2 or a.ndim != 1:
        raise ValueError("expected a (m,), W (m, d), X (n, d)")
    m, d = W.shape
    if a.shape[0] != m or X.shape[1] != d:
        raise ValueError(f"shapes do not match: a {a.shape}, W {W.shape}, X {X.shape}")
    if b is None:
        bb = np.zeros(m, dtype=dtype)
    else:
        bb = np.ascontiguousarray(b, dtype=dtype)
        if bb.shape != (m,):
            raise ValueError(f"b has shape {bb.shape}, expected ({m},)")
    return a, W, bb, X, dtype


def _forward_sum(a, W, b, X, code, Xp):
    """sum_i a_i sigma(w_i . x_k + b_i) for every k (without the factor s)."""
    m, d = W.shape
    n = X.shape[0]
    if d >= BLAS_MIN_D:
        return _forward_blas(a, W, b, X, code)
    n_tiles = Xp.shape[0]
    n_chunks = int(max(1, min(-(-m // FORWARD_CHUNK), -(-16 // n_tiles))))
    parts = np.empty((n_chunks, n_tiles * Xp.shape[2]), dtype=X.dtype)
    _fused(d)[0](a, W, b, Xp, code, n_chunks, parts)
    out = np.empty(n, dtype=X.dtype)
    _reduce_rows(parts, n, out, X.dtype.type(1.0))
    return out


def _packed(X):
    n, d = X.shape
    if d >= BLAS_MIN_D or n == 0:
        return None
    t = tile_size(d)
    return _pack(X, -(-n // t), t)


def predict(a, W, b, X, s, act):
    """Network output f(x_k) = s * sum_i a_i sigma(w_i . x_k + b_i), shape (n,).

    a (m,), W (m, d), b (m,) or None (no bias), X (n, d), s the output multiplier,
    act an activation code. float64 by default; float32 when the inputs are float32.
    """
    a, W, b, X, dtype = _prepare(a, W, b, X)
    n = X.shape[0]
    if n == 0 or W.shape[0] == 0:
        return np.zeros(n, dtype=dtype)
    f = _forward_sum(a, W, b, X, int(act), _packed(X))
    f *= dtype.type(s)
    return f


def risk_and_gradient(a, W, b, X, y, s, act, loss, loss_scale=1.0, out=None):
    """Risk R = loss_scale * (1/n) sum_k loss(f(x_k), y_k) and its exact gradients.

    Returns ``(risk, grad_a, grad_W, grad_b)`` (``grad_b`` is None when ``b`` is None); risk
    is a Python float. ``out=(ga, gW, gb)`` are optional preallocated C-contiguous buffers
    of shapes (m,), (m, d), (m,) (gb may be None) in the working dtype; they are filled and
    returned. Equations in the module docstring.
    """
    has_bias = b is not None
    a, W, b, X, dtype = _prepare(a, W, b, X)
    y = np.ascontiguousarray(y, dtype=dtype)
    m, d = W.shape
    n = X.shape[0]
    if y.shape != (n,):
        raise ValueError(f"y has shape {y.shape}, expected ({n},)")
    if out is None:
        ga = np.empty(m, dtype=dtype)
        gW = np.empty((m, d), dtype=dtype)
        gb = np.empty(m, dtype=dtype) if has_bias else None
    else:
        ga, gW, gb = out
        for buf, shape in ((ga, (m,)), (gW, (m, d))):
            if buf.shape != shape or buf.dtype != dtype or not buf.flags.c_contiguous:
                raise ValueError(f"out buffer must be C-contiguous {dtype} of shape {shape}")
        if has_bias and gb is None:
            raise ValueError("out needs a bias buffer when b is given")
    gb_work = gb if (has_bias and gb is not None and gb.dtype == dtype) else np.empty(m, dtype)
    if n == 0 or m == 0:
        ga[:] = 0
        gW[:] = 0
        gb_work[:] = 0
        if has_bias:
            gb[...] = gb_work
        return 0.0, ga, gW, (gb if has_bias else None)

    code = int(act)
    Xp = _packed(X)
    f = _forward_sum(a, W, b, X, code, Xp)
    f *= dtype.type(s)
    lp_raw = np.empty(n, dtype=dtype)
    risk = float(loss_scale) * loss_and_derivative(int(loss), f, y, lp_raw)
    scale = dtype.type(float(loss_scale) * float(s) / n)
    if d >= BLAS_MIN_D:
        lp = lp_raw * scale
        _backward_blas(a, W, b, X, lp, code, ga, gW, gb_work)
    else:
        lp = np.zeros(Xp.shape[0] * Xp.shape[2], dtype=dtype)
        np.multiply(lp_raw, scale, out=lp[:n])
        _fused(d)[1](a, W, b, Xp, lp, code, ga, gW, gb_work, PARTICLE_BLOCK)
    if has_bias and gb is not gb_work:
        gb[...] = gb_work
    return risk, ga, gW, (gb if has_bias else None)
