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
loss_clock) is estimated (:func:`adaptive_steps`): its calibration runs on for about
ADAPTIVE_SECONDS, and the steps it took, per snapshot interval, are carried on over the
intervals it did not reach (``TimeEstimate.estimated_count``; the estimate then says "about").
A run that reaches train.stop_loss stops early: the estimate is then an upper bound for it.
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

ADAPTIVE_SECONDS = 2.0
"""Seconds an adaptive stepper's calibration steps on after the timed steps, or less if it
passes the last snapshot time: the steps it takes are what its count is estimated from."""


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
    stepper's, estimated (:func:`adaptive_steps`)."""
    calibrated_to: Optional[float] = None
    """An adaptive stepper's: the time its calibration reached (the count past it extrapolated)."""

    @property
    def seconds(self) -> float:
        """setup + steps * step + snapshots * snapshot."""
        return self.setup + self.steps * self.step + self.snapshots * self.snapshot

    @property
    def snapshot_share(self) -> float:
        """The part of the run's time spent in snapshots: snapshots * snapshot / seconds."""
        return self.snapshots * self.snapshot / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        about = "" if self.exact_count else "about "
        steps = "" if not self.steps else f", {about}{self.steps} steps of {_ms(self.step)}"
        if self.calibrated_to is not None:
            steps += f" (stepped to t = {self.calibrated_to:.3g} in the calibration)"
        return (f"  {self.name}: {about}{_seconds(self.seconds)} "
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
    def estimated_count(self) -> bool:
        """Whether some run's step count is estimated (an adaptive stepper's), not known."""
        return any(not run.exact_count for run in self.runs)

    @property
    def snapshot_share(self) -> float:
        """The part of the whole time spent in snapshots (measures and writing)."""
        spent = sum(run.snapshots * run.snapshot for run in self.runs)
        return spent / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        """What ``--dry-run`` prints: the total, how it was measured, each run's parts."""
        lines = [f"estimated time: {'about ' if self.estimated_count else ''}{_seconds(self.seconds)} on this machine "
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


def adaptive_steps(reached, times) -> int:
    """The steps an adaptive stepper takes from t = 0 through the snapshot times ``times``,
    estimated from ``reached``: the times its calibration's accepted steps reached, in order
    (its steps not cut at snapshot times; those after the first past the last snapshot time left
    out). On the snapshot clock u(t) (u = i at the i-th snapshot time, linear between them,
    u(0) = 0) the calibration's count N(u) (linear between its steps) gives an interval it
    covers, [i - 1, i], N(i) - N(i - 1) steps; a part it did not reach takes r steps per unit
    of u, r the count over the calibration's last unit of u (its later half when it reached
    less: the first steps are the smallest). So the steps are taken to be as long as the
    snapshot intervals they fall in, which holds where the clock follows the flow's pace
    (docs/design.md §4.8). Each interval takes max(1, ceil(n_i)) steps: its last step is cut
    short to land on its snapshot time. No step reached: one per interval, the least an adaptive
    stepper takes."""
    times = np.asarray(times, np.float64)
    if not len(times):
        return 0
    _, u = _on_the_snapshot_clock(reached, times)
    if not len(u) or u[-1] <= 0:
        return len(times)
    u_reached = float(u[-1])
    count_u = np.concatenate([[0.0], u])
    count_n = np.arange(len(count_u), dtype=np.float64)

    def steps_to(v):  # N(v) within the calibrated range
        return np.interp(v, count_u, count_n)

    window = min(1.0, u_reached / 2)  # the last unit of u, or the later half of less
    rate = (steps_to(u_reached) - steps_to(u_reached - window)) / window
    ends = np.arange(1, len(times) + 1, dtype=np.float64)
    covered = np.minimum(ends, u_reached)
    uncovered = ends - np.maximum(ends - 1.0, covered)
    steps = steps_to(covered) - steps_to(np.minimum(ends - 1.0, u_reached)) + rate * uncovered
    return int(np.sum(np.maximum(1, np.ceil(steps - 1e-9))))


def _on_the_snapshot_clock(reached, times):
    """(kept, u): how many of the times ``reached`` count (to the first past the last snapshot
    time; all where there is none), and theirs on the snapshot clock u (u = i at the i-th of
    ``times``, linear between them, u(0) = 0)."""
    times, reached = np.asarray(times, np.float64), np.asarray(reached, np.float64)
    kept = int(np.searchsorted(reached, times[-1]) + 1) if len(times) else len(reached)
    kept = min(kept, len(reached))
    clock = np.concatenate([[0.0], times])
    return kept, np.interp(reached[:kept], clock, np.arange(len(clock), dtype=np.float64))


def tries_per_step(reached, tries_at, times) -> float:
    """Steps tried per step accepted by an adaptive stepper (rk45 rejects a step whose error is
    too large and tries again, smaller): over the calibration's last unit of the snapshot clock
    (as :func:`adaptive_steps` counts the steps past it; all of it when it reached less),
    ``tries_at`` the tries made by each accepted step (``reached`` its time)."""
    kept, u = _on_the_snapshot_clock(reached, times)
    tries_at = np.asarray(tries_at, np.float64)[:kept]
    if kept < 2:
        return 1.0
    first = int(np.searchsorted(u, u[-1] - 1.0)) if u[-1] >= 1.0 else 0
    first = min(first, len(u) - 2)
    return float((tries_at[-1] - tries_at[first]) / (len(u) - 1 - first))


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
        notes.append(f"an adaptive stepper's steps are estimated: its calibration stepped on for about "
                     f"{ADAPTIVE_SECONDS:g} s, and the snapshot intervals it did not reach are counted with as many "
                     "steps as its last one took; a step size that keeps changing after the time it reached (shown "
                     "above: a classification loss's late phase, whose pace the margin it tends to sets) can make "
                     "them many times more, or fewer")
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
        state, first, step, walk = _time_steps(run, state, the_plan.times[-1] if len(the_plan.times) else 0.0)
        adaptive = walk is not None
        setup = started + first
        if adaptive:
            count = adaptive_steps(walk.reached, the_plan.times)
            step *= tries_per_step(walk.reached, walk.tries_at, the_plan.times)
        else:
            count = fixed_steps(the_plan.times, run.integrator.dt, run.integrator.dt_factor is not None)
        first, snapshot = _snapshot_seconds(run, state)
        return RunTime(name, setup + first, step, count, snapshot, snapshots, exact_count=not adaptive,
                       calibrated_to=walk.t if adaptive else None)
    finally:
        run.close()


def _time_steps(run, state, t_end: float):
    """Step ``run`` from ``state``: the first step (the compiled kernels loaded), then at each
    thread count the run's governor chooses between (docs/design.md §6.4; the fixed count alone
    when there is none) BATCHES batches of steps, each of STEP_SECONDS / (counts * BATCHES)
    or one step, whichever is longer (one batch where a step alone takes STEP_SECONDS). The
    step time is the median of the batches' mean steps at the faster count (the count the
    governor keeps): a mean, as the run's time is its steps' sum; over batches, so that a busy
    machine's descheduled thread, which makes a few steps many times slower, spoils one batch
    and not the estimate. An adaptive stepper then steps on at the faster count, in batches
    timed as well (a step's cost may change as the state moves on), for ADAPTIVE_SECONDS or
    until its clock passes ``t_end``. Returns (state, first, step, walk): ``step`` the time of a
    step tried (an adaptive stepper's rejected tries cost as much), ``walk`` the adaptive
    stepper's :class:`_Walk` (None for a fixed step)."""
    import numba

    from .runs import run_rng
    from .threads import blas_for_steps, governor

    stepper, rng = run.stepper, run_rng(run.inputs.scenario.seed, run.name)
    invariant = getattr(run, "blas_invariant", False)  # the BLAS as the driver sets it for the steps
    adaptive = bool(stepper.adaptive)
    walk = _Walk(run, stepper, rng, state.y, state.t, adaptive)
    with blas_for_steps(invariant):
        first = walk.step()
        chooser, before = governor(blas=invariant), numba.get_num_threads()
        counts = chooser.counts if chooser is not None else (before,)
        per_batch = STEP_SECONDS / (len(counts) * BATCHES)
        batches: list[list[float]] = []
        try:
            for count in counts:
                if chooser is not None:
                    chooser.set_count(count)
                means: list[float] = []
                while len(means) < BATCHES:
                    mean, spent = _batch(walk, per_batch)
                    means.append(mean)
                    if spent >= STEP_SECONDS:
                        break
                batches.append(means)
            fastest = int(np.argmin([np.median(means) for means in batches]))
            means = batches[fastest]
            if adaptive:  # on at the faster count, as the run goes on, its batches timed as well
                if chooser is not None:
                    chooser.set_count(counts[fastest])
                walking = time.perf_counter()
                while walk.t < t_end and time.perf_counter() - walking < ADAPTIVE_SECONDS:
                    means.append(_batch(walk, per_batch)[0])
        finally:
            numba.set_num_threads(before)
    state = dataclasses.replace(state, t=walk.t, step=state.step + len(walk.reached), y=walk.y)
    return state, first, float(np.median(means)), (walk if adaptive else None)


def _batch(walk, seconds: float) -> tuple[float, float]:
    """(the mean time of a step, the time) of a batch of steps of ``walk``: ``seconds`` of them,
    at least one, at most 1000."""
    steps, spent = 0, 0.0
    while steps < 1 or (spent < seconds and steps < 1000):
        spent += walk.step()
        steps += 1
    return spent / steps, spent


class _Walk:
    """A run's state stepped on as the integrator loop steps it, unclipped: an accepted, finite
    step moves it (an adaptive stepper's next step and its FSAL evaluation kept); ``reached``
    the times its accepted steps reached, ``tries_at`` the steps tried by then (those included),
    ``tries`` all the steps tried."""

    def __init__(self, run, stepper, rng, y, t, adaptive):
        self.run, self.stepper, self.rng, self.y, self.t, self.adaptive = run, stepper, rng, y, t, adaptive
        self.k = run.field(t, y) if adaptive else None  # the loop's first evaluation (FSAL after it)
        self.h = stepper.initial_step(run.field, t, y, self.k) if adaptive else stepper.dt
        self.reached: list[float] = []
        self.tries_at: list[int] = []
        self.tries = 0

    def step(self) -> float:
        """Take one step; its seconds."""
        began = time.perf_counter()
        out = self.stepper.step(self.run.field, self.t, self.y, self.h, self.rng, self.k)
        spent = time.perf_counter() - began
        self.tries += 1
        if out.accepted and np.all(np.isfinite(out.y)):
            self.y, self.t, self.k = out.y, self.t + self.h, (out.k_end if self.adaptive else None)
            self.reached.append(self.t)
            self.tries_at.append(self.tries)
        if self.adaptive and out.h_next:
            self.h = out.h_next
        return spent


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
