"""Progress: a notebook bar in Jupyter; on stderr a tqdm bar on a terminal, and elsewhere (a
batch job's log) plain lines.

A plain line is written when ``interval`` seconds have passed since the last one, or when
the work done enters a new tenth, whichever comes first (and so at the end):

    rich: t = 2.5 / 10 (25%), 412 steps/s, ETA 3m05s
    points: 3 / 12 (25%), 1 failed, ETA 2m10s

The interval is 10 s, or $MEANFIELD_PROGRESS_INTERVAL seconds when it is set (0: a line at
every step). Time is read from one clock, ``time.monotonic`` unless one is given.

A run's steps/s and ETA are measured from the end of its first step: that step compiles the
numerical kernels (seconds, where the run itself may take a few), so until a second step
has ended the line says ``ETA ?`` and no rate.

Where nobody said whether to show progress, :func:`wanted` decides: yes in a Jupyter
notebook and at an interactive prompt (IPython, ``python -i``), no in a script.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Callable, Optional, Sequence

from tqdm import tqdm

from ..errors import UsageError

INTERVAL = 10.0
INTERVAL_VARIABLE = "MEANFIELD_PROGRESS_INTERVAL"
TENTH = 0.1
"""A line at least at every tenth of the work (of model time, of the points)."""


def line_interval() -> float:
    """Seconds between plain lines: $MEANFIELD_PROGRESS_INTERVAL when set, else INTERVAL."""
    value = os.environ.get(INTERVAL_VARIABLE, "").strip()
    if not value:
        return INTERVAL
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not seconds >= 0:
        raise UsageError(f"${INTERVAL_VARIABLE} = {value!r}: give the seconds between progress lines, e.g. 10")
    return seconds


def duration(seconds: Optional[float]) -> str:
    """A duration as '45s', '3m05s' or '2h04m'; '?' when it is not known."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def session() -> str:
    """Where this process runs: 'notebook' (a Jupyter kernel), 'interactive' (an IPython
    shell in a terminal, ``python -i``, the Python prompt) or 'script'."""
    shell = _ipython_shell()
    if shell is not None:
        config = getattr(shell, "config", None) or {}
        kernel = type(shell).__name__ == "ZMQInteractiveShell" or "IPKernelApp" in config
        return "notebook" if kernel else "interactive"
    return "interactive" if hasattr(sys, "ps1") or sys.flags.interactive else "script"


def _ipython_shell():
    """The running IPython shell, or None (IPython is only looked at if it is already imported)."""
    get_ipython = getattr(sys.modules.get("IPython"), "get_ipython", None)
    try:
        return get_ipython() if get_ipython is not None else None
    except Exception:  # an IPython half torn down: not a shell to draw in
        return None


def wanted(progress: Optional[bool]) -> bool:
    """Whether to show progress: ``progress`` when given, else in a notebook or at a prompt."""
    return session() != "script" if progress is None else bool(progress)


def notebook_bar(**options):
    """A bar in a Jupyter notebook: tqdm's widget where ipywidgets is installed, else tqdm's
    text bar on stderr (the notebook draws its carriage returns in place)."""
    try:
        import ipywidgets  # noqa: F401
        from tqdm.notebook import tqdm as widget
    except ImportError:
        return tqdm(file=sys.stderr, **options)
    return widget(**options)


def open_bar(stream, **options):
    """A tqdm bar where one is drawn, else None (plain lines): a notebook bar in a Jupyter
    kernel when no ``stream`` is given, a text bar when ``stream`` (default stderr) is a terminal."""
    if stream is None and session() == "notebook":
        return notebook_bar(**options)
    stream = stream or sys.stderr
    return tqdm(file=stream, **options) if stream.isatty() else None


def status_line(label: str, done: str, fraction: float, details: Sequence[str], eta: Optional[float]) -> str:
    """The one format of a plain progress line: 'label: done (pct%), detail, ..., ETA 3m05s'."""
    return ", ".join([f"{label}: {done} ({100 * fraction:.0f}%)", *details, f"ETA {duration(eta)}"])


class Lines:
    """When plain lines are due, and writing them: ``due(fraction)`` is true once ``interval``
    seconds of ``clock`` have passed since the last line, or when ``fraction`` (of the work,
    in [0, 1]) has entered a tenth beyond the last line's, or at fraction 1."""

    def __init__(self, stream, clock: Callable[[], float], interval: float, fraction: float = 0.0):
        self.stream, self.clock, self.interval = stream, clock, interval
        self.start = self.last = clock()
        self.tenth = self._tenth(fraction)

    @staticmethod
    def _tenth(fraction: float) -> int:
        return int(math.floor(fraction / TENTH + 1e-9))

    def due(self, fraction: float) -> bool:
        return (fraction >= 1 or self.clock() - self.last >= self.interval
                or self._tenth(fraction) > self.tenth)

    def write(self, line: str, fraction: float) -> None:
        print(line, file=self.stream, flush=True)
        self.last, self.tenth = self.clock(), self._tenth(fraction)

    def eta(self, done: float, left: float) -> Optional[float]:
        """The time ``left`` (in units of ``done``) takes at the rate so far: elapsed * left / done."""
        return (self.clock() - self.start) * left / done if done > 0 else None


class Rate:
    """Steps/s and the ETA of a run, measured from the end of its first step (which compiles
    the kernels): None until a later step has ended."""

    def __init__(self, clock: Callable[[], float], t_end: float):
        self.clock, self.t_end = clock, t_end
        self.start = None  # (clock, t, step) at the end of the first step

    def update(self, t: float, step: int) -> None:
        if self.start is None:
            self.start = (self.clock(), t, step)

    def steps_per_second(self, step: int) -> Optional[float]:
        if self.start is None:
            return None
        elapsed = self.clock() - self.start[0]
        return (step - self.start[2]) / elapsed if elapsed > 0 and step > self.start[2] else None

    def eta(self, t: float) -> Optional[float]:
        """Seconds to t_end at the pace since the first step (0 once there)."""
        if t >= self.t_end:
            return 0.0
        if self.start is None or t <= self.start[1]:
            return None
        return (self.clock() - self.start[0]) * (self.t_end - t) / (t - self.start[1])

    def details(self, step: int) -> list[str]:
        """['412 steps/s'], or [] before the pace is known."""
        rate = self.steps_per_second(step)
        return [f"{rate:.3g} steps/s"] if rate is not None else []


class ModelTimeBar:
    """Progress over model time [t0, t_end] for one run; ``update_state`` after each step.

    In a Jupyter notebook a notebook bar, on a terminal a tqdm bar, elsewhere plain lines (run
    name, t / t_end, percent, steps/s, ETA) as the module says; steps/s and ETA leave the
    first step (compilation) out. ``stream`` (default stderr), ``clock`` and ``interval``
    (default :func:`line_interval`) are there for tests.
    """

    BAR_FORMAT = "{desc}: t = {n:.4g} / {total:.4g} |{bar}| [{elapsed}{postfix}]"

    def __init__(self, name: str, t0: float, t_end: float, enabled: bool = True, *, stream=None,
                 clock: Callable[[], float] = time.monotonic, interval: Optional[float] = None):
        self.name, self.t0, self.t_end, self.enabled = name, t0, t_end, enabled
        self.stream, self.clock, self.interval = stream, clock, interval
        self.bar = self.lines = None
        self.rate = Rate(clock, t_end)

    def __enter__(self):
        if not self.enabled:
            return self
        self.bar = open_bar(self.stream, total=self.t_end, initial=self.t0, desc=self.name, leave=True,
                            bar_format=self.BAR_FORMAT, mininterval=0.25)
        if self.bar is None:
            interval = line_interval() if self.interval is None else self.interval
            self.lines = Lines(self.stream or sys.stderr, self.clock, interval, self.t0 / self.t_end)
        return self

    def update_state(self, state) -> None:
        if self.bar is None and self.lines is None:
            return
        self.rate.update(state.t, state.step)
        if self.bar is not None:
            postfix = ", ".join([*self.rate.details(state.step), f"ETA {duration(self.rate.eta(state.t))}"])
            self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.update(state.t - self.bar.n)
        elif self.lines.due(state.t / self.t_end):
            self.lines.write(self.line(state), state.t / self.t_end)

    def line(self, state) -> str:
        """The plain line at ``state``: run name, t / t_end, percent, steps/s, ETA."""
        return status_line(self.name, f"t = {state.t:.4g} / {self.t_end:.4g}", state.t / self.t_end,
                           self.rate.details(state.step), self.rate.eta(state.t))

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        return False


def progress_factory(enabled: bool):
    """What ``simulation.simulate`` calls per run: ``factory(name, t0, t_end) -> ModelTimeBar``."""
    return lambda name, t0, t_end: ModelTimeBar(name, t0, t_end, enabled)


class PointsBar:
    """Progress across the points of a sweep.

    In a notebook a notebook bar, on a terminal a tqdm bar (a failed point's message above
    it); elsewhere plain lines
    (points done / total, failed, ETA) as the module says, and a failed point's message at
    once. Not ``enabled``: a ``log`` line per point.
    """

    def __init__(self, total: int, enabled: bool, log, *, stream=None,
                 clock: Callable[[], float] = time.monotonic, interval: Optional[float] = None):
        self.total, self.enabled, self.log = total, enabled, log
        self.stream, self.clock, self.interval = stream, clock, interval
        self.bar = self.lines = None
        self.count = self.failed = 0

    def __enter__(self):
        if not self.enabled:
            return self
        self.bar = open_bar(self.stream, total=self.total, desc="points", unit="pt")
        if self.bar is None:
            self.lines = Lines(self.stream or sys.stderr, self.clock,
                               line_interval() if self.interval is None else self.interval)
        return self

    def update(self, point, row) -> None:
        self.count += 1
        failed = row["status"] != "complete"
        self.failed += failed
        coords = ", ".join(f"{key}={value}" for key, value in point.coords.items())
        message = f"{point.id} {row['status']} ({row['seconds']:.1f} s): {coords}"
        if failed:
            message += f": {row['reason']}"
        if self.bar is not None:
            self.bar.update()
            if failed:
                self.bar.write(message, file=self.stream or sys.stderr)  # above the bar (a notebook: below it)
        elif self.lines is not None:
            if failed:
                print(message, file=self.lines.stream, flush=True)
            fraction = self.count / self.total if self.total else 1.0
            if self.lines.due(fraction):
                self.lines.write(self.line(), fraction)
        else:
            self.log(f"[{self.count}] {message}")

    def line(self) -> str:
        """The plain line now: points done / total, failed, ETA."""
        fraction = self.count / self.total if self.total else 1.0
        return status_line("points", f"{self.count} / {self.total}", fraction, [f"{self.failed} failed"],
                           self.lines.eta(self.count, self.total - self.count))

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        return False
