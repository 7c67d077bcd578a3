"""The trajectory file: one scenario, one HDF5 file in the H5MD 1.1 layout (docs/design.md §4).

This package is the only code that knows the file's paths and attributes: the simulator
writes through :mod:`~meanfield.storage.writer`, everything else reads through
:class:`Trajectory` and :class:`RecordedRun` (:mod:`~meanfield.storage.reader`).

    /h5md                          version = [1, 1]; author/ (name); creator/ (name, version)
    /parameters                    seed, scenario (resolved YAML text), format, format_version
    /parameters/<run>              what the run records of itself (solver, s, eta_a, ...) and status
    /data                          X_train, y_train, X_test, y_test; teacher/{a, W} (activation)
    /particles/<run>/box           dimension = d, boundary = ["none"] * d
    /particles/<run>/position      step [T], time [T], value [T, m, d]   (the w_i)
    /particles/<run>/amplitude     step, time, value [T, m]              (the a_i)
    /particles/<run>/bias          step, time, value [T, m]              (when the model has one)
    /observables/<run>/<measure>   step, time, value [T] or [T, k]
    /checkpoint/<run>              state [N] float64; t, step, frames, rng, stepper, valid

A run writes its particles and all its measures at the same snapshots, so every element of
a run shares one ``step`` and one ``time`` dataset (HDF5 hard links: one object, many names).
Every dataset that grows along time is extendable (maxshape None on the time axis) and
chunked so that one frame lies in exactly one chunk: one frame per chunk once a frame is at
least ``CHUNK_BYTES``, and small frames (step, time, scalar measures, a few particles)
grouped into chunks of about ``CHUNK_BYTES``, since
thousands of 8-byte chunks make a file large and slow to read, and a shared chunk written
again at every snapshot must keep its place for a kill to leave earlier frames readable
(:func:`layout.series_storage`); frames are not compressed (a frame of particles took 5-20
times as long to write compressed, for 10-14 % of its size). No dataset carries
dimension scales (h5netcdf refuses a file where only some axes do), so xarray reads
every group with ``phony_dims="sort"``.

The file is flushed after every snapshot: a crash loses at most the snapshot being
written, and what is there stays readable (a new file is written as ``NAME.partial`` until
its header is complete). Readers open it read-only without HDF5 file locking; a file a run
is still writing is read as a consistent snapshot of what is complete, a private copy of
its bytes (:func:`reader.open_trajectory`).
"""

from .layout import CHUNK_BYTES, FORMAT, FORMAT_VERSION, PARTICLE_ELEMENTS, estimate_bytes
from .ownership import NoRoom, WriterLock, check_room, is_out_of_room, raised_in_h5py, write_error_reason
from .reader import Frame, RecordedRun, Series, Trajectory, open_trajectory
from .writer import RunWriter, TrajectoryWriter, create, open_for_resume

__all__ = ["CHUNK_BYTES", "FORMAT", "FORMAT_VERSION", "PARTICLE_ELEMENTS", "Frame", "NoRoom", "RecordedRun",
           "RunWriter", "Series", "Trajectory", "TrajectoryWriter", "WriterLock", "check_room", "create",
           "estimate_bytes", "is_out_of_room", "open_for_resume", "open_trajectory", "raised_in_h5py",
           "write_error_reason"]
