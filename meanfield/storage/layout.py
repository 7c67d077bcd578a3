"""What every part of the storage package agrees on: names, paths, chunking, attributes.

The layout itself is documented in :mod:`meanfield.storage` and docs/design.md §4.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from typing import Any

import h5py
import numpy as np

from ..errors import UsageError
from ..model.measures import TEST_MEASURES

FORMAT = "meanfield"
FORMAT_VERSION = 1
H5MD_VERSION = (1, 1)

CHUNK_BYTES = 1024
"""A frame this large or larger gets a chunk of its own; smaller frames share chunks of about this size."""

CHECKPOINT_CHUNK = 1 << 20
"""Checkpoint state chunk, in float64 values (8 MiB)."""

COMPRESSION = {"compression": "gzip", "shuffle": True}
"""How the arrays written once (the data, the initial draws) are compressed. The frames of a
growing dataset are not (:func:`series_storage`)."""

MEASURE_DTYPE = np.float64
"""Measures are few values per frame: they are kept at full precision whatever the snapshot dtype."""

PARTICLE_ELEMENTS = ("position", "amplitude", "bias")
"""The H5MD particle elements: position = the input weights w_i, amplitude = a_i, bias = b_i."""

STATUSES = ("running", "complete", "interrupted")
"""A run's status, or 'failed: <reason>'."""

ENDINGS = ("t_end", "stop_loss")
"""How a complete run ended (its attr ``ended``): at train.t_end, or once its fit measure fell
below train.stop_loss; its attr ``t_stop`` is the time it ended at."""

PROGRESS_ATTRS = ("status", "ended", "t_stop")
"""The attributes of /parameters/<run> that say how the run went, not how it was set up."""

NO_TEST_SET = (f"no test set (data.test_fraction 0): {', '.join(TEST_MEASURES[:-1])} and {TEST_MEASURES[-1]} "
               "are not recorded")
"""What every reader says of data without a test set."""


def lacks_test_set(h5: h5py.File) -> bool:
    """Whether the file's data are samples without a test set (X_train, and X_test with no
    rows); population mode, which has no samples at all, is not such data."""
    data = h5.get("data")
    return data is not None and "X_train" in data and "X_test" in data and data["X_test"].shape[0] == 0


def parameters(name: str) -> str:
    return f"parameters/{name}"


def particles(name: str) -> str:
    return f"particles/{name}"


def observables(name: str) -> str:
    return f"observables/{name}"


def checkpoint(name: str) -> str:
    return f"checkpoint/{name}"


# ----------------------------------------------------------------------------- opening
def open_ours(path, mode: str, **kwargs) -> h5py.File:
    """Open ``path`` with h5py if it is a trajectory file of ours; UsageError naming why not.

    Read-only (``mode`` "r") in HDF5's SWMR read mode, which reads objects past the end of
    allocation the superblock records: a process killed while HDF5 flushed can leave the
    superblock's end short of chunks it had written and indexed (h5py: "addr overflow"),
    and the file is otherwise whole (:func:`extend_allocation_to_file_end` mends it before
    a resume writes to it)."""
    path = os.fspath(path)
    if mode == "r":
        kwargs.setdefault("swmr", True)

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
        if "unable to lock file" in str(e):
            raise UsageError(f"{path} is open in another process that holds an HDF5 lock on it (an h5py.File in "
                             "a notebook?): close it there first") from None
        raise UsageError(f"{path}: cannot open the trajectory file ({e})") from None
    why = foreign(h5)
    if why is None:
        return h5
    h5.close()
    raise refuse(why)


SUPERBLOCK_SIGNATURE = b"\x89HDF\r\n\x1a\n"

END_OF_ALLOCATION_OFFSET = {0: 40, 1: 44}
"""Where a version 0 or 1 superblock (h5py's default, the files this package writes) holds the
end of allocation (its "end of file address"), 8 bytes little-endian: after the signature (8),
seven version and size bytes, the B-tree K values and flags (9; version 1: 4 more), the base
address (8) and the free-space address (8) (the HDF5 file format specification, §II.A)."""


def extend_allocation_to_file_end(path) -> bool:
    """Set the superblock's end of allocation to the file's size where it falls short; True if
    it did. HDF5 writes a flush's raw data, then its metadata in no fixed order: a process
    killed in between can leave a chunk written and indexed beyond the end the superblock
    records (1 kill in 100 to 300 at random moments, ``tests/test_kills.py``). Reading, HDF5
    refuses that chunk ("addr overflow"); writing, it would allocate new chunks over it. Every
    byte up to the file's size was written by the killed process, so the end is moved there
    (what ``h5clear --increment`` does). Superblock versions 0 and 1 with 8-byte addresses
    at offset 0 only (ours); any other file is left as it is."""
    import struct

    with open(path, "r+b") as fh:
        head = fh.read(56)
        at = END_OF_ALLOCATION_OFFSET.get(head[8] if len(head) > 8 else -1)
        if not head.startswith(SUPERBLOCK_SIGNATURE) or at is None or head[13] != 8:
            return False
        base, end = struct.unpack_from("<Q", head, at - 16)[0], struct.unpack_from("<Q", head, at)[0]
        size = os.fstat(fh.fileno()).st_size
        if base != 0 or end >= size:
            return False
        fh.seek(at)
        fh.write(struct.pack("<Q", size))
        return True


def foreign(h5: h5py.File) -> str | None:
    """Why an open HDF5 file is not a trajectory file this version reads, or None if it is."""
    params = h5.get("parameters")
    if "h5md" not in h5:
        return "no /h5md group"
    if not isinstance(params, h5py.Group) or params.attrs.get("format") != FORMAT:
        return f"no /parameters attribute format = {FORMAT!r}"
    if int(params.attrs.get("format_version", 0)) > FORMAT_VERSION:
        return (f"format version {int(params.attrs['format_version'])}, newer than this meanfield "
                f"reads ({FORMAT_VERSION})")
    return None


# ----------------------------------------------------------------------------- size
def estimate_bytes(
    *, frames: int, m: int, d: int, bias: bool, particles: bool, n_measures: int, itemsize: int,
    n_data_values: int = 0,
) -> int:
    """A rough upper estimate of one run's file size, uncompressed.

    ``n_measures`` counts measure values per frame (a vector measure of length k counts k);
    ``n_data_values`` the numbers in /data (count them once per file, not per run).
    """
    per_particle = d + 1 + int(bias)
    snapshot = 8 * n_measures + 16  # measures (float64), step and time
    if particles:
        snapshot += m * per_particle * itemsize
    checkpoint_bytes = 8 * m * per_particle
    overhead = 64 * 1024 + 64 * frames  # metadata and chunk index
    return frames * snapshot + checkpoint_bytes + 8 * n_data_values + overhead


def frame_chunks(frame_shape: tuple, dtype) -> tuple:
    """The chunk shape of a dataset growing along time: one frame lies in exactly one chunk."""
    frame_bytes = np.dtype(dtype).itemsize * math.prod(frame_shape)
    return (max(1, CHUNK_BYTES // frame_bytes), *frame_shape)


def series_storage(frame_shape: tuple, dtype) -> dict:
    """How a dataset growing along time is stored (h5py's create_dataset keywords): its
    chunks (:func:`frame_chunks`), uncompressed, a chunk of one frame with a Fletcher-32
    checksum.

    A chunk that several frames share is written again at every snapshot; compressed, it
    changes size and moves, and a process killed while the library writes it leaves every
    frame in it unreadable ("filter returned failure during read": 1 kill in 17 at random
    moments). Uncompressed, it keeps its place and its earlier frames' bytes are written
    again unchanged, so a kill can touch only the frame being written. A chunk of one
    frame (the particles, large measures) is written once; it is not compressed either:
    gzip with shuffle saved 10-14 % of a frame of particles and made its write 5-30 times
    as long (m = 4096, d = 100, float32: 35-83 ms against 1.2-4.4; d = 2: 1-2 ms against
    0.2; docs/design.md §4.2). Its checksum (HDF5's fletcher32 filter, about 1 ms at that
    size) makes a damaged frame an error on reading, as gzip's failure did."""
    chunks = frame_chunks(frame_shape, dtype)
    return {"chunks": chunks, **({"fletcher32": True} if chunks[0] == 1 else {})}


# ----------------------------------------------------------------------------- attributes
def encode_attr(key: str, value: Any):
    """Attribute values: str, bool, int, float, lists of numbers; dicts are stored as JSON text."""
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=json_default)
    if isinstance(value, (str, bool, int, float, np.generic)):
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        array = np.asarray(value)
        if array.dtype.kind in "biuf":
            return array
        if array.dtype.kind == "U":
            return array.astype(h5py.string_dtype())
    raise TypeError(f"attribute {key!r}: cannot store {type(value).__name__} {value!r}")


def decode_attr(value: Any):
    """An attribute as Python: text, JSON mappings as dicts, arrays as lists, numpy scalars as Python."""
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


def json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise ValueError(f"{what} must be a non-empty string without '/', not {name!r}")
