"""Disk space of a session: what a write failure says, and how much room a session needs.

A session is an animal's recording that cannot be made again, so a failed write (disk
full, I/O error) must stop the run with one line that names the file, the error and
the free space; and a run must not start on a disk that cannot hold it.  The size
estimate follows the file's layout (`closedloop.data.session_format`): HDF5 allocates
whole chunks, so a session with one spike already holds a full chunk of spike rows.
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

from closedloop.data.session_format import CHUNK_ROWS, COLUMNS, response_chunk_rows
from closedloop.errors import DataFileError

#: HDF5 object headers, B-trees, the superblock and the attributes that are not rig or
#: protocol text: measured at about 60 kB for an empty session; rounded up.
_LAYOUT_OVERHEAD_BYTES = 256 * 1024
#: One runner journal line (`closedloop.runner.journal`), with per-unit held-out r of a fit.
_JOURNAL_BYTES_PER_BLOCK = 4096


class StorageError(DataFileError):
    """Writing a session file or its journal failed (disk full, I/O error).

    Nothing of the failed block was committed; every earlier block stays readable.
    The writer refuses every later write, since HDF5's state after a failed write is
    not trustworthy.
    """


def free_bytes(path: str | Path) -> int | None:
    """Bytes free to this user on the filesystem holding ``path`` (or its folder); None if unknown."""
    path = Path(path)
    for candidate in (path, path.parent, Path.cwd()):
        try:
            return int(shutil.disk_usage(candidate).free)
        except OSError:
            continue
    return None


def format_bytes(n: float | None) -> str:
    """``1536`` → ``"1.5 kB"`` (powers of 1000, as ``df -H`` and file managers print)."""
    if n is None:
        return "unknown"
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"  # pragma: no cover - the loop returns


_ERRNO = re.compile(r"errno = (\d+), error message = '([^']*)'")


def describe_error(error: BaseException) -> str:
    """The OS error inside an OSError or an h5py error text, on one line.

    h5py reports a failed ``write()`` as ``RuntimeError: Unable to ... (file write failed:
    ..., errno = 28, error message = 'No space left on device', ...)``.
    """
    text = str(error)
    match = _ERRNO.search(text)
    if match:
        return f"{match.group(2)} (errno {match.group(1)})"
    if isinstance(error, OSError) and error.errno is not None and error.strerror:
        return f"{' '.join(error.strerror.split())} (errno {error.errno})"
    text = " ".join(text.split())
    return f"{type(error).__name__}: {text[:300]}"


def storage_error(path: str | Path, what: str, error: BaseException, safe: str = "") -> StorageError:
    """A `StorageError` for a failed write of ``what`` to ``path``: the error and the free space.

    ``safe`` says what is still intact (e.g. "blocks 0-7 are committed and readable").
    """
    free = free_bytes(path)
    message = f"writing {what} failed: {describe_error(error)}; {format_bytes(free)} free on its filesystem"
    if safe:
        message += f"; {safe}"
    return StorageError(path, message)


def session_bytes(
    *,
    n_units: int,
    stimulus_shape: tuple[int, int],
    n_stimuli: int,
    n_trials: int,
    n_spikes: int,
    n_sync: int,
    n_blocks: int,
    text_bytes: int = 0,
) -> int:
    """Bytes a session file with these row counts takes on disk (an upper estimate).

    Parameters
    ----------
    n_units, stimulus_shape
        Units recorded and (H, W) of a stimulus.
    n_stimuli, n_trials, n_spikes, n_sync, n_blocks
        Rows of each table.
    text_bytes
        Rig and protocol text stored as attributes.

    Returns
    -------
    int
        The session file's size plus its runner journal.
    """
    rows = {"stimuli": n_stimuli, "trials": n_trials, "spikes": n_spikes, "sync": n_sync, "blocks": n_blocks}
    total = _LAYOUT_OVERHEAD_BYTES + int(text_bytes) + n_blocks * _JOURNAL_BYTES_PER_BLOCK
    for table, columns in COLUMNS.items():
        chunk = CHUNK_ROWS[table]
        allocated = math.ceil(rows[table] / chunk) * chunk  # HDF5 writes whole chunks
        total += allocated * sum(dtype.itemsize for dtype, _ in columns.values())
    height, width = stimulus_shape
    total += n_stimuli * height * width * 4  # float32 pixels, one image per chunk
    response_rows = response_chunk_rows(n_units)
    total += math.ceil(n_trials / response_rows) * response_rows * max(n_units, 1) * 4
    return int(total)
