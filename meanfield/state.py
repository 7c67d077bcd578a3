"""The state of a run: the one value that advances and is also its checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class RunState:
    """Where a run stands, as jax-md's simulate functions keep state.

    ``y`` is the packed state: the particles [a, W (row-major), b] of a particle run, or the
    predictions [f(X_train), f(X_test)] of a kernel flow. ``h`` is the adaptive
    integrator's next step size (None for fixed steps), ``rng`` the state of the run's own
    random stream (``numpy.random.Generator.bit_generator.state``: SGD batches, Langevin
    noise). A checkpoint stores exactly this (``y`` in float64) and a resume restores it.
    """

    t: float
    step: int
    y: np.ndarray
    h: Optional[float] = None
    rng: Optional[dict] = None
