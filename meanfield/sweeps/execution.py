"""Running a sweep's points, and what they leave: the results table.

Points run through any ``concurrent.futures.Executor``: a local process pool by default,
Dask distributed (``Client(address).get_executor()``, or a ``LocalCluster``) for
clusters. The worker that runs a point is the only writer of its file
``DIR/points/<id>.h5``; each worker sets its Numba (and BLAS) thread count before it
computes: the count fixed by ``threads``, else its share of the cores, ``cpus // workers``,
within which each run chooses by measurement (docs/design.md §6.4). The main process writes
``DIR/results.csv`` and ``DIR/results.h5`` (see
:mod:`meanfield.sweeps.table`) after every finished point. A point that fails is recorded with
its reason and the others go on; ``resume`` re-runs only the points whose file is not
complete (an interrupted point continues from its checkpoint).

This module imports no Numba at import time: a worker process sets its thread count
before the numerical core is loaded.
"""

from __future__ import annotations

import ast
import contextlib
import json
import math
import multiprocessing
import os
import sys
import time
from collections import Counter
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..engine import memory
from ..engine.memory import size_text
from ..engine.threads import THREAD_VARIABLES, apply, at_most, fixed_count, using
from ..errors import SweepFailed, UsageError, as_path, expect_stops, stop_requested
from ..messages import did_you_mean
from ..storage import WriterLock, open_trajectory
from ..storage.ownership import lock_path
from .grid import POINTS_DIR, SWEEP_COPY, Point, Sweep
from .table import Table, python_scalar, read_table, write_table


# ---------------------------------------------------------------------- one point
@dataclass(frozen=True)
class Task:
    """What a worker needs for one point (plain data: it travels to other processes)."""

    point: str
    scenario_yaml: str
    output: str
    threads: Optional[int]
    """The fixed thread count, or None: each run chooses by measurement, up to ``share``."""
    share: int = 1
    """The worker's share of the cores (``cpus // workers``): the most a run's governor takes."""


@dataclass
class PointResult:
    """What a worker sends back: the point's status, why it failed, its wall time and final measures."""

    point: str
    status: str
    reason: str = ""
    seconds: float = math.nan
    measures: dict = field(default_factory=dict)


def run_point(task: Task) -> PointResult:
    """Run one point into its own file (continuing it when the file holds an unfinished run),
    on the point's threads (fixed, or chosen by measurement within the worker's share).

    Never raises for a point that fails: the failure is the outcome, so the sweep goes on.
    """
    with using(task.threads), at_most(task.share):
        return _run_point(task)


def _run_point(task: Task) -> PointResult:
    from ..errors import RunFailed

    start = time.perf_counter()
    status, reason = "complete", ""
    try:
        from ..config.loading import parse_scenario
        from ..engine.driver import simulate  # the numerical core: a stop may come while it loads

        scenario = parse_scenario(task.scenario_yaml, source=task.point)
        resume = _resumable(task.output)
        if not resume and Path(task.output).exists():
            os.remove(task.output)  # an unreadable remnant of a killed worker
        try:
            simulate(scenario, task.output, resume=resume)[0].close()
        except OSError:
            if not resume:
                raise
            # a killed worker's file whose header reads but whose last chunks do not
            # (HDF5 "filter returned failure during read"): start the point again
            os.remove(task.output)
            simulate(scenario, task.output)[0].close()
        measures = final_measures(task.output)
    except KeyboardInterrupt:
        if _POOL_WORKER:  # the sweep is stopping: the file is closed and marked interrupted
            os._exit(130)
        raise
    except RunFailed as exc:
        status, reason = "failed", str(exc)
    except Exception as exc:  # noqa: BLE001 - any error of one point is that point's outcome
        if _POOL_WORKER and stop_requested():  # the stop, cut into an import (ImportError): not the point's fault
            os._exit(130)
        status, reason = "failed", f"{type(exc).__name__}: {exc}"
    if status != "complete":
        try:
            measures = final_measures(task.output)
        except Exception:  # noqa: BLE001 - a failed point's file may hold nothing readable
            measures = {}
    return PointResult(task.point, status, reason, time.perf_counter() - start, measures)


_POOL_WORKER = False


def _init_pool_worker(threads: int) -> None:
    """A local pool worker: its thread counts, and SIGTERM stops it the way Ctrl-C does."""
    global _POOL_WORKER
    _POOL_WORKER = True
    apply(threads)
    expect_stops()


def _resumable(output: str) -> bool:
    """True if ``output`` is a trajectory file of ours that a resume can continue."""
    if not Path(output).exists():
        return False
    try:
        with open_trajectory(output) as trajectory:
            trajectory.runs
        return True
    except (UsageError, OSError, KeyError):
        return False


def _done_before(directory: Path, point: Point, resume: bool) -> bool:
    """A point that ``resume`` skips: its file is complete."""
    return resume and point_status(directory / point.file) == "complete"


def point_status(output: str | Path) -> str:
    """``complete`` if every run of the file is complete, else ``missing`` or ``unfinished``."""
    if not Path(output).exists():
        return "missing"
    try:
        with open_trajectory(output) as trajectory:
            return "complete" if trajectory.complete else "unfinished"
    except (UsageError, OSError, KeyError):
        return "unfinished"


def final_measures(output: str | Path) -> dict[str, Any]:
    """``<run>.<measure>``: the last value of every scalar measure of every run in the file,
    with ``<run>.t`` (the time reached), ``<run>.status``, ``<run>.ended`` (how a complete run
    ended: 't_end' or 'stop_loss') and the run's predicted regime numbers."""
    out: dict[str, Any] = {}
    try:
        trajectory = open_trajectory(output)
    except (UsageError, OSError):
        return out
    with trajectory:
        for run in trajectory:
            out[f"{run.name}.t"] = run.t
            out.update({f"{run.name}.{k}": v for k, v in run.final().items()})
            out[f"{run.name}.status"] = run.status.split(":")[0]
            out[f"{run.name}.ended"] = run.ended or ""  # t_end | stop_loss; '' if not complete
            for attr in PREDICTED:
                if attr in run.attrs:
                    out[f"{run.name}.{attr}"] = python_scalar(run.attrs[attr])
    return out


PREDICTED = ("predicted_regime", "predicted_r", "predicted_kappa", "predicted_gamma", "predicted_gamma_prime",
             "predicted_luo_phase")


# ------------------------------------------------------------------------- the engine
@dataclass
class SweepResult:
    """A sweep directory and how its last run went: ``ran`` points run now, ``skipped``
    already complete, ``failed``, ``seconds`` of wall time, ``interrupted``. The results
    are read from the directory: ``table`` (pandas), :meth:`to_xarray`, :meth:`trajectory`."""

    directory: Path
    ran: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = math.nan
    interrupted: bool = False

    @classmethod
    def open(cls, directory) -> SweepResult:
        """The result of a sweep directory written earlier (its counts unknown: zeros)."""
        directory = as_path(directory, "open a sweep")
        read_table(directory)  # a clear error if it holds no sweep
        return cls(directory)

    @property
    def table(self):
        """The results table as a ``pandas.DataFrame``: one row per point, its grid
        coordinates, seed, status, and every run's final measures as ``<run>.<measure>``."""
        import pandas as pd

        return pd.DataFrame(read_table(self.directory).columns)

    def to_xarray(self):
        """The sweep as an ``xarray.Dataset`` with one dimension per grid axis (see
        :func:`meanfield.analysis.to_dataset`)."""
        from ..analysis import to_dataset

        return to_dataset(self.directory)

    @property
    def unconverged(self) -> dict[str, list[str]]:
        """point -> its runs that ran to t_end with the loss above ``train.stop_loss > 0``."""
        from ..analysis.convergence import unconverged

        return unconverged(read_table(self.directory))

    def trajectory(self, point: str):
        """The trajectory file of one point (``"p0003"``), open for reading."""
        points = sorted(path.stem for path in (self.directory / POINTS_DIR).glob("*.h5"))
        if not isinstance(point, str) or point not in points:
            listed = f"{points[0]} .. {points[-1]}, {len(points)} in all" if len(points) > 2 else ", ".join(points)
            raise UsageError(f"sweep {self.directory} has no point {point!r} (points: {listed or 'none yet'}; a point "
                             f"is named by its id, the table's 'point' column){did_you_mean(point, points)}")
        return open_trajectory(self.directory / POINTS_DIR / f"{point}.h5")

    def __repr__(self) -> str:
        return (f"<meanfield.SweepResult {self.directory}: {self.ran} run, {self.skipped} already complete, "
                f"{self.failed} failed{', interrupted' if self.interrupted else ''}>")


def run_sweep(
    sweep: Sweep,
    directory: str | Path,
    *,
    executor: Optional[Executor] = None,
    workers: Optional[int] = None,
    threads: Optional[int] = None,
    resume: bool = False,
    on_point: Callable[[Point, dict], None] = lambda point, row: None,
) -> SweepResult:
    """Run every point of ``sweep`` into ``directory`` and return the results table.

    ``executor``: any ``concurrent.futures.Executor`` (e.g. a Dask client's); by default a
    local process pool of ``workers`` processes (default: the CPU count), each with
    ``threads`` Numba threads (default: the process's fixed count, :func:`meanfield.set_threads`
    or ``MEANFIELD_THREADS``, else each run chooses by measurement between one thread and
    the worker's share ``cpus // workers``: one worker per core runs on one thread). The bits
    do not depend on the count (docs/design.md §6.4). ``on_point`` is called in this
    process after each point with the point and its table row.
    """
    directory = Path(directory)
    if executor is None:  # a local pool: its workers share this machine's memory
        pending = [p for p in sweep.points if not _done_before(directory, p, resume)]
        check_memory(pending, _local_workers(workers, len(pending)))
    _claim_directory(directory, sweep, resume)
    with WriterLock(directory / "sweep"):  # one sweep process per directory
        (directory / POINTS_DIR).mkdir(exist_ok=True)
        rows = _previous_rows(directory) if resume else {}
        todo, done = [], {}
        for point in sweep.points:
            output = directory / point.file
            if _done_before(directory, point, resume):
                previous = rows.get(point.id, {})
                done[point.id] = _row(point, PointResult(point.id, "complete", "", previous.get("seconds", math.nan),
                                                         final_measures(output)))
            else:
                todo.append(point)
        workers = _local_workers(workers, len(todo))
        share = max(1, (os.cpu_count() or 1) // workers)
        threads = threads or fixed_count()  # None: each run's governor chooses, up to the share
        start, failed, interrupted = time.perf_counter(), 0, False
        losses: Counter = Counter()
        queue = list(todo)
        _save(directory, sweep, done)
        while queue and not interrupted:  # a local pool that lost a worker starts again for the points it took
            lost, since = [], time.time()
            with _default_executor(executor, workers, threads or share) as pool:
                futures = {pool.submit(run_point, Task(p.id, p.scenario.resolved_yaml(),
                                                       str((directory / p.file).resolve()), threads, share)): p
                           for p in queue}
                try:
                    for future in as_completed(futures):
                        point = futures[future]
                        outcome = _outcome(future, point)
                        if outcome is None and executor is None:
                            lost.append(point)
                            continue
                        outcome = outcome or PointResult(point.id, "failed", "worker lost: BrokenProcessPool")
                        failed += _record(point, outcome, directory, sweep, done, on_point)
                except KeyboardInterrupt:
                    interrupted = True
                    for future in futures:
                        future.cancel()
                    _stop_workers()
            queue, gone = _requeue(sorted(lost, key=todo.index), directory, since, losses)
            for point in gone:
                failed += _record(point, _lost_result(point, losses), directory, sweep, done, on_point)
        _save(directory, sweep, done)
        return SweepResult(directory, len(todo), len(sweep.points) - len(todo), failed,
                           time.perf_counter() - start, interrupted)


MAX_LOSSES = 2
"""How many times a point may lose its worker (killed, out of memory) before it is recorded as
failed: a point that kills its worker every time fails after this many tries, one killed once
by accident runs again."""


def _local_workers(workers: Optional[int], points: int) -> int:
    """The workers of a local pool: ``workers``, by default one per CPU, at most one per point."""
    return workers or min(os.cpu_count() or 1, max(1, points))


WORKER_BYTES = 300e6
"""A worker process's own memory besides its run's arrays: the interpreter, NumPy, SciPy,
h5py, Numba and its compiled kernels (a process after a small quickstart run held 307 MB
resident, measured on Linux; an upper figure, since the libraries' code pages are shared)."""


def check_memory(points: list[Point], workers: int, available: Optional[int] = None) -> None:
    """Refuse (:class:`UsageError`) a sweep whose ``workers`` running at once would not fit in
    the memory available (:func:`meanfield.engine.memory.available_bytes`): the sum over the
    ``min(workers, len(points))`` largest points of their plan's peak plus :data:`WORKER_BYTES`
    each. One point alone is checked by its plan; this checks them together."""
    available = memory.available_bytes() if available is None else available
    known = sorted((p for p in points if p.memory is not None), key=lambda p: p.memory.peak, reverse=True)
    at_once = known[:max(1, min(workers, len(known)))]
    need = sum(p.memory.peak + WORKER_BYTES for p in at_once)
    if available is None or not known or need <= available:
        return
    total, fit = 0.0, 0
    for p in known:
        total += p.memory.peak + WORKER_BYTES
        if total > available:
            break
        fit += 1
    largest = at_once[0].memory
    fewer = f"run at most {fit} worker{'s' if fit > 1 else ''} at once (--workers {fit}) or " if fit else ""
    raise UsageError(
        f"{len(at_once)} workers at once need about {size_text(need)} of memory (the {len(at_once)} largest points' "
        f"peaks, {at_once[0].id} the largest at {size_text(largest.peak)}, the most of it {largest.dominant.what}; "
        f"plus {size_text(WORKER_BYTES)} a worker), and {size_text(available)} are available: {fewer}"
        f"lower {largest.dominant.lower}")


def _outcome(future, point: Point) -> Optional[PointResult]:
    """What a finished future says of ``point``; None when its worker, or another worker of
    the local pool, died and took it along (BrokenProcessPool)."""
    try:
        return future.result()
    except BrokenProcessPool:
        return None
    except Exception as exc:  # noqa: BLE001 - a worker that died takes only its point
        return PointResult(point.id, "failed", f"worker lost: {type(exc).__name__}: {exc}")


def _killed(lost: list, directory: Path, since: float) -> list:
    """Of the points a broken pool took along, those whose worker died: the holder of the
    point file's lock, taken since the pool started (``since``), is gone (SIGKILL leaves the
    lock file; a worker the broken pool terminates closes its file and removes it). All of
    them where none can be told (a worker that died before it took the lock)."""
    killed = []
    for point in lost:
        lock = lock_path(directory / point.file)
        try:
            if lock.stat().st_mtime < since:
                continue
            os.kill(json.loads(lock.read_text())["pid"], 0)
        except ProcessLookupError:
            killed.append(point)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return killed or list(lost)


def _requeue(lost: list, directory: Path, since: float, losses: Counter) -> tuple[list, list]:
    """The points to run again and those that failed: a point whose worker died
    :data:`MAX_LOSSES` times fails; the others, bystanders included, go back to the queue.
    A requeued point's file continues from its checkpoint, or starts again where the kill
    left it unreadable (:func:`run_point`)."""
    for point in _killed(lost, directory, since):
        losses[point.id] += 1
    failed = [point for point in lost if losses[point.id] >= MAX_LOSSES]
    return [point for point in lost if point not in failed], failed


def _lost_result(point: Point, losses: Counter) -> PointResult:
    return PointResult(point.id, "failed", f"worker lost {losses[point.id]} time(s) while running this point "
                                           "(killed, or out of memory?): BrokenProcessPool")


def execute(sweep: Sweep, directory=None, *, workers: Optional[int] = None, threads: Optional[int] = None,
            engine: str = "process", scheduler: Optional[str] = None, resume: bool = False, progress: bool = False,
            on_point: Optional[Callable[[Point, dict], None]] = None, log: Callable[[str], None] = lambda m: None,
            ) -> SweepResult:
    """Run ``sweep`` into ``directory`` (default ./<name>) on a local process pool or on Dask
    (``engine="dask"``: a local cluster of ``workers``; ``scheduler``: that cluster's), with
    progress over the points to run (``progress``: :class:`meanfield.engine.progress.PointsBar`) or a
    ``log`` line per point."""
    from ..engine.progress import PointsBar

    if engine not in ("process", "dask"):
        raise UsageError(f"engine {engine!r}: use 'process' or 'dask'")
    if scheduler and workers:
        raise UsageError("--workers is for local runs; with --scheduler the cluster has its own workers")
    directory = Path(directory or sweep.name)
    use_dask = engine == "dask" or scheduler is not None
    executor = dask_executor(scheduler, workers, threads or 1) if use_dask else contextlib.nullcontext()
    to_run = sum(not _done_before(directory, point, resume) for point in sweep.points)
    bar = PointsBar(to_run, enabled=progress, log=log)

    def after_point(point, row):
        bar.update(point, row)
        if on_point is not None:
            on_point(point, row)

    with executor as pool, bar:
        result = run_sweep(sweep, directory, executor=pool, workers=workers,
                           threads=threads or (1 if use_dask else None), resume=resume, on_point=after_point)
    return check_outcome(result)


def check_outcome(result: SweepResult, shown: int = 3) -> SweepResult:
    """``result``, unless every point that ran failed and none was complete before: then a
    :class:`UsageError` if the workers died at start-up under a script without a
    ``__main__`` guard (:func:`unguarded_script`), else :class:`SweepFailed` with the first
    ``shown`` reasons."""
    if result.interrupted or result.ran == 0 or result.skipped or result.failed < result.ran:
        return result
    failed = [row for row in read_table(result.directory).rows() if row["status"] != "complete"]
    script = unguarded_script()
    if script and any("BrokenProcessPool" in str(row["reason"]) for row in failed):
        raise UsageError(
            f"every point of the sweep failed: its worker processes died as they started (BrokenProcessPool). "
            f"{script} has no `if __name__ == \"__main__\":` guard, and each worker (a spawned process) "
            f"imports it and starts the sweep again. Put the lines that start the sweep under the guard: "
            f"`if __name__ == \"__main__\":` then, indented, `res = mf.sweep(...)` and what uses it")
    reasons = "; ".join(f"{row['point']}: {row['reason']}" for row in failed[:shown])
    more = f" (and {len(failed) - shown} more, in {result.directory}/results.csv)" if len(failed) > shown else ""
    raise SweepFailed(f"every point of the sweep failed ({len(failed)} of {len(failed)}): {reasons}{more}", result)


def unguarded_script() -> Optional[str]:
    """The path of this process's main script if it is a Python file without an
    ``if __name__ == "__main__":`` guard (each spawned worker runs such a script's top level
    again); None otherwise (a notebook, the console command, a guarded script)."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path or not str(path).endswith(".py"):
        return None
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    return None if any(_is_main_guard(node) for node in ast.walk(tree)) else str(path)


def _is_main_guard(node) -> bool:
    """Whether ``node`` is ``if __name__ == "__main__":`` (either side of the comparison)."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    sides = [node.test.left, *node.test.comparators]
    return (any(isinstance(side, ast.Name) and side.id == "__name__" for side in sides)
            and any(isinstance(side, ast.Constant) and side.value == "__main__" for side in sides))


def _claim_directory(directory: Path, sweep: Sweep, resume: bool) -> None:
    """Create the sweep directory; refuse to mix two sweeps, or to start over on a finished one."""
    stored = directory / SWEEP_COPY
    if stored.exists():
        if not resume:
            raise UsageError(f"{directory} already holds a sweep: continue it with --resume, "
                             "or choose another directory with -o")
        if stored.read_text() != sweep.as_yaml():
            raise UsageError(f"{directory} holds a different sweep ({stored} differs from this one): "
                             "--resume continues the same sweep only; choose another directory with -o")
        return
    if resume:
        raise UsageError(f"--resume: {directory} holds no sweep (run without --resume first)")
    if directory.exists() and any(directory.iterdir()):
        raise UsageError(f"{directory} exists and is not empty: choose a new directory with -o")
    directory.mkdir(parents=True, exist_ok=True)
    partial = stored.with_name(SWEEP_COPY + ".partial")
    partial.write_text(sweep.as_yaml())
    os.replace(partial, stored)


def _previous_rows(directory: Path) -> dict[str, dict]:
    try:
        return {row["point"]: row for row in read_table(directory).rows()}
    except UsageError:
        return {}


def _record(point: Point, outcome: PointResult, directory: Path, sweep: Sweep, done: dict, on_point) -> bool:
    """Put a point's outcome in the table (saved at once) and tell ``on_point``; whether it failed."""
    done[point.id] = _row(point, outcome)
    _save(directory, sweep, done)
    on_point(point, done[point.id])
    return outcome.status != "complete"


def _row(point: Point, outcome: PointResult) -> dict:
    row = {"point": point.id, **point.coords}
    row.setdefault("seed", point.scenario.seed)
    row.update(status=outcome.status, ended=point_ended(outcome), stop_loss=point.scenario.train.stop_loss,
               reason=outcome.reason, seconds=outcome.seconds, file=point.file)
    row.update(outcome.measures)
    return row


def point_ended(outcome: PointResult) -> str:
    """How a complete point ended: 'stop_loss' if every run stopped at the scenario's
    ``stop_loss``, 't_end' if a run ran to t_end (with ``stop_loss > 0``: that run did not
    converge); '' for a point that is not complete."""
    ends = [value for key, value in outcome.measures.items() if key.endswith(".ended")]
    if outcome.status != "complete" or not ends:
        return ""
    return "stop_loss" if all(end == "stop_loss" for end in ends) else "t_end"


def _save(directory: Path, sweep: Sweep, done: dict[str, dict]) -> Table:
    rows = [done[p.id] for p in sweep.points if p.id in done]
    return write_table(directory, rows, sweep.grid_keys, name=sweep.name, sweep_yaml=sweep.as_yaml())


@contextmanager
def _default_executor(executor: Optional[Executor], workers: int, threads: int):
    """The given executor as is, or a local process pool (spawned: no forked OpenMP state)
    whose workers have ``threads`` Numba (and BLAS) threads at most."""
    if executor is not None:
        yield executor
        return
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_pool_worker, initargs=(threads,))
    try:
        with _thread_environment(threads):  # spawned workers load BLAS before their initializer runs
            yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)




@contextmanager
def _thread_environment(threads: int):
    """The thread-count variables set to ``threads`` in this process's environment (which
    the workers it spawns inherit), restored afterwards."""
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update({name: str(threads) for name in THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _stop_workers() -> None:
    """Ask this process's worker processes to stop: each marks its run interrupted and exits."""
    for child in multiprocessing.active_children():
        child.terminate()


# ---------------------------------------------------------------------------- dask
@contextmanager
def dask_executor(scheduler: Optional[str] = None, workers: Optional[int] = None, threads: int = 1):
    """A Dask distributed executor: a client of the scheduler at ``scheduler``, or of a local
    cluster of ``workers`` single-threaded worker processes. Needs the ``dask`` extra."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise UsageError("the Dask engine needs dask.distributed: pip install 'meanfield[dask]'") from None
    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise UsageError(f"--scheduler {scheduler}: cannot reach the Dask scheduler ({exc})") from None
        with client:
            yield client.get_executor()
        return
    cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=40)
    with cluster, Client(cluster) as client:
        yield client.get_executor()
