"""Run measures against independent references (assignment problems, closed forms, NumPy)."""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from meanfield.model.diagnostics import (
    kernel_distance,
    kernel_target_alignment,
    mean_particle_displacement,
    particle_cloud,
    relative_change,
    rms_gap,
    teacher_alignment,
    wasserstein2,
)


def test_relative_change_and_mean_displacement():
    W0 = np.array([[3.0, 4.0], [0.0, 0.0]])
    W = W0 + np.array([[0.0, 0.0], [0.0, 5.0]])
    assert relative_change(W, W0) == pytest.approx(1.0)
    a0, a = np.array([1.0, 1.0]), np.array([1.0, 1.0])
    # particle 0 did not move, particle 1 moved by 5
    assert mean_particle_displacement(a, W, None, a0, W0, None) == pytest.approx(2.5)
    assert relative_change(np.zeros(2), np.zeros(2)) == 0.0


def test_kernel_distance_ignores_scale_and_sees_rotation():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 6))
    K = A @ A.T
    assert kernel_distance(K, 3.0 * K) == pytest.approx(0.0, abs=1e-15)
    # orthogonal (Frobenius) kernels are at distance 1
    assert kernel_distance(np.diag([1.0, 0.0]), np.diag([0.0, 1.0])) == pytest.approx(1.0)


def test_kernel_target_alignment_is_one_for_the_target_kernel():
    y = np.array([1.0, -1.0, 1.0, 1.0])
    assert kernel_target_alignment(np.outer(y, y), y) == pytest.approx(1.0)
    # identity kernel: y^T y / (sqrt(n) |y|^2) = 1 / sqrt(n)
    assert kernel_target_alignment(np.eye(4), y) == pytest.approx(0.5)


def test_teacher_alignment():
    teacher = np.array([[1.0, 0.0], [0.0, 1.0]])
    on = np.array([[2.0, 0.0], [0.0, 0.5]])
    assert teacher_alignment([1.0, 3.0], on, teacher) == pytest.approx(1.0)
    # a neuron pointing away from every teacher direction: cos = -1/sqrt(2) signed, 1/sqrt(2) unsigned
    away = np.array([[-1.0, -1.0]])
    assert teacher_alignment([1.0], away, teacher) == pytest.approx(-1 / np.sqrt(2))
    assert teacher_alignment([1.0], away, teacher, signed=False) == pytest.approx(1 / np.sqrt(2))
    # mass weighting: |a_i| |w_i|
    mixed = np.array([[1.0, 0.0], [-1.0, -1.0]])
    expected = (1 * 1 * 1 + 1 * np.sqrt(2) * (-1 / np.sqrt(2))) / (1 + np.sqrt(2))
    assert teacher_alignment([1.0, 1.0], mixed, teacher) == pytest.approx(expected)


def test_wasserstein2_equals_the_optimal_assignment():
    # for two uniform measures with m atoms each, optimal transport is an assignment problem
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((40, 3)), rng.standard_normal((40, 3)) + 0.5
    cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    assert wasserstein2(x, y) == pytest.approx(np.sqrt(cost[rows, cols].mean()), rel=1e-10)
    # a rigid shift by v moves every atom by |v|
    assert wasserstein2(x, x + [0.3, 0.4, 0.0]) == pytest.approx(0.5)
    assert wasserstein2(x, x[::-1]) < 1e-7  # sqrt of a transport cost that is 0 up to rounding


def test_wasserstein2_is_the_brute_force_minimum_over_permutations():
    """At tiny sizes every permutation is tried: W2^2 = min_sigma (1/m) sum_i |x_i - y_sigma(i)|^2."""
    import itertools

    rng = np.random.default_rng(7)
    for m in (1, 2, 3, 5, 6):
        x = rng.standard_normal((m, 3))
        # far apart (the assignment solver), and barely moved (each point's nearest: the shortcut)
        for y in (rng.standard_normal((m, 3)), x + 1e-3 * rng.standard_normal((m, 3))):
            best = min(sum(((x[i] - y[j]) ** 2).sum() for i, j in enumerate(p)) / m
                       for p in itertools.permutations(range(m)))
            assert wasserstein2(x, y) == pytest.approx(np.sqrt(best), rel=1e-12)
    # both points nearest the same one: not the nearest-point map, the assignment
    x, y = np.array([[0.0], [0.3]]), np.array([[0.2], [1.0]])
    assert wasserstein2(x, y) == pytest.approx(np.sqrt((0.2**2 + 0.7**2) / 2), rel=1e-12)


def test_wasserstein2_has_the_bits_of_pot_exact_transport():
    """The assignment gives POT's network simplex's (ot.emd2) bits: same optimum, summed in its order."""
    import ot

    from meanfield.model.diagnostics import assignment_cost, squared_distances

    rng = np.random.default_rng(8)
    for m in (1, 2, 7, 16, 100, 300, 512):
        for spread in (0.01, 0.3, 2.0):
            x = rng.standard_normal((m, 6))
            y = x + spread * rng.standard_normal((m, 6))
            cost = ot.dist(x, y, metric="sqeuclidean")
            np.testing.assert_array_equal(squared_distances(x, y), cost)
            weights = np.full(m, 1.0 / m)
            assert assignment_cost(cost) == ot.emd2(weights, weights, cost, numItermax=10_000_000), (m, spread)
            scale = 2.0 ** np.frexp(max(np.abs(x).max(), np.abs(y).max()))[1]
            assert wasserstein2(x, y) == scale * np.sqrt(ot.emd2(weights, weights, ot.dist(x / scale, y / scale),
                                                                 numItermax=10_000_000)), (m, spread)


def test_wasserstein2_of_clouds_of_different_sizes_is_pot_exact_transport():
    """Unequal sizes have no permutation: POT's exact transport, checked against a cloud repeated
    (W2 between a measure and itself written with every atom twice is 0; the shifted copy's, |v|)."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((10, 2))
    assert wasserstein2(x, np.vstack([x, x])) < 1e-7
    assert wasserstein2(x, np.vstack([x, x]) + [0.6, 0.8]) == pytest.approx(1.0)


def test_particle_cloud_and_rms_gap():
    cloud = particle_cloud([1.0, 2.0], [[3.0, 4.0], [5.0, 6.0]], [7.0, 8.0])
    assert cloud.tolist() == [[1.0, 3.0, 4.0, 7.0], [2.0, 5.0, 6.0, 8.0]]
    assert rms_gap([1.0, 3.0], [1.0, 1.0]) == pytest.approx(np.sqrt(2.0))


def test_wasserstein2_of_a_diverging_cloud_does_not_overflow():
    """Particles of 1e294 (a diverging catapult run): squared distances overflow, and POT answered
    0 with "Problem infeasible"; W2 is homogeneous of degree one, so it is 1e294 times the W2 of
    the same clouds at unit size."""
    import warnings

    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((16, 2)), rng.standard_normal((16, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        huge = wasserstein2(1e294 * x, 1e294 * y)
    assert huge == pytest.approx(1e294 * wasserstein2(x, y), rel=1e-12)
    assert wasserstein2(2.0**600 * x, 2.0**600 * y) == 2.0**600 * wasserstein2(x, y)  # powers of two: exact
    assert np.isnan(wasserstein2(x, np.where(y > 1, np.inf, y)))
