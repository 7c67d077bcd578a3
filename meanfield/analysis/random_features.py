"""The exact asymptotic test error of random-features ridge(less) regression (Mei & Montanari
2019, "The generalization error of random features regression: precise asymptotics and double
descent curve", arXiv 1908.05355; docs/design.md §7.6, ``random_features_double_descent``).

The model. Inputs x uniform on the sphere of radius sqrt(d), N random features
sigma(<theta_j, x> / sqrt(d)) with theta_j uniform on the same sphere, n samples

    y = <beta_1, x> + f_NL(x) + eps,    |beta_1|^2 = F1^2,  E f_NL^2 = F_*^2,  E eps^2 = tau^2,

(f_NL orthogonal to every polynomial of degree <= 1), and the ridge estimator

    a = argmin (1/n) sum_k (y_k - sum_j a_j sigma_jk)^2 + (N lambda / d) |a|^2.

With G ~ N(0, 1): mu_0 = E sigma(G), mu_1 = E G sigma(G), mu_*^2 = E sigma(G)^2 - mu_0^2 - mu_1^2,
zeta = mu_1 / mu_*, lambda_bar = lambda / mu_*^2, psi1 = N / d, psi2 = n / d. As N, n, d -> inf at
fixed psi1, psi2 the test error R = E_x (f_d(x) - f_hat(x))^2 (noise excluded) tends to

    R = F1^2 B + (tau^2 + F_*^2) V + F_*^2,    B = E1 / E0,   V = E2 / E0,

    E0 = -chi^5 zeta^6 + 3 chi^4 zeta^4 + (psi1 psi2 - psi2 - psi1 + 1) chi^3 zeta^6 - 2 chi^3 zeta^4
         - 3 chi^3 zeta^2 + (psi1 + psi2 - 3 psi1 psi2 + 1) chi^2 zeta^4 + 2 chi^2 zeta^2 + chi^2
         + 3 psi1 psi2 chi zeta^2 - psi1 psi2
    E1 = psi2 chi^3 zeta^4 - psi2 chi^2 zeta^2 + psi1 psi2 chi zeta^2 - psi1 psi2
    E2 = chi^5 zeta^6 - 3 chi^4 zeta^4 + (psi1 - 1) chi^3 zeta^6 + 2 chi^3 zeta^4 + 3 chi^3 zeta^2
         + (-psi1 - 1) chi^2 zeta^4 - 2 chi^2 zeta^2 - chi^2

with chi = nu_1 nu_2 at xi = i (psi1 psi2 lambda_bar)^(1/2), where (nu_1, nu_2) is the fixed point

    nu_1 = psi1 (-xi - nu_2 - zeta^2 nu_2 / (1 - zeta^2 nu_1 nu_2))^-1
    nu_2 = psi2 (-xi - nu_1 - zeta^2 nu_1 / (1 - zeta^2 nu_1 nu_2))^-1.

On the imaginary axis xi = i y (y > 0) both are imaginary, nu_1 = i a, nu_2 = i b, a, b > 0, and
with p = a b and g(p) = p + zeta^2 p / (1 + zeta^2 p) the fixed point is a y = psi1 - g(p),
b y = psi2 - g(p): one scalar equation

    y^2 p = (psi1 - g(p)) (psi2 - g(p)),     0 <= g(p) <= min(psi1, psi2),   chi = -p,

whose left side increases and right side decreases in p (one root, found by bisection). As
lambda -> 0 (y -> 0) it becomes g(p) = psi = min(psi1, psi2), a quadratic:

    chi = -[(psi zeta^2 - zeta^2 - 1) + sqrt((psi zeta^2 - zeta^2 - 1)^2 + 4 zeta^2 psi)] / (2 zeta^2),

the ridgeless limit (minimum-norm interpolation for psi1 > psi2). There, at psi1 = psi2, E0 = 0:
R diverges when tau^2 + F_*^2 > 0. mu_0 does not enter (one constant feature direction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize


@dataclass(frozen=True)
class ActivationConstants:
    """mu_0 = E sigma(G), mu_1 = E G sigma(G), mu_star = (E sigma^2 - mu_0^2 - mu_1^2)^(1/2), G ~ N(0, 1)."""

    mu0: float
    mu1: float
    mu_star: float

    @property
    def zeta(self) -> float:
        """zeta = mu_1 / mu_*."""
        return self.mu1 / self.mu_star


RELU_CONSTANTS = ActivationConstants(mu0=1.0 / math.sqrt(2.0 * math.pi), mu1=0.5,
                                     mu_star=math.sqrt(0.25 - 1.0 / (2.0 * math.pi)))
"""relu in closed form: mu_0 = 1/sqrt(2 pi), mu_1 = 1/2, mu_*^2 = 1/2 - 1/(2 pi) - 1/4 = 1/4 - 1/(2 pi)
(mu_* = 0.30136...)."""


def activation_constants(activation: str, nodes: int = 200) -> ActivationConstants:
    """mu_0, mu_1, mu_* of a catalog activation (solvers/catalog.py) by Gauss-Hermite quadrature
    of E h(G), G ~ N(0, 1), with ``nodes`` nodes (probabilists' weights e^{-z^2/2} / sqrt(2 pi)).
    For relu's kink the rule converges slowly (its error at 200 nodes is about 1e-3);
    :data:`RELU_CONSTANTS` has the closed form."""
    from solvers.activations import sigma
    from solvers.catalog import activation_code

    code = activation_code(activation)
    z, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / math.sqrt(2.0 * math.pi)
    s = np.array([sigma(code, float(v)) for v in z])
    mu0, mu1, second = float(w @ s), float(w @ (z * s)), float(w @ (s * s))
    return ActivationConstants(mu0, mu1, math.sqrt(max(second - mu0 ** 2 - mu1 ** 2, 0.0)))


def chi_ridgeless(psi1: float, psi2: float, zeta: float) -> float:
    """chi at lambda -> 0 (the module's quadratic, psi = min(psi1, psi2))."""
    psi = min(psi1, psi2)
    z2 = zeta * zeta
    c = psi * z2 - z2 - 1.0
    return -(c + math.sqrt(c * c + 4.0 * z2 * psi)) / (2.0 * z2)


def chi_ridge(psi1: float, psi2: float, zeta: float, lambda_bar: float) -> float:
    """chi = nu_1 nu_2 at xi = i (psi1 psi2 lambda_bar)^(1/2), lambda_bar > 0: the root p of
    y^2 p = (psi1 - g(p)) (psi2 - g(p)), chi = -p (see the module's docstring)."""
    if lambda_bar <= 0.0:
        return chi_ridgeless(psi1, psi2, zeta)
    y2 = psi1 * psi2 * lambda_bar
    z2 = zeta * zeta

    def g(p):
        return p + z2 * p / (1.0 + z2 * p)

    def h(p):
        return y2 * p - (psi1 - g(p)) * (psi2 - g(p))

    # g(p_max) = psi: the positive root of the ridgeless quadratic
    p_max = -chi_ridgeless(psi1, psi2, zeta)
    if h(p_max) <= 0.0:
        return -p_max
    return -optimize.brentq(h, 0.0, p_max, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500)


def bias_variance(psi1: float, psi2: float, zeta: float, lambda_bar: float = 0.0) -> tuple[float, float]:
    """(B, V) = (E1 / E0, E2 / E0) of the module's docstring; inf where E0 = 0 (the ridgeless
    peak psi1 = psi2)."""
    chi = chi_ridge(psi1, psi2, zeta, lambda_bar)
    z2, z4, z6 = zeta ** 2, zeta ** 4, zeta ** 6
    p12 = psi1 * psi2
    e0 = (-chi ** 5 * z6 + 3 * chi ** 4 * z4 + (p12 - psi2 - psi1 + 1) * chi ** 3 * z6 - 2 * chi ** 3 * z4
          - 3 * chi ** 3 * z2 + (psi1 + psi2 - 3 * p12 + 1) * chi ** 2 * z4 + 2 * chi ** 2 * z2 + chi ** 2
          + 3 * p12 * chi * z2 - p12)
    e1 = psi2 * chi ** 3 * z4 - psi2 * chi ** 2 * z2 + p12 * chi * z2 - p12
    e2 = (chi ** 5 * z6 - 3 * chi ** 4 * z4 + (psi1 - 1) * chi ** 3 * z6 + 2 * chi ** 3 * z4 + 3 * chi ** 3 * z2
          + (-psi1 - 1) * chi ** 2 * z4 - 2 * chi ** 2 * z2 - chi ** 2)
    scale = max(abs(p12), 1.0) * max(1.0, abs(chi) ** 5 * z6)
    if abs(e0) <= 1e-13 * scale:
        return math.inf, math.inf
    return e1 / e0, e2 / e0


def rf_test_error(psi1: float, psi2: float, *, lam: float = 0.0, F1: float = 1.0, F_star: float = 0.0,
                  tau: float = 0.0, constants: ActivationConstants = RELU_CONSTANTS) -> float:
    """Mei & Montanari's asymptotic test error R = F1^2 B + (tau^2 + F_*^2) V + F_*^2 of ridge
    regression on N = psi1 d random features from n = psi2 d samples, the penalty (N lam / d) |a|^2
    (lam = 0: the ridgeless limit), noise excluded from R (the module's docstring)."""
    if psi1 <= 0 or psi2 <= 0 or lam < 0:
        raise ValueError(f"need psi1 > 0, psi2 > 0 and lam >= 0; got {psi1}, {psi2}, {lam}")
    b, v = bias_variance(psi1, psi2, constants.zeta, lam / constants.mu_star ** 2)
    noise = tau ** 2 + F_star ** 2
    signal = F1 ** 2 * b if F1 else 0.0
    return signal + (noise * v if noise else 0.0) + F_star ** 2


def rf_ridge_from_kernel_ridge(kernel_ridge: float, d: int, lr: float = 1.0) -> float:
    """Mei & Montanari's lambda of an ``ntk`` run's ``ridge`` on the random-features kernel
    K = (lr / N) sum_j sigma_j sigma_j' (lr_w 0): its limit K (K + n ridge I)^-1 is their
    estimator when n N lambda / d = n N ridge / lr, i.e. lambda = d ridge / lr."""
    return d * kernel_ridge / lr
