"""The scenario file: a typed schema, safe loading, and ``--set`` overrides.

A scenario is everything a run needs (docs/design.md §5). Every key is fixed by the schema below:
unknown keys and wrong types are errors that name the file, the line, the dotted key and
what is allowed. Overrides (``--set model.width=4096``) edit the parsed mapping *before*
validation, so a typo in an override is caught the same way. YAML is read with
:class:`UniqueKeyLoader` (``yaml.SafeLoader``, so nothing in a scenario can run code, that
also refuses a key given twice), from UTF-8 text.
"""

from __future__ import annotations

import copy
import math
import os
import re
import typing
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from solvers.catalog import ACTIVATIONS, ANALYTIC_ACTIVATIONS, LOSSES, POPULATION_ACTIVATIONS

from .. import messages
from ..model.kinds import DEFAULT_SOLVER, can, kind_of
from ..model.measures import CURVATURE_MEASURES, OPTIONAL_MEASURES
from .bundled import display_name
from ..errors import UsageError

ActivationName = Literal[tuple(ACTIVATIONS)]
LossName = Literal[tuple(LOSSES)]
TaskName = Literal[
    "teacher_student", "single_index", "gaussian_mixture", "xor", "moons", "spirals", "file"
]
FIXED_STEP_METHODS = ("euler", "heun", "rk4", "euler_maruyama", "sgd")
TWO_D_TASKS = ("xor", "moons", "spirals")


class Strict(BaseModel):
    """A schema section: unknown keys are errors, values are validated on assignment, and
    every number is finite (.inf and .nan are refused wherever a number is asked for)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# ----------------------------------------------------------------------------- data
TEACHER_A_RULES = ("equal", "alternating", "random_sign")
"""data.teacher.a by rule: 1/width each, +1 -1 +1 ..., or independent +-1 (docs/design.md §5.1)."""

TEACHER_W_RULES = ("random", "orthonormal")
"""data.teacher.W by rule: rows uniform on the unit sphere, or random orthonormal rows."""


def _key_error(key: str, message: str) -> ValidationError:
    """``message`` as the error of the sub-key ``key`` of the section being validated, so that
    it names that key and its line (or override), not the whole section's."""
    error = PydanticCustomError("value_error", "{message}", {"message": message})
    return ValidationError.from_exception_data(key, [InitErrorDetails(type=error, loc=(key,), input=None)])


def _rule_or_numbers(value, rules: tuple, depth: int, what: str):
    """A rule's name from ``rules``, or (depth 1) a list of finite numbers, (depth 2) a list
    of such lists: checked here so that a bad value gets one message, not one per union member."""
    expected = f"one of {', '.join(rules)}, or {what}"
    if isinstance(value, str):
        if value not in rules:
            raise ValueError(f"unknown rule {value!r}; expected {expected}" + messages.did_you_mean(value, rules))
        return value
    items = value if isinstance(value, list) else None
    for _ in range(depth - 1):
        items = [x for row in items for x in row] if items is not None and all(
            isinstance(row, list) for row in items) else None
    if items is None or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                and math.isfinite(x) for x in items):
        raise ValueError(f"expected {expected} (finite numbers)")
    return value


class TeacherSpec(Strict):
    """Teacher network f*(x) = sum_j a*_j sigma(w*_j . x) of ``width`` neurons
    (meanfield.model.data.make_teacher; docs/design.md §5.1).

    The defaults are the teacher of every earlier version: a*_j = 1/width, w*_j uniform on
    the unit sphere. The rules that draw (W random or orthonormal, a random_sign) draw from
    the data stream, W before a (docs/design.md §3.5).
    """

    width: PositiveInt = 3
    activation: ActivationName = "relu"
    a: Union[Literal[TEACHER_A_RULES], list[float]] = "equal"
    """Output weights: ``equal`` a*_j = 1/width; ``alternating`` +1, -1, +1, ...;
    ``random_sign`` independent +-1 with probability 1/2; or a list of ``width`` numbers."""
    W: Union[Literal[TEACHER_W_RULES], list[list[float]]] = "random"
    """Input weights (rows are neurons): ``random`` rows uniform on the unit sphere;
    ``orthonormal`` random orthonormal rows (Gram-Schmidt of the random rows; width <= dim);
    or ``width`` rows of ``dim`` numbers, none all zero."""
    norm: Optional[PositiveFloat] = None
    """|w*_j| for every row. Unset: 1 for the rules, and explicit rows used exactly as
    given; set: every row, explicit ones too, scaled to this length (their directions kept)."""

    @field_validator("a", mode="before")
    @classmethod
    def _a_rule_or_numbers(cls, value):
        return _rule_or_numbers(value, TEACHER_A_RULES, 1, "a list of width numbers")

    @field_validator("W", mode="before")
    @classmethod
    def _W_rule_or_rows(cls, value):
        return _rule_or_numbers(value, TEACHER_W_RULES, 2, "a list of width rows of dim numbers")

    @model_validator(mode="after")
    def _explicit_sizes(self):
        if isinstance(self.a, list) and len(self.a) != self.width:
            raise _key_error("a", f"{len(self.a)} numbers for a teacher of width {self.width}: "
                                  "give one output weight per neuron")
        if isinstance(self.W, list):
            if len(self.W) != self.width:
                raise _key_error("W", f"{len(self.W)} rows for a teacher of width {self.width}: "
                                      "give one row per neuron")
            zero = next((j for j, row in enumerate(self.W) if not any(row)), None)
            if zero is not None:
                raise _key_error("W", f"row {zero} is all zeros; each teacher neuron needs a direction")
        return self

    def check_dim(self, dim: int) -> None:
        """What needs data.dim: explicit rows of dim numbers; orthonormal rows need width <= dim."""
        if isinstance(self.W, list):
            lengths = sorted({len(row) for row in self.W})
            if lengths != [dim]:
                raise _key_error("W", f"rows of {' and '.join(map(str, lengths))} numbers, and data.dim is {dim}: "
                                      f"give each row {dim} numbers")
        if self.W == "orthonormal" and self.width > dim:
            raise _key_error("W", f"orthonormal needs width <= dim: {self.width} orthonormal rows do not fit "
                                  f"in dimension {dim}; lower data.teacher.width or raise data.dim")

    def describe(self) -> Optional[str]:
        """What differs from the default teacher, in words (None when nothing does)."""
        parts = []
        for key, default in (("a", "equal"), ("W", "random")):
            value = getattr(self, key)
            if isinstance(value, list):
                parts.append(f"{key} given ({len(value)} {'numbers' if key == 'a' else 'rows'})")
            elif value != default:
                parts.append(f"{key} {value}")
        if self.norm is not None:
            parts.append(f"norm {self.norm:g}")
        return ", ".join(parts) or None


def _differs_from_default(model: BaseModel, key: str) -> bool:
    """A key given a value of its own (a resolved scenario lists every default: those are not)."""
    return getattr(model, key) != type(model).model_fields[key].default


REGRESSION_TASKS = ("teacher_student", "single_index")

TASK_KEYS = {"teacher": ("teacher_student",), "population": ("teacher_student",), "degree": ("single_index",),
             "delta": ("gaussian_mixture",), "path": ("file",), "test_fraction": ("file",),
             "test_path": ("file",), "test_indices": ("file",), "inputs": REGRESSION_TASKS}
"""The data keys that only some tasks read (the classification tasks draw their own inputs)."""

HELD_OUT = 0.25
"""file: data.test_fraction's default, the share of the samples held out at random."""

FILE_IGNORES = ("n_train", "n_test", "noise")
"""The data keys of every task but ``file``, whose samples are those of its file, split by test_fraction."""


class DataSpec(Strict):
    task: TaskName = "teacher_student"
    seed: Optional[NonNegativeInt] = None
    """The data stream's seed (teacher, training and test sets): unset, the scenario's
    ``seed``. Fixed, the data stay the same while ``seed`` varies the particles."""
    dim: PositiveInt = 2
    """The inputs' dimension d; file: read from data.path when not given (giving another is an error)."""
    n_train: PositiveInt = 256
    n_test: PositiveInt = 1024
    inputs: Literal["gaussian", "sphere", "unit_sphere"] = "gaussian"
    """Regression tasks: x ~ N(0, I_dim); uniform on the sphere |x| = sqrt(dim); or on |x| = 1."""
    noise: NonNegativeFloat = 0.0
    teacher: TeacherSpec = TeacherSpec()
    degree: PositiveInt = 2
    """single_index: the target is He_degree(<u, x>) / sqrt(degree!)."""
    delta: float = Field(0.5, gt=0.0, lt=1.0)
    """gaussian_mixture: class +-1 has x ~ N(0, (1 +- delta)^2 I)."""
    path: Optional[str] = None
    """file: an .npz, .h5 or .csv file holding X [n, d] and y [n] (meanfield.model.data), relative to
    the scenario file (an override's or a Python mapping's: to the working directory)."""
    test_fraction: float = Field(HELD_OUT, ge=0.0, lt=1.0)
    """file: the share of the file's samples held out at random as the test set; 0: every
    sample trains and there is no test set (nothing measured on one is recorded)."""
    test_path: Optional[str] = None
    """file: a second file (the same format and dim) that is the test set; every sample of
    ``path`` trains (no test_fraction then)."""
    test_indices: Optional[list[Annotated[int, Field(strict=True, ge=0)]]] = None
    """file: the 0-based indices of the file's samples that are the test set (in this order);
    the others train, in file order (no test_fraction or test_path then)."""
    population: bool = False
    """teacher_student with Gaussian inputs: train on the exact population risk (infinite data)."""

    @field_validator("teacher")
    @classmethod
    def _teacher_fits_dim(cls, teacher, info: ValidationInfo):
        """Checked with the teacher (dim comes first), so the error names its line."""
        if "dim" in info.data:  # else already an error of its own
            teacher.check_dim(info.data["dim"])
        return teacher

    @field_validator("test_path")
    @classmethod
    def _test_path_alone(cls, test_path, info: ValidationInfo):
        """The test set is chosen one way: data.test_path takes the place of a random
        data.test_fraction (whose default 0.25 counts as unset)."""
        fraction = info.data.get("test_fraction", HELD_OUT)
        if test_path is not None and fraction != HELD_OUT:
            raise ValueError(f"data.test_fraction {fraction:g} and data.test_path conflict: the test set is the file "
                             "data.test_path and every sample of data.path trains; remove data.test_fraction")
        return test_path

    @field_validator("test_indices")
    @classmethod
    def _test_indices_alone_and_unique(cls, indices, info: ValidationInfo):
        """Each index once, and the test set chosen one way (see _test_path_alone)."""
        if indices is None:
            return indices
        if not indices:
            raise ValueError("no index: give the indices of at least one sample (for no test set, data.test_fraction: 0)")
        if info.data.get("test_path") is not None:
            raise ValueError("data.test_path and data.test_indices both choose the test set: give one of them")
        fraction = info.data.get("test_fraction", HELD_OUT)
        if fraction != HELD_OUT:
            raise ValueError(f"data.test_fraction {fraction:g} and data.test_indices conflict: both choose the "
                             "test set; give one of them")
        repeated = sorted(index for index, count in Counter(indices).items() if count > 1)
        if repeated:
            raise ValueError(f"{'indices' if len(repeated) > 1 else 'index'} {', '.join(map(str, repeated[:5]))} "
                             "given more than once: each sample of the test set once")
        return indices

    @property
    def has_test_set(self) -> bool:
        """Whether the runs have a test set: every task on samples but ``file`` with
        test_fraction 0 (and no test_path or test_indices); never in population mode."""
        if self.population:
            return False
        return not (self.task == "file" and self.test_fraction == 0 and self.test_path is None
                    and self.test_indices is None)

    @model_validator(mode="after")
    def _task_requirements(self):
        for key, tasks in TASK_KEYS.items():
            if self.task not in tasks and _differs_from_default(self, key):
                raise ValueError(f"data.{key} is a key of task {' or '.join(tasks)}, not of {self.task!r}: "
                                 "remove it")
        given = [key for key in FILE_IGNORES if _differs_from_default(self, key)]
        if self.task == "file" and given:
            raise ValueError(f"{', '.join(given)}: task 'file' takes its samples from data.path as they are "
                             "(data.test_fraction of them held out for testing): remove "
                             f"{'it' if len(given) == 1 else 'them'}")
        if self.task in TWO_D_TASKS and self.dim != 2:
            raise ValueError(f"task {self.task!r} is two-dimensional: set data.dim: 2")
        if self.task == "file" and not self.path:
            raise ValueError("task 'file' needs data.path (an .npz, .h5 or .csv file with X and y)")
        if self.population and (self.task != "teacher_student" or self.inputs != "gaussian"):
            raise ValueError("data.population needs task: teacher_student with inputs: gaussian "
                             "(the closed-form Gaussian expectations)")
        return self


# ---------------------------------------------------------------------------- model
class InitSpec(Strict):
    """a_i ~ N(0, a_std^2 * preset scale), w_i ~ N(0, w_std^2 I / dim), b_i ~ N(0, b_std^2),
    and the output bias c ~ N(0, c_std^2)."""

    a_std: PositiveFloat = 1.0
    w_std: PositiveFloat = 1.0
    b_std: NonNegativeFloat = 0.0
    c_std: NonNegativeFloat = 0.0
    """The spread of the output bias c at t = 0 (model.output_bias): neural-tangents' readout b_std."""
    symmetric: bool = False
    """a_{i+m/2} = -a_i, w_{i+m/2} = w_i, b_{i+m/2} = b_i: f_0 = 0 exactly (width must be even)."""


class ModelSpec(Strict):
    width: PositiveInt = 512
    activation: ActivationName = "relu"
    bias: bool = False
    output_bias: bool = False
    """f(x) = s sum_i a_i sigma(w_i . x + b_i) + c: a trained scalar c (docs/design.md §1.1), with
    c(0) ~ N(0, init.c_std^2) and the learning rate eta_c = the run's lr_c (default lr)."""
    init: InitSpec = InitSpec()

    @model_validator(mode="after")
    def _symmetric_needs_even_width(self):
        if self.init.symmetric and self.width % 2:
            raise ValueError(f"init.symmetric needs an even width, got {self.width}")
        return self

    @model_validator(mode="after")
    def _bias_spread_needs_a_bias(self):
        if not self.bias and _differs_from_default(self.init, "b_std"):
            raise ValueError(f"init.b_std = {self.init.b_std:g} is the spread of the biases b_i, and bias is "
                             "false (b = 0): set model.bias: true, or remove model.init.b_std")
        if not self.output_bias and _differs_from_default(self.init, "c_std"):
            raise ValueError(f"init.c_std = {self.init.c_std:g} is the spread of the output bias c, and "
                             "output_bias is false (c = 0): set model.output_bias: true, or remove model.init.c_std")
        return self


# -------------------------------------------------------------------- parameterization
class PresetBase(Strict):
    lr: PositiveFloat = 1.0
    """eta0: the base learning rate (both layers unless lr_a / lr_w are given)."""
    lr_a: Optional[NonNegativeFloat] = None
    """The output layer's base rate (default lr). 0: the output weights are not trained, a_i(t) =
    a_i(0) (no weight decay or temperature then, which would move them): e.g. ntk with lr_a 0 and
    an analytic kernel is the lazy limit of a net whose input layer alone trains."""
    lr_w: Optional[PositiveFloat] = None
    lr_c: Optional[PositiveFloat] = None
    """eta_c, the output bias's learning rate (model.output_bias; default lr), never scaled by the
    width: c enters f without the multiplier s, so its kernel term loss_scale * eta_c is O(1)."""


class MeanFieldPreset(PresetBase):
    preset: Literal["mean_field"] = "mean_field"


class NTKPreset(PresetBase):
    preset: Literal["ntk"] = "ntk"


class StandardPreset(PresetBase):
    preset: Literal["standard"] = "standard"


class LazyPreset(PresetBase):
    preset: Literal["lazy"] = "lazy"
    alpha: PositiveFloat = 1.0
    """Chizat-Oyallon-Bach scale: f = (alpha/m) sum a_i sigma(.), loss / alpha^2."""


class MuPPreset(PresetBase):
    """Yang & Hu's muP for SGD: s = 1, a_i(0) ~ N(0, a_std^2 / m^2), eta_a = lr / m, w_i(0) ~
    N(0, w_std^2 I / d), eta_w = lr m; mean_field with a = a_mf / m (meanfield.model.parameterization)."""

    preset: Literal["mup"] = "mup"


class CustomPreset(PresetBase):
    """s = s0 m^-output_exponent, a_std m^-init_exponent, eta = lr m^-lr_exponent."""

    preset: Literal["custom"] = "custom"
    s0: PositiveFloat = 1.0
    output_exponent: float = 1.0
    init_exponent: float = 0.0
    lr_exponent: float = -1.0
    lr_exponent_a: Optional[float] = None
    lr_exponent_w: Optional[float] = None


Parameterization = Annotated[
    Union[MeanFieldPreset, NTKPreset, StandardPreset, LazyPreset, MuPPreset, CustomPreset],
    Field(discriminator="preset"),
]


# ------------------------------------------------------------------------ integrators
FORMER_DEFAULTS = {"rtol": 1e-6, "atol": 1e-9}
"""rk45's tolerances before issue 13: the scenario a file of that time stores lists them for
every method, so a fixed-step method takes them as unset too (the file still reads)."""


class IntegratorSpec(Strict):
    method: Literal["euler", "heun", "rk4", "rk45", "euler_maruyama", "sgd"] = "rk4"
    dt: Optional[PositiveFloat] = None
    """Step size (fixed-step methods); the first trial step for rk45."""
    dt_factor: Optional[PositiveFloat] = None
    """c > 0, in place of dt (fixed-step methods): dt = c * 2 / lambda_0, lambda_0 the run's
    ntk_eigenvalue_max at its initial particles (Euler's stability edge on squared loss is c = 1;
    docs/design.md §1.9)."""
    rtol: PositiveFloat = 1e-3
    atol: PositiveFloat = 1e-6
    """rk45 accepts a step whose rms error is at most atol + rtol rms(y) (solvers.integrate.RK45);
    the defaults are scipy's solve_ivp's."""
    dt_min: PositiveFloat = 1e-10
    dt_max: Optional[PositiveFloat] = None
    batch_size: Optional[PositiveInt] = None
    """sgd: minibatch size (drawn without replacement each step)."""

    @model_validator(mode="after")
    def _method_requirements(self):
        # the messages name train.integrator; _explain names a run's own where it is one
        if self.method in FIXED_STEP_METHODS and self.dt is None and self.dt_factor is None:
            raise ValueError(f"method {self.method!r} takes a fixed step: set train.integrator.dt "
                             "(or train.integrator.dt_factor)")
        if self.dt is not None and self.dt_factor is not None:
            raise ValueError(f"dt = {self.dt:g} and dt_factor = {self.dt_factor:g} both set the step "
                             "(dt_factor: dt = dt_factor * 2 / lambda_0): give one of them")
        if self.dt_factor is not None and self.method not in FIXED_STEP_METHODS:
            raise ValueError(f"dt_factor sets a fixed step, and {self.method!r} chooses its own: use a fixed-step "
                             f"method ({', '.join(FIXED_STEP_METHODS)}) or give dt (the first trial step)")
        if self.method == "sgd" and self.batch_size is None:
            raise ValueError("method 'sgd' needs train.integrator.batch_size")
        if self.method != "sgd" and self.batch_size is not None:
            raise ValueError("batch_size is only used by method 'sgd'")
        adaptive = [key for key in ("rtol", "atol", "dt_min", "dt_max")
                    if _differs_from_default(self, key) and getattr(self, key) != FORMER_DEFAULTS.get(key)]
        if self.method != "rk45" and adaptive:
            raise ValueError(f"{', '.join(sorted(adaptive))}: only the adaptive method 'rk45' uses them")
        if self.dt_max is not None and self.dt_max < self.dt_min:
            raise ValueError(f"dt_max = {self.dt_max:g} is below dt_min = {self.dt_min:g}: "
                             "rk45 keeps its step within [dt_min, dt_max]; give dt_max >= dt_min")
        return self


# ----------------------------------------------------------------------------- runs
class RunSpecBase(Strict):
    """What every entry of ``runs`` shares: ``parameterization`` may name a preset alone, and
    ``integrator`` (the schema of train.integrator; without a ``method`` the keys it gives
    change train.integrator's, with one it is complete, the schema's defaults for the rest)
    steps this run instead of train.integrator. Only a run
    that takes steps has one (particles, tangent on data, ntk with a loss other than squared):
    :meth:`Scenario.integrator_of`. Each kind declares it last, after its own keys."""

    @field_validator("parameterization", mode="before", check_fields=False)
    @classmethod
    def _preset_name(cls, value):
        return _expand_shorthand(("parameterization",), value)


class ParticleRunSpec(RunSpecBase):
    """A particle run: the network trained by gradient flow, each neuron a particle."""

    solver: Literal["particles"] = "particles"
    parameterization: Parameterization = MeanFieldPreset()
    integrator: Optional[IntegratorSpec] = None


class TangentRunSpec(RunSpecBase):
    """The finite-width linearized network f_0 + grad f(theta_0) . (theta - theta_0), as particles."""

    solver: Literal["tangent"] = "tangent"
    parameterization: Parameterization = NTKPreset()
    integrator: Optional[IntegratorSpec] = None


class KernelRunSpec(RunSpecBase):
    """Kernel gradient flow in function space with the (learning-rate weighted) NTK.

    ``empirical``: the kernel of the scenario's own initial particles, from their f_0;
    ``analytic``: its expectation over the initialization (the m -> infinity kernel for
    relu, erf, linear), from f_0 = 0.
    """

    solver: Literal["ntk"] = "ntk"
    kernel: Literal["empirical", "analytic"] = "empirical"
    parameterization: Parameterization = NTKPreset()
    ridge: NonNegativeFloat = 0.0
    """lambda >= 0: the flow of the ridge-regularised loss, df/dt = -(1/n) K l'(f, y) -
    lambda (f - f_0) on train and test points (docs/design.md §1.6); with squared loss its
    t -> infinity limit is kernel ridge regression from f_0, K (K + n lambda I)^-1. 0: the
    plain kernel flow (ridgeless; its limit is kernel interpolation)."""
    integrator: Optional[IntegratorSpec] = None


RunSpec = Annotated[Union[ParticleRunSpec, TangentRunSpec, KernelRunSpec], Field(discriminator="solver")]


RESOLVED_NUMBERS = ("s", "eta_a", "eta_w", "a_std", "loss_scale")
"""What a parameterization resolves to at a width (meanfield.model.parameterization.Resolved): each > 0 and
finite (eta_a = 0 where lr_a is 0: a fixed output layer)."""

MAX_SNAPSHOTS = 10**6
"""The most snapshots a run may take, train.t_end / record.every (each is a write, and the
snapshot times are one array): more is a mistake (record.every: 1e-12), not a study."""

RUN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


class TrainSpec(Strict):
    t_end: PositiveFloat = 10.0
    stop_loss: NonNegativeFloat = 0.0
    integrator: IntegratorSpec = IntegratorSpec(method="rk4", dt=0.05)
    weight_decay: NonNegativeFloat = 0.0
    temperature: NonNegativeFloat = 0.0
    dtype: Literal["float64", "float32"] = "float64"


OptionalMeasure = Literal[OPTIONAL_MEASURES]
"""A measure a particle or tangent run records only when record.measures names it (a bundled
scenario's file keeps exactly its datasets), a row of the table of measures with ``optional``
(:mod:`meanfield.model.measures`): displacement_wb = ||(W, b) - (W_0, b_0)||_F / ||(W_0, b_0)||_F, the
first layer's weights and biases together (docs/design.md §1.7); ntk_eigenvalue_max =
lambda_max(c J P J^T / n) and hessian_eigenvalue_max = lambda_max(P^1/2 H P^1/2), the curvature
of the training risk (docs/design.md §1.9; runs on data only)."""


class RecordSpec(Strict):
    every: PositiveFloat = 1.0
    """Snapshot interval in model time."""
    particles: bool = True
    dtype: Literal["float32", "float64"] = "float32"
    max_file_mb: PositiveFloat = 500.0
    probe_size: PositiveInt = 64
    """Test points on which each particle run's NTK is compared with its initial one."""
    w2_particles: PositiveInt = 512
    """Particles (a fixed random subset when m is larger) in the Wasserstein-2 measure."""
    measures: list[OptionalMeasure] = []
    """Measures recorded beyond every run's own (OPTIONAL_MEASURES), by the runs with particles."""

    @field_validator("measures")
    @classmethod
    def _each_measure_once(cls, measures):
        twice = sorted({name for name in measures if measures.count(name) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} given twice: name each measure once")
        return measures


class Scenario(Strict):
    """A validated scenario: everything a simulation needs (docs/design.md §5; every key and
    its default in the README). ``replace`` gives an edited copy, validated again;
    ``resolved_yaml`` the text stored with a run."""

    name: str = Field(min_length=1)
    description: str = ""
    seed: NonNegativeInt = 0
    data: DataSpec = DataSpec()
    model: ModelSpec = ModelSpec()
    loss: LossName = "squared"
    runs: dict[str, RunSpec] = Field(min_length=1)
    train: TrainSpec = TrainSpec()
    record: RecordSpec = Field(RecordSpec(), validate_default=True)
    output: Optional[str] = None

    @model_validator(mode="before")
    @classmethod
    def _run_integrators_inherit_the_method(cls, raw):
        """A run's integrator without a ``method`` of its own changes train.integrator's keys
        (``{dt: 0.002}``: the same method, a smaller step); with a ``method`` it is complete."""
        if not isinstance(raw, dict) or not isinstance(raw.get("runs"), dict):
            return raw
        train = raw.get("train") if isinstance(raw.get("train"), dict) else {}
        shared = train.get("integrator", TrainSpec.model_fields["integrator"].default.model_dump())
        if not isinstance(shared, dict):
            return raw
        runs = dict(raw["runs"])
        steps = ("dt", "dt_factor")  # a run's own step replaces the shared one, given either way
        for name, run in runs.items():
            own = run.get("integrator") if isinstance(run, dict) else None
            if isinstance(own, dict) and "method" not in own:
                base = {key: value for key, value in shared.items()
                        if not (key in steps and any(step in own for step in steps))}
                runs[name] = {**run, "integrator": {**base, **own}}
        return {**raw, "runs": runs}

    @field_validator("runs", mode="before")
    @classmethod
    def _run_shorthand(cls, runs):
        """``rich: mean_field`` is short for ``rich: {solver: particles, parameterization: mean_field}``."""
        if isinstance(runs, dict):
            runs = {k: _expand_shorthand(("runs", k), v) for k, v in runs.items()}
            return {k: {"solver": DEFAULT_SOLVER, **v} if isinstance(v, dict) and "solver" not in v else v
                    for k, v in runs.items()}
        return runs

    @field_validator("runs")
    @classmethod
    def _run_names(cls, runs):
        for name in runs:
            if not RUN_NAME.match(name):
                raise ValueError(
                    f"run name {name!r}: use letters, digits, '_' and '-', starting with a letter"
                )
        return runs

    @model_validator(mode="after")
    def _analytic_kernel_in_closed_form(self):
        for name, run in self.runs.items():
            if getattr(run, "kernel", None) == "analytic" and self.model.activation not in ANALYTIC_ACTIVATIONS:
                raise ValueError(
                    f"run {name!r}: the analytic kernel is in closed form for activations "
                    f"{', '.join(ANALYTIC_ACTIVATIONS)}, not {self.model.activation!r}: use kernel: empirical"
                )
        return self

    @field_validator("runs")
    @classmethod
    def _parameterizations_in_floating_point_range(cls, runs, info: ValidationInfo):
        """Checked with the runs (model and data come first), so the error names their line."""
        from ..model.parameterization import resolve

        model, data = info.data.get("model"), info.data.get("data")
        if model is None or data is None:  # already an error of their own
            return runs
        for name, run in runs.items():
            try:
                resolved = resolve(run.parameterization, model, data.dim)
                fixed = {"eta_a"} if run.parameterization.lr_a == 0 else set()
                bad = [key for key in RESOLVED_NUMBERS
                       if not (0 < getattr(resolved, key) < math.inf or key in fixed and getattr(resolved, key) == 0)]
            except OverflowError:
                bad = ["a power of the width"]
            if bad:
                raise ValueError(
                    f"runs.{name}.parameterization at width {model.width} gives {', '.join(bad)} "
                    "out of floating-point range (0 or inf); s, eta_a, eta_w, a_std and loss_scale must be "
                    "finite and > 0: bring the exponents, alpha and lr closer to 0 and 1"
                )
        return runs

    @field_validator("record")
    @classmethod
    def _snapshots_within_limit(cls, record, info: ValidationInfo):
        """At most MAX_SNAPSHOTS snapshots per run, t_end / every (checked with record, which
        comes after train, so the error names record's line)."""
        train = info.data.get("train")
        if train is None:  # already an error of its own
            return record
        count = train.t_end / min(record.every, train.t_end)
        if count > MAX_SNAPSHOTS:
            raise ValueError(
                f"train.t_end / record.every = {train.t_end:g} / {record.every:g} = {count:.3g} snapshots per run, "
                f"more than the {MAX_SNAPSHOTS:.0e} allowed: raise record.every to at least "
                f"{train.t_end / MAX_SNAPSHOTS:.3g} (or lower train.t_end)")
        return record

    @field_validator("runs")
    @classmethod
    def _output_bias_rate_needs_output_bias(cls, runs, info: ValidationInfo):
        model = info.data.get("model")
        if model is None or model.output_bias:
            return runs
        for name, run in runs.items():
            if run.parameterization.lr_c is not None:
                raise ValueError(f"runs.{name}.parameterization.lr_c is the learning rate of the output bias c, and "
                                 "model.output_bias is false: set model.output_bias: true, or remove lr_c")
        return runs

    @field_validator("train")
    @classmethod
    def _noise_needs_sde_method(cls, train, info: ValidationInfo):
        """temperature > 0 needs euler_maruyama in every run that steps with noise (a solver some
        kind of which takes noise: not ntk, which refuses a temperature): train.integrator where a
        run has none of its own (checked with train, which comes after runs)."""
        if not train.temperature:
            return train
        noisy = {name: run for name, run in (info.data.get("runs") or {}).items() if can(run.solver, "noise")}
        own = [(name, run.integrator) for name, run in noisy.items() if run.integrator is not None]
        if len(own) < len(noisy) and train.integrator.method != "euler_maruyama":
            raise ValueError("temperature > 0 is Langevin dynamics: set train.integrator.method: euler_maruyama")
        for name, integrator in own:
            if integrator.method != "euler_maruyama":
                raise ValueError(f"temperature > 0 is Langevin dynamics: set runs.{name}.integrator.method: "
                                 f"euler_maruyama (it is {integrator.method!r})")
        return train

    @model_validator(mode="after")
    def _curvature_measures_have_a_run(self):
        """The curvature measures are recorded by particle and tangent runs (docs/design.md §1.9):
        refused where no run would record them (population mode refuses them on its own)."""
        curvature = [name for name in self.record.measures if name in CURVATURE_MEASURES]
        if curvature and not self.data.population and not any(self.kind(run).curvature for run in self.runs.values()):
            raise ValueError(f"record.measures: {', '.join(curvature)} are recorded by particle and tangent runs, "
                             "and every run here is an ntk run (its kernel is fixed): add such a run or remove them")
        return self

    @model_validator(mode="after")
    def _run_integrators_step(self):
        """A run's own integrator only where the run takes steps (one known in closed form takes none)."""
        for name, run in self.runs.items():
            if run.integrator is not None and not self.kind(run).steps:
                raise ValueError(f"runs.{name}.integrator: run {name!r} ({run.solver}) is solved in closed form "
                                 "here and takes no steps: remove its integrator")
        return self

    def kind(self, run: RunSpec):
        """The kind of run ``run`` (an entry of ``runs``) is here: a row of the table of run
        kinds (:func:`meanfield.model.kinds.kind_of`), what it needs and can do."""
        return kind_of(run.solver, self.data.population, self.loss)

    def integrator_of(self, run: RunSpec) -> IntegratorSpec:
        """The integrator that steps ``run`` (an entry of ``runs``): its own, else train.integrator."""
        return self.train.integrator if run.integrator is None else run.integrator

    def integrator_key(self, name: str) -> str:
        """Where run ``name``'s integrator is set: runs.<name>.integrator or train.integrator."""
        return "train.integrator" if self.runs[name].integrator is None else f"runs.{name}.integrator"

    @model_validator(mode="after")
    def _fixed_output_layer_stays_fixed(self):
        """lr_a: 0 keeps a_i at a_i(0); weight decay and Langevin noise act on every parameter, a included."""
        moving = [f"train.{key} = {getattr(self.train, key):g}" for key in ("weight_decay", "temperature")
                  if getattr(self.train, key)]
        for name, run in self.runs.items():
            if run.parameterization.lr_a == 0 and moving:
                raise ValueError(f"runs.{name}.parameterization.lr_a: 0 keeps the output weights fixed, and "
                                 f"{' and '.join(moving)} moves every parameter, a included: give lr_a > 0, "
                                 f"or set train.weight_decay and train.temperature to 0")
        return self

    @model_validator(mode="after")
    def _kernel_runs_have_no_parameters(self):
        kernel_runs = [name for name, run in self.runs.items() if not can(run.solver, "particles")]
        if kernel_runs and (self.train.weight_decay or self.train.temperature):
            raise ValueError(
                f"run {kernel_runs[0]!r} (solver ntk) evolves the function, not parameters: "
                "train.weight_decay and train.temperature must be 0 with it"
            )
        return self

    @model_validator(mode="after")
    def _population_mode(self):
        if not self.data.population:
            return self
        pairs = POPULATION_ACTIVATIONS
        problems = []
        if self.model.bias:
            problems.append("model.bias must be false (U(w, v) has no bias)")
        if self.model.output_bias:
            problems.append("model.output_bias must be false (the closed-form risk has no output bias)")
        if self.loss != "squared":
            problems.append("loss must be squared")
        if self.model.activation not in pairs:
            problems.append(f"model.activation must be one of {', '.join(pairs)}")
        if self.data.teacher.activation not in pairs:
            problems.append(f"data.teacher.activation must be one of {', '.join(pairs)}")
        if (self.train.weight_decay or self.train.temperature) and any(
                self.kind(run).particles and not self.kind(run).noise for run in self.runs.values()):
            problems.append("the tangent run is solved exactly: train.weight_decay and "
                            "train.temperature must be 0 with it")
        for key, integrator in self._integrators().items():
            if integrator.method == "sgd":
                problems.append(f"there are no samples to draw minibatches from: {key}.method not sgd")
        for name, run in self.runs.items():
            if not self.kind(run).population:
                problems.append(f"run {name!r}: with infinite data the kernel flow is the tangent "
                                "model: use solver: tangent (solved exactly)")
        problems += [f"{key}.dt_factor scales the step to the training set's NTK, and infinite data has none: "
                     f"give {key}.dt" for key, integrator in self._integrators().items() if integrator.dt_factor]
        curvature = [name for name in self.record.measures if name in CURVATURE_MEASURES]
        if curvature:
            problems.append(f"record.measures: {', '.join(curvature)} are taken on a training set, and "
                            "infinite data has none: remove them")
        if problems:
            raise ValueError("data.population: " + "; ".join(problems))
        return self

    @model_validator(mode="after")
    def _loss_fits_task(self):
        if self.loss == "logistic" and self.data.task in REGRESSION_TASKS:
            raise ValueError(
                f"loss 'logistic' needs labels +-1; task {self.data.task!r} is a regression: "
                "use loss: squared"
            )
        return self

    def _integrators(self) -> dict[str, IntegratorSpec]:
        """The integrators the runs name, by key: train.integrator (unless every run has its own)
        and each runs.<name>.integrator."""
        own = {f"runs.{name}.integrator": run.integrator for name, run in self.runs.items()
               if run.integrator is not None}
        return own if len(own) == len(self.runs) else {"train.integrator": self.train.integrator, **own}

    @property
    def output_path(self) -> str:
        return self.output or f"{self.name}.h5"

    def resolved_yaml(self) -> str:
        """The scenario with every default filled in: what is stored with the run."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def describes_stored(self, text: str) -> bool:
        """Whether ``text``, the resolved scenario a file stores, is this scenario: equal once
        both are validated, so a file written before a key existed matches at that key's default."""
        try:
            stored = Scenario.model_validate(load_yaml(text))
        except (yaml.YAMLError, ValidationError, TypeError):
            return False
        return stored.model_dump() == self.model_dump()

    def replace(self, changes: typing.Optional[typing.Mapping[str, Any]] = None, /, **keys) -> Scenario:
        """A new scenario with ``changes`` made, validated as ``--set`` validates: a mapping
        of dotted keys to values (``{"model.width": 4096, "runs.ntk": None}``: None removes
        a run), and top-level keys as keywords (``replace(seed=3)``)."""
        changes = {**(changes or {}), **keys}
        raw = self.model_dump(mode="json")
        overridden = _apply_overrides(raw, changes, self.name)
        return validate_scenario(raw, f"scenario {self.name!r}", None, overridden, how="replace")


# -------------------------------------------------------------------------- loading
def load_scenario(source, overrides=()) -> Scenario:
    """A validated scenario from a bundled scenario's name, a YAML file's path, a mapping of
    its keys, or a Scenario; ``overrides`` (a mapping of dotted keys to values, or
    ``--set``-style ``key=value`` strings) edit it before validation. UsageError names the
    file, the line and the key of anything invalid."""
    if isinstance(source, Scenario):
        return source.replace(overrides) if overrides else source
    if isinstance(source, typing.Mapping):
        raw = copy.deepcopy(dict(source))
        overridden = _apply_overrides(raw, overrides, "<scenario>")
        return validate_scenario(raw, "<scenario>", None, overridden, how="override")
    from .bundled import scenario_path

    path = scenario_path(source)
    return parse_scenario(read_text(path, "scenario"), source=str(path), overrides=overrides, directory=path.parent)


def read_text(path, what: str) -> str:
    """The text of a scenario or sweep file (``what``); UsageError naming the file when it
    cannot be read or is not UTF-8 text (a binary file, UTF-16)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x}: a binary or "
                         f"UTF-16 file?); a {what} is UTF-8 YAML text") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None


def parse_scenario(text: str, source: str = "<scenario>", overrides=(), directory=None) -> Scenario:
    """Validate a scenario's YAML text after applying ``overrides`` (``dotted.key=value``
    strings, as ``--set`` gives them, or a mapping of dotted keys to values). The text's
    relative data paths are taken from ``directory`` (the scenario file's; None: the working
    directory), an override's from the working directory."""
    raw, lines = read_yaml(text, source)
    _require_mapping(raw, source)
    if directory is not None:
        raw = relative_to(raw, Path(directory))
    how = "override" if isinstance(overrides, typing.Mapping) else "--set"
    return validate_scenario(raw, source, lines, _apply_overrides(raw, overrides, source), how=how)


DATA_PATHS = ("path", "test_path")
"""The data keys that name a file (task file)."""


def relative_to(raw, directory: Path):
    """``raw`` with its relative data paths (data.path, data.test_path) made absolute, taken
    from ``directory``: a scenario file's paths are relative to the file, as in every config
    format (``~`` is a home directory; an absolute path stays as it is)."""
    data = raw.get("data") if isinstance(raw, dict) else None
    if not isinstance(data, dict):
        return raw
    rebased = {key: os.path.normpath(directory.resolve() / Path(data[key]).expanduser()) for key in DATA_PATHS
               if isinstance(data.get(key), str) and data[key]}
    return {**raw, "data": {**data, **rebased}}


def _with_file_dim(raw, where) -> dict:
    """task file without data.dim: the dim of data.path's inputs, read from the file's header
    (``where``: the file and line, or the override, that gave data.path). A resolved scenario
    gives data.dim, so reading it back never touches the disk."""
    data = raw.get("data")
    if not (isinstance(data, dict) and data.get("task") == "file" and "dim" not in data
            and isinstance(data.get("path"), str) and data["path"]):
        return raw
    from ..model.data import file_dim  # loads NumPy: only a file task without data.dim needs it

    try:
        return {**raw, "data": {**data, "dim": file_dim(data["path"])}}
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None


def _apply_overrides(raw, overrides, source: str) -> set:
    """Apply ``overrides`` to the raw mapping; the set of key paths they touched."""
    _require_mapping(raw, source)
    if isinstance(overrides, typing.Mapping):
        return {set_key(raw, str(key), copy.deepcopy(value), where=f"override {key}")
                for key, value in overrides.items()}
    if isinstance(overrides, str):
        overrides = [overrides]
    return {apply_override(raw, item) for item in overrides}


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (YAML requires
    unique keys; PyYAML would keep the last one without a word). Keys merged in with ``<<``
    may be overridden, as YAML allows."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice in one mapping (first on line {seen[key]}): "
                    "keep one (the last would silently win)", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_yaml(text: str):
    """Parse YAML text with :class:`UniqueKeyLoader` (yaml.YAMLError if it is not valid)."""
    return yaml.load(text, Loader=UniqueKeyLoader)


def read_yaml(text: str, source: str) -> tuple[Any, dict]:
    """The parsed YAML and the line of each key path; UsageError with line:column if it is
    not YAML, or gives a key twice in one mapping."""
    source = display_name(source)
    try:
        return load_yaml(text), _key_lines(yaml.compose(text, Loader=UniqueKeyLoader))
    except yaml.reader.ReaderError as exc:  # a character YAML text cannot hold (e.g. NUL)
        raise UsageError(f"{source}: not YAML text: {exc.reason} (character #x{exc.character:04x} at "
                         f"position {exc.position}): a scenario or a sweep is UTF-8 YAML text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or "cannot be read"
        raise UsageError(f"{where}: not valid YAML: {problem}") from None


def validate_scenario(raw, source: str = "<scenario>", lines: Optional[dict] = None, overridden=(),
                      how: str = "--set") -> Scenario:
    """The scenario a raw mapping describes; errors name ``source``, the line (from ``lines``)
    or, for a key in ``overridden``, ``how`` it was set (``--set``, a sweep's grid); a bundled
    scenario is named, not shown as a path inside the package."""
    source = display_name(source)
    _require_mapping(raw, source)
    raw = _with_file_dim(raw, _where(source, ("data", "path"), lines or {}, set(overridden), how))
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise UsageError(_explain(exc, source, lines or {}, set(overridden), how)) from None


def _require_mapping(raw, source: str) -> None:
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: a scenario is a mapping of keys (name, data, model, runs, ...)")


def apply_override(raw: dict, item: str) -> tuple:
    """Apply one ``dotted.key=value`` to the raw mapping (value parsed as YAML); return the key path."""
    key, sep, value_text = item.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--set {item!r}: write it as dotted.key=value, e.g. model.width=1024")
    try:
        value = load_yaml(value_text)
    except yaml.constructor.ConstructorError as exc:  # valid YAML, but a key given twice
        raise UsageError(f"--set {item!r}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"--set {item!r}: the value is not valid YAML ({_yaml_problem(exc)}): close every "
                         "bracket and quote, or quote a string that holds them") from None
    return set_key(raw, key.strip(), value, where=f"--set {item}")


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What a YAML parser found wrong in a one-line value, and at which column of it."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None) or "cannot be read"
    context = getattr(exc, "context", None)
    at = f"at column {mark.column + 1}: " if mark is not None else ""
    return f"{at}{problem}" + (f", {context}" if context else "")


def set_key(raw: dict, key: str, value, where: str) -> tuple:
    """Set ``raw[k1][k2]... = value`` for ``key = "k1.k2..."`` (creating mappings on the way,
    expanding by-name shorthands); ``runs.NAME`` set to None removes that run. Returns the path."""
    keys = key.split(".")
    if len(keys) == 2 and keys[0] == "runs" and value is None:
        runs = raw.get("runs") or {}
        if keys[1] not in runs:
            raise UsageError(f"{where}: there is no run {keys[1]!r} (runs: {', '.join(runs) or 'none'})"
                             + messages.did_you_mean(keys[1], runs))
        del runs[keys[1]]
        return tuple(keys)
    node = raw
    for depth, part in enumerate(keys[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif isinstance(child, str):
            child = node[part] = _expand_shorthand(tuple(keys[: depth + 1]), child)
        if not isinstance(child, dict):
            raise UsageError(f"{where}: {'.'.join(keys[: depth + 1])} holds {child!r}, not a mapping of keys")
        node = child
    node[keys[-1]] = value
    return tuple(keys)


def _expand_shorthand(path: tuple, value):
    """The mapping a by-name shorthand stands for (``lazy`` -> ``{preset: lazy}``,
    ``rich: mean_field`` -> ``{parameterization: mean_field}``); anything else unchanged."""
    if not isinstance(value, str):
        return value
    if path[-1] == "parameterization":
        return {"preset": value}  # parameterization: lazy
    if len(path) == 2 and path[0] == "runs":
        return {"parameterization": value}  # runs: {rich: mean_field}
    return value


def _key_lines(node, path=()) -> dict[tuple, int]:
    """Map each key path of a composed YAML tree to its 1-based line number."""
    lines = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            sub = path + (key_node.value,)
            lines[sub] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, sub))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[path + (index,)] = item.start_mark.line + 1
            lines.update(_key_lines(item, path + (index,)))
    return lines


def _explain(exc: ValidationError, source: str, lines: dict, overridden: set, how: str = "--set") -> str:
    told = []
    for error in exc.errors():
        loc = _user_path(error["loc"])
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):  # the tag is a key of its own
            loc += (error["ctx"]["discriminator"].strip("'"),)
        dotted = ".".join(str(part) for part in loc)
        where = _where(source, loc or _leading_key(error["msg"]), lines, overridden, how)
        told.append(f"{where}: {_wording(error, dotted)}")
    return "\n".join(told)


QUOTED = r"'([^']*)'"
"""A name in pydantic's list of what it expected ("'relu', 'tanh' or 'erf'")."""


def _wording(error: dict, dotted: str) -> str:
    """One validation error in the project's words (pydantic's own for what it says plainly)."""
    kind, given = error["type"], error.get("input")
    if kind == "extra_forbidden":
        return messages.unknown_key(dotted, _allowed_keys(error["loc"][:-1]))
    if kind == "finite_number":
        return f"{dotted}: must be a finite number, not {given}"
    if kind in ("literal_error", "union_tag_invalid"):
        expected = error["ctx"].get("expected") or error["ctx"].get("expected_tags", "")
        given = error["ctx"].get("tag", given)
        return f"{dotted}: {messages.not_one_of(given, re.findall(QUOTED, expected))}"
    if kind == "union_tag_not_found":
        return f"{dotted}: missing: give one of {', '.join(_PRESETS if dotted.endswith('preset') else _RUNS)}"
    allowed = _allowed_keys(error["loc"]) if kind in messages.MAPPING_KINDS else ()
    text = messages.plain(kind, error.get("ctx"), allowed) or error["msg"]
    text = _relocate(text.removeprefix("Value error, "), dotted)
    quoted = isinstance(given, str) and repr(given) in text  # the message names it already
    got = "" if isinstance(given, (dict, BaseModel)) or given is None or quoted else f" (got {given!r})"
    return f"{dotted + ': ' if dotted else ''}{text}{got}"


def _leading_key(message: str) -> tuple:
    """The key path a scenario-wide rule's message starts with ('runs.x.integrator: ...'), so
    that the message gets that key's line; () when it starts with none."""
    head, sep, _ = message.removeprefix("Value error, ").partition(": ")
    return tuple(head.split(".")) if sep and re.fullmatch(r"[A-Za-z_][\w\-]*(\.[\w\-]+)+", head) else ()


def _relocate(text: str, dotted: str) -> str:
    """An integrator's message names train.integrator (IntegratorSpec's home): at a run's own
    integrator (``dotted`` runs.<name>.integrator[.key]) it names that one instead."""
    if dotted.startswith("runs.") and ".integrator" in dotted:
        return text.replace("train.integrator", dotted[: dotted.index(".integrator")] + ".integrator")
    return text


def _user_path(loc: tuple) -> tuple:
    """Drop pydantic's union tags (e.g. 'lazy' in runs.x.parameterization.lazy.alpha)."""
    out = []
    for part in loc:
        if out and out[-1] == "parameterization" and part in _PRESETS:
            continue
        if len(out) == 2 and out[0] == "runs" and part in _RUNS:
            continue
        out.append(part)
    return tuple(out)


def _how(how, path: tuple) -> str:
    """The word an override's message uses: one for every key, or key path -> word."""
    return how.get(path, "") if isinstance(how, dict) else how


def _where(source: str, loc: tuple, lines: dict, overridden: set, how) -> str:
    """The file and line of key path ``loc``, or the override that set it (or, for a key
    the file does not give, the override that wrote the mapping it is missing from)."""
    for cut in range(len(loc), 0, -1):
        if loc[:cut] in overridden:  # ``how``: one word for every key, or key path -> word
            return f"{source} ({_how(how, loc[:cut])} {'.'.join(map(str, loc[:cut]))})"
    inside = sorted(path for path in overridden if len(loc) > 1 and path[:len(loc) - 1] == loc[:-1])
    if inside and loc[:-1] not in lines:
        return f"{source} ({_how(how, inside[0])} {'.'.join(map(str, inside[0]))})"
    for cut in range(len(loc), 0, -1):
        if loc[:cut] in lines:
            return f"{source}:{lines[loc[:cut]]}"
    return source


_PRESETS = {
    cls.model_fields["preset"].default: cls
    for cls in (MeanFieldPreset, NTKPreset, StandardPreset, LazyPreset, MuPPreset, CustomPreset)
}


_RUNS = {cls.model_fields["solver"].default: cls for cls in (ParticleRunSpec, TangentRunSpec, KernelRunSpec)}


def _allowed_keys(loc: tuple) -> list[str]:
    """The keys the schema allows at a dotted location (for 'unknown key' messages)."""
    model: Any = Scenario
    for part in loc:
        model = _section_type(model, part)
        if model is None:
            return []
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _section_type(model, part):
    if isinstance(model, type) and issubclass(model, BaseModel):
        field = model.model_fields.get(part)
        return None if field is None else _strip(field.annotation)
    if typing.get_origin(model) is dict:
        return _strip(typing.get_args(model)[1])
    if model == "parameterization":
        return _PRESETS.get(part)
    if model == "run":
        return _RUNS.get(part)
    return None


def _strip(annotation):
    """Unwrap Optional/Annotated; a union of presets becomes a marker resolved by tag."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _strip(typing.get_args(annotation)[0])
    if origin is Union:
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return _strip(members[0])
        return "run" if ParticleRunSpec in members else "parameterization"
    return annotation
