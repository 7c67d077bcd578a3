"""Activation functions sigma and their derivatives sigma', callable from Numba code.

An activation is passed to kernels as an integer code (the table of :mod:`solvers.catalog`,
re-exported here as :data:`ACTIVATIONS` and :func:`activation_code`), so one
compiled kernel serves every activation: :func:`activate_tile` branches on the code once,
outside its element loop, and each branch's loop vectorises on its own.

Conventions: relu'(0) = 0; softplus and sigmoid are evaluated in overflow-free forms.
"""

import math

import numpy as np

from ._jit import jit
from .catalog import (  # noqa: F401  (ACTIVATIONS, activation_code: re-exported)
    ACTIVATIONS,
    ERF,
    LINEAR,
    QUADRATIC,
    RELU,
    SIGMOID,
    SOFTPLUS,
    TANH,
    activation_code,
)

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


@jit(inline="always")
def sigma(code, z):
    """sigma(z) for a scalar z, in float64.

    relu: max(z, 0); tanh: tanh z; erf: erf z; sigmoid: 1 / (1 + e^-z);
    softplus: log(1 + e^z) = log1p(e^-|z|) + max(z, 0); linear: z; quadratic: z^2.
    """
    if code == RELU:
        return z if z > 0.0 else 0.0
    elif code == TANH:
        return math.tanh(z)
    elif code == ERF:
        return math.erf(z)
    elif code == SIGMOID:
        e = math.exp(-abs(z))
        return 1.0 / (1.0 + e) if z >= 0.0 else e / (1.0 + e)
    elif code == SOFTPLUS:
        return math.log1p(math.exp(-abs(z))) + (z if z > 0.0 else 0.0)
    elif code == LINEAR:
        return z + 0.0
    elif code == QUADRATIC:
        return z * z
    return math.nan


@jit(inline="always")
def dsigma(code, z):
    """sigma'(z) for a scalar z, in float64.

    relu: 1 if z > 0 else 0 (so relu'(0) = 0); tanh: 1 - tanh^2 z; erf: (2/sqrt(pi)) e^{-z^2};
    sigmoid: s (1 - s) with s = sigmoid z; softplus: sigmoid z; linear: 1; quadratic: 2 z.
    """
    if code == RELU:
        return 1.0 if z > 0.0 else 0.0
    elif code == TANH:
        t = math.tanh(z)
        return 1.0 - t * t
    elif code == ERF:
        return _TWO_OVER_SQRT_PI * math.exp(-z * z)
    elif code == SIGMOID or code == SOFTPLUS:
        e = math.exp(-abs(z))
        s = 1.0 / (1.0 + e) if z >= 0.0 else e / (1.0 + e)
        if code == SOFTPLUS:
            return s
        return s * (1.0 - s)
    elif code == LINEAR:
        return 1.0
    elif code == QUADRATIC:
        return 2.0 * z
    return math.nan


@jit(inline="always")
def d2sigma(code, z):
    """sigma''(z) for a scalar z, in float64 (the curvature measures, docs/design.md §1.9).

    relu: 0 (almost everywhere); tanh: -2 t (1 - t^2) with t = tanh z;
    erf: -(4/sqrt(pi)) z e^{-z^2}; sigmoid: g (1 - g)(1 - 2 g) with g = sigmoid z;
    softplus: g (1 - g); linear: 0; quadratic: 2.
    """
    if code == RELU or code == LINEAR:
        return 0.0
    elif code == TANH:
        t = math.tanh(z)
        return -2.0 * t * (1.0 - t * t)
    elif code == ERF:
        return -2.0 * _TWO_OVER_SQRT_PI * z * math.exp(-z * z)
    elif code == SIGMOID or code == SOFTPLUS:
        e = math.exp(-abs(z))
        g = 1.0 / (1.0 + e) if z >= 0.0 else e / (1.0 + e)
        if code == SOFTPLUS:
            return g * (1.0 - g)
        return g * (1.0 - g) * (1.0 - 2.0 * g)
    elif code == QUADRATIC:
        return 2.0
    return math.nan


@jit
def activate_tile(code, z, s_out, ds_out, n):
    """s_out[t] = sigma(z[t]) and ds_out[t] = sigma'(z[t]) for t < n (equations of :func:`sigma`
    and :func:`dsigma`), computed in the dtype of ``z``.

    The branch on ``code`` is taken once, outside the element loop.
    """
    zero = z.dtype.type(0.0)
    one = z.dtype.type(1.0)
    if code == RELU:
        for t in range(n):
            zt = z[t]
            pos = zt > zero
            s_out[t] = zt if pos else zero
            ds_out[t] = one if pos else zero
    elif code == TANH:
        for t in range(n):
            th = math.tanh(z[t])
            s_out[t] = th
            ds_out[t] = one - th * th
    elif code == ERF:
        c = z.dtype.type(_TWO_OVER_SQRT_PI)
        for t in range(n):
            zt = z[t]
            s_out[t] = math.erf(zt)
            ds_out[t] = c * math.exp(-zt * zt)
    elif code == SIGMOID or code == SOFTPLUS:
        for t in range(n):
            zt = z[t]
            e = math.exp(-abs(zt))
            r = one / (one + e)
            sg = r if zt >= zero else e * r
            if code == SIGMOID:
                s_out[t] = sg
                ds_out[t] = sg * (one - sg)
            else:
                s_out[t] = math.log1p(e) + (zt if zt > zero else zero)
                ds_out[t] = sg
    elif code == LINEAR:
        for t in range(n):
            s_out[t] = z[t]
            ds_out[t] = one
    elif code == QUADRATIC:
        two = z.dtype.type(2.0)
        for t in range(n):
            zt = z[t]
            s_out[t] = zt * zt
            ds_out[t] = two * zt
    else:
        for t in range(n):
            s_out[t] = z.dtype.type(np.nan)
            ds_out[t] = z.dtype.type(np.nan)


@jit
def activate_tile_value(code, z, s_out, n):
    """s_out[t] = sigma(z[t]) for t < n (no derivative), in the dtype of ``z``."""
    zero = z.dtype.type(0.0)
    one = z.dtype.type(1.0)
    if code == RELU:
        for t in range(n):
            zt = z[t]
            s_out[t] = zt if zt > zero else zero
    elif code == TANH:
        for t in range(n):
            s_out[t] = math.tanh(z[t])
    elif code == ERF:
        for t in range(n):
            s_out[t] = math.erf(z[t])
    elif code == SIGMOID:
        for t in range(n):
            zt = z[t]
            e = math.exp(-abs(zt))
            r = one / (one + e)
            s_out[t] = r if zt >= zero else e * r
    elif code == SOFTPLUS:
        for t in range(n):
            zt = z[t]
            s_out[t] = math.log1p(math.exp(-abs(zt))) + (zt if zt > zero else zero)
    elif code == LINEAR:
        for t in range(n):
            s_out[t] = z[t]
    elif code == QUADRATIC:
        for t in range(n):
            zt = z[t]
            s_out[t] = zt * zt
    else:
        for t in range(n):
            s_out[t] = z.dtype.type(np.nan)


@jit(inline="always")
def sigma_pair(code, z, one):
    """(sigma(z), sigma'(z)) for a scalar z, computed in the type of ``one`` (the number 1
    of the working dtype); equations of :func:`sigma` and :func:`dsigma`.

    For loops that fuse the activation with other work: called with a constant ``code``
    the branch folds away at compile time.
    """
    zero = one - one
    if code == RELU:
        pos = z > zero
        return (z if pos else zero), (one if pos else zero)
    elif code == TANH:
        th = math.tanh(z)
        return th, one - th * th
    elif code == ERF:
        return math.erf(z), one * _TWO_OVER_SQRT_PI * math.exp(-z * z)
    elif code == SIGMOID or code == SOFTPLUS:
        e = math.exp(-abs(z))
        r = one / (one + e)
        sg = r if z >= zero else e * r
        if code == SIGMOID:
            return sg, sg * (one - sg)
        return math.log1p(e) + (z if z > zero else zero), sg
    elif code == LINEAR:
        return z, one
    elif code == QUADRATIC:
        return z * z, (one + one) * z
    return z * math.nan, z * math.nan


@jit(inline="always")
def sigma_pair_reflected(code, z, s, d):
    """(sigma(-z), sigma'(-z)) from z and (s, d) = (sigma(z), sigma'(z)), by the activation's
    symmetry where it has one: tanh, erf and linear are odd (-s, d); sigmoid(-z) = 1 - s with
    d even; softplus(-z) = s - z with sigmoid'(-z) = 1 - d; quadratic (s, -d). Any other
    (relu, whose derivative at 0 breaks the symmetry) is evaluated at -z."""
    if code == TANH or code == ERF or code == LINEAR:
        return -s, d
    elif code == SIGMOID:
        return 1.0 - s, d
    elif code == SOFTPLUS:
        return s - z, 1.0 - d
    elif code == QUADRATIC:
        return s, -d
    return sigma_pair(code, -z, 1.0)
