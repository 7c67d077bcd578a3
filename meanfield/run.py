"""One scenario: build the data and the initial particles once, run every run on them, write the file.

Random streams (all from ``numpy.random.SeedSequence``): the data from
``SeedSequence([seed, 0])``, the initial particles from ``SeedSequence([seed, 1])``, the
subset of particles in the W2 measure from ``[seed, 3]``, and each run's own noise (SGD
batches, Langevin) from ``SeedSequence([seed, 2, crc32(name)])``, so adding or removing a
run changes no other run.

All runs share the same standard-normal draws z_a, Z_w, z_b; a run's parameterization only
scales them (a = a_std z_a, W = w_std Z_w, b = b_std z_b): the same particles, up to the
scale each preset prescribes.

Kernel (``ntk``) runs go first: the first of them is the reference that every other run's
test predictions are compared with (``gap_ntk``) at each snapshot.
"""

from __future__ import annotations

import math
import zlib
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from solvers import ntk as kernels
from solvers import population
from solvers.activations import activation_code
from solvers.fields import ParticleField, ParticleLayout, WeightDecay
from solvers.integrate import LoopState, integrate, make_stepper, snapshot_times
from solvers.losses import loss_code
from solvers.particles import predict

from . import diagnostics as dg
from . import storage
from .data import Dataset, make_dataset
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


# --------------------------------------------------------------------------- planning


def measure_shapes(scenario: Scenario, solver: str, gap: bool, n_test: Optional[int] = None) -> dict[str, tuple]:
    """The measures a run of this solver records (``gap``: also gap_ntk), and their shapes
    (``n_test``: the test set's size, when the data are built; else the scenario's).

    With infinite data (``data.population``) the population risk replaces the train and
    test losses, and there are no test predictions to compare (no f_test, no gap_ntk).
    """
    if scenario.data.population:
        shapes, gap = {"risk": ()}, False
    else:
        shapes = {"loss_train": (), "loss_test": (), "f_test": (n_test or scenario.data.n_test,)}
    if solver in ("particles", "tangent"):
        shapes.update(dict.fromkeys(("displacement_w", "displacement_a", "displacement_mean", "wasserstein2"), ()))
        if scenario.data.task in ("teacher_student", "single_index"):
            shapes["teacher_alignment"] = ()
    if solver == "particles":
        shapes.update(kernel_distance=(), kernel_alignment=())
    if gap:
        shapes["gap_ntk"] = ()
    return shapes


def reference_run(scenario: Scenario) -> Optional[str]:
    """The first ``ntk`` run: what every other run's predictions are compared with."""
    return next((name for name, run in scenario.runs.items() if run.solver == "ntk"), None)


def plan(scenario: Scenario) -> Plan:
    """Resolve every run and choose the snapshot times so the file fits ``record.max_file_mb``."""
    d, m = scenario.data.dim, scenario.model.width
    resolved = {name: resolve(run.parameterization, scenario.model, d) for name, run in scenario.runs.items()}
    record, notes = scenario.record, []
    every = min(record.every, scenario.train.t_end)
    itemsize = np.dtype(record.dtype).itemsize
    reference = reference_run(scenario)
    data_values = 0 if scenario.data.population else (scenario.data.n_train + scenario.data.n_test) * (d + 1)

    def size(frames):
        return sum(
            storage.estimate_bytes(
                frames=frames, m=m, d=d, bias=scenario.model.bias,
                particles=record.particles and run.solver != "ntk",
                n_measures=sum(math.prod(shape) for shape in
                               measure_shapes(scenario, run.solver, _records_gap(name, reference)).values()),
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
        notes.append(
            f"record.every raised from {every:g} to {every * factor:g} to keep the file under "
            f"{record.max_file_mb:g} MB (record.max_file_mb)"
        )
        every *= factor
        frames = len(snapshot_times(0.0, scenario.train.t_end, every)) + 1
    times = snapshot_times(0.0, scenario.train.t_end, every)
    return Plan(resolved, every, times, size(frames), notes)


def _records_gap(name: str, reference: Optional[str]) -> bool:
    """Every run but the reference itself records gap_ntk, when there is a reference."""
    return reference is not None and name != reference


# ------------------------------------------------------------------------- the runs


@dataclass
class Shared:
    """What every run of a scenario shares: data, initial draws, snapshot times, the reference."""

    scenario: Scenario
    data: Dataset
    draws: InitialDraws
    times: np.ndarray
    activation: int
    loss: int
    reference: Optional[Callable[[float], np.ndarray]] = None  # t -> f_test of the ntk run

    @property
    def noise_risk(self) -> float:
        """E[eps^2] / 2 = noise^2 / 2: what label noise adds to the population risk."""
        return 0.5 * self.scenario.data.noise**2

    @property
    def probe(self):
        size = self.scenario.record.probe_size
        return self.data.X_test[:size], self.data.y_test[:size]


class ParticleSolver:
    """A run whose state is the particles: the network itself (``particles``) or its tangent model."""

    def __init__(self, name: str, spec, resolved: Resolved, shared: Shared):
        scenario, data = shared.scenario, shared.data
        self.name, self.resolved, self.shared = name, resolved, shared
        self.kind = spec.solver
        self.layout = ParticleLayout(scenario.model.width, scenario.data.dim, scenario.model.bias)
        self.initial = initial_particles(shared.draws, resolved, scenario.model.bias)
        # float32 arithmetic (train.dtype) is for particle runs on data; the tangent and
        # population solvers compute in float64
        exact_arithmetic = self.kind == "tangent" or scenario.data.population
        dtype = np.dtype(np.float64 if exact_arithmetic else scenario.train.dtype)
        numbers = dict(s=resolved.s, eta_a=resolved.eta_a, eta_w=resolved.eta_w,
                       loss_scale=resolved.loss_scale)
        self.exact = None
        X, y = data.X_train.astype(dtype), data.y_train.astype(dtype)
        if scenario.data.population:
            self.field, self.exact = self._population_dynamics(numbers)
        elif self.kind == "tangent":
            self.tangent = kernels.TangentField(*self.initial, X, y, act=shared.activation, loss=shared.loss,
                                                **numbers)
            self.field = self.tangent
        else:
            self.field = ParticleField(self.layout, X, y, activation=shared.activation, loss=shared.loss,
                                       **numbers)
        if scenario.train.weight_decay and self.field is not None:
            self.field = WeightDecay(self.field, scenario.train.weight_decay)
        self.dtype = dtype
        self.stepper = make_stepper(**scenario.train.integrator.model_dump(),
                                    temperature=scenario.train.temperature)
        self.measures = measure_shapes(scenario, self.kind, _records_gap(name, reference_run(scenario)),
                                       data.n_test)
        self._subset = _w2_subset(scenario)
        self._cloud0 = dg.particle_cloud(*self._take(*self.initial))
        if "kernel_distance" in self.measures:
            self._K0 = self._probe_kernel(*self.initial)

    def _population_dynamics(self, numbers):
        """(field, None) for particles on the population risk; (None, t -> theta) for the tangent."""
        teacher = self.shared.data.teacher
        common = dict(act=self.shared.scenario.model.activation, teacher_act=teacher.activation, **numbers)
        if self.kind == "tangent":
            a0, W0, _ = self.initial
            self.tangent = population.PopulationTangent(a0, W0, teacher.a, teacher.W, **common)
            return None, self.tangent.state
        return population.PopulationField(self.layout, teacher.a, teacher.W, **common), None

    @property
    def attrs(self) -> dict:
        attrs = {"solver": self.kind, **self.resolved.as_attrs()}
        if self.field is not None:
            attrs["integrator"] = self.shared.scenario.train.integrator.model_dump()
        return attrs

    def initial_state(self) -> np.ndarray:
        return self.layout.pack(*self.initial, dtype=self.dtype)

    def particles(self, y):
        return self.layout.split(y)

    def predict(self, y, X):
        if self.kind == "tangent":
            return self.tangent.predict(y, X)
        a, W, b = self.layout.split(y)
        return predict(a, W, b, X, self.resolved.s, self.shared.activation)

    def measure(self, t: float, y: np.ndarray) -> dict:
        shared, data = self.shared, self.shared.data
        a, W, b = self.layout.split(y)
        out = {
            **self._fit(t, y),
            **dg.displacement_measures(a, W, b, self.initial),
            "wasserstein2": dg.wasserstein2(self._cloud0, dg.particle_cloud(*self._take(a, W, b))),
        }
        if "teacher_alignment" in self.measures:
            signed = not data.teacher.activation.startswith("hermite")
            out["teacher_alignment"] = dg.teacher_alignment(a, W, data.teacher.W, signed=signed)
        if "kernel_distance" in self.measures:
            K = self._probe_kernel(a, W, b)
            out["kernel_distance"] = dg.kernel_distance(self._K0, K)
            out["kernel_alignment"] = dg.kernel_target_alignment(K, self.shared.probe[1])
        if "gap_ntk" in self.measures:
            out["gap_ntk"] = dg.rms_gap(out["f_test"], shared.reference(t))
        return out

    def _fit(self, t, y) -> dict:
        """How well the run fits: the population risk, or the train and test losses and f_test."""
        shared, data = self.shared, self.shared.data
        if shared.scenario.data.population:
            if self.kind == "tangent":
                return {"risk": self.tangent.risk(t) / self.resolved.loss_scale + shared.noise_risk}
            a, W, _ = self.layout.split(y)
            teacher = data.teacher
            risk = population.population_risk(a, W, teacher.a, teacher.W, s=self.resolved.s,
                                              act=shared.scenario.model.activation,
                                              teacher_act=teacher.activation)
            return {"risk": risk + shared.noise_risk}
        f_test = self.predict(y, data.X_test)
        return {"loss_train": dg.mean_loss(self.predict(y, data.X_train), data.y_train, shared.loss),
                "loss_test": dg.mean_loss(f_test, data.y_test, shared.loss), "f_test": f_test}

    def _take(self, a, W, b):
        """The particles in the W2 measure (all of them, or a fixed random subset)."""
        pick = self._subset
        return (a, W, b) if pick is None else (a[pick], W[pick], None if b is None else b[pick])

    def _probe_kernel(self, a, W, b):
        X_probe = self.shared.probe[0]
        r = self.resolved
        return kernels.empirical_ntk(
            np.asarray(a, np.float64), np.asarray(W, np.float64), None if b is None else np.asarray(b, np.float64),
            X_probe, X_probe, s=r.s, eta_a=r.eta_a, eta_w=r.eta_w, act=self.shared.activation,
            loss_scale=r.loss_scale,
        )


def _w2_subset(scenario: Scenario):
    m, keep = scenario.model.width, scenario.record.w2_particles
    if m <= keep:
        return None
    return np.sort(rng_for(scenario.seed, 3).choice(m, size=keep, replace=False))


class KernelSolver:
    """Kernel gradient flow in function space (the ``ntk`` solver), on train and test points at once.

    Squared loss: the closed form at every snapshot time. Other losses: the ODE
    df/dt = -(1/n) K[:, train] l'(f_train, y) with the scenario's integrator (SGD and
    Euler-Maruyama become Euler with the same dt: the kernel flow is deterministic).
    """

    def __init__(self, name: str, spec, resolved: Resolved, shared: Shared):
        scenario, data = shared.scenario, shared.data
        self.name, self.spec, self.resolved, self.shared = name, spec, resolved, shared
        self.kind = "ntk"
        X = np.vstack([data.X_train, data.X_test])
        K_train, K_test, f0 = self._kernels_and_start(X)
        n = data.n_train
        self.n_train = n
        if scenario.loss == "squared":
            self.closed_form = kernels.LinearizedSquared(K_train, data.y_train, f0[:n], K_test, f0[n:])
            self.exact = self._closed_form_at
            self._at_snapshots = None
            self.field = None
        else:
            self.closed_form = self.exact = None
            self.field = kernels.FunctionSpaceField(K_train, data.y_train, shared.loss, K_test_train=K_test)
            self._f0 = f0
            method = scenario.train.integrator.model_dump()
            if method["method"] in ("sgd", "euler_maruyama"):
                method.update(method="euler", batch_size=None)
            self.stepper = make_stepper(**method)
        self.measures = measure_shapes(scenario, "ntk", _records_gap(name, reference_run(scenario)),
                                       data.n_test)

    def _closed_form_at(self, t: float) -> np.ndarray:
        """[f_t(X), f_t(X*)] in closed form. The snapshot times are evaluated all at once, on
        first use (one pass over the eigenvectors for all of them, instead of one per
        snapshot: 10x faster at n = 4000 and 100 snapshots); any other t directly."""
        if self._at_snapshots is None:
            times = np.concatenate([[0.0], self.shared.times])
            self._at_snapshots = dict(zip(times.tolist(), np.hstack(self.closed_form.predict(times))))
        at = self._at_snapshots.get(float(t))
        return np.concatenate(self.closed_form.predict(t)) if at is None else at

    def _kernels_and_start(self, X):
        """K(X, X), K(X*, X) and f_0 on [X; X*]: of the particles, or the analytic limit from 0."""
        scenario, r, act = self.shared.scenario, self.resolved, self.shared.activation
        X_train, X_test = self.shared.data.X_train, self.shared.data.X_test
        if self.spec.kernel == "empirical":
            a0, W0, b0 = initial_particles(self.shared.draws, r, scenario.model.bias)
            K_train, K_test, f0_train, f0_test = kernels.train_test_ntk(
                a0, W0, b0, X_train, X_test, return_f0=True, s=r.s, eta_a=r.eta_a, eta_w=r.eta_w,
                act=act, loss_scale=r.loss_scale)
            return K_train, K_test, np.concatenate([f0_train, f0_test])
        # E over the initialization of the empirical kernel at this width: the weights
        # c s^2 m eta are the m -> infinity limits for mean_field, ntk and lazy
        weight = r.loss_scale * r.s**2 * r.width
        _, K = kernels.analytic_kernels(
            X, X_train, act=act, w_var=r.w_std**2, b_var=r.b_std**2, a_var=r.a_std**2,
            eta_a=weight * r.eta_a, eta_w=weight * r.eta_w, bias=scenario.model.bias,
        )
        n = len(X_train)
        return K[:n], K[n:], np.zeros(len(X))

    @property
    def attrs(self) -> dict:
        attrs = {"solver": "ntk", "kernel": self.spec.kernel, **self.resolved.as_attrs()}
        if self.field is not None:
            attrs["integrator"] = self.shared.scenario.train.integrator.model_dump()
        return attrs

    def initial_state(self) -> np.ndarray:
        return np.array(self._f0, dtype=np.float64)

    def particles(self, y):
        return None, None, None

    def measure(self, t: float, y) -> dict:
        """Losses and predictions from the state y = [f(X_train), f(X_test)]."""
        data, loss = self.shared.data, self.shared.loss
        f_train, f_test = y[: self.n_train], y[self.n_train:]
        out = {"loss_train": dg.mean_loss(f_train, data.y_train, loss),
               "loss_test": dg.mean_loss(f_test, data.y_test, loss), "f_test": f_test}
        if "gap_ntk" in self.measures:
            out["gap_ntk"] = dg.rms_gap(f_test, self.shared.reference(t))
        return out


SOLVERS = {"particles": ParticleSolver, "tangent": ParticleSolver, "ntk": KernelSolver}


# -------------------------------------------------------------------------- execution


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
    shared = Shared(scenario, data, initial_draws(scenario, rng_for(scenario.seed, 1)), the_plan.times,
                    activation_code(scenario.model.activation), loss_code(scenario.loss))
    reference = reference_run(scenario)
    order = sorted(scenario.runs, key=lambda name: name != reference)
    solvers = {name: SOLVERS[scenario.runs[name].solver](name, scenario.runs[name], the_plan.resolved[name], shared)
               for name in order}  # built before the file: what fails here writes nothing
    yaml_text = scenario.resolved_yaml()
    if resume:
        trajectory = storage.open_for_resume(output, scenario_yaml=yaml_text)
    else:
        _refuse_to_overwrite_foreign(output)
        trajectory = storage.create(output, scenario_yaml=yaml_text, seed=scenario.seed)
        if scenario.data.population:
            trajectory.write_data(teacher=data.teacher)
        else:
            trajectory.write_data(data.X_train, data.y_train, data.X_test, data.y_test, data.teacher)
    reports = {}
    with trajectory:
        for name, solver in solvers.items():
            resolved = solver.resolved
            log(f"{name}: {solver.kind}, {resolved.preset}, predicted {resolved.regime.label} "
                f"({resolved.regime.reason})")
            reports[name] = execute(solver, trajectory, resume, progress)
            if name == reference:
                shared.reference = _reference_predictions(solver, trajectory)
    failed = [r for r in reports.values() if r.status.startswith("failed")]
    if failed:
        raise RunFailed("; ".join(f"run {r.name!r} {r.status}" for r in failed))
    return [reports[name] for name in scenario.runs]


def _refuse_to_overwrite_foreign(output: str) -> None:
    """An existing file at the output path is replaced only if it is one of our trajectories."""
    if not Path(output).exists():
        return
    try:
        storage.open_trajectory(output).close()
    except UsageError as exc:
        raise UsageError(f"refusing to overwrite {output}: {exc}") from None


def _reference_predictions(solver, trajectory):
    """t -> f_test of the reference ntk run: its closed form, else its recorded snapshots.

    A reference that completed early (``stop_loss``) stopped training there: after its last
    snapshot its predictions are those it stopped with. Elsewhere a missing time is NaN.
    """
    if solver.closed_form is not None:
        return lambda t: solver.exact(t)[solver.n_train:]
    run = storage.read_run(trajectory, solver.name, particles=False)
    series = run.measures["f_test"]
    frames = {round(float(t), 9): f for t, f in zip(series.time, series.value)}
    missing = np.full(solver.shared.data.n_test, np.nan)
    stopped = run.status == "complete" and len(series.time) > 0

    def at(t):
        if stopped and t > series.time[-1]:
            return series.value[-1]
        return frames.get(round(float(t), 9), missing)

    return at


def execute(solver, trajectory, resume: bool, progress) -> RunReport:
    """Run one solver into its entry of the file (continuing it with ``resume``)."""
    writer, checkpoint = _open_run(trajectory, solver, resume)
    if writer.status == "complete":
        return _report_from_file(solver.name, trajectory)
    try:
        return _advance(solver, writer, checkpoint, progress)
    except KeyboardInterrupt:
        writer.status = "interrupted"
        raise
    except Exception as exc:
        writer.status = f"failed: {type(exc).__name__}: {exc}"
        raise


def _report_from_file(name: str, trajectory) -> RunReport:
    """The report of a run the file already holds complete (a resume had nothing to do)."""
    measures = storage.read_run(trajectory, name, particles=False).measures
    final = {key: series.value[-1] for key, series in measures.items() if len(series.time)}
    t = max((float(series.time[-1]) for series in measures.values() if len(series.time)), default=math.nan)
    return RunReport(name, "complete (already in the file)", t, 0, final)


def _advance(solver, writer, checkpoint, progress) -> RunReport:
    """Take the run from its start (or checkpoint) to the end, writing every snapshot."""
    scenario = solver.shared.scenario
    if solver.exact is not None:
        return _exact(solver, writer)
    rng = run_rng(scenario.seed, solver.name)
    if checkpoint is None:
        state = LoopState(0.0, 0, solver.initial_state())
        _snapshot(solver, writer, state, rng)
    else:
        state = LoopState(checkpoint.t, checkpoint.step, checkpoint.state.astype(solver.initial_state().dtype),
                          h=checkpoint.stepper.get("h"))
        rng.bit_generator.state = checkpoint.rng_state

    bar = progress(solver.name, state.t, scenario.train.t_end) if progress else nullcontext()
    # overflow on the way to a blow-up is expected: the loop checks finiteness itself
    with bar, np.errstate(over="ignore", invalid="ignore"):
        outcome = integrate(
            solver.field, state, solver.stepper, solver.shared.times[solver.shared.times > state.t + 1e-12],
            on_snapshot=lambda s: _snapshot(solver, writer, s, rng), stop_loss=scenario.train.stop_loss,
            rng=rng, on_step=getattr(bar, "update_state", None),
            max_abs=float(np.finfo(scenario.record.dtype).max),
        )
    with np.errstate(over="ignore", invalid="ignore"):
        final = solver.measure(outcome.state.t, outcome.state.y)
    writer.status = f"failed: {outcome.message}" if outcome.status == "diverged" else "complete"
    status = writer.status
    if outcome.status == "stop_loss":
        status += f" (stop_loss reached at t = {outcome.state.t:.6g})"
    return RunReport(solver.name, status, outcome.state.t, outcome.state.step, final)


def _exact(solver, writer) -> RunReport:
    """A run known in closed form: every snapshot evaluated directly (nothing to resume)."""
    times = np.concatenate([[0.0], solver.shared.times])
    stop_loss = solver.shared.scenario.train.stop_loss
    for index, t in enumerate(times):
        y = solver.exact(t)
        measures = solver.measure(t, y)
        writer.append(index, t, *solver.particles(y), measures)
        if measures.get("loss_train", measures.get("risk", np.inf)) < stop_loss:
            break  # at a snapshot time: the closed form has no steps to stop between
    writer.status = "complete"
    return RunReport(solver.name, "complete", float(t), 0, measures)


def _open_run(trajectory, solver, resume):
    """The run's writer, and where to start: None (from t = 0) or the last checkpoint."""
    name, scenario = solver.name, solver.shared.scenario
    if resume and name in trajectory.runs:
        writer = trajectory.run(name)
        if writer.status == "complete":
            return writer, None
        checkpoint = writer.load_checkpoint() if solver.exact is None else None
        writer.truncate(0 if checkpoint is None else checkpoint.frames)
        writer.status = "running"
        return writer, checkpoint
    records_particles = scenario.record.particles and solver.kind != "ntk"
    writer = trajectory.add_run(
        name, attrs=solver.attrs, m=scenario.model.width, d=scenario.data.dim, bias=scenario.model.bias,
        particles=records_particles, dtype=np.dtype(scenario.record.dtype), measures=solver.measures,
    )
    return writer, None


def _snapshot(solver, writer, state, rng):
    """Append one frame and overwrite the checkpoint (full precision, RNG and step size)."""
    a, W, b = solver.particles(state.y)
    writer.append(state.step, state.t, a, W, b, solver.measure(state.t, state.y))
    writer.save_checkpoint(
        state.y.astype(np.float64), t=state.t, step=state.step,
        rng_state=rng.bit_generator.state, stepper={"h": state.h},
    )
