"""The learning curve of kernel regression from the kernel's spectrum and the target's
coefficients (docs/design.md §1.10): Bordelon, Canatar & Pehlevan (2020), "Spectrum
dependent learning curves in kernel regression and wide neural networks", ICML
(arXiv 2002.02561); Canatar, Bordelon & Pehlevan (2021), "Spectral bias and task-model
alignment explain generalization in kernel regression and infinitely wide neural
networks", Nat. Commun. 12, 2914 (arXiv 2006.13198).

Kernel ridge regression f(x) = k(x)^T (K + lambda I)^-1 y on n samples x_k drawn from a
measure p, labels y_k = f*(x_k) + eps_k, eps_k ~ (0, sigma^2), with the kernel
K(x, x') = sum_rho eta_rho phi_rho(x) phi_rho(x') (phi orthonormal in L2(p)) and the target
f* = sum_rho w_rho phi_rho. Modes come in groups (a degree l on the sphere: N_l modes of
eigenvalue eta_l, target energy c_l = sum of w_rho^2 over the group). The theory's
average test error E_g = E_x (f(x) - f*(x))^2 (noise-free test labels) is

    kappa = lambda + kappa sum_l N_l eta_l / (n eta_l + kappa)                (kappa >= 0)
    gamma = n sum_l N_l eta_l^2 / (n eta_l + kappa)^2
    E_g   = 1/(1 - gamma) [ sum_l kappa^2 c_l / (n eta_l + kappa)^2 + gamma sigma^2 ]

and each group's share E_l = (kappa^2 c_l / (n eta_l + kappa)^2 + gamma_l sigma^2)/(1 - gamma),
gamma_l = n N_l eta_l^2/(n eta_l + kappa)^2. lambda is the ridge added to the n x n Gram
matrix: the project's ``ntk`` run with ``ridge`` r has the limit K (K + n r I)^-1, lambda = n r;
the project's label noise ``data.noise`` is sigma, and its test labels carry the noise too,
so its ``loss_test`` (0.5 (f - y)^2) is 0.5 (E_g + sigma^2).

kappa solves 1 - lambda/kappa - g(kappa) = 0, g(kappa) = sum_l N_l eta_l / (n eta_l + kappa),
increasing in log kappa: a bracketing root finder on log kappa, between kappa = lambda (or,
ridgeless, the kappa where g = 1, found by halving) and 2 (lambda + sum N_l eta_l), where
the excess is at least 1/2 whatever the size of lambda. Ridgeless
with at most n modes of nonzero eigenvalue (M <= n), kappa = 0: every such mode is learnt
exactly, gamma = M/n and E_g = sigma^2 M/(n - M) (diverging at M = n with noise), the modes
of eigenvalue 0 stay unlearnt at any n, and like noise their energy is amplified by
1/(1 - gamma) (E_l = c_l / (1 - gamma)).

Degrees beyond the spectrum's last (``tail`` of the kernel's trace, ``target_tail`` of the
target's norm) are taken as modes with n eta << kappa: they add ``tail`` to lambda (an
effective ridge) and ``target_tail`` to E_g unlearnt (exact as n eta_l / kappa -> 0).

The theory is exact as n and the number of modes grow together (a replica / cavity
calculation); at small n its average is off by a few per cent (measured in
tests/test_learning_curve.py against the brute-force average of many draws).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

__all__ = ["LearningCurve", "flow_loss", "learning_curve", "solve_kappa"]


@dataclass(frozen=True)
class LearningCurve:
    """The theory at each n (arrays of the shape of ``n``): ``error`` E_g, ``kappa``,
    ``gamma``; ``by_group`` (len(n), groups): each group's share E_l of E_g (the
    ``target_tail``'s share, target_tail / (1 - gamma), is the rest)."""

    n: np.ndarray
    error: np.ndarray
    kappa: np.ndarray
    gamma: np.ndarray
    by_group: np.ndarray


def _as_spectrum(eigenvalues, degeneracies, coefficients=None):
    eta = np.atleast_1d(np.asarray(eigenvalues, dtype=np.float64))
    N = np.ones_like(eta) if degeneracies is None else np.atleast_1d(np.asarray(degeneracies, dtype=np.float64))
    if eta.ndim != 1 or N.shape != eta.shape:
        raise ValueError(f"eigenvalues {eta.shape} and degeneracies {N.shape} must be 1-d of one length")
    if not np.all(np.isfinite(eta)) or np.any(eta < 0):
        raise ValueError("eigenvalues must be finite and >= 0 (round a quadrature's -1e-17 to 0 first)")
    if np.any(N < 0) or not np.all(np.isfinite(N)):
        raise ValueError("degeneracies must be finite and >= 0")
    if coefficients is None:
        return eta, N
    c = np.atleast_1d(np.asarray(coefficients, dtype=np.float64))
    if c.shape != eta.shape or np.any(c < 0) or not np.all(np.isfinite(c)):
        raise ValueError(f"coefficients (target energies, >= 0) must match the eigenvalues {eta.shape}, got {c.shape}")
    return eta, N, c


def solve_kappa(n: float, eigenvalues, degeneracies=None, ridge: float = 0.0, tail: float = 0.0) -> float:
    """kappa at n samples: the root of kappa = lambda + tail + kappa sum_l N_l eta_l / (n eta_l + kappa)
    (0 when ridgeless with no more nonzero modes than n; see the module's docstring)."""
    eta, N = _as_spectrum(eigenvalues, degeneracies)
    if not n > 0:
        raise ValueError(f"n must be > 0, got {n!r}")
    lam = float(ridge) + float(tail)
    if lam < 0 or not math.isfinite(lam):
        raise ValueError(f"ridge + tail must be finite and >= 0, got {lam!r}")
    live = eta > 0
    eta, N = eta[live], N[live]
    total = float(np.sum(N * eta))
    if total == 0:
        return lam

    def excess(log_kappa):  # 1 - lambda/kappa - g(kappa), increasing
        kappa = math.exp(log_kappa)
        return 1.0 - lam / kappa - float(np.sum(N * eta / (n * eta + kappa)))

    high = math.log(2 * (lam + total))  # excess >= 1/2 there, robustly (lambda >> total included)
    if lam > 0:
        low = math.log(lam)
    else:
        if np.sum(N) <= n:
            return 0.0
        low = high
        while excess(low) >= 0:
            low -= math.log(2.0)
            if low < math.log(np.finfo(float).tiny):
                return 0.0  # M exceeds n by less than rounding
    return math.exp(brentq(excess, low, high, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500))


def learning_curve(n, eigenvalues, degeneracies, coefficients, ridge: float = 0.0, noise: float = 0.0,
                   tail: float = 0.0, target_tail: float = 0.0) -> LearningCurve:
    """E_g(n) of kernel ridge regression by the theory of the module's docstring: groups of
    ``degeneracies`` N_l modes of eigenvalue ``eigenvalues`` eta_l (of the kernel's operator on
    the input measure) and target energy ``coefficients`` c_l (the squared norm of the target's
    part in the group), ridge lambda (on the Gram matrix: K + lambda I), label noise variance
    ``noise`` sigma^2; ``tail`` and ``target_tail``: the kernel's trace and the target's norm
    beyond the last group (e.g. ``Spectrum.tail``).

    Parameters
    ----------
    n : float or array_like
        The number of samples, or an array of them.
    eigenvalues : array_like, shape (groups,)
        eta_l, each group's eigenvalue (>= 0).
    degeneracies : array_like, shape (groups,), or None
        N_l, each group's number of modes (None: one each).
    coefficients : array_like, shape (groups,)
        c_l, each group's target energy (>= 0).
    ridge : float
        lambda, the ridge on the Gram matrix (>= 0).
    noise : float
        sigma^2, the label noise's variance (>= 0).
    tail : float
        The kernel's trace beyond the last group (>= 0).
    target_tail : float
        The target's squared norm beyond the last group (>= 0).

    Returns
    -------
    LearningCurve
        E_g, kappa and gamma at each n, and each group's share of E_g.
    """
    eta, N, c = _as_spectrum(eigenvalues, degeneracies, coefficients)
    ns = np.atleast_1d(np.asarray(n, dtype=np.float64))
    if noise < 0 or ridge < 0 or tail < 0 or target_tail < 0:
        raise ValueError("ridge, noise (a variance), tail and target_tail must be >= 0")
    errors, kappas, gammas, groups = [], [], [], []
    live = eta > 0
    for count in ns:
        kappa = solve_kappa(count, eta, N, ridge, tail)
        denominator = np.where(live, count * eta + kappa, 1.0)
        gamma_l = np.where(live, count * N * eta**2 / denominator**2, 0.0)
        gamma = float(np.sum(gamma_l))
        # kappa^2 c_l / (n eta_l + kappa)^2: c_l for eigenvalue 0 (never learnt), 0 for kappa = 0
        unlearnt = np.where(live, (kappa / denominator) ** 2 * c, c)
        numerator = unlearnt + gamma_l * noise
        if gamma >= 1.0 - 1e-12:  # ridgeless with exactly n modes: diverges unless nothing drives it
            share = np.where(numerator > 0, np.inf, 0.0)
            rest = np.inf if target_tail > 0 else 0.0
        else:
            share, rest = numerator / (1.0 - gamma), target_tail / (1.0 - gamma)
        errors.append(float(np.sum(share)) + rest)
        kappas.append(kappa)
        gammas.append(gamma)
        groups.append(share)
    shape = np.shape(n)
    return LearningCurve(ns.reshape(shape), np.array(errors).reshape(shape), np.array(kappas).reshape(shape),
                         np.array(gammas).reshape(shape), np.array(groups))


def flow_loss(t, eigenvalues, coefficients, target_tail: float = 0.0) -> np.ndarray:
    """The population loss of kernel gradient flow from f_0 = 0 (infinite data, docs/design.md
    §1.10): df/dt = -T_K (f - f*), T_K the kernel's operator on the input measure, so the part of
    the residual in a group of eigenvalue eta_l decays as exp(-eta_l t) and

        L(t) = 1/2 E_x (f_t(x) - f*(x))^2 = 1/2 [ sum_l c_l exp(-2 eta_l t) + target_tail ]

    (the project's squared loss 1/2 (f - y)^2 at loss_scale 1; ``target_tail``, the target's norm
    beyond the last group, taken as unlearnt). With eta_l ~ l^-a and c_l ~ l^-(1+s) it falls as
    t^-(s/a) at large t (Bordelon, Atanasov & Pehlevan's source exponent beta = s/a).

    Parameters
    ----------
    t : float or array_like
        The times (>= 0).
    eigenvalues : array_like, shape (groups,)
        eta_l, each group's eigenvalue (>= 0).
    coefficients : array_like, shape (groups,)
        c_l, the target's energy in each group (>= 0).
    target_tail : float
        The target's squared norm beyond the last group (>= 0).

    Returns
    -------
    numpy.ndarray
        L(t), of the shape of ``t``.
    """
    eta, _, c = _as_spectrum(eigenvalues, None, coefficients)
    times = np.asarray(t, dtype=np.float64)
    if np.any(times < 0) or target_tail < 0:
        raise ValueError("the times and target_tail must be >= 0")
    decay = np.exp(-2.0 * np.multiply.outer(times, eta))
    return 0.5 * (decay @ c + target_tail)
