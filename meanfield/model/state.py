"""The state of a run: the one value that advances and is also its checkpoint."""

from __future__ import annotations

from solvers.integrate import LoopState

RunState = LoopState
"""Where a run stands, as jax-md's simulate functions keep state: the stepping loop's own
frozen :class:`solvers.integrate.LoopState`, the one type from the loop to the file.

``y`` is the packed state: the particles [a, W (row-major), b] of a particle run, or the
predictions [f(X_train), f(X_test)] of a kernel flow. ``h`` is the adaptive
integrator's next step size (None for fixed steps), ``rng`` the state of the run's own
random stream (``numpy.random.Generator.bit_generator.state``: SGD batches, Langevin
noise), which the loop fills at every snapshot. A checkpoint stores exactly t, step, y (in
float64), h and rng, and a resume restores them.
"""
