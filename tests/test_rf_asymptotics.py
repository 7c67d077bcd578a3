"""Mei & Montanari's asymptotic random-features test error (meanfield/analysis/random_features.py,
docs/design.md §7.6) against a brute-force NumPy random-features regression written here (inputs
and features uniform on the sphere of radius sqrt(d), the paper's model), a brute-force kernel
ridge regression with the arc-cosine kernel (its psi1 -> infinity limit), the activation
constants in closed form, and the formula's own limits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, special

from meanfield.analysis.random_features import (
    RELU_CONSTANTS,
    activation_constants,
    bias_variance,
    chi_ridge,
    chi_ridgeless,
    rf_ridge_from_kernel_ridge,
    rf_test_error,
)


def _sphere(rng, n, d):
    g = rng.standard_normal((n, d))
    return math.sqrt(d) * g / np.linalg.norm(g, axis=1, keepdims=True)


def _target(rng, d, F1, F_star):
    """<beta, x> with |beta| = F1, plus F_star times a unit-variance degree-2 polynomial of u.x
    (E ((u.x)^2 - 1)^2 = 2 (d - 1) / (d + 2) on the sphere of radius sqrt(d))."""
    beta = rng.standard_normal(d)
    beta *= F1 / np.linalg.norm(beta)
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    c = math.sqrt((d + 2) / (2 * (d - 1)))
    return lambda X: X @ beta + F_star * c * ((X @ u) ** 2 - 1)


def _brute_force_rf(rng, d, N, n, lam, F1, F_star, tau, n_test=1000):
    """One draw of ridge (lam > 0: penalty N lam / d |a|^2) or min-norm (lam = 0) regression on N
    relu features sigma(<theta, x> / sqrt(d)); the test error E (f_d - f_hat)^2 without noise."""
    f = _target(rng, d, F1, F_star)
    X, X_test, theta = _sphere(rng, n, d), _sphere(rng, n_test, d), _sphere(rng, N, d)
    y = f(X) + tau * rng.standard_normal(n)
    Z = np.maximum(X @ theta.T / math.sqrt(d), 0.0)
    Z_test = np.maximum(X_test @ theta.T / math.sqrt(d), 0.0)
    if N <= n:  # ridge, or least squares (lam = 0)
        a = np.linalg.solve(Z.T @ Z + n * N * lam / d * np.eye(N), Z.T @ y)
    else:  # the same in the dual; lam = 0: the minimum-norm interpolant Z^T (Z Z^T)^-1 y
        a = Z.T @ np.linalg.solve(Z @ Z.T + n * N * lam / d * np.eye(n), y)
    return float(np.mean((f(X_test) - Z_test @ a) ** 2))


# d = 80, n = 240 (psi2 = 3), 8 draws per point: measured deviations from the formula within 7%
# (finite d and the spread of 8 draws), away from the peak; the tolerance is 15%.
@pytest.mark.parametrize("lam", [0.0, 1e-2])
@pytest.mark.parametrize("N", [24, 120, 160, 480, 720])
def test_the_formula_agrees_with_brute_force_random_features(N, lam):
    rng = np.random.default_rng(1000 * N + int(lam * 1e4))
    d, n = 80, 240
    F1, F_star, tau = 1.0, 0.3, 0.5
    measured = np.mean([_brute_force_rf(rng, d, N, n, lam, F1, F_star, tau) for _ in range(8)])
    theory = rf_test_error(N / d, n / d, lam=lam, F1=F1, F_star=F_star, tau=tau)
    assert measured == pytest.approx(theory, rel=0.15), (measured, theory)


def test_psi1_to_infinity_is_kernel_ridge_regression_with_the_arc_cosine_kernel():
    """N -> inf: the random-features kernel (1/N) sum sigma sigma' -> E sigma(g.x/sqrt d) sigma(g.x'/sqrt d)
    = (sin t + (pi - t) cos t) / (2 pi), cos t = x.x'/d (Cho & Saul), and the ridge n lam / d."""
    rng = np.random.default_rng(7)
    d, n, lam, tau = 80, 240, 0.05, 0.5
    errors = []
    for _ in range(40):  # one draw's error scatters by about 20%: 40 draws, a standard error near 3%
        f = _target(rng, d, 1.0, 0.0)
        X, X_test = _sphere(rng, n, d), _sphere(rng, 1000, d)
        y = f(X) + tau * rng.standard_normal(n)

        def kernel(A, B):
            c = np.clip(A @ B.T / d, -1.0, 1.0)
            t = np.arccos(c)
            return (np.sin(t) + (math.pi - t) * c) / (2 * math.pi)

        alpha = np.linalg.solve(kernel(X, X) + n * lam / d * np.eye(n), y)
        errors.append(np.mean((f(X_test) - kernel(X_test, X) @ alpha) ** 2))
    theory = rf_test_error(1e7, n / d, lam=lam, F1=1.0, tau=tau)
    assert np.mean(errors) == pytest.approx(theory, rel=0.1)


def test_relu_constants_in_closed_form_and_by_quadrature():
    c = RELU_CONSTANTS
    assert c.mu1 == 0.5 and c.mu_star == pytest.approx(0.3014, abs=1e-4)
    phi = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    mu0 = integrate.quad(lambda z: z * phi(z), 0, np.inf)[0]
    mu1 = integrate.quad(lambda z: z * z * phi(z), 0, np.inf)[0]
    second = integrate.quad(lambda z: z * z * phi(z), 0, np.inf)[0]
    assert c.mu0 == pytest.approx(mu0, rel=1e-10) and c.mu1 == pytest.approx(mu1, rel=1e-10)
    assert c.mu_star == pytest.approx(math.sqrt(second - mu0 ** 2 - mu1 ** 2), rel=1e-10)
    # erf: mu_0 = 0, mu_1 = E erf'(G) = 2 / sqrt(3 pi), E erf(G)^2 = (2/pi) arcsin(2/3) (Williams 1997)
    erf = activation_constants("erf")
    assert erf.mu0 == pytest.approx(0.0, abs=1e-12)
    assert erf.mu1 == pytest.approx(2 / math.sqrt(3 * math.pi), rel=1e-10)
    assert erf.mu_star ** 2 == pytest.approx(2 / math.pi * math.asin(2 / 3) - 4 / (3 * math.pi), rel=1e-8)
    assert activation_constants("relu").mu1 == pytest.approx(0.5, abs=1e-6)
    assert special.erf(0.0) == 0.0


def test_the_ridgeless_limit_is_the_limit_of_the_ridge_fixed_point():
    z = RELU_CONSTANTS.zeta
    for psi1, psi2 in [(0.5, 3.0), (3.0, 0.5), (10.0, 3.0), (2.0, 2.0)]:
        assert chi_ridge(psi1, psi2, z, 1e-12) == pytest.approx(chi_ridgeless(psi1, psi2, z), rel=1e-5)
        # the fixed point itself: nu_1 = i a, nu_2 = i b solve the two equations
        lam_bar = 0.3
        y = math.sqrt(psi1 * psi2 * lam_bar)
        p = -chi_ridge(psi1, psi2, z, lam_bar)
        g = p + z * z * p / (1 + z * z * p)
        nu1, nu2, xi = 1j * (psi1 - g) / y, 1j * (psi2 - g) / y, 1j * y
        q = 1 - z * z * nu1 * nu2
        assert nu1 == pytest.approx(psi1 / (-xi - nu2 - z * z * nu2 / q), rel=1e-10)
        assert nu2 == pytest.approx(psi2 / (-xi - nu1 - z * z * nu1 / q), rel=1e-10)
    assert rf_test_error(8.0, 3.0, lam=1e-9, tau=0.5) == pytest.approx(rf_test_error(8.0, 3.0, tau=0.5), rel=1e-5)


def test_the_ridgeless_error_diverges_at_psi1_equal_psi2_and_a_ridge_removes_the_peak():
    assert math.isinf(rf_test_error(3.0, 3.0, tau=0.5)) and math.isinf(rf_test_error(3.0, 3.0, F_star=0.5))
    near = [rf_test_error(3.0 + e, 3.0, tau=0.5) for e in (0.1, 0.01, 0.001)]
    assert near[0] < near[1] < near[2] and near[2] > 100 * near[0] / 10  # ~ 1 / |psi1 - psi2|
    ridge = [rf_test_error(p, 3.0, lam=0.05, tau=0.5) for p in np.linspace(0.5, 30, 60)]
    assert max(ridge) < 1.0 and all(np.diff(ridge) < 1e-9)  # monotone: the peak is gone


def test_an_infinite_ridge_predicts_zero_and_the_underparameterised_variance_is_psi1_over_psi2_minus_psi1():
    assert rf_test_error(2.0, 3.0, lam=1e9, F1=1.3, F_star=0.4, tau=2.0) == pytest.approx(1.3 ** 2 + 0.4 ** 2,
                                                                                           rel=1e-6)
    # least squares with fewer features than samples: variance psi1 / (psi2 - psi1), the classical count
    for psi1 in (0.3, 1.0, 2.0):
        assert bias_variance(psi1, 3.0, RELU_CONSTANTS.zeta)[1] == pytest.approx(psi1 / (3.0 - psi1), rel=1e-9)


def test_ridge_conversion_from_the_ntk_runs_ridge():
    # K = (lr/N) Z Z^T, limit K (K + n r I)^-1 = Z Z^T (Z Z^T + n N r / lr I)^-1; MM: n N lam / d
    assert rf_ridge_from_kernel_ridge(1e-3, d=100, lr=2.0) == pytest.approx(0.05)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="psi1 > 0"):
        rf_test_error(0.0, 1.0)


def test_an_ntk_run_with_a_fixed_first_layer_is_random_features_ridge_regression():
    """The study's learner (random_features_double_descent): an ``ntk`` run on the empirical kernel
    with lr_w 0 and symmetric init is ridge(less) regression on the N = m/2 distinct features
    relu(w_j . x), with Mei & Montanari's penalty (N lambda / d)|a|^2 at lambda = d ridge / lr; checked
    against a NumPy solve on the scenario's initial w_j, drawn here from its documented stream
    (docs/design.md §1.3, §3.5: SeedSequence([seed, 1]), z_a [m/2] then Z_w [m/2, d], w = Z_w / sqrt(d))."""
    import meanfield as mf

    d, n, N, lr, ridge = 10, 40, 25, 2.0, 3e-3
    scenario = {
        "name": "rf-exact", "seed": 3,
        "data": {"task": "teacher_student", "dim": d, "inputs": "sphere", "n_train": n, "n_test": 30,
                 "noise": 0.5, "teacher": {"width": 1, "activation": "linear", "norm": 1.0}},
        "model": {"width": 2 * N, "activation": "relu", "bias": False, "init": {"symmetric": True}},
        "runs": {
            "ridgeless": {"solver": "ntk", "kernel": "empirical", "parameterization": {"preset": "ntk", "lr_w": 0}},
            "ridge": {"solver": "ntk", "kernel": "empirical", "ridge": ridge,
                      "parameterization": {"preset": "ntk", "lr": lr, "lr_w": 0}},
        },
        "train": {"t_end": 1e4},
        "record": {"every": 1e4, "dtype": "float64"},
    }
    draws = np.random.default_rng(np.random.SeedSequence([3, 1]))
    draws.standard_normal(N)  # z_a
    W = draws.standard_normal((N, d)) / math.sqrt(d)
    with mf.simulate(scenario) as traj:
        data = traj.data
        Z, Z_test = np.maximum(data.X_train @ W.T, 0), np.maximum(data.X_test @ W.T, 0)
        y = data.y_train
        lam = rf_ridge_from_kernel_ridge(ridge, d, lr)
        a_ridge = np.linalg.solve(Z.T @ Z + n * N * lam / d * np.eye(N), Z.T @ y)
        a_min_norm = np.linalg.lstsq(Z, y, rcond=None)[0]  # N < n: least squares
        for run, a in (("ridge", a_ridge), ("ridgeless", a_min_norm)):
            final = traj[run].final()
            expected_test = 0.5 * np.mean((Z_test @ a - data.y_test) ** 2)
            expected_train = 0.5 * np.mean((Z @ a - y) ** 2)
            assert final["loss_test_limit"] == pytest.approx(expected_test, rel=1e-8), run
            assert final["loss_train_limit"] == pytest.approx(expected_train, rel=1e-8), run
        # the ridge flow itself reaches the limit by t = 1e4 (every mode relaxes at >= ridge)
        f_test = traj["ridge"].series("f_test").value[-1]
        assert f_test == pytest.approx(Z_test @ a_ridge, rel=1e-8, abs=1e-10)
