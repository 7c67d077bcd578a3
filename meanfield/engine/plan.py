"""What a scenario will do, before anything heavy is built: the plan (its runs, their
integrators and measures, the snapshot times, the step checks, the memory and file estimate) and
the inputs every run shares (the data, the initial draws). ``meanfield simulate --dry-run`` and
:func:`meanfield.plan` stop here; :mod:`meanfield.engine.driver` runs what it plans.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .. import storage
from ..config.scenario import Scenario
from ..config.sections import FIXED_STEP_METHODS, REAL_TASKS, REGRESSION_TASKS
from ..errors import UsageError
from ..model.data import split_of
from ..model.measures import recorded as recorded_by_kind
from ..model.parameterization import Resolved, resolve
from ..storage import layout
from . import memory
from .memory import FLOAT, Need, size_text

MAX_STEPS = 10**9
"""The most steps a fixed-step run may take, about train.t_end / its integrator's dt (hours
even at the fastest step): more is a mistake, refused by the plan."""


@dataclass(frozen=True)
class MemoryEstimate:
    """The peak memory of a plan: what every run shares, plus the needs of its largest run
    (``run``), against what the machine has (``available``, None when unknown)."""

    shared: list[Need]
    run: str
    needs: list[Need]
    available: Optional[int]

    @property
    def peak(self) -> float:
        return sum(need.bytes for need in [*self.shared, *self.needs])

    @property
    def dominant(self) -> Need:
        return max([*self.shared, *self.needs], key=lambda need: need.bytes)

    @property
    def fits(self) -> bool:
        return self.available is None or self.peak <= self.available

    def describe(self) -> str:
        """'peak memory: about 128 MB (run ntk; the most: the 2000 x 1500 kernel, 48 MB); 20 GB available'."""
        what = self.dominant
        available = "unknown" if self.available is None else size_text(self.available)
        return (f"peak memory: about {size_text(self.peak)} (run {self.run}; the most: {what.what}, "
                f"{size_text(what.bytes)}); {available} available")


@dataclass
class Plan:
    """What a scenario will do: resolved parameterizations, snapshot times, the file size."""

    scenario: Scenario
    resolved: dict[str, Resolved]
    every: float
    times: np.ndarray
    """Snapshot times after t = 0 (the last one is t_end)."""
    estimated_bytes: int
    n_train: int
    n_test: int
    """The data's sizes (a ``file`` task's from its file); in population mode the keys' values,
    which no run uses (:meth:`describe` does not show them)."""
    memory: Optional[MemoryEstimate] = None
    notes: list[str] = field(default_factory=list)
    steps: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    """(dt_factor c, lambda_0, dt) of each stepping run whose integrator has a dt_factor."""

    per_decade: Optional[int] = None
    """The log clock's snapshots per decade (record.per_decade, or fewer to fit the file); None
    on the linear clock, a snapshot every ``every``."""
    planned_in: float = 0.0
    """Seconds :func:`plan` took (a run plans again: part of the time estimate)."""

    @property
    def clock(self) -> str:
        """The snapshot clock in words: 'every 0.5', or 'log clock from t = 1, 10 per decade'."""
        if self.per_decade is None:
            return f"every {self.every:g}"
        return f"log clock from t = {self.every:g}, {self.per_decade} per decade"

    @property
    def reference(self) -> Optional[str]:
        return reference_run(self.scenario)

    def estimate_time(self, threads: Optional[int] = None):
        """How long the scenario will take on this machine: a
        :class:`meanfield.engine.timing.TimeEstimate` (``.seconds``, ``.runs``, ``.describe()``),
        measured now by a short calibration of every run at its true size (about a second;
        docs/design.md §4.8). ``threads`` as :func:`meanfield.simulate` takes it."""
        from .timing import estimate

        return estimate(self, threads)

    def describe(self, output: Optional[str] = None) -> str:
        """What ``--dry-run`` prints: each run's resolved numbers and predicted regime, the
        snapshot schedule and the file size."""
        sc = self.scenario
        lines = [f"scenario {sc.name}: {len(sc.runs)} run(s), width {sc.model.width}, dim {sc.data.dim}, "
                 + (POPULATION_DATA if sc.data.population else f"n_train {self.n_train}, n_test {self.n_test}")]
        if sc.data.population and any("kernel_distance" in recorded_measures(sc, name, 0) for name in sc.runs):
            lines.append(f"  kernel measures on record.probe_size = {sc.record.probe_size} Gaussian probe points "
                         "(drawn with the data seed)")
        data = data_description(sc)
        if data:
            lines.append(f"  data: {data}")
        if sc.data.task == "file":
            lines.append(f"  data: {split_of(sc.data)}")
        if lacks_test_set(sc):
            lines.append(f"  {NO_TEST_SET}")
        integrators = run_integrators(sc)
        for name, r in self.resolved.items():
            bias = "" if r.eta_c is None else f", eta_c = {r.eta_c:.4g}, c_std = {r.c_std:.4g}"
            bias = bias if r.eta_b is None else f", eta_b = {r.eta_b:.4g}{bias}"
            lines.append(f"  {name}: {r.preset}: s = {r.s:.4g}, eta_a = {r.eta_a:.4g}, eta_w = {r.eta_w:.4g}, "
                         f"a_std = {r.a_std:.4g}{bias}; predicted {r.regime.label}: {r.regime.reason}")
            if not sc.kind(sc.runs[name]).particles:
                lines.append(f"    {kernel_flow_text(sc, sc.runs[name])}")
            if len(set(integrators.values())) > 1 and name in integrators:
                lines.append(f"    integrator ({sc.integrator_key(name)}): {integrators[name]}")
            if name in self.steps:
                c, lambda_0, dt = self.steps[name]
                lines.append(f"    step ({sc.integrator_key(name)}.dt_factor): dt = c * 2 / lambda_0 = "
                             f"{c:g} * 2 / {lambda_0:.6g} = {dt:.6g}, every step of it (a snapshot at the first "
                             "step at or after each snapshot time)")
        lines += self.notes
        where = f"would write {output}" if output else "would write the trajectory"
        lines.append(f"{where}: about {self.estimated_bytes / 1e6:.3g} MB, {len(self.times) + 1} snapshots per run")
        if self.memory is not None:
            lines.append(self.memory.describe())
        return "\n".join(lines)


POPULATION_DATA = ("infinite data (data.population: the population risk in closed form, exact; "
                   "data.n_train and data.n_test do not apply)")
"""What --dry-run says of the data in population mode, in place of n_train and n_test."""


def data_description(scenario: Scenario) -> Optional[str]:
    """The data settings that differ from the defaults and are not in the first line of
    ``--dry-run``: the data seed, the inputs, the teacher's rules (None when none differ)."""
    data, parts = scenario.data, []
    if data.seed is not None:
        parts.append(f"seed {data.seed} (the particles and the runs' noise: seed {scenario.seed})")
    if data.inputs != "gaussian" and data.task in REGRESSION_TASKS:
        parts.append(f"inputs {data.inputs}")
    if data.task in REAL_TASKS:
        from ..model.real_data import describe_labels

        parts.append(f"{data.task}: labels {describe_labels(data.labels)}, standardised and PCA to dim {data.dim} "
                     f"fitted on the training set, inputs {data.inputs}")
    teacher = data.teacher.describe() if data.task == "teacher_student" else None
    if teacher:
        parts.append(f"teacher {teacher}")
    return "; ".join(parts) or None


NO_TEST_SET = (f"{layout.NO_TEST_SET}; the particle runs track their kernel on the first record.probe_size "
               "training points")
"""What a plan and a simulation say of data without a test set."""


def lacks_test_set(scenario: Scenario) -> bool:
    """Samples without a test set (a ``file`` task with data.test_fraction 0), not infinite data."""
    return not (scenario.data.has_test_set or scenario.data.population)


def kernel_flow_text(scenario: Scenario, spec) -> str:
    """What an ntk run solves, for --dry-run: its kernel, its ridge and whether its
    t -> infinity limit is stored (its kind's ``limits``: squared loss only, docs/design.md §1.6)."""
    ridge = f"ridge {spec.ridge:g}" if spec.ridge else "ridgeless"
    if scenario.kind(spec).limits:
        how = "closed form; its t -> infinity limit stored as loss_train_limit, loss_test_limit"
    else:
        how = f"integrated ({scenario.loss} loss: no closed-form limit)"
    return f"kernel flow with the {spec.kernel} kernel, {ridge}: {how}"


def run_integrators(scenario: Scenario) -> dict[str, str]:
    """Each stepping run's integrator in words ('rk4, dt 0.05'), for --dry-run to show when
    the runs' integrators differ."""
    def words(integrator) -> str:
        defaults = type(integrator).model_fields
        shown = [f"{key} {value:g}" for key, value in integrator.model_dump().items()
                 if key != "method" and value is not None and (key == "dt" or value != defaults[key].default)]
        return ", ".join([integrator.method, *shown])

    return {name: words(scenario.integrator_of(scenario.runs[name])) for name in stepping_runs(scenario)}


def reference_run(scenario: Scenario) -> Optional[str]:
    """The first run of a kind with ``reference`` (an ``ntk`` run): what every other run's
    predictions are compared with."""
    return next((name for name, run in scenario.runs.items() if scenario.kind(run).reference), None)


def records_gap(scenario: Scenario, name: str) -> bool:
    """Every run but the reference itself records gap_ntk, when there is a reference (and a
    test set to compare the predictions on)."""
    reference = reference_run(scenario)
    return reference is not None and name != reference and scenario.data.has_test_set


def recorded_measures(scenario: Scenario, name: str, n_test: int) -> dict[str, tuple]:
    """The measures run ``name`` records (gap_ntk included) and their per-snapshot shapes,
    with ``n_test`` test points."""
    return recorded_by_kind(scenario.kind(scenario.runs[name]), scenario, n_test, reference=records_gap(scenario, name))


def plan(scenario: Scenario, *, in_memory: bool = False) -> Plan:
    """Resolve every run, check the data source (a ``file`` task's file: what only the disk
    knows), choose the snapshot times so the file fits ``record.max_file_mb``, check the
    steps a fixed-step run takes (:func:`check_steps`) and that the largest run fits in the
    memory available (:func:`estimate_memory`; ``in_memory``: the trajectory file too)."""
    from solvers.integrate import log_snapshot_times, snapshot_times

    from ..model.data import check_source

    began = time.perf_counter()
    n_train, n_test = check_source(scenario.data, scenario.loss)
    d, m = scenario.data.dim, scenario.model.width
    stepping = stepping_runs(scenario)
    resolved = {name: resolve(run.parameterization, scenario.model, d,
                              scenario.integrator_of(run).dt_factor if name in stepping else None,
                              fixed_kernel=not scenario.kind(run).tracks_kernel)
                for name, run in scenario.runs.items()}
    record, notes = scenario.record, []
    every = min(record.every, scenario.train.t_end)
    itemsize = np.dtype(record.dtype).itemsize
    data_values = 0 if scenario.data.population else (n_train + n_test) * (d + 1)
    n_measures = {name: sum(math.prod(shape) for shape in recorded_measures(scenario, name, n_test).values())
                  for name in scenario.runs}

    def size(frames):
        return sum(
            storage.estimate_bytes(
                frames=frames, m=m, d=d, bias=scenario.model.bias,
                particles=record.particles and scenario.kind(run).particles, n_measures=n_measures[name],
                itemsize=itemsize, n_data_values=data_values if index == 0 else 0,
            )
            for index, (name, run) in enumerate(scenario.runs.items())
        )

    times = record.snapshot_times(scenario.train.t_end)
    per_decade = record.per_decade if record.clock == "log" else None
    frames = len(times) + 1
    budget = record.max_file_mb * 1e6
    if size(2) > budget:
        less = " or set record.particles: false" if record.particles else ""
        raise UsageError(f"record.max_file_mb = {record.max_file_mb:g} cannot hold even the first and last "
                         f"snapshots (about {size(2) / 1e6:.3g} MB): raise it{less}")
    if size(frames) > budget:
        per_frame = max(size(3) - size(2), 1)
        allowed = max(2, int((budget - size(0)) // per_frame))
        factor = math.ceil(frames / allowed)
        if record.clock == "log":
            per_decade = max(1, record.per_decade // factor)
            notes.append(f"record.per_decade lowered from {record.per_decade} to {per_decade} to keep the file under "
                         f"{record.max_file_mb:g} MB (record.max_file_mb)")
            times = log_snapshot_times(every, scenario.train.t_end, per_decade)
        else:
            notes.append(f"record.every raised from {every:g} to {every * factor:g} to keep the file under "
                         f"{record.max_file_mb:g} MB (record.max_file_mb)")
            every *= factor
            times = snapshot_times(0.0, scenario.train.t_end, every)
        frames = len(times) + 1
    steps = curvature_steps(scenario, resolved)
    # a fixed step longer than the interval between snapshots (the log clock's shortest, its first
    # two) is shortened to land on them
    shortest = every if record.clock == "linear" else float(np.min(np.diff(times, prepend=0.0)[:2]))
    check_steps(scenario, shortest, notes, steps)
    estimate = estimate_memory(scenario, n_train, n_test, frames, size(frames) if in_memory else 0)
    if not estimate.fits:
        what = estimate.dominant
        raise UsageError(f"run {estimate.run!r} needs about {size_text(estimate.peak)} of memory at its peak "
                         f"({what.what}: {size_text(what.bytes)}), and {size_text(estimate.available)} are "
                         f"available: lower {what.lower}")
    return Plan(scenario, resolved, every, times, size(frames), n_train, n_test, estimate, notes, steps, per_decade,
                time.perf_counter() - began)


def run_inputs(scenario: Scenario, times: np.ndarray):
    """What every run of ``scenario`` starts from (runs.RunInputs): the data, the initial draws,
    the snapshot times ``times`` and the activation and loss codes."""
    from solvers.activations import activation_code
    from solvers.losses import loss_code

    from ..model.data import make_dataset
    from .runs import RunInputs, data_rng, initial_draws, rng_for

    data = make_dataset(scenario.data, data_rng(scenario))
    return RunInputs(scenario, data, initial_draws(scenario, rng_for(scenario.seed, 1)), times,
                     activation_code(scenario.model.activation), loss_code(scenario.loss))


def curvature_steps(scenario: Scenario, resolved: dict[str, Resolved]) -> dict[str, tuple[float, float, float]]:
    """(c, lambda_0, dt = c * 2 / lambda_0) of each stepping run whose integrator gives a
    dt_factor c (docs/design.md §1.9): lambda_0 from the run's own initial particles (or
    kernel) on the training set; the data are built for it, only then."""
    from .runs import make_run

    names = [name for name in stepping_runs(scenario) if scenario.integrator_of(scenario.runs[name]).dt_factor]
    if not names:
        return {}
    inputs = run_inputs(scenario, np.empty(0))
    steps = {}
    for name in names:
        run = make_run(name, scenario.runs[name], resolved[name], inputs)
        integrator = run.integrator
        steps[name] = (integrator.dt_factor, run.lambda_0, integrator.dt)
    return steps


def stepping_runs(scenario: Scenario) -> list[str]:
    """The runs the integrator steps (a run known in closed form takes no steps)."""
    return [name for name, spec in scenario.runs.items() if scenario.kind(spec).steps]


def check_steps(scenario: Scenario, every: float, notes: list[str], steps: Optional[dict] = None) -> None:
    """A fixed-step method takes about t_end / min(dt, every) steps: refuse more than
    MAX_STEPS; a dt above the snapshot interval ``every`` is shortened to land on every
    snapshot, which a note says (not a dt_factor's: its run snapshots at the first step at or
    after each snapshot time, docs/design.md §3.4). Each stepping run with its own integrator
    (:meth:`Scenario.integrator_of`), the others with train.integrator; a run with a dt_factor
    with its dt from ``steps`` (:func:`curvature_steps`)."""
    t_end, steps = scenario.train.t_end, steps or {}
    shortened: dict[str, list[str]] = {}
    for name in stepping_runs(scenario):
        integrator, key = scenario.integrator_of(scenario.runs[name]), scenario.integrator_key(name)
        if integrator.method not in FIXED_STEP_METHODS:
            continue
        dt = steps[name][2] if name in steps else integrator.dt
        count = t_end / (dt if name in steps else min(dt, every))  # a dt_factor's step is never shortened
        if count > MAX_STEPS:
            least = t_end / MAX_STEPS
            raise_ = (f"{key}.dt_factor to at least {integrator.dt_factor * least / dt:.3g} (dt {least:.3g})"
                      if name in steps else f"{key}.dt to at least {least:.3g}")
            raise UsageError(f"train.t_end / {key}.dt = {t_end:g} / {dt:g} = {count:.3g} steps per run, more than "
                             f"the {MAX_STEPS:.0e} allowed: raise {raise_} (or lower train.t_end)")
        if dt > every and name not in steps:
            shortened.setdefault(f"{key}.dt {dt:g}", []).append(name)
    for what, runs in shortened.items():
        notes.append(f"run{'s' if len(runs) > 1 else ''} {', '.join(runs)}: {what} > record.every {every:g}: "
                     f"steps shortened to {every:g} to land on every snapshot")


def estimate_memory(scenario: Scenario, n_train: int, n_test: int, frames: int, file_bytes: float = 0
                    ) -> MemoryEstimate:
    """The peak memory of the scenario's largest run (each kind's ``Run.memory``) with what
    every run shares: the data (built once), the initial draws, the reference's predictions
    at every snapshot (kept for the other runs' gap_ntk) and ``file_bytes`` of a trajectory
    kept in memory."""
    from .runs import run_class

    d, m = scenario.data.dim, scenario.model.width
    shared = [Need("the initial draws", FLOAT * m * (d + 2), "model.width")]
    if not scenario.data.population:
        shared.append(Need("the data", 2 * FLOAT * (n_train + n_test) * (d + 1), "data.n_train, data.n_test"))
    if any(records_gap(scenario, name) for name in scenario.runs):
        shared.append(Need(f"the reference's predictions at {frames} snapshots", FLOAT * frames * n_test,
                           "data.n_test or the snapshots (raise record.every)"))
    if file_bytes:
        shared.append(Need("the trajectory file, in memory", file_bytes, "record.max_file_mb, or write to a file"))
    needs = {name: run_class(scenario, spec).memory(scenario, spec, n_train, n_test, frames)
             for name, spec in scenario.runs.items()}
    largest = max(needs, key=lambda name: sum(need.bytes for need in needs[name]))
    return MemoryEstimate(shared, largest, needs[largest], memory.available_bytes())
