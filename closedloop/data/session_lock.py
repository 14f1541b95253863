"""One writer per session file: an advisory lock in a ``<file>.lock`` sidecar.

HDF5 drops its own file lock once SWMR writing starts (so readers can open the file),
which means it can no longer tell a live writer from a killed one.  The sidecar's
``flock`` is released by the kernel when the holding process dies, however it dies, so
`SessionWriter.resume` can tell "still being written" (refuse) from "writer killed"
(recover).  Where ``fcntl`` does not exist (Windows) there is no lock.
"""

from __future__ import annotations

import os
from pathlib import Path

from closedloop.errors import DataFileError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]  # no advisory locks there: the lock is skipped


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def acquire(path: Path) -> int | None:
    """Take the writer lock of session ``path``; return its descriptor (or None)."""
    if fcntl is None:  # pragma: no cover - Windows
        return None
    sidecar = lock_path(path)
    try:
        fd = os.open(sidecar, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise DataFileError(path, f"cannot create the writer lock {sidecar}: {error}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DataFileError(
            path, f"is being written by another process (pid {holder}); stop that writer first"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def release(path: Path, fd: int | None) -> None:
    """Give the lock back and remove the sidecar."""
    if fd is None:
        return
    try:
        lock_path(path).unlink(missing_ok=True)
    finally:
        os.close(fd)  # closing the descriptor releases the flock
