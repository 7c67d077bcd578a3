"""One scenario, start to end: plan it, build the data and the initial particles once, take
every run through its life (:mod:`meanfield.engine.runs`) and write them into one trajectory file.

The runs share the data, the initial draws and the snapshot times. Kernel (``ntk``) runs go
first: the first of them is the reference every other run's test predictions are compared
with (``gap_ntk``); its predictions are collected as it runs and passed to the others.
"""

from __future__ import annotations

import dataclasses
import math
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from . import memory
from .. import storage
from ..model.diagnostics import rms_gap
from ..model.data import split_of
from ..errors import RunFailed, UsageError, stop_requested
from ..model.measures import FIT_MEASURES
from ..model.measures import recorded as recorded_by_kind
from .memory import FLOAT, Need, size_text
from ..model.parameterization import Resolved, resolve
from ..config.scenario import FIXED_STEP_METHODS, REGRESSION_TASKS, Scenario
from ..storage import layout
from ..model.state import RunState
from .threads import governor as thread_governor
from .threads import using as using_threads

Log = Callable[[str], None]


def _quiet(message: str) -> None:
    """The default log: say nothing."""


# ----------------------------------------------------------------------------- planning
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

    @property
    def reference(self) -> Optional[str]:
        return reference_run(self.scenario)

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
    teacher = data.teacher.describe() if data.task == "teacher_student" else None
    if teacher:
        parts.append(f"teacher {teacher}")
    return "; ".join(parts) or None


NO_TEST_SET = f"{layout.NO_TEST_SET}; the particle runs track their kernel on the first record.probe_size training points"
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
    from solvers.integrate import snapshot_times

    from ..model.data import check_source

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

    frames = len(snapshot_times(0.0, scenario.train.t_end, every)) + 1
    budget = record.max_file_mb * 1e6
    if size(2) > budget:
        raise UsageError(f"record.max_file_mb = {record.max_file_mb:g} cannot hold even the first and last "
                         f"snapshots (about {size(2) / 1e6:.3g} MB): raise it or set record.particles: false")
    if size(frames) > budget:
        per_frame = max(size(3) - size(2), 1)
        allowed = max(2, int((budget - size(0)) // per_frame))
        factor = math.ceil(frames / allowed)
        notes.append(f"record.every raised from {every:g} to {every * factor:g} to keep the file under "
                     f"{record.max_file_mb:g} MB (record.max_file_mb)")
        every *= factor
        frames = len(snapshot_times(0.0, scenario.train.t_end, every)) + 1
    times = snapshot_times(0.0, scenario.train.t_end, every)
    steps = curvature_steps(scenario, resolved)
    check_steps(scenario, every, notes, steps)
    estimate = estimate_memory(scenario, n_train, n_test, frames, size(frames) if in_memory else 0)
    if not estimate.fits:
        what = estimate.dominant
        raise UsageError(f"run {estimate.run!r} needs about {size_text(estimate.peak)} of memory at its peak "
                         f"({what.what}: {size_text(what.bytes)}), and {size_text(estimate.available)} are "
                         f"available: lower {what.lower}")
    return Plan(scenario, resolved, every, times, size(frames), n_train, n_test, estimate, notes, steps)


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


# ----------------------------------------------------------------------------- the reference
class Reference:
    """The reference run's test predictions at time t, what ``gap_ntk`` compares with: its
    snapshot at t; a closed-form reference's solution at any other t; after its last
    snapshot, if it stopped early (``stop_loss``), the predictions it stopped with; else NaN."""

    def __init__(self, n_test: int):
        self.frames: dict[float, np.ndarray] = {}
        self.exact: Optional[Callable[[float], np.ndarray]] = None
        self.stopped = False
        self.last: Optional[tuple[float, np.ndarray]] = None
        self._missing = np.full(n_test, np.nan)

    def record(self, t: float, f_test: np.ndarray) -> None:
        self.frames[_time_key(t)] = f_test
        self.last = (float(t), f_test)

    def at(self, t: float) -> np.ndarray:
        frame = self.frames.get(_time_key(t))
        if frame is not None:
            return frame
        if self.exact is not None:
            return self.exact(t)
        if self.stopped and self.last is not None and t > self.last[0]:
            return self.last[1]
        return self._missing


def _time_key(t: float) -> float:
    return round(float(t), 9)


# ----------------------------------------------------------------------------- running
STUCK = 1e-3
"""A run whose fit measure ends within this relative change of its start is reported as
possibly stuck."""


@dataclass
class RunReport:
    """How one run ended: its status, the time and steps it reached, its final measures,
    and for a complete run how it ended (``ended``: 't_end' or 'stop_loss', against the
    scenario's ``stop_loss``); ``notes`` are warnings (a run that did not move)."""

    name: str
    status: str
    t: float
    steps: int
    measures: dict = field(default_factory=dict)
    ended: Optional[str] = None
    stop_loss: float = 0.0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        """'rich: complete: reached stop_loss 0.0001 at t = 12.3, loss_train 9.8e-05 (250 steps)',
        or for a run that did not complete 'rich: failed: ...; t = 3.1 (62 steps), loss_train nan'."""
        from ..storage.summary import ending

        fit = next((name for name in FIT_MEASURES if name in self.measures), None)
        loss = self.measures.get(fit, math.nan)
        if self.ended:
            text = f"{self.status}: {ending(self.ended, self.t, self.stop_loss, fit, loss)} ({self.steps} steps)"
        else:
            text = f"{self.status}; t = {self.t:.4g} ({self.steps} steps), {fit} {loss:.4g}"
        return "; ".join([f"{self.name}: {text}", *self.notes])


def stuck_notes(writer, final: dict) -> list[str]:
    """A warning when the run's fit measure (loss_train, or risk) ended within a relative
    STUCK of its value at the first snapshot: a run that did not train (a learning rate
    too small for t_end, or a first step so large that it killed every unit)."""
    fit = next((name for name in FIT_MEASURES if name in final), None)
    if fit is None or not writer.frames:
        return []
    start, end = float(writer.written(fit)[1][0]), final[fit]
    if not (start > 0 and math.isfinite(end)) or abs(end - start) >= STUCK * start:
        return []
    return [f"warning: {fit} has not moved from its start ({start:.4g} to {end:.4g}, relative change "
            f"{abs(end - start) / start:.2g} < {STUCK:g}): is the run stuck? check the learning rate, dt and t_end"]


def simulate(scenario: Scenario, output=None, *, resume: bool = False, overwrite: bool = False,
             log: Log = _quiet, progress: Optional[Callable] = None, threads: Optional[int] = None):
    """Run every run of ``scenario`` into one trajectory file (in memory when ``output`` is
    None); return ``(trajectory, reports)``, the file open for reading and a report per run.

    An existing ``output`` is replaced only with ``overwrite`` (a file that is not a
    trajectory of ours never is) and continued with ``resume``. ``progress(name, t0, t_end)``
    gives a context manager with ``update_state(state)`` called after every step.

    Raises ``RunFailed`` (its ``trajectory`` is the file) after all runs are done if any of
    them diverged: its entry is marked failed and keeps every valid snapshot.
    ``threads`` fixes the numerical core's thread count for the call (default: the process's
    setting, :func:`meanfield.set_threads` or ``MEANFIELD_THREADS``, else chosen by
    measurement while each run steps: docs/design.md §6.4).
    ``KeyboardInterrupt`` leaves the file valid with the run marked 'interrupted', resumable.
    """
    with using_threads(threads):
        return _simulate(scenario, output, resume=resume, overwrite=overwrite, log=log, progress=progress)


def _simulate(scenario: Scenario, output, *, resume: bool, overwrite: bool, log: Log, progress: Optional[Callable]):
    from .runs import make_run

    if resume and output is None:
        raise UsageError("resume needs the file to continue: give output")
    the_plan = plan(scenario, in_memory=output is None)
    for note in the_plan.notes:
        log(note)
    if lacks_test_set(scenario):
        log(NO_TEST_SET)
    where = output or "memory"
    log(f"{where}: about {the_plan.estimated_bytes / 1e6:.3g} MB, {len(the_plan.times) + 1} snapshots per run "
        f"(every {the_plan.every:g})")
    inputs = run_inputs(scenario, the_plan.times)  # the plan checked the labels a loss needs
    data = inputs.data
    reference = the_plan.reference
    order = sorted(scenario.runs, key=lambda name: name != reference)
    measured = {name: lambda_0 for name, (_, lambda_0, _) in the_plan.steps.items()}
    runs = {name: make_run(name, scenario.runs[name], the_plan.resolved[name], inputs, measured.get(name))
            for name in order}  # built before the file: what fails here writes nothing
    with storage.WriterLock(output) if output is not None else nullcontext():
        trajectory = _open_output(scenario, output, data, the_plan.estimated_bytes, resume=resume,
                                  overwrite=overwrite)
        reports, predictions = {}, None
        try:
            for name, run in runs.items():
                r = run.resolved
                log(f"{name}: {run.solver}, {r.preset}, predicted {r.regime.label} ({r.regime.reason})")
                collect = Reference(data.n_test) if name == reference and scenario.data.has_test_set else None
                gap = predictions if records_gap(scenario, name) else None
                reports[name] = _execute(run, trajectory, resume, progress, collect, gap)
                log(reports[name].line())
                if collect is not None:
                    predictions = collect
                if collect is None or collect.exact is None:
                    run.close()  # a closed-form reference stays: other runs may need it between snapshots
        except storage.NoRoom as exc:
            trajectory.close()
            raise RunFailed(f"{output}: {exc.strerror}; the file keeps every snapshot written before: free some "
                            "space and continue it with --resume (resume=True)") from None
        except Exception as exc:
            if not storage.is_out_of_room(exc):
                trajectory.close()
                raise
            with suppress(Exception):  # the HDF5 library may refuse to close a file it could not write
                trajectory.close()
            raise RunFailed(f"{output}: writing failed ({storage.write_error_reason(exc)}) past the free space "
                            "the run could see (a quota?): the HDF5 library may have left the last snapshots "
                            "unreadable; free some space and try --resume, else start again with --overwrite") from None
        except BaseException:
            trajectory.close()
            raise
        finally:
            for run in runs.values():
                run.close()
        result = trajectory.finish()
    failed = [report for report in reports.values() if report.status.startswith("failed")]
    if failed:
        raise RunFailed("; ".join(f"run {r.name!r} {r.status}" for r in failed)
                        + f" ({output or 'the trajectory'} keeps every snapshot before the failure)", trajectory=result)
    return result, [reports[name] for name in scenario.runs]


def _open_output(scenario: Scenario, output, data, estimated_bytes: float, *, resume: bool, overwrite: bool):
    """The trajectory file to write: continued (``resume``), or new (in memory when
    ``output`` is None); an existing file is replaced only with ``overwrite``, and only
    when the disk has room for the plan's estimate. The caller holds the output's lock."""
    yaml_text = scenario.resolved_yaml()
    existing = Path(output).stat().st_size if output is not None and Path(output).exists() else None
    if resume:
        if existing is None:
            raise UsageError(f"--resume: {output} does not exist (run without --resume first)")
        trajectory = storage.open_for_resume(output, same_scenario=scenario.describes_stored)
        _check_room(output, estimated_bytes - existing)
        return trajectory
    if existing is not None:
        _refuse_to_replace(output, overwrite, scenario)
    if output is not None:
        _check_room(output, estimated_bytes - (existing or 0))  # a replaced file's space comes back
    trajectory = storage.create(output, scenario_yaml=yaml_text, seed=scenario.seed)
    if scenario.data.population:
        trajectory.write_data(teacher=data.teacher)
    else:
        trajectory.write_data(data.X_train, data.y_train, data.X_test, data.y_test, data.teacher)
    return trajectory


def _refuse_to_replace(output, overwrite: bool, scenario: Scenario) -> None:
    """An existing file at the output path is replaced only with ``overwrite``, and only if
    it is one of our trajectories; the refusal says what the file holds and what to do."""
    try:
        with storage.open_trajectory(output) as existing:
            same = scenario.describes_stored(existing.scenario_yaml)
            finished = existing.complete
    except UsageError as exc:
        raise UsageError(f"refusing to overwrite {output}: {exc}") from None
    if overwrite:
        return
    replace = "replace it with --overwrite (overwrite=True)"
    if same and not finished:
        raise UsageError(f"{output} holds an unfinished run of this scenario: continue it with --resume "
                         f"(resume=True), or {replace}")
    what = "the finished runs of this scenario" if same else "the runs of another scenario"
    raise UsageError(f"{output} exists and holds {what}: {replace}, or write elsewhere with --output")


def _check_room(output, needed: float) -> None:
    """Refuse to start when the disk (or ``ulimit -f``) has no room for the plan's estimate."""
    try:
        storage.check_room(output, max(needed, 0.0), "the plan's estimate of the file")
    except storage.NoRoom as exc:
        raise UsageError(f"{output}: {exc.strerror}; free some space, write elsewhere with --output, or "
                         "record less (a larger record.every, record.particles: false)") from None


def _execute(run, trajectory, resume: bool, progress, collect: Optional[Reference],
             gap: Optional[Reference]) -> RunReport:
    """Take one run into its entry of the file (continuing it with ``resume``). ``collect``
    gathers the predictions of the reference run; ``gap`` is the reference of the others."""
    from .runs import ExactRun

    writer, checkpoint = _open_run(trajectory, run, resume)
    if collect is not None:  # on resume: what an earlier process wrote of the reference
        for t, f_test in zip(*writer.written("f_test")):
            collect.record(float(t), f_test)
    if writer.status == "complete":
        report = _report_from_file(run, trajectory)
        if collect is not None and isinstance(run, ExactRun):
            run.start()  # the solution between snapshots
    else:
        recorder = Recorder(run, writer, collect, gap)
        try:
            report = _exact(run, recorder) if isinstance(run, ExactRun) else _flow(run, recorder, checkpoint, progress)
        except KeyboardInterrupt:
            writer.status = "interrupted"
            raise
        except storage.NoRoom as exc:
            with suppress(storage.NoRoom):  # a full disk may have no room left even for the status
                writer.status = f"failed: {exc.strerror}"
            raise
        except Exception as exc:
            if storage.is_out_of_room(exc):  # the file may not take another write: leave it as it is
                raise
            if stop_requested():  # SIGTERM cut into an import (an ImportError): the stop, not a failure
                writer.status = "interrupted"
                raise KeyboardInterrupt from exc
            writer.status = f"failed: {type(exc).__name__}: {exc}"
            raise
    if collect is not None:
        collect.stopped = writer.status == "complete"
        if isinstance(run, ExactRun):
            collect.exact = run.test_predictions
    return report


class Recorder:
    """Writes a run's snapshots: its measures (with gap_ntk from the reference), its particles,
    and for a flow run its checkpoint; the reference run's predictions are also collected."""

    def __init__(self, run, writer, collect: Optional[Reference], gap: Optional[Reference]):
        self.run, self.writer, self.collect, self.gap = run, writer, collect, gap

    def measures(self, state: RunState) -> dict:
        measures = self.run.measure(state)
        if self.gap is not None:
            measures["gap_ntk"] = rms_gap(measures["f_test"], self.gap.at(state.t))
        return measures

    def snapshot(self, state: RunState) -> dict:
        """Write the snapshot at ``state``; returns its measures."""
        measures = self.measures(state)
        self.writer.append(state.step, state.t, self.run.particles(state), measures)
        if self.collect is not None:
            self.collect.record(state.t, measures["f_test"])
        return measures

    def checkpoint(self, state: RunState) -> None:
        self.writer.save_checkpoint(state)


def _flow(run, recorder: Recorder, checkpoint: Optional[RunState], progress) -> RunReport:
    """Step a flow run from its start (or checkpoint) to the end, writing every snapshot; the
    loop hands each snapshot's state, its random stream's state included, as the checkpoint."""
    from solvers.integrate import integrate

    from .runs import run_rng

    scenario = run.inputs.scenario
    state = run.start(checkpoint)
    rng = run_rng(scenario.seed, run.name)
    if checkpoint is None:
        state = dataclasses.replace(state, rng=rng.bit_generator.state)
        recorder.snapshot(state)
        recorder.checkpoint(state)
    else:
        rng.bit_generator.state = state.rng

    governor = thread_governor()

    def on_snapshot(now: RunState) -> None:
        with governor.paused() if governor else nullcontext():
            recorder.snapshot(now)
            recorder.checkpoint(now)

    times = run.inputs.times
    bar = progress(run.name, state.t, scenario.train.t_end) if progress else nullcontext()
    on_step = _each_step(getattr(bar, "update_state", None), governor.step if governor else None)
    # overflow on the way to a blow-up is expected: the loop checks finiteness itself
    with bar, np.errstate(over="ignore", invalid="ignore"):
        outcome = integrate(run.field, state, run.stepper,
                            times[times > state.t + 1e-12], on_snapshot=on_snapshot,
                            stop_loss=scenario.train.stop_loss, rng=rng, on_step=on_step,
                            max_abs=float(np.finfo(scenario.record.dtype).max),
                            exact_steps=run.integrator.dt_factor is not None)
    end, writer = outcome.state, recorder.writer
    with np.errstate(over="ignore", invalid="ignore"):
        final = recorder.measures(end)
    if outcome.status == "diverged":
        writer.status = f"failed: {outcome.message}"
        return RunReport(run.name, writer.status, end.t, end.step, final)
    return _complete(run, writer, "stop_loss" if outcome.status == "stop_loss" else "t_end", end.t, end.step, final)


def _complete(run, writer, ended: str, t: float, steps: int, final: dict) -> RunReport:
    """Mark the run complete in the file, with how it ended; its report."""
    writer.complete(ended, t)
    stop_loss = run.inputs.scenario.train.stop_loss
    return RunReport(run.name, "complete", t, steps, final, ended, stop_loss, stuck_notes(writer, final))


def _each_step(*callbacks) -> Optional[Callable]:
    """One ``on_step`` callback calling each of ``callbacks`` that is not None."""
    live = [callback for callback in callbacks if callback is not None]
    if not live:
        return None
    if len(live) == 1:
        return live[0]

    def each(state) -> None:
        for callback in live:
            callback(state)

    return each


def _exact(run, recorder: Recorder) -> RunReport:
    """A run known in closed form: every snapshot evaluated directly (nothing to resume)."""
    run.start()
    constants = run.constants()
    recorder.writer.set_constants(constants)
    stop_loss, ended = run.inputs.scenario.train.stop_loss, "t_end"
    for state in run.states(np.concatenate([[0.0], run.inputs.times])):
        measures = recorder.snapshot(state)
        if measures.get("loss_train", measures.get("risk", np.inf)) < stop_loss:
            ended = "stop_loss"
            break  # at a snapshot time: the closed form has no steps to stop between
    return _complete(run, recorder.writer, ended, state.t, 0, {**measures, **constants})


def _open_run(trajectory, run, resume: bool):
    """The run's writer, and where to start: None (from t = 0) or the last checkpoint."""
    from .runs import ExactRun

    scenario = run.inputs.scenario
    if resume and run.name in trajectory.runs:
        writer = trajectory.run(run.name)
        if writer.status == "complete":
            return writer, None
        saved = None if isinstance(run, ExactRun) else writer.load_checkpoint()
        checkpoint, frames = saved if saved is not None else (None, 0)
        try:
            writer.truncate(frames)
        except (OSError, RuntimeError) as exc:  # what HDF5 says of chunks a failed write left half-written
            raise UsageError(f"{trajectory.path}: cannot continue run {run.name!r}: its snapshots after the last "
                             f"checkpoint are unreadable ({exc}); start it again with --overwrite") from None
        writer.status = "running"
        return writer, checkpoint
    measures = recorded_measures(scenario, run.name, run.inputs.data.n_test)
    writer = trajectory.add_run(run.name, attrs=run.attrs, m=scenario.model.width, d=scenario.data.dim,
                                bias=scenario.model.bias, particles=run.records_particles,
                                dtype=np.dtype(scenario.record.dtype), measures=measures)
    return writer, None


def _report_from_file(run, trajectory) -> RunReport:
    """The report of a run the file already holds complete (a resume had nothing to do)."""
    from ..storage.reader import RecordedRun

    recorded = RecordedRun(trajectory.h5, run.name)
    return RunReport(run.name, "complete (already in the file)", recorded.t, 0, recorded.final(), recorded.ended,
                     run.inputs.scenario.train.stop_loss)
