"""What a particle run measures at every snapshot (DESIGN §1, "What a run measures").

    loss_train, loss_test   (1/n) sum_k loss(f(x_k), y_k) on each set (unscaled by the preset)
    displacement_w          ||W_t - W_0||_F / ||W_0||_F
    displacement_a          ||a_t - a_0|| / ||a_0||
    displacement_mean       (1/m) sum_i |theta_i(t) - theta_i(0)|, theta_i = (a_i, w_i[, b_i])
"""

from __future__ import annotations

import numpy as np

from solvers.losses import loss_and_derivative
from solvers.particles import predict

PARTICLE_MEASURES = ("loss_train", "loss_test", "displacement_w", "displacement_a", "displacement_mean")


def relative_change(x, x0) -> float:
    """||x - x0|| / ||x0|| (Frobenius); infinite when x0 = 0 and x moved, 0 when neither."""
    moved = float(np.linalg.norm(np.asarray(x, np.float64) - x0))
    base = float(np.linalg.norm(x0))
    if base == 0.0:
        return 0.0 if moved == 0.0 else float("inf")
    return moved / base


def mean_particle_displacement(a, W, b, a0, W0, b0) -> float:
    """(1/m) sum_i |theta_i - theta_i(0)| over the full particle (a_i, w_i[, b_i])."""
    sq = (np.asarray(a, np.float64) - a0) ** 2 + np.sum((np.asarray(W, np.float64) - W0) ** 2, axis=1)
    if b is not None:
        sq += (np.asarray(b, np.float64) - b0) ** 2
    return float(np.mean(np.sqrt(sq)))


def dataset_loss(a, W, b, X, y, *, s, activation, loss) -> float:
    """(1/n) sum_k loss(f(x_k), y_k) with f the network of the particles (a, W, b)."""
    f = predict(a, W, b, X, s, activation)
    return float(loss_and_derivative(loss, f, y.astype(f.dtype, copy=False), np.empty_like(f)))


def particle_measures(a, W, b, initial, data, *, s, activation, loss) -> dict[str, float]:
    """Every scalar measure of one snapshot; ``initial`` is (a0, W0, b0) in float64."""
    a0, W0, b0 = initial
    kwargs = dict(s=s, activation=activation, loss=loss)
    return {
        "loss_train": dataset_loss(a, W, b, data.X_train, data.y_train, **kwargs),
        "loss_test": dataset_loss(a, W, b, data.X_test, data.y_test, **kwargs),
        "displacement_w": relative_change(W, W0),
        "displacement_a": relative_change(a, a0),
        "displacement_mean": mean_particle_displacement(a, W, b, a0, W0, b0),
    }


# ---------------------------------------------------------------- regime measures


def kernel_distance(K0, Kt) -> float:
    """1 - <K0, Kt>_F / (||K0||_F ||Kt||_F): 0 when the kernel only rescales, up to 1."""
    norm = float(np.linalg.norm(K0) * np.linalg.norm(Kt))
    return 0.0 if norm == 0.0 else 1.0 - float(np.sum(K0 * Kt)) / norm


def kernel_target_alignment(K, y) -> float:
    """y^T K y / (||K||_F ||y||^2) (Cristianini et al. 2002): 1 when K = y y^T up to scale."""
    y = np.asarray(y, np.float64)
    norm = float(np.linalg.norm(K) * (y @ y))
    return 0.0 if norm == 0.0 else float(y @ K @ y) / norm


def teacher_alignment(a, W, teacher_W, *, signed=True) -> float:
    """Output-mass-weighted alignment of the neurons with their nearest teacher direction.

        A = sum_i |a_i| |w_i| max_j c_ij / sum_i |a_i| |w_i|,  c_ij = cos(w_i, w*_j)

    (|cos| when ``signed`` is False, for targets even in w*, e.g. He_2). A = 1 when all the
    output mass sits on teacher directions (Chizat & Bach 2018); near 0 for random neurons
    in high dimension.
    """
    W = np.asarray(W, np.float64)
    norms = np.linalg.norm(W, axis=1)
    cos = (W @ teacher_W.T) / (np.maximum(norms, 1e-300)[:, None] * np.linalg.norm(teacher_W, axis=1))
    best = (cos if signed else np.abs(cos)).max(axis=1)
    mass = np.abs(np.asarray(a, np.float64)) * norms
    total = mass.sum()
    return 0.0 if total == 0.0 else float(mass @ best / total)


def particle_cloud(a, W, b=None) -> np.ndarray:
    """The particles theta_i = (a_i, w_i[, b_i]) as points of R^(1+d[+1]), float64."""
    columns = [np.asarray(a, np.float64)[:, None], np.asarray(W, np.float64)]
    if b is not None:
        columns.append(np.asarray(b, np.float64)[:, None])
    return np.hstack(columns)


def wasserstein2(cloud0, cloud1) -> float:
    """W2 between the empirical measures (1/m) sum_i delta_{theta_i}, exact transport (POT)."""
    import ot

    cost = ot.dist(cloud0, cloud1, metric="sqeuclidean")
    weights0 = np.full(len(cloud0), 1.0 / len(cloud0))
    weights1 = np.full(len(cloud1), 1.0 / len(cloud1))
    return float(np.sqrt(max(ot.emd2(weights0, weights1, cost, numItermax=10_000_000), 0.0)))


def rms_gap(f, g) -> float:
    """sqrt(mean_k (f_k - g_k)^2): the gap between two runs' predictions on the test set."""
    return float(np.sqrt(np.mean((np.asarray(f, np.float64) - np.asarray(g, np.float64)) ** 2)))
