"""Writing a trajectory file: the simulator's side of the storage package."""

from __future__ import annotations

import getpass
import itertools
import json
import os
from typing import Callable, Optional

import h5py
import numpy as np

from ..errors import UsageError
from ..model.state import RunState
from . import layout
from .layout import (
    CHECKPOINT_CHUNK,
    COMPRESSION,
    ENDINGS,
    H5MD_VERSION,
    MEASURE_DTYPE,
    PARTICLE_ELEMENTS,
    PROGRESS_ATTRS,
    STATUSES,
)
from .ownership import check_room

_memory_files = itertools.count()


def create(path, *, scenario_yaml: str, seed: int, author: Optional[str] = None) -> TrajectoryWriter:
    """Start a new trajectory file at ``path``, or in memory when ``path`` is None (h5py's
    core driver without a backing store: the same file, never on disk).

    The file is written as ``path.partial`` until its header is complete, then renamed to
    ``path`` in one step: a process killed meanwhile leaves no half-made file at ``path``
    (HDF5 cannot open one cut before its superblock's end of file: "truncated file"), and a
    file already there stays as it was until then. That file is replaced, never truncated:
    a process that has it open (a notebook, ``animate --follow``) keeps reading it
    undisturbed. The caller holds the path's :class:`~meanfield.storage.WriterLock` and has
    decided to replace it.
    """
    if path is None:
        name = f"meanfield-memory-{os.getpid()}-{next(_memory_files)}.h5"
        h5 = _write_header(h5py.File(name, "w", driver="core", backing_store=False), scenario_yaml, seed, author)
        return TrajectoryWriter(h5, in_memory=True)
    path = os.fspath(path)
    partial = path + ".partial"
    try:
        if os.path.lexists(partial):
            os.unlink(partial)  # a killed creation's
        _write_header(h5py.File(partial, "x"), scenario_yaml, seed, author).close()
        os.replace(partial, path)
        return TrajectoryWriter(h5py.File(path, "r+"))
    except OSError as e:
        raise UsageError(f"{path}: cannot create the trajectory file ({e})") from e


def _write_header(h5: h5py.File, scenario_yaml: str, seed: int, author: Optional[str]) -> h5py.File:
    """The H5MD header and the parameters group of a new trajectory file, flushed."""
    h5md = h5.create_group("h5md")
    h5md.attrs["version"] = np.array(H5MD_VERSION, dtype=np.int32)
    h5md.create_group("author").attrs["name"] = author or _user_name()
    creator = h5md.create_group("creator")
    creator.attrs["name"] = layout.FORMAT
    creator.attrs["version"] = _package_version()
    params = h5.create_group("parameters", track_order=True)
    params.attrs["format"] = layout.FORMAT
    params.attrs["format_version"] = layout.FORMAT_VERSION
    params.attrs["seed"] = int(seed)
    params.attrs["scenario"] = scenario_yaml
    h5.flush()
    return h5


def open_for_resume(path, *, same_scenario: Callable[[str], bool]) -> TrajectoryWriter:
    """Open an existing trajectory file for writing, if ``same_scenario`` accepts the scenario
    text it stores (the one that made it); its superblock's end of allocation first moved to
    the file's end where a kill left it short (:func:`layout.extend_allocation_to_file_end`:
    the caller holds the file's writer lock, so no other process writes it)."""
    if os.path.isfile(path) and h5py.is_hdf5(path):
        layout.extend_allocation_to_file_end(path)
    h5 = layout.open_ours(path, "r+")
    if not same_scenario(h5["parameters"].attrs["scenario"]):
        h5.close()
        raise UsageError(f"{os.fspath(path)}: cannot resume, the scenario differs from the one stored in the file")
    return TrajectoryWriter(h5)


class TrajectoryWriter:
    """A trajectory file open for writing. A context manager: leaving it closes the file;
    :meth:`finish` instead hands it over to a reader."""

    def __init__(self, h5: h5py.File, in_memory: bool = False):
        self.h5 = h5
        self.in_memory = in_memory
        self.path = None if in_memory else h5.filename

    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.h5.id.valid:
            self.h5.flush()
            self.h5.close()

    def flush(self) -> None:
        self.h5.flush()

    def ensure_room(self, nbytes: float, what: str) -> None:
        """Raise :class:`~meanfield.storage.NoRoom` before a write of about ``nbytes`` that the
        disk or the file-size limit has no room for (nothing to check in memory)."""
        if not self.in_memory:
            check_room(self.path, nbytes, what)

    def finish(self):
        """The written file as a :class:`~meanfield.storage.Trajectory` to read: the same
        in-memory file, or the file on disk opened again read-only."""
        from .reader import Trajectory, open_trajectory

        if self.in_memory:
            self.h5.flush()
            return Trajectory(self.h5)
        self.close()
        return open_trajectory(self.path)

    @property
    def runs(self) -> list[str]:
        """The runs already in the file (any order)."""
        return [name for name, item in self.h5["parameters"].items() if isinstance(item, h5py.Group)]

    def write_data(self, X_train=None, y_train=None, X_test=None, y_test=None, teacher=None) -> None:
        """Store the data set (None where there is none, e.g. population mode) and the teacher."""
        data = self.h5.require_group("data")
        arrays = {"X_train": X_train, "y_train": y_train, "X_test": X_test, "y_test": y_test}
        self.ensure_room(sum(np.asarray(a).nbytes for a in arrays.values() if a is not None), "the data set")
        for name, array in arrays.items():
            if array is not None:
                _write_array(data, name, array)
        if teacher is not None:
            group = data.create_group("teacher")
            _write_array(group, "a", teacher.a)
            _write_array(group, "W", teacher.W)
            group.attrs["activation"] = str(teacher.activation)
        self.flush()

    def add_run(self, name: str, *, attrs: dict, m: int, d: int, bias: bool, particles: bool,
                dtype=np.float32, measures: dict[str, tuple]) -> RunWriter:
        """Lay out a new run: its parameters, particle elements (if recorded) and measures.

        ``measures`` maps a measure name to its per-frame shape: () for a scalar, (k,) for a vector.
        """
        layout.check_name(name, "run name")
        if name in self.h5["parameters"]:
            raise ValueError(f"{self.path}: run {name!r} already exists")
        if not particles and not measures:
            raise ValueError(f"run {name!r} records nothing (no particles, no measures)")
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise ValueError(f"snapshot dtype must be a float type, not {dtype}")
        if set(attrs) & set(PROGRESS_ATTRS):
            raise ValueError(f"{', '.join(PROGRESS_ATTRS)} are set through RunWriter.status and .complete, not attrs")
        self.ensure_room(0, f"run {name!r}")
        self._clear_remains(name)

        # the parameters are linked in last, whole: a run is in the file (``runs``) once its
        # layout is, so a process stopped in between leaves remains that the next add_run clears
        params = h5py.Group(h5py.h5g.create(self.h5.id, None))  # anonymous until linked
        for key, value in attrs.items():
            params.attrs[key] = layout.encode_attr(key, value)
        params.attrs["status"] = "running"

        shared: list[h5py.Dataset] = []  # the run's one step and one time dataset
        if particles:
            group = self.h5.require_group("particles").create_group(name)
            box = group.create_group("box")
            box.attrs["dimension"] = np.int32(d)
            box.attrs["boundary"] = np.array(["none"] * d, dtype=h5py.string_dtype())
            shapes = {"position": (m, d), "amplitude": (m,), "bias": (m,) if bias else None}
            for element, shape in shapes.items():
                if shape is not None:
                    _create_element(group.create_group(element), shape, dtype, shared)
        if measures:
            group = self.h5.require_group("observables").create_group(name)
            for measure, shape in measures.items():
                layout.check_name(measure, "measure name")
                _create_element(group.create_group(measure), tuple(shape), MEASURE_DTYPE, shared)
        self.h5["parameters"][name] = params
        self.flush()
        return RunWriter(self, name)

    def _clear_remains(self, name: str) -> None:
        """Remove what an add_run of ``name`` cut short (a stop, a kill) left without parameters."""
        for section in ("particles", "observables", "checkpoint"):
            group = self.h5.get(section)
            if group is not None and name in group:
                del group[name]

    def run(self, name: str) -> RunWriter:
        """A run already in the file (to resume it)."""
        if not isinstance(self.h5["parameters"].get(name), h5py.Group):
            raise UsageError(f"{self.path} has no run {name!r}")
        return RunWriter(self, name)


class RunWriter:
    """Appends snapshots to one run, and keeps its checkpoint and status."""

    def __init__(self, file: TrajectoryWriter, name: str):
        self._file = file
        self.name = name
        h5 = file.h5
        self._params = h5[layout.parameters(name)]
        self._particles: dict[str, h5py.Dataset] = {}
        self._measures: dict[str, h5py.Dataset] = {}
        elements: list[h5py.Group] = []
        group = h5.get(layout.particles(name))
        if group is not None:
            for element in PARTICLE_ELEMENTS:
                if element in group:
                    self._particles[element] = group[element]["value"]
                    elements.append(group[element])
        group = h5.get(layout.observables(name))
        if group is not None:
            for measure, element in group.items():
                self._measures[measure] = element["value"]
                elements.append(element)
        self._step = elements[0]["step"]
        self._time = elements[0]["time"]

    @property
    def frames(self) -> int:
        """Snapshots written (and valid)."""
        return self._step.shape[0]

    @property
    def measures(self) -> dict[str, tuple]:
        """Measure name -> per-frame shape."""
        return {name: ds.shape[1:] for name, ds in self._measures.items()}

    @property
    def status(self) -> str:
        return layout.decode_attr(self._params.attrs["status"])

    @status.setter
    def status(self, value: str) -> None:
        if value not in STATUSES and not value.startswith("failed: "):
            raise ValueError(f"status must be one of {STATUSES} or 'failed: reason', not {value!r}")
        self._file.ensure_room(0, f"the status of run {self.name!r}")
        self._params.attrs["status"] = value
        self._file.flush()

    def complete(self, ended: str, t_stop: float) -> None:
        """Mark the run complete, with how it ended (attrs ``ended``, one of ENDINGS, and
        ``t_stop``, the time it ended at)."""
        if ended not in ENDINGS:
            raise ValueError(f"a run ends at one of {ENDINGS}, not {ended!r}")
        self._file.ensure_room(0, f"the status of run {self.name!r}")  # before any of the three attrs
        self._params.attrs["ended"] = ended
        self._params.attrs["t_stop"] = float(t_stop)
        self.status = "complete"

    def set_constants(self, values: dict) -> None:
        """Store the run's constants, scalar results that do not change in time (an ntk
        run's ``loss_test_limit``, ...), as float64 attributes of its observables group
        (attributes, not datasets: a file gains no dataset)."""
        if not values:
            return
        group = self._file.h5.get(layout.observables(self.name))
        if group is None:
            raise ValueError(f"run {self.name!r} records no measures: nowhere to store its constants")
        self._file.ensure_room(0, f"the constants of run {self.name!r}")
        for key, value in values.items():
            layout.check_name(key, "constant name")
            group.attrs[key] = np.float64(value)
        self._file.flush()

    def append(self, step: int, time: float, particles=None, measures=None) -> None:
        """Write one snapshot and flush. ``particles`` = (a, W, b) is ignored when the run
        records none; ``measures`` maps every recorded measure to its value."""
        a, W, b = particles if particles is not None else (None, None, None)
        index = self.frames
        writes = []  # check everything first, so a bad call writes nothing
        for element, array in zip(PARTICLE_ELEMENTS, (W, a, b)):
            if element in self._particles:
                ds = self._particles[element]
                writes.append((ds, self._frame(element, array, ds)))
        measures = measures or {}
        if set(measures) != set(self._measures):
            raise ValueError(f"run {self.name!r}: measures given {sorted(measures)}, "
                             f"the file records {sorted(self._measures)}")
        for name, ds in self._measures.items():
            writes.append((ds, self._frame(name, measures[name], ds)))
        self._file.ensure_room(sum(value.nbytes for _, value in writes) + 16,
                               f"snapshot {index} of run {self.name!r}")
        for ds, value in writes:
            _write_frame(ds, index, value)
        # step and time last: their length is the number of complete snapshots
        _write_frame(self._time, index, float(time))
        _write_frame(self._step, index, int(step))
        self._file.flush()

    def written(self, measure: str) -> tuple[np.ndarray, np.ndarray]:
        """(time [T], value [T, ...]) of a measure over the snapshots written so far."""
        frames = self.frames
        return self._time[:frames], self._measures[measure][:frames]

    def _frame(self, what: str, value, ds: h5py.Dataset) -> np.ndarray:
        if value is None:
            raise ValueError(f"run {self.name!r}: {what} is missing from the snapshot")
        value = np.asarray(value)
        if value.shape != ds.shape[1:]:
            raise ValueError(f"run {self.name!r}: {what} has shape {value.shape}, the file expects {ds.shape[1:]}")
        return value

    def truncate(self, frames: int) -> None:
        """Drop the snapshots after the first ``frames`` (to resume from a checkpoint)."""
        if not 0 <= frames <= self.frames:
            raise ValueError(f"run {self.name!r}: cannot truncate to {frames} frames, it has {self.frames}")
        for ds in [*self._particles.values(), *self._measures.values(), self._time, self._step]:
            ds.resize(frames, axis=0)
        self._file.flush()

    def save_checkpoint(self, state: RunState) -> None:
        """Overwrite the run's checkpoint with ``state`` (``y`` in float64) and the number of
        snapshots written so far."""
        y = np.asarray(state.y, dtype=np.float64)
        if y.ndim != 1 or y.size == 0:
            raise ValueError(f"run {self.name!r}: checkpoint state must be a non-empty 1-D array, got shape {y.shape}")
        group = self._file.h5.get(layout.checkpoint(self.name))
        first = group is None or "state" not in group or group["state"].shape != y.shape
        if first:  # later checkpoints overwrite it in place, within the room the snapshot checked for
            self._file.ensure_room(y.nbytes, f"the checkpoint of run {self.name!r}")
        group = self._file.h5.require_group("checkpoint").require_group(self.name)
        # `valid` is false while the state is being replaced: a crash then leaves no checkpoint
        # rather than a new state with an old clock.
        group.attrs["valid"] = False
        self._file.flush()
        ds = group.get("state")
        if ds is None:
            ds = group.create_dataset("state", shape=y.shape, maxshape=(None,), dtype=np.float64,
                                      chunks=(min(y.size, CHECKPOINT_CHUNK),))
        elif ds.shape != y.shape:
            ds.resize(y.shape)
        ds[...] = y
        group.attrs["t"] = float(state.t)
        group.attrs["step"] = int(state.step)
        group.attrs["frames"] = self.frames
        group.attrs["rng"] = json.dumps(state.rng, default=layout.json_default)
        group.attrs["stepper"] = json.dumps({"h": state.h}, default=layout.json_default)
        group.attrs["valid"] = True
        self._file.flush()

    def load_checkpoint(self) -> tuple[RunState, int] | None:
        """The last complete checkpoint and the snapshots written when it was taken, or None."""
        group = self._file.h5.get(layout.checkpoint(self.name))
        if group is None or not group.attrs.get("valid", False) or "state" not in group:
            return None
        state = RunState(t=float(group.attrs["t"]), step=int(group.attrs["step"]), y=group["state"][()],
                         h=json.loads(group.attrs["stepper"]).get("h"), rng=json.loads(group.attrs["rng"]))
        return state, int(group.attrs["frames"])


def _create_element(group: h5py.Group, frame_shape: tuple, dtype, shared: list) -> None:
    """An H5MD time-dependent element: its value, and the run's step and time.

    ``shared`` holds the run's step and time datasets once the first element has created
    them; every later element hard-links them.
    """
    if shared:
        group["step"], group["time"] = shared
    else:
        shared.append(_create_series(group, "step", (), np.int64))
        shared.append(_create_series(group, "time", (), np.float64))
    _create_series(group, "value", frame_shape, dtype)


def _create_series(group: h5py.Group, name: str, frame_shape: tuple, dtype) -> h5py.Dataset:
    """An empty dataset growing along its first (time) axis; one frame lies in one chunk,
    compressed where the chunk holds that frame alone (:func:`layout.series_storage`)."""
    if any(n < 1 for n in frame_shape):
        raise ValueError(f"{group.name}/{name}: every axis of a frame needs a positive length, got {frame_shape}")
    return group.create_dataset(name, shape=(0, *frame_shape), maxshape=(None, *frame_shape), dtype=dtype,
                                **layout.series_storage(frame_shape, dtype))


def _write_frame(ds: h5py.Dataset, index: int, value) -> None:
    """Write frame ``index`` of a growing dataset, extending it to hold exactly index + 1 frames."""
    ds.resize(index + 1, axis=0)
    ds[index] = value


def _write_array(group: h5py.Group, name: str, array) -> None:
    array = np.asarray(array)
    if name in group:
        raise ValueError(f"{group.file.filename}: {group.name}/{name} is already written")
    group.create_dataset(name, data=array, **(COMPRESSION if array.size and array.ndim else {}))


def _user_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user database entry (containers)
        return "unknown"


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("meanfield")
    except PackageNotFoundError:
        return "unknown"
