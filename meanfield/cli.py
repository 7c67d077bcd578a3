"""The command line: ``meanfield simulate | inspect | animate | plot | sweep | analyze | scenarios`` (DESIGN §5).

Usage errors (a bad key, a missing file, a file that is not ours) print one line starting
with ``Error:`` and exit with status 2; a run that diverged exits with status 1 after
marking its entry in the file as failed; Ctrl-C and SIGTERM leave a valid file that
``--resume`` continues.
"""

from __future__ import annotations

import logging
import signal
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

import click

from . import __version__
from .errors import RunFailed, UsageError

log = logging.getLogger("meanfield")


class CommandError(click.ClickException):
    """A usage error: printed as one ``Error: ...`` line, exit status 2."""

    exit_code = 2


@contextmanager
def usage_errors():
    try:
        yield
    except UsageError as exc:
        raise CommandError(str(exc)) from None


@contextmanager
def sigterm_as_interrupt():
    """SIGTERM ends a run the way Ctrl-C does: the file is closed valid and resumable."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meanfield")
@click.option("-v", "--verbose", count=True, help="More messages (debug level).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no announcements.")
@click.pass_context
def main(ctx, verbose, quiet):
    """Two-layer networks at infinite width: mean-field particles (rich) and the NTK (lazy)."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    ctx.obj = {"quiet": quiet}


@main.command()
@click.argument("scenario")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Trajectory file (default: the scenario's output).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a scenario key before validation, e.g. --set model.width=4096.")
@click.option("--resume", is_flag=True, help="Continue the runs of an interrupted file.")
@click.option("--dry-run", is_flag=True, help="Validate and show what would run; write nothing.")
@click.pass_context
def simulate(ctx, scenario, output, overrides, resume, dry_run):
    """Run every run of SCENARIO (a YAML file, or a bundled scenario's name) into one HDF5 file."""
    from . import run
    from .progress import progress_factory
    from .scenario import load_scenario
    from .bundled import scenario_path

    quiet = ctx.obj["quiet"]
    with usage_errors():
        spec = load_scenario(scenario_path(scenario), overrides)
        output = output or spec.output_path
        if resume and not Path(output).exists():
            raise UsageError(f"--resume: {output} does not exist (run without --resume first)")
        the_plan = run.plan(spec)
        if dry_run:
            click.echo(describe_plan(spec, the_plan, output))
            return
        show_bar = not quiet and sys.stderr.isatty()
        try:
            with sigterm_as_interrupt():
                reports = run.simulate(spec, output, resume=resume, log=log.info, progress=progress_factory(show_bar))
        except KeyboardInterrupt:
            click.echo(f"interrupted: {output} is valid; continue with --resume", err=True)
            sys.exit(130)
        except RunFailed as exc:
            click.echo(f"Error: {exc}", err=True)
            click.echo(f"{output} keeps every snapshot before the failure", err=True)
            sys.exit(1)
    if not quiet:
        for report in reports:
            fit = "population risk" if "risk" in report.measures else "train loss"
            loss = report.measures.get("risk", report.measures.get("loss_train", float("nan")))
            click.echo(f"{report.name}: {report.status}; t = {report.t:.4g}, {report.steps} steps, "
                       f"{fit} {loss:.4g}", err=True)
        click.echo(f"wrote {output}", err=True)


def describe_plan(spec, the_plan, output) -> str:
    lines = [f"scenario {spec.name}: {len(spec.runs)} run(s), width {spec.model.width}, "
             f"dim {spec.data.dim}, n_train {spec.data.n_train}"]
    for name, resolved in the_plan.resolved.items():
        lines.append(
            f"  {name}: {resolved.preset}: s = {resolved.s:.4g}, eta_a = {resolved.eta_a:.4g}, "
            f"eta_w = {resolved.eta_w:.4g}, a_std = {resolved.a_std:.4g}; "
            f"predicted {resolved.regime.label}: {resolved.regime.reason}"
        )
    lines += the_plan.notes
    lines.append(f"would write {output}: about {the_plan.estimated_bytes / 1e6:.3g} MB, "
                 f"{len(the_plan.times) + 1} snapshots per run")
    return "\n".join(lines)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
def inspect(file):
    """What is in a trajectory FILE: runs side by side, final measures, predicted and measured regime."""
    from . import storage

    with usage_errors():
        with storage.open_trajectory(file) as h5:
            runs = [storage.read_run(h5, name, particles=False) for name in storage.list_runs(h5)]
    click.echo(f"{file}: {len(runs)} run(s)")
    if runs:
        click.echo(describe_runs(runs))


def describe_runs(runs) -> str:
    """A table with one column per run: set-up, final measures, regime predicted and measured."""
    from .diagnostics import verdict

    rows = [("", [run.name for run in runs])]
    rows.append(("solver", [run.attrs.get("solver", "?") + (f" ({run.attrs['kernel']})" if "kernel" in run.attrs else "")
                            for run in runs]))
    rows.append(("parameterization", [str(run.attrs.get("preset", "?")) for run in runs]))
    rows.append(("status", [run.status.split(":")[0] for run in runs]))
    finals = [{k: series.value[-1] for k, series in run.measures.items() if len(series.time) and series.value.ndim == 1}
              for run in runs]
    rows.append(("t", [_number(_last_time(run)) for run in runs]))
    names = [k for k in MEASURE_ORDER if any(k in final for final in finals)]
    rows += [(name, [_number(final[name]) if name in final else "-" for final in finals]) for name in names]
    rows.append(("predicted regime", [str(run.attrs.get("predicted_regime", "?")) for run in runs]))
    verdicts = [verdict(run.attrs.get("solver", "particles"), final) for run, final in zip(runs, finals)]
    rows.append(("measured regime", [label for label, _ in verdicts]))
    width = max(12, *(len(cell) for _, cells in rows for cell in cells)) + 2
    lines = [f"{label:<20}" + "".join(f"{cell:>{width}}" for cell in cells) for label, cells in rows]
    lines.append("")
    for run, (label, reason) in zip(runs, verdicts):
        lines.append(f"{run.name}: measured {label}: {reason}")
        lines.append(f"{' ' * len(run.name)}  predicted {run.attrs.get('predicted_regime', '?')}: "
                     f"{run.attrs.get('predicted_regime_reason', '')}")
        if run.status.startswith("failed"):
            lines.append(f"{' ' * len(run.name)}  {run.status}")
    return "\n".join(lines)


MEASURE_ORDER = ("risk", "loss_train", "loss_test", "displacement_w", "displacement_a", "displacement_mean",
                 "wasserstein2", "kernel_distance", "kernel_alignment", "teacher_alignment", "gap_ntk")


def _number(value) -> str:
    return f"{value:.4g}"


def _last_time(run) -> float:
    times = [series.time[-1] for series in run.measures.values() if len(series.time)]
    return float(max(times)) if times else float("nan")


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
                                      "teacher's span, else the principal plane of the final rich particles.")
@click.option("--trails", is_flag=True, help="Draw each particle's path over the last frames.")
@click.option("--follow", is_flag=True, help="Animate a file a simulation is still writing, until it completes.")
@click.pass_context
def animate(ctx, file, output, runs, fps, every, projection, trails, follow):
    """A movie of the particles of each run of FILE, side by side, over the loss curves of every run."""
    from .animate import write_movie

    selected = [name.strip() for name in runs.split(",") if name.strip()] if runs else None
    with usage_errors():
        result = write_movie(file, output, runs=selected, fps=fps, every=every, projection=projection,
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
    from .plot import plot as plot_file

    with usage_errors():
        written = plot_file(file, output)
    if not ctx.obj["quiet"]:
        click.echo(f"wrote {written}", err=True)


@main.command()
@click.argument("sweep_file", metavar="SWEEP")
@click.option("-o", "--output", "directory", type=click.Path(file_okay=False),
              help="The sweep's directory (default: ./NAME): points/*.h5, results.csv, results.h5.")
@click.option("--workers", type=click.IntRange(min=1),
              help="Worker processes (default: the CPU count, at most one per point).")
@click.option("--threads", type=click.IntRange(min=1),
              help="Numba threads per worker (default: CPUs / workers; 1 on a Dask scheduler).")
@click.option("--engine", type=click.Choice(["process", "dask"]), default="process", show_default=True,
              help="A local process pool, or a Dask LocalCluster of --workers processes (the dask extra).")
@click.option("--scheduler", metavar="ADDRESS", help="Run on the Dask cluster of this scheduler, e.g. tcp://host:8786.")
@click.option("--resume", is_flag=True, help="Continue a sweep: run only the points not complete.")
@click.option("--dry-run", is_flag=True, help="Validate every point and show the grid; run nothing.")
@click.pass_context
def sweep(ctx, sweep_file, directory, workers, threads, engine, scheduler, resume, dry_run):
    """Run every point of the grid of SWEEP (a YAML file, or a bundled study's name), one file per point."""
    from . import sweep as sweeps

    quiet = ctx.obj["quiet"]
    with usage_errors():
        if scheduler and workers:
            raise UsageError("--workers is for local runs; with --scheduler the cluster has its own workers")
        the_sweep = sweeps.load_sweep(sweep_file)
        directory = Path(directory or the_sweep.name)
        if dry_run:
            click.echo(describe_sweep(the_sweep, directory))
            return
        use_dask = engine == "dask" or scheduler is not None
        executor = (sweeps.dask_executor(scheduler, workers, threads or 1) if use_dask else nullcontext())
        bar = PointsBar(len(the_sweep.points), enabled=not quiet and sys.stderr.isatty(), log=log.info)
        with sigterm_as_interrupt(), executor as pool, bar:
            result = sweeps.run_sweep(the_sweep, directory, executor=pool, workers=workers,
                                      threads=threads or (1 if use_dask else None), resume=resume,
                                      on_point=bar.update)
    if result.interrupted:
        click.echo(f"interrupted: {directory} holds {len(result.table)} of {len(the_sweep.points)} points; "
                   f"continue with --resume", err=True)
        sys.exit(130)
    if not quiet:
        click.echo(f"{the_sweep.name}: {result.ran} point(s) run in {result.seconds:.1f} s, "
                   f"{result.skipped} already complete, {result.failed} failed"
                   f"{' (reasons in results.csv)' if result.failed else ''}; wrote {directory}/results.csv",
                   err=True)


def describe_sweep(the_sweep, directory) -> str:
    lines = [f"sweep {the_sweep.name}: {len(the_sweep.points)} point(s), every one valid"]
    lines += [f"  {axis.key}: {', '.join(map(str, axis.labels))}" for axis in the_sweep.axes]
    first = the_sweep.points[0].scenario
    lines.append(f"  runs per point: {', '.join(first.runs)}")
    lines.append(f"would write {directory}/points/p0000.h5 ... and {directory}/results.csv, results.h5")
    return "\n".join(lines)


class PointsBar:
    """Progress across the points of a sweep: a bar on a terminal, else one log line per point."""

    def __init__(self, total: int, enabled: bool, log):
        self.total, self.enabled, self.log, self.bar, self.count = total, enabled, log, None, 0

    def __enter__(self):
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc="points", file=sys.stderr, unit="pt")
        return self

    def update(self, point, row) -> None:
        self.count += 1
        coords = ", ".join(f"{key}={value}" for key, value in point.coords.items())
        message = f"{point.id} {row['status']} ({row['seconds']:.1f} s): {coords}"
        if row["status"] != "complete":
            message += f": {row['reason']}"
        if self.bar is None:
            self.log(f"[{self.count}] {message}")
        else:
            self.bar.update()
            if row["status"] != "complete":
                self.bar.write(message, file=sys.stderr)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        return False


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
@click.option("--min", "low", type=float, help="Fit only the points with KEY >= this value.")
@click.option("--max", "high", type=float, help="Fit only the points with KEY <= this value.")
@click.option("--threshold", type=float, metavar="LEVEL",
              help="Also find where the measure falls below LEVEL along KEY (e.g. the n a test loss needs).")
@click.option("--by", metavar="KEY2", help="With --threshold: fit how that crossing scales with KEY2 (e.g. data.dim).")
def analyze(directory, measure, against, runs, figure_path, phase_path, low, high, threshold, by):
    """Power laws of a sweep's final measure against a grid key, with 95% intervals, the m -> infinity
    limit, and the regime each width family is in (writes DIRECTORY/analysis.csv)."""
    from .analysis import analyze as analyze_sweep

    selected = [name.strip() for name in runs.split(",") if name.strip()] if runs else None
    with usage_errors():
        if by and threshold is None:
            raise UsageError("--by goes with --threshold LEVEL")
        click.echo(analyze_sweep(directory, measure=measure, against=against, runs=selected,
                                 figure_path=figure_path, within=(low, high), threshold=threshold, by=by))
        if phase_path:
            from .analysis import phase_figure

            click.echo(f"wrote {phase_figure(directory, phase_path)}")


@main.command()
def scenarios():
    """The bundled scenarios and sweeps (studies), one line each."""
    from .bundled import bundled, bundled_sweeps

    for name, summary in bundled().items():
        click.echo(f"{name:<24} {summary}")
    studies = bundled_sweeps()
    if studies:
        click.echo("\nsweeps (meanfield sweep NAME):")
        for name, summary in studies.items():
            click.echo(f"{name:<24} {summary}")


if __name__ == "__main__":  # pragma: no cover
    main()
