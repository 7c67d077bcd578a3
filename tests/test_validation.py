"""Everything a run would refuse is refused before it: `meanfield simulate X --dry-run` exits
with status 2 and one `Error:` line for each case that used to pass validation and then fail
(with a traceback, or once the run had started) or be silently ignored; its valid neighbour
passes. Numbers are finite, snapshots, steps and memory bounded, scenario and sweep files
UTF-8 YAML without a key given twice. Bundled scenarios and sweep points still validate, and
their resolved text parses back.
"""

import math
import textwrap
import tracemalloc

import h5py
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from pydantic import BaseModel

import meanfield
from meanfield.cli import main
from meanfield.config.bundled import bundled, bundled_sweeps
from meanfield.config.loading import parse_scenario, read_yaml
from meanfield.config.scenario import Scenario
from meanfield.config.wording import _PRESETS, _strip
from meanfield.engine import memory
from meanfield.engine.memory import size_text

BASE = textwrap.dedent(
    """\
    name: v
    data: {task: teacher_student, dim: 3}
    model: {width: 8}
    runs: {rich: mean_field}
    train: {t_end: 1.0}
    """
)

# (overrides of BASE that a run would refuse, words of the one Error: line, the valid neighbour)
CASES = [
    pytest.param(["data.task=moons", "data.dim=2", "data.inputs=sphere"],
                 "data.inputs is a key of task teacher_student, single_index, power_law, digits or mnist1d, not of 'moons'",
                 ["data.task=single_index", "data.inputs=sphere"], id="inputs-on-classification"),
    pytest.param(["model.init.b_std=0.5"], "init.b_std = 0.5 is the spread of the biases b_i, and bias is false",
                 ["model.bias=true", "model.init.b_std=0.5"], id="b_std-without-bias"),
    pytest.param(["runs.k={solver: ntk, kernel: analytic}", "model.init.b_std=0.5"],
                 "set model.bias: true, or remove model.init.b_std",
                 ["runs.k={solver: ntk, kernel: analytic}", "model.init.b_std=0.5", "model.bias=true"],
                 id="b_std-without-bias-analytic"),
    pytest.param(["train.integrator={method: rk45, dt_min: 0.1, dt_max: 0.01}"],
                 "train.integrator: dt_max = 0.01 is below dt_min = 0.1",
                 ["train.integrator={method: rk45, dt_min: 0.01, dt_max: 0.1}"], id="rk45-dt_max-below-dt_min"),
    pytest.param(["model.width=512", "runs.rich.parameterization={preset: custom, output_exponent: -200}"],
                 "runs.rich.parameterization at width 512 gives a power of the width out of floating-point range",
                 ["model.width=512", "runs.rich.parameterization={preset: custom, output_exponent: -2}"],
                 id="parameterization-overflow"),
    pytest.param(["runs.rich.parameterization={preset: lazy, alpha: 1.0e+300}"],
                 "gives loss_scale out of floating-point range",
                 ["runs.rich.parameterization={preset: lazy, alpha: 1.0e+30}"], id="alpha-underflow"),
    pytest.param(["data.task=file", "data.path=<labels>", "data.noise=0.1"],
                 "noise: task 'file' takes its samples from data.path as they are",
                 ["data.task=file", "data.path=<labels>"], id="file-noise"),
    pytest.param(["model.width=100000", "record.max_file_mb=1"],
                 "record.max_file_mb = 1 cannot hold even the first and last snapshots",
                 ["model.width=100000", "record.max_file_mb=50"], id="max_file_mb-too-small"),
    pytest.param(["data.task=file", "data.path=<labels>", "loss=logistic"], "loss 'logistic' needs labels",
                 ["data.task=file", "data.path=<pm1>", "loss=logistic"], id="file-logistic-labels"),
    pytest.param(["data.task=file", "data.path=<absent>"], "no such file",
                 ["data.task=file", "data.path=<pm1>"], id="file-missing"),
    pytest.param(["data.task=file", "data.path=<pm1>", "data.dim=2"], "data.dim is 2, and data.path <pm1> holds inputs of dimension 3 (X [20, 3]): remove data.dim (it is read from the file) or set data.dim: 3",
                 ["data.task=file", "data.path=<pm1>", "data.dim=3"], id="file-dim"),
    pytest.param(["data.task=file", "data.path=<short_y>"], "X has 20 samples but y has 19",
                 ["data.task=file", "data.path=<pm1>"], id="file-shapes"),
    pytest.param(["data.task=file", "data.path=<labels>", "data.test_indices=[0, 20]"],
                 "data.test_indices: 20 out of range: data.path <labels> holds 20 samples, indices 0 to 19",
                 ["data.task=file", "data.path=<labels>", "data.test_indices=[0, 19]"], id="test_indices-range"),
    pytest.param(["data.task=file", "data.path=<labels>", f"data.test_indices={list(range(20))}"],
                 "data.test_indices: names every one of the 20 samples of data.path <labels>",
                 ["data.task=file", "data.path=<labels>", f"data.test_indices={list(range(19))}"],
                 id="test_indices-all"),
    pytest.param(["data.task=file", "data.path=<labels>", "data.test_indices=[3, 1, 3]"],
                 "(--set data.test_indices): data.test_indices: index 3 given more than once",
                 ["data.task=file", "data.path=<labels>", "data.test_indices=[3, 1]"], id="test_indices-repeated"),
    pytest.param(["data.task=file", "data.path=<labels>", "data.test_indices=[1.5]"],
                 "data.test_indices.0: must be an integer",
                 ["data.task=file", "data.path=<labels>", "data.test_indices=[1]"], id="test_indices-float"),
    pytest.param(["data.task=file", "data.path=<labels>", "data.test_indices=[1]", "data.test_fraction=0.5"],
                 "data.test_fraction 0.5 and data.test_indices conflict",
                 ["data.task=file", "data.path=<labels>", "data.test_indices=[1]"], id="test_indices-fraction"),
    pytest.param(["data.task=file", "data.path=<labels>", "data.test_indices=[1]", "data.test_path=<pm1>"],
                 "data.test_path and data.test_indices both choose the test set",
                 ["data.task=file", "data.path=<labels>", "data.test_path=<pm1>"], id="test_indices-test_path"),
    pytest.param(["data.task=file", "data.path=<labels>", "data.test_path=<pm1>", "data.test_fraction=0"],
                 "data.test_fraction 0 and data.test_path conflict",
                 ["data.task=file", "data.path=<labels>", "data.test_fraction=0"], id="test_path-fraction"),
    pytest.param(["data.task=file", "data.path=<labels>", "data.test_path=<absent>"],
                 "data.test_path <absent>: no such file",
                 ["data.task=file", "data.path=<labels>", "data.test_path=<pm1>"], id="test_path-missing"),
    pytest.param(["data.task=file", "data.path=<labels>", "data.test_path=<dim2>"],
                 "data.test_path <dim2>: X has 2 features but data.dim is 3; the test set needs data.path's dim",
                 ["data.task=file", "data.path=<labels>", "data.test_path=<pm1>"], id="test_path-dim"),
    pytest.param(["data.task=file", "data.path=<labels>", "data.test_path=<nan_y>"],
                 "data.test_path <nan_y>: y has 1 non-finite values",
                 ["data.task=file", "data.path=<labels>", "data.test_path=<labels>"], id="test_path-nan"),
    pytest.param(["data.task=file", "data.path=<pm1>", "data.test_path=<labels>", "loss=logistic"],
                 "data.test_path <labels>: loss 'logistic' needs labels",
                 ["data.task=file", "data.path=<pm1>", "data.test_path=<pm1>", "loss=logistic"],
                 id="test_path-logistic-labels"),
    pytest.param(["data.task=file", "data.path=<labels>", "data.test_fraction=0.01"],
                 "both need at least one (data.test_fraction: 0 for no test set)",
                 ["data.task=file", "data.path=<labels>", "data.test_fraction=0"], id="test_fraction-rounds-to-0"),
    pytest.param(["runs.rich.parameterization={preset: mup, lr_a: -1}"],
                 "runs.rich.parameterization.lr_a: must be >= 0",
                 ["runs.rich.parameterization={preset: mup, lr_a: 0}"], id="lr_a-negative"),
    pytest.param(["runs.rich.parameterization={preset: mup, lr_a: 0}", "train.weight_decay=0.01"],
                 "runs.rich.parameterization.lr_a: 0 keeps the output weights fixed, and train.weight_decay = 0.01 "
                 "moves every parameter, a included", ["runs.rich.parameterization={preset: mup, lr_a: 0.5}",
                                                       "train.weight_decay=0.01"], id="lr_a-zero-weight-decay"),
    pytest.param(["runs.rich.parameterization={preset: mup, lr_w: -1}"],
                 "runs.rich.parameterization.lr_w: must be >= 0",
                 ["runs.rich.parameterization={preset: mup, lr_w: 0}"], id="lr_w-negative"),
    pytest.param(["runs.rich.parameterization={preset: mup, lr_w: 0}", "train.weight_decay=0.01"],
                 "runs.rich.parameterization.lr_w: 0 keeps the input weights fixed, and train.weight_decay = 0.01 "
                 "moves every parameter, w included", ["runs.rich.parameterization={preset: mup, lr_w: 0.5}",
                                                       "train.weight_decay=0.01"], id="lr_w-zero-weight-decay"),
    pytest.param(["runs.rich.parameterization={preset: mup, lr_a: 0, lr_w: 0}"],
                 "runs.rich.parameterization: lr_a: 0 and lr_w: 0 train neither layer",
                 ["runs.rich.parameterization={preset: mup, lr_a: 0, lr_w: 1}"], id="lr_a-and-lr_w-zero"),
    pytest.param(["model.bias=true", "runs.rich.parameterization={preset: mup, lr_b: -1}"],
                 "runs.rich.parameterization.lr_b: must be >= 0",
                 ["model.bias=true", "runs.rich.parameterization={preset: mup, lr_b: 0}"], id="lr_b-negative"),
    pytest.param(["runs.rich.parameterization={preset: mup, lr_b: 2}"],
                 "runs.rich.parameterization.lr_b = 2 is the learning rate of the biases b_i, and model.bias is false "
                 "(b = 0): set model.bias: true, or remove lr_b",
                 ["model.bias=true", "runs.rich.parameterization={preset: mup, lr_b: 2}"], id="lr_b-without-bias"),
    pytest.param(["runs.rich.parameterization={preset: mup, alpha: 2}"],
                 "unknown key 'runs.rich.parameterization.alpha'; allowed here: lr, lr_a, lr_w, lr_b, lr_c, preset",
                 ["runs.rich.parameterization={preset: lazy, alpha: 2}"], id="mup-alpha"),
    pytest.param(["runs.rich.parameterization=mu_p"], "runs.rich.parameterization.preset: 'mu_p' is not one of mean_field, ntk, "
                 "standard, lazy, mup, custom; did you mean 'mup'?", ["runs.rich.parameterization=mup"], id="preset-unknown"),
    pytest.param(["train.t_end=.inf"], "train.t_end: must be a finite number, not inf", ["train.t_end=100"],
                 id="t_end-inf"),
    pytest.param(["train.t_end=1e300"], "= 1e+300 snapshots per run, more than the 1e+06 allowed: raise record.every",
                 ["train.t_end=1e300", "record.every=1e295", "train.integrator={method: rk45}"], id="t_end-1e300"),
    pytest.param(["record.every=1e-12"], "record: train.t_end / record.every = 1 / 1e-12 = 1e+12 snapshots per run",
                 ["record.every=1e-3"], id="every-tiny"),
    pytest.param(["record.every=.inf"], "record.every: must be a finite number, not inf", ["record.every=1e9"],
                 id="every-inf"),
    pytest.param(["data.seed=-1"], "data.seed: must be >= 0", ["data.seed=12"],
                 id="data-seed-negative"),
    pytest.param(["data.inputs=unit"], "data.inputs: 'unit' is not one of gaussian, sphere, unit_sphere",
                 ["data.inputs=unit_sphere"], id="inputs-unknown"),
    pytest.param(["data.population=true", "data.inputs=unit_sphere"],
                 "data.population needs task: teacher_student with inputs: gaussian",
                 ["data.population=true", "data.teacher={a: alternating, W: orthonormal, norm: 2}"],
                 id="population-unit-sphere"),
    pytest.param(["data.teacher.a=[1, 2]"], "(--set data.teacher.a): data.teacher.a: 2 numbers for a teacher of "
                 "width 3: give one output weight per neuron", ["data.teacher.a=[1, -2, 0.5]"], id="teacher-a-length"),
    pytest.param(["data.teacher.a=equals"], "data.teacher.a: unknown rule 'equals'; expected one of equal, "
                 "alternating, random_sign, or a list of width numbers", ["data.teacher.a=random_sign"],
                 id="teacher-a-rule"),
    pytest.param(["data.teacher.W=orthonormal", "data.teacher.width=4"], "data.teacher.W: orthonormal needs "
                 "width <= dim: 4 orthonormal rows do not fit in dimension 3", ["data.teacher.W=orthonormal"],
                 id="teacher-orthonormal-too-wide"),
    pytest.param(["data.teacher.W=[[1, 0, 0], [0, 0, 0], [0, 1, 0]]"], "data.teacher.W: row 1 is all zeros",
                 ["data.teacher.W=[[1, 0, 0], [0, 0, 1], [0, 1, 0]]"], id="teacher-W-zero-row"),
    pytest.param(["data.teacher.W=[[1, 0], [0, 1], [1, 1]]"], "data.teacher.W: rows of 2 numbers, and data.dim is 3",
                 ["data.teacher.W=[[1, 0], [0, 1], [1, 1]]", "data.dim=2"], id="teacher-W-dim"),
    pytest.param(["data.teacher.W=identity"], "data.teacher.W: unknown rule 'identity'; expected one of random, "
                 "orthonormal, or a list of width rows of dim numbers", ["data.teacher.W=random"],
                 id="teacher-W-rule"),
    pytest.param(["data.teacher.norm=-1"], "data.teacher.norm: must be > 0",
                 ["data.teacher.norm=3"], id="teacher-norm"),
    pytest.param(["data.task=single_index", "data.teacher.a=alternating"],
                 "data.teacher is a key of task teacher_student, not of 'single_index'",
                 ["data.task=single_index", "data.inputs=unit_sphere"], id="teacher-on-single-index"),
    pytest.param(["train.integrator.dt=.inf"], "train.integrator.dt: must be a finite number, not inf",
                 ["train.integrator.dt=10"], id="dt-inf"),
    pytest.param(["train.stop_loss=.nan"], "train.stop_loss: must be a finite number, not nan",
                 ["train.stop_loss=0.01"], id="stop_loss-nan"),
    pytest.param(["train.t_end=1e5", "record.every=1e3", "train.integrator.dt=1e-5"],
                 "= 1e+10 steps per run, more than the 1e+09 allowed: raise train.integrator.dt",
                 ["train.t_end=1e5", "record.every=1e3", "train.integrator.dt=1e-3"], id="fixed-steps"),
]


@pytest.fixture
def files(tmp_path):
    """The scenario file and the data files the cases name."""
    X = np.random.default_rng(0).standard_normal((20, 3))
    paths = {"labels": tmp_path / "labels.npz", "pm1": tmp_path / "pm1.npz", "short_y": tmp_path / "short.npz",
             "absent": tmp_path / "absent.npz", "dim2": tmp_path / "dim2.npz", "nan_y": tmp_path / "nan_y.npz"}
    np.savez(paths["labels"], X=X, y=np.sin(X[:, 0]))
    np.savez(paths["dim2"], X=X[:, :2], y=np.sin(X[:, 0]))
    np.savez(paths["nan_y"], X=X, y=np.where(np.arange(20) == 4, np.nan, 1.0))
    np.savez(paths["pm1"], X=X, y=np.sign(X[:, 0]))
    np.savez(paths["short_y"], X=X, y=np.ones(19))
    scenario = tmp_path / "v.yaml"
    scenario.write_text(BASE)
    return scenario, {key: str(path) for key, path in paths.items()}


def dry_run(scenario, overrides, paths, tmp_path):
    args = ["-q", "simulate", str(scenario), "--dry-run", "--no-time", "-o", str(tmp_path / "v.h5")]
    for item in overrides:
        for key, path in paths.items():
            item = item.replace(f"<{key}>", path)
        args += ["--set", item]
    return CliRunner().invoke(main, args)


@pytest.mark.parametrize("bad, words, good", CASES)
def test_dry_run_refuses_with_one_error_line(files, tmp_path, bad, words, good):
    scenario, paths = files
    result = dry_run(scenario, bad, paths, tmp_path)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    for key, path in paths.items():
        words = words.replace(f"<{key}>", path)
    assert len(lines) == 1 and lines[0].startswith("Error: ") and words in lines[0], result.output
    assert not (tmp_path / "v.h5").exists()


@pytest.mark.parametrize("bad, words, good", [pytest.param(*case.values, id=case.id) for case in CASES])
def test_dry_run_accepts_the_valid_neighbour(files, tmp_path, bad, words, good):
    scenario, paths = files
    result = dry_run(scenario, good, paths, tmp_path)
    assert result.exit_code == 0, result.output
    assert "would write" in result.output and not (tmp_path / "v.h5").exists()


@pytest.mark.parametrize("grid, words", [
    ({"model.init.b_std": [0.0, 0.5]}, "point p0001 (model.init.b_std = 0.5)"),
    ({"data.task": ["teacher_student", "single_index", "moons"]}, "point p0002 (data.task = moons)"),
    ({"runs.rich.parameterization.alpha": [1, 1.0e+300]}, "gives loss_scale out of floating-point range"),
    ({"record.max_file_mb": [100, 1.0e-3]}, "point p0001 (record.max_file_mb = 0.001)"),  # found by planning
    ({"data": [{"dim": 2}, {"task": "file", "dim": 2, "path": "/no/such.npz"}]}, "/no/such.npz"),
    ({"train.t_end": [1.0, math.inf]}, "point p0001 (train.t_end = inf): "),
    ({"record.every": [0.5, 1e-9]}, "point p0001 (record.every = 1e-09): "),
])
@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "run"])
def test_a_sweep_refuses_such_a_point_up_front(tmp_path, grid, words, dry):
    base = "name: v\ndata: {dim: 2, inputs: sphere}\nmodel: {width: 8}\nruns: {rich: lazy}\ntrain: {t_end: 1.0}\n"
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"base": yaml.safe_load(base), "grid": grid}))
    args = ["-q", "sweep", str(path), "-o", str(tmp_path / "out")] + (["--dry-run"] if dry else [])
    result = CliRunner().invoke(main, args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert words in lines[0]
    assert not (tmp_path / "out").exists()


def float_keys(section, prefix=""):
    """The dotted key of every number of a schema section that is a float (recursively)."""
    for name, info in section.model_fields.items():
        kind = _strip(info.annotation)
        if kind is float:
            yield prefix + name
        elif isinstance(kind, type) and issubclass(kind, BaseModel):
            yield from float_keys(kind, f"{prefix}{name}.")


NUMBER_KEYS = [(key, {}) for key in float_keys(Scenario)] + [
    (f"runs.rich.parameterization.{key}", {"runs.rich.parameterization.preset": preset})
    for preset, section in _PRESETS.items() for key in float_keys(section)]


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("key, context", NUMBER_KEYS, ids=[key for key, _ in NUMBER_KEYS])
def test_every_number_of_a_scenario_is_finite(key, context, value):
    base = yaml.safe_load(BASE)
    with pytest.raises(meanfield.UsageError) as refused:
        meanfield.load_scenario(base, {**context, key: value})
    assert f"{key}: must be a finite number, not {value}" in str(refused.value)


def test_a_non_finite_number_in_the_file_is_named_by_its_line(tmp_path):
    path = tmp_path / "v.yaml"
    path.write_text(BASE.replace("t_end: 1.0", "t_end: .inf"))
    result = CliRunner().invoke(main, ["-q", "simulate", str(path), "--dry-run"])
    assert result.exit_code == 2
    assert result.output.strip() == f"Error: {path}:5: train.t_end: must be a finite number, not inf"


@pytest.mark.parametrize("line, key, words", [
    ("    a: [1, 2]", "a", "2 numbers for a teacher of width 3"),
    ("    W: [[1, 0, 0], [0, 0, 0], [0, 1, 0]]", "W", "row 1 is all zeros"),
    ("    W: orthonormal\n    width: 4", "W", "orthonormal needs width <= dim"),
    ("    a: alternate", "a", "unknown rule 'alternate'"),
])
def test_a_bad_teacher_key_in_the_file_is_named_by_its_line(tmp_path, line, key, words):
    path = tmp_path / "v.yaml"
    path.write_text(BASE.replace("data: {task: teacher_student, dim: 3}\n",
                                 f"data:\n  dim: 3\n  teacher:\n    activation: relu\n{line}\n"))
    result = CliRunner().invoke(main, ["-q", "simulate", str(path), "--dry-run"])
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {path}:6: data.teacher.{key}: {words}"), result.output


@pytest.mark.parametrize("lr_a, train, words", [
    (-1, "{t_end: 1.0}", "must be >= 0"),
    (0, "{t_end: 1.0, temperature: 0.1, integrator: {method: euler_maruyama, dt: 0.1}}",
     "0 keeps the output weights fixed, and train.temperature = 0.1 moves every parameter"),
])
def test_a_bad_lr_a_in_the_file_is_named_by_its_line(tmp_path, lr_a, train, words):
    path = tmp_path / "v.yaml"
    path.write_text(BASE.replace("runs: {rich: mean_field}\ntrain: {t_end: 1.0}\n",
                                 f"runs:\n  rich:\n    parameterization:\n      preset: mup\n      lr_a: {lr_a}\n"
                                 f"train: {train}\n"))
    result = CliRunner().invoke(main, ["-q", "simulate", str(path), "--dry-run"])
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {path}:8: runs.rich.parameterization.lr_a: {words}"), result.output


@pytest.mark.parametrize("runs, noted", [("{rich: mean_field}", True), ("{k: {solver: ntk}}", False)])
def test_a_step_longer_than_the_snapshot_interval_is_noted(files, tmp_path, runs, noted):
    """Steps are shortened to land on every snapshot: the plan says so for the runs that step
    (a closed-form kernel run takes no steps)."""
    scenario, paths = files
    result = dry_run(scenario, [f"runs={runs}", "train.integrator.dt=0.5", "record.every=0.1"], paths, tmp_path)
    assert result.exit_code == 0, result.output
    note = "train.integrator.dt 0.5 > record.every 0.1: steps shortened to 0.1 to land on every snapshot"
    assert (note in result.output) == noted, result.output


UNREADABLE = {
    "utf-16": "name: v\nruns: {rich: mean_field}\n".encode("utf-16"),
    "utf-16-le": "name: v\nruns: {rich: mean_field}\n".encode("utf-16-le"),
    "binary": bytes(range(256)),
}


@pytest.mark.parametrize("command", ["simulate", "sweep"])
@pytest.mark.parametrize("content", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_a_file_that_is_not_utf8_text_is_one_error_line(tmp_path, command, content):
    path = tmp_path / "x.yaml"
    path.write_bytes(content)
    result = CliRunner().invoke(main, ["-q", command, str(path), "--dry-run"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: {path}: not ") and lines[0].endswith("is UTF-8 YAML text"), result.output


SWEEP = "base: {name: v, runs: {rich: mean_field}}\ngrid: {model.width: [8, 16]}\n"


@pytest.mark.parametrize("command, text, line, key", [
    ("simulate", BASE.replace("model: {width: 8}", "model: {width: 8}\nmodel: {width: 16}"), 4, "model"),
    ("simulate", BASE.replace("model: {width: 8}", "model:\n  width: 8\n  bias: false\n  width: 16"), 6, "width"),
    ("simulate", BASE.replace("{rich: mean_field}", "{rich: mean_field, rich: lazy}"), 4, "rich"),
    ("sweep", SWEEP + "grid: {model.width: [32]}\n", 3, "grid"),
    ("sweep", SWEEP.replace("name: v,", "name: v, name: w,"), 1, "name"),
])
def test_a_key_given_twice_is_refused_with_its_line(tmp_path, command, text, line, key):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["-q", command, str(path), "--dry-run"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: {path}:{line}:") and f"the key {key!r} is given twice" in lines[0]


def test_keys_merged_in_may_be_overridden(tmp_path):
    """YAML merge keys (<<) are not duplicates: the mapping's own key wins, as YAML says."""
    raw, _ = read_yaml("defaults: &d {width: 8, bias: false}\nmodel: {<<: *d, width: 16}\n", "x")
    assert raw["model"] == {"width": 16, "bias": False}


def test_dry_run_on_a_file_task_reports_the_files_sizes(files, tmp_path):
    scenario, paths = files
    n = np.load(paths["pm1"])["X"].shape[0]
    result = dry_run(scenario, ["data.task=file", "data.path=<pm1>", "data.test_fraction=0.25"], paths, tmp_path)
    assert result.exit_code == 0, result.output
    n_test = round(0.25 * n)
    assert f"n_train {n - n_test}, n_test {n_test}" in result.output


@pytest.mark.parametrize("overrides, split, sizes", [
    ([], "a random data.test_fraction 0.25 of the samples is the test set (the data seed)", (15, 5)),
    (["data.test_fraction=0"], "data.test_fraction 0: every sample trains (shuffled by the data seed); no test set",
     (20, 0)),
    (["data.test_indices=[4, 0, 7]"], "the test set is the 3 samples of data.test_indices; the others train "
                                      "(file order)", (17, 3)),
    (["data.test_path=<dim3_7>"], "every sample of data.path trains (file order); the test set is data.test_path "
                                  "<dim3_7>", (20, 7)),
], ids=["fraction", "no-test-set", "indices", "test_path"])
def test_dry_run_shows_how_a_file_task_is_split(files, tmp_path, overrides, split, sizes):
    scenario, paths = files
    paths["dim3_7"] = str(tmp_path / "seven.npz")
    np.savez(paths["dim3_7"], X=np.ones((7, 3)), y=np.ones(7))
    result = dry_run(scenario, ["data.task=file", "data.path=<labels>", *overrides], paths, tmp_path)
    assert result.exit_code == 0, result.output
    assert f"n_train {sizes[0]}, n_test {sizes[1]}\n  data: {split.replace('<dim3_7>', paths['dim3_7'])}\n" in result.output
    no_test_set = "no test set (data.test_fraction 0): loss_test, f_test and gap_ntk are not recorded"
    assert (no_test_set in result.output) == (sizes[1] == 0), result.output


@pytest.mark.parametrize("line, key, words", [
    ("test_indices: [2, 2]", "data.test_indices", "index 2 given more than once"),
    ("test_indices: [0.5]", "data.test_indices.0", "must be an integer"),
    ("test_indices: []", "data.test_indices", "no index: give the indices of at least one sample"),
    ("test_path: t.npz\n  test_fraction: 0.5", "data.test_path", "data.test_fraction 0.5 and data.test_path conflict"),
    ("test_fraction: 1.5", "data.test_fraction", "must be < 1"),
], ids=["repeated", "float", "empty", "conflict", "fraction"])
def test_a_split_key_in_the_file_is_named_with_its_line(tmp_path, line, key, words):
    path = tmp_path / "v.yaml"
    path.write_text(f"name: v\ndata:\n  task: file\n  path: d.npz\n  dim: 3\n  {line}\nruns: {{rich: mean_field}}\n")
    result = CliRunner().invoke(main, ["-q", "simulate", str(path), "--dry-run"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: {path}:6: {key}: {words}"), result.output


def test_dry_run_shows_the_peak_memory_and_refuses_what_cannot_fit(files, tmp_path, monkeypatch):
    scenario, paths = files
    estimate = meanfield.plan(meanfield.load_scenario(scenario)).memory
    monkeypatch.setattr(memory, "available_bytes", lambda: int(estimate.peak) + 1)
    result = dry_run(scenario, [], paths, tmp_path)
    assert result.exit_code == 0 and f"peak memory: about {size_text(estimate.peak)}" in result.output
    available = int(estimate.peak * 0.9)
    monkeypatch.setattr(memory, "available_bytes", lambda: available)
    result = dry_run(scenario, [], paths, tmp_path)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert f"needs about {size_text(estimate.peak)} of memory" in lines[0]
    assert f"{size_text(available)} are available: lower {estimate.dominant.lower}" in lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    pytest.param({"runs": {"k": {"solver": "ntk"}}, "data.n_train": 1200, "data.n_test": 400, "model.width": 32},
                 id="kernel-closed-form"),
    pytest.param({"model.width": 50000, "record.particles": False, "data.n_train": 50, "data.n_test": 50,
                  "train.t_end": 0.2, "record.every": 0.1}, id="particles"),
    pytest.param({"runs": {"t": {"solver": "tangent"}}, "data.population": True, "model.width": 200, "data.dim": 4},
                 id="tangent-population"),
])
def test_the_memory_estimate_bounds_the_measured_peak_within_a_factor_3(tmp_path, overrides):
    """The arrays a run allocates (traced by tracemalloc, after a small run has compiled the
    kernels) stay below the plan's estimate, which is at most 3 times their peak."""
    scenario = meanfield.load_scenario(yaml.safe_load(BASE), overrides)
    meanfield.simulate(scenario.replace({"model.width": 8}), tmp_path / "warm.h5").close()
    estimate = meanfield.plan(scenario).memory.peak
    tracemalloc.start()
    try:
        meanfield.simulate(scenario, tmp_path / "x.h5").close()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= estimate <= 3 * peak, (peak, estimate)


def test_analytic_kernel_with_a_bias_takes_b_std(tmp_path):
    """b_std means something with a bias: the analytic (m -> infinity) kernel run agrees with
    the empirical kernel of many particles drawn with that b_std, and b_std changes it."""
    path = tmp_path / "b.yaml"
    path.write_text(textwrap.dedent(
        """\
        name: b
        data: {task: teacher_student, dim: 3, n_train: 30, n_test: 20}
        model: {width: 20000, bias: true, init: {b_std: 0.8, w_std: 1.3, a_std: 0.7, symmetric: true}}
        runs:
          analytic: {solver: ntk, kernel: analytic, parameterization: mean_field}
          empirical: {solver: ntk, kernel: empirical, parameterization: mean_field}
        train: {t_end: 5.0}
        record: {every: 5.0}
        """))
    f_test = {}
    for b_std in (0.8, 0.0):
        out = tmp_path / f"b{b_std}.h5"
        result = CliRunner().invoke(main, ["-q", "simulate", str(path), "-o", str(out),
                                           "--set", f"model.init.b_std={b_std}"])
        assert result.exit_code == 0, result.output
        with h5py.File(out, "r") as h5:
            f_test[b_std] = h5["observables/analytic/f_test/value"][-1]
            gap = h5["observables/empirical/gap_ntk/value"][-1]  # rms to the analytic run
        assert gap < 0.01
    assert np.sqrt(np.mean((f_test[0.8] - f_test[0.0]) ** 2)) > 0.02


@pytest.mark.parametrize("name", sorted(bundled()))
def test_bundled_scenarios_validate_and_their_resolved_text_parses_back(name):
    scenario = meanfield.load_scenario(name)
    assert parse_scenario(scenario.resolved_yaml()) == scenario


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(bundled_sweeps()))
def test_every_point_of_the_bundled_sweeps_validates_and_parses_back(name):
    for point in meanfield.load_sweep(name).points:
        assert parse_scenario(point.scenario.resolved_yaml()) == point.scenario


def test_a_key_given_twice_in_an_override_is_refused():
    with pytest.raises(meanfield.UsageError, match=r"--set .model=\{width: 8, width: 16\}': the key 'width' is given twice"):
        parse_scenario("name: t\nruns: {rich: mean_field}\n", overrides=["model={width: 8, width: 16}"])


# ------------------------------------------------------------------ names, in the project's words
# (BASE with one name misspelled, the line it is on, the words of the one Error: line)
MISSPELT = [
    pytest.param("task: teacher_student", "task: teacher_studnt", 2, "data.task: 'teacher_studnt' is not one of "
                 "teacher_student, single_index, gaussian_mixture, xor, moons, spirals, clusters, stripe, file, digits, mnist1d, "
                 "power_law; "
                 "did you mean 'teacher_student'?", id="task"),
    pytest.param("dim: 3", "dimm: 3", 2, "unknown key 'data.dimm'; allowed here: task, seed, dim, n_train, "
                 "n_test, inputs, noise, teacher, degree, delta, clusters_per_side, stripe, path, test_fraction, test_path, "
                 "test_indices, population, power_law, labels; did you mean 'dim'?", id="data-key"),
    pytest.param("width: 8}", "width: 8, activation: rellu}", 3, "model.activation: 'rellu' is not one of relu, "
                 "tanh, erf, sigmoid, softplus, linear, quadratic; did you mean 'relu'?", id="activation"),
    pytest.param("t_end: 1.0}", "t_end: 1.0}\nloss: sqaured", 6, "loss: 'sqaured' is not one of squared, logistic, hinge; "
                 "did you mean 'squared'?", id="loss"),
    pytest.param("rich: mean_field", "rich: {solver: particle}", 4, "runs.rich.solver: 'particle' is not one of "
                 "particles, tangent, ntk; did you mean 'particles'?", id="solver"),
    pytest.param("rich: mean_field", "rich: meanfield", 4, "runs.rich.parameterization.preset: 'meanfield' is not "
                 "one of mean_field, ntk, standard, lazy, mup, custom; did you mean 'mean_field'?", id="preset"),
    pytest.param("rich: mean_field", "rich: {solver: ntk, kernel: emprical}", 4, "runs.rich.kernel: 'emprical' "
                 "is not one of empirical, analytic; did you mean 'empirical'?", id="kernel"),
    pytest.param("t_end: 1.0}", "t_end: 1.0, integrator: {method: eulr, dt: 0.1}}", 5,
                 "train.integrator.method: 'eulr' is not one of euler, heun, rk4, rk45, euler_maruyama, sgd, "
                 "loss_clock; "
                 "did you mean 'euler'?", id="method"),
    pytest.param("t_end: 1.0}", "t_end: 1.0, integrator: {metod: rk45}}", 5, "unknown key 'train.integrator.metod';"
                 " allowed here: method, dt, dt_factor, rtol, atol, dt_min, dt_max, batch_size, ds; did you mean "
                 "'method'?",
                 id="integrator-key"),
    pytest.param("t_end: 1.0}", "t_end: 1.0}\nrecord: {measures: [displacement_w]}", 6, "record.measures.0: "
                 "'displacement_w' is not one of displacement_wb, margin, normalized_margin, ntk_eigenvalue_max, "
                 "hessian_eigenvalue_max; "
                 "did you mean 'displacement_wb'?", id="measure"),
    pytest.param("dim: 3}", "dim: 3, teacher: {a: alternate}}", 2, "data.teacher.a: unknown rule 'alternate'; "
                 "expected one of equal, alternating, random_sign, or a list of width numbers; "
                 "did you mean 'alternating'?", id="teacher-rule"),
]


def one_error_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output and "Input " not in result.output, result.output
    return lines[0]


@pytest.mark.parametrize("right, wrong, line, words", MISSPELT)
def test_a_misspelt_name_in_the_file_gets_its_line_what_is_allowed_and_the_closest(tmp_path, right, wrong, line,
                                                                                   words):
    path = tmp_path / "v.yaml"
    path.write_text(BASE.replace(right, wrong, 1))
    error = one_error_line(CliRunner().invoke(main, ["-q", "simulate", str(path), "--dry-run"]))
    assert error == f"Error: {path}:{line}: {words}"


@pytest.mark.parametrize("override, words", [
    ("runs.rich.solver=particle", "(--set runs.rich.solver): runs.rich.solver: 'particle' is not one of particles, "
                                  "tangent, ntk; did you mean 'particles'?"),
    ("model.activaton=tanh", "(--set model.activaton): unknown key 'model.activaton'; allowed here: width, "
                             "activation, bias, output_bias, init; did you mean 'activation'?"),
    ("runs.lazy.parameterization.lr=2", "(--set runs.lazy.parameterization.lr): runs.lazy.parameterization.preset: "
                                        "missing: give one of mean_field, ntk, standard, lazy, mup, custom"),
    ("runs.rihc=null", "--set runs.rihc=null: there is no run 'rihc' (runs: rich); did you mean 'rich'?"),
    ("data.inputs=Sphere", "data.inputs: 'Sphere' is not one of gaussian, sphere, unit_sphere; did you mean 'sphere'?"),
])
def test_a_misspelt_override_gets_what_is_allowed_and_the_closest(tmp_path, override, words):
    path = tmp_path / "v.yaml"
    path.write_text(BASE)
    error = one_error_line(CliRunner().invoke(main, ["-q", "simulate", str(path), "--dry-run", "--set", override]))
    assert words in error


@pytest.mark.parametrize("grid, words", [
    ({"model.activation": ["relu", "rellu"]}, "point p0001 (model.activation = rellu): "
     "<base> (grid model.activation): model.activation: 'rellu' is not one of relu, tanh, erf, sigmoid, softplus, "
     "linear, quadratic; did you mean 'relu'?"),
    ({"model.widht": [8]}, "(grid model.widht): unknown key 'model.widht'; allowed here: width, activation, bias, "
     "output_bias, init; did you mean 'width'?"),
])
def test_a_misspelt_name_in_a_sweep_gets_the_closest(tmp_path, grid, words):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"base": yaml.safe_load(BASE), "grid": grid}))
    error = one_error_line(CliRunner().invoke(main, ["-q", "sweep", str(path), "--dry-run"]))
    assert words.replace("<base>", f"{path} (base)") in error


@pytest.mark.parametrize("command", ["simulate", "sweep"])
def test_a_misspelt_bundled_name_gets_the_closest(command):
    error = one_error_line(CliRunner().invoke(main, ["-q", command, "width_theorm", "--dry-run"]))
    assert error.endswith("; did you mean 'width_theorem'?")


@pytest.mark.parametrize("value, problem", [
    ("{method: euler", "at column 15: expected ',' or '}', but got '<stream end>', while parsing a flow mapping"),
    ("[rk4, euler", "at column 12: expected ',' or ']', but got '<stream end>', while parsing a flow sequence"),
    ("'rk4", "at column 5: found unexpected end of stream, while scanning a quoted scalar"),
])
def test_an_unbalanced_override_is_invalid_yaml_naming_the_override(tmp_path, value, problem):
    path = tmp_path / "v.yaml"
    path.write_text(BASE)
    item = f"train.integrator={value}"
    error = one_error_line(CliRunner().invoke(main, ["-q", "simulate", str(path), "--dry-run", "--set", item]))
    assert error.startswith(f"Error: --set {item!r}: the value is not valid YAML ({problem}): ")
    assert "type" not in error and "mapping" not in error.partition("):")[2]


def test_a_bundled_scenario_is_named_not_shown_as_a_path_in_the_package():
    for args in (["--set", "model.widht=8"], ["--set", "model.width=3"]):
        error = one_error_line(CliRunner().invoke(main, ["-q", "simulate", "quickstart", "--dry-run", *args]))
        assert error.startswith("Error: quickstart (bundled)") and "scenarios" not in error, error
    path = meanfield.config.bundled.SCENARIO_DIR / "quickstart.yaml"
    with pytest.raises(meanfield.UsageError, match=r"^quickstart \(bundled\):\d+: model: init.symmetric needs an even"):
        meanfield.load_scenario(path, {"model.width": 3})


def test_a_bundled_base_of_a_sweep_is_named(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"base": "quickstart", "grid": {"model.activation": ["relu", "rellu"]}}))
    error = one_error_line(CliRunner().invoke(main, ["-q", "sweep", str(path), "--dry-run"]))
    assert "): quickstart (bundled) (grid model.activation): " in error and "scenarios/" not in error


@pytest.mark.parametrize("right, wrong, words", [
    ("name: v\n", "", "v.yaml: name: missing: this key is required"),
    ("runs: {rich: mean_field}", "runs: {}", "v.yaml:4: runs: must not be empty"),
    ("model: {width: 8}", "model: 8", "v.yaml:3: model: must be a mapping of keys (width, activation, bias, "
                                      "output_bias, init) (got 8)"),
    ("width: 8", "width: eight", "v.yaml:3: model.width: must be an integer (got 'eight')"),
    ("width: 8", "width: 8, bias: maybe", "v.yaml:3: model.bias: must be true or false (got 'maybe')"),
    ("t_end: 1.0", "t_end: soon", "v.yaml:5: train.t_end: must be a number (got 'soon')"),
    ("t_end: 1.0", "t_end: 0", "v.yaml:5: train.t_end: must be > 0 (got 0)"),
    ("task: teacher_student", "task: gaussian_mixture, delta: 1.5", "v.yaml:2: data.delta: must be < 1 (got 1.5)"),
])
def test_schema_checks_are_told_in_the_projects_words(tmp_path, right, wrong, words):
    path = tmp_path / "v.yaml"
    path.write_text(BASE.replace(right, wrong, 1))
    error = one_error_line(CliRunner().invoke(main, ["-q", "simulate", str(path), "--dry-run"]))
    assert error == f"Error: {tmp_path}/{words}"
    for pydantic_words in ("Field required", "Input should", "valid dictionary", "Dictionary should"):
        assert pydantic_words not in error
