"""Consistency of a session file's committed part, checked before anything is read from it.

A damaged or hand-edited session can have commit records that point past the data
(``trial_stop`` of 1e9), trials of stimuli that do not exist (stimulus 999999) or of
blocks that do not exist.  Reading such a file would fail deep inside numpy
(IndexError) or try to allocate tens of GiB; `check_committed` refuses it first with
one line that names the table, the row and what is wrong.  It reads only the block
table and two trial columns, so it is cheap enough for every open and refresh.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from closedloop.data.session_format import BlockFlag, BlockKind, present_columns
from closedloop.errors import DataFileError

_REPAIR = "the file is damaged; recover what is intact with SessionWriter.resume or use a backup"


def check_committed(
    file: h5py.File, lengths: dict[str, int], path: str | Path, since: dict[str, int] | None = None
) -> None:
    """Raise `DataFileError` unless the committed part ``lengths`` describes is self-consistent.

    Parameters
    ----------
    file
        The open session file.
    lengths
        Its committed lengths (`closedloop.data.session_format.committed_lengths`).
    path
        The file, for messages.
    since
        Lengths already checked (committed rows never change): only the rows after
        them are read, so a reader refreshing a growing session stays cheap.
    """
    since = since or {}
    for table, n in lengths.items():
        stored = _stored_rows(file, table)
        if n > stored:
            raise DataFileError(
                path, f"its committed blocks vouch for {n} rows of {table} but the file holds {stored}; {_REPAIR}"
            )
    _check_blocks(file, lengths, path, min(since.get("blocks", 0), lengths["blocks"]))
    _check_trials(file, lengths, path, min(since.get("trials", 0), lengths["trials"]))


def _stored_rows(file: h5py.File, table: str) -> int:
    if table == "responses":
        return int(file["responses"].shape[0])
    rows = [int(file[table][name].shape[0]) for name in present_columns(file, table)]
    if table == "stimuli":
        rows.append(int(file["stimuli/pixels"].shape[0]))
    return min(rows)


def _check_blocks(file: h5py.File, lengths: dict[str, int], path: str | Path, first: int) -> None:
    n = lengths["blocks"]
    if n <= first:
        return
    before = max(first - 1, 0)  # the row before the first new one: where the first new block starts
    for table in ("trial", "spike", "sync"):
        start = file["blocks"][f"{table}_start"][first:n].astype(np.int64)
        stop = file["blocks"][f"{table}_stop"][before:n].astype(np.int64)
        limit = lengths[f"{table}s" if table != "sync" else "sync"]
        previous = stop[:-1] if first else np.concatenate([[0], stop[:-1]])
        stop = stop[1:] if first else stop
        bad = np.flatnonzero((start != previous) | (stop < start) | (stop > limit))
        if bad.size:
            row = int(bad[0])
            raise DataFileError(
                path,
                f"block row {first + row} covers {table}s {int(start[row])}..{int(stop[row])}, "
                f"which does not start where the previous block ends or goes past {limit}; "
                f"{_REPAIR}",
            )
    _check_codes(file, first, n, path)


def _check_codes(file: h5py.File, first: int, n: int, path: str | Path) -> None:
    for column, enum in (("kind", BlockKind), ("flag_code", BlockFlag)):
        values = file["blocks"][column][first:n]
        bad = np.flatnonzero(~np.isin(values, [int(member) for member in enum]))
        if bad.size:
            row = int(bad[0])
            raise DataFileError(
                path, f"block row {first + row} has {column} {int(values[row])}, not a known code; {_REPAIR}"
            )


def _check_trials(file: h5py.File, lengths: dict[str, int], path: str | Path, first: int) -> None:
    n = lengths["trials"]
    if n <= first:
        return
    for column, limit, what, plural in (
        ("stimulus_id", lengths["stimuli"], "stimulus", "stimuli"),
        ("block", lengths["blocks"], "block", "blocks"),
    ):
        values = file["trials"][column][first:n]
        bad = np.flatnonzero((values < 0) | (values >= limit))
        if bad.size:
            row = first + int(bad[0])
            raise DataFileError(
                path,
                f"trial {row} refers to {what} {int(values[row - first])} but the file holds "
                f"{plural} 0..{limit - 1}; {_REPAIR}",
            )
    onsets = file["trials"]["onset_s"][first:n]
    bad = np.flatnonzero(~np.isfinite(onsets))
    if bad.size:
        raise DataFileError(path, f"trial {first + int(bad[0])} has onset {onsets[bad[0]]}; {_REPAIR}")
