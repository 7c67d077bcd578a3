"""The particle system as a vector field over one flat state vector.

The state of m particles theta_i = (a_i, w_i[, b_i]) is packed as
y = [a (m), W (m*d, row-major), b (m, with a bias), c (1, with an output bias)] so that
every integrator works on a plain array. The field is the per-layer preconditioned
gradient flow

    da_i/dt = -eta_a dR/da_i,   dw_i/dt = -eta_w dR/dw_i,   db_i/dt = -eta_b dR/db_i,
    dc/dt = -eta_c dR/dc

(eta_b = eta_w unless given)
with R = loss_scale * (1/n) sum_k loss(f(x_k), y_k) (see ``solvers.particles``), and
``WeightDecay`` adds -lambda y to any such field.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .particles import risk_and_gradient


@dataclass(frozen=True)
class ParticleLayout:
    """How (a, W, b) of m particles in dimension d, and the output bias c, sit in one flat vector."""

    m: int
    d: int
    bias: bool
    output_bias: bool = False

    @property
    def size(self) -> int:
        return self.m * (self.d + 1 + int(self.bias)) + int(self.output_bias)

    def split(self, y: np.ndarray):
        """Views (a [m], W [m, d], b [m] or None) into the flat state ``y``."""
        m, d = self.m, self.d
        a = y[:m]
        W = y[m : m + m * d].reshape(m, d)
        b = y[m + m * d : m + m * d + m] if self.bias else None
        return a, W, b

    def c_of(self, y: np.ndarray):
        """The output bias c, a view [1] into the flat state ``y``, or None without one."""
        return y[-1:] if self.output_bias else None

    def pack(self, a, W, b=None, dtype=np.float64, c=None) -> np.ndarray:
        parts = [np.ravel(a), np.ravel(W)] + ([np.ravel(b)] if self.bias else [])
        if self.output_bias:
            parts.append(np.ravel(c))
        return np.concatenate(parts).astype(dtype, copy=False)


class ParticleField:
    """The gradient-flow vector field of the particles on a data set: ``field(t, y) -> (dy, loss)``.

    ``loss`` is the unscaled training loss (1/n) sum_k loss(f(x_k), y_k) at ``y``; with
    ``batch`` (an index array) both the field and the loss are those of that minibatch.
    With ``layout.output_bias``, ``eta_c`` is the output bias's learning rate; ``eta_b`` the
    biases' (default ``eta_w``).
    """

    def __init__(self, layout: ParticleLayout, X, y, *, s, eta_a, eta_w, activation, loss, loss_scale=1.0,
                 eta_c=None, eta_b=None):
        if layout.output_bias and eta_c is None:
            raise ValueError("a layout with an output bias needs its learning rate eta_c")
        self.layout = layout
        self.eta_c = eta_c
        self.X, self.y = X, y
        self.n_samples = X.shape[0]
        self.s, self.eta_a, self.eta_w = s, eta_a, eta_w
        self.eta_b = eta_w if eta_b is None else eta_b
        self.activation, self.loss = activation, loss
        self.loss_scale = loss_scale

    def __call__(self, t, state, batch=None):
        X, y = (self.X, self.y) if batch is None else (self.X[batch], self.y[batch])
        a, W, b = self.layout.split(state)
        c = self.layout.c_of(state)
        if c is None:
            risk, ga, gW, gb = risk_and_gradient(a, W, b, X, y, self.s, self.activation, self.loss, self.loss_scale)
        else:
            risk, ga, gW, gb, gc = risk_and_gradient(a, W, b, X, y, self.s, self.activation, self.loss,
                                                     self.loss_scale, c=c[0])
        velocity = np.empty_like(state)
        va, vW, vb = self.layout.split(velocity)
        np.multiply(ga, -self.eta_a, out=va)
        np.multiply(gW, -self.eta_w, out=vW)
        if vb is not None:
            np.multiply(gb, -self.eta_b, out=vb)
        if c is not None:
            self.layout.c_of(velocity)[0] = -self.eta_c * gc
        return velocity, risk / self.loss_scale


class WeightDecay:
    """A field with weight decay: dy/dt = field(y) - lambda y (the loss reported is the field's)."""

    def __init__(self, field, weight_decay: float):
        self.field, self.weight_decay = field, weight_decay
        if hasattr(field, "n_samples"):
            self.n_samples = field.n_samples

    def __call__(self, t, state, batch=None):
        velocity, loss = self.field(t, state) if batch is None else self.field(t, state, batch=batch)
        return velocity - self.weight_decay * state, loss
