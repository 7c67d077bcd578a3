"""Progress: a tqdm bar on a terminal; in a batch log (stderr not a terminal) a plain line every
``interval`` seconds or at every tenth of the work, whichever comes first."""

import io
import os
import re
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import yaml

import meanfield as mf
from meanfield.engine import progress
from meanfield.engine.progress import INTERVAL, INTERVAL_VARIABLE, ModelTimeBar, PointsBar, duration, line_interval
from meanfield.errors import UsageError

RUN_LINE = re.compile(r"^(\w+): t = ([\d.e+-]+) / ([\d.e+-]+) \((\d+)%\), ([\d.e+-]+) steps/s, ETA (\S+)$")
POINTS_LINE = re.compile(r"^points: (\d+) / (\d+) \((\d+)%\), (\d+) failed, ETA (\S+)$")


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def drive_run(t_end, dt, seconds_per_step, interval, first_step=None):
    """The plain lines of a run of t_end / dt steps, each taking ``seconds_per_step`` on the clock
    (the first ``first_step`` seconds where given: compiling the kernels)."""
    clock, stream = FakeClock(), io.StringIO()
    steps = round(t_end / dt)
    with ModelTimeBar("rich", 0.0, t_end, stream=stream, clock=clock, interval=interval) as bar:
        for step in range(1, steps + 1):
            clock.now += first_step if step == 1 and first_step is not None else seconds_per_step
            bar.update_state(SimpleNamespace(t=min(step * dt, t_end), step=step))
    return stream.getvalue().splitlines()


def test_a_run_writes_a_line_at_each_tenth_of_model_time():
    lines = drive_run(t_end=10.0, dt=0.25, seconds_per_step=0.1, interval=INTERVAL)  # 4 s in all
    parsed = [RUN_LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [int(m[4]) for m in parsed] == list(range(10, 101, 10))
    for m in parsed:
        t = float(m[2])
        assert m[1] == "rich" and float(m[3]) == 10.0
        assert float(m[5]) == pytest.approx(10.0)  # a step every 0.1 s
        since_first_step = (t - 0.25) / 0.25 * 0.1
        assert m[6] == duration(since_first_step * (10.0 - t) / (t - 0.25))
    assert parsed[-1][6] == "0s"


def test_the_rate_and_eta_leave_out_the_first_step_which_compiles():
    # 30 s to compile in the first step, then 0.1 s a step: 40 steps, 3.9 s after the first
    lines = drive_run(t_end=10.0, dt=0.25, seconds_per_step=0.1, interval=1e9, first_step=30.0)  # at tenths
    parsed = [RUN_LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [int(m[4]) for m in parsed] == list(range(10, 101, 10))
    for m in parsed:
        t = float(m[2])
        assert float(m[5]) == pytest.approx(10.0)
        assert m[6] == duration((10.0 - t) / 0.25 * 0.1)  # the steps left at 0.1 s each
    assert parsed[0][6] == "4s"  # counting the compilation would say 4m33s


def test_until_a_second_step_has_ended_no_rate_and_eta_unknown():
    lines = drive_run(t_end=10.0, dt=0.25, seconds_per_step=0.1, interval=0.0, first_step=30.0)
    assert lines[0] == "rich: t = 0.25 / 10 (2%), ETA ?"
    assert RUN_LINE.match(lines[1]).group(5, 6) == ("10", "4s")


def test_the_bar_shows_the_rate_and_eta_after_the_first_step():
    clock = FakeClock()
    with ModelTimeBar("rich", 0.0, 10.0, stream=Terminal(), clock=clock) as bar:
        clock.now += 30.0
        bar.update_state(SimpleNamespace(t=0.25, step=1))
        assert bar.bar.postfix == "ETA ?"
        for step in range(2, 5):
            clock.now += 0.1
            bar.update_state(SimpleNamespace(t=0.25 * step, step=step))
        assert bar.bar.postfix == "10 steps/s, ETA 4s"


def test_a_slow_run_writes_a_line_every_interval_between_tenths():
    # 1 s a step, a tenth every 10 steps, the interval 2.5 s: lines after steps 3, 6, 9, 10, 13, ...
    lines = drive_run(t_end=1.0, dt=0.01, seconds_per_step=1.0, interval=2.5)
    steps = [round(float(RUN_LINE.match(line)[2]) / 0.01) for line in lines]
    assert steps == [s for tenth in range(10) for s in (10 * tenth + 3, 10 * tenth + 6, 10 * tenth + 9, 10 * tenth + 10)]


def test_an_interval_of_zero_writes_a_line_at_every_step():
    assert len(drive_run(t_end=1.0, dt=0.05, seconds_per_step=0.0, interval=0.0)) == 20


def test_a_resumed_run_counts_from_where_it_starts():
    clock, stream = FakeClock(), io.StringIO()
    with ModelTimeBar("lazy", 5.0, 10.0, stream=stream, clock=clock, interval=INTERVAL) as bar:
        for step in range(1, 11):  # t = 5.5, 6, ..., 10, a second a step
            clock.now += 1.0
            bar.update_state(SimpleNamespace(t=5.0 + 0.5 * step, step=100 + step))
    lines = [RUN_LINE.match(line) for line in stream.getvalue().splitlines()]
    assert [int(m[4]) for m in lines] == [60, 70, 80, 90, 100]  # no line for the half already done
    # the first at t = 6, after 2 s: a step a second, 4 of model time left at 0.5 a second
    assert float(lines[0][2]) == 6.0 and float(lines[0][5]) == pytest.approx(1.0) and lines[0][6] == "8s"


def test_on_a_terminal_a_bar_and_no_plain_lines():
    stream = Terminal()
    with ModelTimeBar("rich", 0.0, 1.0, stream=stream, interval=0.0) as bar:
        assert bar.bar is not None and bar.lines is None
        bar.update_state(SimpleNamespace(t=1.0, step=1))
    assert "rich: t = 1 / 1 |" in stream.getvalue()
    assert not any(RUN_LINE.match(line) for line in stream.getvalue().splitlines())


def test_disabled_writes_nothing():
    stream = io.StringIO()
    with ModelTimeBar("rich", 0.0, 1.0, enabled=False, stream=stream, interval=0.0) as bar:
        bar.update_state(SimpleNamespace(t=1.0, step=1))
    assert stream.getvalue() == ""


def drive_points(total, seconds_per_point, interval, failing=()):
    clock, stream = FakeClock(), io.StringIO()
    with PointsBar(total, enabled=True, log=None, stream=stream, clock=clock, interval=interval) as bar:
        for index in range(total):
            clock.now += seconds_per_point
            status = "failed" if index in failing else "complete"
            point = SimpleNamespace(id=f"p{index:04d}", coords={"seed": index})
            bar.update(point, {"status": status, "seconds": seconds_per_point, "reason": "it diverged"})
    return stream.getvalue().splitlines()


def test_a_sweep_writes_done_total_failed_and_eta():
    lines = drive_points(20, seconds_per_point=1.0, interval=INTERVAL, failing=(3, 7))
    progress = [POINTS_LINE.match(line) for line in lines if POINTS_LINE.match(line)]
    assert [int(m[1]) for m in progress] == list(range(2, 21, 2))  # a tenth every 2 points
    assert all(int(m[2]) == 20 for m in progress)
    assert [int(m[4]) for m in progress] == [0, 1, 1, 2, 2, 2, 2, 2, 2, 2]
    for m in progress:  # a point a second
        assert m[5] == duration(20 - int(m[1]))
    failures = [line for line in lines if not POINTS_LINE.match(line)]
    assert failures == ["p0003 failed (1.0 s): seed=3: it diverged", "p0007 failed (1.0 s): seed=7: it diverged"]


def test_slow_points_write_a_line_every_interval_between_tenths():
    # 1 s a point, a tenth every 10 points, the interval 4 s: lines after points 4, 8, 10, 14, ...
    lines = drive_points(100, seconds_per_point=1.0, interval=4.0)
    done = [int(POINTS_LINE.match(line)[1]) for line in lines]
    assert done == [p for tenth in range(10) for p in (10 * tenth + 4, 10 * tenth + 8, 10 * tenth + 10)]


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(INTERVAL_VARIABLE, raising=False)
    assert line_interval() == INTERVAL
    monkeypatch.setenv(INTERVAL_VARIABLE, "0.5")
    assert line_interval() == 0.5
    for bad in ("soon", "-1"):
        monkeypatch.setenv(INTERVAL_VARIABLE, bad)
        with pytest.raises(UsageError, match=INTERVAL_VARIABLE):
            line_interval()


def test_durations_read_as_a_person_writes_them():
    assert [duration(s) for s in (0.2, 45, 185, 7440)] == ["0s", "45s", "3m05s", "2h04m"]
    assert duration(None) == "?" and duration(float("inf")) == "?"


TINY = textwrap.dedent(
    """\
    name: tiny
    seed: 3
    data: {task: teacher_student, dim: 3, n_train: 40, n_test: 30, teacher: {width: 2}}
    model: {width: 16, activation: tanh}
    runs: {rich: mean_field, lazy: {parameterization: {preset: lazy, alpha: 10}}}
    train: {t_end: 2.0, integrator: {method: rk4, dt: 0.05}}
    record: {every: 0.5}
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("quiet", [False, True])
def test_simulate_with_stderr_piped_writes_plain_progress_lines(tmp_path, quiet):
    (tmp_path / "tiny.yaml").write_text(TINY)
    command = [sys.executable, "-m", "meanfield.cli", *(["-q"] if quiet else []), "simulate",
               str(tmp_path / "tiny.yaml"), "-o", str(tmp_path / "tiny.h5")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, INTERVAL_VARIABLE: "1e9"})  # lines at the tenths only
    assert done.returncode == 0, done.stderr
    lines = [RUN_LINE.match(line) for line in done.stderr.splitlines() if RUN_LINE.match(line)]
    if quiet:
        assert lines == []
        return
    for run in ("rich", "lazy"):
        mine = [m for m in lines if m[1] == run]
        assert [int(m[4]) for m in mine] == list(range(10, 101, 10)), done.stderr
        assert float(mine[-1][2]) == 2.0 and mine[-1][6] == "0s"


# ----------------------------------------------------------------------------- where progress shows by default
class ZMQInteractiveShell:
    """What get_ipython() returns in a Jupyter kernel."""

    config = {"IPKernelApp": {"connection_file": "kernel.json"}}


class TerminalInteractiveShell:
    """What get_ipython() returns in IPython in a terminal."""

    config = {"TerminalIPythonApp": {}}


@pytest.fixture
def environment(monkeypatch):
    """Set where this process seems to run: ``environment(shell, prompt)``."""
    def set_to(shell=None, prompt=False):
        monkeypatch.setitem(sys.modules, "IPython", SimpleNamespace(get_ipython=lambda: shell))
        if prompt:
            monkeypatch.setattr(sys, "ps1", ">>> ", raising=False)
        else:
            monkeypatch.delattr(sys, "ps1", raising=False)
    return set_to


def test_a_jupyter_kernel_a_prompt_and_a_script_are_told_apart(environment):
    sessions = {}
    for label, shell, prompt in (("jupyter", ZMQInteractiveShell(), False),
                                 ("ipython", TerminalInteractiveShell(), False),
                                 ("kernel of another name", SimpleNamespace(config={"IPKernelApp": {}}), False),
                                 ("python prompt", None, True), ("script", None, False)):
        environment(shell, prompt)
        sessions[label] = (progress.session(), progress.wanted(None), progress.wanted(False), progress.wanted(True))
    assert sessions == {"jupyter": ("notebook", True, False, True), "ipython": ("interactive", True, False, True),
                        "kernel of another name": ("notebook", True, False, True),
                        "python prompt": ("interactive", True, False, True), "script": ("script", False, False, True)}


class NotebookBars:
    """Stands in for progress.notebook_bar: a real tqdm bar, into a buffer, and what it was asked."""

    def __init__(self):
        self.made, self.buffer = [], io.StringIO()

    def __call__(self, **options):
        self.made.append(options)
        return progress.tqdm(file=self.buffer, **options)


def test_in_a_notebook_a_run_draws_a_notebook_bar_and_nothing_on_stderr(environment, monkeypatch, capsys):
    environment(ZMQInteractiveShell())
    bars = NotebookBars()
    monkeypatch.setattr(progress, "notebook_bar", bars)
    with ModelTimeBar("rich", 0.0, 1.0, interval=0.0) as bar:
        assert bar.lines is None
        bar.update_state(SimpleNamespace(t=1.0, step=1))
    assert [(made["desc"], made["total"]) for made in bars.made] == [("rich", 1.0)]
    assert "rich: t = 1 / 1 |" in bars.buffer.getvalue() and capsys.readouterr().err == ""
    with ModelTimeBar("lazy", 0.0, 1.0, stream=io.StringIO(), interval=0.0) as bar:  # a stream given: as told
        assert bar.lines is not None and len(bars.made) == 1


def test_without_ipywidgets_a_notebook_bar_is_text_on_stderr(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import ipywidgets raises ImportError
    bar = progress.notebook_bar(total=2, desc="rich")
    bar.update(2)
    bar.close()
    assert type(bar) is progress.tqdm and "rich: 100%" in capsys.readouterr().err


def test_simulate_shows_progress_by_default_where_someone_watches(environment, monkeypatch, capsys):
    bars = NotebookBars()
    monkeypatch.setattr(progress, "notebook_bar", bars)
    scenario = mf.load_scenario(yaml.safe_load(TINY))
    environment(ZMQInteractiveShell())
    mf.simulate(scenario).close()
    assert [made["desc"] for made in bars.made] == ["rich", "lazy"]
    assert "rich: t = 2 / 2 |" in bars.buffer.getvalue() and "lazy: t = 2 / 2 |" in bars.buffer.getvalue()
    mf.simulate(scenario, progress=False).close()
    environment(None)  # a script
    mf.simulate(scenario).close()
    assert len(bars.made) == 2 and capsys.readouterr().err == ""
