"""Losses on the network output f and their derivatives in f, callable from Numba code.

squared: loss(f, y) = (f - y)^2 / 2, loss' = f - y.
logistic (labels y in {-1, +1}): loss(f, y) = log(1 + e^{-y f}), loss' = -y sigmoid(-y f),
both evaluated without overflow.
hinge (labels y in {-1, +1}): loss(f, y) = max(0, 1 - y f), loss' = -y if y f < 1 else 0,
loss'' = 0. At the kink y f = 1 loss' is 0, the one-sided derivative from the side where the
loss is 0 (an element of the subdifferential [-y, 0] when y = +-1): a sample fitted with margin
exactly 1 exerts no pull, as in a subgradient method that stops on the flat side.

A loss is passed to kernels as its integer code (the table of :mod:`solvers.catalog`,
re-exported here as :data:`LOSSES` and :func:`loss_code`).
"""

import math

from ._jit import jit
from .catalog import HINGE, LOGISTIC, LOSSES, SQUARED, loss_code  # noqa: F401  (LOSSES, loss_code: re-exported)


@jit(inline="always")
def loss_value(code, f, y):
    """loss(f, y) for scalars, in float64 (equations in the module docstring)."""
    if code == SQUARED:
        r = f - y
        return 0.5 * r * r
    elif code == LOGISTIC:
        u = -y * f  # log(1 + e^u) = log1p(e^-|u|) + max(u, 0)
        return math.log1p(math.exp(-abs(u))) + (u if u > 0.0 else 0.0)
    elif code == HINGE:
        u = 1.0 - y * f
        return u if u > 0.0 else 0.0
    return math.nan


@jit(inline="always")
def loss_derivative(code, f, y):
    """d loss / d f at (f, y) for scalars, in float64."""
    if code == SQUARED:
        return f - y
    elif code == LOGISTIC:
        u = -y * f  # -y sigmoid(u)
        e = math.exp(-abs(u))
        s = 1.0 / (1.0 + e) if u >= 0.0 else e / (1.0 + e)
        return -y * s
    elif code == HINGE:
        return -y if y * f < 1.0 else 0.0  # 0 at the kink y f = 1 (module docstring)
    return math.nan


@jit(inline="always")
def loss_second_derivative(code, f, y):
    """d^2 loss / d f^2 at (f, y) for scalars, in float64: squared 1; logistic
    sigmoid(y f) sigmoid(-y f) (labels +-1); hinge 0 (l' is piecewise constant: 0 away from
    the kink y f = 1, where l'' is a Dirac mass the curvature measures leave out)."""
    if code == SQUARED:
        return 1.0
    elif code == LOGISTIC:
        u = -y * f
        e = math.exp(-abs(u))
        s = 1.0 / (1.0 + e) if u >= 0.0 else e / (1.0 + e)
        return s * (1.0 - s)
    elif code == HINGE:
        return 0.0
    return math.nan


@jit
def loss_and_derivative(code, f, y, lp_out):
    """Mean loss (1/n) sum_k loss(f_k, y_k), returned as a float64 (summed in float64);
    writes lp_out[k] = d loss / d f at (f_k, y_k) (in the dtype of ``lp_out``).

    The sum and the stores are two loops: in one loop, LLVM vectorises the sum (partial sums
    in lanes) only where a run-time check finds ``lp_out`` not starting within a few vectors
    after ``f`` or ``y`` in memory, and sums in order otherwise, so the last bit depended on
    where the allocator put ``lp_out`` (docs/design.md §6.3).
    """
    n = f.shape[0]
    total = 0.0
    for k in range(n):  # the sum in a loop that stores nothing: see below
        total += loss_value(code, float(f[k]), float(y[k]))
    for k in range(n):
        lp_out[k] = loss_derivative(code, float(f[k]), float(y[k]))
    return total / n if n > 0 else 0.0
