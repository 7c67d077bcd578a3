"""One scenario, start to end: plan it (:mod:`meanfield.engine.plan`), build the data and the
initial particles once, take every run through its life (:mod:`meanfield.engine.runs`) and write
them into one trajectory file.

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

from .. import storage
from ..config.scenario import Scenario
from ..errors import RunFailed, UsageError, honour_stop, stop_requested
from ..model.diagnostics import rms_gap
from ..model.measures import FIT_MEASURES
from ..model.state import RunState
from .plan import NO_TEST_SET, lacks_test_set, plan, recorded_measures, records_gap, run_inputs
from .threads import blas_for_steps, for_a_run, one_blas_thread
from .threads import governor as thread_governor

Log = Callable[[str], None]


def _quiet(message: str) -> None:
    """The default log: say nothing."""


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
    with for_a_run(threads):
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
        f"({the_plan.clock})")
    inputs = run_inputs(scenario, the_plan.times)  # the plan checked the labels a loss needs
    data = inputs.data
    reference = the_plan.reference
    order = sorted(scenario.runs, key=lambda name: name != reference)
    measured = {name: lambda_0 for name, (_, lambda_0, _) in the_plan.steps.items()}
    runs = {name: make_run(name, scenario.runs[name], the_plan.resolved[name], inputs, measured.get(name))
            for name in order}  # built before the file: what fails here writes nothing
    honour_stop(wrote=False)  # a stop during start-up: nothing written yet
    with storage.WriterLock(output) if output is not None else nullcontext():
        trajectory = _open_output(scenario, output, data, the_plan.estimated_bytes, resume=resume,
                                  overwrite=overwrite)
        reports, predictions = {}, None
        try:
            for name, run in runs.items():
                honour_stop()
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
    existing = Path(output).stat().st_size if output is not None and Path(output).exists() else None
    if resume:
        if existing is None:
            raise UsageError(f"--resume: {output} does not exist (run without --resume first)")
        trajectory = storage.open_for_resume(output, same_scenario=scenario.describes_stored)
        _check_room(output, estimated_bytes - existing, scenario.record.particles)
        return trajectory
    if existing is not None:
        _refuse_to_replace(output, overwrite, scenario)
    if output is not None:  # a replaced file's space comes back
        _check_room(output, estimated_bytes - (existing or 0), scenario.record.particles)
    return new_trajectory(output, scenario, data)


def new_trajectory(output, scenario: Scenario, data):
    """A new trajectory file at ``output`` (in memory when None) with the scenario and its data
    written: the start of every file."""
    trajectory = storage.create(output, scenario_yaml=scenario.resolved_yaml(), seed=scenario.seed)
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


def _check_room(output, needed: float, particles: bool) -> None:
    """Refuse to start when the disk (or ``ulimit -f``) has no room for the plan's estimate;
    ``particles``: whether the scenario records them (then not recording them is advice)."""
    try:
        storage.check_room(output, max(needed, 0.0), "the plan's estimate of the file")
    except storage.NoRoom as exc:
        less = "a larger record.every, record.particles: false" if particles else "a larger record.every"
        raise UsageError(f"{output}: {exc.strerror}; free some space, write elsewhere with --output, or "
                         f"record less ({less})") from None


def _execute(run, trajectory, resume: bool, progress, collect: Optional[Reference],
             gap: Optional[Reference]) -> RunReport:
    """Take one run into its entry of the file (continuing it with ``resume``). ``collect``
    gathers the predictions of the reference run; ``gap`` is the reference of the others. A
    resume that finds the file damaged leaves it as it is and says to start again."""
    try:
        return _execute_run(run, trajectory, resume, progress, collect, gap)
    except (OSError, RuntimeError) as exc:
        if not resume or storage.is_out_of_room(exc) or not storage.raised_in_h5py(exc):
            raise
        raise UsageError(f"{trajectory.path}: cannot continue run {run.name!r}: the HDF5 library cannot read or "
                         f"write what an earlier process left ({str(exc).splitlines()[0]}; a damaged or "
                         "half-written file?); start it again with --overwrite (overwrite=True)") from None


def _execute_run(run, trajectory, resume: bool, progress, collect: Optional[Reference],
                 gap: Optional[Reference]) -> RunReport:
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
            if resume and storage.raised_in_h5py(exc):  # a damaged file: left as it was (_execute says so)
                with suppress(Exception):
                    writer.status = writer.resumed_status
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

    # the BLAS at the run's count in the steps of a kind whose BLAS work is thread-invariant,
    # else (and at snapshots) on one thread: docs/design.md §6.4
    invariant = run.blas_invariant
    steps_blas = blas_for_steps(invariant)
    governor = thread_governor(blas=invariant)

    def on_snapshot(now: RunState) -> None:
        with governor.paused() if governor else nullcontext(), one_blas_thread() if invariant else nullcontext():
            recorder.snapshot(now)
            recorder.checkpoint(now)

    times = run.inputs.times
    bar = progress(run.name, state.t, scenario.train.t_end) if progress else nullcontext()
    on_step = _each_step(getattr(bar, "update_state", None), governor.step if governor else None,
                         lambda _: honour_stop())  # a stop (SIGINT, SIGTERM) ends the run between steps
    # overflow on the way to a blow-up is expected: the loop checks finiteness itself
    with steps_blas, bar, np.errstate(over="ignore", invalid="ignore"):
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
        honour_stop()
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
        writer.resumed_status = writer.status  # put back if the file turns out damaged
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
