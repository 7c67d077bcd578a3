"""Sweeps that extend sweeps (docs/design.md §7.2): ``extends: NAME`` inherits base and grid;
the extending file's base is deep-merged, its axes replace those of the same key in place and
new ones are appended, null removes an axis; chains work, cycles and missing parents are one
clear error naming the file and the key."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import meanfield as mf
from meanfield.cli import main
from meanfield.config.bundled import SWEEP_DIR
from meanfield.config.loading import parse_scenario
from meanfield.errors import UsageError
from meanfield.sweeps.execution import run_sweep
from meanfield.sweeps.grid import deep_merge, load_sweep, parse_sweep
from meanfield.sweeps.table import read_table

TINY = {
    "name": "tiny",
    "seed": 3,
    "data": {"task": "teacher_student", "dim": 2, "n_train": 16, "n_test": 8},
    "model": {"width": 8, "activation": "tanh"},
    "runs": {"rich": "mean_field", "ntk": {"solver": "ntk"}},
    "train": {"t_end": 0.4, "integrator": {"method": "euler", "dt": 0.05}},
    "record": {"every": 0.2, "particles": False},
}


def write(path, mapping):
    path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    return path


def bundled_raw(name):
    return yaml.safe_load((SWEEP_DIR / f"{name}.yaml").read_text())


def test_a_sweep_extending_a_bundled_sweep_gives_the_grid_written_out(tmp_path):
    """chizat_oyallon_bach's grid is tau x seed; the extension replaces the tau axis (two scales),
    keeps seed in its place, appends a ridge axis, and changes one data key and the width."""
    scales = {0.1: {"preset": "lazy", "alpha": 0.2, "lr": 1.0}, 1: {"preset": "lazy", "alpha": 20.0, "lr": 1.0}}
    path = write(tmp_path / "cob_small.yaml", {
        "extends": "chizat_oyallon_bach",
        "base": {"data": {"n_train": 100, "n_test": 50}, "model": {"width": 20}},
        "grid": {"runs.lazy.parameterization": scales, "runs.ntk.ridge": [0.0, 0.01]},
    })
    sweep = mf.load_sweep(path)
    parent = bundled_raw("chizat_oyallon_bach")
    seeds = parent["grid"]["seed"]
    assert sweep.name == "cob_small" and sweep.description == ""
    assert sweep.grid_keys == ["runs.lazy.parameterization", "seed", "runs.ntk.ridge"]
    expected = list(itertools.product(scales, seeds, [0.0, 0.01]))
    assert [tuple(p.coords.values()) for p in sweep.points] == expected
    base = parent["base"]
    base["data"].update(n_train=100, n_test=50)
    base["model"]["width"] = 20
    for point, (tau, seed, ridge) in zip(sweep.points, expected):
        by_hand = parse_scenario(yaml.safe_dump(base), overrides={
            "runs.lazy.parameterization": scales[tau], "seed": seed, "runs.ntk.ridge": ridge})
        assert point.scenario == by_hand
    assert sweep.points[0].scenario.data.dim == 100 and sweep.points[0].scenario.data.inputs == "unit_sphere"


def test_deep_merge_changes_one_key_and_null_removes_one():
    inherited = {"data": {"dim": 3, "n_train": 10}, "runs": {"a": {"solver": "ntk"}, "b": "mean_field"}, "seed": 1}
    merged = deep_merge(inherited, {"data": {"n_train": 20}, "runs": {"b": None, "c": {"solver": "tangent"}}})
    assert merged == {"data": {"dim": 3, "n_train": 20}, "runs": {"a": {"solver": "ntk"}, "c": {"solver": "tangent"}},
                      "seed": 1}
    assert inherited["data"]["n_train"] == 10 and "b" in inherited["runs"]  # not modified
    assert deep_merge({"x": {"y": 1}}, {"x": [1, 2]}) == {"x": [1, 2]}


def test_the_base_is_merged_and_a_named_base_replaces_it(tmp_path):
    write(tmp_path / "parent.yaml", {"base": TINY, "grid": {"model.width": [8, 16]}})
    merged = load_sweep(write(tmp_path / "child.yaml", {
        "extends": "parent.yaml", "base": {"data": {"n_train": 12}, "runs": {"rich": None}}}))
    scenario = merged.points[0].scenario
    assert (scenario.data.n_train, scenario.data.n_test, list(scenario.runs)) == (12, 8, ["ntk"])
    write(tmp_path / "other.yaml", {**TINY, "name": "other", "seed": 9})
    replaced = load_sweep(write(tmp_path / "named.yaml", {"extends": "parent.yaml", "base": "other.yaml"}))
    assert replaced.points[0].scenario.seed == 9 and replaced.grid_keys == ["model.width"]


def test_axis_removal_and_overrides_of_name_description_and_replicates(tmp_path):
    write(tmp_path / "parent.yaml", {"name": "p", "description": "the parent", "base": TINY, "replicates": 2,
                                     "grid": {"model.width": [8, 16], "data.n_train": [8, 16]}})
    child = load_sweep(write(tmp_path / "child.yaml", {
        "extends": "parent.yaml", "name": "c", "description": "smaller", "replicates": 3,
        "grid": {"data.n_train": None}}))
    assert (child.name, child.description) == ("c", "smaller")
    assert child.grid_keys == ["model.width", "seed"] and len(child.points) == 2 * 3
    inherited = load_sweep(write(tmp_path / "keeps.yaml", {"extends": "parent.yaml"}))
    assert (inherited.name, inherited.description) == ("keeps", "the parent")  # the name is the file's own
    assert inherited.grid_keys == ["model.width", "data.n_train", "seed"] and len(inherited.points) == 8
    assert inherited.points[-1].scenario == load_sweep(tmp_path / "parent.yaml").points[-1].scenario
    none = load_sweep(write(tmp_path / "none.yaml", {"extends": "parent.yaml", "replicates": None}))
    assert none.grid_keys == ["model.width", "data.n_train"]


def test_a_chain_resolves_each_file_relative_to_itself(tmp_path):
    """C (in lib/, its base a path relative to lib/) <- B (in lib/) <- A (here)."""
    lib = tmp_path / "lib"
    lib.mkdir()
    write(lib / "tiny.yaml", TINY)
    write(lib / "c.yaml", {"base": "tiny.yaml", "grid": {"model.width": [8, 16], "seed": [1, 2]}})
    write(lib / "b.yaml", {"extends": "c.yaml", "grid": {"data.n_train": [10, 20]}})
    a = load_sweep(write(tmp_path / "a.yaml", {"extends": "lib/b.yaml", "grid": {"model.width": [12]}}))
    assert a.grid_keys == ["model.width", "seed", "data.n_train"]
    assert [tuple(p.coords.values()) for p in a.points] == list(itertools.product([12], [1, 2], [10, 20]))
    assert a.extends == [str(lib / "b.yaml"), str(lib / "c.yaml")]
    # the stored sweep is self-contained: it reads back to the same points without the chain
    again = parse_sweep(a.as_yaml())
    assert [p.scenario for p in again.points] == [p.scenario for p in a.points]


def test_a_cycle_is_an_error_naming_the_chain(tmp_path):
    write(tmp_path / "a.yaml", {"extends": "b.yaml", "grid": {"model.width": [8]}})
    write(tmp_path / "b.yaml", {"extends": "c.yaml"})
    write(tmp_path / "c.yaml", {"extends": "a.yaml"})
    with pytest.raises(UsageError) as info:
        load_sweep(tmp_path / "a.yaml")
    a, b, c = (str(tmp_path / name) for name in ("a.yaml", "b.yaml", "c.yaml"))
    assert str(info.value) == f"{c}:1: extends 'a.yaml' makes a cycle: {a} -> {b} -> {c} -> {a}"
    with pytest.raises(UsageError, match="makes a cycle"):
        load_sweep(write(tmp_path / "self.yaml", {"extends": "self.yaml"}))


@pytest.mark.parametrize("mapping, words", [
    ({"extends": "no_such_sweep"}, ":1: extends 'no_such_sweep': no sweep file {dir}/no_such_sweep and no bundled "
                                   f"sweep of that name (bundled sweeps: {', '.join(sorted(mf.bundled_sweeps()))})"),
    ({"extends": ["a", "b"]}, ":1: extends names one sweep: a bundled sweep's name or a path relative to this file"),
    ({"extends": "width_theorem", "grid": {"model.depth": None}},
     ":3: grid model.depth: null removes an inherited axis, and width_theorem has no axis 'model.depth'"),
    ({"extends": "width_theorem", "grid": {"model.width": []}}, ":3: grid model.width: the list of values is empty"),
    ({"extends": "width_theorem", "grid": {"runs": None, "model.width": None, "seed": None}},
     ":2: without the axes removed, width_theorem's grid is empty"),
    ({"extends": "width_theorem", "bases": {}}, ":2: unknown key 'bases'; a sweep has: name, description, extends,"),
])
def test_a_bad_extension_is_one_error_naming_the_file_and_key(tmp_path, mapping, words):
    path = write(tmp_path / "bad.yaml", mapping)
    result = CliRunner().invoke(main, ["sweep", str(path), "--dry-run"])
    assert result.exit_code == 2, result.output
    assert f"Error: {path}{words.format(dir=tmp_path)}" in result.output


def test_dry_run_shows_inherited_replaced_new_and_removed_axes(tmp_path):
    write(tmp_path / "parent.yaml", {"base": TINY, "grid": {"model.width": [8, 16], "data.n_train": [8, 16],
                                                            "seed": [1, 2]}})
    path = write(tmp_path / "child.yaml", {"extends": "parent.yaml",
                                           "grid": {"model.width": [12], "seed": None, "runs.ntk.ridge": [0.1]}})
    result = CliRunner().invoke(main, ["sweep", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    parent = str(tmp_path / "parent.yaml")
    for line in ["sweep child: 2 point(s), every one valid", f"  extends {parent}",
                 f"  model.width: 12   (replaced; {parent} had 8, 16)",
                 f"  data.n_train: 8, 16   (inherited from {parent})",
                 "  runs.ntk.ridge: 0.1   (new)", f"  seed: removed (inherited from {parent})"]:
        assert line in result.output.splitlines(), line


def test_an_extended_sweep_runs_and_its_table_holds_the_kernel_limits(tmp_path):
    write(tmp_path / "parent.yaml", {"base": TINY, "grid": {"model.width": [8, 16]}})
    sweep = load_sweep(write(tmp_path / "child.yaml", {"extends": "parent.yaml",
                                                      "grid": {"runs.ntk.ridge": [0.0, 0.1]}}))
    with ThreadPoolExecutor(max_workers=1) as pool:
        result = run_sweep(sweep, tmp_path / "out", executor=pool, threads=1)
    assert (result.ran, result.failed) == (4, 0)
    table = read_table(tmp_path / "out")
    assert {"ntk.loss_train_limit", "ntk.loss_test_limit"} <= set(table.measure_columns())
    for row in table.rows():
        with result.trajectory(row["point"]) as traj:
            assert row["ntk.loss_test_limit"] == traj["ntk"].constants["loss_test_limit"]
    limits = table["ntk.loss_train_limit"]
    assert np.all(np.isfinite(limits)) and limits[1] > limits[0]  # the ridge keeps the fit from interpolating
