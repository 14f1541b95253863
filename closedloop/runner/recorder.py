"""The runner's record of a session: the session file, the journal, and what they imply.

`SessionRecorder` owns the `SessionWriter` and the `Journal` next to the file and
commits every block to both, journal record first (see `closedloop.runner.journal`),
then announces it (a `BlockStatus`).  It also holds what the record says about the
run so far: the position in the protocol, the stimulus library, the seeds, the
presenter-to-acquisition clock offset, the good blocks' responses (which the model
server must have), whether the session has asked for a fit, and the newest model the
journal recorded.  A new session starts with `SessionRecorder.create`; a session
continues with `SessionRecorder.resume` (`closedloop.runner.resume` rebuilds that state
from the file and the journal).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from closedloop.acquisition.buffer import StreamData
from closedloop.config.protocol import FrameTiming, Protocol
from closedloop.config.rig import Rig
from closedloop.data.session_format import BlockFlag, BlockKind
from closedloop.data.session_space import StorageError
from closedloop.data.session_writer import SessionWriter
from closedloop.messages import BlockStatus, ModelUpdated
from closedloop.runner.discovery import LateUnits, unit_metadata
from closedloop.runner.journal import BlockRecord, Journal, journal_path
from closedloop.runner.resume import restore
from closedloop.runner.stimuli import StimulusLibrary, natural_pool
from closedloop.runner.trials import TrialData


class SessionRecorder:
    """Session file, journal and the state they record (see module notes).

    Parameters
    ----------
    session_path
        The session ``.h5`` file; the journal goes next to it (``NAME.runner.jsonl``).
    protocol
        The protocol run (its text is stored, and checked on resume).
    unit_ids, channels
        The session's units and their channels (``None`` on resume: the file has them).
    window_s
        The response window (stored; checked on resume).
    announce
        Called with the `BlockStatus` of every block committed or skipped.
    name, session_id
        For log lines; stored in the file.
    """

    def __init__(
        self,
        session_path: str | Path,
        protocol: Protocol,
        *,
        unit_ids: np.ndarray | None,
        channels: np.ndarray | None,
        window_s: tuple[float, float],
        announce: Callable[[BlockStatus], None],
        name: str = "runner",
        session_id: str = "",
    ):
        self.session_path = Path(session_path)
        self.protocol = protocol
        self.unit_ids = unit_ids
        self.channels = channels
        self.window_s = window_s
        self.announce = announce
        self.name = name
        self.session_id = session_id or self.session_path.stem
        self.journal = Journal(journal_path(self.session_path))
        self.writer: SessionWriter | None = None
        self.library: StimulusLibrary | None = None
        self.seeds: dict[str, int | None] = {}
        self.position: int | None = None  # the last protocol step done
        self.clock_offset: float | None = None  # presenter -> acquisition clock, from the last good block
        self.history: list[TrialData] = []  # every good block's responses
        self.refit_wanted = False  # the session has had a fit block
        self.newest_model: ModelUpdated | None = None  # the newest fit the journal recorded (resume)
        self.next_model_version = 1  # one above every model version the session recorded (resume)
        self.marks: dict[str, float] = {}  # journal timing since the last record (`BlockRecord.times`)
        self.late_units: LateUnits | None = None  # a real rig: units heard after the session's were fixed

    # --- what an open session has ----------------------------------------------------

    @property
    def open_writer(self) -> SessionWriter:
        """The session file's writer, once `create` or `resume` opened it."""
        if self.writer is None:
            raise RuntimeError(f"{self.name}: the session file is not open (create or resume it first)")
        return self.writer

    @property
    def open_library(self) -> StimulusLibrary:
        """The session's stimulus library, once `create` or `resume` made it."""
        if self.library is None:
            raise RuntimeError(f"{self.name}: the session has no stimulus library (create or resume it first)")
        return self.library

    @property
    def units(self) -> np.ndarray:
        """The session's unit ids, once known (given, discovered, or read back on resume)."""
        if self.unit_ids is None:
            raise RuntimeError(f"{self.name}: the session's units are not known yet")
        return self.unit_ids

    def seed(self, key: str) -> int:
        """The session's ``key`` seed (``"protocol"``, ``"images"``, ``"synthesis"``), fixed when it was created."""
        value = self.seeds.get(key)
        if value is None:
            raise RuntimeError(f"{self.name}: the session has no {key!r} seed (create or resume it first)")
        return value

    # --- opening ----------------------------------------------------------------------

    def create(
        self, rig: Rig, frames: FrameTiming, *, photodiode_line: int, plan_steps: int, overwrite: bool = False
    ) -> None:
        """Start a new session file (and journal) with the protocol's natural images."""
        rng = np.random.default_rng()
        protocol = self.protocol

        def seed(value: int | None) -> int:
            return int(rng.integers(2**31)) if value is None else int(value)

        protocol_seed, images_seed = seed(protocol.seed), seed(protocol.images.seed)
        self.seeds = {
            "protocol": protocol_seed,
            "images": images_seed,
            "synthesis": seed(protocol.synthesis.seed if protocol.synthesis else 0),
            "acquisition": rig.acquisition.seed,
        }
        units, channels = self.units, self.channels
        if channels is None:
            raise RuntimeError(f"{self.name}: the session's unit channels are not known yet")
        size = rig.stimulus.size_px
        pool = natural_pool(protocol, rig, images_seed)
        if overwrite:
            self.journal.path.unlink(missing_ok=True)
        self.writer = SessionWriter(
            self.session_path,
            session_id=self.session_id,
            unit_ids=units,
            channels=channels,
            stimulus_shape=(size, size),
            response_window_s=self.window_s,
            rig_yaml=_text(rig),
            protocol_yaml=_text(protocol),
            seeds=self.seeds,
            metadata={
                "runner": {
                    "journal": self.journal.path.name,
                    "photodiode_line": photodiode_line,
                    "plan_steps": plan_steps,
                    "stimulus_frames": frames.stimulus_frames,
                    "blank_frames": frames.blank_frames,
                },
                **unit_metadata(rig, units),
            },
            overwrite=overwrite,
        )
        if self.journal.path.exists():  # left from an older session of the same name
            os.replace(self.journal.path, self.journal.path.with_name(self.journal.path.name + ".old"))
        ids = self.writer.add_stimuli(pool, "natural", source_index=np.arange(len(pool)))
        self.library = StimulusLibrary(ids)
        self.library.add(ids, pool)

    def resume(self) -> None:
        """Reopen the session for appending and rebuild this recorder's state from it.

        Raises
        ------
        DataFileError
            The file is not a session of this protocol and these units (`closedloop.runner.resume`).
        """
        restore(self)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    # --- recording --------------------------------------------------------------------

    def commit(
        self,
        record: BlockRecord,
        kind: BlockKind,
        *,
        data: StreamData,
        stimulus_ids=(),
        onsets=(),
        flips=None,
        n_frames=None,
        dropped=None,
        rates=None,
        flag: BlockFlag = BlockFlag.NONE,
    ) -> None:
        """Journal record first, then the session block (see `closedloop.runner.journal`), then BlockStatus.

        Raises
        ------
        StorageError
            The record or the block could not be written (disk full, I/O error); neither
            is left behind: the journal's record is cut off again.
        """
        writer = self.open_writer
        record.session_block = writer.n_blocks
        record.pool_cursor = self.open_library.cursor
        record.clock_offset = self.clock_offset
        record.times, self.marks = {**self.marks, **record.times}, {}
        if self.late_units is not None:
            record.detail = "; ".join(filter(None, [record.detail, *self._late_unit_notes(data.spike_units)]))
        self.journal.append(record)
        try:
            writer.append_block(
                kind,
                stimulus_ids=np.asarray(stimulus_ids, np.int64),
                onsets_s=np.asarray(onsets),
                flip_s=flips,
                n_frames=n_frames,
                dropped_frames=dropped,
                spike_unit_ids=data.spike_units,
                spike_times_s=data.spike_times,
                sync_times_s=data.sync_times,
                sync_lines=data.sync_lines,
                sync_states=data.sync_states,
                responses_hz=rates,
                flag=flag,
            )
        except StorageError:
            self.journal.retract_last()  # the block is not in the session file: neither is its record
            raise
        if record.advances and record.step >= 0:
            self.position = record.step
        self.status(record.session_block, record.kind, record.state, record.iteration, record.n_trials, record.detail)

    def watch_late_units(self, rig: Rig, report: Callable[[str], None]) -> None:
        """From now on note, in each block's record, units spiking that are not the session's (a real rig)."""
        self.late_units = LateUnits(rig, self.units, report)

    def _late_unit_notes(self, spike_units: np.ndarray) -> list[str]:
        if self.late_units is None:  # not watching (a simulated rig)
            return []
        new = self.late_units.check(spike_units)
        return [f"{len(new)} late unit(s): {', '.join(map(str, new[:20]))}"] if new else []

    def skipped(self, last_step: int) -> None:
        """Protocol steps up to ``last_step`` were skipped (a loop stopped early): no block to write."""
        self.position = last_step

    def mark(self, moment: str) -> None:
        """Note the wall-clock time of a moment named in `closedloop.runner.journal.TIMES`."""
        self.marks[moment] = time.time()

    def status(self, block: int, kind: str, state: str, iteration: int, n_trials: int, detail: str) -> None:
        """Announce a block's state (`BlockStatus`)."""
        self.announce(
            BlockStatus(block=block, kind=kind, state=state, iteration=iteration, n_trials=n_trials, detail=detail)
        )


def _text(config) -> str:
    source = getattr(config, "source", None)
    return "" if source is None else source.text
