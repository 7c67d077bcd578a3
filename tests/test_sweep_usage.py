"""Sweeps as a user meets them (issue 19): a script without a ``__main__`` guard, a sweep
whose every point fails, ``--set`` and ``--grid`` on the command line, and how each point ended."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from test_sweep import BASE  # the same tiny scenario

import meanfield as mf
from meanfield.cli import main
from meanfield.errors import SweepFailed

SCRIPT = """\
import meanfield as mf

BASE = {base!r}
{guard}res = mf.sweep(BASE, grid={{"model.width": [8, 12]}}, output="out", workers=1, threads=1)
{indent}print("rows:", len(res.table), "complete:", list(res.table["status"]).count("complete"))
"""


def _run_script(tmp_path, guarded: bool) -> subprocess.CompletedProcess:
    guard, indent = ('if __name__ == "__main__":\n    ', "    ") if guarded else ("", "")
    (tmp_path / "sweep_script.py").write_text(SCRIPT.format(base=BASE, guard=guard, indent=indent))
    return subprocess.run([sys.executable, "sweep_script.py"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)


# ------------------------------------------------------------------ item: scripts and failed sweeps
@pytest.mark.slow
def test_a_script_without_a_main_guard_stops_with_how_to_fix_it(tmp_path):
    done = _run_script(tmp_path, guarded=False)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("meanfield.errors.UsageError: every point of the sweep failed"), done.stderr[-3000:]
    assert "BrokenProcessPool" in last and 'if __name__ == "__main__":' in last and "sweep_script.py" in last


@pytest.mark.slow
def test_the_same_script_with_the_guard_runs_its_sweep(tmp_path):
    done = _run_script(tmp_path, guarded=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rows: 2 complete: 2" in done.stdout


@pytest.mark.slow
def test_a_sweep_whose_every_point_fails_raises_with_the_first_reasons(tmp_path):
    with pytest.raises(SweepFailed, match=r"every point of the sweep failed \(2 of 2\): p0000: ") as caught:
        mf.sweep(BASE, grid={"runs.rich.parameterization.lr": [1e9, 1e10]}, output=tmp_path / "out", workers=1,
                 threads=1)
    assert caught.value.result.failed == 2 and "p0001" in str(caught.value)
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({"base": BASE, "grid": {"runs.rich.parameterization.lr": [1e9]}}))
    result = CliRunner().invoke(main, ["-q", "sweep", str(spec), "-o", str(tmp_path / "cli"), "--workers", "1"])
    assert result.exit_code == 1 and "Error: every point of the sweep failed (1 of 1): p0000" in result.output


# ------------------------------------------------------------------ item: --set and --grid
def _sweep_file(tmp_path, grid=None):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"base": BASE, "grid": grid or {"model.width": [8, 12, 16]}}, sort_keys=False))
    return path


def test_set_edits_the_base_and_grid_replaces_an_axis_on_the_command_line(tmp_path):
    path = _sweep_file(tmp_path)
    result = CliRunner().invoke(main, ["sweep", str(path), "-o", str(tmp_path / "out"), "--workers", "1",
                                       "--set", "train.t_end=0.2", "--grid", "model.width=8,10"])
    assert result.exit_code == 0, result.output
    table = mf.open_sweep(tmp_path / "out").table
    assert list(table["model.width"]) == [8, 10] and list(table["rich.t"]) == pytest.approx([0.2, 0.2])
    assert "ran to t_end" not in result.output  # no stop_loss asked: t_end is how it should end
    with mf.open_sweep(tmp_path / "out").trajectory("p0001") as traj:
        assert traj.scenario.model.width == 10 and traj.scenario.train.t_end == 0.2


def test_grid_adds_an_axis_with_values_read_as_yaml_and_the_api_takes_the_same(tmp_path):
    path = _sweep_file(tmp_path)
    sweep = mf.load_sweep(path, overrides=["seed=5"],
                          axes={"runs.lazy.parameterization": [{"preset": "lazy", "alpha": 2}, "ntk"]})
    assert sweep.grid_keys == ["model.width", "runs.lazy.parameterization"] and len(sweep.points) == 6
    assert sweep.points[1].scenario.runs["lazy"].parameterization.preset == "ntk"
    assert sweep.points[0].scenario.runs["lazy"].parameterization.alpha == 2 and sweep.points[0].scenario.seed == 5
    from meanfield.sweeps.grid import parse_grid_options

    assert parse_grid_options(["runs.lazy.parameterization={preset: lazy, alpha: 2},ntk"]) == {
        "runs.lazy.parameterization": [{"preset": "lazy", "alpha": 2}, "ntk"]}
    cli = mf.load_sweep(path, overrides={"seed": 5}, axes=parse_grid_options(
        ["runs.lazy.parameterization={preset: lazy, alpha: 2},ntk"]))
    assert [p.scenario for p in cli.points] == [p.scenario for p in sweep.points]


def test_an_inherited_labelled_axis_is_subset_by_its_labels():
    full = {p.coords["runs.lazy.parameterization"]: p.scenario for p in mf.load_sweep("chizat_oyallon_bach").points
            if p.coords["seed"] == 1}
    sweep = mf.load_sweep("chizat_oyallon_bach", axes={"runs.lazy.parameterization": [10, 0.01, 1]})
    assert [p.coords["runs.lazy.parameterization"] for p in sweep.points] == [10, 10, 0.01, 0.01, 1, 1]
    assert [p.scenario for p in sweep.points if p.coords["seed"] == 1] == [full[10], full[0.01], full[1]]
    assert sweep.points[4].scenario.runs["lazy"].parameterization.alpha == 50
    result = CliRunner().invoke(main, ["sweep", "chizat_oyallon_bach", "--dry-run", "--grid",
                                       "runs.lazy.parameterization=0.01,1", "--grid", "seed=0"])
    assert result.exit_code == 0, result.output
    assert "2 point(s)" in result.output and "runs.lazy.parameterization: 0.01, 1" in result.output


@pytest.mark.parametrize("options, words", [
    (["--grid", "runs.lazy.parameterization=2"], ["runs.lazy.parameterization", "2 is not one of its labels",
                                                  "0.00631, 0.007943"]),
    (["--grid", "model.width=[1,2"], ["--grid model.width", "not a YAML list"]),
    (["--grid", "model.width"], ["--grid 'model.width'", "dotted.key=value1,value2"]),
    (["--grid", "model.width=abc"], ["(--grid model.width)", "integer"]),
    (["--grid", "model.widht=8"], ["model.widht", "width"]),
    (["--set", "train.t_end=-1"], ["--set train.t_end", "must be > 0"]),
    (["--grid", "seed=0", "--grid", "seed=1"], ["--grid seed", "given twice"]),
])
def test_bad_set_and_grid_values_are_one_error_line_naming_the_key(options, words):
    result = CliRunner().invoke(main, ["sweep", "chizat_oyallon_bach", "--dry-run", *options])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert all(word in lines[0] for word in words), lines[0]


# ------------------------------------------------------------------ item: how each point ended
@pytest.mark.slow
def test_the_table_says_how_each_point_ended_and_analyze_counts_the_unconverged(tmp_path):
    stop = {"reached": 10.0, "none": 0.0, "unreached": 1e-30}  # 10: below at once; 1e-30: never
    path = _sweep_file(tmp_path, {"model.width": [8, 16, 32], "train.stop_loss": stop})
    cli = CliRunner().invoke(main, ["sweep", str(path), "-o", str(tmp_path / "out"), "--workers", "1"])
    assert cli.exit_code == 0 and "3 complete point(s) ran to t_end with the loss above train.stop_loss" in cli.output
    result = mf.open_sweep(tmp_path / "out")
    table = result.table
    assert list(table["ended"]) == ["stop_loss", "t_end", "t_end"] * 3
    assert list(table["rich.ended"]) == list(table["lazy.ended"]) == ["stop_loss", "t_end", "t_end"] * 3
    assert list(table["stop_loss"]) == [10.0, 0.0, 1e-30] * 3
    assert (table["rich.t"][table["ended"] == "stop_loss"] < 0.4).all()
    analysis = mf.analyze(result, "displacement_w", against="model.width")
    assert analysis.unconverged == {"p0002": ["rich", "lazy"], "p0005": ["rich", "lazy"], "p0008": ["rich", "lazy"]}
    assert "did not converge: 3 of 9 points" in str(analysis) and "p0002: rich, lazy" in str(analysis)
    assert result.unconverged == analysis.unconverged
    cli = CliRunner().invoke(main, ["analyze", str(tmp_path / "out")])
    assert cli.exit_code == 0 and "did not converge: 3 of 9 points" in cli.output


@pytest.mark.slow
def test_analyze_says_nothing_of_convergence_where_no_stop_loss_was_asked(tmp_path):
    result = mf.sweep(BASE, grid={"model.width": [8, 16]}, output=tmp_path / "out", workers=1, threads=1)
    assert list(result.table["ended"]) == ["t_end", "t_end"] and list(result.table["stop_loss"]) == [0.0, 0.0]
    analysis = mf.analyze(result, "displacement_w", against="model.width")
    assert analysis.unconverged == {} and "converge" not in str(analysis)


def test_a_sweep_files_own_mistakes_suggest_and_its_base_reads_paths_from_it(tmp_path):
    """An unknown sweep key gets a close match; a base scenario file's data.path is read
    relative to that file, as a scenario's own is (not from the working directory)."""
    with pytest.raises(mf.UsageError, match=r"unknown key 'grids'; a sweep has: .*; did you mean 'grid'\?"):
        mf.load_sweep(_write_sweep(tmp_path, {"base": BASE, "grids": {"seed": [0]}}))
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    np.savez(data / "train.npz", X=rng.standard_normal((12, 3)), y=rng.standard_normal(12))
    scenario = {**BASE, "data": {"task": "file", "path": "train.npz"}}
    (data / "base.yaml").write_text(yaml.safe_dump(scenario))
    sweep = mf.load_sweep(_write_sweep(tmp_path, {"base": "data/base.yaml", "grid": {"seed": [0, 1]}}))
    assert {Path(p.scenario.data.path) for p in sweep.points} == {data / "train.npz"}
    inline = {**BASE, "data": {"task": "file", "path": "data/train.npz"}}
    sweep = mf.load_sweep(_write_sweep(tmp_path, {"base": inline, "grid": {"seed": [0]}}))
    assert Path(sweep.points[0].scenario.data.path) == data / "train.npz"


def _write_sweep(directory, content) -> Path:
    path = directory / "sweep.yaml"
    path.write_text(yaml.safe_dump(content))
    return path
