"""Sweeps as a user meets them (issue 19): a script without a ``__main__`` guard, a sweep
whose every point fails, ``--set`` and ``--grid`` on the command line, and how each point ended."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import yaml
from click.testing import CliRunner

import meanfield as mf
from meanfield.cli import main
from meanfield.errors import SweepFailed

BASE = {
    "name": "tiny",
    "seed": 3,
    "data": {"task": "teacher_student", "dim": 2, "n_train": 16, "n_test": 16},
    "model": {"width": 8, "activation": "relu"},
    "runs": {"rich": "mean_field", "lazy": {"parameterization": {"preset": "lazy", "alpha": 10}}},
    "train": {"t_end": 0.4, "integrator": {"method": "euler", "dt": 0.05}},
    "record": {"every": 0.2},
}

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
def test_a_script_without_a_main_guard_stops_with_how_to_fix_it(tmp_path):
    done = _run_script(tmp_path, guarded=False)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("meanfield.errors.UsageError: every point of the sweep failed"), done.stderr[-3000:]
    assert "BrokenProcessPool" in last and 'if __name__ == "__main__":' in last and "sweep_script.py" in last


def test_the_same_script_with_the_guard_runs_its_sweep(tmp_path):
    done = _run_script(tmp_path, guarded=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rows: 2 complete: 2" in done.stdout


def test_a_sweep_whose_every_point_fails_raises_with_the_first_reasons(tmp_path):
    with pytest.raises(SweepFailed, match=r"every point of the sweep failed \(2 of 2\): p0000: ") as caught:
        mf.sweep(BASE, grid={"runs.rich.parameterization.lr": [1e9, 1e10]}, output=tmp_path / "out", workers=1,
                 threads=1)
    assert caught.value.result.failed == 2 and "p0001" in str(caught.value)
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({"base": BASE, "grid": {"runs.rich.parameterization.lr": [1e9]}}))
    result = CliRunner().invoke(main, ["-q", "sweep", str(spec), "-o", str(tmp_path / "cli"), "--workers", "1"])
    assert result.exit_code == 1 and "Error: every point of the sweep failed (1 of 1): p0000" in result.output
