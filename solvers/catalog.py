"""The activations and losses the solvers know, with their codes and properties: one table each.

Pure Python (no NumPy, no Numba), so that code which only validates names (the scenario
schema, a sweep worker before it sets its thread count) can read it without loading the
numerical core. The kernels take an activation or a loss as its integer code; the code of
a row is its position in the table.
"""

from __future__ import annotations

import operator
from typing import NamedTuple


class Activation(NamedTuple):
    """One activation sigma and what is known about it in closed form."""

    name: str
    code: int
    analytic_ntk: bool
    """The m -> infinity NNGP and NTK are in closed form (:func:`solvers.ntk.analytic_kernels`)."""
    population: bool
    """The population kernel U(w, v) = E[sigma1(w.x) sigma2(v.x)], x ~ N(0, I), is in closed form
    with every other activation that has it (:mod:`solvers.population`)."""
    homogeneity: int
    """Degree k of positive homogeneity, sigma(lambda z) = lambda^k sigma(z) for lambda > 0;
    0 when sigma is not homogeneous."""


ACTIVATION_TABLE = (
    #          name         code  analytic_ntk  population  homogeneity
    Activation("relu",      0,    True,         True,       1),
    Activation("tanh",      1,    False,        False,      0),
    Activation("erf",       2,    True,         True,       0),
    Activation("sigmoid",   3,    False,        False,      0),
    Activation("softplus",  4,    False,        False,      0),
    Activation("linear",    5,    True,         True,       1),
    Activation("quadratic", 6,    False,        True,       2),
)
assert [row.code for row in ACTIVATION_TABLE] == list(range(len(ACTIVATION_TABLE)))

RELU, TANH, ERF, SIGMOID, SOFTPLUS, LINEAR, QUADRATIC = (row.code for row in ACTIVATION_TABLE)

ACTIVATIONS = {row.name: row.code for row in ACTIVATION_TABLE}
"""Activation name -> code."""

ANALYTIC_ACTIVATIONS = tuple(row.name for row in ACTIVATION_TABLE if row.analytic_ntk)
POPULATION_ACTIVATIONS = tuple(row.name for row in ACTIVATION_TABLE if row.population)
HOMOGENEITY = {row.name: row.homogeneity for row in ACTIVATION_TABLE if row.homogeneity}
"""Degree k of positive homogeneity, sigma(lambda z) = lambda^k sigma(z) for lambda > 0, of the
homogeneous activations (by name)."""

class Loss(NamedTuple):
    """One loss l(f, y) on the network output f (the equations are in :mod:`solvers.losses`)."""

    name: str
    code: int
    labels: bool
    """It reads y as a class, +1 or -1 (a classification loss: regression targets are refused)."""
    smooth: bool
    """l is twice differentiable everywhere; False: l' jumps at a kink (hinge at y f = 1), where
    the kernels take the convention stated in :mod:`solvers.losses`."""


LOSS_TABLE = (
    #    name         code  labels  smooth
    Loss("squared",   0,    False,  True),
    Loss("logistic",  1,    True,   True),
    Loss("hinge",     2,    True,   False),
)
assert [row.code for row in LOSS_TABLE] == list(range(len(LOSS_TABLE)))

LOSSES = {row.name: row.code for row in LOSS_TABLE}
"""Loss name -> code (the equations are in :mod:`solvers.losses`)."""

SQUARED, LOGISTIC, HINGE = LOSSES.values()

CLASSIFICATION_LOSSES = tuple(row.name for row in LOSS_TABLE if row.labels)
"""The losses that read y as a class, +1 or -1."""


def _lookup(value, codes, what):
    """The code of ``value``: a name (a key of ``codes``) or already one of its codes."""
    if isinstance(value, str):
        if value in codes:
            return codes[value]
    else:
        try:
            code = operator.index(value)
        except TypeError:
            code = None
        if code in codes.values():
            return code
    raise ValueError(f"unknown {what} {value!r}; allowed: {', '.join(codes)}")


def activation_code(act):
    """Integer code of an activation: ``act`` is its name (a key of :data:`ACTIVATIONS`) or
    its code. ValueError for anything else."""
    return _lookup(act, ACTIVATIONS, "activation")


def loss_code(loss):
    """Integer code of a loss: ``loss`` is its name (a key of :data:`LOSSES`) or its code.
    ValueError for anything else."""
    return _lookup(loss, LOSSES, "loss")
