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
