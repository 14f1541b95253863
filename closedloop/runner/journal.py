"""The runner's record of every block it wrote: ``SESSION.runner.jsonl`` next to the session file.

The session file's format (closedloop.data.session_format) holds numbers only and
cannot grow new tables while it is written (HDF5 SWMR), so what the runner needs to
resume and what a reader needs to understand a block — the protocol step it ran, its
state and the exact problem, the model version and metrics of a fit, the stimuli a
synthesize block added — go into one JSON line per session block.

A record is written (and fsynced) *before* its block is committed to the session
file, with the block index it will get.  So every committed block has a record, and
records of blocks that never got committed (the runner died in between) are
recognised on resume (``session_block >= n_blocks``) and dropped.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, UTC
from pathlib import Path
from typing import Any

from closedloop.data.session_space import storage_error
from closedloop.errors import DataFileError

logger = logging.getLogger(__name__)

#: Names of `BlockRecord.times`: the moments the loop's turnaround is measured from
#: (a presentation block's last response in hand → the next images ready).  A moment
#: that comes after a block's record was written (the delivery of its responses) is
#: kept in the next record.
TIMES = {
    "step_started": "the protocol step began",
    "block_sent": "a presentation block was handed to the presenter",
    "responses_in_hand": "the block's last trial was reported and acquisition had passed its response window",
    "responses_computed": "onsets aligned and rates computed (the block is then written to the session file)",
    "responses_delivered": "the model server accepted the FitRequest with the block's responses",
    "fit_requested": "a fit block asked for a refit",
    "fit_accepted": "the server accepted the refit",
    "model_updated": "the runner saw the refit's ModelUpdated",
    "synthesis_requested": "a synthesize block sent its SynthesizeRequest",
    "synthesis_received": "the SynthesizeResult arrived (the next images are ready)",
    "images_stored": "the synthesized images were checked and stored in the session file",
}


def journal_path(session_path: str | Path) -> Path:
    """``run.h5`` → ``run.runner.jsonl``."""
    path = Path(session_path)
    return path.with_name(path.stem + ".runner.jsonl")


@dataclass
class BlockRecord:
    """What the runner did for one session block.

    Attributes
    ----------
    session_block
        The block's index in the session file.
    step
        The protocol step (`closedloop.runner.plan.PlannedStep.index`); -1 for a block
        that belongs to no step (data received while stopping).
    where
        The step's place in the protocol file (``blocks[2].blocks[0]``).
    kind
        The protocol block kind it ran as (``natural``, ``gratings``, ``fit``,
        ``synthesize``, ``present_synthesized``), or ``idle``.
    state
        ``finished``, ``flagged``, ``skipped``, ``failed`` or ``aborted``.
    advances
        Whether the step is done (False: a resume runs it again).
    detail
        The problem or substitution, in words.
    times
        Wall-clock moments (``time.time()``, s since the epoch) of what the runner did
        since the previous record, by the names in `TIMES`; only those that happened.
    """

    session_block: int
    step: int
    where: str
    kind: str
    state: str
    iteration: int = 0
    advances: bool = True
    detail: str = ""
    n_trials: int = 0
    ran_as: str = ""  # e.g. "natural" when a synthesize block fell back to natural images
    onsets: str = ""  # "photodiode" or how flagged onsets were estimated
    stimuli: list[int] | None = None  # [start, stop) of session stimulus ids this block added
    stimulus_set: str = ""  # "orientation", "sf", "size" or "synthesized" for ``stimuli``
    pool_cursor: int = 0  # the natural pool's cursor after the block
    clock_offset: float | None = None  # onset − flip of the last aligned block so far
    model_version: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    unit_ids: list[int] | None = None  # of the model's per-unit held-out r
    heldout_r: list[float | None] | None = None
    times: dict[str, float] = field(default_factory=dict)  # see `TIMES`
    time_utc: str = ""

    def to_json(self) -> str:
        data = asdict(self)
        data["time_utc"] = data["time_utc"] or datetime.now(UTC).isoformat(timespec="seconds")
        return json.dumps(_finite(data), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BlockRecord:
        data = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        record = cls(**{k: v for k, v in data.items() if k in known})
        record.metrics = {k: (math.nan if v is None else float(v)) for k, v in (record.metrics or {}).items()}
        record.times = {k: float(v) for k, v in (record.times or {}).items() if v is not None}
        return record


def _finite(value: Any) -> Any:
    """JSON has no NaN: store it as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def read_records(path: str | Path) -> list[BlockRecord]:
    """Every record of a journal file, in order, without changing it.

    A later record of the same session block (a block run again after a resume) comes
    after the one it replaces.  A last line cut short by a crash is skipped: its block was
    never committed.

    Raises
    ------
    DataFileError
        The file cannot be read, or a line before the last is not a record.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise DataFileError(path, f"cannot read the runner journal ({error})") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(BlockRecord.from_json(line))
        except (ValueError, TypeError) as error:
            if number == len(lines):
                continue
            raise DataFileError(path, f"line {number} is not a runner record ({error})") from None
    return records


class Journal:
    """Append-only JSON-lines file of `BlockRecord` s."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._before_last: int | None = None  # the file's size before the last append

    def append(self, record: BlockRecord) -> None:
        """Write one record and make it durable before the caller commits its block.

        Raises
        ------
        StorageError
            The line could not be written and synced (disk full, I/O error); a part of it
            that reached the file is cut off again, so the journal ends with a whole line.
        """
        line = (record.to_json() + "\n").encode("utf-8")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as error:
            raise storage_error(
                self.path, f"the runner journal's record of block {record.session_block}", error
            ) from None
        try:
            end = os.fstat(fd).st_size
            try:
                written = os.write(fd, line)
                if written != len(line):  # a short write: the filesystem took only part of it
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                os.fsync(fd)
                self._before_last = end
            except OSError as error:
                try:
                    os.ftruncate(fd, end)
                except OSError:
                    pass  # a cut-short last line is skipped by every reader of the journal
                raise storage_error(
                    self.path,
                    f"the runner journal's record of block {record.session_block}",
                    error,
                    f"nothing of block {record.session_block} was committed",
                ) from None
        finally:
            os.close(fd)

    def retract_last(self) -> None:
        """Cut off the record just appended: its block could not be written to the session file.

        Needs no free space.  If it fails, the record is still recognised as uncommitted
        on resume (its block index is past the session's last block).
        """
        if self._before_last is None:
            return
        try:
            os.truncate(self.path, self._before_last)
            self._before_last = None
        except OSError as error:
            logger.warning("%s: could not cut off the record of an uncommitted block (%s)", self.path, error)

    def load(self, n_blocks: int) -> list[BlockRecord]:
        """Records of the ``n_blocks`` committed session blocks, rewriting the file without the rest.

        Raises
        ------
        DataFileError
            If a committed block has no record or a line is not a record.
        """
        if not self.path.exists():
            if n_blocks:
                raise DataFileError(
                    self.path,
                    f"is missing but the session has {n_blocks} block(s); the runner "
                    "cannot tell where in the protocol it stopped",
                )
            return []
        records = {r.session_block: r for r in read_records(self.path) if r.session_block < n_blocks}
        missing = sorted(set(range(n_blocks)) - set(records))
        if missing:
            raise DataFileError(
                self.path, f"has no record of session block(s) {missing}; it does not belong to this session file"
            )
        kept = [records[i] for i in range(n_blocks)]
        scratch = self.path.with_name(self.path.name + ".tmp")
        try:
            with open(scratch, "w", encoding="utf-8") as file:
                file.write("".join(r.to_json() + "\n" for r in kept))
                file.flush()
                os.fsync(file.fileno())
            os.replace(scratch, self.path)
        except OSError as error:
            scratch.unlink(missing_ok=True)
            raise storage_error(
                self.path,
                "the runner journal (cut back to the committed blocks)",
                error,
                "the journal itself is unchanged",
            ) from None
        return kept


def copy_records(source: str | Path, target: str | Path, n_blocks: int) -> int:
    """Write ``target`` with ``source``'s newest record of each session block below ``n_blocks``.

    For a repaired copy of a session (``closedloop repair``).  Returns how many of the
    ``n_blocks`` blocks have a record (a missing or unreadable journal gives none).
    """
    source, target = Path(source), Path(target)
    try:
        records = read_records(source) if source.exists() else []
    except DataFileError as error:
        logger.warning("%s", error)
        records = []
    newest = {r.session_block: r for r in records if 0 <= r.session_block < n_blocks}
    kept = [newest[i] for i in sorted(newest)]
    scratch = target.with_name(target.name + ".partial")
    try:
        with open(scratch, "w", encoding="utf-8") as file:
            file.write("".join(r.to_json() + "\n" for r in kept))
            file.flush()
            os.fsync(file.fileno())
        os.replace(scratch, target)
    except OSError as error:
        scratch.unlink(missing_ok=True)
        raise storage_error(target, "the repaired copy's journal", error) from None
    return len(kept)
