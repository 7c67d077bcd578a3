"""``meanfield animate``: the particles of each run moving, side by side, over the loss curves.

One panel per particle run (solver ``particles`` or ``tangent``): each neuron is a dot at
its input weights w_i, projected to a plane, red where its output weight a_i > 0 and blue
where a_i < 0, its area proportional to its mass (`mass`): |a_i| ||(w_i, b_i)|| for a
positively 1-homogeneous activation (relu, linear), the weight the mean-field measure
really carries, since a relu neuron's output depends on a_i w_i only through that product
and its direction; |a_i| ||(w_i, b_i)||^2 for quadratic; |a_i| otherwise. Teacher neurons
are stars on dashed rays from the origin (for relu only their direction matters), coloured
like the particles by the sign of their output weight a*_j (red > 0, blue < 0) and drawn
over them. Beneath the panels, the train and test loss of every run of the file (``ntk``
included), with a cursor at the frame's time.

The plane (`choose_projection`): d = 1 has none to choose, so its panels show (w_i, a_i);
d = 2 shows the first two coordinates; with a teacher in d > 2, a plane of the teacher's
span (`teacher_plane`): the span itself for two teacher neurons, for three or more the
plane that puts them around a circle, one ray each, so that neurons gathering on a teacher
neuron fall on its ray; with one teacher neuron, its direction and the main direction of the
final rich particles orthogonal to it. Without a teacher, the principal plane of the final
rich particles (mass-weighted, through the origin). One plane serves every panel and frame.

Frames are read from the file one at a time and drawn by updating the same artists, and
the GIF is written as it goes (`GifWriter`), so memory does not grow with the number of
frames. MP4 goes through the ffmpeg that the ``imageio-ffmpeg`` package ships (the
``video`` extra). ``follow=True`` animates a file a simulation is still writing: it
re-opens the file every `POLL_SECONDS`, draws each frame once every shown run has reached
it, and stops when every run of the scenario is in the file and no longer running.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from solvers.catalog import HOMOGENEITY

from ..errors import UsageError
from ..model.kinds import particle_solvers
from ..storage import Frame, Series, Trajectory, open_trajectory
from ..storage.layout import lacks_test_set
from .figures import FIT_TITLE_NO_TEST, draw_losses, run_colors

PARTICLE_SOLVERS = particle_solvers()
"""The solvers whose runs have particles (the table of run kinds, meanfield.model.kinds)."""
PROJECTIONS = ("auto", "first2", "teacher", "pca")
POSITIVE, NEGATIVE = "#d62728", "#1f77b4"
TRAIL_FRAMES = 12
"""A trail shows the last this many frames of each particle (memory flat in the frame count)."""
POLL_SECONDS = 1.0
"""How often ``follow`` re-opens a live file."""
MAX_FAILED_POLLS = 30
"""``follow`` gives up after this many polls in a row that could not read the file."""


# ----------------------------------------------------------------------------- what the file holds
class PanelRun(NamedTuple):
    """One shown run: its snapshot times (complete frames), whether it has stopped writing,
    and its fit measure (training loss, or population risk) for the panel's title."""

    name: str
    times: np.ndarray
    finished: bool
    fit: tuple[str, Series] | None


@dataclass
class Contents:
    """What a movie needs to know of the file now (re-read at every poll of a live file)."""

    runs: list[str]  # every run, planned or in the file, in the scenario's order
    panels: list[PanelRun]
    finished: bool
    dim: int
    activation: str
    teacher: np.ndarray | None  # the teacher's input weights, rows are neurons
    teacher_a: np.ndarray | None  # and its output weights
    t_end: float
    title: str

    def snapshot_times(self) -> np.ndarray:
        """Every snapshot time of the shown runs (they share one schedule; one may stop early)."""
        times = [p.times for p in self.panels if len(p.times)]
        return np.unique(np.concatenate(times)) if times else np.empty(0)

    def ready(self, t: float) -> bool:
        """Every shown run has reached time t or has stopped."""
        return all(p.finished or (len(p.times) and p.times[-1] >= t) for p in self.panels)


def choose_panels(trajectory: Trajectory, selected: list[str] | None) -> list[str]:
    """The particle runs to show (all of them unless ``selected``); a clear error if there are none."""
    runs = trajectory.planned_runs
    records_particles = (trajectory.scenario_dict.get("record") or {}).get("particles", True)
    in_file = trajectory.runs
    where = trajectory.path or trajectory.name

    def has_particles(name):
        if name in in_file:
            return trajectory[name].has_particles
        return runs[name] in PARTICLE_SOLVERS and records_particles

    described = ", ".join(f"{name} ({solver})" for name, solver in runs.items()) or "none"
    for name in selected or ():
        if name not in runs:
            raise UsageError(f"{where} has no run {name!r} (runs: {described})")
        if not has_particles(name):
            raise UsageError(f"{where}: run {name!r} has no particle trajectory to animate "
                             f"(solver {runs[name]}); `meanfield plot` draws its measures")
    panels = list(selected) if selected else [name for name in runs if has_particles(name)]
    if not panels:
        raise UsageError(f"{where} has no particle trajectory to animate (runs: {described}); "
                         "an ntk run records predictions only: `meanfield plot` draws its measures")
    return panels


def read_contents(trajectory: Trajectory, panels: list[str]) -> Contents:
    """The shown runs' snapshot times, losses and status; the teacher, dimension and activation."""
    scenario = trajectory.scenario_dict
    in_file = trajectory.runs
    shown = [_panel_run(trajectory, name) if name in in_file else PanelRun(name, np.empty(0), False, None)
             for name in panels]
    t_end = float((scenario.get("train") or {}).get("t_end") or 0.0)
    latest = max((float(p.times[-1]) for p in shown if len(p.times)), default=0.0)
    return Contents(
        runs=list(trajectory.planned_runs), panels=shown, finished=trajectory.finished, **_inputs(trajectory),
        activation=str((scenario.get("model") or {}).get("activation", "relu")),
        t_end=max(t_end, latest), title=trajectory.name,
    )


def _panel_run(trajectory: Trajectory, name: str) -> PanelRun:
    run = trajectory[name]
    if not run.has_particles:
        return PanelRun(name, np.empty(0), True, None)
    fit = run.fit_measure
    return PanelRun(name, run.times, run.finished, None if fit is None else (fit, run.series(fit)))


def mass(frame: Frame, activation: str) -> np.ndarray:
    """The weight each neuron carries: |a_i| ||(w_i, b_i)||^k for a k-homogeneous activation, else |a_i|."""
    k = HOMOGENEITY.get(activation, 0)
    if k == 0:
        return np.abs(frame.a)
    squared = np.einsum("ij,ij->i", frame.W, frame.W) + (frame.b**2 if frame.b is not None else 0.0)
    return np.abs(frame.a) * squared ** (k / 2)


# ----------------------------------------------------------------------------- the plane
class Projection(NamedTuple):
    """Rows of ``basis`` span the plane (None: d = 1, the (w, a) plane); axis labels; a description."""

    basis: np.ndarray | None
    labels: tuple[str, str]
    description: str

    def points(self, frame: Frame) -> np.ndarray:
        """[m, 2] coordinates of the particles in the plane."""
        if self.basis is None:
            return np.column_stack([frame.W[:, 0], frame.a])
        return frame.W @ self.basis.T


def _inputs(trajectory: Trajectory) -> dict:
    """The input dimension and the teacher's input weights (rows) and output weights, which fix
    the plane and the stars: written before any run, so reading them never meets a snapshot
    being written."""
    teacher = trajectory.teacher
    return dict(dim=int((trajectory.scenario_dict.get("data") or {}).get("dim", 2)),
                teacher=None if teacher is None else teacher.W.astype(np.float64),
                teacher_a=None if teacher is None else np.atleast_1d(teacher.a).astype(np.float64))


def check_projection(kind: str, dim: int, teacher: np.ndarray | None) -> str:
    """The projection ``kind`` resolves to for inputs of dimension ``dim`` and this teacher
    (``auto`` chooses); a clear error where it cannot apply."""
    d = dim
    if kind not in PROJECTIONS:
        raise UsageError(f"--projection {kind}: use one of {', '.join(PROJECTIONS)}")
    if d == 1:
        if kind != "auto":
            raise UsageError(f"--projection {kind}: the inputs are 1-D, so the panels show the (w_i, a_i) plane; "
                             "use --projection auto")
        return "weights"
    if kind == "teacher" and teacher is None:
        raise UsageError("--projection teacher: the file has no teacher (/data/teacher); use auto, first2 or pca")
    if kind == "auto":
        return "first2" if d == 2 else "teacher" if teacher is not None else "pca"
    return kind


def choose_projection(kind: str, contents: Contents, reference: Callable[[], Frame | None]) -> Projection:
    """The plane for ``kind`` (auto | first2 | teacher | pca); ``reference()`` gives the final rich particles."""
    kind = check_projection(kind, contents.dim, contents.teacher)
    if kind == "weights":
        return Projection(None, ("input weight w_i", "output weight a_i"), "(w_i, a_i) plane")
    if kind == "first2":
        return Projection(np.eye(2, contents.dim), ("w_i[0]", "w_i[1]"), "first two coordinates of w_i")
    if kind == "teacher":
        return teacher_plane(contents.teacher, reference)
    frame = reference()
    if frame is None:
        raise UsageError("--projection pca: no particles recorded yet to find the principal plane in")
    basis = _principal_directions(frame.W, mass(frame, contents.activation), 2)
    return Projection(basis, ("principal direction 1", "principal direction 2"),
                      "principal plane of the final rich particles")


def teacher_plane(teacher: np.ndarray, reference: Callable[[], Frame | None]) -> Projection:
    """The plane of the ``teacher`` projection (rows of ``teacher`` are the neurons' w*_j).

    Teacher directions of rank 2: their span, where each neuron is drawn exactly. Rank 3 or
    more: `_polygon_plane`. Rank 1: the teacher direction and the main direction, orthogonal
    to it, of ``reference()`` (the final rich particles).
    """
    _, singular, vt = np.linalg.svd(teacher, full_matrices=False)
    rank = int(np.sum(singular > 1e-8 * singular[0]))
    if rank == 2:
        return Projection(vt[:2], ("teacher direction 1", "teacher direction 2"), "span of the teacher neurons")
    if rank >= 3:
        polygon = _polygon_plane(teacher)
        if polygon is not None:
            return polygon
        return Projection(vt[:2], ("teacher direction 1", "teacher direction 2"),
                          "main plane of the teacher neurons")
    u = vt[0]
    frame = reference()
    d = teacher.shape[1]
    if frame is not None:
        rest = frame.W - np.outer(frame.W @ u, u)
        v = _principal_directions(rest, np.abs(frame.a), 1)[0]
    else:
        v = np.zeros(d)
    if np.linalg.norm(v) < 1e-8:  # the particles lie on the teacher's line: any orthogonal direction
        v = np.linalg.svd(np.eye(d) - np.outer(u, u))[2][0]
    v = v - (v @ u) * u
    return Projection(np.stack([u, v / np.linalg.norm(v)]), ("teacher direction", "main other direction"),
                      "teacher direction and the main orthogonal direction of the final rich particles")


def _polygon_plane(teacher: np.ndarray) -> Projection | None:
    """A plane in which the k >= 3 teacher neurons are spread around a circle.

    With D the teacher's unit directions (rows) and P the k vertices of a regular polygon,
    p_j = (cos 2 pi j / k, sin 2 pi j / k), the least-squares map B = pinv(D) P (d x 2, so
    that D B ~ P) made orthonormal by its polar factor. For orthonormal rows this is exact:
    neuron j projects to sqrt(2 / k) |w*_j| p_j, and a particle along w*_j falls on its ray.
    None if B has rank below 2 (then the caller uses the teacher's main plane).
    """
    k = len(teacher)
    directions = teacher / np.linalg.norm(teacher, axis=1, keepdims=True)
    angles = 2 * np.pi * np.arange(k) / k
    B = np.linalg.pinv(directions) @ np.column_stack([np.cos(angles), np.sin(angles)])
    u, singular, vt = np.linalg.svd(B, full_matrices=False)
    if singular[1] <= 1e-8 * singular[0]:
        return None
    return Projection((u @ vt).T, ("teacher plane 1", "teacher plane 2"),
                      f"teacher plane: its {k} neurons on a circle")


def _principal_directions(W: np.ndarray, weights: np.ndarray, count: int) -> np.ndarray:
    """The top ``count`` eigenvectors of sum_i weights_i w_i w_i^T (rows)."""
    moment = (W * weights[:, None]).T @ W
    values, vectors = np.linalg.eigh(moment)
    return vectors[:, np.argsort(values)[::-1][:count]].T


def reference_frame(trajectory: Trajectory, contents: Contents) -> Frame | None:
    """The last recorded frame of the rich run ('rich' if shown, else the first shown run)."""
    names = [p.name for p in contents.panels if len(p.times)]
    if not names:
        return None
    name = "rich" if "rich" in names else names[0]
    panel = next(p for p in contents.panels if p.name == name)
    return trajectory[name].frame(len(panel.times) - 1)


# ----------------------------------------------------------------------------- the figure
@dataclass
class PanelArtists:
    """The artists of one panel, updated in place at every frame."""

    ax: object
    dots: object
    trails: object | None
    stars: object | None  # the teacher neurons, drawn over the dots
    history: deque = field(default_factory=lambda: deque(maxlen=TRAIL_FRAMES))


class MovieFigure:
    """The figure of a movie: a panel per shown run over the loss curves.

    `show(t)` updates the artists that change (dots, trails, titles, the cursor) and
    `render()` draws them over a saved image of everything else (axes, ticks, loss curves),
    which is drawn once (and again when a live file's loss curves grow).
    """

    def __init__(self, trajectory: Trajectory, contents: Contents, projection: Projection, *, trails: bool, dpi: int,
                 limits: tuple, size_reference: float, particles: int):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        n = len(contents.panels)
        width, height = movie_size(n, dpi)
        self.fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, layout="constrained")
        FigureCanvasAgg(self.fig)
        grid = self.fig.add_gridspec(2, n, height_ratios=[2.0, 1.0])
        self.projection, self.activation = projection, contents.activation
        self.colors = run_colors(contents.runs)
        self.base_area = float(np.clip(2500.0 / max(particles, 1), 1.0, 25.0))
        self.size_reference = size_reference
        self.panels = {p.name: self._panel(self.fig.add_subplot(grid[0, i]), p.name, contents, limits, trails)
                       for i, p in enumerate(contents.panels)}
        self.loss_ax = self.fig.add_subplot(grid[1, :])
        self._loss_axes(trajectory, contents)
        self._legend(projection, contents)
        self.fig.canvas.draw()  # lay out once; the layout then stays fixed while titles change
        self.fig.set_layout_engine("none")
        self.moving = [self.cursor]
        for artists in self.panels.values():
            self.moving += [a for a in (artists.trails, artists.dots, artists.stars, artists.ax.title)
                            if a is not None]
        for artist in self.moving:
            artist.set_animated(True)  # left out of the background
        self._save_background()

    def _save_background(self) -> None:
        self.fig.canvas.draw()
        self._background = self.fig.canvas.copy_from_bbox(self.fig.bbox)

    def render(self) -> np.ndarray:
        """The current frame, [height, width, 4] RGBA (a view of the canvas: copy it to keep it)."""
        canvas = self.fig.canvas
        canvas.restore_region(self._background)
        for artist in self.moving:
            self.fig.draw_artist(artist)
        return np.asarray(canvas.buffer_rgba())

    def _panel(self, ax, name, contents, limits, trails) -> PanelArtists:
        from matplotlib.collections import LineCollection

        ax.set_xlim(*limits[0])
        ax.set_ylim(*limits[1])
        if self.projection.basis is not None:
            ax.set_aspect("equal")
        ax.set_xlabel(self.projection.labels[0], fontsize="small")
        ax.set_ylabel(self.projection.labels[1], fontsize="small")
        ax.tick_params(labelsize="small")
        ax.axhline(0, color="0.85", lw=0.6, zorder=0)
        ax.axvline(0, color="0.85", lw=0.6, zorder=0)
        ax.set_title(name, color=self.colors[name], fontsize="medium")
        lines = LineCollection([], linewidths=0.5, alpha=0.35, zorder=1) if trails else None
        if lines is not None:
            ax.add_collection(lines)
        dots = ax.scatter(np.zeros(0), np.zeros(0), s=np.zeros(0), linewidths=0, alpha=0.8, zorder=2)
        stars = self._teacher(ax, contents, limits)
        return PanelArtists(ax, dots, lines, stars)

    def _teacher(self, ax, contents, limits):
        """The teacher neurons in the colour of their a*_j's sign: a line at w*_j for d = 1, else a
        dashed ray from the origin and a star at w*_j (returned: it is drawn over the particles)."""
        if contents.teacher is None:
            return None
        colors = sign_colors(contents.teacher_a)
        if self.projection.basis is None:  # d = 1: the teacher's input weights on the w axis
            for w, color in zip(contents.teacher[:, 0], colors):
                ax.axvline(w, color=color, ls="--", lw=0.9, zorder=3)
            return None
        points = contents.teacher @ self.projection.basis.T
        reach = 2 * max(abs(v) for pair in limits for v in pair)
        for (x, y), color in zip(points, colors):
            norm = np.hypot(x, y) or 1.0
            ax.plot([0, reach * x / norm], [0, reach * y / norm], color=color, ls="--", lw=0.8, alpha=0.6,
                    zorder=1)
        return ax.scatter(points[:, 0], points[:, 1], s=180, marker="*", c=colors, edgecolors="k",
                          linewidths=0.8, zorder=3)

    def _loss_axes(self, trajectory, contents):
        ax = self.loss_ax
        self.loss_lines = draw_losses(ax, trajectory, contents.runs, self.colors)
        self.cursor = ax.axvline(0.0, color="k", lw=1.0)
        ax.set_xlim(0.0, contents.t_end or 1.0)
        ax.set_xlabel("model time t")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small", loc="upper right", ncols=min(len(contents.runs), 3))
        no_test = lacks_test_set(trajectory.h5)
        ax.set_title(FIT_TITLE_NO_TEST if no_test else "train (solid) and test (dashed) loss, or population risk",
                     fontsize="small")

    def _legend(self, projection, contents):
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], ls="", marker="o", color=POSITIVE, label="$a_i > 0$"),
                   Line2D([], [], ls="", marker="o", color=NEGATIVE, label="$a_i < 0$")]
        if contents.teacher is not None:
            signs = {"$a^*_j > 0$": POSITIVE, "$a^*_j < 0$": NEGATIVE}
            present = set(sign_colors(contents.teacher_a))
            for label, color in signs.items():
                if color not in present:
                    continue
                if projection.basis is None:
                    handles.append(Line2D([], [], ls="--", color=color, lw=0.9, label=f"teacher's $w^*_j$, {label}"))
                else:
                    handles.append(Line2D([], [], ls="", marker="*", color=color, mec="k", mew=0.8, ms=12,
                                          label=f"teacher neuron, {label}"))
        k = HOMOGENEITY.get(self.activation, 0)
        area = "$|a_i|$" if k == 0 else "$|a_i|\\,|w_i|$" if k == 1 else f"$|a_i|\\,|w_i|^{k}$"
        self.fig.suptitle(f"{contents.title}: each neuron at its input weights ({projection.description}); "
                          f"area $\\propto$ {area}", fontsize="medium")
        self.fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize="small",
                        frameon=False)

    def update_losses(self, trajectory: Trajectory, contents: Contents) -> None:
        """Re-read the loss curves (a live file grows, and gains runs) and rescale their axis."""
        drawn = {name for name, _ in self.loss_lines}
        new = [name for name in contents.runs if name not in drawn]
        if new:
            self.loss_lines.update(draw_losses(self.loss_ax, trajectory, new, self.colors))
            self.loss_ax.legend(fontsize="small", loc="upper right", ncols=min(len(contents.runs), 3))
        for (name, measure), line in self.loss_lines.items():
            series = trajectory[name].series(measure)
            keep = np.isfinite(series.value) & (series.value > 0)
            line.set_data(series.time[keep], series.value[keep])
        self.loss_ax.relim()
        self.loss_ax.autoscale_view(scalex=False)
        self._save_background()

    def show(self, trajectory: Trajectory, contents: Contents, t: float) -> None:
        """Update every artist to model time t: each panel shows its last snapshot at or before t."""
        for panel in contents.panels:
            self._show_panel(trajectory, panel, self.panels[panel.name], t)
        self.cursor.set_xdata([t, t])

    def _show_panel(self, trajectory: Trajectory, run: PanelRun, artists: PanelArtists, t: float) -> None:
        index = int(np.searchsorted(run.times, t, side="right")) - 1
        if index < 0:
            artists.dots.set_offsets(np.zeros((0, 2)))
            artists.ax.set_title(f"{run.name}: no snapshot yet", color=self.colors[run.name], fontsize="medium")
            return
        frame = trajectory[run.name].frame(index)
        points = self.projection.points(frame)
        colors = sign_colors(frame.a)
        artists.dots.set_offsets(points)
        artists.dots.set_sizes(self.area(frame))
        artists.dots.set_facecolors(colors)
        if artists.trails is not None:
            artists.history.append(points)
            artists.trails.set_segments(np.stack(list(artists.history), axis=1))
            artists.trails.set_color(colors)
        fit = "" if run.fit is None else f"   {FIT_WORDS[run.fit[0]]} {_value_at(run.fit[1], run.times[index]):.3g}"
        artists.ax.set_title(f"{run.name}   t = {run.times[index]:.3g}{fit}", color=self.colors[run.name],
                             fontsize="medium")

    def area(self, frame: Frame) -> np.ndarray:
        """Dot areas: proportional to mass, the first frame's mean mass drawn at `base_area`."""
        relative = mass(frame, self.activation) / self.size_reference
        return self.base_area * np.clip(relative, 0.0, 8.0)


def sign_colors(a: np.ndarray) -> np.ndarray:
    """The colour of each output weight's sign: `POSITIVE` (red) where a >= 0, else `NEGATIVE` (blue)."""
    return np.where(np.asarray(a) >= 0, POSITIVE, NEGATIVE)


FIT_WORDS = {"loss_train": "train loss", "risk": "risk"}


def _value_at(series: Series, t: float) -> float:
    if not len(series.time):
        return float("nan")
    index = int(np.searchsorted(series.time, t, side="right")) - 1
    return float(series.value[max(index, 0)])


def movie_size(panels: int, dpi: int) -> tuple[int, int]:
    """Width and height in pixels of a movie of ``panels`` panels: 4 inches a panel, even counts (h264 needs them)."""

    def even(inches):
        return max(2, 2 * int(round(inches * dpi / 2)))

    return even(max(4.0 * panels, 7.6) + 0.4), even(6.8)


def axis_limits(frames: list[np.ndarray], teacher_points: np.ndarray | None, equal: bool, margin: float) -> tuple:
    """Fixed, symmetric limits holding nearly every particle of ``frames`` and every teacher neuron."""
    points = np.concatenate(frames) if frames else np.zeros((1, 2))
    reach = np.quantile(np.abs(points), 0.995, axis=0) if len(points) else np.ones(2)
    if teacher_points is not None and len(teacher_points):
        reach = np.maximum(reach, np.abs(teacher_points).max(axis=0))
    reach = np.where(reach > 0, reach, 1.0) * margin
    if equal:
        reach[:] = reach.max()
    return ((-reach[0], reach[0]), (-reach[1], reach[1]))


# ----------------------------------------------------------------------------- writers
class GifWriter:
    """A GIF written frame by frame (matplotlib's PillowWriter keeps every frame in memory).

    One global palette, taken from the first frame (every artist is drawn in it), and each
    later frame cropped to the box where it differs from the one before.
    """

    COLORS = 128

    def __init__(self, fps: int):
        self.duration_ms = 1000.0 / fps
        self.frames = 0

    @contextmanager
    def saving(self, outfile, size):
        self._palette, self._previous = None, None
        with open(outfile, "wb") as self._file:
            try:
                yield self
            finally:
                self._file.write(b";")  # the GIF trailer: what was written is a valid GIF

    def write(self, rgba: np.ndarray) -> None:
        from PIL import GifImagePlugin, Image

        image = Image.fromarray(rgba[..., :3])
        if self._palette is None:
            self._palette = image.quantize(self.COLORS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
            self._file.write(self._header(image.size))
        frame = image.quantize(palette=self._palette, dither=Image.Dither.NONE)
        pixels = np.asarray(frame)
        box = _changed_box(self._previous, pixels)
        self._previous = pixels
        for chunk in GifImagePlugin.getdata(frame.crop(box), offset=box[:2], duration=self.duration_ms, disposal=1):
            self._file.write(chunk)
        self.frames += 1

    def _header(self, size) -> bytes:
        palette = bytes(self._palette.getpalette()[:768]).ljust(768, b"\0")
        screen = b"GIF89a" + struct.pack("<HHBBB", *size, 0xF7, 0, 0)  # 256-entry global colour table
        loop = b"!\xff\x0bNETSCAPE2.0\x03\x01" + struct.pack("<H", 0) + b"\0"  # loop forever
        return screen + palette + loop


def _changed_box(previous: np.ndarray | None, pixels: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the pixels that differ from ``previous`` (all of them at first)."""
    if previous is None:
        return (0, 0, pixels.shape[1], pixels.shape[0])
    changed = previous != pixels
    rows, columns = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    if not len(rows):
        return (0, 0, 1, 1)
    return (int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1)


class Mp4Writer:
    """H.264 through the ffmpeg binary that the ``imageio-ffmpeg`` package ships, frames piped as they come."""

    def __init__(self, fps: int):
        try:
            import imageio_ffmpeg
        except ImportError:
            raise UsageError("writing MP4 needs the ffmpeg that the imageio-ffmpeg package ships: "
                             "pip install 'meanfield[video]' (or write a .gif)") from None
        self._ffmpeg, self.fps, self.frames = imageio_ffmpeg, fps, 0

    @contextmanager
    def saving(self, outfile, size):
        self._pipe = self._ffmpeg.write_frames(str(outfile), size, pix_fmt_in="rgba", fps=self.fps,
                                               codec="libx264", macro_block_size=2, ffmpeg_log_level="error")
        self._pipe.send(None)  # start ffmpeg
        try:
            yield self
        finally:
            self._pipe.close()

    def write(self, rgba: np.ndarray) -> None:
        self._pipe.send(np.ascontiguousarray(rgba))
        self.frames += 1


WRITERS = {".gif": GifWriter, ".mp4": Mp4Writer}


def movie_writer(output: Path, fps: int):
    """The writer for ``output``'s suffix (.gif or .mp4)."""
    writer = WRITERS.get(output.suffix.lower())
    if writer is None:
        raise UsageError(f"{output}: cannot write {output.suffix or 'a file without suffix'}; "
                         f"use one of {', '.join(WRITERS)}")
    return writer(fps)


# ----------------------------------------------------------------------------- the movie
@dataclass
class Result:
    output: Path
    frames: int
    interrupted: bool = False


class Movie:
    """A movie being drawn: the settings, the figure once there is a frame, and how far it got."""

    def __init__(self, writer, open_writer: Callable, *, every: int, projection: str, trails: bool,
                 dpi: int, follow: bool):
        self.writer, self.open_writer = writer, open_writer
        self.every, self.projection_kind, self.trails, self.dpi = every, projection, trails, dpi
        self.follow = follow
        self.figure: MovieFigure | None = None
        self.drawn_until = -np.inf

    def pending(self, contents: Contents, final: bool) -> list[float]:
        """Times still to draw: every ``every``-th snapshot (and the last one once the file is final)."""
        times = contents.snapshot_times()
        chosen = list(range(0, len(times), self.every))
        if final and len(times) and chosen[-1] != len(times) - 1:
            chosen.append(len(times) - 1)
        pending = []
        for t in times[chosen]:
            if t > self.drawn_until:
                if not (final or contents.ready(t)):
                    break
                pending.append(float(t))
        return pending

    def draw(self, trajectory: Trajectory, contents: Contents, final: bool) -> None:
        """Draw every pending frame into the writer (opening it on the figure at the first frame)."""
        times = self.pending(contents, final)
        if not times:
            return
        if self.figure is None:
            self.figure = self._figure(trajectory, contents)
            self.open_writer(self.figure.render().shape[1::-1])
        elif self.follow:
            self.figure.update_losses(trajectory, contents)
        for t in times:
            self.figure.show(trajectory, contents, t)
            self.writer.write(self.figure.render())
            self.drawn_until = t

    def _figure(self, trajectory: Trajectory, contents: Contents) -> MovieFigure:
        """Choose the plane, the limits and the dot scale, and build the figure."""
        projection = choose_projection(self.projection_kind, contents, lambda: reference_frame(trajectory, contents))
        frames, first = [], None
        for panel in contents.panels:
            last = len(panel.times) - 1
            indices = {0} if self.follow else {0, last // 2, last}
            for index in sorted(i for i in indices if 0 <= i <= last):
                frame = trajectory[panel.name].frame(index)
                first = first or frame
                frames.append(projection.points(frame))
        teacher = None
        if contents.teacher is not None and projection.basis is not None:
            teacher = contents.teacher @ projection.basis.T
        limits = axis_limits(frames, teacher, projection.basis is not None, 1.6 if self.follow else 1.2)
        reference = float(np.mean(mass(first, contents.activation))) if first is not None else 1.0
        return MovieFigure(trajectory, contents, projection, trails=self.trails, dpi=self.dpi, limits=limits,
                           size_reference=reference if reference > 0 else 1.0,
                           particles=len(first.a) if first is not None else 1)


def write_movie(trajectory, output=None, *, runs: list[str] | None = None, fps: int = 10, every: int = 1,
                projection: str = "auto", trails: bool = False, follow: bool = False, dpi: int = 100,
                poll: float = POLL_SECONDS, log: Callable[[str], None] = lambda message: None) -> Result:
    """Animate the particle runs of a trajectory (a :class:`Trajectory`, or a file's path)
    into ``output`` (default: FILE.gif, or NAME.gif for an in-memory trajectory).

    ``follow`` (a path only) animates a file a simulation is still writing, re-opening it
    every ``poll`` seconds; Ctrl-C then ends the movie early: the frames drawn so far make a
    valid file (``Result.interrupted``).
    """
    given = isinstance(trajectory, Trajectory)
    if given and follow:
        raise UsageError("follow re-reads a file as a simulation writes it: give its path, not a Trajectory")
    if output is None:
        output = trajectory.default_output(".gif") if given else Path(trajectory).with_suffix(".gif")
    output = Path(output)
    if every < 1 or fps < 1:
        raise UsageError("--every and --fps must be at least 1")
    writer = movie_writer(output, fps)
    if not output.parent.is_dir():
        raise UsageError(f"{output}: no such directory {output.parent}")
    with _opened(trajectory) as opened:  # fails early on a file that is not ours, or a bad choice
        panels = choose_panels(opened, runs)
        inputs = _inputs(opened)
        check_projection(projection, inputs["dim"], inputs["teacher"])
    with ExitStack() as stack:
        movie = Movie(writer, lambda size: stack.enter_context(writer.saving(output, size)),
                      every=every, projection=projection, trails=trails, dpi=dpi, follow=follow)
        try:
            _draw_all(trajectory, movie, panels, follow, poll, log)
        except KeyboardInterrupt:
            if not follow:
                raise
            return Result(output, writer.frames, interrupted=True)
    return Result(output, writer.frames)


def _opened(trajectory):
    """A context giving the Trajectory: the one given (left open), or the file at a path (closed after)."""
    return nullcontext(trajectory) if isinstance(trajectory, Trajectory) else open_trajectory(trajectory)


def _draw_all(source, movie: Movie, panels, follow: bool, poll: float, log) -> None:
    """Draw the movie: at once from a finished file, or poll by poll from a live one until it is done."""
    failures = 0
    while True:
        try:
            with _opened(source) as trajectory:
                contents = read_contents(trajectory, panels)
                final = contents.finished or not follow
                movie.draw(trajectory, contents, final)
            failures = 0
        except (OSError, KeyError, UsageError) as exc:
            # a live file is not SWMR: a read can meet a half-written snapshot; read again later
            if not follow:
                raise
            failures += 1
            if failures >= MAX_FAILED_POLLS:
                raise UsageError(f"{source}: could not read the file {failures} times in a row ({exc})") from exc
            final = False
        if final:
            if movie.figure is None:
                raise UsageError(f"{source}: the runs {', '.join(panels)} have no snapshots to animate")
            return
        log(f"{source}: waiting for the simulation (drawn up to t = {movie.drawn_until:.4g})")
        time.sleep(poll)
