"""The empirical vector field of the particle system (docs/design.md §1.1), fused and parallel.

Network and risk::

    f(x) = s * sum_i a_i sigma(w_i . x + b_i) [+ c]
    R    = loss_scale * (1/n) sum_k loss(f(x_k), y_k)

and the exact gradients, with z_ik = w_i . x_k + b_i and l'_k = d loss/d f at (f(x_k), y_k)::

    dR/da_i = loss_scale * s/n sum_k l'_k sigma(z_ik)
    dR/dw_i = loss_scale * s/n sum_k l'_k a_i sigma'(z_ik) x_k
    dR/db_i = loss_scale * s/n sum_k l'_k a_i sigma'(z_ik)
    dR/dc   = loss_scale * 1/n sum_k l'_k                  (the output bias, when there is one)

The output bias costs one addition to f and one sum of l', outside the kernels.

Two paths, chosen by d (docs/design.md §1.1).

d < BLAS_MIN_D, fused kernels: nothing of size m x n is allocated. Two passes:

1. forward, parallel over (tile of data points) x (fixed chunk of particles): each job owns
   its partial sums, reduced afterwards in a fixed order, so f does not depend on the
   number of threads;
2. backward, parallel over particles: each particle recomputes its z_ik tile by tile and
   writes only its own gradient slots (deterministic whatever the number of threads).

The data are packed as contiguous (d, tile) tiles, zero-padded, with l' = 0 on the padding.

d >= BLAS_MIN_D, the GEMM path, block by block of points X_b (:func:`gemm_layout`):
Z_b = W X_b^T by the BLAS (about GEMM_BLOCK_BYTES, in a core's L2); f_k = s sum_i a_i
sigma(Z_ik + b_i) by a serial Numba pass over Z_b, then l'_k; G_ik = a_i lp_k sigma'(Z_ik + b_i)
written over Z_b by a second pass (with the row sums dR/da_i and dR/db_i); dR/dW += G_b X_b by
the BLAS. The blocks go in lanes fixed by the sizes, run on Numba's thread count, each
product on one BLAS thread, and the lanes' sums are added in a fixed order: the same bits at
any thread count (docs/design.md §1.1, §6.3).

Sums are accumulated in the dtype of the inputs (float32 inputs: float32 sums); the mean
loss is always summed in float64.
"""

import functools

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
from .lanes import run_jobs, scratch
from .losses import loss_and_derivative

BLAS_MIN_D = 32
"""From this input dimension on, the step takes the GEMM path (measured at m = n = 4096 on
the shared 2-core machine, GEMM path against the fused kernels: d = 24, 1.27x faster on one
thread, 0.76x on two; d = 32, 1.64x and 1.30x in float64, 1.47x and 0.80x in float32;
d = 48, 2.1x and 1.5x). Kept at 32: below it the fused kernels' bits, and the bundled
references, stay as they were."""

PARTICLE_BLOCK = 16
"""Particles per parallel job of the fused backward pass (a multiple of :data:`QUAD`)."""

FORWARD_CHUNK = 512
"""The forward pass splits the particles into chunks of at least this many."""


# ---------------------------------------------------------------- fused kernels (small d)
#
# The kernels are built per input dimension D (a compile-time constant: the loops over
# the coordinates unroll and the loops over data points vectorise; with a run-time d they
# ran 3x slower). Each D compiles, and is cached on disk, separately.


def tile_size(d):
    """Data points per tile for dimension d: the (d, tile) block of X (16 KiB at most in
    float64) stays in L1 next to the (4, tile) blocks of z and g of the particle quads.
    Long tiles amortise the horizontal sums at the end of each tile (d = 10 and 16:
    128 points measured 5-10% faster than 64)."""
    t = 256
    while t > 64 and d * t > 2048:
        t //= 2
    return t


QUAD = 4
"""Particles processed together by the fused kernels (the forward pass for D <= QUAD_MAX_D,
the backward pass for 3 <= D <= QUAD_MAX_D): they share every load of x."""

QUAD_MAX_D = 16
"""Above this dimension the four-particle blocks spill registers and lose their
vectorisation (measured at d = 20, 24, 31 on one thread: 1.3-3x slower than one
particle at a time), so the kernels go one particle at a time there."""


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


@jit(inline="always")
def quad_dots(D, T, x, wl, b0, b1, b2, b3, z):
    """z[p, t] = b_p + wl[p] . x[:, t] for the four rows p of ``wl`` and the T columns of the
    tile ``x`` (D, T): register blocking over particles, each load of x serves four fused
    multiply-adds. The one copy of this loop, inlined into every kernel that takes
    particles four at a time (the fused kernels here, the N-body kernel of
    :mod:`solvers.population`, which starts from b_p = 0); D and T are constants at each
    call site, so the coordinate loop unrolls."""
    for t in range(T):
        z0 = b0
        z1 = b1
        z2 = b2
        z3 = b3
        for j in range(D):
            xv = x[j, t]
            z0 += wl[0, j] * xv
            z1 += wl[1, j] * xv
            z2 += wl[2, j] * xv
            z3 += wl[3, j] * xv
        z[0, t] = z0
        z[1, t] = z1
        z[2, t] = z2
        z[3, t] = z3


@jit
def _quad_backward(D, T, code, a, W, b, Xp, lp, ga, gW, gb, i0):
    """Backward pass of the four particles i0 ... i0 + 3: ga_i = sum_k lp_k sigma(z_ik),
    gb_i = a_i sum_k lp_k sigma'(z_ik), gW_i = a_i sum_k lp_k sigma'(z_ik) x_k.

    Register blocking over particles: each load of x serves four multiply-adds, and the
    x-weighted sums take two coordinates at a time (eight accumulators). relu is inlined
    (its loop vectorises); the other activations go through :func:`activate_tile`. The
    scratch arrays are allocated here, not passed in: LLVM then knows they alias nothing
    and vectorises without run-time overlap checks (passed in, this ran 3x slower). D and
    T arrive as literals (compile-time constants)."""
    one = Xp.dtype.type(1.0)
    z = np.empty((QUAD, T), dtype=Xp.dtype)
    sv = np.empty((QUAD, T), dtype=Xp.dtype)
    g = np.empty((QUAD, T), dtype=Xp.dtype)
    wl = np.empty((QUAD, D), dtype=Xp.dtype)
    bl = np.empty(QUAD, dtype=Xp.dtype)
    accw = np.zeros((QUAD, D), dtype=Xp.dtype)
    for p in range(QUAD):
        for j in range(D):
            wl[p, j] = W[i0 + p, j]
        bl[p] = b[i0 + p]
    relu = code == RELU
    zero = one - one
    a0 = zero
    a1 = zero
    a2 = zero
    a3 = zero
    c0 = zero
    c1 = zero
    c2 = zero
    c3 = zero
    for tt in range(Xp.shape[0]):
        t0 = tt * T
        x = Xp[tt]
        quad_dots(D, T, x, wl, bl[0], bl[1], bl[2], bl[3], z)
        if relu:
            for t in range(T):
                l = lp[t0 + t]
                z0 = z[0, t]
                z1 = z[1, t]
                z2 = z[2, t]
                z3 = z[3, t]
                a0 += l * (z0 if z0 > zero else zero)
                a1 += l * (z1 if z1 > zero else zero)
                a2 += l * (z2 if z2 > zero else zero)
                a3 += l * (z3 if z3 > zero else zero)
                g0 = l * (one if z0 > zero else zero)
                g1 = l * (one if z1 > zero else zero)
                g2 = l * (one if z2 > zero else zero)
                g3 = l * (one if z3 > zero else zero)
                c0 += g0
                c1 += g1
                c2 += g2
                c3 += g3
                g[0, t] = g0
                g[1, t] = g1
                g[2, t] = g2
                g[3, t] = g3
        else:
            for p in range(QUAD):
                activate_tile(code, z[p], sv[p], g[p], T)
            for t in range(T):
                l = lp[t0 + t]
                a0 += l * sv[0, t]
                a1 += l * sv[1, t]
                a2 += l * sv[2, t]
                a3 += l * sv[3, t]
                g0 = l * g[0, t]
                g1 = l * g[1, t]
                g2 = l * g[2, t]
                g3 = l * g[3, t]
                c0 += g0
                c1 += g1
                c2 += g2
                c3 += g3
                g[0, t] = g0
                g[1, t] = g1
                g[2, t] = g2
                g[3, t] = g3
        for jj in range(D // 2):
            j = 2 * jj
            s0 = zero
            s1 = zero
            s2 = zero
            s3 = zero
            r0 = zero
            r1 = zero
            r2 = zero
            r3 = zero
            for t in range(T):
                xv = x[j, t]
                xu = x[j + 1, t]
                g0 = g[0, t]
                g1 = g[1, t]
                g2 = g[2, t]
                g3 = g[3, t]
                s0 += g0 * xv
                s1 += g1 * xv
                s2 += g2 * xv
                s3 += g3 * xv
                r0 += g0 * xu
                r1 += g1 * xu
                r2 += g2 * xu
                r3 += g3 * xu
            accw[0, j] += s0
            accw[1, j] += s1
            accw[2, j] += s2
            accw[3, j] += s3
            accw[0, j + 1] += r0
            accw[1, j + 1] += r1
            accw[2, j + 1] += r2
            accw[3, j + 1] += r3
        if D % 2 == 1:
            j = D - 1
            s0 = zero
            s1 = zero
            s2 = zero
            s3 = zero
            for t in range(T):
                xv = x[j, t]
                s0 += g[0, t] * xv
                s1 += g[1, t] * xv
                s2 += g[2, t] * xv
                s3 += g[3, t] * xv
            accw[0, j] += s0
            accw[1, j] += s1
            accw[2, j] += s2
            accw[3, j] += s3
    ga[i0] = a0
    ga[i0 + 1] = a1
    ga[i0 + 2] = a2
    ga[i0 + 3] = a3
    gb[i0] = a[i0] * c0
    gb[i0 + 1] = a[i0 + 1] * c1
    gb[i0 + 2] = a[i0 + 2] * c2
    gb[i0 + 3] = a[i0 + 3] * c3
    for p in range(QUAD):
        ai = a[i0 + p]
        for j in range(D):
            gW[i0 + p, j] = ai * accw[p, j]


@jit
def _forward_job(D, T, a, W, b, Xp, code, n_chunks, out, job):
    """Job ``job`` = tt * n_chunks + c of the forward pass: out[c, tt*T + t] = sum over the
    particles i of chunk c of a_i sigma(w_i . x_t + b_i), the particles four at a time
    (each load of x serves four multiply-adds; their terms are added in the order
    i0, ..., i0 + 3) and the rest one at a time. D and T arrive as literals. Scratch is
    allocated here, see :func:`_quad_backward`."""
    m = W.shape[0]
    chunk = (m + n_chunks - 1) // n_chunks
    tt = job // n_chunks
    c = job - tt * n_chunks
    z = np.empty((QUAD, T), dtype=Xp.dtype)
    sv = np.empty((QUAD, T), dtype=Xp.dtype)
    acc = np.zeros(T, dtype=Xp.dtype)
    wl = np.empty((QUAD, D), dtype=Xp.dtype)
    bl = np.empty(QUAD, dtype=Xp.dtype)
    zero = Xp.dtype.type(0.0)
    x = Xp[tt]
    lo = min(m, c * chunk)
    hi = min(m, (c + 1) * chunk)
    n_quads = (hi - lo) // QUAD if D <= QUAD_MAX_D else 0
    relu = code == RELU
    for q in range(n_quads):
        i0 = lo + q * QUAD
        for p in range(QUAD):
            for j in range(D):
                wl[p, j] = W[i0 + p, j]
            bl[p] = b[i0 + p]
        quad_dots(D, T, x, wl, bl[0], bl[1], bl[2], bl[3], z)
        q0 = a[i0]
        q1 = a[i0 + 1]
        q2 = a[i0 + 2]
        q3 = a[i0 + 3]
        if relu:
            for t in range(T):
                z0 = z[0, t]
                z1 = z[1, t]
                z2 = z[2, t]
                z3 = z[3, t]
                acc[t] += (
                    q0 * (z0 if z0 > zero else zero)
                    + q1 * (z1 if z1 > zero else zero)
                    + q2 * (z2 if z2 > zero else zero)
                    + q3 * (z3 if z3 > zero else zero)
                )
        else:
            for p in range(QUAD):
                activate_tile_value(code, z[p], sv[p], T)
            for t in range(T):
                acc[t] += q0 * sv[0, t] + q1 * sv[1, t] + q2 * sv[2, t] + q3 * sv[3, t]
    zs = z[0]
    vs = sv[0]
    for i in range(lo + n_quads * QUAD, hi):
        bi = b[i]
        for t in range(T):
            zt = bi
            for j in range(D):
                zt += W[i, j] * x[j, t]
            zs[t] = zt
        activate_tile_value(code, zs, vs, T)
        ai = a[i]
        for t in range(T):
            acc[t] += ai * vs[t]
    t0 = tt * T
    for t in range(T):
        out[c, t0 + t] = acc[t]


@jit
def _backward_job_quads(D, T, a, W, b, Xp, lp, code, ga, gW, gb, pblock, blk):
    """Block ``blk`` of the backward pass for D >= 3: the particles blk*pblock ...
    (blk+1)*pblock - 1, four at a time up to :data:`QUAD_MAX_D` (pblock is a multiple of
    4, so which particles form a quad does not depend on the number of threads), the rest
    one at a time."""
    m = W.shape[0]
    lo = blk * pblock
    hi = min(m, (blk + 1) * pblock)
    n_quads = (hi - lo) // QUAD if D <= QUAD_MAX_D else 0
    for q in range(n_quads):
        _quad_backward(D, T, code, a, W, b, Xp, lp, ga, gW, gb, lo + q * QUAD)
    one = Xp.dtype.type(1.0)
    zero = one - one
    z = np.empty(T, dtype=Xp.dtype)
    sv = np.empty(T, dtype=Xp.dtype)
    dv = np.empty(T, dtype=Xp.dtype)
    g = np.empty(T, dtype=Xp.dtype)
    accw = np.empty(D, dtype=Xp.dtype)
    w = np.empty(D, dtype=Xp.dtype)
    for i in range(lo + n_quads * QUAD, hi):
        for j in range(D):
            w[j] = W[i, j]
            accw[j] = zero
        acca, accb = _particle_tiled(D, T, code, Xp, lp, w, b[i], accw, z, sv, dv, g, one)
        ai = a[i]
        ga[i] = acca
        gb[i] = ai * accb
        for j in range(D):
            gW[i, j] = ai * accw[j]


@jit
def _backward_job_fused(D, T, a, W, b, Xp, lp, code, ga, gW, gb, pblock, blk):
    """Block ``blk`` of the backward pass for D <= 2: one particle at a time, everything in
    one loop over the data (the accumulators stay in registers)."""
    m = W.shape[0]
    one = Xp.dtype.type(1.0)
    zero = one - one
    accw = np.empty(D, dtype=Xp.dtype)
    w = np.empty(D, dtype=Xp.dtype)
    for i in range(blk * pblock, min(m, (blk + 1) * pblock)):
        for j in range(D):
            w[j] = W[i, j]
            accw[j] = zero
        bi = b[i]
        if code == RELU:
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


def _make_fused(D):
    T = tile_size(D)

    @jit_parallel
    def forward(a, W, b, Xp, code, n_chunks, out):
        """out[c, tt*T + t] = sum over particles i of chunk c of a_i sigma(w_i . x + b_i)."""
        for job in prange(Xp.shape[0] * n_chunks):
            _forward_job(D, T, a, W, b, Xp, code, n_chunks, out, job)

    # Gradients with l' already scaled: ga_i = sum_k lp_k sigma(z_ik),
    # gW_i = a_i sum_k lp_k sigma'(z_ik) x_k, gb_i = a_i sum_k lp_k sigma'(z_ik).
    # Two kernels, so that each D compiles only the code it runs.
    if D > 2:

        @jit_parallel
        def backward(a, W, b, Xp, lp, code, ga, gW, gb, pblock):
            for blk in prange((W.shape[0] + pblock - 1) // pblock):
                _backward_job_quads(D, T, a, W, b, Xp, lp, code, ga, gW, gb, pblock, blk)

    else:

        @jit_parallel
        def backward(a, W, b, Xp, lp, code, ga, gW, gb, pblock):
            for blk in prange((W.shape[0] + pblock - 1) // pblock):
                _backward_job_fused(D, T, a, W, b, Xp, lp, code, ga, gW, gb, pblock, blk)

    return forward, backward


_fused = functools.cache(_make_fused)
"""The (forward, backward) fused kernels for dimension d (built on first use)."""


@jit_parallel
def pack_tiles(X, n_tiles, tile):
    """X (n, d) -> contiguous tiles (n_tiles, d, tile), zero-padded: Xp[tt, j, t] = X[tt tile + t, j]."""
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


# ---------------------------------------------------------------- GEMM path (large d)
#
# For every block of points: Z_b = W X_b^T by the BLAS, the element-wise work by two serial
# Numba passes over Z_b, and gW += G_b X_b by the BLAS, with G_ik = a_i l'_k sigma'(z_ik)
# written over Z_b in place; the blocks in lanes run by a pool of threads (:func:`_gemm`).


@jit(inline="always")
def _forward_chunk(code, Z, a, b, k0, cnt, s, one):
    """s[t] += sum_i a_i sigma(Z[i, k0 + t] + b_i), the rows four at a time
    (their four terms summed first, in the order r, r + 1, r + 2, r + 3), then one at a
    time. ``code`` is a constant at each call site: the activation folds into the loop."""
    rows = Z.shape[0]
    r4 = rows - rows % 4
    for i in range(0, r4, 4):
        a0, a1, a2, a3 = a[i], a[i + 1], a[i + 2], a[i + 3]
        b0, b1, b2, b3 = b[i], b[i + 1], b[i + 2], b[i + 3]
        z0 = Z[i, k0:k0 + cnt]
        z1 = Z[i + 1, k0:k0 + cnt]
        z2 = Z[i + 2, k0:k0 + cnt]
        z3 = Z[i + 3, k0:k0 + cnt]
        for t in range(cnt):
            s0 = sigma_pair(code, z0[t] + b0, one)[0]
            s1 = sigma_pair(code, z1[t] + b1, one)[0]
            s2 = sigma_pair(code, z2[t] + b2, one)[0]
            s3 = sigma_pair(code, z3[t] + b3, one)[0]
            s[t] += a0 * s0 + a1 * s1 + a2 * s2 + a3 * s3
    for i in range(r4, rows):
        ai = a[i]
        bi = b[i]
        zr = Z[i, k0:k0 + cnt]
        for t in range(cnt):
            s[t] += ai * sigma_pair(code, zr[t] + bi, one)[0]


@jit(inline="always")
def _backward_row(code, row, ai, bi, lp, one):
    """row[k] <- a_i lp_k sigma'(row[k] + b_i) in place; returns (sum_k lp_k sigma(z_k),
    sum_k lp_k sigma'(z_k)) with z_k = row[k] + b_i, summed in a fixed order."""
    zero = one - one
    acca = zero
    accb = zero
    for k in range(row.shape[0]):
        sv, dv = sigma_pair(code, row[k] + bi, one)
        l = lp[k]
        acca += l * sv
        g = l * dv
        accb += g
        row[k] = ai * g
    return acca, accb


@jit
def _gemm_forward_rows(Z, a, b, code, acc):
    """acc[k] += sum_i a_i sigma(Z[i, k] + b_i) for every k (:func:`_forward_chunk`), by
    chunks of GEMM_COLUMNS columns, each summed in a fixed order. Serial, as
    :func:`_gemm_backward_rows`: the lanes run in parallel, each on one core (:func:`_gemm`)."""
    n = Z.shape[1]
    C = GEMM_COLUMNS
    one = Z.dtype.type(1.0)
    for c in range((n + C - 1) // C):
        k0 = c * C
        cnt = min(C, n - k0)
        s = acc[k0:k0 + cnt]
        if code == RELU:
            _forward_chunk(RELU, Z, a, b, k0, cnt, s, one)
        elif code == TANH:
            _forward_chunk(TANH, Z, a, b, k0, cnt, s, one)
        elif code == ERF:
            _forward_chunk(ERF, Z, a, b, k0, cnt, s, one)
        elif code == SIGMOID:
            _forward_chunk(SIGMOID, Z, a, b, k0, cnt, s, one)
        elif code == SOFTPLUS:
            _forward_chunk(SOFTPLUS, Z, a, b, k0, cnt, s, one)
        elif code == LINEAR:
            _forward_chunk(LINEAR, Z, a, b, k0, cnt, s, one)
        else:
            _forward_chunk(QUADRATIC, Z, a, b, k0, cnt, s, one)


@jit
def _gemm_backward_rows(Z, a, b, lp, code, ga, gb):
    """For each row (particle) i: ga_i = sum_k lp_k sigma(z_ik), gb_i = a_i sum_k lp_k
    sigma'(z_ik), and Z[i, k] <- a_i lp_k sigma'(z_ik) in place, with z_ik = Z[i, k] + b_i
    (:func:`_backward_row`, sums in a fixed order). Serial: see :func:`_gemm_forward_rows`."""
    one = Z.dtype.type(1.0)
    for i in range(Z.shape[0]):
        ai = a[i]
        bi = b[i]
        row = Z[i]
        if code == RELU:
            acca, accb = _backward_row(RELU, row, ai, bi, lp, one)
        elif code == TANH:
            acca, accb = _backward_row(TANH, row, ai, bi, lp, one)
        elif code == ERF:
            acca, accb = _backward_row(ERF, row, ai, bi, lp, one)
        elif code == SIGMOID:
            acca, accb = _backward_row(SIGMOID, row, ai, bi, lp, one)
        elif code == SOFTPLUS:
            acca, accb = _backward_row(SOFTPLUS, row, ai, bi, lp, one)
        elif code == LINEAR:
            acca, accb = _backward_row(LINEAR, row, ai, bi, lp, one)
        else:
            acca, accb = _backward_row(QUADRATIC, row, ai, bi, lp, one)
        ga[i] = acca
        gb[i] = ai * accb


GEMM_COLUMNS = 512
"""Data points per chunk of the forward pass of the GEMM path (the chunk's sums, 4 KiB in
float64, stay in L1 while it streams through the rows)."""

GEMM_BLOCK_BYTES = 4 << 20
"""The GEMM path goes by blocks of data points: a block's Z_b = W X_b^T (m x n_b) is about
this many bytes, so that it stays in the cache (a core's L2, or its share of L3) from the
BLAS's product through the element-wise passes to the second product (docs/design.md §1.1).
Measured at m = 1024 and 4096, n = 8192, d = 100 on 2 threads: 1 MiB blocks (128 points at
m = 1024 in float64) made the products slower than 4 MiB (512), by 10-30%; at m = 4096 even
8 MiB was faster than 4."""

GEMM_MIN_POINTS = 16
GEMM_MAX_POINTS = 1024
"""Points per block of the GEMM path: GEMM_BLOCK_BYTES / (m itemsize), rounded down to a
multiple of GEMM_MIN_POINTS, between GEMM_MIN_POINTS and GEMM_MAX_POINTS."""

GEMM_LANES = 8
"""The blocks of the GEMM path are shared among at most this many *lanes*, fixed by the
problem's size and not by the thread count: a lane takes its blocks in order and sums their
gradients into its own accumulator; the lanes' accumulators are then summed in the order
0, 1, ... So the bits do not depend on how many threads run the lanes."""

GEMM_LANE_BYTES = 64 << 20
"""The lanes' accumulators for dR/dW (m x d each) hold at most about this many bytes in all
(at least one lane)."""


def gemm_layout(m, n, d, itemsize):
    """(points per block, lanes) of the GEMM path for m particles, n points in dimension d:
    blocks of GEMM_BLOCK_BYTES, at most GEMM_LANES lanes, their accumulators within
    GEMM_LANE_BYTES (see those constants)."""
    points = GEMM_BLOCK_BYTES // max(1, m * itemsize) // GEMM_MIN_POINTS * GEMM_MIN_POINTS
    points = int(min(GEMM_MAX_POINTS, max(GEMM_MIN_POINTS, points)))
    blocks = max(1, -(-n // points))
    lanes = min(GEMM_LANES, blocks, max(1, GEMM_LANE_BYTES // max(1, m * d * itemsize)))
    return points, int(lanes)


def gemm_buffer_bytes(m, n, d, itemsize, threads=None):
    """Bytes the GEMM path keeps for m particles and n points in dimension d (between calls,
    :func:`solvers.lanes.release_workspace`): each thread that runs lanes (``threads``, Numba's most by
    default, at most one per lane) a block of Z and a block's gradients, m (points + d + 2)
    values, and the calling thread the lanes' sums, lanes m (d + 2) values."""
    import numba

    points, lanes = gemm_layout(m, n, d, itemsize)
    threads = min(lanes, numba.config.NUMBA_NUM_THREADS if threads is None else threads)
    return (threads * m * (points + d + 2) + lanes * m * (d + 2)) * itemsize


def _lane_blocks(n, points, lanes, lane):
    """The (k0, k1) point ranges of ``lane``'s blocks: the blocks of ``points`` points cut
    into ``lanes`` contiguous runs of whole blocks."""
    blocks = -(-n // points)
    for block in range(lane * blocks // lanes, (lane + 1) * blocks // lanes):
        yield block * points, min(n, (block + 1) * points)


def _block_forward(W, Xb, a, b, code, acc):
    """Z_b = W X_b^T (BLAS) in this thread's buffer; acc[t] += sum_i a_i sigma(Z_b[i, t] + b_i)
    (:func:`_gemm_forward_rows`). Returns Z_b."""
    Z = _block_product(W, Xb)
    _gemm_forward_rows(Z, a, b, code, acc)
    return Z


def _block_product(W, Xb):
    """Z_b = W X_b^T (BLAS) in this thread's buffer."""
    Z = scratch("Z", (W.shape[0], Xb.shape[0]), Xb.dtype)
    np.matmul(W, Xb.T, out=Z)
    return Z


def _block_backward(Z, Xb, a, b, lp, code, sums, first):
    """Z_b becomes G_b = a_i lp_k sigma'(z_ik) in place (:func:`_gemm_backward_rows`);
    sums = (ga, gW, gb) of the lane += the block's (sum_k lp_k sigma(z_ik), G_b X_b,
    a_i sum_k lp_k sigma'(z_ik)), or = them for the lane's ``first`` block."""
    sum_a, sum_W, sum_b = sums
    if first:
        ga, gW, gb = sums
    else:
        m, d = sum_W.shape
        block = scratch("gradients", (m * (d + 2),), Z.dtype)
        ga, gb, gW = block[:m], block[m:2 * m], block[2 * m:].reshape(m, d)
    _gemm_backward_rows(Z, a, b, lp, code, ga, gb)
    np.matmul(Z, Xb, out=gW)
    if not first:
        sum_a += ga
        sum_b += gb
        sum_W += gW


LANE_SUM_PARTS = 8
"""The lanes' sums are added in this many parts of their values at once (in parallel)."""


def _sum_lanes(sums):
    """The lanes' sums (rows of ``sums``) added in the order 0, 1, ... into row 0, in
    LANE_SUM_PARTS parts of the values run in parallel: every value's sum is the same
    whatever the parts and the thread count."""
    lanes, size = sums.shape
    parts = min(LANE_SUM_PARTS, size)

    def add(part):
        cut = slice(part * size // parts, (part + 1) * size // parts)
        for lane in range(1, lanes):
            sums[0, cut] += sums[lane, cut]

    if lanes > 1:
        run_jobs(parts, add)


def _gemm(a, W, b, X, code, lp_of=None, lp=None, f=None, grads=None):
    """The GEMM path, block by block of points, lanes in parallel (docs/design.md §1.1).

    For every block of points X_b: the forward sums (when ``f`` is given, f_b = sum_i a_i
    sigma(z_ik), then ``lp_of(k0, k1, f_b)`` gives the block's scaled l'), else l' taken
    from ``lp``; with ``grads = (ga, gW, gb)`` the backward pass on the same Z_b, summed per
    lane and then over lanes in a fixed order."""
    m, d = W.shape
    n = X.shape[0]
    points, lanes = gemm_layout(m, n, d, X.dtype.itemsize)
    lane_sums = [None] * lanes
    if grads is not None:  # every lane has a block: its first writes the lane's sums
        sums = scratch("lanes", (lanes, m * (d + 2)), X.dtype)
        lane_sums = [(row[:m], row[2 * m:].reshape(m, d), row[m:2 * m]) for row in sums]
    zero = X.dtype.type(0)

    def work(lane):
        for block, (k0, k1) in enumerate(_lane_blocks(n, points, lanes, lane)):
            Xb = X[k0:k1]
            if f is not None:
                fb = f[k0:k1]
                fb[...] = zero
                Z = _block_forward(W, Xb, a, b, code, fb)
                lpb = lp_of(k0, k1, fb) if lp_of is not None else None
            else:
                Z, lpb = _block_product(W, Xb), lp[k0:k1]
            if grads is not None:
                _block_backward(Z, Xb, a, b, lpb, code, lane_sums[lane], block == 0)

    run_jobs(lanes, work)
    if grads is not None:
        _sum_lanes(sums)
        for target, total in zip(grads, lane_sums[0]):
            target[...] = total


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
        f = np.empty(n, dtype=X.dtype)
        _gemm(a, W, b, X, code, f=f)
        return f
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
    return pack_tiles(X, -(-n // t), t)


def predict(a, W, b, X, s, act, c=None):
    """Network output f(x_k) = s * sum_i a_i sigma(w_i . x_k + b_i) [+ c], shape (n,).

    a (m,), W (m, d), b (m,) or None (no bias), X (n, d), s the output multiplier,
    act an activation code, c the output bias or None (none). float64 by default; float32
    when the inputs are float32.
    """
    a, W, b, X, dtype = _prepare(a, W, b, X)
    n = X.shape[0]
    if n == 0 or W.shape[0] == 0:
        f = np.zeros(n, dtype=dtype)
    else:
        f = _forward_sum(a, W, b, X, int(act), _packed(X))
        f *= dtype.type(s)
    if c is not None:
        f += dtype.type(c)
    return f


def risk_and_gradient(a, W, b, X, y, s, act, loss, loss_scale=1.0, out=None, c=None):
    """Risk R = loss_scale * (1/n) sum_k loss(f(x_k), y_k) and its exact gradients.

    Returns ``(risk, grad_a, grad_W, grad_b)`` (``grad_b`` is None when ``b`` is None); risk
    is a Python float. ``out=(ga, gW, gb)`` are optional preallocated C-contiguous buffers
    of shapes (m,), (m, d), (m,) (gb may be None) in the working dtype; they are filled and
    returned. With ``c`` (a number: the output bias, f + c) a fifth value is returned,
    dR/dc = loss_scale (1/n) sum_k l'_k, a Python float summed in float64. Equations in the
    module docstring.
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
        if c is not None:
            return 0.0, ga, gW, (gb if has_bias else None), 0.0
        return 0.0, ga, gW, (gb if has_bias else None)

    code = int(act)
    scale = dtype.type(float(loss_scale) * float(s) / n)
    lp_raw = np.empty(n, dtype=dtype)
    if d >= BLAS_MIN_D:
        f = np.empty(n, dtype=dtype)

        def lp_of(k0, k1, fb):
            """A block's f_k = s sum_i a_i sigma(z_ik) [+ c] (in place) and its scaled l'_k."""
            fb *= dtype.type(s)
            if c is not None:
                fb += dtype.type(c)
            loss_and_derivative(int(loss), fb, y[k0:k1], lp_raw[k0:k1])
            return lp_raw[k0:k1] * scale

        _gemm(a, W, b, X, code, lp_of=lp_of, f=f, grads=(ga, gW, gb_work))
        risk = float(loss_scale) * loss_and_derivative(int(loss), f, y, np.empty(n, dtype=dtype))
    else:
        Xp = _packed(X)
        f = _forward_sum(a, W, b, X, code, Xp)
        f *= dtype.type(s)
        if c is not None:
            f += dtype.type(c)
        risk = float(loss_scale) * loss_and_derivative(int(loss), f, y, lp_raw)
        lp = np.zeros(Xp.shape[0] * Xp.shape[2], dtype=dtype)
        np.multiply(lp_raw, scale, out=lp[:n])
        _fused(d)[1](a, W, b, Xp, lp, code, ga, gW, gb_work, PARTICLE_BLOCK)
    if has_bias and gb is not gb_work:
        gb[...] = gb_work
    if c is not None:
        return risk, ga, gW, (gb if has_bias else None), float(loss_scale) * float(np.sum(lp_raw, dtype=np.float64)) / n
    return risk, ga, gW, (gb if has_bias else None)


def pullback(a, W, b, X, v, s, act, Xp=None):
    """J^T v for f = s sum_i a_i sigma(w_i . x + b_i) on the points X: (s sum_k v_k sigma(z_ik),
    s a_i sum_k v_k sigma'(z_ik) x_k, s a_i sum_k v_k sigma'(z_ik)) for every particle i, the
    bias part None when ``b`` is None. The backward pass of :func:`risk_and_gradient` with its
    scaled l' replaced by s v (the curvature measures' products, docs/design.md §1.9); ``Xp``:
    X packed in tiles once (:func:`packed_points`), for many calls on the same points."""
    has_bias = b is not None
    a, W, b, X, dtype = _prepare(a, W, b, X)
    m, d = W.shape
    n = X.shape[0]
    ga, gW, gb = np.empty(m, dtype=dtype), np.empty((m, d), dtype=dtype), np.empty(m, dtype=dtype)
    code = int(act)
    if d >= BLAS_MIN_D:
        _gemm(a, W, b, X, code, lp=np.asarray(v, dtype=dtype) * dtype.type(s), grads=(ga, gW, gb))
    else:
        Xp = _packed(X) if Xp is None else Xp
        lp = np.zeros(Xp.shape[0] * Xp.shape[2], dtype=dtype)
        np.multiply(v, dtype.type(s), out=lp[:n])
        _fused(d)[1](a, W, b, Xp, lp, code, ga, gW, gb, PARTICLE_BLOCK)
    return ga, gW, (gb if has_bias else None)


def packed_points(X):
    """X in the tiles the fused kernels read (None where they are not used: d >= BLAS_MIN_D)."""
    return _packed(np.ascontiguousarray(X))
