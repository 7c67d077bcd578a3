"""The command line: ``meanfield simulate | inspect | animate | plot | sweep | analyze | study | scenarios``.

A thin layer over the public API of :mod:`meanfield`: each command parses its arguments,
calls the API and prints what it returns (docs/cli.md, "The command line", documents them).

Usage errors (a bad key, a missing file, a file that is not ours) print one line starting
with ``Error:`` and exit with status 2; a run that diverged exits with status 1 after
marking its entry in the file as failed; Ctrl-C and SIGTERM leave a valid file that
``--resume`` continues.
"""

from __future__ import annotations

import logging
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import click

import meanfield as mf

from .errors import (
    RunFailed,
    SweepFailed,
    UsageError,
    defer_stops,
    end_early_stops,
    expect_stops,
    forget_stops,
    honour_stop,
    restore_handlers,
    stop_requested,
)

log = logging.getLogger("meanfield")


class CommandError(click.ClickException):
    """A usage error: printed as one ``Error: ...`` line, exit status 2."""

    exit_code = 2


@contextmanager
def usage_errors(file=None):
    """Usage errors as one ``Error:`` line; so too what the HDF5 library says of a damaged
    ``file``."""
    try:
        yield
    except UsageError as exc:
        raise CommandError(str(exc)) from None
    except (OSError, RuntimeError) as exc:
        if not mf.storage.raised_in_h5py(exc):
            raise
        raise CommandError(f"{file or 'the file'}: the HDF5 library cannot read or write it: "
                           f"{str(exc).splitlines()[0]} (a damaged or half-written file?)") from None


@contextmanager
def stops_at_safe_points():
    """SIGINT and SIGTERM only ask for a stop; the run honours it at its next safe point (between
    steps, between runs, at start-up) as an :class:`~meanfield.errors.Interrupted`: never lost
    inside a finaliser, and the file is closed valid and resumable."""
    previous = defer_stops()
    try:
        yield
    finally:
        restore_handlers(previous)
        forget_stops()


@contextmanager
def sigterm_as_interrupt():
    """SIGTERM ends a run the way Ctrl-C does: the file is closed valid and resumable."""
    previous = expect_stops()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        forget_stops()


class OneLineUsageErrors(click.Group):
    """The command group whose own usage errors (an unknown option or command, a value out of
    an option's range) are one ``Error:`` line with exit status 2, like every other usage
    error of meanfield, not click's three lines of usage."""

    def make_context(self, info_name, args, parent=None, **extra):
        with _one_line():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        with _one_line():
            return super().invoke(ctx)


_HELP_ON_NO_ARGS = getattr(click.exceptions, "NoArgsIsHelpError", ())


@contextmanager
def _one_line():
    """click's UsageError as a :class:`CommandError` naming the command's help."""
    try:
        yield
    except _HELP_ON_NO_ARGS:  # a bare ``meanfield``: its help, as a usage error's exit status
        raise
    except click.UsageError as exc:
        where = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        raise CommandError(exc.format_message() + where) from None


@click.group(cls=OneLineUsageErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(mf.__version__, prog_name="meanfield")
@click.option("-v", "--verbose", count=True, help="More messages (debug level).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no announcements.")
@click.pass_context
def main(ctx, verbose, quiet):
    """Two-layer networks at infinite width: mean-field particles (rich) and the NTK (lazy)."""
    if hasattr(signal, "SIGXFSZ"):  # past `ulimit -f` a write fails (and the run stops cleanly) instead of killing
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    ctx.obj = {"quiet": quiet}
    if ctx.invoked_subcommand != "simulate" and end_early_stops():  # simulate honours it at its start-up
        click.echo("interrupted during start-up: nothing was done; run the command again", err=True)
        sys.exit(130)


@main.command()
@click.argument("scenario")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Trajectory file (default: the scenario's output).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a scenario key before validation, e.g. --set model.width=4096.")
@click.option("--resume", is_flag=True, help="Continue the runs of an interrupted file.")
@click.option("--overwrite", is_flag=True, help="Replace the output file if it exists.")
@click.option("--dry-run", is_flag=True, help="Validate and show what would run, with an estimate of its time on this "
                                             "machine measured now (each run started and a few steps timed); "
                                             "write nothing.")
@click.option("--no-time", is_flag=True, help="With --dry-run: leave out the time estimate (no run is started).")
@click.option("--threads", type=click.IntRange(min=1),
              help="Threads of the numerical core (default: $MEANFIELD_THREADS, else chosen by measurement "
                   "while each run steps, so a busy machine does not slow the run down).")
@click.pass_context
def simulate(ctx, scenario, output, overrides, resume, overwrite, dry_run, no_time, threads):
    """Run every run of SCENARIO (a YAML file, or a bundled scenario's name) into one HDF5 file."""
    quiet = ctx.obj["quiet"]
    with usage_errors(), stops_at_safe_points():
        if resume and overwrite:
            raise UsageError("--resume continues the file and --overwrite replaces it: give one of them")
        spec = mf.load_scenario(scenario, overrides)
        output = output or spec.output_path
        try:
            if dry_run:
                the_plan = mf.plan(spec)
                described = the_plan.describe(output)
                if not no_time:
                    described += "\n" + the_plan.estimate_time(threads).describe()
                honour_stop(wrote=False)
                click.echo(described)
                return
            mf.simulate(spec, output, resume=resume, overwrite=overwrite, log=log.info, threads=threads,
                        progress=not quiet).close()
            late = stop_requested()
        except KeyboardInterrupt as exc:
            click.echo(_interrupted(output, resume, getattr(exc, "wrote", True)), err=True)
            sys.exit(130)
        except RunFailed as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
    if late:  # the stop came once the last run was complete: there was nothing left to stop
        click.echo(f"stop received after the last run completed: {output} is complete", err=True)
    log.info(f"wrote {output}")


def _interrupted(output, resume: bool, wrote: bool) -> str:
    """What a stop left: the file to continue, or (stopped before writing it) nothing to continue."""
    if wrote:
        return f"interrupted: {output} is valid; continue with --resume"
    if resume:
        return f"interrupted before continuing {output}: it is as it was; continue with --resume"
    return f"interrupted before writing {output}: no file was written; run the command again"


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
def inspect(file):
    """What is in a trajectory FILE: runs side by side, final measures, predicted and measured regime."""
    with usage_errors(file), mf.open(file) as trajectory:
        click.echo(trajectory.summary())


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="The movie: .gif (Pillow) or .mp4 (ffmpeg: pip install 'meanfield[video]'). Default: FILE.gif.")
@click.option("--runs", metavar="NAME,NAME", help="The particle runs to show, one panel each (default: all).")
@click.option("--fps", type=click.IntRange(1, 100), default=10, show_default=True, help="Frames per second.")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True,
              help="Draw every K-th snapshot (and the last).")
@click.option("--projection", type=click.Choice(["auto", "first2", "teacher", "pca"]), default="auto",
              show_default=True, help="The plane of the input weights: auto is first2 when d = 2, else the "
                                      "teacher plane (its span; for 3+ teacher neurons the plane of it that "
                                      "puts them on a circle), else the principal plane of the final rich "
                                      "particles.")
@click.option("--trails", is_flag=True, help="Draw each particle's path over the last frames.")
@click.option("--follow", is_flag=True, help="Animate a file a simulation is still writing, until it completes.")
@click.pass_context
def animate(ctx, file, output, runs, fps, every, projection, trails, follow):
    """A movie of the particles of each run of FILE, side by side, over the loss curves of every run."""
    selected = [name.strip() for name in runs.split(",") if name.strip()] if runs else None
    with usage_errors(file):
        result = mf.animate(file, output, runs=selected, fps=fps, every=every, projection=projection,
                             trails=trails, follow=follow, log=log.debug)
    if result.interrupted:
        click.echo(f"interrupted: {result.output} holds the {result.frames} frames drawn so far", err=True)
        sys.exit(130)
    if not ctx.obj["quiet"]:
        click.echo(f"wrote {result.output}: {result.frames} frames", err=True)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="The figure: .png, .pdf or .svg. Default: FILE.png.")
@click.pass_context
def plot(ctx, file, output):
    """Loss, relative displacement, kernel distance and gap to the ntk run of every run of FILE, in one figure."""
    with usage_errors(file):
        written = mf.plot(file, output)
    if not ctx.obj["quiet"]:
        click.echo(f"wrote {written}", err=True)


@main.command()
@click.argument("sweep_file", metavar="SWEEP")
@click.option("-o", "--output", "directory", type=click.Path(file_okay=False),
              help="The sweep's directory (default: ./NAME): points/*.h5, results.csv, results.h5.")
@click.option("--workers", type=click.IntRange(min=1),
              help="Worker processes (default: the CPU count, at most one per point).")
@click.option("--threads", type=click.IntRange(min=1),
              help="Numba threads per worker (default: chosen by measurement up to CPUs / workers; 1 on a Dask "
                   "scheduler).")
@click.option("--engine", type=click.Choice(["process", "dask"]), default="process", show_default=True,
              help="A local process pool, or a Dask LocalCluster of --workers processes (the dask extra).")
@click.option("--scheduler", metavar="ADDRESS", help="Run on the Dask cluster of this scheduler, e.g. tcp://host:8786.")
@click.option("--resume", is_flag=True, help="Continue a sweep: run only the points not complete.")
@click.option("--dry-run", is_flag=True, help="Validate every point and show the grid; run nothing.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Edit the base scenario as simulate --set does, e.g. --set train.t_end=2.")
@click.option("--grid", "grid_options", multiple=True, metavar="KEY=V1,V2,...",
              help="Replace or add a grid axis, values read as YAML, e.g. --grid model.width=64,128; on an "
                   "axis with labels (label: value), the labels of the points to keep.")
@click.pass_context
def sweep(ctx, sweep_file, directory, workers, threads, engine, scheduler, resume, dry_run, overrides, grid_options):
    """Run every point of the grid of SWEEP (a YAML file, or a bundled study's name), one file per point."""
    from .sweeps.grid import parse_grid_options

    quiet = ctx.obj["quiet"]
    with usage_errors():
        the_sweep = mf.load_sweep(sweep_file, overrides=overrides, axes=parse_grid_options(grid_options))
        directory = Path(directory or the_sweep.name)
        if dry_run:
            click.echo(the_sweep.describe(directory))
            return
        try:
            with sigterm_as_interrupt():
                result = mf.sweep(the_sweep, output=directory, workers=workers, threads=threads, engine=engine,
                                  scheduler=scheduler, resume=resume, progress=not quiet,
                                  log=log.info)
        except SweepFailed as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
    if result.interrupted:
        click.echo(f"interrupted: {directory} holds {len(result.table)} of {len(the_sweep.points)} points; "
                   f"continue with --resume", err=True)
        sys.exit(130)
    log.info(f"{the_sweep.name}: {result.ran} point(s) run in {result.seconds:.1f} s, "
             f"{result.skipped} already complete, {result.failed} failed"
             f"{' (reasons in results.csv)' if result.failed else ''}; wrote {directory}/results.csv")
    if result.unconverged:
        log.info(f"{len(result.unconverged)} complete point(s) ran to t_end with the loss above train.stop_loss "
                 f"(column ended of results.csv; meanfield analyze names them)")


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--measure", default="displacement_w", show_default=True,
              help="The final measure to fit (any measure of the runs, e.g. loss_test, wasserstein2).")
@click.option("--against", default="model.width", show_default=True, metavar="KEY",
              help="The grid key on the x axis (a numeric axis: model.width, data.n_train, an alpha, ...).")
@click.option("--runs", metavar="NAME,NAME", help="The runs to fit (default: every run that has the measure).")
@click.option("--figure", "figure_path", type=click.Path(dir_okay=False),
              help="Also draw the measure against KEY with the fitted laws: .png, .pdf or .svg.")
@click.option("--phase-diagram", "phase_path", type=click.Path(dir_okay=False),
              help="Also draw Luo et al.'s (gamma, gamma') plane: each width family at its point, coloured "
                   "by its measured phase, over the published boundary.")
@click.option("--phases-figure", "phases_path", type=click.Path(dir_okay=False),
              help="With a dt_factor axis: also draw lambda_T / lambda_0 and the phase (lazy, catapult, "
                   "diverged) of every point against c.")
@click.option("--min", "low", type=float, help="Fit only the points with KEY >= this value.")
@click.option("--max", "high", type=float, help="Fit only the points with KEY <= this value.")
@click.option("--threshold", type=float, metavar="LEVEL",
              help="Also find where the measure falls below LEVEL along KEY (e.g. the n a test loss needs).")
@click.option("--by", metavar="KEY2", help="With --threshold: fit how that crossing scales with KEY2 (e.g. data.dim).")
def analyze(directory, measure, against, runs, figure_path, phase_path, phases_path, low, high, threshold, by):
    """Power laws of a sweep's final measure against a grid key, with 95% intervals, the m -> infinity
    limit, and the regime each width family is in (writes DIRECTORY/analysis.csv). A sweep with a
    dt_factor axis: also the phase of every point and their edges along c (DIRECTORY/phases.csv)."""
    selected = [name.strip() for name in runs.split(",") if name.strip()] if runs else None
    with usage_errors():
        click.echo(str(mf.analyze(directory, measure=measure, against=against, runs=selected, within=(low, high),
                                  threshold=threshold, by=by, figure=figure_path, phase_diagram=phase_path,
                                  phases_figure=phases_path)))


@main.command()
@click.argument("name", required=False)
@click.option("--list", "listing", is_flag=True, help="List the bundled studies and what each reproduces.")
@click.option("--quick", is_flag=True,
              help="Run the study's reduced check (seconds to a minute) instead of the full study.")
@click.option("-o", "--output", "directory", type=click.Path(file_okay=False),
              help="The study's directory (default: ./NAME, or ./NAME_quick with --quick); its figure is DIR/NAME.png.")
@click.option("--workers", type=click.IntRange(min=1),
              help="Worker processes of a full study's sweep (default: the CPU count).")
@click.option("--resume", is_flag=True, help="Continue the study in DIR: run only what is not complete, then report.")
def study(name, listing, quick, directory, workers, resume):
    """Run the bundled study NAME, print its table beside the published values and draw its figure."""
    from .studies import get, studies

    with usage_errors():
        if listing or name is None:
            if name is not None:
                raise UsageError("--list lists every study: give it no NAME")
            if not listing:
                raise UsageError("give a study's NAME, or --list to see them")
            for entry in studies().values():
                click.echo(f"{entry.name:<22} {entry.kind:<8} {entry.full_time:<18} {entry.title}")
            return
        entry = get(name)
        directory = Path(directory or (f"{name}_quick" if quick else name))
        result = entry.run(quick=quick, output=directory, workers=workers, resume=resume)
        click.echo(str(result))
        click.echo(f"figure: {result.figure(directory / f'{name}.png')}")


@main.command()
def scenarios():
    """The bundled scenarios and sweeps, one line each (the studies: meanfield study --list)."""
    for name, summary in mf.bundled_scenarios().items():
        click.echo(f"{name:<24} {summary}")
    studies = mf.bundled_sweeps()
    if studies:
        click.echo("\nsweeps (meanfield sweep NAME):")
        for name, summary in studies.items():
            click.echo(f"{name:<24} {summary}")
    click.echo("\nstudies, each beside its published values: meanfield study --list")


if __name__ == "__main__":  # pragma: no cover
    main()
