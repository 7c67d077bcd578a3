"""The spectrum of a dot-product kernel on the unit sphere, and a target's coefficients
(docs/design.md §1.10).

On S^(d-1) with the uniform probability measure, a kernel k(x . x') has the spherical
harmonics of degree l as eigenfunctions (Funk-Hecke), one eigenvalue per degree:

    k(x . x') = sum_l lambda_l N(d, l) P_l(x . x')
    lambda_l  = E_t[ k(t) P_l(t) ],    t = x . e, density c_d (1 - t^2)^((d-3)/2) on [-1, 1]
    N(d, 0)   = 1,  N(d, l) = (2l + d - 2) / l * C(l + d - 3, l - 1)   (harmonics of degree l)

with P_l the Legendre (Gegenbauer) polynomial of dimension d normalised to P_l(1) = 1,
P_{l+1}(t) = ((2l + d - 2) t P_l(t) - l P_{l-1}(t)) / (l + d - 2) (d = 2: Chebyshev,
P_l(cos theta) = cos(l theta); d = 3: Legendre), and c_d = Gamma(d/2) / (sqrt(pi) Gamma((d-1)/2)).
The sum over the N(d, l) orthonormal harmonics of degree l is N(d, l) P_l(x . x') (the
addition theorem), so lambda_l is the eigenvalue of the integral operator
(T g)(x) = E_x'[k(x . x') g(x')] on each of them, and sum_l N(d, l) lambda_l = k(1).

The expectation over t is taken as an integral over the angle theta = arccos t,
E_t[g] = c_d int_0^pi g(cos theta) sin^(d-2) theta d theta, by composite Gauss-Legendre
(48 nodes a panel) on [0, pi/2] and [pi/2, pi]: arc-cosine kernels (the relu NNGP and NTK) are analytic in theta on each
half though not in t at t = +-1 (sqrt(1 - t) terms, where Gauss-Jacobi in t converges only
algebraically), and relu(|w| t) has its kink at t = 0, theta = pi/2. The panels per half start
at ``ceil((L + d) / 16)`` and double until two successive rules agree to ``tol`` times
max |coefficient| (or stop converging at the rounding level, below 1e-11 of it); twice that
difference is the stated accuracy (``Spectrum.error``), an absolute error per degree (at the
rounding level the difference alone is about the error itself: e^t, d = 2, 3.0e-15 against 3.0e-15).

A target f on the sphere has the squared norm ||f||^2 = E_x f(x)^2 = sum_l c_l with c_l the
squared norm of its projection onto degree l:

- a teacher network f(x) = sum_j a_j sigma(w_j . x): by Funk-Hecke the degree-l part of
  sigma(w . x) is mu_l N(d, l) P_l(w_hat . x), mu_l = E_t[sigma(|w| t) P_l(t)], and since
  E_x[P_l(u . x) P_l(v . x)] = P_l(u . v) / N(d, l),
      c_l = N(d, l) sum_jk a_j a_k mu_l(j) mu_l(k) P_l(w_hat_j . w_hat_k)      (exact);
- any function given as samples (x_i, f(x_i)): the U-statistic
      c_l ~ 1/(n (n-1)) sum_{i != j} f_i f_j N(d, l) P_l(x_i . x_j),
  unbiased, with the standard error of a degree-2 U-statistic, 2 sd(g_i) / sqrt(n),
  g_i = 1/(n-1) sum_{j != i} f_i f_j N(d, l) P_l(x_i . x_j) (Hoeffding's projection).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np
from scipy.special import gammaln, roots_legendre

from ..model.sphere import check_degree as _check
from ..model.sphere import degeneracy, legendre

__all__ = ["Spectrum", "degeneracy", "funk_hecke", "kernel_spectrum", "legendre", "sample_coefficients",
           "sphere_quadrature", "teacher_coefficients"]

MAX_PANELS = 1 << 9
"""The most panels per half of [0, pi] :func:`funk_hecke` tries."""


NODES = 48
"""Gauss-Legendre nodes per panel (scipy's rules of order 20 to 90 integrate e^t to 2e-15, those
of order 180 and 360 to 3e-14 and 5e-14: panels keep the order low)."""


def sphere_quadrature(d: int, panels: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes t and weights v with sum_i v_i g(t_i) ~ E_t[g(t)], t = x . e for x uniform on
    S^(d-1): composite Gauss-Legendre in theta, ``panels`` equal panels on each of [0, pi/2]
    and [pi/2, pi] with :data:`NODES` nodes each, weights c_d sin^(d-2)(theta) (see the
    module's docstring)."""
    d, _ = _check(d, 0)
    u, w = roots_legendre(NODES)
    width = (math.pi / 2) / panels
    starts = width * np.arange(2 * panels)
    theta = (starts[:, None] + (u + 1)[None, :] * width / 2).ravel()
    weights = np.tile(w * width / 2, 2 * panels)
    c_d = math.exp(gammaln(d / 2) - gammaln((d - 1) / 2)) / math.sqrt(math.pi)
    return np.cos(theta), c_d * weights * np.sin(theta) ** (d - 2)


def _project(g, d, L, panels) -> np.ndarray:
    t, v = sphere_quadrature(d, panels)
    values = np.asarray(g(t), dtype=np.float64)
    if values.shape != t.shape:
        raise ValueError(f"the function must map an array of cosines to an array of the same shape, got "
                         f"{values.shape} from {t.shape}")
    return legendre(d, L, t) @ (v * values)


def funk_hecke(g: Callable, d: int, L: int, tol: float = 1e-13) -> tuple[np.ndarray, float]:
    """``(mu, error)``: mu_l = E_t[g(t) P_l(t)] for l = 0..L (the Funk-Hecke coefficients of
    g(x . e) on S^(d-1)), ``g`` a vectorised function of the cosine t in [-1, 1]. The panels
    per half double from ceil((L + d) / 16) until two rules agree to ``tol`` max |mu|, or
    until they stop converging (the difference no longer falls 4-fold) at a level below
    1e-11 max |mu| (the rounding of the sums); ``error``, the stated accuracy (absolute), is
    twice the last difference, and mu the coarser rule's. A ValueError when neither happens by
    :data:`MAX_PANELS` panels (g not piecewise smooth in theta away from theta = pi/2)."""
    d, L = _check(d, L)
    panels = max(1, math.ceil((L + d) / 16))
    mu, previous = _project(g, d, L, panels), math.inf
    while True:
        finer = _project(g, d, L, 2 * panels)
        if not np.all(np.isfinite(finer)):
            raise ValueError("the function is not finite on [-1, 1]")
        error = float(np.max(np.abs(finer - mu)))
        scale = max(float(np.max(np.abs(finer))), np.finfo(float).tiny)
        if error <= tol * scale or (error > previous / 4 and error <= 1e-11 * scale):
            return mu, 2 * error
        panels *= 2
        if 2 * panels > MAX_PANELS:
            raise ValueError(f"the Funk-Hecke quadrature did not converge to {tol:g} with {panels} panels of "
                             f"{NODES} nodes per half (reached {error:.3g}): is the function smooth in "
                             f"theta = arccos t on [0, pi/2] and [pi/2, pi]?")
        mu, previous = finer, error


@dataclass(frozen=True)
class Spectrum:
    """The spectrum of a dot-product kernel on S^(d-1) (:func:`kernel_spectrum`): degree l =
    0..L, its eigenvalue ``eigenvalues[l]`` = lambda_l (of the operator on the uniform
    probability measure) with multiplicity ``degeneracies[l]`` = N(d, l); ``trace`` = k(1) =
    sum over all l of N(d, l) lambda_l; ``error``: the quadrature's stated absolute error
    per eigenvalue."""

    d: int
    eigenvalues: np.ndarray
    degeneracies: np.ndarray
    trace: float
    error: float

    @property
    def degrees(self) -> np.ndarray:
        return np.arange(len(self.eigenvalues))

    def nonnegative(self, factor: float = 10.0) -> np.ndarray:
        """The eigenvalues with those within ``factor`` times the quadrature's error of 0 (or
        below it) set to 0: the exact zeros of a kernel (the relu NTK's odd degrees >= 3) come
        out of the quadrature as +-1e-17, which :func:`learning_curve` must not take as modes."""
        return np.where(self.eigenvalues <= factor * self.error, 0.0, self.eigenvalues)

    @property
    def tail(self) -> float:
        """k(1) - sum_{l <= L} N(d, l) lambda_l: the trace of the degrees above L (>= 0 for a
        positive semi-definite kernel, up to the quadrature's error)."""
        return float(self.trace - np.sum(self.degeneracies * self.eigenvalues))


def kernel_spectrum(k: Callable, d: int, L: int, tol: float = 1e-13) -> Spectrum:
    """The Funk-Hecke eigenvalues lambda_l = E_t[k(t) P_l(t)], l = 0..L, of the dot-product
    kernel k(x . x') on S^(d-1) (``k`` a vectorised function of the cosine), with their
    degeneracies N(d, l) (see the module's docstring).

    Parameters
    ----------
    k : callable
        The kernel as a vectorised function of the cosine t in [-1, 1].
    d : int
        The dimension of the space of the sphere S^(d-1) (>= 2).
    L : int
        The highest degree (>= 0).
    tol : float
        The quadrature's relative tolerance, as in :func:`funk_hecke`.

    Returns
    -------
    Spectrum
        The eigenvalues lambda_l and degeneracies N(d, l) for l = 0..L, the trace k(1) and the
        quadrature's stated error.
    """
    d, L = _check(d, L)
    eigenvalues, error = funk_hecke(k, d, L, tol)
    trace = float(np.asarray(k(np.array([1.0])), dtype=np.float64)[0])
    return Spectrum(d, eigenvalues, degeneracy(d, np.arange(L + 1)), trace, error)


def teacher_coefficients(a, W, activation: Union[str, Callable], L: int, tol: float = 1e-13) -> np.ndarray:
    """c_l, l = 0..L: the squared norm (on the uniform probability measure of S^(d-1),
    d = W.shape[1]) of the degree-l part of f(x) = sum_j a_j sigma(w_j . x), exactly by
    Funk-Hecke: c_l = N(d, l) sum_jk a_j a_k mu_l(j) mu_l(k) P_l(w_hat_j . w_hat_k),
    mu_l(j) = E_t[sigma(``|w_j|`` t) P_l(t)]. ``activation``: a name of the catalog
    (:mod:`solvers.catalog`) or a vectorised function of z.

    Parameters
    ----------
    a : array_like, shape (k,)
        The teacher's output weights a_j.
    W : array_like, shape (k, d)
        Its neurons' input weights w_j, one per row (none zero).
    activation : str or callable
        sigma: a name of the catalog or a vectorised function of z.
    L : int
        The highest degree (>= 0).
    tol : float
        The quadrature's relative tolerance, as in :func:`funk_hecke`.

    Returns
    -------
    numpy.ndarray, shape (L + 1,)
        c_l for l = 0..L.
    """
    a = np.atleast_1d(np.asarray(a, dtype=np.float64))
    W = np.atleast_2d(np.asarray(W, dtype=np.float64))
    if W.shape[0] != a.shape[0]:
        raise ValueError(f"a has {a.shape[0]} neurons and W {W.shape[0]} rows")
    d, L = _check(W.shape[1], L)
    norms = np.linalg.norm(W, axis=1)
    if np.any(norms == 0):
        raise ValueError("a teacher neuron with w = 0 has no direction")
    sigma = _activation(activation)
    mu = np.stack([funk_hecke(lambda t, r=r: sigma(r * t), d, L, tol)[0] for r in norms], axis=1)  # (L+1, k)
    U = W / norms[:, None]
    P = legendre(d, L, np.clip(U @ U.T, -1.0, 1.0))  # (L+1, k, k)
    b = mu * a  # a_j mu_l(j)
    return degeneracy(d, np.arange(L + 1)) * np.einsum("lj,ljk,lk->l", b, P, b)


def _activation(activation) -> Callable:
    """sigma as a vectorised NumPy function: a callable as it is, a name through the
    solvers' own forward pass (one neuron of weight 1 on the inputs z)."""
    if callable(activation):
        return activation
    from solvers.catalog import activation_code
    from solvers.particles import predict

    code = activation_code(activation)
    one, unit = np.ones(1), np.ones((1, 1))
    return lambda z: predict(one, unit, None, np.ascontiguousarray(np.reshape(z, (-1, 1))), 1.0, code).reshape(
        np.shape(z))


def sample_coefficients(X, f, L: int, block: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """``(c, se)``: unbiased estimates of c_l, l = 0..L, the squared norm of the degree-l part
    of a function from its values ``f`` (n,) at ``X`` (n, d) drawn uniformly on the unit
    sphere, by the U-statistic of the module's docstring, and their standard errors
    2 sd(g_i) / sqrt(n). O(n^2 L) work in blocks of ``block`` rows.

    Parameters
    ----------
    X : array_like, shape (n, d)
        The samples, on the unit sphere, one per row.
    f : array_like, shape (n,)
        The function's values at them (n >= 3).
    L : int
        The highest degree (>= 0).
    block : int
        The rows of ``X`` per block.

    Returns
    -------
    c : numpy.ndarray, shape (L + 1,)
        The estimates of c_l for l = 0..L.
    se : numpy.ndarray, shape (L + 1,)
        Their standard errors.
    """
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    f = np.asarray(f, dtype=np.float64)
    n = X.shape[0]
    d, L = _check(X.shape[1], L)
    if f.shape != (n,) or n < 3:
        raise ValueError(f"f must be one value per row of X (n >= 3), got {f.shape} for n = {n}")
    if not np.allclose(np.einsum("ij,ij->i", X, X), 1.0, atol=1e-8):
        raise ValueError("the samples must lie on the unit sphere |x| = 1")
    N = degeneracy(d, np.arange(L + 1))
    g = np.empty((L + 1, n))
    for start in range(0, n, block):
        rows = slice(start, min(start + block, n))
        G = np.clip(X[rows] @ X.T, -1.0, 1.0)
        own = (np.arange(G.shape[0]), np.arange(start, rows.stop))  # i = j, left out
        previous, current = None, np.ones_like(G)  # P_{l-1}, P_l
        for j in range(L + 1):  # degree j
            if j == 1:
                previous, current = current, G
            elif j > 1:  # the recurrence of :func:`legendre`
                previous, current = current, ((2 * j + d - 4) * G * current - (j - 1) * previous) / (j + d - 3)
            off = current.copy()
            off[own] = 0.0
            g[j, rows] = f[rows] * (off @ f) / (n - 1)
    g *= N[:, None]
    return g.mean(axis=1), 2 * g.std(axis=1, ddof=1) / math.sqrt(n)
