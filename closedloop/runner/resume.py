"""Continuing a session where it stopped (``closedloop run … --resume SESSION.h5``).

`SessionWriter.resume` reopens the file (recovering it if its writer was killed, and
dropping a block that was never committed); the journal's records of the committed
blocks give the position in the protocol, the natural pool's cursor, which stimuli
are grating sets and which the latest synthesized images, and the newest model's
metrics (for a loop's stop rule).  The responses of every good block are read back so
they can be sent to the model server again before the next block.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from closedloop.data import session_lock
from closedloop.data.session_format import BlockKind, StimulusKind
from closedloop.data.session_integrity import check_committed
from closedloop.data.session_reader import SessionReader
from closedloop.data.session_writer import SessionWriter
from closedloop.errors import DataFileError
from closedloop.messages import ModelUpdated
from closedloop.runner.journal import BlockRecord, journal_path, read_records
from closedloop.runner.trials import TrialData
from closedloop.runner.stimuli import StimulusLibrary
from closedloop.runner.targets import check_protocol_units

logger = logging.getLogger(__name__)

_PRESENTED = (BlockKind.NATURAL, BlockKind.GRATING, BlockKind.SYNTHESIZED)


def check_resumable(path: str | Path) -> int:
    """Refuse, before anything starts, a session that cannot be resumed, saying what can be saved and how.

    Returns the first model version the resumed session may use: one above every
    version it recorded (fits in the journal, synthesized images in the file), so a
    model server started for the resumed run never reuses a number.

    Raises
    ------
    DataFileError
        The file is not a readable session, a live process writes it, a committed
        block holds data that was never written, or the runner journal does not cover
        the committed blocks.
    """
    path = Path(path)
    session_lock.release(path, session_lock.acquire(path))  # a live writer: refused here, with its pid
    how = f"'closedloop repair {path} OUT.h5' copies the intact blocks and their journal records into OUT.h5"
    journal = journal_path(path)
    try:
        with SessionReader(path, check_values=False) as reader:
            integrity = check_committed(reader)
            n_blocks = reader.n_blocks
            versions = reader.stimuli["model_version"]
    except DataFileError as error:
        raise DataFileError(path, f"{error.message}{_journal_note(journal)}") from None
    if n_blocks == 0:
        raise DataFileError(
            path,
            "has no committed block, so there is nothing to resume: start the session again "
            f"(--session {path} --overwrite)",
        )
    if not integrity.ok:
        raise DataFileError(
            path,
            f"cannot be resumed: committed blocks hold data that was never written: "
            f"{integrity.text()}; {how}, which can then be resumed",
        )
    if n_blocks and not journal.exists():
        raise DataFileError(
            path,
            f"cannot be resumed: its runner journal {journal.name} is missing, so the runner "
            f"cannot tell where the protocol stopped; its {n_blocks} blocks can still be read and "
            "exported (closedloop export-nwb)",
        )
    records = read_records(journal) if journal.exists() else []
    missing = sorted(set(range(n_blocks)) - {r.session_block for r in records})
    if missing:
        raise DataFileError(
            journal,
            f"has no record of session block(s) {missing[:10]}: it does not belong to "
            f"{path.name}, so the run cannot be resumed; the session can still be read and exported",
        )
    return next_model_version(records, versions)


def next_model_version(records: list[BlockRecord], versions: np.ndarray) -> int:
    """One above every model version in the journal ``records`` and the stimuli's ``versions``."""
    recorded = [r.model_version for r in records] + [int(v) for v in versions if v > 0]
    return 1 + max(recorded, default=0)


def _journal_note(journal: Path) -> str:
    """What the runner journal says was recorded, for a session file that cannot be read."""
    try:
        records = read_records(journal) if journal.exists() else []
    except DataFileError:
        return ""
    if not records:
        return ""
    blocks = {r.session_block for r in records}
    return (
        f" (its journal {journal.name} lists {len(blocks)} blocks with {sum(r.n_trials for r in records)} "
        "trials that were recorded)"
    )


def restore(runner) -> None:
    """Open ``runner.session_path`` for appending and rebuild the runner's state from it.

    ``runner`` is the runner's `closedloop.runner.recorder.SessionRecorder` (this is its
    `~closedloop.runner.recorder.SessionRecorder.resume`): the state rebuilt is the recorder's own.
    """
    path = runner.session_path
    runner.writer = SessionWriter.resume(path)
    try:
        with SessionReader(path) as reader:
            _check_same_session(runner, reader)
            runner.seeds = dict(reader.seeds)
            records = runner.journal.load(runner.writer.n_blocks)
            stimuli = reader.stimuli
            pixels = reader.stimulus_pixels
            _rebuild_library(runner, stimuli, pixels, records)
            _rebuild_history(runner, reader)
    except BaseException:
        runner.writer.close()
        runner.writer = None
        raise
    advancing = [r for r in records if r.advances and r.step >= 0]
    runner.position = advancing[-1].step if advancing else None
    runner.library.cursor = records[-1].pool_cursor if records else 0
    offsets = [r.clock_offset for r in records if r.clock_offset is not None]
    runner.clock_offset = offsets[-1] if offsets else None
    runner.refit_wanted = any(r.kind == "fit" for r in records)
    runner.next_model_version = next_model_version(records, stimuli["model_version"])
    fits = [r for r in records if r.kind == "fit" and r.model_version > 0]
    if fits:  # the newest metrics decide a loop's stop rule until the server sends newer ones
        last = fits[-1]
        has_r = last.unit_ids is not None and last.heldout_r is not None
        runner.newest_model = ModelUpdated(
            version=last.model_version,
            metrics=last.metrics,
            unit_ids=np.asarray(last.unit_ids, np.int64) if has_r else None,
            heldout_r=np.array([np.nan if r is None else r for r in last.heldout_r], np.float64) if has_r else None,
        )
    logger.info(
        "%s: resuming %s after protocol step %s: %d blocks, %d trials, %d good blocks to re-send",
        runner.name,
        path,
        runner.position,
        runner.writer.n_blocks,
        runner.writer.n_trials,
        len(runner.history),
    )


def _check_same_session(runner, reader: SessionReader) -> None:
    text = runner.protocol.source.text if runner.protocol.source is not None else None
    if text is not None and reader.protocol_yaml and reader.protocol_yaml != text:
        raise DataFileError(
            reader.path,
            f"was recorded with another protocol than {runner.protocol.source.path}; "
            "resume it with the protocol it was started with",
        )
    if runner.unit_ids is not None and not np.array_equal(runner.unit_ids, reader.unit_ids):
        raise DataFileError(
            reader.path,
            f"has units {reader.unit_ids.tolist()[:10]}… but the rig's acquisition "
            f"has {runner.unit_ids.tolist()[:10]}…; resume on the rig that recorded it",
        )
    runner.unit_ids = reader.unit_ids.astype(np.int64)
    runner.channels = reader.channels.astype(np.int64)
    check_protocol_units(runner.protocol, runner.unit_ids.size)
    window = tuple(reader.response_window_s)
    if not np.allclose(window, runner.window_s):
        raise DataFileError(
            reader.path, f"uses the response window {window} s but the protocol says {runner.window_s} s"
        )
    for key in ("protocol", "images", "synthesis"):
        if key not in reader.seeds:
            raise DataFileError(reader.path, f"has no '{key}' seed; it was not written by the runner")


def _rebuild_library(runner, stimuli: np.ndarray, pixels: np.ndarray, records) -> None:
    n = runner.protocol.images.n
    natural = stimuli["id"][:n]
    if natural.size != n or np.any(stimuli["kind"][:n] != StimulusKind.NATURAL):
        raise DataFileError(runner.session_path, f"does not start with the protocol's {n} natural images")
    library = StimulusLibrary(natural)
    library.add(stimuli["id"], pixels)
    library.add_parents(stimuli["id"], stimuli["start_stimulus_id"])
    for record in records:
        if record.stimuli and record.stimulus_set in ("orientation", "sf", "size"):
            library.grating_ids[record.stimulus_set] = np.arange(*record.stimuli, dtype=np.int64)
        if record.kind == "synthesize" and record.advances:
            has_images = record.stimuli and record.stimulus_set == "synthesized"
            library.synthesized_ids = (
                np.arange(*record.stimuli, dtype=np.int64) if has_images else np.zeros(0, np.int64)
            )
    runner.library = library


def _rebuild_history(runner, reader: SessionReader) -> None:
    blocks, trials, responses = reader.blocks, reader.trials, reader.responses
    for block in blocks:
        good = block["flagged"] == 0 and block["kind"] in _PRESENTED and block["trial_stop"] > block["trial_start"]
        if not good:
            continue
        rows = slice(int(block["trial_start"]), int(block["trial_stop"]))
        rates = responses[rows].astype(np.float64)
        if not np.all(np.isfinite(rates)):
            continue
        runner.history.append(TrialData(int(block["index"]), trials["stimulus_id"][rows].astype(np.int64), rates))
