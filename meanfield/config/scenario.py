"""A whole scenario: :class:`Scenario`, its sections (:mod:`meanfield.config.sections`) and the
rules across them (a run's own integrator, noise, curvature, the population mode), and what it
says of itself (``describe``, ``resolved_yaml``, ``replace``).
"""

from __future__ import annotations

import math
import typing
from pathlib import PurePath
from typing import Any, Optional

import yaml
from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from solvers.catalog import ANALYTIC_ACTIVATIONS, CLASSIFICATION_LOSSES, HOMOGENEITY, POPULATION_ACTIVATIONS

from ..model.kinds import DEFAULT_SOLVER, can, kind_of
from ..model.measures import CURVATURE_MEASURES, MARGIN_MEASURES
from .sections import (
    MAX_SNAPSHOTS,
    REAL_TASKS,
    REGRESSION_TASKS,
    RESOLVED_NUMBERS,
    RUN_NAME,
    DataSpec,
    IntegratorSpec,
    LossName,
    ModelSpec,
    RecordSpec,
    RunSpec,
    Seed,
    Strict,
    TrainSpec,
    _expand_shorthand,
    plain_name,
)


class Scenario(Strict):
    """A validated scenario: everything a simulation needs (docs/design.md §5; every key and
    its default in docs/scenario_file.md). ``replace`` gives an edited copy, validated again;
    ``resolved_yaml`` the text stored with a run."""

    name: str = Field(min_length=1)
    description: str = ""
    seed: Seed = 0
    data: DataSpec = DataSpec()
    model: ModelSpec = ModelSpec()
    loss: LossName = "squared"
    runs: dict[str, RunSpec] = Field(min_length=1)
    train: TrainSpec = TrainSpec()
    record: RecordSpec = Field(RecordSpec(), validate_default=True)
    output: Optional[str] = None
    """The trajectory file (default ``NAME.h5``): a relative path below the working directory
    (the command line's ``-o`` and the API's ``output=`` may name any path; a scenario file,
    maybe someone else's, may not decide where a file lands outside it)."""

    @field_validator("name")
    @classmethod
    def _name_is_a_plain_name(cls, name: str) -> str:
        return plain_name(name)

    @field_validator("output")
    @classmethod
    def _output_stays_below_the_working_directory(cls, output: Optional[str]) -> Optional[str]:
        if output is not None and (not output or "\x00" in output or PurePath(output).is_absolute()
                                   or ".." in PurePath(output).parts or output.startswith("~")):
            raise ValueError(f"output {output!r}: a scenario's output is a relative path below the working "
                             "directory (no '..', '/' at the start or '~'); to write elsewhere, give "
                             "-o PATH (mf.simulate(..., output=PATH))")
        return output

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
    def _analytic_kernel_exists(self):
        """Every activation of the catalog has an analytic kernel today (closed form or quadrature);
        one added without a rule would be named here."""
        for name, run in self.runs.items():
            if getattr(run, "kernel", None) == "analytic" and self.model.activation not in ANALYTIC_ACTIVATIONS:
                raise ValueError(
                    f"run {name!r}: the analytic kernel exists for activations "
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
                fixed = {key for key, lr in (("eta_a", run.parameterization.lr_a), ("eta_w", run.parameterization.lr_w))
                         if lr == 0}
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
        count = record.snapshot_count(train.t_end)
        if count > MAX_SNAPSHOTS and record.clock == "log":
            raise ValueError(f"record.per_decade = {record.per_decade} gives {count:.3g} snapshots per run, more "
                             f"than the {MAX_SNAPSHOTS:.0e} allowed: lower record.per_decade")
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
    def _margins_apply(self):
        """margin = min_k y_k f(x_k) needs samples with labels +-1; normalized_margin a network
        positively homogeneous in its trained parameters (a homogeneous activation, no output
        bias; both layers trained, or the output layer alone with lr_w: 0), or a kernel flow from
        f_0 = 0, whose RKHS norm is its predictor's (docs/design.md §1.7)."""
        wanted = [name for name in self.record.measures if name in MARGIN_MEASURES]
        if not wanted:
            return self
        where = f"record.measures: {', '.join(wanted)}"
        if self.data.population:
            raise ValueError(f"{where}: a margin is taken on the training set, and infinite data has none: "
                             "remove it")
        if self.data.task in REGRESSION_TASKS:
            raise ValueError(f"{where}: a margin min y f needs labels +-1, and task {self.data.task!r} is a "
                             "regression: use a classification task or remove it")
        if "normalized_margin" not in wanted:
            return self
        where = "record.measures: normalized_margin"
        if self.model.activation not in HOMOGENEITY:
            raise ValueError(f"{where} divides by a norm of the parameters and needs a positively homogeneous "
                             f"network: activation {self.model.activation!r} is not homogeneous (use one of "
                             f"{', '.join(HOMOGENEITY)}) or remove it")
        if self.model.output_bias:
            raise ValueError(f"{where} needs a positively homogeneous network, and the output bias c is not: "
                             "set model.output_bias: false or remove it")
        for name, run in self.runs.items():
            kind, rates = self.kind(run), run.parameterization
            if kind.solver == "tangent":
                raise ValueError(f"{where}: run {name!r} is the tangent model f_0 + J (theta - theta_0), affine and "
                                 "not homogeneous in theta: remove the run or the measure")
            if kind.solver == "ntk" and run.kernel != "analytic" and not self.model.init.symmetric:
                raise ValueError(f"{where}: run {name!r} flows from its particles' f_0 != 0, and the kernel norm "
                                 "is that of a predictor from f_0 = 0: use kernel: analytic, or "
                                 "model.init.symmetric: true")
            if kind.solver == "particles" and self.model.bias:
                lr_w = rates.lr if rates.lr_w is None else rates.lr_w
                lr_b = lr_w if rates.lr_b is None else rates.lr_b
                if (lr_w == 0) != (lr_b == 0):
                    raise ValueError(f"{where}: run {name!r} trains {'the biases b' if lr_w == 0 else 'w'} of the "
                                     f"first layer and not {'w' if lr_w == 0 else 'the biases b'} (lr_w {lr_w:g}, "
                                     f"lr_b {lr_b:g}): the network is homogeneous in neither; give lr_b and lr_w "
                                     "both 0 or both > 0, or remove the measure")
            if kind.solver == "particles" and rates.lr_a == 0:
                raise ValueError(f"{where}: run {name!r} trains the input layer alone (lr_a: 0), where the "
                                 "margin has no normalisation here: train both layers or the output layer "
                                 "alone (lr_w: 0), or remove the measure")
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
        """lr_a: 0 keeps a_i at a_i(0) (lr_w: 0 keeps w_i at w_i(0)); weight decay and Langevin noise act
        on every parameter, a and w included."""
        moving = [f"train.{key} = {getattr(self.train, key):g}" for key in ("weight_decay", "temperature")
                  if getattr(self.train, key)]
        layers = (("lr_a", "output weights", "a"), ("lr_w", "input weights", "w"))
        for name, run in self.runs.items():
            for key, what, letter in layers:
                if getattr(run.parameterization, key) == 0 and moving:
                    raise ValueError(f"runs.{name}.parameterization.{key}: 0 keeps the {what} fixed, and "
                                     f"{' and '.join(moving)} moves every parameter, {letter} included: give "
                                     f"{key} > 0, or set train.weight_decay and train.temperature to 0")
        return self

    @model_validator(mode="after")
    def _bias_rate_needs_a_bias(self):
        """lr_b is the rate of the biases b_i: only with model.bias; and some parameter must train."""
        for name, run in self.runs.items():
            param = run.parameterization
            if param.lr_b is not None and not self.model.bias:
                raise ValueError(f"runs.{name}.parameterization.lr_b = {param.lr_b:g} is the learning rate of the "
                                 "biases b_i, and model.bias is false (b = 0): set model.bias: true, or remove lr_b")
            lr_b = param.lr_w if param.lr_b is None else param.lr_b
            if param.lr_a == 0 and param.lr_w == 0 and not (self.model.bias and lr_b):
                raise ValueError(f"runs.{name}.parameterization: lr_a: 0 and lr_w: 0 train neither layer: "
                                 "give lr_a > 0 (random features) or lr_w > 0 (a fixed output layer)")
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
        if self.loss in CLASSIFICATION_LOSSES and self.data.task in REGRESSION_TASKS:
            raise ValueError(
                f"loss {self.loss!r} needs labels +-1; task {self.data.task!r} is a regression: "
                "use loss: squared"
            )
        if self.loss == "logistic" and self.data.task in REAL_TASKS and self.data.labels == "value":
            raise ValueError("loss 'logistic' needs labels +-1; data.labels value is a regression (the digit "
                             "standardised): use loss: squared, or labels parity, {pair: [i, j]} or {one_vs_rest: k}")
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
            from .loading import load_yaml  # it imports this module

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
        from .loading import _apply_overrides, validate_scenario  # it imports this module

        overridden = _apply_overrides(raw, changes, self.name)
        return validate_scenario(raw, f"scenario {self.name!r}", None, overridden, how="replace")
