"""Does the committed part of a session hold only real data?

A committed block vouches for its trials, responses, spikes and sync events, and a
committed stimulus for its pixels.  Data that never reached the disk reads back as
the datasets' fill values (NaN times and pixels, unit id -1), which no writer ever
stores on purpose: `SessionWriter` refuses non-finite onsets and pixels and reads every
block back before committing it.  A file from an older writer that lost data on a
full disk, or a damaged copy, can still hold such rows inside committed blocks.
`check_committed` finds them, and the first block and stimulus from which the file is
not to be trusted, so export refuses the file and ``closedloop repair`` keeps what is
before them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from closedloop.data.session_reader import SessionReader
from closedloop.errors import DataFileError


@dataclass
class Integrity:
    """What `check_committed` found.

    Attributes
    ----------
    n_blocks, n_stimuli
        Committed blocks and stimuli.
    good_blocks
        Blocks before the first one holding bad data (all of them when none does).
    good_stimuli
        Stimuli before the first one with bad pixels or provenance.
    problems
        Each kind of bad data, in words, with the blocks or stimuli it is in.
    """

    n_blocks: int
    n_stimuli: int
    good_blocks: int
    good_stimuli: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        """One line: the problems, then what is intact."""
        blocks = f"blocks 0-{self.good_blocks - 1}" if self.good_blocks else "no block"
        stimuli = f"stimuli 0-{self.good_stimuli - 1}" if self.good_stimuli else "no stimulus"
        return f"{'; '.join(self.problems)}; intact: {blocks} and {stimuli}"


def _ranges(indices: np.ndarray) -> str:
    """``[3, 4, 5, 9]`` → ``"3-5, 9"`` (at most five ranges)."""
    indices = np.unique(indices)
    parts, start = [], None
    for i, value in enumerate(indices):
        if start is None:
            start = value
        if i + 1 == len(indices) or indices[i + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return ", ".join(parts[:5]) + (", …" if len(parts) > 5 else "")


def check_committed(reader: SessionReader) -> Integrity:
    """Check every committed block and stimulus of an open session for data that was never written.

    Open ``reader`` with ``check_values=False``: a checking reader refuses the first damaged
    row instead of letting this function find every damaged block.
    """
    blocks, stimuli, pixels = reader.blocks, reader.stimuli, reader.stimulus_pixels
    n_blocks, n_stimuli = len(blocks), len(stimuli)
    report = Integrity(n_blocks, n_stimuli, n_blocks, n_stimuli)

    def bad_stimuli(mask: np.ndarray, what: str) -> None:
        if np.any(mask):
            where = np.flatnonzero(mask)
            report.good_stimuli = min(report.good_stimuli, int(where[0]))
            report.problems.append(f"{where.size} stimuli {what} (stimuli {_ranges(where)})")

    def bad_blocks(where: np.ndarray, what: str) -> None:
        if where.size:
            report.good_blocks = min(report.good_blocks, int(where.min()))
            report.problems.append(f"{what} (blocks {_ranges(where)})")

    bad_stimuli(stimuli["id"] != np.arange(n_stimuli), "with a wrong id")
    flat = pixels.reshape(n_stimuli, int(np.prod(pixels.shape[1:])))
    bad_stimuli(
        ~np.all(np.isfinite(flat), axis=1) | np.any((flat < 0) | (flat > 1), axis=1), "with NaN or out-of-range pixels"
    )

    # the blocks table itself: consecutive indices, row ranges that follow on from each other
    broken = blocks["index"] != np.arange(n_blocks)
    for name in ("trial", "spike", "sync"):
        start, stop = blocks[f"{name}_start"], blocks[f"{name}_stop"]
        previous = np.concatenate([[0], stop[:-1]])
        broken |= (start != previous) | (stop < start)
    bad_blocks(np.flatnonzero(broken), "block rows whose row ranges do not follow on from the block before")
    if np.any(broken):
        return report  # the ranges below cannot be trusted

    def block_of(rows: np.ndarray, stops: np.ndarray) -> np.ndarray:
        return np.searchsorted(stops, rows, side="right")

    trials = reader.trials
    rows = np.arange(len(trials))
    owner = block_of(rows, blocks["trial_stop"])
    bad = (
        (trials["stimulus_id"] < 0)
        | (trials["stimulus_id"] >= report.good_stimuli)
        | ~np.isfinite(trials["onset_s"])
        | (trials["block"] != owner)
    )
    if np.any(bad):
        bad_blocks(owner[bad], f"{int(bad.sum())} trials with a missing or damaged stimulus, onset or block")
    spikes = reader.spikes
    # a unit outside the unit table can be real (a recording system sending more units than the
    # session lists); a negative id is the fill value of a row that was never written
    bad = ~np.isfinite(spikes["time_s"]) | (spikes["unit_id"] < 0)
    if np.any(bad):
        owner = block_of(np.flatnonzero(bad), blocks["spike_stop"])
        bad_blocks(owner, f"{int(bad.sum())} spikes with a NaN time or unit id -1")
    sync = reader.sync
    bad = ~np.isfinite(sync["time_s"])
    if np.any(bad):
        bad_blocks(block_of(np.flatnonzero(bad), blocks["sync_stop"]), f"{int(bad.sum())} sync events with NaN time")
    responses = reader.responses
    unflagged = np.zeros(len(responses), dtype=bool)
    for block in blocks[blocks["flagged"] == 0]:
        unflagged[block["trial_start"] : block["trial_stop"]] = True
    bad = unflagged & ~np.all(np.isfinite(responses), axis=1)
    if np.any(bad):
        owner = block_of(np.flatnonzero(bad), blocks["trial_stop"])
        bad_blocks(owner, f"{int(bad.sum())} trials of unflagged blocks with NaN responses")
    return report


def refuse_damaged(path: str | Path, action: str) -> None:
    """Raise DataFileError if a committed block or stimulus of session ``path`` holds data never written.

    ``action`` is what would go wrong with such a file (e.g. "an export would drop that data").
    """
    with SessionReader(path, check_values=False) as reader:
        integrity = check_committed(reader)
    if not integrity.ok:
        raise DataFileError(
            path,
            f"committed blocks hold data that was never written: {integrity.text()}; "
            f"{action}; 'closedloop repair {path} OUT.h5' copies the intact part into OUT.h5",
        )
