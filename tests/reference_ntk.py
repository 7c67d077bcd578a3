"""Plain NumPy/SciPy twins for solvers.ntk (explicit Jacobians, quadrature; tests only)."""

import math

import numpy as np
from reference import dsigma, sigma
from scipy import integrate


def jacobian(a, W, b, X, s, act):
    """J[k, p] = d f(x_k) / d theta_p, theta = [a, W.ravel(), b] (the ParticleLayout order),
    formed in full: (n, m (d + 1 [+ 1]))."""
    a, W, X = (np.asarray(v, np.float64) for v in (a, W, X))
    m, d = W.shape
    Z = X @ W.T + (0.0 if b is None else np.asarray(b, np.float64))  # (n, m)
    S, D = sigma(act, Z), dsigma(act, Z)
    Ja = s * S
    JW = (s * a * D)[:, :, None] * X[:, None, :]  # (n, m, d)
    parts = [Ja, JW.reshape(X.shape[0], m * d)]
    if b is not None:
        parts.append(s * a * D)
    return np.concatenate(parts, axis=1)


def ntk_from_jacobian(a, W, b, X1, X2, s, eta_a, eta_w, act, loss_scale=1.0):
    """K = c J1 diag(eta) J2^T with the explicit Jacobians."""
    m, d = np.shape(W)
    eta = np.concatenate([np.full(m, eta_a), np.full(m * d, eta_w)] + ([np.full(m, eta_w)] if b is not None else []))
    J1 = jacobian(a, W, b, X1, s, act)
    J2 = jacobian(a, W, b, X2, s, act)
    return loss_scale * (J1 * eta) @ J2.T


def per_particle_ntk(a, W, b, X, eta_a, eta_w, act):
    """k_i(x_k, x_l) = eta_a sigma sigma + eta_w a_i^2 sigma' sigma' (x.x' + 1_bias), (m, n, n):
    the ntk-scaled empirical kernel is their mean over particles."""
    Z = X @ W.T + (0.0 if b is None else b)  # (n, m)
    S, D = sigma(act, Z), dsigma(act, Z)
    G = X @ X.T + (0.0 if b is None else 1.0)
    return eta_a * np.einsum("ki,li->ikl", S, S) + eta_w * np.einsum("i,ki,li->ikl", a * a, D, D) * G


def _standardise(q11, q12, q22):
    rho = q12 / math.sqrt(q11 * q22)
    return min(1.0, max(-1.0, rho))


def moments_quadrature(q11, q12, q22, act):
    """(E[sigma(u) sigma(v)], E[sigma'(u) sigma'(v)]) by numerical integration, with
    u = sqrt(q11) g1, v = sqrt(q22) (rho g1 + sqrt(1 - rho^2) g2), g ~ N(0, I_2).

    relu: adaptive 2-D quadrature (scipy dblquad, polar coordinates) over the region
    u > 0, v > 0, where the integrand is smooth; erf and others: 2-D Gauss-Hermite."""
    rho = _standardise(q11, q12, q22)
    r1, r2 = math.sqrt(q11), math.sqrt(q22)
    if act == "relu":
        # polar coordinates g = r (cos th, sin th): u > 0 and v > 0 is the wedge
        # alpha - pi/2 < th < pi/2 (cos alpha = rho), where v = r2 r cos(th - alpha)
        alpha = math.acos(rho)
        dens = lambda r: r * math.exp(-0.5 * r * r) / (2 * math.pi)  # noqa: E731
        uv = lambda r, th: r1 * r2 * r * r * math.cos(th) * math.cos(th - alpha) * dens(r)  # noqa: E731
        dd = lambda r, th: dens(r)  # noqa: E731
        opts = dict(epsabs=1e-14, epsrel=1e-12)
        lo, hi = alpha - math.pi / 2, math.pi / 2
        if hi <= lo:
            return 0.0, 0.0
        e_ss = integrate.dblquad(uv, lo, hi, 0, np.inf, **opts)[0]
        e_dd = integrate.dblquad(dd, lo, hi, 0, np.inf, **opts)[0]
        return e_ss, e_dd
    x, w = np.polynomial.hermite.hermgauss(120)
    g1, g2 = np.meshgrid(math.sqrt(2) * x, math.sqrt(2) * x, indexing="ij")
    weights = np.outer(w, w) / math.pi
    c = math.sqrt(max(0.0, 1.0 - rho * rho))
    u, v = r1 * g1, r2 * (rho * g1 + c * g2)
    e_ss = float(np.sum(weights * sigma(act, u) * sigma(act, v)))
    e_dd = float(np.sum(weights * dsigma(act, u) * dsigma(act, v)))
    return e_ss, e_dd


def _closed_form(act, q11, q12, q22):
    """The published one-hidden-layer closed forms (as neural-tangents writes them)."""
    if act == "relu":
        t = np.arccos(np.clip(q12 / np.sqrt(q11 * q22), -1, 1))
        return (np.sqrt(q11 * q22) * (np.sin(t) + (np.pi - t) * np.cos(t)) / (2 * np.pi),
                (np.pi - t) / (2 * np.pi))
    if act == "erf":
        p = (1 + 2 * q11) * (1 + 2 * q22)
        return 2 / np.pi * np.arcsin(2 * q12 / np.sqrt(p)), 4 / np.pi / np.sqrt(p - 4 * q12 ** 2)
    raise ValueError(act)


def neural_tangents_kernels(X1, X2, act, W_std, b_std, W_std2, b_std2):
    """neural-tangents' stax.serial(Dense(m, W_std, b_std), act, Dense(1, W_std2, b_std2)),
    parameterization='ntk', as its layer rules compose (nngp, ntk):
    Dense: nngp <- W_std^2 nngp_in + b_std^2, ntk <- nngp + W_std^2 ntk_in, with nngp_in the
    input covariance averaged over input units (x.x' / d for the data, E[phi phi] after the
    hidden layer) and ntk_in = 0 for the data; activation: nngp <- E[phi phi],
    ntk <- E[phi' phi'] ntk_in."""
    d = X1.shape[1]
    G12 = X1 @ X2.T
    q11 = (W_std ** 2 * np.sum(X1 * X1, 1) / d + b_std ** 2)[:, None]
    q22 = (W_std ** 2 * np.sum(X2 * X2, 1) / d + b_std ** 2)[None, :]
    nngp1 = W_std ** 2 * G12 / d + b_std ** 2
    ntk1 = nngp1
    e, edot = _closed_form(act, q11, nngp1, q22)
    nngp_h, ntk_h = e, edot * ntk1
    nngp = W_std2 ** 2 * nngp_h + b_std2 ** 2
    ntk = nngp + W_std2 ** 2 * ntk_h
    return nngp, ntk


def monte_carlo(X, act, w_var, b_var, a_var, eta_a, eta_w, n_draws, rng, bias=True):
    """Mean and standard error over independent particles of the per-particle nngp
    integrand sigma sigma and ntk integrand eta_a sigma sigma + eta_w a^2 sigma' sigma' (x.x' + 1),
    for every pair of rows of X: four (n, n) arrays."""
    d = X.shape[1]
    W = rng.normal(scale=math.sqrt(w_var), size=(n_draws, d))
    b = rng.normal(scale=math.sqrt(b_var), size=n_draws) if bias else np.zeros(n_draws)
    a = rng.normal(scale=math.sqrt(a_var), size=n_draws)
    Z = W @ X.T + b[:, None]
    S, D = sigma(act, Z), dsigma(act, Z)
    G = X @ X.T + (1.0 if bias else 0.0)
    nngp = S[:, :, None] * S[:, None, :]
    ntk = eta_a * nngp + eta_w * (a * a)[:, None, None] * D[:, :, None] * D[:, None, :] * G
    se = lambda v: v.std(axis=0, ddof=1) / math.sqrt(n_draws)  # noqa: E731
    return nngp.mean(0), se(nngp), ntk.mean(0), se(ntk)
