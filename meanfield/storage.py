"""The trajectory file: one scenario, one HDF5 file in the H5MD 1.1 layout (DESIGN §3).

    /h5md                          version = [1, 1]; author/ (name); creator/ (name, version)
    /parameters                    seed, scenario (resolved YAML text), format, format_version
    /parameters/<run>              what the app passes (solver, s, eta_a, ...) and status
    /data                          X_train, y_train, X_test, y_test; teacher/{a, W} (activation)
    /particles/<run>/box           dimension = d, boundary = ["none"] * d
    /particles/<run>/position      step [T], time [T], value [T, m, d]   (the w_i)
    /particles/<run>/amplitude     step, time, value [T, m]              (the a_i)
    /particles/<run>/bias          step, time, value [T, m]              (when the model has one)
    /observables/<run>/<measure>   step, time, value [T] or [T, k]
    /checkpoint/<run>              state [N] float64; t, step, frames, rng, stepper, valid

A run writes its particles and all its measures at the same snapshots, so every element of
a run shares one `step` and one `time` dataset (HDF5 hard links: one object, many names).
Every dataset that grows along time is extendable (maxshape None on the time axis),
compressed (gzip + shuffle) and chunked so that one frame lies in exactly one chunk: one
frame per chunk once a frame is at least `CHUNK_BYTES`, and small frames (step, time,
scalar measures, a few particles) grouped into chunks of about `CHUNK_BYTES`, since
thousands of 8-byte chunks make a file large and slow to read. No dataset carries
dimension scales (h5netcdf refuses a file where only some axes do), so xarray reads
every group with `phony_dims="sort"`.

The file is flushed after every snapshot: a crash loses at most the snapshot being
written, and what is there stays readable. Readers open it read-only without HDF5 file
locking, so a file can be read while a run is still writing it (best effort: not SWMR).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import math
import os
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple

import h5py
import numpy as np
import yaml

from .errors import UsageError

FORMAT = "meanfield"
FORMAT_VERSION = 1
H5MD_VERSION = (1, 1)

CHUNK_BYTES = 64 * 1024
"""A frame this large or larger gets a chunk of its own; smaller frames share chunks of about this size."""

CHECKPOINT_CHUNK = 1 << 20
"""Checkpoint state chunk, in float64 values (8 MiB)."""

COMPRESSION = {"compression": "gzip", "shuffle": True}

MEASURE_DTYPE = np.float64
"""Measures are few values per frame: they are kept at full precision whatever the snapshot dtype."""

PARTICLE_ELEMENTS = ("position", "amplitude", "bias")
_STATUSES = ("running", "complete", "interrupted")


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Checkpoint:
    """What a run needs to continue: the packed state, its clock, and how many snapshots are valid."""

    state: np.ndarray
    t: float
    step: int
    frames: int
    rng_state: dict
    stepper: dict


class Series(NamedTuple):
    """One measure over time."""

    time: np.ndarray
    value: np.ndarray


class Particles(NamedTuple):
    """The particle trajectory: a [T, m], W [T, m, d], b [T, m] or None."""

    time: np.ndarray
    a: np.ndarray
    W: np.ndarray
    b: np.ndarray | None


@dataclass(frozen=True)
class RunData:
    """Everything recorded for one run, read into memory."""

    name: str
    attrs: dict
    status: str
    measures: dict[str, Series]
    particles: Particles | None


# ----------------------------------------------------------------------------- opening
def create(path, *, scenario_yaml: str, seed: int, author: str | None = None) -> TrajectoryFile:
    """Start a new trajectory file at `path` (replacing any file there)."""
    path = os.fspath(path)
    try:
        h5 = h5py.File(path, "w")
    except OSError as e:
        raise UsageError(f"{path}: cannot create the trajectory file ({e})") from e
    h5md = h5.create_group("h5md")
    h5md.attrs["version"] = np.array(H5MD_VERSION, dtype=np.int32)
    h5md.create_group("author").attrs["name"] = author or _user_name()
    creator = h5md.create_group("creator")
    creator.attrs["name"] = FORMAT
    creator.attrs["version"] = _package_version()
    params = h5.create_group("parameters", track_order=True)
    params.attrs["format"] = FORMAT
    params.attrs["format_version"] = FORMAT_VERSION
    params.attrs["seed"] = int(seed)
    params.attrs["scenario"] = scenario_yaml
    h5.flush()
    return TrajectoryFile(h5)


def open_for_resume(path, *, scenario_yaml: str) -> TrajectoryFile:
    """Open an existing trajectory file for writing, if it was made from this very scenario text."""
    h5 = _open_ours(path, "r+")
    if h5["parameters"].attrs["scenario"] != scenario_yaml:
        h5.close()
        raise UsageError(
            f"{os.fspath(path)}: cannot resume, the scenario differs from the one stored in the file"
        )
    return TrajectoryFile(h5)


def open_trajectory(path) -> h5py.File:
    """Open a trajectory file read-only (also while a run is still writing it)."""
    return _open_ours(path, "r", locking=False)


def _open_ours(path, mode: str, **kwargs) -> h5py.File:
    path = os.fspath(path)

    def refuse(why: str) -> UsageError:
        return UsageError(f"{path} is not a meanfield trajectory file ({why})")

    if not os.path.exists(path):
        raise refuse("no such file")
    if os.path.isdir(path):
        raise refuse("it is a directory")
    if not h5py.is_hdf5(path):
        raise refuse("not an HDF5 file")
    try:
        h5 = h5py.File(path, mode, **kwargs)
    except OSError as e:
        raise UsageError(f"{path}: cannot open the trajectory file ({e})") from e
    params = h5.get("parameters")
    if "h5md" not in h5:
        why = "no /h5md group"
    elif not isinstance(params, h5py.Group) or params.attrs.get("format") != FORMAT:
        why = f"no /parameters attribute format = {FORMAT!r}"
    elif int(params.attrs.get("format_version", 0)) > FORMAT_VERSION:
        why = (
            f"format version {int(params.attrs['format_version'])}, newer than this meanfield "
            f"reads ({FORMAT_VERSION})"
        )
    else:
        return h5
    h5.close()
    raise refuse(why)


# ----------------------------------------------------------------------------- writing
class TrajectoryFile:
    """A trajectory file open for writing. A context manager; `close()` flushes."""

    def __init__(self, h5: h5py.File):
        self.h5 = h5
        self.path = h5.filename

    def __enter__(self) -> TrajectoryFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.h5.id.valid:
            self.h5.flush()
            self.h5.close()

    def flush(self) -> None:
        self.h5.flush()

    @property
    def seed(self) -> int:
        return int(self.h5["parameters"].attrs["seed"])

    @property
    def scenario_yaml(self) -> str:
        return self.h5["parameters"].attrs["scenario"]

    @property
    def runs(self) -> list[str]:
        return list_runs(self)

    def write_data(self, X_train=None, y_train=None, X_test=None, y_test=None, teacher=None) -> None:
        """Store the data set (None where there is none, e.g. population mode) and the teacher."""
        data = self.h5.require_group("data")
        arrays = {"X_train": X_train, "y_train": y_train, "X_test": X_test, "y_test": y_test}
        for name, array in arrays.items():
            if array is not None:
                _write_array(data, name, array)
        if teacher is not None:
            group = data.create_group("teacher")
            _write_array(group, "a", teacher.a)
            _write_array(group, "W", teacher.W)
            group.attrs["activation"] = str(teacher.activation)
        self.flush()

    def add_run(
        self,
        name: str,
        *,
        attrs: dict,
        m: int,
        d: int,
        bias: bool,
        particles: bool,
        dtype=np.float32,
        measures: dict[str, tuple],
    ) -> RunWriter:
        """Lay out a new run: its parameters, particle elements (if recorded) and measures.

        `measures` maps a measure name to its per-frame shape: () for a scalar, (k,) for a vector.
        """
        _check_name(name, "run name")
        if name in self.h5["parameters"]:
            raise ValueError(f"{self.path}: run {name!r} already exists")
        if not particles and not measures:
            raise ValueError(f"run {name!r} records nothing (no particles, no measures)")
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise ValueError(f"snapshot dtype must be a float type, not {dtype}")
        if "status" in attrs:
            raise ValueError("'status' is set through RunWriter.status, not attrs")

        params = self.h5["parameters"].create_group(name)
        for key, value in attrs.items():
            params.attrs[key] = _encode_attr(key, value)
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
                _check_name(measure, "measure name")
                _create_element(group.create_group(measure), tuple(shape), MEASURE_DTYPE, shared)
        self.flush()
        return RunWriter(self, name)

    def run(self, name: str) -> RunWriter:
        """A run already in the file (to resume it)."""
        _require_run(self.h5, name)
        return RunWriter(self, name)


class RunWriter:
    """Appends snapshots to one run, and keeps its checkpoint and status."""

    def __init__(self, file: TrajectoryFile, name: str):
        self._file = file
        self.name = name
        h5 = file.h5
        self._params = h5["parameters"][name]
        self._particles: dict[str, h5py.Dataset] = {}
        self._measures: dict[str, h5py.Dataset] = {}
        elements: list[h5py.Group] = []
        group = h5.get(f"particles/{name}")
        if group is not None:
            for element in PARTICLE_ELEMENTS:
                if element in group:
                    self._particles[element] = group[element]["value"]
                    elements.append(group[element])
        group = h5.get(f"observables/{name}")
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
        return self._params.attrs["status"]

    @status.setter
    def status(self, value: str) -> None:
        if value not in _STATUSES and not value.startswith("failed: "):
            raise ValueError(f"status must be one of {_STATUSES} or 'failed: reason', not {value!r}")
        self._params.attrs["status"] = value
        self._file.flush()

    def append(self, step: int, time: float, a=None, W=None, b=None, measures=None) -> None:
        """Write one snapshot and flush. a, W, b are ignored when the run records no particles."""
        index = self.frames
        writes = []  # check everything first, so a bad call writes nothing
        for element, array in zip(PARTICLE_ELEMENTS, (W, a, b)):
            if element in self._particles:
                ds = self._particles[element]
                writes.append((ds, self._frame(element, array, ds)))
        measures = measures or {}
        if set(measures) != set(self._measures):
            raise ValueError(
                f"run {self.name!r}: measures given {sorted(measures)}, "
                f"the file records {sorted(self._measures)}"
            )
        for name, ds in self._measures.items():
            writes.append((ds, self._frame(name, measures[name], ds)))
        for ds, value in writes:
            _write_frame(ds, index, value)
        # step and time last: their length is the number of complete snapshots
        _write_frame(self._time, index, float(time))
        _write_frame(self._step, index, int(step))
        self._file.flush()

    def _frame(self, what: str, value, ds: h5py.Dataset) -> np.ndarray:
        if value is None:
            raise ValueError(f"run {self.name!r}: {what} is missing from the snapshot")
        value = np.asarray(value)
        if value.shape != ds.shape[1:]:
            raise ValueError(
                f"run {self.name!r}: {what} has shape {value.shape}, the file expects {ds.shape[1:]}"
            )
        return value

    def truncate(self, frames: int) -> None:
        """Drop the snapshots after the first `frames` (to resume from a checkpoint)."""
        if not 0 <= frames <= self.frames:
            raise ValueError(
                f"run {self.name!r}: cannot truncate to {frames} frames, it has {self.frames}"
            )
        for ds in [*self._particles.values(), *self._measures.values(), self._time, self._step]:
            ds.resize(frames, axis=0)
        self._file.flush()

    def save_checkpoint(
        self, state: np.ndarray, *, t: float, step: int, rng_state: dict, stepper: dict
    ) -> None:
        """Overwrite the run's checkpoint: the full-precision packed state and where it stands."""
        state = np.asarray(state, dtype=np.float64)
        if state.ndim != 1 or state.size == 0:
            raise ValueError(
                f"run {self.name!r}: checkpoint state must be a non-empty 1-D array, "
                f"got shape {state.shape}"
            )
        group = self._file.h5.require_group("checkpoint").require_group(self.name)
        # `valid` is false while the state is being replaced: a crash then leaves no checkpoint
        # rather than a new state with an old clock.
        group.attrs["valid"] = False
        self._file.flush()
        ds = group.get("state")
        if ds is None:
            ds = group.create_dataset(
                "state", shape=state.shape, maxshape=(None,), dtype=np.float64,
                chunks=(min(state.size, CHECKPOINT_CHUNK),),
            )
        elif ds.shape != state.shape:
            ds.resize(state.shape)
        ds[...] = state
        group.attrs["t"] = float(t)
        group.attrs["step"] = int(step)
        group.attrs["frames"] = self.frames
        group.attrs["rng"] = json.dumps(rng_state, default=_json_default)
        group.attrs["stepper"] = json.dumps(stepper, default=_json_default)
        group.attrs["valid"] = True
        self._file.flush()

    def load_checkpoint(self) -> Checkpoint | None:
        """The last complete checkpoint, or None if the run has none."""
        group = self._file.h5.get(f"checkpoint/{self.name}")
        if group is None or not group.attrs.get("valid", False) or "state" not in group:
            return None
        return Checkpoint(
            state=group["state"][()],
            t=float(group.attrs["t"]),
            step=int(group.attrs["step"]),
            frames=int(group.attrs["frames"]),
            rng_state=json.loads(group.attrs["rng"]),
            stepper=json.loads(group.attrs["stepper"]),
        )


def _create_element(group: h5py.Group, frame_shape: tuple, dtype, shared: list) -> None:
    """An H5MD time-dependent element: its value, and the run's step and time.

    `shared` holds the run's step and time datasets once the first element has created
    them; every later element hard-links them.
    """
    if shared:
        group["step"], group["time"] = shared
    else:
        shared.append(_create_series(group, "step", (), np.int64))
        shared.append(_create_series(group, "time", (), np.float64))
    _create_series(group, "value", frame_shape, dtype)


def _create_series(group: h5py.Group, name: str, frame_shape: tuple, dtype) -> h5py.Dataset:
    """An empty dataset growing along its first (time) axis; one frame lies in one chunk."""
    if any(n < 1 for n in frame_shape):
        raise ValueError(
            f"{group.name}/{name}: every axis of a frame needs a positive length, got {frame_shape}"
        )
    frame_bytes = np.dtype(dtype).itemsize * math.prod(frame_shape)
    frames_per_chunk = max(1, CHUNK_BYTES // frame_bytes)
    return group.create_dataset(
        name,
        shape=(0, *frame_shape),
        maxshape=(None, *frame_shape),
        chunks=(frames_per_chunk, *frame_shape),
        dtype=dtype,
        **COMPRESSION,
    )


def _write_frame(ds: h5py.Dataset, index: int, value) -> None:
    """Write frame `index` of a growing dataset, extending it to hold exactly index + 1 frames."""
    ds.resize(index + 1, axis=0)
    ds[index] = value


def _write_array(group: h5py.Group, name: str, array) -> None:
    array = np.asarray(array)
    if name in group:
        raise ValueError(f"{group.file.filename}: {group.name}/{name} is already written")
    group.create_dataset(name, data=array, **(COMPRESSION if array.size and array.ndim else {}))


# ----------------------------------------------------------------------------- reading
def list_runs(file) -> list[str]:
    """The runs in a trajectory file (path, h5py.File or TrajectoryFile), in the order its
    scenario lists them (runs it does not list follow, by name)."""
    with _h5(file) as h5:
        present = [name for name, item in h5["parameters"].items() if isinstance(item, h5py.Group)]
        listed = [name for name in scenario_of(h5).get("runs") or {} if name in present]
        return listed + [name for name in present if name not in listed]


def scenario_of(file) -> dict:
    """The resolved scenario stored in the file (an empty mapping if it cannot be read)."""
    with _h5(file) as h5:
        try:
            scenario = yaml.safe_load(_decode_attr(h5["parameters"].attrs.get("scenario", ""))) or {}
        except yaml.YAMLError:
            return {}
        return scenario if isinstance(scenario, dict) else {}


def read_run(path_or_file, name: str, *, particles: bool = True) -> RunData:
    """Read one run into memory. `particles=False` skips the (possibly large) particle trajectory."""
    with _h5(path_or_file) as h5:
        params = _require_run(h5, name)
        attrs = {key: _decode_attr(value) for key, value in params.attrs.items() if key != "status"}
        measures = {}
        group = h5.get(f"observables/{name}")
        if group is not None:
            for measure, element in group.items():
                n = _complete_frames(element["time"], element["value"])
                measures[measure] = Series(element["time"][:n], element["value"][:n])
        trajectory = None
        group = h5.get(f"particles/{name}")
        if particles and group is not None:
            values = [group[e]["value"] for e in PARTICLE_ELEMENTS if e in group]
            n = _complete_frames(group["position"]["time"], *values)
            trajectory = Particles(
                time=group["position"]["time"][:n],
                a=group["amplitude"]["value"][:n],
                W=group["position"]["value"][:n],
                b=group["bias"]["value"][:n] if "bias" in group else None,
            )
        status = params.attrs["status"]
        return RunData(name, attrs, status, measures=measures, particles=trajectory)


def _complete_frames(*datasets: h5py.Dataset) -> int:
    """Frames present in all of them (a run may be mid-snapshot while it is read)."""
    return min(ds.shape[0] for ds in datasets)


def _require_run(h5: h5py.File, name: str) -> h5py.Group:
    params = h5["parameters"].get(name)
    if not isinstance(params, h5py.Group):
        runs = ", ".join(list_runs(h5)) or "none"
        raise UsageError(f"{h5.filename} has no run {name!r} (runs: {runs})")
    return params


@contextlib.contextmanager
def _h5(file) -> Iterator[h5py.File]:
    """The h5py.File behind a path (opened read-only, then closed), an h5py.File or a TrajectoryFile."""
    if isinstance(file, TrajectoryFile):
        yield file.h5
    elif isinstance(file, h5py.File):
        yield file
    else:
        h5 = open_trajectory(file)
        try:
            yield h5
        finally:
            h5.close()


# ----------------------------------------------------------------------------- size
def estimate_bytes(
    *, frames: int, m: int, d: int, bias: bool, particles: bool, n_measures: int, itemsize: int,
    n_data_values: int = 0,
) -> int:
    """A rough upper estimate of one run's file size, uncompressed.

    `n_measures` counts measure values per frame (a vector measure of length k counts k);
    `n_data_values` the numbers in /data (count them once per file, not per run).
    """
    per_particle = d + 1 + int(bias)
    snapshot = 8 * n_measures + 16  # measures (float64), step and time
    if particles:
        snapshot += m * per_particle * itemsize
    checkpoint = 8 * m * per_particle
    overhead = 64 * 1024 + 64 * frames  # metadata and chunk index
    return frames * snapshot + checkpoint + 8 * n_data_values + overhead


# ----------------------------------------------------------------------------- attributes
def _encode_attr(key: str, value: Any):
    """Attribute values: str, bool, int, float, lists of numbers; dicts are stored as JSON text."""
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=_json_default)
    if isinstance(value, (str, bool, int, float, np.generic)):
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        array = np.asarray(value)
        if array.dtype.kind in "biuf":
            return array
        if array.dtype.kind == "U":
            return array.astype(h5py.string_dtype())
    raise TypeError(f"attribute {key!r}: cannot store {type(value).__name__} {value!r}")


def _decode_attr(value: Any):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value.startswith("{"):
        with contextlib.suppress(ValueError):
            return json.loads(value)
    if isinstance(value, np.ndarray):
        return [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise ValueError(f"{what} must be a non-empty string without '/', not {name!r}")


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
