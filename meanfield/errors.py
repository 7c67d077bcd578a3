"""Errors the command line turns into one clear message.

`UsageError` is everything the user can fix by changing what they passed (a scenario key,
a path, an override): the CLI prints its message and exits with status 2. `RunFailed`
is a run that started and could not go on (it diverged): the file is left valid and
marked failed, and the CLI exits with status 1. `SweepFailed` is a sweep whose every point
failed (exit status 1 too).
"""

import os
import sys
from pathlib import Path


class UsageError(Exception):
    """Bad input: a scenario key, a value, a file. Exit status 2, no traceback."""


def as_path(value, what: str) -> Path:
    """``value`` as a Path, or a :class:`UsageError` saying that ``what`` must be a path."""
    if isinstance(value, (str, os.PathLike)):
        return Path(value)
    raise UsageError(f"{what}: give a file path (a str or pathlib.Path), not {type(value).__name__} {value!r}")


class RunFailed(Exception):
    """A run stopped early (non-finite values). The trajectory file stays valid: it is the
    ``trajectory`` attribute (a :class:`meanfield.Trajectory`), every run in it, the failed
    ones marked so."""

    def __init__(self, message: str, trajectory=None):
        super().__init__(message)
        self.trajectory = trajectory


class SweepFailed(Exception):
    """Every point of a sweep that ran failed: nothing came of it. The reasons of the first
    points are in the message; ``result`` is the :class:`meanfield.SweepResult` (its table
    holds every point's reason). The CLI exits with status 1."""

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


class Interrupted(KeyboardInterrupt):
    """A stop (SIGINT, SIGTERM) honoured at a safe point of a run. ``wrote`` says whether
    the run had its output file open by then (marked 'interrupted', resumable) or had not
    yet written it (nothing to resume: run the command again)."""

    def __init__(self, wrote: bool = True):
        super().__init__()
        self.wrote = wrote


_STOP = {"requested": False}


def stop_on_sigterm(signum=None, frame=None):
    """A SIGTERM handler: stop the way Ctrl-C does (KeyboardInterrupt), and remember that a
    stop was asked for. Raised inside an import, the interrupt reaches the run as an
    ImportError ("initialization failed"); :func:`stop_requested` lets the run take that
    error for the stop it is (its file marked interrupted and resumable, not failed)."""
    _STOP["requested"] = True
    raise KeyboardInterrupt


SECOND_STOP = ("second stop: exiting at once (an output file that exists continues with --resume; "
               "without one, run the command again)")
"""What a second SIGINT or SIGTERM says before the process exits with status 130."""


def note_stop(signum=None, frame=None):
    """A SIGINT and SIGTERM handler that only remembers the stop: nothing is raised where the
    interpreter happens to be (a weakref finaliser would swallow it); the run honours it at
    its next safe point (:func:`honour_stop`).

    A second stop before that point (a first one met a long compilation or start-up) ends the
    process at once, as a SIGKILL would (exit status 130): a trajectory file survives a kill at
    any moment (docs/design.md §4.5), so it continues with ``--resume``."""
    if _STOP["requested"]:
        sys.stderr.write(SECOND_STOP + "\n")
        sys.stderr.flush()
        os._exit(130)
    _STOP["requested"] = True


COMMAND = "meanfield"
"""The console script's name: the process whose start-up :func:`stop_early` guards."""


def stop_early() -> dict:
    """In the ``meanfield`` command's process only (its argv[0]), before the slow imports of
    the package: SIGINT and SIGTERM noted (:func:`note_stop`) from the first moment, so a stop
    during start-up is honoured (the command line says what it left) instead of Python's
    traceback or a silent death. A library import changes no handler. Returns the replaced
    handlers (:func:`restore_handlers`)."""
    if not sys.argv or os.path.basename(sys.argv[0]) not in (COMMAND, COMMAND + "-script.py", COMMAND + ".exe"):
        return {}
    _ORIGINAL.update(defer_stops())
    return dict(_ORIGINAL)


def end_early_stops() -> bool:
    """The handlers :func:`stop_early` replaced put back (a command that does not defer its
    stops: Ctrl-C is Python's again); returns whether a stop came before, and forgets it."""
    came = stop_requested()
    restore_handlers(_ORIGINAL)
    _ORIGINAL.clear()
    forget_stops()
    return came


def stop_requested() -> bool:
    """Whether a stop was asked for since :func:`expect_stops` (or :func:`defer_stops`)."""
    return _STOP["requested"]


def honour_stop(wrote: bool = True) -> None:
    """At a safe point: raise :class:`Interrupted` if a stop was asked for."""
    if _STOP["requested"]:
        raise Interrupted(wrote)


def expect_stops():
    """Install :func:`stop_on_sigterm` for SIGTERM, no stop requested yet; return the previous handler."""
    import signal

    forget_stops()
    return signal.signal(signal.SIGTERM, stop_on_sigterm)


_ORIGINAL: dict = {}  # the handlers before stop_early's, what a command gives back at its end


def defer_stops() -> dict:
    """Install :func:`note_stop` for SIGINT and SIGTERM (those not ignored), keeping a stop noted
    since :func:`stop_early`; return the handlers it replaced (Python's, not an earlier
    note_stop of :func:`stop_early`), for :func:`restore_handlers`."""
    import signal

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is signal.SIG_IGN:  # an ignored signal (nohup, a shell's `&`) stays so
            continue
        before = signal.signal(signum, note_stop)
        previous[signum] = _ORIGINAL.get(signum, before) if before is note_stop else before
    return previous


def restore_handlers(previous: dict) -> None:
    """Put back the handlers :func:`defer_stops` replaced."""
    import signal

    for signum, handler in previous.items():
        signal.signal(signum, handler)


def forget_stops() -> None:
    """No stop requested (after one was handled: later errors in this process are errors)."""
    _STOP["requested"] = False
