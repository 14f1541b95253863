"""The session HDF5 layout (docs/architecture.md, Files): one place that names every group, column and code.

Layout (format ``closedloop-session``, version 1)::

    /                 attributes: format, format_version, session_id, created_utc,
                      closedloop_version, seeds_json, metadata_json, rig_yaml,
                      protocol_yaml, stimulus_shape (H, W), response_window_s (start, stop)
    /units/{id, channel}                      fixed: one row per unit
    /stimuli/pixels   (n, H, W) float32 in [0, 1]
    /stimuli/{id, kind, source_index, orientation_deg, phase_deg, sf_cpd, radius_px,
              annulus, unit_id, target_hz, model_version, seed, achieved_hz, spread_hz,
              start_stimulus_id, committed}
    /trials/{stimulus_id, block, repeat, onset_s, flip_s, n_frames, dropped_frames}
    /responses        (n_trials, n_units) float32 Hz in the session's response window
    /spikes/{unit_id, time_s}
    /sync/{time_s, line, state}
    /blocks/{index, kind, trial_start, trial_stop, spike_start, spike_stop,
             sync_start, sync_stop, flagged, flag_code, committed}

Every appended dataset is chunked with an unlimited first axis and holds only numbers
(SWMR cannot extend variable-length data).  A row counts only once it is *committed*:
a block row with ``committed == 1`` vouches for the trials, responses, spikes and sync
events before its ``*_stop`` columns, and a stimulus row with ``committed == 1`` for its
own pixels.  The commit flag is written after a flush of the data it covers, so a writer
killed at any point leaves a file whose committed part is complete; readers ignore the
rest and `SessionWriter.resume` cuts it off.

Columns added to version 1 after it shipped (`ADDED_COLUMNS`: ``stimuli/spread_hz``, the
model ensemble's spread of a synthesized image's predicted rate; ``stimuli/start_stimulus_id``,
the stimulus a synthesized image's optimisation started from, -1 for the blank screen) are absent from older
files: a reader gives their fill value instead, and a resumed or copied file gains them.
"""

from __future__ import annotations

import os
import re
import struct
import time
from enum import IntEnum
from pathlib import Path

import h5py
import numpy as np

from closedloop.errors import DataFileError

FORMAT_NAME = "closedloop-session"
FORMAT_VERSION = 1
# SWMR needs the HDF5 1.10 file format at least; a "latest" lower bound would, under
# HDF5 2.0, write objects that HDF5 1.10-1.14 readers (MATLAB, older h5py) cannot open.
LIBVER = ("v110", "latest")
#: A writer opens the file with HDF5's chunk cache off (``rdcc_nbytes``): every chunk write
#: reaches the file at once and fails there, instead of failing later, unreported, when the
#: cache evicts it; and reading a block back before committing it reads the file itself.
NO_CHUNK_CACHE = 0


class StimulusKind(IntEnum):
    """What a stored stimulus is (column ``stimuli/kind``)."""

    NATURAL = 0
    GRATING = 1
    SYNTHESIZED = 2
    OTHER = 3


class BlockKind(IntEnum):
    """What a block presented (column ``blocks/kind``)."""

    NATURAL = 0
    GRATING = 1
    SYNTHESIZED = 2
    MIXED = 3
    OTHER = 4


class BlockFlag(IntEnum):
    """Why a block is flagged (column ``blocks/flag_code``); NONE means not flagged."""

    NONE = 0
    PHOTODIODE_MISMATCH = 1
    DROPPED_FRAMES = 2
    ABORTED = 3
    OTHER = 4


def parse_enum(enum: type[IntEnum], value: IntEnum | str | int, what: str) -> IntEnum:
    """``value`` as a member of ``enum``, by member, name (any case) or code."""
    try:
        if isinstance(value, str):
            return enum[value.upper()]
        return enum(int(value))
    except (KeyError, ValueError, TypeError):
        names = ", ".join(m.name.lower() for m in enum)
        raise ValueError(f"unknown {what} {value!r}; use one of {names}") from None


_I64, _F64 = np.dtype(np.int64), np.dtype(np.float64)
NAN = float("nan")

# table -> column -> (dtype, fill value for rows not given / not applicable)
COLUMNS: dict[str, dict[str, tuple[np.dtype, float | int]]] = {
    "stimuli": {
        "id": (_I64, -1),
        "kind": (np.dtype(np.uint8), int(StimulusKind.OTHER)),
        "source_index": (_I64, -1),
        "orientation_deg": (_F64, NAN),
        "phase_deg": (_F64, NAN),
        "sf_cpd": (_F64, NAN),
        "radius_px": (_F64, NAN),
        "annulus": (np.dtype(np.int8), -1),  # -1 n/a, 0 disc, 1 annulus
        "unit_id": (_I64, -1),
        "target_hz": (_F64, NAN),
        "model_version": (_I64, -1),
        "seed": (_I64, -1),
        "achieved_hz": (_F64, NAN),
        "spread_hz": (_F64, NAN),
        "start_stimulus_id": (_I64, -1),
        "committed": (np.dtype(np.uint8), 0),
    },
    "trials": {
        "stimulus_id": (_I64, -1),
        "block": (_I64, -1),
        "repeat": (_I64, -1),
        "onset_s": (_F64, NAN),
        "flip_s": (_F64, NAN),
        "n_frames": (np.dtype(np.int32), -1),
        "dropped_frames": (np.dtype(np.int32), 0),
    },
    "spikes": {"unit_id": (_I64, -1), "time_s": (_F64, NAN)},
    "sync": {"time_s": (_F64, NAN), "line": (np.dtype(np.int32), -1), "state": (np.dtype(np.int8), -1)},
    "blocks": {
        "index": (_I64, -1),
        "kind": (np.dtype(np.uint8), int(BlockKind.OTHER)),
        "trial_start": (_I64, 0),
        "trial_stop": (_I64, 0),
        "spike_start": (_I64, 0),
        "spike_stop": (_I64, 0),
        "sync_start": (_I64, 0),
        "sync_stop": (_I64, 0),
        "flagged": (np.dtype(np.uint8), 0),
        "flag_code": (np.dtype(np.int32), 0),
        "committed": (np.dtype(np.uint8), 0),
    },
}
#: Columns of `COLUMNS` that files written before them lack (the format version stayed 1:
#: older readers ignore them); read as their fill value there.
ADDED_COLUMNS: dict[str, tuple[str, ...]] = {"stimuli": ("spread_hz", "start_stimulus_id")}
CHUNK_ROWS = {"stimuli": 256, "trials": 1024, "spikes": 65536, "sync": 1024, "blocks": 64}
REQUIRED_ATTRS = (
    "format",
    "format_version",
    "session_id",
    "created_utc",
    "closedloop_version",
    "seeds_json",
    "metadata_json",
    "rig_yaml",
    "protocol_yaml",
    "stimulus_shape",
    "response_window_s",
)


def table_dtype(table: str) -> np.dtype:
    """The numpy structured dtype a reader returns for ``table``."""
    return np.dtype([(name, dtype) for name, (dtype, _) in COLUMNS[table].items()])


def create_layout(
    file: h5py.File,
    attrs: dict,
    unit_ids: np.ndarray,
    channels: np.ndarray,
    stimulus_shape: tuple[int, int],
) -> None:
    """Create every group and dataset of an empty session (before SWMR is switched on)."""
    for key, value in attrs.items():
        file.attrs[key] = value
    units = file.create_group("units")
    units.create_dataset("id", data=np.asarray(unit_ids, dtype=np.int64))
    units.create_dataset("channel", data=np.asarray(channels, dtype=np.int32))
    height, width = stimulus_shape
    for table, columns in COLUMNS.items():
        group = file.create_group(table)
        for name in columns:
            _create_column(group, table, name, 0)
    file["stimuli"].create_dataset(
        "pixels",
        shape=(0, height, width),
        maxshape=(None, height, width),
        chunks=(1, height, width),
        dtype=np.float32,
        fillvalue=np.nan,
    )
    n_units = len(unit_ids)
    file.create_dataset(
        "responses",
        shape=(0, n_units),
        maxshape=(None, n_units),
        chunks=(response_chunk_rows(n_units), max(n_units, 1)),
        dtype=np.float32,
        fillvalue=np.nan,
    )


def _create_column(group: h5py.Group, table: str, name: str, rows: int) -> None:
    """An appendable column of ``rows`` fill values."""
    dtype, fill = COLUMNS[table][name]
    group.create_dataset(
        name, shape=(rows,), maxshape=(None,), chunks=(CHUNK_ROWS[table],), dtype=dtype, fillvalue=fill
    )


def add_missing_columns(file: h5py.File, lengths: dict[str, int]) -> None:
    """Give a file written before an `ADDED_COLUMNS` column that column, ``lengths[table]`` fill values
    long (before SWMR is switched on: SWMR cannot create datasets)."""
    for table, names in ADDED_COLUMNS.items():
        for name in names:
            if name not in file[table]:
                _create_column(file[table], table, name, lengths[table])


def present_columns(file: h5py.File, table: str) -> list[str]:
    """The columns of ``table`` this file holds (all but `ADDED_COLUMNS` it predates)."""
    return [name for name in COLUMNS[table] if name in file[table]]


def response_chunk_rows(n_units: int) -> int:
    """Rows of ``responses`` per chunk: about 256 kB of float32 rates."""
    return max(1, min(1024, 65536 // max(n_units, 1)))


def append_rows(dataset: h5py.Dataset, rows: np.ndarray) -> None:
    """Extend ``dataset`` along axis 0 and write ``rows`` at the end (no flush)."""
    n = dataset.shape[0]
    dataset.resize(n + rows.shape[0], axis=0)
    dataset[n:] = rows


def leading_committed(flags: np.ndarray) -> int:
    """Number of rows before the first uncommitted one."""
    uncommitted = np.flatnonzero(np.asarray(flags) != 1)
    return int(uncommitted[0]) if uncommitted.size else int(len(flags))


def committed_lengths(file: h5py.File) -> dict[str, int]:
    """Rows of each table (and of ``responses``) that the committed part vouches for."""
    blocks = file["blocks"]
    n_blocks = leading_committed(blocks["committed"][()])
    lengths = {"blocks": n_blocks, "trials": 0, "spikes": 0, "sync": 0}
    if n_blocks:
        last = n_blocks - 1
        lengths["trials"] = int(blocks["trial_stop"][last])
        lengths["spikes"] = int(blocks["spike_stop"][last])
        lengths["sync"] = int(blocks["sync_stop"][last])
    lengths["responses"] = lengths["trials"]
    lengths["stimuli"] = leading_committed(file["stimuli/committed"][()])
    return lengths


def table_datasets(file: h5py.File) -> list[tuple[str, h5py.Dataset]]:
    """(table, dataset) for every appendable dataset, for refresh/copy/truncate."""
    found = [(table, file[table][name]) for table in COLUMNS for name in present_columns(file, table)]
    found.append(("stimuli", file["stimuli/pixels"]))
    found.append(("responses", file["responses"]))
    return found


def validate(file: h5py.File, path: str | Path) -> None:
    """Raise DataFileError unless ``file`` is a closedloop session this code can read."""
    attrs = file.attrs
    name = _plain(attrs.get("format"))
    if name != FORMAT_NAME:
        raise DataFileError(
            path,
            f"is an HDF5 file but not a closedloop session (attribute 'format' is {name!r}, expected {FORMAT_NAME!r})",
        )
    version = _plain(attrs.get("format_version"))
    if version != FORMAT_VERSION:
        raise DataFileError(
            path,
            f"session format version {version!r}; this closedloop reads version "
            f"{FORMAT_VERSION} (use the closedloop version that wrote it)",
        )
    missing = [key for key in REQUIRED_ATTRS if key not in attrs]
    expected = ["units/id", "units/channel", "stimuli/pixels", "responses"] + [
        f"{table}/{name}" for table in COLUMNS for name in COLUMNS[table] if name not in ADDED_COLUMNS.get(table, ())
    ]
    missing += [name for name in expected if name not in file]
    if missing:
        raise DataFileError(path, f"session file is missing {', '.join(missing)}; it is damaged")
    n_units = file["units/id"].shape[0]
    if file["units/channel"].shape != (n_units,) or file["responses"].shape[1:] != (n_units,):
        raise DataFileError(
            path,
            f"unit table has {n_units} units but units/channel is "
            f"{file['units/channel'].shape} and responses {file['responses'].shape}",
        )
    if tuple(file["stimuli/pixels"].shape[1:]) != tuple(int(v) for v in attrs["stimulus_shape"]):
        raise DataFileError(
            path,
            f"stimuli/pixels is {file['stimuli/pixels'].shape}, stimulus_shape attribute "
            f"{tuple(int(v) for v in attrs['stimulus_shape'])}; the file is damaged",
        )


def _plain(value: object) -> object:
    """An attribute value as a plain Python object, for comparison and messages."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def is_open_elsewhere(error: OSError) -> bool:
    """Whether h5py refused a file because its status flags say a writer has it open."""
    text = str(error)
    return "already open for write" in text or "h5clear" in text


def open_error(path: str | Path, error: Exception) -> DataFileError:
    """A DataFileError that says, in words, why h5py could not open ``path``."""
    text = str(error)
    if isinstance(error, FileNotFoundError) or "No such file" in text:
        return DataFileError(path, "does not exist")
    truncated = re.search(r"truncated file: eof = (\d+).*stored_eof = (\d+)", text)
    if truncated:
        return truncated_error(path, int(truncated.group(2)), int(truncated.group(1)))
    if "file signature not found" in text:
        return DataFileError(path, "is not an HDF5 file (no HDF5 signature); not a session file")
    if "already open for read-only" in text or "locking flag values don't match" in text:
        return DataFileError(
            path,
            "is open read-only in this process (HDF5 cannot open one file for reading "
            "and writing in the same process); close the SessionReader first",
        )
    if "unable to lock file" in text:
        return DataFileError(
            path,
            "is locked by another process that has it open (a writer starting up, or a "
            "program reading it with HDF5 file locking); close that program or try again",
        )
    if isinstance(error, OSError) and is_open_elsewhere(error):
        return DataFileError(
            path,
            "is open for writing by another process, or its writer was killed before "
            "switching on SWMR; once no process writes it, 'closedloop repair SESSION.h5 OUT.h5' copies "
            "its committed blocks into a new file",
        )
    return DataFileError(path, f"cannot be read as HDF5, it is truncated or corrupt ({text})")


def truncated_error(path: str | Path, recorded: int, size: int) -> DataFileError:
    """The file is shorter than HDF5 recorded: nothing in it can be trusted or copied."""
    return DataFileError(
        path,
        f"is truncated: HDF5 records {recorded} bytes but the file has {size} (a copy cut short?); HDF5 "
        "cannot read it, so no block can be recovered from this copy: copy the whole file again from the "
        "disk it was recorded on",
    )


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def check_not_truncated(path: str | Path, wait_s: float = 1.0) -> None:
    """Raise DataFileError if ``path`` is shorter than its superblock says.

    HDF5 checks this itself, except when opening for SWMR reading (a live writer may be
    extending the file), and a SWMR reader of a truncated file retries its reads for
    minutes instead of failing.  So SWMR opens go through this check first.  A live
    writer can leave the file short of its recorded end for a moment, hence the retries.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with open(path, "rb") as file:
                head = file.read(44)
            size = os.path.getsize(path)
        except OSError as error:
            raise DataFileError(path, f"cannot be read ({error})") from None
        # Superblock versions 2 and 3 (the only ones SWMR uses) with 8-byte addresses:
        # signature, version, offset size, length size, flags, then base address,
        # extension address and end-of-file address.
        if len(head) < 44 or head[:8] != _HDF5_SIGNATURE or head[8] not in (2, 3) or head[9] != 8:
            return
        base, _, end = struct.unpack("<3Q", head[12:36])
        if size >= base + end:
            return
        if time.monotonic() >= deadline:
            raise truncated_error(path, base + end, size)
        time.sleep(0.02)
