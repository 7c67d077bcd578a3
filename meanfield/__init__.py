"""meanfield: two-layer neural networks at infinite width, rich (mean-field) and lazy (NTK) side by side.

The library a notebook drives; the ``meanfield`` command line is a thin layer over it::

    import meanfield as mf

    sc = mf.load_scenario("quickstart")                  # a bundled name, a YAML path, or a dict
    sc = sc.replace({"model.width": 1024, "runs.ntk": None})
    traj = mf.simulate(sc)                               # in memory; output="q.h5" writes a file
    traj["rich"].measure("loss_test")                    # an xarray.DataArray over time
    traj["rich"].particles()                             # an xarray.Dataset: position, amplitude
    traj.save("q.h5"); traj = mf.open("q.h5")

    if __name__ == "__main__":                           # a script's spawned workers import it
        res = mf.sweep("width_theorem", grid={"model.width": [64, 256, 1024]}, replicates=4, output="wt")
        res.table                                        # a pandas DataFrame, one row per point
        mf.analyze(res, measure="displacement_w", against="model.width")
        mf.study("catapult", quick=True).table           # a bundled study beside its published values

    k = mf.kernels(X, model={"activation": "tanh"})      # the infinite-width NNGP and NTK: k.nngp, k.ntk

What each function returns is in its docstring; the design (equations, parameterizations,
the file layout, the run contract) is in docs/design.md. The numerical core is the
``solvers`` package; importing ``meanfield`` does not load it (nor Numba) until a
simulation runs.
"""

from __future__ import annotations

import math
import numbers
import os

# Before NumPy loads OpenBLAS (it reads this once): its idle threads spin for about 0.4 ms
# instead of 0.1 s, so they do not take the cores from Numba's threads (docs/design.md §6.4).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")

from .errors import stop_early  # noqa: E402

stop_early()  # the command line's process only: a stop during the imports below is kept

from pathlib import Path  # noqa: E402
from typing import Callable, Mapping, Optional, Sequence, Union  # noqa: E402

from .config.scenario import Scenario  # noqa: E402
from .engine.threads import set_threads  # noqa: E402
from .errors import RunFailed, SweepFailed, UsageError, as_path  # noqa: E402
from .storage import RecordedRun, Trajectory  # noqa: E402
from .sweeps.execution import SweepResult  # noqa: E402
from .sweeps.grid import Sweep  # noqa: E402

__version__ = "0.1.0"

__all__ = ["Analysis", "LearningCurve", "Plan", "RecordedRun", "RunFailed", "Scenario", "Spectrum", "Sweep",
           "SweepFailed", "SweepResult", "Trajectory", "UsageError", "analyze", "animate", "bundled_scenarios",
           "bundled_studies", "bundled_sweeps", "edge_figure", "edge_of_stability", "f1_max_margin", "f2_max_margin",
           "flow_loss", "kernel_spectrum", "kernels", "learning_curve", "load_scenario", "load_sweep", "nngp_posterior",
           "ntk_predict", "open", "open_sweep", "plan", "plot", "plot_function", "relu_feature_kernel",
           "sample_coefficients", "set_threads", "simulate", "study", "sweep", "teacher_coefficients"]


def __dir__() -> list[str]:
    """The public API only (``__all__``), not the names the module imports for itself."""
    return sorted(__all__)


_LAZY = {"Analysis": "analysis", "Plan": "engine.plan",
         "f1_max_margin": "analysis.max_margin", "f2_max_margin": "analysis.max_margin",
         "relu_feature_kernel": "analysis.max_margin",
         "LearningCurve": "analysis.learning_curve", "learning_curve": "analysis.learning_curve",
         "flow_loss": "analysis.learning_curve",
         "Spectrum": "analysis.spectrum", "kernel_spectrum": "analysis.spectrum",
         "sample_coefficients": "analysis.spectrum", "teacher_coefficients": "analysis.spectrum"}
"""Public names imported on first use: ``Analysis``'s module loads SciPy, and ``Plan``'s the run
layer, neither of which ``import meanfield`` (nor reading a scenario) needs; so do the max-margin
references (F1 by a linear program, F2 by a hard-margin SVM, docs/design.md §7.6), the kernel's
spectrum on the sphere and the learning-curve theory (docs/design.md §1.10)."""


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


ScenarioLike = Union[Scenario, str, Path, Mapping]
"""What names a scenario: a :class:`Scenario`, a bundled scenario's name, a YAML path, or a mapping."""


def load_scenario(source: ScenarioLike, overrides: Union[Mapping, Sequence[str]] = ()) -> Scenario:
    """A validated :class:`Scenario` from a bundled scenario's name (``"quickstart"``), a YAML
    file's path, a mapping of its keys, or a Scenario. ``overrides`` edit it before validation,
    as a mapping ``{"model.width": 4096}`` or as ``--set`` strings ``["model.width=4096"]``.

    Raises :class:`UsageError` naming the file, the line and the key of anything invalid.

    Parameters
    ----------
    source : Scenario, str, path or mapping
        A bundled scenario's name, a YAML file's path, a mapping of its keys, or a Scenario.
    overrides : mapping or list of str, optional
        Edits applied before validation: ``{"model.width": 4096}`` or ``["model.width=4096"]``.

    Returns
    -------
    Scenario
        The validated scenario.
    """
    from .config.loading import load_scenario as load

    return load(_scenario_source(source), _overrides(overrides))


def _scenario_source(source):
    """``source`` if it can name a scenario, else a UsageError saying what can."""
    if isinstance(source, (Scenario, str, os.PathLike, Mapping)):
        return source
    raise UsageError("a scenario is a bundled scenario's name, a YAML file's path, a mapping of its keys or a "
                     f"Scenario, not {type(source).__name__} {source!r}")


def _overrides(overrides):
    """``overrides`` if it is a mapping or a list of 'key=value' strings, else a UsageError."""
    if isinstance(overrides, Mapping) or (isinstance(overrides, (list, tuple))
                                          and all(isinstance(item, str) for item in overrides)):
        return overrides
    raise UsageError("overrides: give a mapping {'model.width': 4096} or a list of 'key=value' strings "
                     f"['model.width=4096'], not {type(overrides).__name__} {overrides!r}")


def _trajectory(trajectory, what: str):
    """A Trajectory as it is, a path as a Path; anything else a UsageError naming ``what``."""
    return trajectory if isinstance(trajectory, Trajectory) else as_path(trajectory, what)


def _log(log) -> Optional[Callable[[str], None]]:
    """``log`` if it is None or callable (``print``, ``logging.info``), else a UsageError."""
    if log is None or callable(log):
        return log
    raise UsageError(f"log: give a function that takes one line of text, e.g. print, not {type(log).__name__} {log!r}")


def _output(output, what: str) -> Optional[Path]:
    """An optional output path as a Path (None stays None)."""
    return None if output is None else as_path(output, what)


def plan(scenario: ScenarioLike):
    """What ``simulate`` would do, without doing it: a ``Plan`` with each run's resolved
    parameterization (``plan.resolved[name].s``, ``.eta_a``, ``.regime``), the snapshot
    times and the estimated file size; ``plan.describe()`` is what ``--dry-run`` prints.

    Parameters
    ----------
    scenario : Scenario, str, path or mapping
        Anything :func:`load_scenario` takes.

    Returns
    -------
    Plan
        The resolved runs, snapshot times and size estimate; nothing is run or written.
    """
    from .engine.plan import plan as make_plan

    return make_plan(load_scenario(scenario))


def simulate(scenario: ScenarioLike, output: Union[str, Path, None] = None, *, resume: bool = False,
             overwrite: bool = False, progress: Union[bool, Callable, None] = None,
             log: Optional[Callable[[str], None]] = None, threads: Optional[int] = None) -> Trajectory:
    """Run every run of ``scenario`` on the same data from the same initial particles and
    return the :class:`Trajectory` (open for reading).

    ``output=None`` keeps the file in memory (nothing on disk; ``traj.save(path)`` keeps it);
    a path writes it there as the runs go. An existing file is replaced only with
    ``overwrite=True``; ``resume=True`` continues an interrupted one from its checkpoints
    (the result is the file an uninterrupted run writes). ``progress=True`` shows each run's
    progress (model time, steps/s, ETA, both measured after the first step, which compiles):
    a bar in a Jupyter notebook (a widget with ipywidgets) or on a terminal, else a plain line
    on stderr every 10 s or tenth of the run (:mod:`meanfield.engine.progress`); by default
    (``None``) it is shown in a notebook or at an interactive prompt, not in a script.
    ``log`` receives one line per event
    (the plan, each run's start and end). ``threads`` fixes the thread count for this call;
    by default it is :func:`set_threads`'s or ``MEANFIELD_THREADS``'s, else chosen by
    measurement while each run steps (never changing a result).

    Raises :class:`RunFailed` if a run diverged (``exc.trajectory`` holds the file, every
    snapshot before the failure kept) and :class:`UsageError` for bad input.

    Parameters
    ----------
    scenario : Scenario, str, path or mapping
        Anything :func:`load_scenario` takes.
    output : str or path, optional
        The trajectory file to write; None keeps it in memory.
    resume, overwrite : bool
        Continue an interrupted ``output``, or replace an existing one.
    progress : bool, callable or None
        Show each run's progress (None: in a notebook or at a prompt only), or a factory of bars.
    log : callable, optional
        Receives one line of text per event.
    threads : int, optional
        The thread count for this call.

    Returns
    -------
    Trajectory
        Every run of the scenario, open for reading.
    """
    from .engine.driver import simulate as run_all

    output, log, bars = _output(output, "simulate's output"), _log(log), _run_bars(progress)
    trajectory, _ = run_all(load_scenario(scenario), None if output is None else str(output), resume=resume,
                            overwrite=overwrite, log=log or (lambda message: None), progress=bars,
                            threads=threads)
    return trajectory


def _run_bars(progress) -> Optional[Callable]:
    """What ``simulate``'s ``progress`` asks for: a factory of run bars, or None."""
    from .engine.progress import progress_factory, wanted

    if callable(progress):
        return progress
    if not (progress is None or isinstance(progress, bool)):
        raise UsageError("progress: give True, False, None (shown in a notebook or at a prompt) or a factory, "
                         f"not {type(progress).__name__} {progress!r}")
    return progress_factory(True) if wanted(progress) else None


def open(path: Union[str, Path]) -> Trajectory:  # noqa: A001 - the library's verb, as h5py.File or xarray.open_dataset
    """The trajectory file at ``path`` as a :class:`Trajectory` (read-only; also a file a
    simulation is still writing: what is complete when it is opened).

    Parameters
    ----------
    path : str or path
        A trajectory file written by :func:`simulate` or ``meanfield simulate``.

    Returns
    -------
    Trajectory
        The file, open for reading.
    """
    from .storage import open_trajectory

    return open_trajectory(path)


def load_sweep(sweep, grid: Optional[Mapping] = None, *, replicates: Optional[int] = None, overrides=(),
               axes: Optional[Mapping] = None):
    """A validated ``Sweep`` (its ``points``, each with its ``scenario``; ``describe()``):
    from a sweep file or a bundled study's name, or from a base scenario (anything
    :func:`load_scenario` takes) with ``grid`` and ``replicates`` as :func:`sweep` takes them.
    ``overrides`` edit the base scenario as ``--set`` does (``["key=value", ...]`` or a
    mapping key -> value); ``axes`` change a sweep file's grid as ``--grid`` does (key ->
    list of values: replaces that axis or adds one; on an axis with labels, the labels of the
    points to keep; None removes the axis). Every point is validated: a bad one is a
    :class:`UsageError` naming it and its key.

    Parameters
    ----------
    sweep : Sweep, str, path, mapping or Scenario
        A sweep file or a bundled study's name; with ``grid``, the base scenario.
    grid : mapping, optional
        Dotted key -> list of values (or mapping label -> value).
    replicates : int, optional
        Seeds per grid point, spawned from the base scenario's seed.
    overrides : mapping or list of str
        Edits of the base scenario (``--set``).
    axes : mapping, optional
        Changes of a sweep file's grid (``--grid``).

    Returns
    -------
    Sweep
        The validated sweep: ``.points``, ``.describe()``.
    """
    from .sweeps.grid import Sweep, make_sweep

    if not isinstance(sweep, (Sweep, Scenario, str, os.PathLike, Mapping)):
        raise UsageError("a sweep is a bundled study's name, a sweep file's path or a Sweep (or, with grid=..., a base "
                         f"scenario: a name, a path, a mapping or a Scenario), not {type(sweep).__name__} {sweep!r}")
    if grid is not None and not isinstance(grid, Mapping):
        raise UsageError(f"grid: give a mapping of dotted keys to lists of values, e.g. {{'model.width': [64, 128]}}, "
                         f"not {type(grid).__name__} {grid!r}")
    return make_sweep(sweep, grid, replicates=replicates, overrides=overrides, axes=axes)


def sweep(sweep, grid: Optional[Mapping] = None, *, output: Union[str, Path, None] = None,
          replicates: Optional[int] = None, overrides=(), axes: Optional[Mapping] = None,
          workers: Optional[int] = None, threads: Optional[int] = None,
          engine: str = "process", scheduler: Optional[str] = None, resume: bool = False,
          progress: Optional[bool] = None, on_point: Optional[Callable] = None,
          log: Optional[Callable[[str], None]] = None) -> SweepResult:
    """Run a grid of scenarios, one trajectory file per point, and return the
    :class:`SweepResult` (``.table``: a pandas DataFrame, one row per point).

    Either ``sweep`` names a sweep (a bundled study's name or a sweep YAML file) and
    ``grid`` is None, or ``sweep`` is the base scenario (anything :func:`load_scenario`
    takes) and ``grid`` maps dotted keys to lists of values (or to mappings label: value),
    with ``replicates`` seeds spawned from its seed (a ``Sweep`` from :func:`load_sweep`
    is taken as it is); ``overrides`` and ``axes`` as :func:`load_sweep` takes them (what
    ``--set`` and ``--grid`` do). Every point is validated before any runs. ``output`` is the
    sweep's directory (default: ./<name>); it must be new or empty unless ``resume``
    continues it. Points run on a local pool of ``workers`` processes (``threads`` Numba
    threads each), or on Dask (``engine="dask"`` for a local cluster, or ``scheduler`` an
    address). ``progress`` shows the points done (a bar in a notebook or on a terminal, else
    plain lines; by default in a notebook or at an interactive prompt, not in a script);
    ``on_point(point, row)`` and ``log`` hear of each finished point.

    Raises :class:`SweepFailed` (``.result``) when every point it ran failed, naming the
    first reasons, and :class:`UsageError` when that is because this process's main script
    has no ``if __name__ == "__main__":`` guard (the spawned workers import it and die).

    Parameters
    ----------
    sweep : Sweep, str, path, mapping or Scenario
        A sweep file or a bundled study's name; with ``grid``, the base scenario.
    grid : mapping, optional
        Dotted key -> list of values (or mapping label -> value).
    output : str or path, optional
        The sweep's directory (default ./<name>).
    replicates : int, optional
        Seeds per grid point.
    overrides, axes
        As :func:`load_sweep` takes them.
    workers, threads : int, optional
        Worker processes, and Numba threads in each.
    engine : {"process", "dask"}
        A local process pool or a Dask cluster.
    scheduler : str, optional
        A Dask scheduler's address.
    resume : bool
        Continue ``output``, running only the points not complete.
    progress : bool, optional
        Show the points done (None: in a notebook or at a prompt only).
    on_point : callable, optional
        Called as ``on_point(point, row)`` for each finished point.
    log : callable, optional
        Receives one line of text per event.

    Returns
    -------
    SweepResult
        ``.table`` (a pandas DataFrame, one row per point), ``.to_xarray()``, ``.trajectory(point)``.
    """
    from .engine.progress import wanted
    from .sweeps.execution import execute

    return execute(load_sweep(sweep, grid, replicates=replicates, overrides=overrides, axes=axes),
                   _output(output, "sweep's output"),
                   workers=workers, threads=threads, engine=engine, scheduler=scheduler, resume=resume,
                   progress=wanted(progress), on_point=on_point, log=_log(log) or (lambda message: None))


def open_sweep(directory: Union[str, Path]):
    """The :class:`SweepResult` of a sweep directory written earlier.

    Parameters
    ----------
    directory : str or path
        A sweep's directory.

    Returns
    -------
    SweepResult
        Its table and trajectories.
    """
    return SweepResult.open(as_path(directory, "open a sweep"))


def analyze(results, measure: str = "displacement_w", against: str = "model.width", *,
            runs: Optional[Sequence[str]] = None, within: tuple = (None, None), threshold: Optional[float] = None,
            by: Optional[str] = None, figure: Union[str, Path, None] = None,
            phase_diagram: Union[str, Path, None] = None, phases_figure: Union[str, Path, None] = None):
    """The scaling of a sweep's final ``measure`` against a grid key, as ``meanfield analyze``
    prints it: power laws with 95% intervals per family, the m -> infinity limit and the
    regime each family is in; ``threshold`` (and ``by``): where the measure falls below a
    level. ``results`` is a :class:`SweepResult` or a sweep directory. Returns an
    ``Analysis``: ``.rows`` (the fits: ``row.run``, ``row.fit.exponent``,
    ``row.fit.exponent_ci``, ``row.extrapolation.limit``, ``row.regime``), ``.crossings``,
    ``.report``, ``.files`` (analysis.csv, regimes.csv, the figures); ``str()`` is the report.
    A sweep with a dt_factor axis also gets each point's phase (lazy, catapult, diverged:
    phases.csv) and their edges along c in the report; ``phases_figure`` draws them.

    Parameters
    ----------
    results : SweepResult, str or path
        A sweep's result or its directory.
    measure : str
        The measure whose final value is fitted.
    against : str
        The grid key it is fitted against.
    runs : list of str, optional
        The runs to fit (default: every run).
    within : tuple
        ``(lo, hi)``: fit the points with ``against`` in [lo, hi] (None: that end open).
    threshold : float, optional
        Also find where the measure crosses this level along ``against``.
    by : str, optional
        With ``threshold``: the grid key against which that crossing's scaling is fitted.
    figure, phase_diagram, phases_figure : str or path, optional
        Figures to draw.

    Returns
    -------
    Analysis
        The fits (``.rows``), ``.crossings``, ``.report``, ``.files``.
    """
    from .analysis import analyze as analyze_sweep

    return analyze_sweep(as_path(getattr(results, "directory", results), "analyze"), measure=measure, against=against,
                         runs=runs, figure_path=figure, within=within, threshold=threshold, by=by,
                         phase_path=phase_diagram, phases_path=phases_figure)


def plot(trajectory: Union[Trajectory, str, Path], output: Union[str, Path, None] = None) -> Path:
    """Draw the measures of every run (loss or risk, displacement, kernel distance, gap to
    the ntk run) against time into ``output`` (.png, .pdf, .svg; default FILE.png); returns it.

    Parameters
    ----------
    trajectory : Trajectory, str or path
        A trajectory or its file.
    output : str or path, optional
        The figure's file (default FILE.png).

    Returns
    -------
    pathlib.Path
        The figure's path.
    """
    from .pictures.figures import plot as draw

    return draw(_trajectory(trajectory, "plot"), _output(output, "plot's output"))


def plot_function(trajectory: Union[Trajectory, str, Path], runs: Optional[Sequence[str]] = None, *,
                  time: Optional[float] = None, line=None, output: Union[str, Path, None] = None,
                  points: int = 201, near: float = 0.1):
    """Each run's learned function f_t(x(u)) along a line x(u) through input space, one panel
    per run side by side (rich beside lazy), with the target: the teacher f* where there is one
    and the ``near`` share of training samples closest to the line. ``time``: the snapshot
    nearest it (default the last; t = 0 is drawn dotted). ``line=(x_start, x_end)``; default
    through the inputs' mean along w*_1 (else the inputs' first principal direction). Returns
    the matplotlib Figure (no display needed), saved to ``output`` (.png, .pdf, .svg) when given.

    Parameters
    ----------
    trajectory : Trajectory, str or path
        A trajectory or its file.
    runs : list of str, optional
        The runs to draw, one panel each (default every run).
    time : float, optional
        Draw the snapshot nearest this time (default the last).
    line : (array_like, array_like), optional
        ``(x_start, x_end)``, two different points of input space (default through the
        inputs' mean along ``w*_1``, else along their first principal direction).
    output : str or path, optional
        The figure's file (.png, .pdf, .svg); None saves nothing.
    points : int
        The number of points along the line (>= 2).
    near : float
        The share of training samples, those closest to the line, drawn (0: none).

    Returns
    -------
    matplotlib.figure.Figure
        The figure, one panel per run.
    """
    from .pictures.function import plot_function as draw

    if not (isinstance(points, int) and not isinstance(points, bool) and points >= 2):
        raise UsageError(f"plot_function: points is a whole number >= 2, not {points!r}")
    return draw(_trajectory(trajectory, "plot_function"), runs, time=time, line=line,
                output=_output(output, "plot_function's output"), points=points, near=near)


def animate(trajectory: Union[Trajectory, str, Path], output: Union[str, Path, None] = None, **options):
    """A movie of the particles of each particle run over the loss curves of every run,
    written to ``output`` (.gif, or .mp4 with the ``video`` extra; default FILE.gif).
    ``options``: runs (a list of names, or 'rich,lazy' as ``--runs`` takes them), fps, every,
    projection, trails, follow (see ``meanfield animate --help``).
    Returns the movie's path and frame count.

    Parameters
    ----------
    trajectory : Trajectory, str or path
        A trajectory or its file.
    output : str or path, optional
        The movie's file (default FILE.gif).
    **options
        runs, fps, every, projection, trails, follow.

    Returns
    -------
    Result
        ``.output`` (the movie's path), ``.frames`` (its frame count), ``.interrupted``.
    """
    from .pictures.movie import write_movie

    return write_movie(_trajectory(trajectory, "animate"), _output(output, "animate's output"),
                       **_movie_options(options))


def _movie_options(options: dict) -> dict:
    """``animate``'s options checked: known names, whole fps and every, runs as a list."""
    import inspect

    from .messages import did_you_mean
    from .pictures.movie import write_movie

    allowed = [name for name in inspect.signature(write_movie).parameters if name not in ("trajectory", "output")]
    for name, value in options.items():
        if name not in allowed:
            raise UsageError(f"animate has no option {name!r} (options: {', '.join(allowed)})"
                             f"{did_you_mean(name, allowed)}")
        if name in ("fps", "every") and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            raise UsageError(f"animate: {name} is a whole number >= 1, not {type(value).__name__} {value!r}")
    if isinstance(options.get("runs"), str):
        options = {**options, "runs": [name.strip() for name in options["runs"].split(",") if name.strip()]}
    return options


def bundled_scenarios() -> dict[str, str]:
    """The scenarios shipped with meanfield: name -> the first line of its description.

    Returns
    -------
    dict of str to str
        Scenario name -> the first line of its description.
    """
    from .config.bundled import bundled

    return bundled()


def edge_of_stability(trajectory: Union[Trajectory, str, Path], level: float = 0.9) -> dict:
    """Run name -> ``EdgeCrossing`` (meanfield.analysis.stability) for every fixed-step run that
    recorded ``hessian_eigenvalue_max``: with q = sharpness * dt / 2, ``t_edge`` the first
    snapshot time with q >= ``level``, ``hover`` the median of q from there on, ``initial``
    and ``peak`` (docs/design.md §1.9).

    Parameters
    ----------
    trajectory : Trajectory, str or path
        A trajectory or its file.
    level : float
        The fraction of the edge that counts as reaching it.

    Returns
    -------
    dict of str to EdgeCrossing
        Run name -> its crossing.
    """
    from .analysis.stability import edge_of_stability as edges

    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < math.inf:
        raise UsageError(f"edge_of_stability: level is a positive number (0.9: within 10% of the edge), not {level!r}")
    return edges(_trajectory(trajectory, "edge_of_stability"), level)


def edge_figure(trajectory: Union[Trajectory, str, Path], output: Union[str, Path]) -> Path:
    """Draw sharpness * dt / 2 against time, one curve per run of :func:`edge_of_stability`,
    over the training losses; returns the figure's path.

    Parameters
    ----------
    trajectory : Trajectory, str or path
        A trajectory or its file.
    output : str or path
        The figure's file.

    Returns
    -------
    pathlib.Path
        The figure's path.
    """
    from .analysis.stability import edge_figure as draw

    return draw(_trajectory(trajectory, "edge_figure"), as_path(output, "edge_figure's output"))


def study(name: str, quick: bool = False, output: Union[str, Path, None] = None, *,
          workers: Optional[int] = None, resume: bool = False):
    """Run the bundled study ``name`` (``quick``: its reduced check, seconds to a minute) into
    ``output`` (a directory; None: a new temporary one) and measure it beside its published
    values. Returns a ``StudyResult``: ``.table`` (a pandas DataFrame with the columns
    quantity, published, measured, tolerance, agrees, one row per published quantity, the
    same for every study), ``.figure(path)``, ``.agrees``; ``str()`` prints the table with
    the citation. :func:`bundled_studies` lists them; a full study runs its sweep on ``workers``
    processes (in a script, under ``if __name__ == "__main__":``); ``resume`` continues a
    study run into ``output`` before (only what is not complete runs again).

    Parameters
    ----------
    name : str
        A bundled study (:func:`bundled_studies`).
    quick : bool
        Run its reduced check instead of the full study.
    output : str or path, optional
        The directory of its results (None: a new temporary one).
    workers : int, optional
        Worker processes of a full study's sweep.
    resume : bool
        Continue a study run into ``output`` before.

    Returns
    -------
    StudyResult
        ``.table``, ``.figure(path)``, ``.agrees``.
    """
    from .studies import study as run_study

    return run_study(name, quick=quick, output=_output(output, "study's output"), workers=workers, resume=resume)


def bundled_studies() -> dict[str, str]:
    """The bundled studies (known results of the literature, reproduced): name -> title.

    Returns
    -------
    dict of str to str
        Study name -> its title.
    """
    from .studies import studies as registry

    return {name: entry.title for name, entry in registry().items()}


def bundled_sweeps() -> dict[str, str]:
    """The sweeps (studies of the literature) shipped with meanfield: name -> summary.

    Returns
    -------
    dict of str to str
        Sweep name -> its summary.
    """
    from .config.bundled import bundled_sweeps as studies

    return studies()


KernelSection = Union[Mapping, str, None, object]
"""A scenario section for the kernel functions: a mapping as in YAML, the pydantic section
object (``sc.model``, ``sc.runs["ntk"].parameterization``), a preset's name, or None (defaults)."""


def _kernel_sections(model, parameterization, what: str):
    """(ModelSpec, preset) validated as a scenario's ``model`` and an ``ntk`` run's
    ``parameterization`` (default: the ``ntk`` preset); errors name ``what``'s argument."""
    from .config.loading import validate_scenario

    def raw(section):
        return section.model_dump() if hasattr(section, "model_dump") else section

    model_raw, param_raw = raw(model), raw(parameterization)
    if model_raw is not None and not isinstance(model_raw, Mapping):
        raise UsageError(f"{what}: model is a mapping of the scenario's model keys (activation, bias, init, ...), "
                         f"not {type(model_raw).__name__}")
    run = {"solver": "ntk", "kernel": "analytic"}
    if param_raw is not None:
        run["parameterization"] = param_raw
    scenario = {"name": what, "model": dict(model_raw or {}), "runs": {"kernel": run}}
    try:
        sc = validate_scenario(scenario, source=what)
    except UsageError as exc:
        text = str(exc).replace("runs.kernel.parameterization", "parameterization").replace("run 'kernel': ", "")
        raise UsageError(text) from None
    return sc.model, sc.runs["kernel"].parameterization


def kernels(x1, x2=None, *, model: KernelSection = None, parameterization: KernelSection = None,
            batch: Optional[int] = None):
    """The infinite-width NNGP and NTK of the scenario's two-layer network on the rows of ``x1``
    and ``x2`` (None: x1 with itself, exactly symmetric): a named pair ``(nngp, ntk)`` of
    float64 arrays (n1, n2). ``model``: the scenario's ``model`` keys (activation, bias,
    output_bias, init: w_std (per coordinate w_std / sqrt d), b_std, a_std, c_std; the width is
    infinite); ``parameterization``: a preset and its lr, lr_a, lr_w, lr_b, lr_c (default ntk).
    nngp = a_std^2 E[sigma(u) sigma(v)] (+ c_std^2), the covariance of f_0; ntk the
    learning-rate-weighted NTK in the preset's clock (df/dt = -(1/n) ntk (f - y) on squared loss):
    for ntk, mean_field, lazy and mup, lr_a E[ss] + a_std^2 E[s's'] (lr_w x.x' + lr_b) (+ lr_c);
    standard has no limit (its kernel grows like m). Closed forms for relu, erf, linear and
    quadratic, quadrature (1e-12) for tanh, sigmoid, softplus; ``batch`` rows of x1 at a time
    (default: about 2^20 entries), the same numbers at any batch (docs/design.md §1.6).

    Parameters
    ----------
    x1 : array_like, shape (n1, d)
        The first points, one per row.
    x2 : array_like, shape (n2, d), optional
        The second points; None: ``x1`` with itself.
    model : mapping, model section or None
        The scenario's ``model`` keys (default: the scenario's defaults).
    parameterization : mapping, str, preset section or None
        A preset's name or a preset and its learning rates (default ntk).
    batch : int, optional
        Rows of ``x1`` at a time (default: about 2^20 entries).

    Returns
    -------
    Kernels
        The named pair ``(nngp, ntk)``, each a float64 array (n1, n2).
    """
    from .model.kernels import infinite_width_kernels

    spec, preset = _kernel_sections(model, parameterization, "mf.kernels")
    return infinite_width_kernels(x1, x2, model=spec, param=preset, batch=batch)


def nngp_posterior(x_train, y_train, x_test, *, noise: float, model: KernelSection = None,
                   parameterization: KernelSection = None, batch: Optional[int] = None):
    """Gaussian-process regression with the NNGP of :func:`kernels` as the prior covariance and
    label noise of variance ``noise`` (>= 0): a named pair ``(mean, variance)`` at the rows of
    ``x_test``, mean = k*^T (K + noise I)^-1 y and variance = k** - k*^T (K + noise I)^-1 k*
    (of f, without the noise), by a Cholesky solve.

    Parameters
    ----------
    x_train : array_like, shape (n, d)
        The training points, one per row.
    y_train : array_like, shape (n,)
        Their labels.
    x_test : array_like, shape (m, d)
        The points at which to give the posterior.
    noise : float
        The label noise's variance (>= 0; 0: exact interpolation).
    model : mapping, model section or None
        The scenario's ``model`` keys, as in :func:`kernels`.
    parameterization : mapping, str, preset section or None
        The preset, as in :func:`kernels` (default ntk).
    batch : int, optional
        Rows at a time in the kernels, as in :func:`kernels`.

    Returns
    -------
    Posterior
        The named pair ``(mean, variance)``, each a float64 array (m,).
    """
    from .model.kernels import nngp_posterior as posterior

    spec, preset = _kernel_sections(model, parameterization, "mf.nngp_posterior")
    return posterior(x_train, y_train, x_test, noise=noise, model=spec, param=preset, batch=batch)


def ntk_predict(x_train, y_train, x_test, *, t: float = math.inf, ridge: float = 0.0, model: KernelSection = None,
                parameterization: KernelSection = None, batch: Optional[int] = None):
    """The mean prediction of the infinite-width network trained by gradient flow on the squared
    loss, the NTK flow of :func:`kernels` from f_0 = 0 at time ``t`` in the preset's clock (inf:
    its limit, kernel (ridge) regression): a named pair ``(train, test)``; ``t`` may be an array
    of times. What an ``ntk`` run with ``kernel: analytic`` computes (without an output bias).

    Parameters
    ----------
    x_train : array_like, shape (n, d)
        The training points, one per row.
    y_train : array_like, shape (n,)
        Their labels.
    x_test : array_like, shape (m, d)
        The points at which to predict.
    t : float or array_like
        The time or times (>= 0) in the preset's clock; inf (alone): the limit.
    ridge : float
        The ridge (>= 0): the flow's ``- ridge f`` term, ``n ridge I`` added to the NTK's
        Gram matrix in the limit.
    model : mapping, model section or None
        The scenario's ``model`` keys, as in :func:`kernels`.
    parameterization : mapping, str, preset section or None
        The preset, as in :func:`kernels` (default ntk).
    batch : int, optional
        Rows at a time in the kernels, as in :func:`kernels`.

    Returns
    -------
    Prediction
        The named pair ``(train, test)``: the predictions at ``x_train`` (n,) and at ``x_test``
        (m,), with a leading axis of times when ``t`` is an array.
    """
    from .model.kernels import ntk_prediction

    spec, preset = _kernel_sections(model, parameterization, "mf.ntk_predict")
    return ntk_prediction(x_train, y_train, x_test, t=t, ridge=ridge, model=spec, param=preset, batch=batch)
