"""Who may write a trajectory file, and whether there is room for it (docs/design.md §4.6).

Two rules keep a file from being lost:

* **One writer.** A process takes :class:`WriterLock` on an output path before it reads,
  replaces or continues the file there, and holds it until the file is closed. A second
  writer is refused before it touches anything, with a message naming the first. The lock
  is an advisory ``flock`` on a small file beside the output (``<output>.lock``, removed on
  release), so it does not conflict with the HDF5 library's own locks and is released by
  the kernel when the holder dies, however it dies.
* **Room before writing.** :func:`check_room` compares what a write needs with the free
  space of the file system and the process's file-size limit (``ulimit -f``), so a full disk
  ends a run cleanly between two snapshots (:class:`NoRoom`) instead of inside the HDF5
  library, which leaves a file it cannot read and may crash the process on exit.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Optional

from ..errors import UsageError

try:  # POSIX; elsewhere a run goes unlocked
    import fcntl
    import resource
except ImportError:  # pragma: no cover
    fcntl = resource = None

WRITE_MARGIN = 256 * 1024
"""Bytes kept free beyond a write's own size: the HDF5 metadata (chunk index, object headers,
heaps) a snapshot may allocate, and the status a failed run still has to write."""

_ROOM_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


class NoRoom(OSError):
    """No room for the next write: the disk is full, or the file would pass the size limit.
    Raised before anything is written, so the file keeps every earlier snapshot."""


def lock_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".lock")


class WriterLock:
    """The exclusive right to write the trajectory file at ``path``; a context manager.

    ``acquire`` raises :class:`~meanfield.UsageError` naming the holder (its pid, host and
    command, and since when) when another process writes the file.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._fd: Optional[int] = None

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        if fcntl is None or self._fd is not None:
            return
        where = lock_path(self.path)
        while True:
            try:
                fd = os.open(where, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise UsageError(f"{self.path}: cannot write there ({e.strerror}: {where})") from None
            if not _lock_exclusively(fd):
                holder = _read_holder(fd)
                os.close(fd)
                raise UsageError(f"{self.path} is being written by another process ({holder}): wait for it "
                                 f"to finish, or write elsewhere with --output") from None
            if _same_file(fd, where):  # not unlinked by a holder releasing it meanwhile
                break
            os.close(fd)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "command": _command_line()}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(lock_path(self.path))  # while still held: a waiting process re-checks the inode
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None


def _lock_exclusively(fd: int, tries: int = 5) -> bool:
    """An exclusive ``flock`` on ``fd``, tried a few times over about 30 ms: a reader asking
    :func:`being_written` holds a shared one for microseconds, which must not refuse a writer."""
    for attempt in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < tries:
                time.sleep(0.002 * 2 ** attempt)
    return False


def being_written(path) -> bool:
    """Whether a process holds the :class:`WriterLock` of ``path`` now (a run is writing it):
    its lock file exists and a shared ``flock`` on it is refused. A lock file left by a killed
    writer holds no lock (the kernel released it)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(lock_path(path), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # releases the shared lock if it was taken
    return False


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _read_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return (f"pid {holder['pid']} on {holder['host']}, since {holder['since']}: "
                f"{holder.get('command', '?')}")
    except (OSError, ValueError, KeyError):
        return "it holds the lock file"


def _command_line() -> str:
    try:
        argv = Path("/proc/self/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "?"
    argv[0] = os.path.basename(argv[0])
    text = " ".join(" ".join(argv).split())  # one line, whatever the arguments hold
    return text if len(text) <= 120 else text[:117] + "..."


# ----------------------------------------------------------------------------- room
def room(path) -> tuple[float, str]:
    """The bytes that may still be written to the file at ``path`` (existing or not): the
    smaller of the file system's free space (for an unprivileged user) and the file-size
    limit less the file's size; and which of the two it is, in words."""
    path = Path(path)
    usage = shutil.disk_usage(path.parent if str(path.parent) else ".")
    free, why = float(usage.free), f"{_mb(usage.free)} free on the disk of {path.parent or '.'}"
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0] if resource is not None else -1
    if limit != getattr(resource, "RLIM_INFINITY", -1) and limit >= 0:
        size = path.stat().st_size if path.exists() else 0
        if limit - size < free:
            free, why = float(max(limit - size, 0)), f"the file-size limit (ulimit -f) is {_mb(limit)}"
    return free, why


def check_room(path, needed: float, what: str) -> None:
    """Raise :class:`NoRoom` unless ``needed`` bytes (plus :data:`WRITE_MARGIN`) fit at ``path``."""
    free, why = room(path)
    if needed + WRITE_MARGIN > free:
        raise NoRoom(errno.ENOSPC, f"no room for {what} (up to {_mb(needed + WRITE_MARGIN)}): {why}")


def is_out_of_room(exc: BaseException) -> bool:
    """Whether an error from writing is the disk, a quota or the size limit (h5py reports
    those as OSError or RuntimeError with the errno in the message)."""
    if isinstance(exc, OSError) and exc.errno in _ROOM_ERRNOS:
        return True
    text = str(exc)
    return any(f"errno = {code}," in text for code in _ROOM_ERRNOS)


def raised_in_h5py(exc: BaseException) -> bool:
    """Whether an error comes from the HDF5 library (a damaged file), not from our code."""
    import os

    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and "h5py" in tb.tb_frame.f_code.co_filename.split(os.sep)


def write_error_reason(exc: BaseException) -> str:
    """The system's words for a failed write ('No space left on device'), without the HDF5
    library's report around them."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    found = re.search(r"error message = '([^']*)'", str(exc))
    return found.group(1) if found else str(exc).splitlines()[0]


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:.3g} MB"
