"""The runs of a scenario: one small class per kind, against one contract (docs/design.md §6.1).

Every run of a scenario starts from the same data and the same initial draws
(:class:`RunInputs`); its parameterization only scales the draws. The contract, in the
style of scipy's ``OdeSolver``:

``__init__(name, spec, resolved, inputs)``
    Cheap. Fixes what the run records: ``measures`` (name -> per-snapshot shape),
    ``records_particles``, ``attrs`` (what the file stores of the run's settings). A
    :class:`FlowRun` also takes ``lambda_0`` (keyword), when a plan has already measured it.
``start(checkpoint=None) -> RunState``
    The heavy construction (an n x n kernel and its eigendecomposition, the probe kernel,
    the vector field), when the run starts rather than when the scenario is planned, so the
    runs of a scenario do not all hold their kernels at once. Returns the state at t = 0,
    or the checkpoint in the run's working precision.
advancing, one of two ways
    A :class:`FlowRun` gives the integrator loop an ODE, ``field(t, y) -> (dy/dt, loss)``,
    and its ``stepper``. An :class:`ExactRun` is known in closed form: ``states(times)``
    yields its state at each of the given times.
``memory(scenario, spec, n_train, n_test, frames) -> list[Need]``
    A class method: the run's dominant allocations at its peak, each with the key that
    sizes it (:mod:`meanfield.engine.memory`), for the plan to check before anything is built.
``measure(state) -> dict``
    Every measure of ``measures`` at a state.
``constants() -> dict``
    Scalar results that do not change in time, known once ``start`` has run (an ``ntk``
    run with squared loss: ``loss_train_limit``, ``loss_test_limit``, its t -> infinity
    limit); stored as attributes of the run's observables group. Empty by default.
``particles(state) -> (a, W, b)``
    The particles the file stores (None for a kernel flow, which has none).
``close()``
    Drops what ``start`` built.

What a run is never asked: where the file is, or another run's results. ``gap_ntk``, the
distance to the reference run, is added by :mod:`meanfield.engine.driver`, which passes the
reference's predictions explicitly.

The kinds (:func:`make_run` picks one), each a row of the table of run kinds
(:mod:`meanfield.model.kinds`; :data:`RUN_CLASSES` maps a row to its class): :class:`ParticlesOnData`,
:class:`ParticlesOnPopulation`, :class:`TangentOnData`, :class:`TangentOnPopulation`,
:class:`KernelFlowClosedForm`, :class:`KernelFlowIntegrated`. What a run records is read off
the table of measures (:mod:`meanfield.model.measures`).

Random streams (all from ``numpy.random.SeedSequence``): the data from
``SeedSequence([data.seed, 0])`` (:func:`data_rng`; ``data.seed`` unset: the scenario's
``seed``), the initial particles from ``[seed, 1]``, the subset of
particles in the W2 measure from ``[seed, 3]``, and each run's own noise (SGD batches,
Langevin) from ``[seed, 2, crc32(name)]``, so adding or removing a run changes no other run.
"""

from __future__ import annotations

import dataclasses
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterator, Optional

import numpy as np
import scipy.linalg

from solvers import ntk as kernels
from solvers import population
from solvers.catalog import HOMOGENEITY
from solvers.curvature import TwoLayerNet
from solvers.fields import ParticleField, ParticleLayout, WeightDecay
from solvers.integrate import make_stepper
from solvers.particles import BLAS_MIN_D, gemm_buffer_bytes, predict

from ..config.scenario import Scenario
from ..config.sections import RunSpec
from ..errors import UsageError
from ..model import diagnostics as dg
from ..model import kinds
from ..model.curvature import CurvatureMeasures, ntk_eigenvalue_max, start_vector, step_of
from ..model.data import Dataset
from ..model.draws import InitialDraws, initial_draws, initial_output_bias, initial_particles, rng_for  # noqa: F401
from ..model.measures import CURVATURE_MEASURES, recorded
from ..model.parameterization import Resolved
from ..model.prediction import flow_kernels
from ..model.state import RunState
from .memory import FLOAT, Need, kernel_build, stepping

# ----------------------------------------------------------------------------- shared inputs
# rng_for, InitialDraws, initial_draws, initial_particles, initial_output_bias: meanfield.model.draws
# (a reader rebuilds a kernel run's initial particles from them)


def data_rng(scenario: Scenario) -> np.random.Generator:
    """The data stream (teacher, training and test sets): SeedSequence([data.seed, 0]),
    with the scenario's ``seed`` when ``data.seed`` is unset (docs/design.md §3.5)."""
    seed = scenario.seed if scenario.data.seed is None else scenario.data.seed
    return rng_for(seed, 0)


def run_rng(seed: int, name: str) -> np.random.Generator:
    """The run's own noise stream: SeedSequence([seed, 2, crc32(name)])."""
    return rng_for(seed, 2, zlib.crc32(name.encode()))


@dataclass(frozen=True)
class RunInputs:
    """What every run of a scenario starts from: the data, the initial draws, the snapshot
    times, and the activation and loss codes of the numerical core."""

    scenario: Scenario
    data: Dataset
    draws: InitialDraws
    times: np.ndarray
    """The snapshot times after t = 0."""
    activation: int
    loss: int

    @property
    def noise_risk(self) -> float:
        """E[eps^2] / 2 = noise^2 / 2: what label noise adds to the population risk."""
        return 0.5 * self.scenario.data.noise**2

    @property
    def probe(self) -> tuple[np.ndarray, np.ndarray]:
        """The points (and labels) on which a particle run's kernel is tracked: the first
        probe_size test points, or training points when there is no test set."""
        size = self.scenario.record.probe_size
        if not self.data.n_test:
            return self.data.X_train[:size], self.data.y_train[:size]
        return self.data.X_test[:size], self.data.y_test[:size]


# ----------------------------------------------------------------------------- the contract
class Run(ABC):
    """One run of a scenario (see the module docstring for the contract)."""

    kind: ClassVar[kinds.Kind]
    """Its row of the table of run kinds (:mod:`meanfield.model.kinds`): what it needs and can do."""

    blas_invariant = False
    """Whether the BLAS work of this kind's steps gives the same bits at any BLAS thread
    count (then its steps run the BLAS at the run's count, and a governor switches it with
    Numba's; else on one thread: docs/design.md §6.4, ``tests/test_threads.py`` checks every
    kind at 1 and 2 threads). Declared by :class:`KernelFlowIntegrated` alone
    (``tests/test_blas_invariance.py``): the tangent model's steps are GEMMs, the particle
    step's large-d path too, and the population flow's BLAS work is two dot products."""

    def __init__(self, name: str, spec: RunSpec, resolved: Resolved, inputs: RunInputs):
        self.name, self.spec, self.resolved, self.inputs = name, spec, resolved, inputs
        self.measures = self.measure_shapes(inputs.scenario, inputs.data.n_test)

    @classmethod
    def measure_shapes(cls, scenario: Scenario, n_test: int) -> dict[str, tuple]:
        """The measures a run of this kind records and their per-snapshot shapes, read off the
        table of measures (gap_ntk, which compares two runs, aside: the plan adds it)."""
        return recorded(cls.kind, scenario, n_test)

    @property
    def solver(self) -> str:
        """The scenario's name for this family of runs: particles, tangent or ntk."""
        return self.kind.solver

    @classmethod
    def memory(cls, scenario: Scenario, spec: RunSpec, n_train: int, n_test: int, frames: int) -> list[Need]:
        """The dominant allocations of the run ``spec`` of ``scenario`` at its peak, with
        n_train and n_test samples and ``frames`` snapshots: for a plan to check before
        anything is built. Each kind adds its own to its bases'."""
        return []

    @property
    def records_particles(self) -> bool:
        return False

    @property
    def attrs(self) -> dict:
        """The run's settings as the file stores them."""
        return {"solver": self.solver, **self.resolved.as_attrs()}

    @abstractmethod
    def start(self, checkpoint: Optional[RunState] = None) -> RunState:
        """Build what the run needs; the state at t = 0 (or ``checkpoint``, ready to go on)."""

    @staticmethod
    def _from(y0: np.ndarray, checkpoint: Optional[RunState]) -> RunState:
        """The state at t = 0 with ``y0``, or ``checkpoint`` with its y in y0's precision."""
        if checkpoint is None:
            return RunState(0.0, 0, y0)
        return dataclasses.replace(checkpoint, y=checkpoint.y.astype(y0.dtype))

    @abstractmethod
    def measure(self, state: RunState) -> dict:
        """Every measure in ``self.measures`` at ``state``."""

    def constants(self) -> dict:
        """Scalar results constant in time, after :meth:`start` (see the module docstring)."""
        return {}

    def particles(self, state: RunState):
        """(a, W, b) at ``state``, or None when the run has no particles."""
        return None

    def close(self) -> None:
        """Drop what :meth:`start` built."""


class FlowRun(Run):
    """A run the integrator loop advances: ``field(t, y) -> (dy/dt, loss)`` with ``stepper``
    (both set by :meth:`start`), from the state ``start`` returns."""

    field: Callable
    stepper: object
    method_of: ClassVar[dict] = {}
    """Methods the run takes in place of the scenario's (a kernel flow has no noise)."""

    def __init__(self, name, spec, resolved, inputs, *, lambda_0: Optional[float] = None):
        super().__init__(name, spec, resolved, inputs)
        self._lambda_0 = lambda_0

    @classmethod
    def memory(cls, scenario, spec, n_train, n_test, frames):
        method = scenario.integrator_of(spec).method
        values, itemsize, lower = cls.state_size(scenario, n_train, n_test)
        return [*super().memory(scenario, spec, n_train, n_test, frames),
                stepping(cls.method_of.get(method, method), values, itemsize, lower)]

    @classmethod
    @abstractmethod
    def state_size(cls, scenario: Scenario, n_train: int, n_test: int) -> tuple[int, int, str]:
        """(numbers in the state, bytes of each, the key that sizes it)."""

    @property
    def integrator(self):
        """The run's integrator: runs.<name>.integrator, else train.integrator; with a
        dt_factor c its dt is c * 2 / lambda_0 (:attr:`lambda_0`, docs/design.md §1.9)."""
        integrator = self.inputs.scenario.integrator_of(self.spec)
        if integrator.dt_factor is None:
            return integrator
        return integrator.model_copy(update={"dt": step_of(integrator.dt_factor, self.lambda_0,
                                                           self.inputs.scenario.integrator_key(self.name))})

    @property
    def lambda_0(self) -> float:
        """ntk_eigenvalue_max at t = 0: the top eigenvalue of the run's kernel on the training
        set over n (what a dt_factor scales the step to); measured once, or given to
        ``__init__`` by a plan that measured it."""
        if self._lambda_0 is None:
            self._lambda_0 = self.initial_ntk_eigenvalue()
        return self._lambda_0

    def initial_ntk_eigenvalue(self) -> float:
        raise UsageError(f"run {self.name!r} has no training set to take lambda_0 on: give its integrator a dt")

    @property
    def attrs(self) -> dict:
        integrator = self.integrator
        attrs = {**super().attrs, "integrator": integrator.model_dump()}
        return attrs if integrator.dt_factor is None else {**attrs, "lambda_0": self.lambda_0}

    def stepper_settings(self) -> dict:
        """The integrator's keys that make_stepper takes (dt resolved)."""
        return self.integrator.model_dump(exclude={"dt_factor"})

    def close(self) -> None:
        self.field = self.stepper = None


class ExactRun(Run):
    """A run known in closed form at any time: no steps, nothing to checkpoint."""

    @abstractmethod
    def states(self, times: np.ndarray) -> Iterator[RunState]:
        """The state at each of ``times`` (in order), the i-th with step = i."""


# ----------------------------------------------------------------------------- measures shared by kinds
def fit_on_data(f_train, f_test, data: Dataset, loss: int, measures=(), norm: Optional[float] = None) -> dict:
    """loss_train and loss_test, (1/n) sum_k loss(f_k, y_k) on each set, and f_test
    (loss_train alone without a test set); the margins ``measures`` names: margin = min_k y_k
    f(x_k) on the training set, and normalized_margin = margin / ``norm`` (NaN where the norm is 0:
    a kernel flow's f_0 = 0), docs/design.md §1.7."""
    fit = {"loss_train": dg.mean_loss(f_train, data.y_train, loss)}
    if data.n_test:
        fit.update(loss_test=dg.mean_loss(f_test, data.y_test, loss), f_test=f_test)
    if "margin" in measures or "normalized_margin" in measures:
        margin = dg.margin(f_train, data.y_train)
        if "margin" in measures:
            fit["margin"] = margin
        if "normalized_margin" in measures:
            fit["normalized_margin"] = margin / norm if norm > 0 else float("nan")  # f = 0 (a flow at t = 0)
    return fit


class ParticleMeasures:
    """What is measured of the particles themselves, against where they started: the three
    displacements, W2 between the particle measures at 0 and t, the alignment with the
    teacher, and (``kernel``) the distance of the probe-set NTK from its initial value and
    its alignment with the probe labels."""

    def __init__(self, run: ParticleRun, kernel: bool):
        inputs = run.inputs
        self.initial, self.resolved, self.activation = run.initial, run.resolved, inputs.activation
        self.alone = [(name, function) for name, function in dg.OF_PARTICLES.items() if name in run.measures]
        self.teacher = inputs.data.teacher if "teacher_alignment" in run.measures else None
        self.subset = _w2_subset(inputs.scenario)
        self.cloud0 = dg.particle_cloud(*self._take(*self.initial)) if "wasserstein2" in run.measures else None
        self.probe = inputs.probe if kernel else None
        self.K0 = self._probe_kernel(*self.initial) if kernel else None

    def __call__(self, a, W, b) -> dict:
        out = {name: function(a, W, b, *self.initial) for name, function in self.alone}
        if self.cloud0 is not None:
            out["wasserstein2"] = dg.wasserstein2(self.cloud0, dg.particle_cloud(*self._take(a, W, b)))
        if self.teacher is not None:
            signed = not self.teacher.activation.startswith("hermite")
            out["teacher_alignment"] = dg.teacher_alignment(a, W, self.teacher.W, signed=signed)
        if self.K0 is not None:
            K = self._probe_kernel(a, W, b)
            out["kernel_distance"] = dg.kernel_distance(self.K0, K)
            out["kernel_alignment"] = dg.kernel_target_alignment(K, self.probe[1])
        return out

    def _take(self, a, W, b):
        """The particles in the W2 measure (all of them, or a fixed random subset)."""
        pick = self.subset
        return (a, W, b) if pick is None else (a[pick], W[pick], None if b is None else b[pick])

    def _probe_kernel(self, a, W, b):
        X_probe, r = self.probe[0], self.resolved
        return kernels.empirical_ntk(
            np.asarray(a, np.float64), np.asarray(W, np.float64), None if b is None else np.asarray(b, np.float64),
            X_probe, X_probe, s=r.s, eta_a=r.eta_a, eta_w=r.eta_w, act=self.activation, loss_scale=r.loss_scale,
            eta_c=r.eta_c or 0.0, eta_b=r.eta_b)


def _w2_subset(scenario: Scenario):
    m, keep = scenario.model.width, scenario.record.w2_particles
    if m <= keep:
        return None
    return np.sort(rng_for(scenario.seed, 3).choice(m, size=keep, replace=False))


# ----------------------------------------------------------------------------- particle runs
class ParticleRun(Run):
    """A run whose state is the particles y = [a, W, b] (and the output bias c, last): the
    network or its tangent model."""

    def __init__(self, name, spec, resolved, inputs, **options):
        super().__init__(name, spec, resolved, inputs, **options)
        scenario = inputs.scenario
        self.layout = ParticleLayout(scenario.model.width, scenario.data.dim, scenario.model.bias,
                                     scenario.model.output_bias)
        self.initial = initial_particles(inputs.draws, resolved, scenario.model.bias)
        self.c0 = initial_output_bias(inputs.draws, resolved)
        self.dtype = np.dtype(np.float64)
        self._measure_particles = self._measure_curvature = None

    @classmethod
    def memory(cls, scenario, spec, n_train, n_test, frames):
        """The initial particles (float64), the Wasserstein-2 transport between k = min(m,
        w2_particles) particles (its k x k costs and the assignment's work arrays; none where
        w2_particles is 0), and the
        probe-set kernel where the run tracks its own (two p x p parts, features, K_0)."""
        m = scenario.model.width
        k = min(m, scenario.record.w2_particles)
        needs = [*super().memory(scenario, spec, n_train, n_test, frames),
                 Need("the initial particles", FLOAT * cls.particle_values(scenario), "model.width")]
        if k:
            needs.append(Need(f"the Wasserstein-2 transport of {k} particles", 6 * FLOAT * k * k,
                              "record.w2_particles"))
        if cls.kind.tracks_kernel and not scenario.data.population:
            p = min(scenario.record.probe_size, n_test or n_train)
            needs.append(Need("the probe-set kernel", kernel_build(p, p, m) + FLOAT * p * p, "record.probe_size"))
        return needs

    @staticmethod
    def particle_values(scenario: Scenario) -> int:
        """m (d + 1 + bias) + output_bias: the numbers of the particles (and the output bias)."""
        model = scenario.model
        return model.width * (scenario.data.dim + 1 + int(model.bias)) + int(model.output_bias)

    @property
    def records_particles(self) -> bool:
        return self.inputs.scenario.record.particles

    @property
    def numbers(self) -> dict:
        """The resolved numbers the solvers take (eta_b with an lr_b, eta_c with an output bias)."""
        r = self.resolved
        numbers = dict(s=r.s, eta_a=r.eta_a, eta_w=r.eta_w, loss_scale=r.loss_scale)
        extra = {key: getattr(r, key) for key in ("eta_b", "eta_c") if getattr(r, key) is not None}
        return {**numbers, **extra}

    def population_settings(self, numbers: bool = True) -> dict:
        """The student's and the teacher's activations (and the resolved numbers) that the
        population solvers take."""
        settings = dict(act=self.inputs.scenario.model.activation, teacher_act=self.inputs.data.teacher.activation)
        return {**settings, **self.numbers} if numbers else settings

    def start(self, checkpoint=None) -> RunState:
        self._measure_particles = ParticleMeasures(self, kernel=self.kind.tracks_kernel)
        self._build()
        wanted = [name for name in self.measures if name in CURVATURE_MEASURES]
        self._measure_curvature = self._curvature_measures(wanted) if wanted else None
        return self._from(self.layout.pack(*self.initial, dtype=self.dtype, c=self.c0), checkpoint)

    @abstractmethod
    def _build(self) -> None:
        """Build the dynamics (the field, or the exact solution)."""

    @abstractmethod
    def _fit(self, state: RunState) -> dict:
        """The fit measures at ``state`` (those of :attr:`measures` with ``fit`` or a test set in
        the table of measures: loss_train, loss_test and f_test, or risk)."""

    def _curvature_measures(self, wanted) -> CurvatureMeasures:
        """The curvature measures ``wanted`` on the training set (a run on data, §1.9)."""
        data, inputs = self.inputs.data, self.inputs
        v0 = start_vector(inputs.scenario.seed, self.name, max(data.n_train, self.layout.size))
        return CurvatureMeasures(wanted, data.X_train, data.y_train, inputs.activation, inputs.loss, self.numbers,
                                 v0, tangent=self._tangent_point())

    def _tangent_point(self):
        """(a0, W0, b0, c0) where the run is a tangent model, else None."""
        return None

    def measure(self, state):
        out = {**self._fit(state), **self._measure_particles(*self.layout.split(state.y))}
        if self.c0 is not None:
            out["output_bias"] = float(self.layout.c_of(state.y)[0])
        if self._measure_curvature is not None:
            out.update(self._curvature(state))
        return out

    def _curvature(self, state) -> dict:
        """The curvature measures at ``state`` (of the particles themselves)."""
        a, W, b = self.layout.split(state.y)
        c = self.layout.c_of(state.y)
        return self._measure_curvature(a, W, b, None if c is None else float(c[0]))

    def particles(self, state):
        return self.layout.split(state.y)

    def close(self) -> None:
        super().close()
        self._measure_particles = self._measure_curvature = None


class ParticleFlow(ParticleRun, FlowRun):
    """A particle run stepped by the integrator, with the scenario's weight decay and temperature."""

    @classmethod
    def state_size(cls, scenario, n_train, n_test):
        return cls.particle_values(scenario), FLOAT, "model.width"

    def _build(self):
        field = self._field()
        train = self.inputs.scenario.train
        self.field = WeightDecay(field, train.weight_decay) if train.weight_decay else field
        self.stepper = make_stepper(**self.stepper_settings(), temperature=train.temperature)

    @abstractmethod
    def _field(self):
        """The gradient-flow vector field of the particles."""

    def initial_ntk_eigenvalue(self) -> float:
        """ntk_eigenvalue_max of the initial particles on the training set (a run on data)."""
        if not self.kind.curvature:
            return super().initial_ntk_eigenvalue()
        X, (a0, W0, b0), r = self.inputs.data.X_train, self.initial, self.resolved
        net = TwoLayerNet(a0, W0, b0, X, r.s, self.inputs.activation, c_out=self.c0)
        v0 = start_vector(self.inputs.scenario.seed, self.name, max(len(X), self.layout.size))
        return ntk_eigenvalue_max(net, net.rates(r.eta_a, r.eta_w, r.eta_c, r.eta_b), r.loss_scale, v0)


class ParticlesOnData(ParticleFlow):
    """The network itself on a data set: f(x) = s sum_i a_i sigma(w_i . x + b_i), trained by
    gradient flow (or SGD, Langevin) in ``train.dtype`` arithmetic."""

    kind = kinds.KINDS["particles_on_data"]

    def __init__(self, name, spec, resolved, inputs, **options):
        super().__init__(name, spec, resolved, inputs, **options)
        self.dtype = np.dtype(inputs.scenario.train.dtype)

    @classmethod
    def state_size(cls, scenario, n_train, n_test):
        return cls.particle_values(scenario), np.dtype(scenario.train.dtype).itemsize, "model.width"

    @classmethod
    def memory(cls, scenario, spec, n_train, n_test, frames):
        """With the data in the working precision and packed in tiles (train and test), and
        from d = BLAS_MIN_D on the GEMM path's buffers for blocks of Z = W X^T and the lanes'
        sums (solvers.particles.gemm_buffer_bytes: docs/design.md §1.1)."""
        itemsize = np.dtype(scenario.train.dtype).itemsize
        values = 3 * (n_train + n_test) * (scenario.data.dim + 1)
        needs = [*super().memory(scenario, spec, n_train, n_test, frames),
                 Need("the data in tiles", values * itemsize, "data.n_train, data.n_test")]
        if scenario.data.dim >= BLAS_MIN_D:
            z = gemm_buffer_bytes(scenario.model.width, max(n_train, n_test), scenario.data.dim, itemsize)
            needs.append(Need("the buffer for W X^T of the large-d particle step", z, "model.width, data.n_train"))
        return needs

    def _field(self):
        data, inputs = self.inputs.data, self.inputs
        X, y = data.X_train.astype(self.dtype), data.y_train.astype(self.dtype)
        return ParticleField(self.layout, X, y, activation=inputs.activation, loss=inputs.loss, **self.numbers)

    def _fit(self, state):
        a, W, b = self.layout.split(state.y)
        c = self.layout.c_of(state.y)
        c = None if c is None else c[0]
        data, act, s = self.inputs.data, self.inputs.activation, self.resolved.s
        norm = self._norm(a, W, b) if "normalized_margin" in self.measures else None
        return fit_on_data(predict(a, W, b, data.X_train, s, act, c), predict(a, W, b, data.X_test, s, act, c),
                           data, self.inputs.loss, self.measures, norm)

    def _norm(self, a, W, b) -> float:
        """N(theta) of the normalised margin (diagnostics.particle_norm): of the output layer
        alone where the input layer is fixed (eta_w = 0), else of both layers; the schema has
        checked that the network is homogeneous (Scenario._margins_apply)."""
        degree = HOMOGENEITY[self.inputs.scenario.model.activation]
        return dg.particle_norm(a, W, b, self.resolved.s, degree, output_only=self.resolved.eta_w == 0)


class ParticlesOnPopulation(ParticleFlow):
    """The network on the population risk (infinite Gaussian data, a teacher): the N-body
    flow of the closed-form energy, in float64."""

    kind = kinds.KINDS["particles_on_population"]

    @classmethod
    def memory(cls, scenario, spec, n_train, n_test, frames):
        """With the population risk's m x m pair moments (solvers.population.pair_U)."""
        m = scenario.model.width
        return [*super().memory(scenario, spec, n_train, n_test, frames),
                Need("the m x m pair moments of the population risk", 10 * FLOAT * m * m, "model.width")]

    def _field(self):
        teacher = self.inputs.data.teacher
        return population.PopulationField(self.layout, teacher.a, teacher.W, **self.population_settings())

    def _fit(self, state):
        a, W, _ = self.layout.split(state.y)
        teacher = self.inputs.data.teacher
        risk = population.population_risk(a, W, teacher.a, teacher.W, s=self.resolved.s,
                                          **self.population_settings(numbers=False))
        return {"risk": risk + self.inputs.noise_risk}


class TangentOnData(ParticleFlow):
    """The finite-width linearized network f_0 + grad f(theta_0) . (theta - theta_0) on a data
    set, trained in parameter space (float64)."""

    kind = kinds.KINDS["tangent_on_data"]

    @classmethod
    def memory(cls, scenario, spec, n_train, n_test, frames):
        """With the features of blocks of particles on the data (solvers.ntk.TangentField):
        at most BLOCK_ELEMENTS values per buffer, a handful of buffers for each thread that
        runs blocks (Numba's most, at most one per block: solvers.lanes.run_jobs)."""
        import numba

        width, n = scenario.model.width, max(n_train, n_test, 1)
        block = max(1, min(width, kernels.BLOCK_ELEMENTS // n))  # particles a block (solvers.ntk._block_rows)
        features = block * n
        threads = min(numba.config.NUMBA_NUM_THREADS, -(-width // block))
        return [*super().memory(scenario, spec, n_train, n_test, frames),
                Need("the tangent features", 4 * FLOAT * features * threads, "model.width, data.n_train")]

    def _field(self):
        data, inputs = self.inputs.data, self.inputs
        self.tangent = kernels.TangentField(*self.initial, data.X_train, data.y_train, act=inputs.activation,
                                            loss=inputs.loss, c0=self.c0, **self.numbers)
        return self.tangent

    def _fit(self, state):
        data = self.inputs.data
        return fit_on_data(self.tangent.predict(state.y, data.X_train), self.tangent.predict(state.y, data.X_test),
                           data, self.inputs.loss, self.measures)

    def _tangent_point(self):
        return (*self.initial, self.c0)

    def _curvature(self, state):
        """At theta_0 (the tangent model's J), with l'' at its predictions on the training set."""
        return self._measure_curvature(None, None, None, f=self.tangent.predict(state.y, self.inputs.data.X_train))

    def close(self):
        super().close()
        self.tangent = None


class TangentOnPopulation(ParticleRun, ExactRun):
    """The linearized network on the population risk: a quadratic risk with the closed-form
    Gram matrix E[grad f grad f^T], solved exactly at any time (float64)."""

    kind = kinds.KINDS["tangent_on_population"]

    @classmethod
    def memory(cls, scenario, spec, n_train, n_test, frames):
        """With the Gram matrix of m (d + 1) parameters, the pair Hessians it is built from
        and its eigendecomposition (solvers.population.PopulationTangent): about eight such
        matrices at once."""
        size = scenario.model.width * (scenario.data.dim + 1)
        return [*super().memory(scenario, spec, n_train, n_test, frames),
                Need(f"the {size} x {size} tangent Gram matrix and its eigendecomposition", 8 * FLOAT * size * size,
                     "model.width")]

    def _build(self):
        teacher = self.inputs.data.teacher
        a0, W0, _ = self.initial
        self.tangent = population.PopulationTangent(a0, W0, teacher.a, teacher.W, **self.population_settings())

    def states(self, times):
        for index, t in enumerate(times):
            yield RunState(float(t), index, self.tangent.state(t))

    def _fit(self, state):
        return {"risk": self.tangent.risk(state.t) / self.resolved.loss_scale + self.inputs.noise_risk}

    def close(self):
        super().close()
        self.tangent = None


# ----------------------------------------------------------------------------- kernel flows
class KernelFlow(Run):
    """Kernel gradient flow in function space (the ``ntk`` solver), on train and test points
    at once: the state is y = [f(X_train), f(X_test)] (f(X_train) alone without a test set),
    df/dt = -(1/n) K(., X_train) l'(f(X_train), y) - lambda (f - f_0), with the
    learning-rate weighted NTK K and the run's ``ridge`` lambda (docs/design.md §1.6)."""

    @classmethod
    def memory(cls, scenario, spec, n_train, n_test, frames):
        """The kernel K([X; X*], X), N = n + n* rows: of the particles (two N x n parts and
        the features of blocks of particles), or in closed form (about eight N x n arrays)."""
        N, n = n_train + n_test, n_train
        build = kernel_build(N, n, scenario.model.width) if spec.kernel == "empirical" else 8 * FLOAT * N * n
        return [*super().memory(scenario, spec, n_train, n_test, frames),
                Need(f"the {N} x {n} kernel", build, "data.n_train, data.n_test")]

    @property
    def attrs(self) -> dict:
        attrs = super().attrs
        return {"solver": attrs.pop("solver"), "kernel": self.spec.kernel, "ridge": self.spec.ridge, **attrs}

    def kernels(self):
        """K(X_train, X_train), K(X_test, X_train) and f_0 on [X_train; X_test]: of the
        particles (``empirical``), or the analytic m -> infinity limit from f_0 = 0. An output
        bias adds loss_scale * eta_c to either kernel and its c_0 to f_0 (the analytic run then
        starts from f_0 = c_0, the constant every run of the scenario starts with):
        :func:`meanfield.model.prediction.flow_kernels`, which a reader's predict shares."""
        inputs = self.inputs
        return flow_kernels(self.resolved, inputs.draws, inputs.data.X_train, inputs.data.X_test, inputs.activation,
                            inputs.scenario.model.bias, self.spec.kernel)

    def measure(self, state):
        n = self.inputs.data.n_train
        norm = None
        if "normalized_margin" in self.measures:  # from f_0 = 0 (Scenario._margins_apply)
            norm = dg.kernel_norm(state.y[:n], *self._training_eigh)
        return fit_on_data(state.y[:n], state.y[n:], self.inputs.data, self.inputs.loss, self.measures, norm)

    def _kernel_eigh(self, K_train) -> None:
        """Keep K_train's eigendecomposition where normalized_margin is recorded (its RKHS norm)."""
        if "normalized_margin" in self.measures:
            self._training_eigh = scipy.linalg.eigh(K_train)

    def close(self) -> None:
        super().close()
        self._training_eigh = None


class KernelFlowClosedForm(KernelFlow, ExactRun):
    """Kernel gradient flow of the squared loss, solved in closed form through one
    eigendecomposition of the training kernel (``solvers.ntk.LinearizedSquared``), and
    its t -> infinity limit from the same eigendecomposition: kernel ridge regression
    f_0 + K (K + n lambda I)^-1 (y - f_0), or for lambda = 0 the projection onto the range
    of K (kernel interpolation where K is invertible), whose losses are its constants."""

    kind = kinds.KINDS["kernel_flow_closed_form"]

    @classmethod
    def memory(cls, scenario, spec, n_train, n_test, frames):
        """With the eigendecomposition of the n x n training kernel (the reduction, its
        reflectors, the tridiagonal eigenvectors and workspace: about four n x n arrays, and a
        copy of K(X*, X)), and the predictions at every snapshot in one call (about five
        arrays of frames x N)."""
        n, N = n_train, n_train + n_test
        return [*super().memory(scenario, spec, n_train, n_test, frames),
                Need(f"the eigendecomposition of the {n} x {n} training kernel", FLOAT * (4 * n * n + n_test * n),
                     "data.n_train"),
                Need(f"the predictions at {frames} snapshots", 5 * FLOAT * frames * N,
                     "data.n_train, data.n_test or the snapshots (raise record.every)")]

    def start(self, checkpoint=None):
        data = self.inputs.data
        K_train, K_test, f0 = self.kernels()
        self._kernel_eigh(K_train)
        n = data.n_train
        self.solution = kernels.LinearizedSquared(K_train, data.y_train, f0[:n], K_test, f0[n:],
                                                  ridge=self.spec.ridge)
        return RunState(0.0, 0, f0)

    def constants(self):
        """loss_train_limit and loss_test_limit: loss_train and loss_test (same definition)
        of the predictions as t -> infinity (``LinearizedSquared.limit``; loss_test_limit with a test set)."""
        fit = fit_on_data(*self.solution.limit(), self.inputs.data, self.inputs.loss)
        return {f"{name}_limit": float(fit[name]) for name in ("loss_train", "loss_test") if name in fit}

    def states(self, times):
        """All the times in one call (one pass over the eigenvectors for all of them: 10x
        faster than one call per time at n = 4000 and 100 snapshots)."""
        values = np.hstack(self.solution.predict(np.asarray(times, dtype=np.float64)))
        for index, (t, y) in enumerate(zip(np.asarray(times).tolist(), values)):
            yield RunState(float(t), index, y)

    def test_predictions(self, t: float) -> np.ndarray:
        """f_t(X_test) at any time t."""
        return self.solution.predict(t)[1]

    def close(self):
        super().close()
        self.solution = None


class KernelFlowIntegrated(KernelFlow, FlowRun):
    """Kernel gradient flow of a loss other than squared: its n-dimensional ODE integrated
    with the run's integrator (SGD and Euler-Maruyama become Euler with the same dt:
    the kernel flow is deterministic). No closed-form limit: no constants."""

    kind = kinds.KINDS["kernel_flow_integrated"]
    method_of = {"sgd": "euler", "euler_maruyama": "euler"}
    blas_invariant = True
    """Its step, K[:, train] l' and element-wise work, uses no BLAS (``solvers.ntk.matvec``, Numba's
    threads in jobs of fixed rows, where OpenBLAS's gemv gave other bits on 2 threads): the same
    bits at any count of either (``tests/test_blas_invariance.py``)."""

    @classmethod
    def state_size(cls, scenario, n_train, n_test):
        return n_train + n_test, FLOAT, "data.n_train, data.n_test"

    @classmethod
    def memory(cls, scenario, spec, n_train, n_test, frames):
        """With the field's scaled copy of K(., X) beside the kernel being copied."""
        N, n = n_train + n_test, n_train
        return [*super().memory(scenario, spec, n_train, n_test, frames),
                Need(f"the field's copy of the {N} x {n} kernel", FLOAT * N * n, "data.n_train, data.n_test")]

    def start(self, checkpoint=None):
        data = self.inputs.data
        K_train, K_test, f0 = self.kernels()
        self._kernel_eigh(K_train)
        self.field = kernels.FunctionSpaceField(K_train, data.y_train, self.inputs.loss, K_test_train=K_test,
                                                ridge=self.spec.ridge, f0=f0)
        method = self.stepper_settings()
        if method["method"] in ("sgd", "euler_maruyama"):
            method.update(method="euler", batch_size=None)
        self.stepper = make_stepper(**method)
        return self._from(np.array(f0, dtype=np.float64), checkpoint)

    def initial_ntk_eigenvalue(self) -> float:
        """The top eigenvalue of its training kernel over n (exact: the kernel is built anyway)."""
        K_train = self.kernels()[0]
        n = len(K_train)
        return float(scipy.linalg.eigh(K_train, eigvals_only=True, subset_by_index=[n - 1, n - 1])[0]) / n


RUN_CLASSES = {cls.kind.name: cls for cls in (ParticlesOnData, ParticlesOnPopulation, TangentOnData,
                                               TangentOnPopulation, KernelFlowClosedForm, KernelFlowIntegrated)}
"""Kind name (a row of :data:`meanfield.model.kinds.KIND_TABLE`) -> the class of its runs."""


def run_class(scenario: Scenario, spec: RunSpec) -> type[Run]:
    """The kind of run a scenario's entry ``spec`` is (:func:`meanfield.model.kinds.kind_of`)."""
    return RUN_CLASSES[kinds.kind_of(spec.solver, scenario.data.population, scenario.loss).name]


def make_run(name: str, spec: RunSpec, resolved: Resolved, inputs: RunInputs,
             lambda_0: Optional[float] = None) -> Run:
    """The run for the scenario's entry ``name``; ``lambda_0``, when the plan measured it
    (a dt_factor's, ``Plan.steps``), is the run's :attr:`FlowRun.lambda_0` as is."""
    kind = run_class(inputs.scenario, spec)
    if lambda_0 is None:
        return kind(name, spec, resolved, inputs)
    return kind(name, spec, resolved, inputs, lambda_0=lambda_0)  # a FlowRun's: no second eigensolve
