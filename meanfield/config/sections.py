"""The sections of a scenario, each a typed, validated schema (docs/design.md §5): data, model,
parameterization, integrator, runs, train, record. Every key is fixed here: unknown keys and wrong
types are errors. The rules across sections are :class:`meanfield.config.scenario.Scenario`'s.
"""

from __future__ import annotations

import math
import re
import typing
from collections import Counter
from typing import Annotated, Literal, Optional, Union

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

from solvers.catalog import ACTIVATIONS, LOSSES

from .. import messages
from ..model.measures import OPTIONAL_MEASURES
from ..model.real_data import REAL_SOURCES

ActivationName = Literal[tuple(ACTIVATIONS)]
LossName = Literal[tuple(LOSSES)]
TaskName = Literal[
    "teacher_student", "single_index", "gaussian_mixture", "xor", "moons", "spirals", "clusters", "stripe", "file",
    "digits", "mnist1d", "power_law"
]
FIXED_STEP_METHODS = ("euler", "heun", "rk4", "euler_maruyama", "sgd")
TWO_D_TASKS = ("xor", "moons", "spirals")


class Strict(BaseModel):
    """A schema section: unknown keys are errors, values are validated on assignment, every
    number is finite (.inf and .nan are refused wherever a number is asked for), and a
    boolean is never a number (YAML reads ``yes``, ``no``, ``on``, ``off`` as booleans, and
    pydantic would take True for 1)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _a_boolean_is_not_a_number(cls, raw):
        if isinstance(raw, dict):
            for key, value in raw.items():
                field = cls.model_fields.get(key) if isinstance(value, bool) else None
                if field is not None and _asks_for_a_number(field.annotation):
                    raise _key_error(key, f"a number is asked for, not {str(value).lower()} (YAML reads yes, no, "
                                          "on, off, true and false as booleans)")
        return raw


def _asks_for_a_number(annotation) -> bool:
    """Whether a field of this type takes an int or a float, and never a boolean."""
    args = typing.get_args(annotation)
    if bool in (annotation, *args):
        return False
    if annotation in (int, float):
        return True
    return any(_asks_for_a_number(arg) for arg in args if arg is not type(None))


MAX_SEED = 2**63 - 1
"""The largest seed: a seed is stored as a 64-bit signed integer attribute of the file."""

Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
"""A random seed: 0 to :data:`MAX_SEED`."""

_NOT_A_PLAIN_NAME = re.compile(r"[/\\\x00-\x1f]")


def plain_name(value: str) -> str:
    """``value`` if it is a plain name (no directory: a scenario's or a sweep's outputs are
    named after it, and a file from someone else must not decide where they land), else
    ValueError."""
    if _NOT_A_PLAIN_NAME.search(value) or value in (".", "..") or len(value) > 200:
        raise ValueError(f"{value!r} is not a plain name: no '/', '\\', control characters, '.' or '..', "
                         "at most 200 characters (it names the output files, in the working directory)")
    return value


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


class PowerLawSpec(Strict):
    """The ``power_law`` task's target on the unit sphere S^(dim-1) (meanfield.model.data.power_law):
    f*(x) = sum_k sqrt(E_k N(dim, k)) P_k(u . x) over the degrees k <= ``max_degree`` that
    ``degrees`` keeps, P_k the Legendre polynomial of dimension dim (P_k(1) = 1), N(dim, k) its
    harmonics, u uniform on the unit sphere: degree k carries the energy E_k = E_x (its part)^2
    proportional to k^-(1 + decay), the energies summing to 1 (docs/design.md §5.1)."""

    decay: PositiveFloat = 1.0
    """s in E_k ~ k^-(1 + s): the energy above degree k falls like k^-s. Against a kernel whose
    eigenvalue of degree k falls like k^-a the source exponent is beta = s / a (the relu NTK on
    S^(d-1): a = d)."""
    max_degree: int = Field(64, ge=1, le=4096)
    """The highest degree K of the target (the sum is finite: its energies beyond K are 0)."""
    degrees: Literal["even", "all"] = "even"
    """``even``: k = 2, 4, ..., K (a bias-free relu network's harmonics of odd degree above 1 are 0, so
    it cannot fit odd ones); ``all``: k = 1, ..., K."""

    @model_validator(mode="after")
    def _some_degree(self):
        if self.degrees == "even" and self.max_degree < 2:
            raise ValueError(f"power_law.max_degree {self.max_degree} with degrees: even keeps no degree (the "
                             "even ones are 2, 4, ...): raise max_degree to 2 or more, or set degrees: all")
        return self


def _differs_from_default(model: BaseModel, key: str) -> bool:
    """A key given a value of its own (a resolved scenario lists every default: those are not)."""
    return getattr(model, key) != type(model).model_fields[key].default


REGRESSION_TASKS = ("teacher_student", "single_index", "power_law")

REAL_TASKS = tuple(REAL_SOURCES)
"""Real data shipped with a package: digits, mnist1d (meanfield.model.real_data; docs/design.md §5.3)."""

LABEL_MAPS = ("parity", "value", "pair", "one_vs_rest")
"""data.labels of the real tasks: parity, value (a regression), {pair: [i, j]}, {one_vs_rest: k}."""

TASK_KEYS = {"teacher": ("teacher_student",), "population": ("teacher_student",), "degree": ("single_index",),
             "delta": ("gaussian_mixture",), "clusters_per_side": ("clusters",), "stripe": ("stripe",),
             "power_law": ("power_law",),
             "path": ("file",),
             "test_fraction": ("file",), "test_path": ("file",), "test_indices": ("file",),
             "inputs": REGRESSION_TASKS + REAL_TASKS, "labels": REAL_TASKS}
"""The data keys that only some tasks read (the classification tasks draw their own inputs)."""

STRIPE = (-0.3, 1.18549)
"""stripe: the interval of x_1 labelled +1 in the code of Paccolat, Petrini, Geiger, Tyloo & Wyart (2021);
P(+1) = 1/2 under N(0, 1)."""

HELD_OUT = 0.25
"""file: data.test_fraction's default, the share of the samples held out at random."""

FILE_IGNORES = ("n_train", "n_test", "noise")
"""The data keys of every task but ``file``, whose samples are those of its file, split by test_fraction."""


def _label_map(value):
    """data.labels: parity, value, {pair: [i, j]} (two different digits) or {one_vs_rest: k}, digits 0..9."""
    expected = "parity, value, {pair: [i, j]} or {one_vs_rest: k} (digits 0 to 9)"

    def digit(x) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 9

    if isinstance(value, str):
        if value not in ("parity", "value"):
            raise ValueError(f"unknown label map {value!r}; expected {expected}"
                             + messages.did_you_mean(value, LABEL_MAPS))
        return value
    if not (isinstance(value, dict) and len(value) == 1):
        raise ValueError(f"expected {expected}")
    (key, given), = value.items()
    if key == "pair" and isinstance(given, list) and len(given) == 2 and all(map(digit, given)):
        if given[0] == given[1]:
            raise ValueError(f"pair [{given[0]}, {given[1]}] names one digit twice: give two different digits")
        return value
    if key == "one_vs_rest" and digit(given):
        return value
    hint = "" if key in LABEL_MAPS else messages.did_you_mean(str(key), LABEL_MAPS[2:])
    raise ValueError(f"expected {expected}, got {{{key}: {given!r}}}{hint}")


class DataSpec(Strict):
    task: TaskName = "teacher_student"
    seed: Optional[Seed] = None
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
    clusters_per_side: int = Field(3, ge=2)
    """clusters: the k x k grid of clusters in the plane (Chizat & Bach 2020), each labelled +-1 at random."""
    stripe: tuple[float, float] = STRIPE
    """stripe: the interval (low, high) of x_1 labelled +1 (Paccolat, Petrini, Geiger, Tyloo & Wyart 2021;
    their code's -0.3 < x_1 < 1.18549, classes balanced)."""
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
    power_law: PowerLawSpec = PowerLawSpec()
    """power_law: the target's energy per degree on the unit sphere, E_k ~ k^-(1 + decay)."""
    labels: Union[Literal["parity", "value"], dict] = "parity"
    """digits, mnist1d: the label map, parity (+1 even, -1 odd), value (the digit standardised: a
    regression), {pair: [i, j]} (+1 digit i, -1 digit j) or {one_vs_rest: k} (docs/design.md §5.3)."""

    @model_validator(mode="before")
    @classmethod
    def _real_data_on_the_sphere(cls, raw):
        """The real tasks' inputs default to ``sphere`` (their PCA scores projected on |x| = sqrt(dim)),
        power_law's to ``unit_sphere`` (the only inputs it takes)."""
        if isinstance(raw, dict) and raw.get("task") in REAL_TASKS and "inputs" not in raw:
            return {**raw, "inputs": "sphere"}
        if isinstance(raw, dict) and raw.get("task") == "power_law" and "inputs" not in raw:
            return {**raw, "inputs": "unit_sphere"}  # the only inputs it takes
        return raw

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_are_a_map(cls, value):
        return _label_map(value)

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
            raise ValueError("no index: give the indices of at least one sample "
                             "(for no test set, data.test_fraction: 0)")
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
                named = " or ".join([", ".join(tasks[:-1]), tasks[-1]] if len(tasks) > 1 else tasks)
                raise ValueError(f"data.{key} is a key of task {named}, not of {self.task!r}: "
                                 "remove it")
        given = [key for key in FILE_IGNORES if _differs_from_default(self, key)]
        if self.task == "file" and given:
            raise ValueError(f"{', '.join(given)}: task 'file' takes its samples from data.path as they are "
                             "(data.test_fraction of them held out for testing): remove "
                             f"{'it' if len(given) == 1 else 'them'}")
        if self.task in TWO_D_TASKS and self.dim != 2:
            raise ValueError(f"task {self.task!r} is two-dimensional: set data.dim: 2")
        if self.task == "clusters" and self.dim < 3:
            raise ValueError(f"task 'clusters' has inputs (1, a point of the plane, dim - 3 spurious coordinates): "
                             f"data.dim is at least 3, not {self.dim}")
        if self.task == "stripe" and not self.stripe[0] < self.stripe[1]:
            raise ValueError(f"data.stripe {list(self.stripe)}: the interval (low, high) of x_1 labelled +1 needs "
                             "low < high")
        if self.task == "power_law" and self.inputs != "unit_sphere":
            raise ValueError(f"data.inputs {self.inputs!r}: task 'power_law' is a function on the unit sphere "
                             "(its harmonics): inputs: unit_sphere, or leave data.inputs out")
        if self.task == "file" and not self.path:
            raise ValueError("task 'file' needs data.path (an .npz, .h5 or .csv file with X and y)")
        if self.population and (self.task != "teacher_student" or self.inputs != "gaussian"):
            raise ValueError("data.population needs task: teacher_student with inputs: gaussian "
                             "(the closed-form Gaussian expectations)")
        if self.task in REAL_TASKS:
            self._check_real_sizes()
        return self

    def _check_real_sizes(self) -> None:
        """digits, mnist1d: no input noise; n_train + n_test samples of the label map's pool; dim at most
        the features and below n_train (PCA is fitted on the training set)."""
        source = REAL_SOURCES[self.task]
        if _differs_from_default(self, "noise"):
            raise ValueError(f"data.noise: task {self.task!r} takes its samples as they are: remove it")
        available = source.available(self.labels)
        if self.n_train + self.n_test > available:
            raise ValueError(f"data.n_train {self.n_train} + data.n_test {self.n_test} = "
                             f"{self.n_train + self.n_test} samples, and {self.task} with labels "
                             f"{_labels_text(self.labels)} has {available}: lower them")
        if self.dim > min(source.features, self.n_train - 1):
            raise ValueError(f"data.dim {self.dim}: {self.task} has {source.features} features and PCA is fitted "
                             f"on the {self.n_train} training samples: dim at most "
                             f"{min(source.features, self.n_train - 1)} (the features, and n_train - 1)")


def _labels_text(labels) -> str:
    if isinstance(labels, dict):
        (key, value), = labels.items()
        return f"{{{key}: {value}}}"
    return labels


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
    lr_w: Optional[NonNegativeFloat] = None
    """The input layer's base rate (default lr). 0: random features, the first layer is not trained,
    w_i(t) = w_i(0) (and b_i(t) = b_i(0) unless lr_b > 0): only a (and an output bias) moves."""
    lr_b: Optional[NonNegativeFloat] = None
    """The first-layer biases' base rate (model.bias; default lr_w), scaled with the width like lr_w:
    eta_b = lr_b m^-C_w."""
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
    method: Literal["euler", "heun", "rk4", "rk45", "euler_maruyama", "sgd", "loss_clock"] = "rk4"
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
    ds: Optional[PositiveFloat] = None
    """loss_clock: the fixed step on the loss's clock, dt/ds = 1 / L: each step is an rk4 step of
    dt = ds / L(y_n) (at most dt_max), which grows as the loss decays (solvers.integrate.LossClock)."""

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
            own = "ds (its step on the loss's clock)" if self.method == "loss_clock" else "dt (the first trial step)"
            raise ValueError(f"dt_factor sets a fixed step, and {self.method!r} chooses its own: use a fixed-step "
                             f"method ({', '.join(FIXED_STEP_METHODS)}) or give {own}")
        if self.method == "loss_clock" and (self.ds is None or self.dt is not None):
            raise ValueError("method 'loss_clock' steps by ds on the loss's clock (dt = ds / L): set "
                             "train.integrator.ds" + (" and remove dt" if self.dt is not None else ""))
        if self.method != "loss_clock" and self.ds is not None:
            raise ValueError("ds is only used by method 'loss_clock'")
        if self.method == "sgd" and self.batch_size is None:
            raise ValueError("method 'sgd' needs train.integrator.batch_size")
        if self.method != "sgd" and self.batch_size is not None:
            raise ValueError("batch_size is only used by method 'sgd'")
        adaptive = [key for key in ("rtol", "atol", "dt_min", "dt_max")
                    if _differs_from_default(self, key) and getattr(self, key) != FORMER_DEFAULTS.get(key)]
        if self.method == "loss_clock":
            adaptive = [key for key in adaptive if key != "dt_max"]
        if self.method != "rk45" and adaptive:
            raise ValueError(f"{', '.join(sorted(adaptive))}: only the adaptive method 'rk45' uses them"
                             + (" (loss_clock takes dt_max)" if self.method == "loss_clock" else ""))
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
    ``analytic``: its expectation over the initialization (the m -> infinity kernel: closed
    forms for relu, erf, linear, quadratic; quadrature for tanh, sigmoid, softplus), from f_0 = 0.
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
finite (eta_a = 0 where lr_a is 0: a fixed output layer; eta_w = 0 where lr_w is 0: random features)."""

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
    """Snapshot interval in model time (clock: log, the first snapshot time)."""
    clock: Literal["linear", "log"] = "linear"
    """linear: a snapshot at every multiple of ``every``; log: ``per_decade`` snapshots in each
    decade of t, at every * 10^(k / per_decade), k = 0, 1, ..., for long runs (t_end 1e4-1e6)
    whose file stays small (docs/design.md §3.4). t_end is always a snapshot."""
    per_decade: PositiveInt = 10
    """clock: log: the snapshots per decade of t."""
    particles: bool = True
    dtype: Literal["float32", "float64"] = "float32"
    max_file_mb: PositiveFloat = 500.0
    probe_size: PositiveInt = 64
    """Test points on which each particle run's NTK is compared with its initial one."""
    w2_particles: NonNegativeInt = 512
    """Particles (a fixed random subset when m is larger) in the Wasserstein-2 measure; 0: no
    wasserstein2 recorded (its exact transport is the costliest measure of a snapshot at large m,
    docs/design.md §1.7)."""
    measures: list[OptionalMeasure] = []
    """Measures recorded beyond every run's own (OPTIONAL_MEASURES), by the runs with particles."""

    @model_validator(mode="after")
    def _per_decade_needs_the_log_clock(self):
        if self.clock == "linear" and _differs_from_default(self, "per_decade"):
            raise _key_error("per_decade", f"record.per_decade = {self.per_decade} counts the snapshots per decade "
                                           "of the logarithmic clock, and record.clock is linear: set "
                                           "record.clock: log, or remove record.per_decade")
        return self

    def snapshot_times(self, t_end: float):
        """The snapshot times after t = 0 up to ``t_end`` (itself included), on the record's clock."""
        from solvers.integrate import log_snapshot_times, snapshot_times

        if self.clock == "log":
            return log_snapshot_times(self.every, t_end, self.per_decade)
        return snapshot_times(0.0, t_end, min(self.every, t_end))

    def snapshot_count(self, t_end: float) -> float:
        """How many snapshots after t = 0 the clock takes up to ``t_end`` (without building them)."""
        if self.clock == "log":
            return self.per_decade * math.log10(max(t_end / self.every, 1.0)) + 1
        return t_end / min(self.every, t_end)

    @field_validator("measures")
    @classmethod
    def _each_measure_once(cls, measures):
        twice = sorted({name for name in measures if measures.count(name) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} given twice: name each measure once")
        return measures

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
