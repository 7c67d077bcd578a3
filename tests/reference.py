"""Plain NumPy twins of the solver kernels (full m x n arrays; for tests only)."""

import numpy as np
from scipy import special

ACT_NAMES = ["relu", "tanh", "erf", "sigmoid", "softplus", "linear", "quadratic"]


def sigma(name, z):
    z = np.asarray(z, dtype=np.float64)
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "tanh":
        return np.tanh(z)
    if name == "erf":
        return special.erf(z)
    if name == "sigmoid":
        return special.expit(z)
    if name == "softplus":
        return np.logaddexp(0.0, z)
    if name == "linear":
        return z.copy()
    if name == "quadratic":
        return z * z
    raise ValueError(name)


def dsigma(name, z):
    z = np.asarray(z, dtype=np.float64)
    if name == "relu":
        return (z > 0).astype(np.float64)
    if name == "tanh":
        return 1.0 - np.tanh(z) ** 2
    if name == "erf":
        return 2.0 / np.sqrt(np.pi) * np.exp(-z * z)
    if name == "sigmoid":
        e = special.expit(z)
        return e * (1.0 - e)
    if name == "softplus":
        return special.expit(z)
    if name == "linear":
        return np.ones_like(z)
    if name == "quadratic":
        return 2.0 * z
    raise ValueError(name)


def loss(name, f, y):
    f = np.asarray(f, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if name == "squared":
        return 0.5 * (f - y) ** 2
    if name == "logistic":
        return np.logaddexp(0.0, -y * f)
    if name == "hinge":
        return np.maximum(0.0, 1.0 - y * f)
    raise ValueError(name)


def dloss(name, f, y):
    f = np.asarray(f, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if name == "squared":
        return f - y
    if name == "logistic":
        return -y * special.expit(-y * f)
    if name == "hinge":  # 0 at the kink y f = 1 (solvers.losses)
        return np.where(y * f < 1.0, -y, 0.0)
    raise ValueError(name)


def predict(a, W, b, X, s, act):
    Z = np.asarray(W, np.float64) @ np.asarray(X, np.float64).T
    if b is not None:
        Z = Z + np.asarray(b, np.float64)[:, None]
    return s * (np.asarray(a, np.float64) @ sigma(act, Z))


def risk_and_gradient(a, W, b, X, y, s, act, loss_name, loss_scale=1.0):
    a = np.asarray(a, np.float64)
    W = np.asarray(W, np.float64)
    X = np.asarray(X, np.float64)
    n = X.shape[0]
    Z = W @ X.T
    if b is not None:
        Z = Z + np.asarray(b, np.float64)[:, None]
    S = sigma(act, Z)
    D = dsigma(act, Z)
    f = s * (a @ S)
    risk = loss_scale * loss(loss_name, f, y).mean()
    lp = dloss(loss_name, f, y)
    c = loss_scale * s / n
    ga = c * (S @ lp)
    G = D * lp[None, :] * a[:, None]
    gW = c * (G @ X)
    gb = c * G.sum(axis=1) if b is not None else None
    return risk, ga, gW, gb
