"""The initial draws every run of a scenario starts from (docs/design.md §3.5), below the run layer
so that a reader of a trajectory file can rebuild a kernel run's initial particles
(:meth:`meanfield.storage.RecordedRun.predict`): the random streams SeedSequence([seed, *stream]),
the standard-normal draws of ``[seed, 1]`` and the particles a run's init stds make of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..config.scenario import Scenario
    from .parameterization import Resolved


def rng_for(seed: int, *stream) -> np.random.Generator:
    """The generator of one of the scenario's random streams (see the module docstring)."""
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


@dataclass(frozen=True)
class InitialDraws:
    """Standard-normal draws shared by every run: z_a [m], Z_w [m, d], z_b [m], and z_c for
    the output bias (drawn last, so the others are those of a model without one)."""

    z_a: np.ndarray
    Z_w: np.ndarray
    z_b: np.ndarray
    z_c: float = 0.0


def initial_draws(scenario: Scenario, rng: np.random.Generator) -> InitialDraws:
    """z ~ N(0, 1); with ``symmetric`` the second half mirrors the first: a -> -a, same w and b."""
    m, d = scenario.model.width, scenario.data.dim
    half = m // 2 if scenario.model.init.symmetric else m
    z_a = rng.standard_normal(half)
    Z_w = rng.standard_normal((half, d))
    z_b = rng.standard_normal(half)
    if scenario.model.init.symmetric:
        z_a, Z_w, z_b = np.concatenate([z_a, -z_a]), np.vstack([Z_w, Z_w]), np.concatenate([z_b, z_b])
    z_c = float(rng.standard_normal()) if scenario.model.output_bias else 0.0
    return InitialDraws(z_a, Z_w, z_b, z_c)


def initial_particles(draws: InitialDraws, resolved: Resolved, bias: bool):
    """(a0, W0, b0) in float64 for one run: the shared draws scaled by its init stds,
    a = a_std z_a, W = w_std Z_w, b = b_std z_b."""
    b0 = resolved.b_std * draws.z_b if bias else None
    return resolved.a_std * draws.z_a, resolved.w_std * draws.Z_w, b0


def initial_output_bias(draws: InitialDraws, resolved: Resolved):
    """c0 = c_std z_c, the output bias at t = 0 (every run starts from the same one), or
    None for a model without one."""
    return None if resolved.c_std is None else resolved.c_std * draws.z_c
