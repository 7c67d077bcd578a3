"""The kinds of run and what each needs and can do: one table (docs/design.md §6.1).

Pure Python (no NumPy, no Numba), in the style of ``solvers/catalog.py``, so that the scenario
schema, the plan, the file reader and the diagnostics ask one place what a run of a solver does,
without loading the numerical core. :mod:`meanfield.engine.runs` maps each kind to its class
(``runs.RUN_CLASSES``), and a test checks that every class agrees with its row.

A scenario names a run's ``solver`` (particles, tangent or ntk); the data (samples or the
population risk) and the loss then pick its kind (:func:`kind_of`).
"""

from __future__ import annotations

from typing import NamedTuple, Optional


class Kind(NamedTuple):
    """One kind of run and what it does."""

    name: str
    solver: str
    """The scenario's name for its family of runs (runs.<name>.solver)."""
    population: bool
    """It runs on the population risk (data.population), not on samples."""
    loss: Optional[str]
    """The only loss it takes (None: any); the first row that fits a scenario is its kind."""
    steps: bool
    """The integrator steps it (it takes an integrator, and dt_factor); else it is exact at any time."""
    particles: bool
    """Its state is the particles (a, W, b): it records them (record.particles) and the particle measures."""
    tracks_kernel: bool
    """Its own tangent kernel moves: it records kernel_distance and kernel_alignment, and a verdict reads them."""
    noise: bool
    """It takes train.temperature (Langevin) and train.weight_decay."""
    curvature: bool
    """It records the curvature measures record.measures names (on a training set)."""
    limits: bool
    """It stores its t -> infinity limit as constants (loss_train_limit, loss_test_limit)."""
    reference: bool
    """The scenario's first run of such a kind is the one every other run's gap_ntk is measured against."""


KIND_TABLE = (
    #    name                       solver      population loss       steps  particles kernel noise  curvature limits reference
    Kind("particles_on_data",       "particles", False,    None,      True,  True,     True,  True,  True,     False, False),
    Kind("particles_on_population", "particles", True,     None,      True,  True,     True,  True,  False,    False, False),
    Kind("tangent_on_data",         "tangent",   False,    None,      True,  True,     False, True,  True,     False, False),
    Kind("tangent_on_population",   "tangent",   True,     None,      False, True,     False, False, False,    False, False),
    Kind("kernel_flow_closed_form", "ntk",       False,    "squared", False, False,    False, False, False,    True,  True),
    Kind("kernel_flow_integrated",  "ntk",       False,    None,      True,  False,    False, False, False,    False, True),
)

KINDS = {row.name: row for row in KIND_TABLE}
"""Kind name -> row."""


class Solver(NamedTuple):
    """One value of runs.<name>.solver."""

    name: str
    what: str
    """What its runs are, in a sentence's words."""
    label: str
    """What a file's reader calls a run of it after its name ("{kernel}": the run's kernel); ""
    its parameterization."""


SOLVER_TABLE = (
    Solver("particles", "the network",          ""),
    Solver("tangent",   "linearized network",   "tangent"),
    Solver("ntk",       "kernel gradient flow", "kernel flow, {kernel}"),
)

SOLVERS = {row.name: row for row in SOLVER_TABLE}
"""Solver name -> row."""

DEFAULT_SOLVER = SOLVER_TABLE[0].name
"""The solver of a run that names none (and of a file's run without the attribute)."""


def kinds_of(solver: str) -> tuple[Kind, ...]:
    """The kinds of ``solver``'s runs (none for a name that is no solver)."""
    return tuple(row for row in KIND_TABLE if row.solver == solver)


def kind_of(solver: str, population: bool, loss: str) -> Kind:
    """The kind of a run of ``solver`` on the population risk (``population``) or on samples,
    with ``loss``: the first row of the solver in that data mode that takes the loss. A solver
    with no row for the population risk falls back to its rows on samples (the schema refuses
    it there, with its own message). KeyError for a name that is no solver."""
    rows = kinds_of(solver)
    if not rows:
        raise KeyError(f"unknown solver {solver!r}; allowed: {', '.join(SOLVERS)}")
    mode = [row for row in rows if row.population == population] or rows
    return next(row for row in mode if row.loss in (None, loss))


def can(solver: str, ability: str) -> bool:
    """Whether some kind of ``solver`` has ``ability`` (a boolean column of :class:`Kind`):
    what a file's reader knows of a run, which records its solver and not its kind."""
    return any(getattr(row, ability) for row in kinds_of(solver))


def particle_solvers() -> tuple[str, ...]:
    """The solvers whose runs have particles."""
    return tuple(name for name in SOLVERS if can(name, "particles"))
