"""The infinite-width kernels of the scenario's two-layer network on any inputs, the NNGP
posterior and the NTK flow's prediction (docs/design.md §1.6): what ``mf.kernels``,
``mf.nngp_posterior`` and ``mf.ntk_predict`` compute, from the scenario's ``model`` and
``parameterization`` sections (validated above this layer).

The network is f(x) = s sum_i a_i sigma(w_i . x + b_i) [+ c], w_i ~ N(0, w_std^2 I_d / d),
b_i ~ N(0, b_std^2), a_i ~ N(0, a_std^2 m^-2B), c ~ N(0, c_std^2) (docs/design.md §2). With
(u, v) the pre-activations at x, x', of covariance q(x, x') = (w_std^2 / d) x . x' + b_std^2:

    nngp(x, x') = a_std^2 E[sigma(u) sigma(v)] [+ c_std^2]
    ntk(x, x')  = lim_m c s^2 m [ eta_a E[sigma(u) sigma(v)]
                                  + a_std^2 m^-2B E[sigma'(u) sigma'(v)] (eta_w x . x' + eta_b 1_bias) ]
                  [+ c eta_c]

``nngp`` is the covariance of f_0 in the scaling where it is O(1) (s sqrt(m) a_std m^-B ->
a_std: ntk and standard; in mean_field, lazy and mup f_0 vanishes like m^-1/2 and this is
the covariance of sqrt(m) f_0): neural-tangents' nngp with W_std = w_std, b_std = b_std and a
readout of W_std = a_std, b_std = c_std. ``ntk`` is the learning-rate-weighted tangent kernel
in the preset's clock: the flow of f on squared loss is df/dt = -(1/n) ntk (f - y), t the run's
time. Each term is lr times a power of m from the preset's exponents (A, B, C_a, C_w; c = loss_scale):

    a-term:  c s0^2 lr_a m^(1 - 2A - C_a)        w-, b-terms: c s0^2 a_std^2 lr_w (lr_b) m^(1 - 2A - 2B - C_w)

so mean_field, ntk, lazy (any alpha) and mup all have the limit lr_a E[ss] + a_std^2 E[s's'](lr_w
x.x' + lr_b) (+ lr_c); a term whose power is negative vanishes in the limit, and one whose power
is positive (standard: the kernel grows like m) has no limit: refused.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple, Optional

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from solvers.ntk import LinearizedSquared, analytic_kernels

from ..errors import UsageError
from .parameterization import resolve

if TYPE_CHECKING:
    from ..config.sections import ModelSpec, PresetBase

BLOCK_ELEMENTS = 1 << 20
"""Default rows per batch: as many as keep batch * n2 within this (8 MiB per n2-wide array)."""

EXPONENT_TOLERANCE = 1e-12

TILE = 64
"""Rows of x1 per BLAS product x1 x2^T: fixed, so the kernels do not depend on ``batch``."""


class Kernels(NamedTuple):
    """The infinite-width kernels on (x1, x2), each (n1, n2) float64 (module docstring)."""

    nngp: np.ndarray
    ntk: np.ndarray


class Posterior(NamedTuple):
    """The NNGP posterior at the test points: the mean and the variance of f(x*) (without the
    label noise, which a new label adds)."""

    mean: np.ndarray
    variance: np.ndarray


class Prediction(NamedTuple):
    """The mean of the linearized infinite-width network under the NTK flow at time t, on the
    training and the test points."""

    train: np.ndarray
    test: np.ndarray


class KernelRates(NamedTuple):
    """The weights of the infinite-width NTK in the preset's clock (module docstring):
    ntk = eta_a E[ss] + a_var E[s's'] (eta_w x.x' + eta_b) + eta_c, with a_var = 1 (a_std^2 is
    in eta_w and eta_b)."""

    eta_a: float
    eta_w: float
    eta_b: float
    eta_c: float


def _limit(coefficient: float, power: float, term: str, preset: str) -> float:
    """lim_m coefficient m^power: the coefficient (power 0), 0 (power < 0), or refused."""
    if coefficient == 0 or abs(power) <= EXPONENT_TOLERANCE:
        return coefficient
    if power < 0:
        return 0.0
    raise UsageError(f"parameterization {preset!r}: the NTK's {term} grows like m^{power:g} with the width: "
                     "it has no infinite-width limit in this clock (use ntk, mean_field, lazy or mup, or "
                     "custom exponents with 1 - 2A - C_a <= 0 and 1 - 2A - 2B - C_w <= 0)")


def kernel_rates(model: ModelSpec, param: PresetBase) -> KernelRates:
    """The infinite-width NTK's weights for the preset ``param`` (module docstring), from the
    numbers :func:`resolve` gives at width 1 (s0, lr, a_std, loss_scale) and its exponents."""
    one = resolve(param, model.model_copy(update={"width": 1}), 1)
    A, B, C_a, C_w = (one.exponents[key] for key in ("A", "B", "C_a", "C_w"))
    weight = one.loss_scale * one.s**2
    first = 1 - 2 * A - 2 * B - C_w
    return KernelRates(
        eta_a=_limit(weight * one.eta_a, 1 - 2 * A - C_a, "output-layer term", param.preset),
        eta_w=_limit(weight * one.a_std**2 * one.eta_w, first, "input-weight term", param.preset),
        eta_b=_limit(weight * one.a_std**2 * one.rate_b, first, "bias term", param.preset) if model.bias else 0.0,
        eta_c=one.loss_scale * one.eta_c if model.output_bias else 0.0,
    )


def _points(x, name: str, dim: Optional[int] = None) -> np.ndarray:
    """x as a finite float64 (n, d) array (a 1-D array is one point per entry, d = 1)."""
    try:
        x = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise UsageError(f"{name}: give an array of points (n, d) of numbers") from None
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise UsageError(f"{name}: give an array of points (n, d), not one of shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise UsageError(f"{name}: every coordinate must be a finite number")
    if dim is not None and x.shape[1] != dim:
        raise UsageError(f"{name} has dimension {x.shape[1]}, and the first inputs {dim}: give points of one dimension")
    return np.ascontiguousarray(x)


def _batch_rows(batch: Optional[int], n2: int) -> int:
    if batch is None:
        return max(1, BLOCK_ELEMENTS // max(n2, 1))
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise UsageError(f"batch: give a whole number of rows >= 1, not {batch!r}")
    return int(batch)


def infinite_width_kernels(x1, x2=None, *, model: ModelSpec, param: PresetBase, batch: Optional[int] = None) -> Kernels:
    """(nngp, ntk) of the infinite-width network on the rows of x1 and x2 (x2 None: x1 with
    itself, an exactly symmetric Gram matrix), each (n1, n2) float64 (module docstring for the
    equations, :func:`solvers.ntk.analytic_kernels` for the Gaussian expectations: closed forms
    for relu, erf, linear, quadratic; quadrature for tanh, sigmoid, softplus).

    Computed ``batch`` rows of x1 at a time (default: batch * n2 <= 2^20; rounded up to a
    multiple of :data:`TILE`), so that beyond the two results only a few batch x n2 arrays are
    held. The numbers do not depend on ``batch``, bit for bit: the products x1 . x2 come from
    BLAS on fixed tiles of TILE rows (their rounding depends on the shape of the product), and
    everything else is computed entry by entry; for a Gram matrix the entries with j <= i are
    computed and mirrored."""
    x1 = _points(x1, "x1")
    gram = x2 is None or x2 is x1
    x2 = x1 if gram else _points(x2, "x2", x1.shape[1])
    n1, n2, d = x1.shape[0], x2.shape[0], x1.shape[1]
    rates = kernel_rates(model, param)
    rows = -(-_batch_rows(batch, n2) // TILE) * TILE
    init = model.init
    c_var = init.c_std**2 if model.output_bias else 0.0
    nngp, ntk = np.empty((n1, n2)), np.empty((n1, n2))
    x2_t = np.ascontiguousarray(x2.T)
    for i0 in range(0, n1, rows):
        i1 = min(n1, i0 + rows)
        cols = i1 if gram else n2  # a Gram matrix: the columns up to the block's last row
        products = np.vstack([x1[t0:min(i1, t0 + TILE)] @ x2_t for t0 in range(i0, i1, TILE)])[:, :cols]
        e_ss, k = analytic_kernels(x1[i0:i1], x2[:cols], act=model.activation, w_var=init.w_std**2 / d,
                                   b_var=init.b_std**2 if model.bias else 0.0, a_var=1.0, eta_a=rates.eta_a,
                                   eta_w=rates.eta_w, eta_b=rates.eta_b, bias=model.bias, eta_c=rates.eta_c,
                                   products=products)
        nngp[i0:i1, :cols] = init.a_std**2 * e_ss + c_var
        ntk[i0:i1, :cols] = k
    if gram:
        _mirror_lower(nngp)
        _mirror_lower(ntk)
    return Kernels(nngp, ntk)


def _mirror_lower(K: np.ndarray, tile: int = 256) -> None:
    """K[j, i] <- K[i, j] for j < i, in place, tile by tile (no n x n temporary)."""
    n = K.shape[0]
    for r0 in range(0, n, tile):
        r1 = min(n, r0 + tile)
        for c0 in range(0, r1, tile):
            c1 = min(n, c0 + tile)
            lower = np.tril(np.ones((r1 - r0, c1 - c0), dtype=bool), k=r0 - c0 - 1)  # j < i
            upper = K[c0:c1, r0:r1]
            np.copyto(upper, K[r0:r1, c0:c1].T, where=lower.T)


def nngp_posterior(x_train, y_train, x_test, *, noise: float, model: ModelSpec, param: PresetBase,
                   batch: Optional[int] = None) -> Posterior:
    """Gaussian-process regression with the NNGP prior (covariance k = nngp, mean 0) and label
    noise of variance ``noise`` >= 0 at the test points:

        mean     = k(X*, X) (k(X, X) + noise I)^-1 y
        variance = k(x*, x*) - k(x*, X) (k(X, X) + noise I)^-1 k(X, x*)

    by one Cholesky factorisation of k(X, X) + noise I (noise 0: exact interpolation, which
    needs k(X, X) positive definite)."""
    x_train = _points(x_train, "x_train")
    x_test = _points(x_test, "x_test", x_train.shape[1])
    y = _targets(y_train, x_train.shape[0])
    if not (isinstance(noise, (int, float, np.floating, np.integer)) and math.isfinite(noise) and noise >= 0):
        raise UsageError(f"noise: the label noise's variance, a finite number >= 0, not {noise!r}")
    K = infinite_width_kernels(x_train, model=model, param=param, batch=batch).nngp
    K_star = infinite_width_kernels(x_test, x_train, model=model, param=param, batch=batch).nngp
    K[np.diag_indices_from(K)] += noise
    try:
        factor = cho_factor(K, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        raise UsageError("the NNGP kernel on x_train (plus noise) is not positive definite (duplicate points?): "
                         "give noise > 0") from None
    mean = K_star @ cho_solve(factor, y, check_finite=False)
    prior = np.array([infinite_width_kernels(x_test[k:k + 1], model=model, param=param).nngp[0, 0]
                      for k in range(x_test.shape[0])])
    explained = np.einsum("kj,jk->k", K_star, cho_solve(factor, K_star.T, check_finite=False))
    return Posterior(mean, prior - explained)


def _targets(y, n: int) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if y.shape != (n,) or not np.all(np.isfinite(y)):
        raise UsageError(f"y_train: give {n} finite numbers, one per training point")
    return y


def ntk_prediction(x_train, y_train, x_test, *, t: float = math.inf, ridge: float = 0.0, model: ModelSpec,
                   param: PresetBase, batch: Optional[int] = None) -> Prediction:
    """The mean over initialisations of the infinite-width network trained by gradient flow on
    the squared loss (1/n) sum_k (f(x_k) - y_k)^2 / 2, the linearized flow with the NTK in the
    preset's clock from f_0 = 0 (its mean):

        df_t(x)/dt = -(1/n) sum_k ntk(x, x_k) (f_t(x_k) - y_k) - ridge f_t(x)

    at time ``t`` (a number >= 0 or an array of times; inf: the limit, kernel regression
    ntk(X*, X) (ntk(X, X) + n ridge I)^-1 y, for ridge 0 with the pseudo-inverse), solved in
    closed form by :class:`solvers.ntk.LinearizedSquared` (what an ``ntk`` run with
    ``kernel: analytic`` and no output bias does)."""
    x_train = _points(x_train, "x_train")
    x_test = _points(x_test, "x_test", x_train.shape[1])
    y = _targets(y_train, x_train.shape[0])
    if not (isinstance(ridge, (int, float, np.floating, np.integer)) and math.isfinite(ridge) and ridge >= 0):
        raise UsageError(f"ridge: a finite number >= 0, not {ridge!r}")
    times = np.asarray(t, dtype=np.float64)
    if np.any(np.isnan(times)) or np.any(times < 0):
        raise UsageError(f"t: times >= 0 (inf for the limit), not {t!r}")
    K = infinite_width_kernels(x_train, model=model, param=param, batch=batch).ntk
    K_star = infinite_width_kernels(x_test, x_train, model=model, param=param, batch=batch).ntk
    flow = LinearizedSquared(K, y, np.zeros(len(y)), K_star, np.zeros(len(x_test)), ridge=ridge)
    if times.ndim == 0 and math.isinf(times):
        f_train, f_test = flow.limit()
        return Prediction(f_train, f_test)
    if np.any(np.isinf(times)):
        raise UsageError("t: give inf alone (the limit), not inside an array of times")
    f_train, f_test = flow.predict(times if times.ndim else float(times))
    return Prediction(f_train, f_test)
