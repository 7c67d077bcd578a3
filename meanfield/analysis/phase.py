"""The phase diagram of Luo, Xu, Ma & Zhang (2021) from a sweep: each width family placed at
its (gamma, gamma'), coloured by the phase its measured width exponent names, over the
published boundary.

Luo et al. (JMLR 22(71), 2021) write f(x) = (1/alpha) sum_k a_k sigma(w_k . x) with
a_k ~ N(0, beta1^2), w_k ~ N(0, beta2^2 I), and

    gamma  = lim -log(beta1 beta2 / alpha) / log m,     gamma' = lim -log(beta1 / beta2) / log m.

In meanfield's ``custom`` preset (s = m^-A, a_std m^-B, w_std fixed) that is gamma = A + B,
gamma' = B (``parameterization.predict_regime``; every point file stores both, and the
results table has them as ``<run>.predicted_gamma`` and ``<run>.predicted_gamma_prime``).
The published phases, from the relative change of the input weights as m -> infinity:

    linear     gamma < 1 or gamma' > gamma - 1       RD -> 0
    condensed  gamma > 1 and gamma' < gamma - 1      RD -> infinity
    critical   on the boundary: gamma = 1, gamma' <= 0, and gamma' = gamma - 1, gamma >= 1.

The measured phase of a family is ``stats.classify`` of its fitted exponent of
``displacement_w`` against the width (linear < -tol, critical |p| <= tol, condensed > tol,
undetermined when the interval crosses the band).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from ..model.parameterization import predict_regime
from ..sweeps.table import Table
from .families import as_table, fit_family, group_families
from .stats import classify


@dataclass(frozen=True)
class PhasePoint:
    """One width family of a sweep at its (gamma, gamma'): measured and published phase."""

    run: str
    group: dict
    gamma: float
    gamma_prime: float
    exponent: float
    exponent_ci: tuple[float, float]
    measured: str  # linear | critical | condensed | undetermined
    published: str  # Luo et al.'s phase at (gamma, gamma')
    n: int

    @property
    def agrees(self) -> bool:
        """Whether the measured phase is the published one."""
        return self.measured == self.published


def luo_phase(gamma: float, gamma_prime: float) -> str:
    """Luo et al.'s published phase at (gamma, gamma'), by the rule of
    ``parameterization.predict_regime``: linear if gamma < 1 or gamma' > gamma - 1,
    condensed if gamma > 1 and gamma' < gamma - 1, critical on the boundary between."""
    return predict_regime(gamma - gamma_prime, gamma_prime, 0.0, 0.0).luo_phase


def phase_points(table, gamma_key: str = "predicted_gamma", gamma_prime_key: str = "predicted_gamma_prime",
                 measure: str = "displacement_w", against: str = "model.width", runs=None,
                 confidence: float = 0.95, tol: float = 0.1) -> list[PhasePoint]:
    """One PhasePoint per width family (group of the other grid keys x run) of the sweep: its
    gamma, gamma', fitted exponent of ``measure`` against ``against`` (``power_law``), the
    phase ``classify`` measures and the phase Luo et al. publish at (gamma, gamma').

    ``gamma_key`` and ``gamma_prime_key`` name, per run, the column ``<run>.<key>`` (the
    default: the predicted numbers every point stores), or else a column of the table
    itself (a numeric grid key). A family whose points disagree on gamma is an error.
    """
    table = as_table(table)
    points = []
    for family in group_families(table, measure, against, runs):
        fit, _ = fit_family(family, confidence)
        gamma = _family_value(table, family.run, gamma_key, family.index)
        gamma_prime = _family_value(table, family.run, gamma_prime_key, family.index)
        points.append(PhasePoint(family.run, dict(family.group), gamma, gamma_prime, fit.exponent,
                                 tuple(fit.exponent_ci), classify(fit, tol), luo_phase(gamma, gamma_prime), fit.n))
    return points


def _family_value(table: Table, run: str, key: str, index: np.ndarray) -> float:
    """The one value of ``<run>.<key>`` (else of the column ``key``) at the family's rows; UsageError otherwise."""
    column = table.columns.get(f"{run}.{key}")
    if column is None:
        column = table.columns.get(key)
    if column is None:
        raise UsageError(f"no column {run}.{key} or {key} in this sweep: cannot place run {run!r} "
                         f"on the (gamma, gamma') plane")
    values = np.unique(np.asarray(column[index], np.float64))
    if len(values) != 1:
        raise UsageError(f"run {run!r}: the points of one width family have {key} = "
                         f"{', '.join(f'{v:g}' for v in values) or 'nothing'}; expected one value")
    return float(values[0])
