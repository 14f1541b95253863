"""Show a session file, finished or still being written, in the monitor.

Every ``interval_s`` the file is refreshed (HDF5 SWMR when another process writes it)
and each newly *committed* block is turned into the messages the runner, presenter and
acquisition would have sent for it (`Responses`, `StimulusShown`, `SpikeBatch`,
`SyncEvent`, `BlockStatus`), so the state and the panels are the same as for a live
session.  A block the writer has not committed yet stays invisible until it is.
Synthesized stimuli come with their provenance (unit, target, achieved, model version),
so targets vs achieved need no matching here.  The runner's journal next to the file
(``SESSION.runner.jsonl``) gives each block's loop iteration and every model version
with its held-out metrics and per-unit r.  Session files hold no model predictions; when
the model versions were saved (``closedloop run --model-out DIR``; ``closedloop demo``
saves them in ``models/`` next to the session) the newest version predicts every stimulus
of the file before its blocks are fed one by one, so predicted vs measured and the
running correlation fill as they would live.  When no saved version is found, the
monitor says where it looked and to pass ``--models DIR``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from closedloop.data.session import BlockFlag, BlockKind, SessionReader, StimulusKind
from closedloop.errors import DataFileError
from closedloop.messages import types as msg
from closedloop.model.saved import load_saved, model_file_name, model_path, predict_pixels
from closedloop.monitor.state import MonitorState
from closedloop.runner.journal import BlockRecord, journal_path, read_records

STREAM = "session"


class SessionSource:
    """Feed a `MonitorState` from a session file, re-reading it while it grows.

    Parameters
    ----------
    path
        The session ``.h5`` file.
    state
        Where the file's data goes.
    interval_s
        Seconds between re-reads.

    Raises
    ------
    DataFileError
        If the file cannot be opened as a session (raised by the constructor).
    """

    def __init__(
        self, path: str | Path, state: MonitorState, *, interval_s: float = 1.0, models_dir: str | Path | None = None
    ):
        self.path = Path(path)
        self.models_dir = Path(models_dir) if models_dir is not None else self.path.parent / "models"
        self.state = state
        self.interval_s = float(interval_s)
        self.reader = SessionReader(self.path)
        self.blocks_shown = 0
        self.stimuli_seen = 0
        self.model_seen = 0
        self.model_predicted = 0
        self.models_missing = ""  # where a model version was looked for and not found
        self.last_error = ""
        self._unit = state.unit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitor-session", daemon=True)
        state.stream(STREAM, str(self.path))

    def start(self) -> SessionSource:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self.reader.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.interval_s)

    def poll(self) -> int:
        """Read what was committed since the last call; returns the number of new blocks."""
        try:
            if self.blocks_shown:
                self.reader.refresh()
            new = self._read_new()
            self.last_error = ""
        except DataFileError as error:
            # a growing file can be caught mid-write; say so and try again next time
            self.last_error = str(error)
            self.state.error_from(STREAM, f"cannot read the session file now: {error.message}")
            return 0
        except (ValueError, TypeError) as error:  # rows no message can carry: a damaged file
            self.last_error = f"{self.path}: {error}"
            self.state.error_from(STREAM, f"{self.path} has rows the monitor cannot show ({error})")
            return 0
        if self.state.unit != self._unit and self.state.unit is not None:
            self._reload_unit(self.state.unit)
        return new

    def _read_new(self) -> int:
        reader = self.reader
        if reader.n_stimuli > self.stimuli_seen:
            self._read_synthesized(reader.stimuli[self.stimuli_seen :])
            self.stimuli_seen = reader.n_stimuli
        if reader.n_blocks <= self.blocks_shown:
            return 0
        blocks = reader.blocks[self.blocks_shown :]
        trials, responses = reader.trials, reader.responses
        spikes, sync = reader.spikes, reader.sync
        unit_ids = reader.unit_ids
        records = self._journal(reader.n_blocks)
        newest = max((r.model_version for r in records.values()), default=0)
        if newest > self.model_predicted and trials.size:
            self._predict(newest, np.unique(trials["stimulus_id"]))
        for block in blocks:
            record = records.get(int(block["index"]))
            self._feed_block(block, trials, responses, spikes, sync, unit_ids, record)
            self.state.mark_correlation()  # one point of the running correlation per block
        self.blocks_shown = reader.n_blocks
        if trials.size:
            last = int(trials["stimulus_id"][-1])
            self.state.put_image(last, reader.read_pixels(np.array([last]))[0])
        return blocks.size

    def _read_synthesized(self, stimuli: np.ndarray) -> None:
        synthesized = stimuli[stimuli["kind"] == StimulusKind.SYNTHESIZED]
        if synthesized.size:
            self.state.add_synthesized(
                synthesized["id"],
                synthesized["unit_id"],
                synthesized["target_hz"],
                synthesized["achieved_hz"],
                synthesized["model_version"],
                synthesized["spread_hz"],  # the reader fills NaN for files from before the column
            )

    def _journal(self, n_blocks: int) -> dict[int, BlockRecord]:
        """The runner's record of each committed block, if the session has a journal (a newer
        record of a block, written when a resumed run redid it, replaces the older)."""
        path = journal_path(self.path)
        if not path.exists():
            return {}
        try:
            return {r.session_block: r for r in read_records(path) if r.session_block < n_blocks}
        except DataFileError as error:  # the session itself is still shown
            self.state.error_from(STREAM, f"cannot read the runner journal: {error.message}")
            return {}

    def _feed_block(
        self,
        block: np.ndarray,
        trials: np.ndarray,
        responses: np.ndarray,
        spikes: np.ndarray,
        sync: np.ndarray,
        unit_ids: np.ndarray,
        record: BlockRecord | None = None,
    ) -> None:
        ingest = self.state.ingest
        index = int(block["index"])
        kind = _name(BlockKind, int(block["kind"]))
        iteration = record.iteration if record is not None else 0
        if record is not None and record.kind:
            kind = record.ran_as or record.kind  # the protocol's name for it (fit, synthesize…)
        t0, t1 = int(block["trial_start"]), int(block["trial_stop"])
        s0, s1 = int(block["spike_start"]), int(block["spike_stop"])
        e0, e1 = int(block["sync_start"]), int(block["sync_stop"])
        ingest(STREAM, msg.BlockStatus(block=index, kind=kind, state="started", iteration=iteration, n_trials=t1 - t0))
        events = sync[e0:e1]
        for time_s, line, state in zip(events["time_s"], events["line"], events["state"]):
            ingest(STREAM, msg.SyncEvent(line=int(line), state=int(state), time=float(time_s)))
        if s1 > s0:
            ingest(STREAM, msg.SpikeBatch(unit_ids=spikes["unit_id"][s0:s1], times=spikes["time_s"][s0:s1]))
        rows = trials[t0:t1]
        for k, row in enumerate(rows):
            ingest(
                STREAM,
                msg.StimulusShown(
                    stimulus_id=int(row["stimulus_id"]),
                    trial=t0 + k,
                    block=index,
                    flip_time=float(row["flip_s"]) if np.isfinite(row["flip_s"]) else float(row["onset_s"]),
                    n_frames=max(0, int(row["n_frames"])),
                    dropped_frames=max(0, int(row["dropped_frames"])),
                ),
            )
        if t1 > t0:
            ingest(
                STREAM,
                msg.Responses(
                    block=index,
                    trial_ids=np.arange(t0, t1),
                    stimulus_ids=rows["stimulus_id"],
                    rates=np.asarray(responses[t0:t1], dtype=np.float64),
                    unit_ids=unit_ids,
                ),
            )
        if record is not None and record.model_version > self.model_seen:
            self.model_seen = record.model_version
            heldout = (
                None
                if record.heldout_r is None
                else np.asarray([np.nan if r is None else r for r in record.heldout_r], dtype=np.float64)
            )
            ingest(
                STREAM,
                msg.ModelUpdated(
                    version=record.model_version,
                    metrics=dict(record.metrics),
                    unit_ids=None
                    if record.unit_ids is None or heldout is None
                    else np.asarray(record.unit_ids, np.int64),
                    heldout_r=None if record.unit_ids is None else heldout,
                ),
            )
        flag = int(block["flag_code"])
        ingest(
            STREAM,
            msg.BlockStatus(
                block=index,
                kind=kind,
                state="flagged" if block["flagged"] else "finished",
                iteration=iteration,
                n_trials=t1 - t0,
                detail=_name(BlockFlag, flag) if block["flagged"] else "",
            ),
        )

    def _predict(self, version: int, stimulus_ids: np.ndarray) -> None:
        """Predictions of saved model ``version`` for the stimuli shown (nothing when it was not saved)."""
        try:
            checkpoint = load_saved(self.models_dir, version, device="cpu")
        except DataFileError as error:
            self.state.error_from(STREAM, f"cannot load {model_file_name(version)}: {error.message}")
            return
        if checkpoint is None:
            if not self.models_missing:
                self.models_missing = (
                    f"no predictions: model v{version} was not found as "
                    f"{model_path(self.models_dir, version)}; if the models were saved "
                    "elsewhere, pass --models DIR (closedloop run --model-out DIR)"
                )
                self.state.error_from(STREAM, self.models_missing)
            return
        rates = predict_pixels(checkpoint, self.reader.read_pixels(stimulus_ids))
        self.state.ingest(
            STREAM,
            msg.Predictions(
                rates=np.asarray(rates, dtype=np.float64),
                unit_ids=checkpoint.unit_ids,
                model_version=version,
                stimulus_ids=stimulus_ids,
            ),
        )
        self.model_predicted = version

    def _reload_unit(self, unit: int) -> None:
        """A newly chosen unit: its spikes come from the file, not only the recent window."""
        self._unit = unit
        spikes = self.reader.spikes
        times = spikes["time_s"][spikes["unit_id"] == unit]
        start = float(spikes["time_s"][0]) if spikes.size else 0.0
        self.state.replace_unit_spikes(unit, times, covered_from=start)


def _name(enum, code: int) -> str:
    try:
        return enum(int(code)).name.lower()
    except ValueError:
        return f"code {int(code)}"
