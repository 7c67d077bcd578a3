"""Curvature of the training loss of a two-layer net (docs/design.md §1.9): the top
eigenvalues of the learning-rate weighted NTK over n and of the preconditioned Hessian.

Network f(x) = s sum_i a_i sigma(z_i) (+ c_out), z_i = w_i . x + b_i; parameters
theta = [a (m), W (m d), b (m, with a bias), c_out (1, with an output bias)], learning rates
P = diag(eta) (eta_a on a, eta_w on W, eta_b on b (default eta_w), eta_c on c_out); risk
R = c (1/n) sum_k loss(f(x_k), y_k), c = loss_scale; J = d f(X) / d theta (n x p).

    ntk_eigenvalue_max     = lambda_max(c J P J^T / n)          (= K(X, X) / n, §1.6)
    hessian_eigenvalue_max = lambda_max(P^1/2 H P^1/2),  H = d^2 R / d theta^2
    H u = (c/n) [ J^T (l'' * J u) + sum_k l'_k (d^2 f(x_k) / d theta^2) u ]

The second derivatives of f are those of one particle at a time, with x~ = (x, 1_bias):
d^2 f / da_i dw~_i = s sigma'(z_i) x~ and d^2 f / dw~_i^2 = s a_i sigma''(z_i) x~ x~^T
(d^2 f / da_i^2 = 0; c_out enters linearly). So, per particle,

    (H-term u)_{a_i} = s sum_k g_k sigma'(z_ik) (u_w~_i . x~_k)
    (H-term u)_{w~_i} = s sum_k g_k [sigma'(z_ik) u_a_i + a_i sigma''(z_ik) (u_w~_i . x~_k)] x~_k

with g = l'. Every product is matrix-free, O(m n d), with no n x n or m x n array:
J u by one compiled loop over the points, J^T v by the fused backward pass of the gradient
(``solvers.particles.pullback``), and J^T v with the second-order term in one compiled loop
over the particles (:func:`_make_products`: one pair of kernels per activation). The top eigenvalue is exact
(``numpy.linalg.eigvalsh`` of the dense matrix) when the operator's size is at most
:data:`DENSE_SIZE`, else from Lanczos (``scipy.sparse.linalg.eigsh``, relative tolerance
:data:`LANCZOS_TOL`) started from a given vector, so the result is reproducible.
Everything is float64.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

import numba
import numpy as np
from scipy.sparse.linalg import LinearOperator, eigsh

from ._jit import jit_parallel
from .activations import d2sigma, sigma_pair
from .losses import loss_derivative, loss_second_derivative
from .particles import packed_points, pullback

DENSE_SIZE = 64
"""Operators of at most this size are formed densely (one product per column) and diagonalised
exactly; larger ones go to Lanczos, which takes about 20-40 products (scripts/bench.py
--parts curvature), so the dense path is the cheaper one only about this small."""

LANCZOS_TOL = 1e-10
"""Relative accuracy asked of Lanczos' top eigenvalues (eigsh's ``tol``)."""


def _make_products(code):
    """The (J u, J^T v + second-order term) kernels for one activation ``code``, a
    compile-time constant there (its branches fold away, as :func:`sigma_pair` intends)."""

    @jit_parallel
    def jvp(a, W, b, X, s, ua, uW, ub, out):
        """out_k = s sum_i [ua_i sigma(z_ik) + a_i sigma'(z_ik) (uW_i . x_k + ub_i)]: J u
        without the output bias (b and ub are zeros for a model without a bias)."""
        m, d = W.shape
        for k in numba.prange(X.shape[0]):
            total = 0.0
            for i in range(m):
                z = b[i]
                du = ub[i]
                for j in range(d):
                    z += W[i, j] * X[k, j]
                    du += uW[i, j] * X[k, j]
                sg, ds = sigma_pair(code, z, 1.0)
                total += ua[i] * sg + a[i] * ds * du
            out[k] = s * total

    @jit_parallel
    def vjp(a, W, b, X, s, v, g, ua, uW, ub, out_a, out_W, out_b):
        """J^T v plus the second-order term sum_k g_k (d^2 f(x_k)) u, particle by particle
        (module docstring)."""
        m, d = W.shape
        n = X.shape[0]
        for i in numba.prange(m):
            acc_a = 0.0
            acc_b = 0.0
            for j in range(d):
                out_W[i, j] = 0.0
            for k in range(n):
                z = b[i]
                du = ub[i]
                for j in range(d):
                    z += W[i, j] * X[k, j]
                    du += uW[i, j] * X[k, j]
                sg, ds = sigma_pair(code, z, 1.0)
                acc_a += v[k] * sg + g[k] * ds * du
                coef = v[k] * a[i] * ds + g[k] * (ds * ua[i] + a[i] * d2sigma(code, z) * du)
                acc_b += coef
                for j in range(d):
                    out_W[i, j] += coef * X[k, j]
            out_a[i] = s * acc_a
            out_b[i] = s * acc_b
            for j in range(d):
                out_W[i, j] *= s

    return jvp, vjp


_products = functools.cache(_make_products)
"""The (jvp, vjp) kernels of an activation code (built on first use)."""


@jit_parallel
def _loss_derivatives(code, f, y, first, second):
    for k in numba.prange(f.shape[0]):
        first[k] = loss_derivative(code, f[k], y[k])
        second[k] = loss_second_derivative(code, f[k], y[k])


@dataclass
class TwoLayerNet:
    """A two-layer net's parameters (float64) with what its Jacobian products need:
    ``c_out`` None for a model without an output bias, ``b`` None without a bias."""

    a: np.ndarray
    W: np.ndarray
    b: Optional[np.ndarray]
    X: np.ndarray
    s: float
    act: int
    c_out: Optional[float] = None

    def __post_init__(self):
        self.a = np.ascontiguousarray(self.a, dtype=np.float64)
        self.W = np.ascontiguousarray(self.W, dtype=np.float64)
        self.X = np.ascontiguousarray(self.X, dtype=np.float64)
        self.bias = self.b is not None
        self.b = np.zeros(len(self.a)) if self.b is None else np.ascontiguousarray(self.b, dtype=np.float64)
        self._Xp = packed_points(self.X)
        m, d = self.W.shape
        self.size = m * (d + 1 + int(self.bias)) + int(self.c_out is not None)

    def split(self, u):
        """(u_a, u_W, u_b, u_c) of a vector in the parameter layout (zeros where absent)."""
        m, d = self.W.shape
        ua, uW = u[:m], u[m:m + m * d].reshape(m, d)
        ub = u[m + m * d:m + m * d + m] if self.bias else np.zeros(m)
        uc = u[-1] if self.c_out is not None else 0.0
        return np.ascontiguousarray(ua), np.ascontiguousarray(uW), np.ascontiguousarray(ub), uc

    def rates(self, eta_a, eta_w, eta_c=None, eta_b=None) -> np.ndarray:
        """diag(P) in the parameter layout (the biases at eta_b, default eta_w)."""
        m, d = self.W.shape
        parts = [np.full(m, eta_a), np.full(m * d, eta_w)]
        if self.bias:
            parts.append(np.full(m, eta_w if eta_b is None else eta_b))
        if self.c_out is not None:
            parts.append(np.array([eta_c]))
        return np.concatenate(parts)

    def f(self) -> np.ndarray:
        """f(X) (the forward pass is J u with u = (a, 0, 0) as the a-part: f is linear in a)."""
        out = np.empty(len(self.X))
        zeros = np.zeros_like(self.W)
        _products(self.act)[0](self.a, self.W, self.b, self.X, self.s, self.a, zeros, np.zeros(len(self.a)), out)
        return out if self.c_out is None else out + self.c_out

    def jvp(self, u) -> np.ndarray:
        """J u (n)."""
        ua, uW, ub, uc = self.split(np.asarray(u, dtype=np.float64))
        out = np.empty(len(self.X))
        _products(self.act)[0](self.a, self.W, self.b, self.X, self.s, ua, uW, ub, out)
        return out + uc

    def vjp(self, v, g=None, u=None) -> np.ndarray:
        """J^T v (p), plus sum_k g_k (d^2 f(x_k) / d theta^2) u when g and u are given."""
        m, d = self.W.shape
        v = np.ascontiguousarray(v, dtype=np.float64)
        if g is None:  # the fused backward pass of the gradient (solvers.particles)
            out_a, out_W, out_b = pullback(self.a, self.W, self.b, self.X, v, self.s, self.act, self._Xp)
        else:
            ua, uW, ub, _ = self.split(np.asarray(u, dtype=np.float64))
            g = np.ascontiguousarray(g, dtype=np.float64)
            out_a, out_W, out_b = np.empty(m), np.empty((m, d)), np.empty(m)
            _products(self.act)[1](self.a, self.W, self.b, self.X, self.s, v, g, ua, uW, ub, out_a, out_W, out_b)
        parts = [out_a, out_W.ravel()]
        if self.bias:
            parts.append(out_b)
        if self.c_out is not None:
            parts.append(np.array([v.sum()]))
        return np.concatenate(parts)


def loss_derivatives(loss: int, f, y):
    """(l'(f_k, y_k), l''(f_k, y_k)) over the points."""
    f, y = np.ascontiguousarray(f, dtype=np.float64), np.ascontiguousarray(y, dtype=np.float64)
    first, second = np.empty(len(f)), np.empty(len(f))
    _loss_derivatives(loss, f, y, first, second)
    return first, second


def ntk_operator(net: TwoLayerNet, rates: np.ndarray, loss_scale: float) -> LinearOperator:
    """v -> c J P J^T v / n on the n training points (symmetric, positive semi-definite)."""
    n = len(net.X)
    weight = loss_scale / n

    def matvec(v):
        return weight * net.jvp(rates * net.vjp(np.ravel(v)))

    return LinearOperator((n, n), matvec=matvec, dtype=np.float64)


def hessian_operator(net: TwoLayerNet, rates: np.ndarray, loss_scale: float, first, second,
                     residual: bool = True) -> LinearOperator:
    """v -> P^1/2 H P^1/2 v with H u = (c/n)[J^T (l'' J u) + sum_k l'_k d^2 f(x_k) u] (module
    docstring); ``residual`` False drops the second-order term (the Gauss-Newton matrix:
    the Hessian of the tangent model, whose f is linear in theta)."""
    n, p = len(net.X), net.size
    weight, root = loss_scale / n, np.sqrt(rates)
    first = np.asarray(first, dtype=np.float64)

    def matvec(v):
        u = root * np.ravel(v)
        if residual:
            out = net.vjp(second * net.jvp(u), first, u)
        else:
            out = net.vjp(second * net.jvp(u))
        return weight * root * out

    return LinearOperator((p, p), matvec=matvec, dtype=np.float64)


def dense(op: LinearOperator) -> np.ndarray:
    """The operator's matrix, one column per product (symmetrised against rounding)."""
    size = op.shape[0]
    M = np.empty((size, size))
    for j in range(size):
        e = np.zeros(size)
        e[j] = 1.0
        M[:, j] = op.matvec(e)
    return 0.5 * (M + M.T)


def top_eigenvalues(op: LinearOperator, k: int, v0: np.ndarray, dense_size: int = DENSE_SIZE) -> np.ndarray:
    """The k largest (algebraic) eigenvalues of a symmetric operator, largest first: exact
    from its dense matrix when its size is at most ``dense_size`` (or k is not below it),
    else Lanczos from the start vector ``v0`` to relative accuracy LANCZOS_TOL."""
    size = op.shape[0]
    if size <= dense_size or k >= size - 1:
        values = np.linalg.eigvalsh(dense(op))[::-1][:k]
        return np.concatenate([values, np.full(k - len(values), np.nan)])
    values = eigsh(op, k=k, which="LA", v0=v0[:size], tol=LANCZOS_TOL, return_eigenvectors=False)
    return np.sort(values)[::-1]
