"""Recover a session file whose writer was killed.

After a kill the HDF5 superblock still carries the "open for SWMR write" status flags,
so HDF5 2.0 refuses to open the file for writing ("file is already open for write ...
may use <h5clear file> to clear file consistency flags"); ``locking=False`` does not
help, the flags are in the file itself.  h5py has no API to clear them, and patching the
checksummed superblock by hand would bypass HDF5.  A SWMR *reader* can still open the
file, so the committed part is copied into a fresh file next to it, synced to disk, and
``os.replace``d over the original: at every moment one complete file exists under the
session's name, nothing committed is lost, and an uncommitted partial block is dropped.
The cost is one copy of the file, paid only after a crash.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import cast

import h5py

from closedloop.data.session_format import (
    LIBVER,
    NO_CHUNK_CACHE,
    add_missing_columns,
    check_not_truncated,
    committed_lengths,
    create_layout,
    is_open_elsewhere,
    open_error,
    table_datasets,
    validate,
)
from closedloop.data.session_space import storage_error
from closedloop.errors import DataFileError

_COPY_BYTES = 1 << 25  # copy in ~32 MB slices to keep memory flat


def open_for_resume(path: Path) -> h5py.File:
    """Open a session for appending: recovered if its writer was killed, cut back to its
    committed part, validated, and in SWMR mode.  The caller holds the writer lock."""
    file = _open_read_write(path)
    if file is None:
        recover_killed_session(path)
        file = _open_read_write(path)
        if file is None:
            raise DataFileError(path, "is still marked open for writing after recovery")
    try:
        validate(file, path)
        lengths = committed_lengths(file)
        for table, dataset in table_datasets(file):
            if dataset.shape[0] > lengths[table]:
                dataset.resize(lengths[table], axis=0)
        add_missing_columns(file, lengths)  # a file from before a column was added gains it
        file.flush()
        file.swmr_mode = True
    except DataFileError:
        file.close()
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as error:
        file.close()
        raise DataFileError(path, f"session file is damaged ({error})") from None
    return file


def _open_read_write(path: Path) -> h5py.File | None:
    """The file opened read-write, or None if HDF5 says a (killed) writer still has it."""
    try:
        return h5py.File(path, "r+", libver=LIBVER, rdcc_nbytes=NO_CHUNK_CACHE)
    except OSError as error:
        if is_open_elsewhere(error):
            return None
        raise open_error(path, error) from None


def recover_killed_session(path: Path) -> None:
    """Replace ``path`` by a clean copy of its committed part (the writer must be dead)."""
    scratch = path.with_name(path.name + ".recovering")
    check_not_truncated(path)
    try:
        source = h5py.File(path, "r", swmr=True)
    except OSError as error:
        raise open_error(path, error) from None
    try:
        try:
            validate(source, path)
            committed_lengths(source)
        except (OSError, KeyError, ValueError, RuntimeError) as error:
            raise DataFileError(
                path,
                f"cannot recover the killed session ({error}); 'closedloop repair "
                f"{path} OUT.h5' may still copy its intact part",
            ) from None
        try:
            _copy_committed(source, scratch)
        except Exception as error:  # noqa: BLE001 - h5py reports a failed write as OSError or RuntimeError
            raise storage_error(
                scratch,
                "the recovered copy of the killed session",
                error,
                f"{path} is unchanged; make room there and resume again",
            ) from None
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    finally:
        source.close()
    _fsync(scratch)
    os.replace(scratch, path)
    _fsync(path.parent)


def _copy_committed(
    source: h5py.File, target_path: Path, lengths: dict[str, int] | None = None, attrs: dict | None = None
) -> None:
    """Copy the first ``lengths`` rows of every table (default: the committed part) into a new file."""
    lengths = committed_lengths(source) if lengths is None else lengths
    stimulus_shape = cast(tuple[int, int], tuple(int(v) for v in source.attrs["stimulus_shape"]))
    with h5py.File(target_path, "w", libver=LIBVER) as target:
        create_layout(
            target,
            dict(source.attrs) if attrs is None else attrs,
            source["units/id"][()],
            source["units/channel"][()],
            stimulus_shape,
        )
        for table, destination in table_datasets(target):
            n = lengths[table]
            destination.resize(n, axis=0)  # a column the source predates keeps its fill values
            if destination.name not in source:
                continue
            dataset = source[destination.name]
            row_bytes = max(1, dataset.dtype.itemsize * math.prod(dataset.shape[1:]))
            step = max(1, _COPY_BYTES // row_bytes)
            for start in range(0, n, step):
                stop = min(n, start + step)
                destination[start:stop] = dataset[start:stop]


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # directories cannot be opened on Windows; nothing to sync there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def open_read_only(path: Path) -> h5py.File:
    """Open a session for reading, also one whose writer was killed (SWMR, no file locking)."""
    try:
        return h5py.File(path, "r", locking=False)
    except OSError as error:
        if not is_open_elsewhere(error):
            raise open_error(path, error) from None
    check_not_truncated(path)
    try:
        return h5py.File(path, "r", swmr=True, locking=False)
    except OSError as error:
        raise open_error(path, error) from None


def copy_rows(source: h5py.File, target: Path, n_blocks: int, n_stimuli: int, attrs: dict) -> None:
    """Write ``target`` (atomically, synced) with the first ``n_blocks`` blocks and ``n_stimuli``
    stimuli of ``source`` and everything those blocks vouch for; ``attrs`` are its attributes.

    The new file is closed cleanly, so plain ``h5py.File(target, "r")`` opens it.
    """
    blocks = source["blocks"]
    lengths = {"blocks": n_blocks, "trials": 0, "spikes": 0, "sync": 0, "stimuli": n_stimuli}
    if n_blocks:
        lengths.update(
            trials=int(blocks["trial_stop"][n_blocks - 1]),
            spikes=int(blocks["spike_stop"][n_blocks - 1]),
            sync=int(blocks["sync_stop"][n_blocks - 1]),
        )
    lengths["responses"] = lengths["trials"]
    scratch = target.with_name(target.name + ".partial")
    try:
        _copy_committed(source, scratch, lengths, attrs)
        _fsync(scratch)
        os.replace(scratch, target)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    _fsync(target.parent)
