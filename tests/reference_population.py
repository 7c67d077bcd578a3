"""Twins of solvers.population for tests (and the benchmark): the population gradient by
row-blocked NumPy (the twin of the N-body kernel), and Monte Carlo estimates (sample means with
their standard errors)."""

import numpy as np
from reference import dsigma, sigma

from solvers import population as P
from solvers.catalog import RELU

# ------------------------------------------------------------------ the population gradient, NumPy


def sums_numpy(c1, c2, W, V, c, self_pairs, block=None):
    """(S, G), S_i = sum_j c_j U(w_i, v_j) and G_i = sum_j c_j grad_1 U(w_i, v_j), for any pair
    of codes (c1, c2), by rows of W in blocks with vectorised NumPy: the twin of the N-body
    kernel and of the finite-rank sums of solvers.population, from the closed forms of its
    table (``_pair_scalars``) with arccos from libm; ``self_pairs``: V is W, and the diagonal
    gets t = 0 exactly."""
    m, d = W.shape
    k = V.shape[0]
    if block is None:
        block = max(1, (1 << 18) // max(k, 1))
    q11 = np.einsum("ij,ij->i", W, W)
    q22 = np.einsum("ij,ij->i", V, V)
    S = np.empty(m)
    G = np.empty((m, d))
    for i0 in range(0, m, block):
        i1 = min(m, i0 + block)
        q12 = W[i0:i1] @ V.T
        angle = None
        if (c1, c2) == (RELU, RELU):
            n1 = np.sqrt(q11[i0:i1])[:, None]
            n2 = np.sqrt(q22)[None, :]
            cos = np.clip(q12 * P._safe_inv(n1) * P._safe_inv(n2), -1.0, 1.0)
            if self_pairs:
                r = np.arange(i1 - i0)
                cos[r, i0 + r] = 1.0
            angle = np.arccos(cos)
        U, alpha, beta = P._pair_scalars(c1, c2, q11[i0:i1, None], q12, q22[None, :], angle)
        S[i0:i1] = U @ c
        G[i0:i1] = (alpha * c) @ V + (beta @ c)[:, None] * W[i0:i1]
    return S, G


def population_gradient_numpy(a, W, teacher_a, teacher_W, *, s, act, teacher_act, loss_scale=1.0):
    """``(risk, grad_a, grad_W)`` as :func:`solvers.population.population_gradient` returns
    them, every sum over j (the teacher's constant term included) by :func:`sums_numpy`."""
    code, tcode = P._population_code(act), P._population_code(teacher_act)
    a, W = np.asarray(a, np.float64), np.asarray(W, np.float64)
    ta, tW = np.asarray(teacher_a, np.float64), np.asarray(teacher_W, np.float64)
    m, d = W.shape
    Ss, Gs = sums_numpy(code, code, W, W, a, True)
    if tW.shape[0]:
        St, Gt = sums_numpy(code, tcode, W, tW, ta, False)
        energy = float(ta @ sums_numpy(tcode, tcode, tW, tW, ta, True)[0])
    else:
        St, Gt, energy = np.zeros(m), np.zeros((m, d)), 0.0
    c, s = float(loss_scale), float(s)
    risk = 0.5 * c * (s * s * float(a @ Ss) - 2.0 * s * float(a @ St) + energy)
    ga = c * s * s * Ss - c * s * St
    gW = (s * s * Gs - s * Gt) * (c * a)[:, None]
    return risk, ga, gW


# ------------------------------------------------------------------ Monte Carlo


def mean_se(samples):
    """(sample mean, standard error) along axis 0 (summed along contiguous rows)."""
    S = np.ascontiguousarray(np.moveaxis(samples, 0, -1))
    n = S.shape[-1]
    mean = S.mean(axis=-1)
    var = np.einsum("...k,...k->...", S, S) / n - mean * mean
    return mean, np.sqrt(np.maximum(var, 0.0) * n / (n - 1) / n)


def mc_U(W1, W2, act1, act2, X):
    """U(w1_c, w2_c) = E[sigma1(w1_c.x) sigma2(w2_c.x)] for each row c, on the sample X:
    (mean (C,), se (C,))."""
    XT = np.ascontiguousarray(X.T)
    return mean_se((sigma(act1, W1 @ XT) * sigma(act2, W2 @ XT)).T)


def mc_grad_U(W1, W2, act1, act2, X):
    """grad_1 U(w1_c, w2_c) = E[sigma1'(w1_c.x) x sigma2(w2_c.x)] for each row c, on the
    sample X: (mean (C, d), se (C, d)), the moments by BLAS."""
    n = X.shape[0]
    XT = np.ascontiguousarray(X.T)
    g = dsigma(act1, W1 @ XT) * sigma(act2, W2 @ XT)  # (C, n)
    mean = g @ X / n
    second = (g * g) @ (X * X) / n
    return mean, np.sqrt(np.maximum(second - mean * mean, 0.0) / (n - 1))


def mc_hessian_U(w, v, act, X):
    """E[sigma'(w.x) sigma'(v.x) x x^T] on the sample X: (mean (d, d), se (d, d)), by BLAS."""
    n = X.shape[0]
    g = dsigma(act, X @ w) * dsigma(act, X @ v)
    mean = (X * g[:, None]).T @ X / n
    X2 = X * X
    second = (X2 * (g * g)[:, None]).T @ X2 / n
    return mean, np.sqrt(np.maximum(second - mean * mean, 0.0) / (n - 1))


def network(a, W, X, s, act):
    return s * (sigma(act, X @ W.T) @ a)


def mc_risk(a, W, ta, tW, X, s, act, teacher_act, loss_scale):
    """(c/2) E[(f - f*)^2] on the sample X: (mean, se)."""
    r = network(a, W, X, s, act) - network(ta, tW, X, 1.0, teacher_act)
    return mean_se(0.5 * loss_scale * r * r)


def features(a, W, X, s, act):
    """Phi(x) = grad_theta f(x; theta), theta = [a, W.ravel()]: (n, m (d + 1))."""
    Z = X @ W.T
    Pa = s * sigma(act, Z)
    PW = (s * a * dsigma(act, Z))[:, :, None] * X[:, None, :]
    return np.concatenate([Pa, PW.reshape(X.shape[0], -1)], axis=1)


def mc_gram(a, W, ta, tW, X, s, act, teacher_act):
    """(G, se_G, h, se_h): G = E[Phi Phi^T], h = E[Phi (f_0 - f*)] on the sample X."""
    Phi = features(a, W, X, s, act)
    r = network(a, W, X, s, act) - network(ta, tW, X, 1.0, teacher_act)
    n = X.shape[0]
    G = Phi.T @ Phi / n
    G2 = (Phi * Phi).T @ (Phi * Phi) / n  # E[(Phi_p Phi_q)^2]
    se_G = np.sqrt(np.maximum(G2 - G * G, 0.0) / (n - 1))
    h, se_h = mean_se(Phi * r[:, None])
    return G, se_G, h, se_h
