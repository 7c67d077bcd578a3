"""Reading a trajectory file: :class:`Trajectory` and :class:`RecordedRun`.

Everything that reads a trajectory file (the public API, ``inspect``, ``plot``,
``animate``, sweeps) goes through these two classes. Arrays come back as NumPy
(:meth:`RecordedRun.series`, :meth:`RecordedRun.frame`) or as xarray objects
(:meth:`RecordedRun.measure`, :meth:`RecordedRun.particles`, :meth:`Trajectory.to_xarray`).

A file that a simulation is still writing can be read: it is opened without HDF5 file
locking, and each element is cut to the snapshots complete in all of a run's elements.
What is read is the file as it was when opened: open it again to see more.
"""

from __future__ import annotations

import math
import numbers
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Optional

import h5py
import numpy as np
import yaml

from ..config.loading import load_yaml
from ..errors import UsageError, as_path
from ..messages import did_you_mean
from ..model.data import Dataset, Teacher
from ..model.kinds import DEFAULT_SOLVER, SOLVERS, can
from ..model.measures import FIT_MEASURES, TEST_MEASURES, VECTOR_DIMS
from . import layout
from .layout import PARTICLE_ELEMENTS
from .ownership import being_written


class Series(NamedTuple):
    """One measure of one run over time, as NumPy arrays: time [T], value [T] or [T, k]."""

    time: np.ndarray
    value: np.ndarray


class Frame(NamedTuple):
    """The particles of one run at one snapshot, float64: a [m], W [m, d], b [m] or None."""

    a: np.ndarray
    W: np.ndarray
    b: Optional[np.ndarray]


# VECTOR_DIMS (meanfield.model.measures): the name of the second axis of a vector measure, read off
# the table of measures (others get '<measure>_index').


def open_trajectory(path) -> Trajectory:
    """Open the trajectory file at ``path`` read-only; a file a run is still writing (its
    writer holds its lock) as a consistent snapshot of what is complete (:func:`_open_live`)."""
    path = as_path(path, "open a trajectory")
    if being_written(path):
        return _open_live(path)
    return Trajectory(layout.open_ours(path, "r", locking=False))


LIVE_TRIES = 30
"""How many copies of a live file :func:`_open_live` takes before it gives up."""


def _open_live(path: Path) -> Trajectory:
    """A file a run is writing, read as what is complete: its bytes are copied to a private
    file (unlinked once open, so nothing is left behind) and the copy is read through, every
    object and every run's step dataset; a copy taken while the writer flushed its metadata
    fails that and is taken again. Reading the live file itself, h5py met such half-flushed
    metadata ("addr overflow") in 6 opens of 19. Earlier snapshots' bytes never change (the
    writer only appends, docs/design.md §4.1), so a copy that reads through is a consistent
    file whose every snapshot is complete up to its runs' step datasets."""
    import tempfile
    import time

    why = "?"
    for attempt in range(LIVE_TRIES):
        fd, copy = tempfile.mkstemp(prefix="meanfield-live-", suffix=".h5")
        os.close(fd)
        try:
            shutil.copyfile(path, copy)
            h5 = layout.open_ours(copy, "r")
            os.unlink(copy)  # the open file stays readable; nothing to clean up, however this process ends
            try:
                _read_through(h5)
                return Trajectory(h5, name=str(path))
            except BaseException:
                h5.close()
                raise
        except (OSError, KeyError, ValueError, RuntimeError, UsageError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if os.path.exists(copy):
                os.unlink(copy)
            if not being_written(path):  # the run ended meanwhile: the file is complete
                return Trajectory(layout.open_ours(path, "r", locking=False))
            time.sleep(min(0.005 * 2 ** attempt, 0.2))
    raise UsageError(f"{path} is being written and could not be read consistently in {LIVE_TRIES} tries (the "
                     f"last: {why}): try again")


def _read_through(h5: h5py.File) -> None:
    """Read every object's header and attributes and every run's step dataset (raises where a
    copy caught the writer halfway)."""
    def visit(name, obj):
        dict(obj.attrs)
        if isinstance(obj, h5py.Dataset):
            obj.shape
            if name.endswith("/step"):
                obj[()]
    h5.visititems(visit)  # (open_ours has checked that the copy is one of ours)


class Trajectory:
    """A trajectory file: the runs of one scenario on the same data from the same particles.

    ``traj.runs`` are the run names in the scenario's order, ``traj[name]`` a
    :class:`RecordedRun`, ``traj.data`` the data set, ``traj.scenario`` the scenario it was
    made from. A context manager (closes the file); :meth:`save` writes it to disk, which
    is how an in-memory trajectory (``meanfield.simulate(scenario)``) is kept.
    """

    def __init__(self, h5: h5py.File, name: Optional[str] = None):
        why = layout.foreign(h5)
        if why is not None:
            raise UsageError(f"{h5.filename} is not a meanfield trajectory file ({why})")
        self._file, self._filename = h5, name or h5.filename  # name: the live file a private copy was taken of
        self._in_memory = h5.driver == "core"

    @property
    def _h5(self) -> h5py.File:
        """The open file; reading a closed trajectory is a UsageError that says so."""
        if not self._file.id.valid:
            raise UsageError(f"{self._where} is closed: open it again (mf.open)" if not self._in_memory else
                             "this in-memory trajectory is closed: its runs are gone (traj.save(path) keeps them)")
        return self._file

    @property
    def _where(self) -> str:
        """How messages name this trajectory: its path, or 'trajectory NAME (in memory)'."""
        return f"trajectory {self.name!r} (in memory)" if self._in_memory else self._filename

    # ------------------------------------------------------------------ the file
    @property
    def path(self) -> Optional[str]:
        """Where the file is on disk (None for an in-memory trajectory)."""
        return None if self._in_memory else self._filename

    @property
    def h5(self) -> h5py.File:
        """The underlying h5py file (read-only: write through meanfield only)."""
        return self._h5

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> Trajectory:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def default_output(self, suffix: str) -> Path:
        """Where a picture of this trajectory goes unless told: beside its file, or
        ``<name><suffix>`` for an in-memory trajectory."""
        return Path(self.path).with_suffix(suffix) if self.path else Path(f"{self.name}{suffix}")

    def __repr__(self) -> str:
        if not self._file.id.valid:
            return f"<meanfield.Trajectory {'in memory' if self._in_memory else self._filename}: closed>"
        where = "in memory" if self._in_memory else self.path
        runs = ", ".join(f"{name} ({self[name].status})" for name in self.runs)
        return f"<meanfield.Trajectory {self.name!r} {where}: {runs or 'no runs'}>"

    def save(self, path, *, overwrite: bool = False) -> Path:
        """Write this trajectory to ``path`` (refusing to replace an existing file unless
        ``overwrite``); returns the path. The copy is written beside and moved into place."""
        path = as_path(path, "save a trajectory")
        if path.exists() and not overwrite:
            raise UsageError(f"{path} exists: pass overwrite=True to replace it")
        partial = path.with_name(path.name + ".partial")
        try:
            if self._in_memory:
                self._h5.flush()
                partial.write_bytes(self._h5.id.get_file_image())
            else:
                shutil.copyfile(self._h5.filename, partial)
            os.replace(partial, path)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise UsageError(f"{path}: cannot write the trajectory ({exc.strerror or exc})") from None
        return path

    # ------------------------------------------------------------------ the scenario
    @property
    def scenario_yaml(self) -> str:
        """The resolved scenario stored in the file, as YAML text."""
        return layout.decode_attr(self._h5["parameters"].attrs.get("scenario", ""))

    @property
    def scenario_dict(self) -> dict:
        """The stored scenario as a plain mapping (empty if it cannot be read)."""
        try:
            scenario = load_yaml(self.scenario_yaml) or {}
        except yaml.YAMLError:  # a file that is not ours, or damaged: within the parser's bounds all the same
            return {}
        return scenario if isinstance(scenario, dict) else {}

    @property
    def scenario(self):
        """The stored scenario, validated (a :class:`meanfield.Scenario`)."""
        from ..config.loading import parse_scenario

        return parse_scenario(self.scenario_yaml, source=f"{self._h5.filename}:/parameters/scenario")

    @property
    def name(self) -> str:
        return str(self.scenario_dict.get("name", Path(self._filename).stem))

    @property
    def seed(self) -> int:
        return int(self._h5["parameters"].attrs["seed"])

    # ------------------------------------------------------------------ the runs
    @property
    def runs(self) -> list[str]:
        """The runs in the file, in the order its scenario lists them (others follow, by name)."""
        present = [name for name, item in self._h5["parameters"].items() if isinstance(item, h5py.Group)]
        listed = [name for name in self.planned_runs if name in present]
        return listed + [name for name in present if name not in listed]

    @property
    def planned_runs(self) -> dict[str, str]:
        """Run name -> solver for every run of the scenario, also those not in the file yet;
        the file's own record wins where a run is there."""
        runs = {name: spec.get("solver", DEFAULT_SOLVER) if isinstance(spec, dict) else DEFAULT_SOLVER
                for name, spec in (self.scenario_dict.get("runs") or {}).items()}
        for name, item in self._h5["parameters"].items():
            if isinstance(item, h5py.Group):
                runs[name] = str(layout.decode_attr(item.attrs.get("solver", DEFAULT_SOLVER)))
        return runs

    def __getitem__(self, name: str) -> RecordedRun:
        if not isinstance(name, str) or not isinstance(self._h5["parameters"].get(name), h5py.Group):
            raise self._no_run(name)
        return RecordedRun(self._h5, name)

    def _no_run(self, name) -> UsageError:
        runs = self.runs
        listed = f"(runs: {', '.join(runs) or 'none'})"
        if not isinstance(name, str):
            return UsageError(f"{self._where}: a run is named by a str, e.g. traj[{(runs or ['rich'])[0]!r}] {listed}, "
                              f"not {type(name).__name__} {name!r}")
        return UsageError(f"{self._where} has no run {name!r} {listed}{did_you_mean(name, runs)}")

    def __iter__(self) -> Iterator[RecordedRun]:
        return (self[name] for name in self.runs)

    def __contains__(self, name: str) -> bool:
        return name in self.runs

    @property
    def finished(self) -> bool:
        """Every run of the scenario is in the file and no longer running."""
        runs = self.runs
        return all(name in runs and self[name].status != "running" for name in self.planned_runs)

    @property
    def complete(self) -> bool:
        """Every run of the scenario is in the file and complete."""
        runs = self.runs
        return bool(runs) and all(name in runs and self[name].status == "complete" for name in self.planned_runs)

    # ------------------------------------------------------------------ the data
    @property
    def data(self) -> Dataset:
        """The data set every run trained on: X_train, y_train, X_test, y_test (None in
        population mode, where there are no samples) and the teacher (None without one)."""
        group = self._h5.get("data")
        arrays = {key: group[key][()] if group is not None and key in group else None
                  for key in ("X_train", "y_train", "X_test", "y_test")}
        return Dataset(**arrays, teacher=self.teacher)

    @property
    def has_test_set(self) -> bool:
        """Whether the runs were measured on a test set (False for data without one,
        data.test_fraction 0, and for population mode)."""
        group = self._h5.get("data")
        return group is not None and "X_test" in group and group["X_test"].shape[0] > 0

    @property
    def teacher(self) -> Optional[Teacher]:
        """The teacher network (rows of W are neurons), or None."""
        group = self._h5.get("data/teacher")
        if group is None:
            return None
        return Teacher(a=group["a"][()], W=np.atleast_2d(group["W"][()]),
                       activation=str(layout.decode_attr(group.attrs.get("activation", ""))))

    # ------------------------------------------------------------------ views
    def summary(self) -> str:
        """The runs side by side: set-up, final measures, the regime predicted and measured."""
        from .summary import describe_runs

        runs = list(self)
        title = f"{self.path or self.name + ' (in memory)'}: {len(runs)} run(s)"
        if layout.lacks_test_set(self._h5):
            title += f"; {layout.NO_TEST_SET}"
        stop_loss = (self.scenario_dict.get("train") or {}).get("stop_loss", 0.0)
        return title + ("\n" + describe_runs(runs, stop_loss) if runs else "")

    def to_xarray(self):
        """The whole file as an ``xarray.DataTree``: ``/data`` (the data set and teacher) and
        one node per run, each an ``xarray.Dataset`` of its measures and particles over time."""
        import xarray as xr

        nodes = {"/": xr.Dataset(attrs={"name": self.name, "seed": self.seed, "scenario": self.scenario_yaml}),
                 "/data": self._data_dataset()}
        nodes.update({f"/{run.name}": run.to_dataset() for run in self})
        return xr.DataTree.from_dict(nodes)

    def _data_dataset(self):
        import xarray as xr

        data = self.data
        variables = {}
        for split in ("train", "test"):
            X, y = getattr(data, f"X_{split}"), getattr(data, f"y_{split}")
            if X is not None:
                variables[f"X_{split}"] = ((f"sample_{split}", "dim"), X)
                variables[f"y_{split}"] = ((f"sample_{split}",), y)
        if data.teacher is not None:
            variables["teacher_a"] = (("teacher_neuron",), data.teacher.a)
            variables["teacher_W"] = (("teacher_neuron", "dim"), data.teacher.W)
        attrs = {"teacher_activation": data.teacher.activation} if data.teacher is not None else {}
        return xr.Dataset(variables, attrs=attrs)


@dataclass(frozen=True)
class _Element:
    """One H5MD element of a run: its step, time and value datasets."""

    step: h5py.Dataset
    time: h5py.Dataset
    value: h5py.Dataset


class RecordedRun:
    """One run of a trajectory file: its settings, status, measures and particles.

    Attributes: ``name``; ``solver`` (particles | tangent | ntk); ``status`` (running,
    complete, interrupted, or 'failed: reason'); ``ended`` and ``t_stop``, how and when a
    complete run ended; ``attrs``, every resolved number of its parameterization (s, eta_a,
    eta_w, a_std, ..., predicted_regime); ``predicted_regime``; ``constants``, the run's
    scalar results that do not change in time (an ntk run with squared loss:
    ``loss_train_limit`` and ``loss_test_limit``, its t -> infinity limit), which
    :meth:`final` includes.
    """

    def __init__(self, h5: h5py.File, name: str):
        self._h5, self.name = h5, name
        params = h5[layout.parameters(name)]
        self.attrs = {key: layout.decode_attr(value) for key, value in params.attrs.items()
                      if key not in layout.PROGRESS_ATTRS}
        self.status = str(layout.decode_attr(params.attrs["status"]))
        self.ended: Optional[str] = layout.decode_attr(params.attrs["ended"]) if "ended" in params.attrs else None
        """How a complete run ended: 't_end' or 'stop_loss' (None before it is complete, and
        in files written before meanfield recorded it)."""
        self.t_stop = float(params.attrs.get("t_stop", math.nan))
        """The time the run ended at (NaN where ``ended`` is None)."""
        group = h5.get(layout.observables(name))
        self._measures = {measure: _element(group[measure]) for measure in group} if group is not None else {}
        self.constants: dict[str, float] = ({key: float(value) for key, value in group.attrs.items()}
                                            if group is not None else {})
        """Scalar results constant in time (attributes of the run's observables group)."""
        group = h5.get(layout.particles(name))
        self._particles = ({element: _element(group[element]) for element in PARTICLE_ELEMENTS if element in group}
                           if group is not None else {})
        self._elements = [*self._measures.values(), *self._particles.values()]
        self.frames = min((min(e.time.shape[0], e.value.shape[0], e.step.shape[0]) for e in self._elements),
                          default=0)
        """Snapshots complete in every element of the run."""

    def __repr__(self) -> str:
        return f"<meanfield.RecordedRun {self.label}: {self.status}, {self.frames} snapshots>"

    # ------------------------------------------------------------------ settings
    @property
    def solver(self) -> str:
        return str(self.attrs.get("solver", DEFAULT_SOLVER))

    @property
    def preset(self) -> str:
        return str(self.attrs.get("preset", "?"))

    @property
    def predicted_regime(self) -> str:
        return str(self.attrs.get("predicted_regime", "?"))

    @property
    def label(self) -> str:
        """The name with what the run is: 'rich (mean_field)', 'ntk (kernel flow, empirical)'."""
        solver = SOLVERS.get(self.solver)
        if solver is not None and solver.label:
            return f"{self.name} ({solver.label.format(kernel=self.attrs.get('kernel', '?'))})"
        if self.preset == "lazy":  # its loss is scaled by 1/alpha^2
            return f"{self.name} (lazy, alpha = {float(self.attrs['loss_scale']) ** -0.5:.4g})"
        return f"{self.name} ({self.preset})"

    @property
    def finished(self) -> bool:
        """No longer running (complete, interrupted or failed)."""
        return self.status != "running"

    # ------------------------------------------------------------------ measures
    @property
    def measures(self) -> list[str]:
        """The names of the recorded measures."""
        return list(self._measures)

    @property
    def fit_measure(self) -> Optional[str]:
        """The measure of how well the run fits: ``loss_train`` on data, ``risk`` with infinite data."""
        return next((name for name in FIT_MEASURES if name in self._measures), None)

    @property
    def times(self) -> np.ndarray:
        """The snapshot times (every element of a run shares them)."""
        self._check_open()
        return self._elements[0].time[: self.frames] if self._elements else np.empty(0)

    @property
    def t(self) -> float:
        """The time of the last snapshot (NaN if there is none)."""
        return float(self.times[-1]) if self.frames else math.nan

    def series(self, measure: str) -> Series:
        """One measure over time as NumPy arrays (complete snapshots only)."""
        element = self._element(measure)
        return Series(element.time[: self.frames], element.value[: self.frames])

    def measure(self, measure: str):
        """One measure as an ``xarray.DataArray`` over ``time`` (with ``step`` beside it); a
        vector measure has a second axis (``test_point`` for ``f_test``)."""
        import xarray as xr

        element = self._element(measure)
        value = element.value[: self.frames]
        return xr.DataArray(value, dims=("time", *self._vector_dims(measure, value.ndim)),
                            coords=self._time_coords(element), name=measure, attrs={"run": self.name})

    def final(self) -> dict[str, float]:
        """The last value of every scalar measure, and the run's :attr:`constants`."""
        self._check_open()
        if not self.frames:
            return dict(self.constants)
        last = {name: float(element.value[self.frames - 1]) for name, element in self._measures.items()
                if element.value.ndim == 1}
        return {**last, **self.constants}

    def regime_numbers(self) -> dict[str, float]:
        """The numbers behind :meth:`verdict` (docs/design.md §1.8): the final displacement_w
        and kernel_distance, loss_peak_ratio and loss_end_ratio (the fit measure's peak and
        end over its start) and, where ntk_eigenvalue_max is recorded, lambda_ratio =
        lambda_T / lambda_0."""
        from ..model.diagnostics import regime_numbers

        fit = self.fit_measure
        return regime_numbers(self.final(), self.series(fit).value if fit and self.frames else None,
                              self.series("ntk_eigenvalue_max").value
                              if "ntk_eigenvalue_max" in self._measures and self.frames else None)

    def verdict(self) -> tuple[str, str]:
        """The regime measured from :meth:`regime_numbers`: (rich | lazy | unstable | unknown,
        the numbers behind it)."""
        from ..model.diagnostics import verdict

        return verdict(self.solver, self.regime_numbers())

    def table_regime(self) -> Optional[tuple[str, str]]:
        """The row of the textbook regime table the run falls in and its regime, e.g.
        ('SP, large LR', 'rich'), or None (docs/design.md §1.8: preset and dt_factor decide)."""
        from ..model.diagnostics import table_regime

        if not can(self.solver, "tracks_kernel"):  # the table is of networks whose kernel can move
            return None
        if self.attrs.get("eta_w") == 0 and not self.attrs.get("eta_b"):  # random features (lr_w: 0): it cannot
            return None
        return table_regime(self.preset, (self.attrs.get("integrator") or {}).get("dt_factor"))

    # ------------------------------------------------------------------ particles
    @property
    def has_particles(self) -> bool:
        return bool(self._particles)

    def frame(self, index: Optional[int] = None, *, time: Optional[float] = None) -> Frame:
        """The particles at snapshot ``index`` (negative counts from the end), or at the snapshot
        nearest ``time`` (which must lie within the recorded times), float64."""
        elements = self._require_particles()
        if (index is None) == (time is None):
            raise UsageError(f"run {self.name!r}: frame takes a snapshot index, frame(-1), or a time, "
                             f"frame(time=2.5), not {'both' if time is not None else 'neither'}")
        index = self._index(index) if time is None else self._index_at(time)
        b = elements["bias"].value[index].astype(np.float64) if "bias" in elements else None
        return Frame(elements["amplitude"].value[index].astype(np.float64),
                     elements["position"].value[index].astype(np.float64), b)

    def predict(self, X, time: Optional[float] = None) -> np.ndarray:
        """What the run predicts at the inputs ``X`` [n, d] (or one input [d]) at a snapshot:
        f_t(X), shape [n], float64 (docs/design.md §4.5). ``time=None``: the last snapshot;
        a time: the snapshot nearest it, as :meth:`frame` takes it (a time outside the
        recorded range is an error).

        A particle run (``particles``, on data or infinite data): the network at the snapshot,
        f(x) = s sum_i a_i sigma(w_i . x + b_i) + c, from its recorded particles, its ``s``
        and, with an output bias, its recorded ``output_bias`` (needs record.particles).
        A ``tangent`` run: the network linearized at its first snapshot, at this one. An ``ntk``
        run: the kernel predictor at the snapshot's t, rebuilt from the stored scenario (its
        kernel between X and the training set, from the run's initial particles or in closed
        form) and the file's training set: :mod:`meanfield.model.prediction`. On the test set
        this is the run's recorded ``f_test``."""
        from solvers.activations import activation_code

        from ..model import prediction

        trajectory = Trajectory(self._h5)
        X, single = self._inputs(X, trajectory)
        if not self.frames:
            raise UsageError(f"run {self.name!r} has no snapshots yet: nothing to predict with")
        index = self.frames - 1 if time is None else self._index_at(time)
        scenario = trajectory.scenario
        kind, act = scenario.kind(scenario.runs[self.name]), activation_code(scenario.model.activation)
        s = float(self.attrs["s"])
        c = float(self.series("output_bias").value[index]) if "output_bias" in self._measures else None
        if kind.particles:
            frame = self.frame(index)
            if kind.solver == "tangent":
                f = prediction.linearized(self.frame(0), frame, X, s, act, c)
            else:
                f = prediction.network(*frame, X, s, act, c)
        else:
            f = self._kernel_prediction(trajectory, scenario, kind, X, index, act)
        return f[0] if single else f

    def _kernel_prediction(self, trajectory, scenario, kind, X, index, act) -> np.ndarray:
        """f_t(X) of an ``ntk`` run at snapshot ``index`` (:func:`meanfield.model.prediction.kernel_flow`)."""
        from types import SimpleNamespace

        from solvers.catalog import loss_code
        from solvers.integrate import make_stepper

        from ..model import prediction
        from ..model.draws import initial_draws, rng_for
        from ..model.parameterization import Resolved

        spec = scenario.runs[self.name]
        numbers = SimpleNamespace(**{key: self.attrs.get(key) for key in Resolved.__dataclass_fields__})
        draws = initial_draws(scenario, rng_for(scenario.seed, 1))
        times = self.times
        stepping = {}
        if kind.steps:
            integrator = dict(self.attrs["integrator"])
            stepping = {"stepper": make_stepper(**{**{k: v for k, v in integrator.items() if k != "dt_factor"},
                                                   **({"method": "euler", "batch_size": None}
                                                      if integrator["method"] in ("sgd", "euler_maruyama")
                                                      else {})}),
                        "save_times": times[1:index + 1], "exact_steps": integrator.get("dt_factor") is not None}
        return prediction.kernel_flow(numbers, draws, trajectory.data, X, float(times[index]), act=act,
                                      bias=scenario.model.bias, kernel=spec.kernel, ridge=spec.ridge,
                                      loss=loss_code(scenario.loss), closed_form=not kind.steps, **stepping)

    def _inputs(self, X, trajectory) -> tuple[np.ndarray, bool]:
        """X as float64 [n, d] (one input [d] as [1, d]: the flag), finite, d the data's dimension."""
        d = trajectory.scenario.data.dim
        try:
            X = np.array(X, dtype=np.float64)
        except (TypeError, ValueError):
            raise UsageError(f"predict: X must be real numbers, an array [n, {d}] of inputs, not "
                             f"{type(X).__name__}") from None
        single = X.ndim == 1
        X = X[None] if single else X
        if X.ndim != 2 or X.shape[1] != d:
            raise UsageError(f"predict: X has shape {X.shape[1:] if single else X.shape}; run {self.name!r} takes "
                             f"inputs of dimension {d}: an array [n, {d}] (or one input [{d}])")
        if not np.all(np.isfinite(X)):
            raise UsageError("predict: X holds non-finite values (nan or inf)")
        return np.ascontiguousarray(X), single

    def particles(self):
        """The particle trajectory as an ``xarray.Dataset``: ``position`` [time, particle, dim]
        (the w_i), ``amplitude`` [time, particle] (the a_i) and ``bias`` where the model has one."""
        import xarray as xr

        position = self._require_particles()["position"]
        return xr.Dataset(self._particle_variables(), coords=self._time_coords(position), attrs=self._xarray_attrs())

    def to_dataset(self):
        """The run as one ``xarray.Dataset``: every measure and the particles, over time,
        and the run's constants as scalar variables."""
        import xarray as xr

        self._check_open()
        variables = {name: (("time", *self._vector_dims(name, e.value.ndim)), e.value[: self.frames])
                     for name, e in self._measures.items()}
        variables.update({name: ((), value) for name, value in self.constants.items()})
        if self._particles:
            variables.update(self._particle_variables())
        coords = self._time_coords(self._elements[0]) if self._elements else {}
        return xr.Dataset(variables, coords=coords, attrs=self._xarray_attrs())

    # ------------------------------------------------------------------ helpers
    def _check_open(self) -> None:
        if not self._h5.id.valid:
            raise UsageError(f"run {self.name!r}: its trajectory is closed (open the file again: mf.open)")

    def _element(self, measure: str) -> _Element:
        self._check_open()
        listed = f"(measures: {', '.join(self._measures) or 'none'})"
        if not isinstance(measure, str):
            raise UsageError(f"run {self.name!r}: a measure is named by a str, e.g. measure('loss_train') {listed}, "
                             f"not {type(measure).__name__} {measure!r}")
        if measure not in self._measures:
            why = f": {layout.NO_TEST_SET}" if measure in TEST_MEASURES and layout.lacks_test_set(self._h5) else ""
            raise UsageError(f"run {self.name!r} has no measure {measure!r}{why} {listed}"
                             f"{did_you_mean(measure, self._measures)}")
        return self._measures[measure]

    def _require_particles(self) -> dict[str, _Element]:
        self._check_open()
        if not self._particles:
            kernel = self.solver in SOLVERS and not can(self.solver, "particles")
            why = "a kernel run: it records predictions only" if kernel else "record.particles was false"
            raise UsageError(f"run {self.name!r} records no particles ({why}); "
                             f"runs with particles: {', '.join(self._particle_runs()) or 'none'}")
        return self._particles

    def _particle_runs(self) -> list[str]:
        """The runs of the file that recorded particles, in the trajectory's order."""
        group = self._h5.get("particles")
        names = ([name for name, item in group.items() if isinstance(item, h5py.Group) and "position" in item]
                 if group is not None else [])
        order = Trajectory(self._h5).runs
        return sorted(names, key=lambda name: order.index(name) if name in order else len(order))

    def _index(self, index) -> int:
        """``index`` (negative from the end) checked against the snapshots there are."""
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise UsageError(f"frame {index!r}: give a whole snapshot index, e.g. frame(0) or frame(-1), "
                             f"or a time, frame(time=...); not {type(index).__name__}")
        if not -self.frames <= index < self.frames:
            span = f"{self.frames} frames (0..{self.frames - 1})" if self.frames else "no frames yet"
            raise UsageError(f"frame {index} out of range: run {self.name!r} has {span}")
        return int(index) % self.frames

    def _index_at(self, time) -> int:
        """The snapshot nearest ``time``, which must lie within the recorded times."""
        if isinstance(time, bool) or not isinstance(time, numbers.Real) or not math.isfinite(time):
            raise UsageError(f"time {time!r}: give a model time as a finite number, e.g. frame(time=2.5)")
        times = self.times
        slack = 1e-9 * max(1.0, float(np.max(np.abs(times)))) if self.frames else 0.0
        if not self.frames or not times[0] - slack <= time <= times[-1] + slack:
            span = f"{times[0]:g} to {times[-1]:g} ({self.frames} snapshots)" if self.frames else "no snapshots yet"
            raise UsageError(f"time {time:g} outside the recorded range of run {self.name!r}: {span}")
        return int(np.argmin(np.abs(times - time)))

    def _particle_variables(self) -> dict:
        elements, n = self._particles, self.frames
        variables = {"position": (("time", "particle", "dim"), elements["position"].value[:n]),
                     "amplitude": (("time", "particle"), elements["amplitude"].value[:n])}
        if "bias" in elements:
            variables["bias"] = (("time", "particle"), elements["bias"].value[:n])
        return variables

    def _time_coords(self, element: _Element) -> dict:
        return {"time": element.time[: self.frames], "step": ("time", element.step[: self.frames])}

    def _xarray_attrs(self) -> dict:
        ending = {"ended": self.ended, "t_stop": self.t_stop} if self.ended else {}
        return {"run": self.name, "status": self.status, **ending, **self.attrs}

    @staticmethod
    def _vector_dims(measure: str, ndim: int) -> tuple:
        if ndim == 1:
            return ()
        first = VECTOR_DIMS.get(measure, f"{measure}_index")
        return (first, *(f"{measure}_index{k}" for k in range(2, ndim)))


def _element(group: h5py.Group) -> _Element:
    return _Element(group["step"], group["time"], group["value"])


