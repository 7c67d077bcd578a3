"""Monte Carlo twins of solvers.population (sample means with their standard errors; tests only)."""

import numpy as np

from reference import dsigma, sigma


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
