"""Every measure a run can record and what is known of it: one table (docs/design.md §1.7).

Pure Python (no NumPy, no Numba), in the style of ``solvers/catalog.py``: the schema (which
measures ``record.measures`` may name), the runs (which measures each kind records, and their
shapes), the plan, the file reader, ``inspect``, ``plot`` and ``analyze`` read their lists off
it. Adding a measure is a row here and its function (in :mod:`meanfield.model.diagnostics`, or the
run that takes it). The equations are in :mod:`meanfield.model.diagnostics`.
"""

from __future__ import annotations

from typing import NamedTuple

from .kinds import KIND_TABLE, Kind


class Measure(NamedTuple):
    """One measure and what every other place asks about it instead of keeping its own list."""

    name: str
    shape: tuple = ()
    """Its axes at one snapshot, by name: () a scalar, ("test_point",) one value per test point."""
    by: str = ""
    """The column of the table of run kinds (:class:`meanfield.model.kinds.Kind`) a kind needs to record
    it; "" every kind."""
    data: str = ""
    """"samples" or "population": recorded only on that data; "" on both."""
    needs: str = ""
    """What else the scenario needs for a run to record it: "test_set" (a test set), "teacher" (a
    task with a teacher), "output_bias" (model.output_bias), "reference" (a run other than the
    reference of gap_ntk, and a test set: :func:`meanfield.engine.plan.records_gap`), "w2_particles"
    (record.w2_particles > 0)."""
    optional: bool = False
    """Recorded only when ``record.measures`` names it."""
    constant: bool = False
    """One value per run, not per snapshot (an attribute of the run's observables group)."""
    fit: bool = False
    """It says how well a run fits (every run records one of them): its loss curve in ``plot``."""
    displacement: bool = False
    """A relative displacement: its width exponent names Luo et al.'s phase (``meanfield analyze``)."""
    shown: bool = True
    """``meanfield inspect`` shows its final value (where a run recorded it)."""
    panel: str = ""
    """The title of its panel in ``plot`` (the fit measures share the loss panel); "" none."""


MEASURE_TABLE = (
    #       name                    shape            by                data          needs
    Measure("risk",                 (),              "",               "population", fit=True),
    Measure("loss_train",           (),              "",               "samples",    fit=True),
    Measure("loss_test",            (),              "",               "samples",    "test_set"),
    Measure("loss_train_limit",     (),              "limits",         "samples",    constant=True),
    Measure("loss_test_limit",      (),              "limits",         "samples",    "test_set", constant=True),
    Measure("f_test",               ("test_point",), "",               "samples",    "test_set", shown=False),
    Measure("displacement_w",       (),              "particles",      displacement=True,
            panel="relative displacement |W(t) - W(0)| / |W(0)|"),
    Measure("displacement_wb",      (),              "particles",      displacement=True, optional=True),
    Measure("displacement_a",       (),              "particles",      displacement=True),
    Measure("displacement_mean",    (),              "particles",      displacement=True),
    Measure("output_bias",          (),              "particles",      needs="output_bias", shown=False),
    Measure("wasserstein2",         (),              "particles",      needs="w2_particles"),
    Measure("kernel_distance",      (),              "tracks_kernel",  panel="kernel distance 1 - cos(K(0), K(t))"),
    Measure("kernel_alignment",     (),              "tracks_kernel"),
    Measure("teacher_alignment",    (),              "particles",      needs="teacher"),
    Measure("gap_ntk",              (),              "",               "samples",    "reference",
            panel="gap to the ntk run (rms over the test set)"),
    Measure("margin",               (),              "",               "samples",    optional=True),
    Measure("normalized_margin",    (),              "",               "samples",    optional=True),
    Measure("ntk_eigenvalue_max",   (),              "curvature",      "samples",    optional=True, shown=False),
    Measure("hessian_eigenvalue_max", (),            "curvature",      "samples",    optional=True, shown=False),
)
"""Every measure a run can record, in the order ``meanfield inspect`` shows them (and a run's
measures are laid out in)."""

MEASURES = {row.name: row for row in MEASURE_TABLE}
"""Measure name -> row."""

TEACHER_TASKS = ("teacher_student", "single_index")
"""The tasks with a teacher (what teacher_alignment is measured against)."""

SHOWN_MEASURES = tuple(m.name for m in MEASURE_TABLE if m.shown)
"""The measures ``meanfield inspect`` shows, in this order (each where some run has it); the
curvature measures appear as the ratio lambda_T / lambda_0 instead."""
DISPLACEMENT_MEASURES = tuple(m.name for m in MEASURE_TABLE if m.displacement)
"""The relative displacements: the measures whose width exponent names a regime."""
OPTIONAL_MEASURES = tuple(m.name for m in MEASURE_TABLE if m.optional)
"""The measures recorded only on request (record.measures)."""
MARGIN_MEASURES = ("margin", "normalized_margin")
"""min_k y_k f(x_k) on the training set, and the same over the norm of a homogeneous network or of
a kernel predictor (docs/design.md §1.7; which runs may take the second: Scenario._margins_apply)."""
CURVATURE_MEASURES = tuple(m.name for m in MEASURE_TABLE if m.by == "curvature")
"""The measures of the curvature of the training risk (docs/design.md §1.9), optional."""
FIT_MEASURES = tuple(m.name for m in MEASURE_TABLE if m.fit)
"""The measures that say how well a run fits: the training loss on samples, the population risk
with infinite data (a run records one of them)."""
TEST_MEASURES = tuple(m.name for m in MEASURE_TABLE if m.needs in ("test_set", "reference") and not m.constant)
"""The measures taken on the test set at every snapshot: not recorded where the data have none."""
PANELS = tuple((m.name, m.panel) for m in MEASURE_TABLE if m.panel)
"""(measure, title) of each panel of ``plot`` after the loss curves, in order."""
VECTOR_DIMS = {m.name: m.shape[0] for m in MEASURE_TABLE if m.shape}
"""The name of the second axis of each vector measure (the first is time)."""


def kinds_recording(name: str) -> tuple[str, ...]:
    """The kinds (rows of :data:`meanfield.model.kinds.KIND_TABLE`) that record the measure ``name``,
    given what it needs of the scenario."""
    m = MEASURES[name]
    return tuple(kind.name for kind in KIND_TABLE if (not m.by or getattr(kind, m.by))
                 and m.data in ("", "population" if kind.population else "samples"))


def recorded(kind: Kind, scenario, n_test: int, *, reference: bool = False) -> dict[str, tuple]:
    """The measures a run of ``kind`` in ``scenario`` (a :class:`meanfield.config.scenario.Scenario`)
    records at every snapshot, in the table's order, with their shapes (``n_test`` test points):
    those of its kind on its data (the population risk or samples), whose needs the scenario
    meets, the optional ones if record.measures names them. ``reference``: the run is compared
    with the scenario's reference run (it records gap_ntk, given a test set)."""
    data = scenario.data
    met = {"": True, "test_set": data.has_test_set, "teacher": data.task in TEACHER_TASKS,
           "output_bias": scenario.model.output_bias, "reference": reference and data.has_test_set,
           "w2_particles": scenario.record.w2_particles > 0}
    mode = "population" if data.population else "samples"
    sizes = {"test_point": n_test}
    return {m.name: tuple(sizes[axis] for axis in m.shape) for m in MEASURE_TABLE
            if not m.constant and (not m.by or getattr(kind, m.by)) and m.data in ("", mode)
            and met[m.needs] and (not m.optional or m.name in scenario.record.measures)}
