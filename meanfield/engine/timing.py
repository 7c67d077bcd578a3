"""How long a scenario will take on this machine, before it runs: a short calibration of every
run at the scenario's true sizes (docs/design.md §4.8). ``Plan.estimate_time`` calls it;
``meanfield simulate --dry-run`` prints it.

A run's time is

    T = setup + steps * step + snapshots * snapshot

with ``setup`` its start (each run's kernel, its eigendecomposition, its first step, which
loads the compiled kernels; once for the scenario, the plan, the data and the initial draws,
and the file's header and data), ``step`` the
time of one step after the first, ``snapshot`` the time (after the first, whose compiled kernels
are loaded in ``setup``) of its measures and of writing them
(particles and checkpoint included) into a file in memory. A fixed-step run's ``steps`` is
known (:func:`fixed_steps`, what the integrator loop takes); an adaptive stepper's (rk45,
loss_clock) is not: the estimate counts one step per snapshot interval, the least it can take,
and says that its time is at least that (``TimeEstimate.at_least``). A run that reaches
train.stop_loss stops early: the estimate is then an upper bound for it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

SLACK = 1e-12
"""The integrator loop's relative slack on landing on a snapshot time (solvers.integrate._SLACK)."""

STEP_SECONDS = 0.2
"""Seconds of steps timed per run, about (at least one step per batch)."""

BATCHES = 5
"""Batches of steps timed per thread count: the step time is the median of their means."""


@dataclass(frozen=True)
class RunTime:
    """The calibrated cost of one run (seconds) and the counts it is multiplied by."""

    name: str
    setup: float
    step: float
    steps: int
    snapshot: float
    snapshots: int
    exact_count: bool = True
    """Whether ``steps`` is the run's count (a fixed step, or no steps); False: an adaptive
    stepper's, the least it can take (one per snapshot interval)."""

    @property
    def seconds(self) -> float:
        """setup + steps * step + snapshots * snapshot."""
        return self.setup + self.steps * self.step + self.snapshots * self.snapshot

    @property
    def snapshot_share(self) -> float:
        """The part of the run's time spent in snapshots: snapshots * snapshot / seconds."""
        return self.snapshots * self.snapshot / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        steps = "" if not self.steps else (f", {'at least ' if not self.exact_count else ''}{self.steps} steps of "
                                           f"{_ms(self.step)}")
        return (f"  {self.name}: {'at least ' if not self.exact_count else ''}{_seconds(self.seconds)} "
                f"(start {_seconds(self.setup)}{steps}, {self.snapshots} snapshots of {_ms(self.snapshot)})")


@dataclass(frozen=True)
class TimeEstimate:
    """The estimated time of a scenario's runs on this machine, measured now (:func:`estimate`)."""

    runs: list[RunTime]
    shared: float
    """Seconds of what every run shares, paid once: the plan (a run plans again), the data and
    the initial draws, the file's header and data."""
    calibration: float
    """Seconds the calibration itself took."""
    notes: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        """The whole scenario: shared + the sum of the runs' times."""
        return self.shared + sum(run.seconds for run in self.runs)

    @property
    def at_least(self) -> bool:
        """Whether some run's step count is only a lower bound (an adaptive stepper)."""
        return any(not run.exact_count for run in self.runs)

    @property
    def snapshot_share(self) -> float:
        """The part of the whole time spent in snapshots (measures and writing)."""
        spent = sum(run.snapshots * run.snapshot for run in self.runs)
        return spent / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        """What ``--dry-run`` prints: the total, how it was measured, each run's parts."""
        lines = [f"estimated time: {'at least ' if self.at_least else ''}{_seconds(self.seconds)} on this machine "
                 f"({self.snapshot_share:.0%} in snapshots); an estimate measured now in "
                 f"{self.calibration:.2g} s: each run started at its true size, a few steps timed, one snapshot "
                 "measured and written in memory (docs/design.md §4.8)"]
        lines += [run.describe() for run in self.runs]
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)


def _seconds(s: float) -> str:
    if s < 120:
        return f"{s:.2g} s"
    if s < 7200:
        return f"{s / 60:.3g} min"
    return f"{s / 3600:.3g} h"


def _ms(s: float) -> str:
    return f"{s * 1e3:.3g} ms"


def fixed_steps(times, dt: float, exact_steps: bool) -> int:
    """The steps a fixed-step run takes from t = 0 through the snapshot times ``times``, as
    solvers.integrate.integrate takes them: ``exact_steps`` (a dt_factor's step), every step
    dt until the last snapshot time is reached (within the loop's slack); otherwise each
    interval between snapshots in steps of dt, the last one cut short to land on it."""
    times = np.asarray(times, np.float64)
    if not len(times):
        return 0
    if exact_steps:
        t_end = float(times[-1])
        return max(0, math.ceil(t_end / dt - SLACK * max(1.0, t_end) / dt))
    intervals = np.diff(np.concatenate([[0.0], times]))
    return int(sum(math.ceil(gap / dt - SLACK * max(1.0, abs(t)) / dt) for gap, t in zip(intervals, times)
                   if gap > 0))


def estimate(the_plan, threads: Optional[int] = None) -> TimeEstimate:
    """Calibrate every run of ``the_plan`` (a :class:`meanfield.engine.plan.Plan`) on this
    machine: start it at its true size, time a few steps and one snapshot (measured, and written
    with its particles and checkpoint into a file in memory), then drop it."""
    from .driver import new_trajectory
    from .plan import run_inputs
    from .threads import for_a_run

    began = time.perf_counter()
    with for_a_run(threads), np.errstate(over="ignore", invalid="ignore"):
        inputs = run_inputs(the_plan.scenario, the_plan.times)
        new_trajectory(None, the_plan.scenario, inputs.data).close()  # the file's header and data, in memory
        shared = the_plan.planned_in + time.perf_counter() - began
        measured = [_calibrate(the_plan, inputs, name) for name in the_plan.scenario.runs]
    notes = []
    if the_plan.scenario.train.stop_loss > 0:
        notes.append(f"train.stop_loss {the_plan.scenario.train.stop_loss:g}: a run that reaches it stops early "
                     "(the estimate is then an upper bound for it)")
    if any(not run.exact_count for run in measured):
        notes.append("an adaptive stepper's steps are unknown before it runs: counted one per snapshot interval, "
                     "the least it can take")
    return TimeEstimate(measured, shared, time.perf_counter() - began, notes)


def _calibrate(the_plan, inputs, name: str) -> RunTime:
    from .runs import ExactRun, make_run

    scenario = the_plan.scenario
    lambda_0 = the_plan.steps[name][1] if name in the_plan.steps else None
    run = make_run(name, scenario.runs[name], the_plan.resolved[name], inputs, lambda_0)
    snapshots = len(the_plan.times) + 1
    try:
        began = time.perf_counter()
        state = run.start()
        if isinstance(run, ExactRun):
            states = run.states(np.concatenate([[0.0], the_plan.times]))
            state = next(states)  # a closed form may solve every time at once here
            setup = time.perf_counter() - began
            began = time.perf_counter()
            state = next(states, state)
            per_state = time.perf_counter() - began
            first, snapshot = _snapshot_seconds(run, state)
            return RunTime(name, setup + first, 0.0, 0, per_state + snapshot, snapshots)
        started = time.perf_counter() - began
        state, first, step, adaptive = _time_steps(run, state)
        setup = started + first
        count = len(the_plan.times) if adaptive else fixed_steps(
            the_plan.times, run.integrator.dt, run.integrator.dt_factor is not None)
        first, snapshot = _snapshot_seconds(run, state)
        return RunTime(name, setup + first, step, count, snapshot, snapshots, exact_count=not adaptive)
    finally:
        run.close()


def _time_steps(run, state):
    """Step ``run`` from ``state``: the first step (the compiled kernels loaded), then at each
    thread count the run's governor chooses between (docs/design.md §6.4; the fixed count alone
    when there is none) BATCHES batches of steps, each of STEP_SECONDS / (counts * BATCHES)
    or one step, whichever is longer (one batch where a step alone takes STEP_SECONDS). The
    step time is the median of the batches' mean steps at the faster count (the count the
    governor keeps): a mean, as the run's time is its steps' sum; over batches, so that a busy
    machine's descheduled thread, which makes a few steps many times slower, spoils one batch
    and not the estimate. Returns (state, first, step, adaptive)."""
    import numba

    from .runs import run_rng
    from .threads import blas_for_steps, governor

    stepper, rng = run.stepper, run_rng(run.inputs.scenario.seed, run.name)
    invariant = getattr(run, "blas_invariant", False)  # the BLAS as the driver sets it for the steps
    adaptive = bool(stepper.adaptive)
    with blas_for_steps(invariant):
        y, t = state.y, state.t
        k = run.field(t, y) if adaptive else None  # the loop's first evaluation (FSAL after it)
        h = stepper.initial_step(run.field, t, y, k) if adaptive else stepper.dt
        began = time.perf_counter()
        out = stepper.step(run.field, t, y, h, rng, k)
        first = time.perf_counter() - began
        y, t, h, k = _advance(out, y, t, h, k, adaptive)
        chooser, before = governor(blas=invariant), numba.get_num_threads()
        counts = chooser.counts if chooser is not None else (before,)
        per_batch = STEP_SECONDS / (len(counts) * BATCHES)
        medians, taken = [], 1
        try:
            for count in counts:
                if chooser is not None:
                    chooser.set_count(count)
                means: list[float] = []
                while len(means) < BATCHES:
                    steps, spent = 0, 0.0
                    while steps < 1 or (spent < per_batch and steps < 1000):
                        start = time.perf_counter()
                        out = stepper.step(run.field, t, y, h, rng, k)
                        spent += time.perf_counter() - start
                        steps += 1
                        y, t, h, k = _advance(out, y, t, h, k, adaptive)
                    means.append(spent / steps)
                    taken += steps
                    if spent >= STEP_SECONDS:
                        break
                medians.append(float(np.median(means)))
        finally:
            numba.set_num_threads(before)
    return dataclasses.replace(state, t=t, step=state.step + taken, y=y), first, min(medians), adaptive


def _advance(out, y, t, h, k, adaptive):
    """(y, t, h, k_start) after a step's outcome ``out``: its state where accepted and finite
    (else the same state again), an adaptive stepper's next step and its FSAL evaluation."""
    if out.accepted and np.all(np.isfinite(out.y)):
        y, t, k = out.y, t + h, (out.k_end if adaptive else None)
    if adaptive and out.h_next:
        h = out.h_next
    return y, t, h, k


def _snapshot_seconds(run, state) -> tuple[float, float]:
    """(the first measures' time, the time of one snapshot of ``run`` at ``state``): its measures (gap_ntk's rms aside,
    negligible), and writing them, its particles and its checkpoint into a file in memory (the
    same layout and compression as the file on disk)."""
    from .. import storage

    scenario = run.inputs.scenario
    measures = dict(run.measures)
    began = time.perf_counter()
    values = run.measure(state)  # the first: the compiled kernels of the measures loaded
    first = time.perf_counter() - began
    began = time.perf_counter()
    values = run.measure(state)
    measured = time.perf_counter() - began
    values = {name: values.get(name, np.zeros(shape) if shape else 0.0) for name, shape in measures.items()}
    with storage.create(None, scenario_yaml="", seed=0) as trajectory:
        writer = trajectory.add_run(run.name, attrs={}, m=scenario.model.width, d=scenario.data.dim,
                                    bias=scenario.model.bias, particles=run.records_particles,
                                    dtype=np.dtype(scenario.record.dtype), measures=measures)
        writer.append(0, 0.0, run.particles(state), values)  # the first frame lays out the chunks
        began = time.perf_counter()
        writer.append(1, 1.0, run.particles(state), values)
        if hasattr(run, "stepper"):
            writer.save_checkpoint(state)
        written = time.perf_counter() - began
    return first, measured + written
