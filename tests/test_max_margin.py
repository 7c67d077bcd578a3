"""The max-margin references (meanfield/analysis/max_margin.py) against cases whose margin is
known in closed form, an independent solver (SLSQP), Monte Carlo, and each other."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize

from meanfield.analysis.max_margin import (
    chizat_bach_f1_margin,
    f1_max_margin,
    f2_max_margin,
    relu_feature_kernel,
    sphere_directions,
)

# Soudry et al.'s picture: two classes mirrored through 0, the closest points +-(1, 1); every
# other point has x1 + x2 > 2, so the max-margin direction is (1, 1)/sqrt 2 and the margin sqrt 2.
POSITIVE = np.array([[1.0, 1.0], [2.0, 1.5], [1.5, 2.0], [3.0, 0.5], [0.5, 3.0], [2.5, 2.5]])
SOUDRY_X = np.vstack([POSITIVE, -POSITIVE])
SOUDRY_Y = np.r_[np.ones(len(POSITIVE)), -np.ones(len(POSITIVE))]

DIAGONAL = np.array([1.0, 1.0]) / math.sqrt(2)
ANTI = np.array([1.0, -1.0]) / math.sqrt(2)
XOR_X = np.array([DIAGONAL, -DIAGONAL, ANTI, -ANTI])
XOR_Y = np.array([1.0, 1.0, -1.0, -1.0])


def clusters(n=60, seed=1):
    """Points (1, z), z uniform in [-1/2, 1/2]^2, labelled by a wavy rule: separable, not linearly."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.uniform(-0.5, 0.5, (n, 2))])
    return X, np.where(np.sin(6 * X[:, 1]) * np.cos(5 * X[:, 2]) >= 0, 1.0, -1.0)


def slsqp_svm(K, y):
    """The SVM dual max sum alpha - alpha^T Q alpha / 2, alpha >= 0, by SLSQP: 1/sqrt(alpha^T Q alpha)."""
    Q = y[:, None] * K * y[None, :]
    found = minimize(lambda a: (0.5 * a @ Q @ a - a.sum(), Q @ a - 1), np.zeros(len(y)), jac=True, method="SLSQP",
                     bounds=[(0, None)] * len(y), options={"maxiter": 3000, "ftol": 1e-15})
    return 1 / math.sqrt(found.x @ Q @ found.x)


def test_f2_linear_kernel_on_soudrys_set_is_sqrt2_along_the_diagonal():
    result = f2_max_margin(SOUDRY_X @ SOUDRY_X.T, SOUDRY_Y)
    assert result.margin == pytest.approx(math.sqrt(2), rel=1e-12)
    w = (result.alpha * SOUDRY_Y) @ SOUDRY_X
    assert w / np.linalg.norm(w) == pytest.approx(DIAGONAL, abs=1e-12)
    # the primal min |w|^2 s.t. y_i w.x_i >= 1, by SLSQP: |w| = 1 / margin
    primal = minimize(lambda v: v @ v, np.ones(2), jac=lambda v: 2 * v, method="SLSQP",
                      constraints={"type": "ineq", "fun": lambda v: SOUDRY_Y * (SOUDRY_X @ v) - 1})
    assert 1 / np.linalg.norm(primal.x) == pytest.approx(math.sqrt(2), rel=1e-6)


def test_f2_agrees_with_slsqp_on_the_relu_kernel():
    X, y = clusters(40)
    K = relu_feature_kernel(X)
    result = f2_max_margin(K, y)
    assert result.margin == pytest.approx(slsqp_svm(K, y), rel=1e-5)
    Q = y[:, None] * K * y[None, :]
    assert np.min(Q @ result.alpha) == pytest.approx(1, abs=1e-8)  # KKT: margins >= 1, = 1 on the support
    assert np.abs(Q @ result.alpha - 1)[result.support].max() < 1e-8


def test_f2_refuses_data_that_no_kernel_separates():
    X = np.array([[1.0, 0.5], [1.0, 0.5], [1.0, -0.3]])
    with pytest.raises(ValueError, match="not separable"):
        f2_max_margin(relu_feature_kernel(X), np.array([1.0, -1.0, 1.0]))


@pytest.mark.parametrize("first_layer", ["gaussian", "sphere"])
def test_relu_feature_kernel_is_the_monte_carlo_mean(first_layer):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((5, 4))
    A = rng.standard_normal((400_000, 4))
    if first_layer == "sphere":
        A /= np.linalg.norm(A, axis=1, keepdims=True)
    F = np.maximum(X @ A.T, 0)
    mc = F @ F.T / A.shape[0]
    stderr = np.sqrt(((F[:, None, :] * F[None, :, :]) ** 2).mean(-1) / A.shape[0])
    assert np.all(np.abs(relu_feature_kernel(X, first_layer=first_layer) - mc) < 5 * stderr)


def test_f1_two_opposite_points_need_two_neurons_and_half_the_mass_each():
    X = np.array([[1.0, 0.0], [-1.0, 0.0]])
    result = f1_max_margin(X, np.ones(2), directions=np.array([[1.0, 0], [-1, 0], [0, 1], [0.6, 0.8]]))
    assert result.margin == pytest.approx(0.5, abs=1e-12)
    assert sorted(result.weights) == pytest.approx([0.5, 0.5], abs=1e-12)


def test_f1_xor_is_a_quarter_with_the_four_diagonal_neurons():
    """Dual certificate: lambda = 1/4 on each point gives max_u |sum lambda_i y_i relu(u.x_i)| =
    max_u ||u.d| - |u.a|| / 4 = 1/4; the primal 1/4 is the four diagonals with weights +-1/4."""
    result = f1_max_margin(XOR_X, XOR_Y, directions=np.vstack([XOR_X, sphere_directions(2, 37)]))
    assert result.margin == pytest.approx(0.25, abs=1e-12)
    assert np.sort(np.abs(result.weights)) == pytest.approx([0.25] * 4, abs=1e-9)
    atoms = np.round(result.directions * math.sqrt(2)).astype(int)
    assert {tuple(row) for row in atoms} == {(1, 1), (-1, -1), (1, -1), (-1, 1)}


def test_f1_lp_value_rises_to_the_known_margin_as_the_grid_refines():
    margins = [f1_max_margin(XOR_X, XOR_Y, count=count).margin for count in (10, 30, 90, 270, 810)]  # no diagonal
    gaps = 0.25 - np.array(margins)
    assert np.all(gaps >= -1e-12) and gaps[-1] < 1e-3 and np.all(np.diff(gaps[1:]) < 0), gaps
    refined = f1_max_margin(XOR_X, XOR_Y, count=30, refine=6)
    assert 0 <= 0.25 - refined.margin < 1e-4


def test_f1_solution_is_a_network_with_that_margin_and_unit_mass():
    X, y = clusters(50)
    result = f1_max_margin(X, y, count=400)
    assert np.abs(result.weights).sum() == pytest.approx(1, abs=1e-9)
    assert np.linalg.norm(result.directions, axis=1) == pytest.approx(np.ones(len(result.weights)))
    direct = np.maximum(X @ result.directions.T, 0) @ result.weights  # plain NumPy
    assert np.min(y * direct) == pytest.approx(result.margin, rel=1e-7)
    assert chizat_bach_f1_margin(result) == 0.5 * result.margin


def test_f1_margin_bounds_the_sphere_kernels_f2_margin():
    """f = E_u[b(u) relu(u.x)] (u uniform on the sphere) has |nu| = E|b| <= sqrt(E b^2) = ||f||_H,
    so gamma_F1 >= gamma_F2 of the sphere kernel; the gap is the benefit of the variation norm."""
    X, y = clusters(50)
    f1 = f1_max_margin(X, y, count=1500, refine=2).margin
    f2 = f2_max_margin(relu_feature_kernel(X, first_layer="sphere"), y).margin
    assert f1 >= f2 > 0


def test_f2_of_many_random_features_tends_to_the_arc_cosine_kernels():
    """The output layer's reference at width m, the SVM of (1/m) sum_j relu(w_j.x) relu(w_j.x') with
    w_j ~ N(0, I/d) (the study's init), tends to that of (1/d) x the arc-cosine kernel as m grows."""
    X, y = clusters(30, seed=2)
    d = X.shape[1]
    W = np.random.default_rng(5).standard_normal((200_000, d)) / math.sqrt(d)
    features = np.maximum(X @ W.T, 0)
    sampled = f2_max_margin(features @ features.T / W.shape[0], y).margin
    assert sampled == pytest.approx(f2_max_margin(relu_feature_kernel(X) / d, y).margin, rel=0.02)
