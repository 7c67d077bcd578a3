"""Max-margin classifiers that gradient flow on a classification loss converges to, computed
independently of any simulation (docs/design.md §7.6, Chizat & Bach 2020): the references
of the study ``implicit_bias``.

**F1 (variation norm), both layers trained.** A 2-homogeneous relu network is
f(x) = integral relu(u . x) dnu(u) over unit directions u; its variation norm is the total
mass |nu| of the lightest such nu. The F1 max margin

    gamma_F1 = max { min_i y_i f(x_i) : |nu| <= 1 }

is a linear program once nu lives on a finite grid u_1, ..., u_N of the unit sphere
(:func:`f1_max_margin`):

    maximise gamma  s.t.  y_i sum_j c_j relu(u_j . x_i) >= gamma (all i),  sum_j |c_j| <= 1

(c = c+ - c-, both >= 0), solved by scipy's HiGHS. A grid only restricts nu, so the value
rises to gamma_F1 as the grid refines; ``refine`` rounds add directions around the atoms the
LP used (the optimum is a few atoms) and solve again.

The network f = (1/m) sum_j b_j relu(a_j . x) of width m is nu = (1/m) sum_j b_j |a_j|
delta_{a_j/|a_j|}, so |nu| <= (1/m) sum_j |b_j| |a_j| <= (1/m) sum_j (|a_j|^2 + b_j^2) / 2,
with equality for balanced neurons (|b_j| = |a_j|, which gradient flow approaches as the
weights grow). Chizat & Bach's normalised margin min_i y_i f(x_i) / ((1/m) |theta|^2), theta
all the weights of both layers (their code's ``margin / betas``), therefore tends to
gamma_F1 / 2: :func:`chizat_bach_f1_margin` is that half.

**F2 (kernel norm), output layer only.** With the first layer frozen at a_j drawn from a
distribution rho, f = (1/m) sum_j b_j relu(a_j . x) lies in the RKHS of
k(x, x') = E_{a ~ rho}[relu(a . x) relu(a . x')] with ||f||_H <= sqrt((1/m) sum_j b_j^2)
(equal in the m -> infinity limit along gradient flow from b = 0). The F2 max margin is the
hard-margin SVM without offset,

    gamma_F2 = 1 / min { ||f||_H : y_i f(x_i) >= 1 }  = 1 / sqrt(sum_i alpha_i)

with alpha the solution of the dual max_{alpha >= 0} sum_i alpha_i - (1/2) alpha^T Q alpha,
Q_ij = y_i y_j k(x_i, x_j) (:func:`f2_max_margin`). For a ~ N(0, I_d) the kernel is the
arc-cosine kernel of degree 1, k = |x| |x'| (sin t + (pi - t) cos t) / (2 pi), t the angle
between x and x' (Cho & Saul 2009; :func:`relu_feature_kernel`); uniform on the unit sphere
it is that divided by d.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["F1Margin", "F2Margin", "chizat_bach_f1_margin", "f1_max_margin", "f2_max_margin", "relu_feature_kernel",
           "sphere_directions"]


# ------------------------------------------------------------------------------ grids
def sphere_directions(d: int, count: int, rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """About ``count`` unit vectors of R^d spread over the sphere, [N, d]: d = 2, N = count angles
    2 pi (j + 1/2) / N (no axis on the grid); d = 3, the Fibonacci lattice of N = count points
    (z_j = 1 - (2 j + 1)/N, longitude j times the golden angle); d > 3, ``count`` directions
    uniform at random from ``rng`` (default seed 0)."""
    if d < 2 or count < 2:
        raise ValueError(f"sphere_directions needs d >= 2 and count >= 2, not d={d}, count={count}")
    j = np.arange(count) + 0.5
    if d == 2:
        angle = 2 * math.pi * j / count
        return np.column_stack([np.cos(angle), np.sin(angle)])
    if d == 3:
        z = 1 - 2 * j / count
        r = np.sqrt(np.maximum(0.0, 1 - z * z))
        longitude = math.pi * (3 - math.sqrt(5)) * np.arange(count)
        return np.column_stack([r * np.cos(longitude), r * np.sin(longitude), z])
    rng = np.random.default_rng(0) if rng is None else rng
    g = rng.standard_normal((count, d))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


# ------------------------------------------------------------------------------ F1
@dataclass(frozen=True)
class F1Margin:
    """The F1 max margin over a grid: ``margin`` (gamma), the atoms ``directions`` [k, d]
    (unit rows) and their signed ``weights`` c [k] (sum |c| = 1 at the optimum), and
    ``grid``, the number of directions of the last LP."""

    margin: float
    directions: np.ndarray
    weights: np.ndarray
    grid: int

    def predict(self, X: np.ndarray) -> np.ndarray:
        """f(x) = sum_j c_j relu(u_j . x) at the rows of X."""
        return np.maximum(np.asarray(X, dtype=np.float64) @ self.directions.T, 0.0) @ self.weights


def _f1_lp(X: np.ndarray, y: np.ndarray, U: np.ndarray) -> tuple[float, np.ndarray]:
    """The LP of the module's docstring on directions U [N, d]: (gamma, c [N])."""
    from scipy.optimize import linprog

    n, N = len(y), len(U)
    Phi = y[:, None] * np.maximum(X @ U.T, 0.0)          # [n, N]: y_i relu(u_j . x_i)
    # variables (c+ [N], c- [N], gamma); minimise -gamma
    cost = np.zeros(2 * N + 1)
    cost[-1] = -1.0
    margin_rows = np.hstack([-Phi, Phi, np.ones((n, 1))])  # gamma - y_i f(x_i) <= 0
    mass_row = np.concatenate([np.ones(2 * N), [0.0]])[None, :]
    A = np.vstack([margin_rows, mass_row])
    b = np.concatenate([np.zeros(n), [1.0]])
    bounds = [(0, None)] * (2 * N) + [(None, None)]
    solution = linprog(cost, A_ub=A, b_ub=b, bounds=bounds, method="highs")
    if solution.status != 0:
        raise RuntimeError(f"the F1 margin LP failed: {solution.message}")
    return float(solution.x[-1]), solution.x[:N] - solution.x[N:2 * N]


def f1_max_margin(X, y, directions=None, *, count: int = 2000, refine: int = 0, spread: float = 0.05,
                  atom_tolerance: float = 1e-9, rng: Optional[np.random.Generator] = None) -> F1Margin:
    """The F1 max margin of the data (X [n, d], labels y = +-1) for the relu network
    f(x) = sum_j c_j relu(u_j . x), ``|u_j| = 1``, ``sum |c_j| <= 1``, by the LP of the module's
    docstring over ``directions`` (unit rows [N, d]; default :func:`sphere_directions` (d,
    count)). Each of ``refine`` rounds adds, around every atom of the last solution (``|c_j|`` >
    atom_tolerance), 40 directions perturbed by Gaussian noise of size ``spread`` (halved
    each round, from ``rng``, default seed 0) and solves again: the margin never decreases.
    A negative margin means the data are not separable by such a network on this grid.

    Parameters
    ----------
    X : array_like, shape (n, d)
        The inputs, one per row.
    y : array_like, shape (n,)
        Their labels, +1 or -1.
    directions : array_like, shape (N, d), optional
        The grid of directions (each row normalised to unit length); default
        :func:`sphere_directions` (d, count).
    count : int
        The number of directions of the default grid.
    refine : int
        The rounds of refinement around the atoms (0: the grid's LP only).
    spread : float
        The size of the Gaussian perturbations of the first round, halved each round.
    atom_tolerance : float
        The weight ``|c_j|`` above which a direction is an atom.
    rng : numpy.random.Generator, optional
        The random directions of the default grid (d > 3) and of the refinement (default seed 0).

    Returns
    -------
    F1Margin
        The margin, its atoms and their weights, and the number of directions of the last LP.
    """
    X, y = _checked(X, y)
    rng = np.random.default_rng(0) if rng is None else rng
    U = sphere_directions(X.shape[1], count, rng) if directions is None else _unit_rows(directions, X.shape[1])
    gamma, c = _f1_lp(X, y, U)
    for round_ in range(refine):
        atoms = U[np.abs(c) > atom_tolerance]
        noise = spread * 0.5 ** round_ * rng.standard_normal((len(atoms), 40, U.shape[1]))
        U = np.vstack([U, _unit_rows((atoms[:, None, :] + noise).reshape(-1, U.shape[1]), U.shape[1])])
        gamma, c = _f1_lp(X, y, U)
    keep = np.abs(c) > atom_tolerance
    return F1Margin(gamma, U[keep], c[keep], len(U))


def chizat_bach_f1_margin(f1: F1Margin | float) -> float:
    """What Chizat & Bach's normalised margin min_i y_i f(x_i) / ((1/m) |theta|^2) of a
    network f = (1/m) sum_j b_j relu(a_j . x) trained on both layers tends to: gamma_F1 / 2
    (see the module's docstring)."""
    return 0.5 * (f1.margin if isinstance(f1, F1Margin) else float(f1))


# ------------------------------------------------------------------------------ F2
def relu_feature_kernel(X1, X2=None, *, first_layer: str = "gaussian") -> np.ndarray:
    """k(x, x') = E_a[relu(a . x) relu(a . x')] for a ~ N(0, I_d) (``gaussian``): the
    arc-cosine kernel ``|x| |x'|`` (sin t + (pi - t) cos t) / (2 pi), t the angle between x and
    x'; for a uniform on the unit sphere (``sphere``) the same divided by d (``a = g / |g|``
    with ``|g|^2``, of mean d, independent of ``g / |g|``). Computed by
    :func:`solvers.ntk.analytic_kernels` (its NNGP with w_var = 1, b_var = 0).

    Parameters
    ----------
    X1 : array_like, shape (n1, d)
        The first points, one per row.
    X2 : array_like, shape (n2, d), optional
        The second points; None: ``X1`` with itself.
    first_layer : {"gaussian", "sphere"}
        The distribution of the first layer's weights a.

    Returns
    -------
    numpy.ndarray, shape (n1, n2)
        The kernel k(x, x') between the rows of ``X1`` and those of ``X2``.
    """
    from solvers.ntk import analytic_kernels

    X1 = np.asarray(X1, dtype=np.float64)
    if first_layer not in ("gaussian", "sphere"):
        raise ValueError(f"first_layer is 'gaussian' or 'sphere', not {first_layer!r}")
    K, _ = analytic_kernels(X1, None if X2 is None else np.asarray(X2, dtype=np.float64), act="relu", w_var=1.0,
                            b_var=0.0, a_var=1.0, bias=False)
    return K / X1.shape[1] if first_layer == "sphere" else K


@dataclass(frozen=True)
class F2Margin:
    """The hard-margin SVM of a kernel: ``margin`` = 1 / ||f||_H, the dual ``alpha`` [n]
    (f(x) = sum_i alpha_i y_i k(x, x_i) has y_i f(x_i) >= 1, equal on the support vectors)
    and ``support``, the indices with alpha_i > 0."""

    margin: float
    alpha: np.ndarray
    support: np.ndarray


def f2_max_margin(K, y, *, tolerance: float = 1e-9) -> F2Margin:
    """The hard-margin SVM without offset on the Gram matrix K [n, n] (labels y = +-1).
    Its margin is the distance from 0 to the convex hull of the points y_i phi(x_i) in the
    kernel's space,

        gamma_F2^2 = min { lambda^T Q lambda : lambda >= 0, sum lambda = 1 },   Q = diag(y) K diag(y),

    and the SVM dual is alpha = lambda / gamma^2. Solved exactly by scipy's active-set NNLS
    (Lawson & Hanson) on min ``|A lambda|^2`` + M^2 (sum lambda - 1)^2, A^T A = Q (from Q's
    eigenvalues, so a singular K is fine), whose minimiser is a multiple of the simplex's
    (the objective is s^2 g + M^2 (s - 1)^2 along each ray): normalised, it is exact for
    any M > 0. Raises ValueError when the data are not separable in the kernel's space
    (gamma below ``tolerance`` times the largest ``|phi(x_i)|``) or K is not a kernel.

    Parameters
    ----------
    K : array_like, shape (n, n)
        The kernel's Gram matrix on the data.
    y : array_like, shape (n,)
        The labels, +1 or -1.
    tolerance : float
        The smallest margin, relative to the largest ``|phi(x_i)|``, taken as separable.

    Returns
    -------
    F2Margin
        The margin 1 / ``||f||_H``, the dual ``alpha`` and the support vectors' indices.
    """
    from scipy.optimize import nnls

    K = np.asarray(K, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] != y.shape[0]:
        raise ValueError(f"K must be [n, n] and y [n]; got K {K.shape}, y {y.shape}")
    Q = y[:, None] * K * y[None, :]
    values, vectors = np.linalg.eigh(0.5 * (Q + Q.T))
    top = max(values[-1], 0.0)
    if top == 0 or values[0] < -1e-8 * top:
        raise ValueError(f"K is not a kernel's Gram matrix (eigenvalues from {values[0]:.3g} to {values[-1]:.3g})")
    keep = values > len(y) * np.finfo(float).eps * top
    A = np.sqrt(values[keep])[:, None] * vectors[:, keep].T
    M = math.sqrt(top / len(y))
    lam, _ = nnls(np.vstack([A, np.full((1, len(y)), M)]), np.concatenate([np.zeros(A.shape[0]), [M]]),
                  maxiter=50 * len(y))
    lam = lam / lam.sum()
    gamma2 = float(lam @ Q @ lam)
    if not gamma2 > (tolerance ** 2) * float(np.max(np.diag(Q))):
        raise ValueError("the data are not separable in the kernel's space: 0 is in the convex hull of the "
                         "points y_i phi(x_i), so no margin is positive")
    alpha = lam / gamma2
    return F2Margin(math.sqrt(gamma2), alpha, np.flatnonzero(alpha > 0))


# ------------------------------------------------------------------------------ helpers
def _checked(X, y) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError(f"X must be [n, d] and y [n]; got X {X.shape}, y {y.shape}")
    if not np.all(np.abs(y) == 1):
        raise ValueError("labels y must be +1 or -1")
    return X, y


def _unit_rows(U, d: int) -> np.ndarray:
    U = np.asarray(U, dtype=np.float64)
    if U.ndim != 2 or U.shape[1] != d:
        raise ValueError(f"directions must be [N, {d}], got {U.shape}")
    norms = np.linalg.norm(U, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("a direction is the zero vector")
    return U / norms
