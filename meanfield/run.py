"""One scenario: build the data and the initial particles once, run every run on them, write the file.

Random streams (all from ``numpy.random.SeedSequence``): the data from
``SeedSequence([seed, 0])``, the initial particles from ``SeedSequence([seed, 1])``, and
each run's own noise (SGD batches, Langevin) from ``SeedSequence([seed, 2, crc32(name)])``,
so adding or removing a run changes no other run.

All runs share the same standard-normal draws z_a, Z_w, z_b; a run's parameterization only
scales them (a = a_std z_a, W = w_std Z_w, b = b_std z_b): the same particles, up to the
scale each preset prescribes.
"""

from __future__ import annotations

import math
import zlib
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from solvers.activations import activation_code
from solvers.fields import ParticleField, ParticleLayout
from solvers.integrate import LoopState, integrate, make_stepper, snapshot_times
from solvers.losses import loss_code

from . import storage
from .data import Dataset, make_dataset
from .diagnostics import PARTICLE_MEASURES, particle_measures
from .errors import RunFailed, UsageError
from .parameterization import Resolved, resolve
from .scenario import Scenario


@dataclass(frozen=True)
class InitialDraws:
    """Standard-normal draws shared by every run: z_a [m], Z_w [m, d], z_b [m]."""

    z_a: np.ndarray
    Z_w: np.ndarray
    z_b: np.ndarray


@dataclass
class RunReport:
    name: str
    status: str
    t: float
    steps: int
    measures: dict = field(default_factory=dict)


@dataclass
class Plan:
    """What a scenario will do: resolved parameterizations, snapshot times, the file size."""

    resolved: dict[str, Resolved]
    every: float
    times: np.ndarray
    estimated_bytes: int
    notes: list[str]


def rng_for(seed: int, *stream) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def run_rng(seed: int, name: str) -> np.random.Generator:
    return rng_for(seed, 2, zlib.crc32(name.encode()))


def initial_draws(scenario: Scenario, rng: np.random.Generator) -> InitialDraws:
    """z ~ N(0, 1); with ``symmetric`` the second half mirrors the first: a -> -a, same w and b."""
    m, d = scenario.model.width, scenario.data.dim
    half = m // 2 if scenario.model.init.symmetric else m
    z_a = rng.standard_normal(half)
    Z_w = rng.standard_normal((half, d))
    z_b = rng.standard_normal(half)
    if scenario.model.init.symmetric:
        z_a, Z_w, z_b = np.concatenate([z_a, -z_a]), np.vstack([Z_w, Z_w]), np.concatenate([z_b, z_b])
    return InitialDraws(z_a, Z_w, z_b)


def initial_particles(draws: InitialDraws, resolved: Resolved, bias: bool):
    """(a0, W0, b0) in float64 for one run: the shared draws scaled by its init stds."""
    b0 = resolved.b_std * draws.z_b if bias else None
    return resolved.a_std * draws.z_a, resolved.w_std * draws.Z_w, b0


def plan(scenario: Scenario) -> Plan:
    """Resolve every run and choose the snapshot times so the file fits ``record.max_file_mb``."""
    d, m = scenario.data.dim, scenario.model.width
    resolved = {name: resolve(run.parameterization, scenario.model, d) for name, run in scenario.runs.items()}
    record, notes = scenario.record, []
    every = min(record.every, scenario.train.t_end)
    frames = len(snapshot_times(0.0, scenario.train.t_end, every)) + 1
    itemsize = np.dtype(record.dtype).itemsize
    data_values = (scenario.data.n_train + scenario.data.n_test) * (d + 1)

    def size(frames):
        per_run = storage.estimate_bytes(
            frames=frames, m=m, d=d, bias=scenario.model.bias, particles=record.particles,
            n_measures=len(PARTICLE_MEASURES), itemsize=itemsize,
        )
        return len(resolved) * per_run + 8 * data_values

    budget = record.max_file_mb * 1e6
    if size(frames) > budget:
        per_frame = max(size(3) - size(2), 1)
        allowed = max(2, int((budget - size(0)) // per_frame))
        factor = math.ceil(frames / allowed)
        notes.append(
            f"record.every raised from {every:g} to {every * factor:g} to keep the file under "
            f"{record.max_file_mb:g} MB (record.max_file_mb)"
        )
        every *= factor
        frames = len(snapshot_times(0.0, scenario.train.t_end, every)) + 1
    times = snapshot_times(0.0, scenario.train.t_end, every)
    return Plan(resolved, every, times, size(frames), notes)


def simulate(
    scenario: Scenario,
    output: Optional[str] = None,
    *,
    resume: bool = False,
    log: Callable[[str], None] = lambda message: None,
    progress: Optional[Callable] = None,
) -> list[RunReport]:
    """Run every run of ``scenario`` into one trajectory file; return a report per run.

    Raises ``RunFailed`` after all runs are done if any of them diverged (its file entry is
    marked failed and keeps every valid snapshot). ``KeyboardInterrupt`` leaves the file
    valid with the interrupted run marked 'interrupted' and resumable.
    """
    output = output or scenario.output_path
    the_plan = plan(scenario)
    for note in the_plan.notes:
        log(note)
    log(f"{output}: about {the_plan.estimated_bytes / 1e6:.3g} MB, "
        f"{len(the_plan.times) + 1} snapshots per run (every {the_plan.every:g})")
    data = make_dataset(scenario.data, rng_for(scenario.seed, 0))
    if scenario.loss == "logistic" and not np.all(np.abs(np.concatenate([data.y_train, data.y_test])) == 1):
        raise UsageError(f"loss 'logistic' needs labels +-1; the {scenario.data.task} data has other "
                         "values: use loss: squared")
    draws = initial_draws(scenario, rng_for(scenario.seed, 1))
    yaml_text = scenario.resolved_yaml()
    if resume:
        trajectory = storage.open_for_resume(output, scenario_yaml=yaml_text)
    else:
        trajectory = storage.create(output, scenario_yaml=yaml_text, seed=scenario.seed)
        trajectory.write_data(data.X_train, data.y_train, data.X_test, data.y_test, data.teacher)
    reports = []
    with trajectory:
        for name, run in scenario.runs.items():
            resolved = the_plan.resolved[name]
            log(f"{name}: {resolved.preset}, predicted {resolved.regime.label} ({resolved.regime.reason})")
            reports.append(_particle_run(
                scenario, name, resolved, data, draws, trajectory, the_plan.times, resume, progress,
            ))
    failed = [r for r in reports if r.status.startswith("failed")]
    if failed:
        raise RunFailed("; ".join(f"run {r.name!r} {r.status}" for r in failed))
    return reports


def _particle_run(scenario, name, resolved, data: Dataset, draws, trajectory, times, resume, progress):
    train, model = scenario.train, scenario.model
    dtype = np.dtype(train.dtype)
    layout = ParticleLayout(model.width, scenario.data.dim, model.bias)
    a0, W0, b0 = initial_particles(draws, resolved, model.bias)
    act, loss = activation_code(model.activation), loss_code(scenario.loss)
    field = ParticleField(
        layout, data.X_train.astype(dtype), data.y_train.astype(dtype),
        s=resolved.s, eta_a=resolved.eta_a, eta_w=resolved.eta_w, activation=act, loss=loss,
        loss_scale=resolved.loss_scale, weight_decay=train.weight_decay,
    )
    stepper = make_stepper(**train.integrator.model_dump(), temperature=train.temperature)
    rng = run_rng(scenario.seed, name)

    def measure(state):
        a, W, b = layout.split(state.y)
        return particle_measures(a, W, b, (a0, W0, b0), data, s=resolved.s, activation=act, loss=loss)

    writer, state = _open_run(trajectory, name, scenario, resolved, layout, resume, rng)
    if writer.status == "complete":
        return RunReport(name, "complete (already in the file)", math.nan, 0)
    if state is None:
        state = LoopState(0.0, 0, layout.pack(a0, W0, b0, dtype=dtype))
        _snapshot(writer, layout, state, measure(state), rng)

    def on_snapshot(s):
        _snapshot(writer, layout, s, measure(s), rng)

    bar = progress(name, state.t, train.t_end) if progress else nullcontext()
    try:
        # overflow on the way to a blow-up is expected: the loop checks finiteness itself
        with bar, np.errstate(over="ignore", invalid="ignore"):
            outcome = integrate(
                field, state, stepper, times[times > state.t + 1e-12], on_snapshot=on_snapshot,
                stop_loss=train.stop_loss, rng=rng, on_step=getattr(bar, "update_state", None),
                max_abs=float(np.finfo(scenario.record.dtype).max),
            )
    except KeyboardInterrupt:
        writer.status = "interrupted"
        raise
    with np.errstate(over="ignore", invalid="ignore"):
        final = measure(outcome.state)
    if outcome.status == "diverged":
        writer.status = f"failed: {outcome.message}"
    else:
        writer.status = "complete"
    status = writer.status
    if outcome.status == "stop_loss":
        status += f" (stop_loss reached at t = {outcome.state.t:.6g})"
    return RunReport(name, status, outcome.state.t, outcome.state.step, final)


def _open_run(trajectory, name, scenario, resolved, layout, resume, rng):
    """The run's writer, and where to start: None (from t = 0) or the last checkpoint."""
    if resume and name in trajectory.runs:
        writer = trajectory.run(name)
        if writer.status == "complete":
            return writer, None
        checkpoint = writer.load_checkpoint()
        if checkpoint is not None:
            writer.truncate(checkpoint.frames)
            rng.bit_generator.state = checkpoint.rng_state
            state = LoopState(checkpoint.t, checkpoint.step, checkpoint.state.astype(scenario.train.dtype),
                              h=checkpoint.stepper.get("h"))
            return writer, state
        writer.truncate(0)
        return writer, None
    attrs = {
        "solver": "particles",
        "integrator": scenario.train.integrator.model_dump(),
        **resolved.as_attrs(),
    }
    writer = trajectory.add_run(
        name, attrs=attrs, m=layout.m, d=layout.d, bias=layout.bias,
        particles=scenario.record.particles, dtype=np.dtype(scenario.record.dtype),
        measures={measure: () for measure in PARTICLE_MEASURES},
    )
    return writer, None


def _snapshot(writer, layout, state, measures, rng):
    """Append one frame and overwrite the checkpoint (full precision, RNG and step size)."""
    a, W, b = layout.split(state.y)
    writer.append(state.step, state.t, a, W, b, measures)
    writer.save_checkpoint(
        state.y.astype(np.float64), t=state.t, step=state.step,
        rng_state=rng.bit_generator.state, stepper={"h": state.h},
    )
