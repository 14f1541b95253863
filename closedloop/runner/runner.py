"""The runner component: executes a protocol on a rig, block by block (DESIGN §1, §5, §9).

Each protocol step (`closedloop.runner.plan`) runs as a generator that yields while
it waits; every `Runner.step` first drains all sockets (acquisition, presenter
reports, model events), then advances the current block a little.  So the runner
never blocks on the model server, a stop request is seen within one step, and no
socket backs up while a refit runs.

Every step ends with one session block (presentation blocks with their trials, fit
and synthesize blocks with none) and one journal record (`closedloop.runner.journal`),
so the session file says what happened and where in the protocol the run is.  A
stop in the middle of a presentation block writes the trials so far as a block
flagged ``aborted`` (kept, never used for fitting) and the step runs again on resume.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import zmq

from closedloop.config.blocks import FitBlock, GratingsBlock, NaturalBlock, PresentSynthesizedBlock, SynthesizeBlock
from closedloop.config.protocol import Protocol
from closedloop.config.rig import Rig
from closedloop.data.session_format import BlockFlag, BlockKind
from closedloop.data.session_space import StorageError
from closedloop.data.session_writer import SessionWriter
from closedloop.errors import ClosedLoopError
from closedloop.messages import BlockStatus
from closedloop.runner.collect import StreamCollector, StreamData
from closedloop.runner.journal import BlockRecord, Journal, journal_path
from closedloop.runner.model_link import ModelLink
from closedloop.runner.model_steps import ModelStepsMixin
from closedloop.runner.plan import Plan, PlannedStep
from closedloop.runner.presentation import ActiveBlock, PresentationMixin, TrialData
from closedloop.runner.settings import Endpoints, RunnerSettings
from closedloop.runner.stimuli import StimulusLibrary, natural_pool
from closedloop.runner.targets import check_protocol_units
from closedloop.runtime.component import Component
from closedloop.sim.archive import PHOTODIODE_LINE
from closedloop.transport import Publisher, RequestClient

logger = logging.getLogger(__name__)

#: Longest a step waits for input when nothing arrived.  Waiting on the sockets instead of
#: spinning leaves the cores (and the GIL, with the model server in this process) to the
#: refit and synthesis: spinning made the loop's CPU turnaround about three times longer.
_IDLE_WAIT_MS = 2


class Runner(PresentationMixin, ModelStepsMixin, Component):
    """Runs ``protocol`` on ``rig`` and records it in ``session_path``.

    Parameters
    ----------
    rig, protocol
        The loaded rig and protocol.
    session_path
        The session ``.h5`` file to create (or to continue with ``resume``); the
        runner's journal goes next to it (``NAME.runner.jsonl``).
    endpoints
        Where the presenter, acquisition and model server are, and where the runner
        publishes (`Endpoints.from_rig`, `Endpoints.inproc`…).
    unit_ids, channels
        The session's units and their electrode channels (for a simulated array:
        its brain's units).  With ``resume`` they may be omitted (the file has them).
    resume
        Continue the session in ``session_path`` after its last recorded step.
    overwrite
        Replace an existing session file (and journal) instead of refusing.
    settings
        Waits and tolerances.
    session_id
        Stored in the file and every message envelope; default: the file's stem.

    Raises
    ------
    ConfigError
        If the protocol's timing does not fit the rig's frames, or it asks for more
        units than ``unit_ids`` has.

    Notes
    -----
    After the run, ``position`` is the last protocol step done, ``stop_reason`` is
    ``""`` when the protocol finished, and ``statuses`` lists every BlockStatus sent.
    """

    def __init__(self, rig: Rig, protocol: Protocol, session_path: str | Path, endpoints: Endpoints, *,
                 unit_ids: np.ndarray | None = None, channels: np.ndarray | None = None, resume: bool = False,
                 overwrite: bool = False, settings: RunnerSettings = RunnerSettings(), name: str = "runner",
                 session_id: str | None = None, heartbeat_interval_s: float = 1.0):
        super().__init__(name, heartbeat_interval_s=heartbeat_interval_s)
        self.rig, self.protocol, self.endpoints, self.settings = rig, protocol, endpoints, settings
        self.session_path = Path(session_path)
        self.resume, self.overwrite = bool(resume), bool(overwrite)
        self.session_id = session_id or self.session_path.stem
        self.frames = protocol.frames(rig)
        if unit_ids is None and not resume:
            raise ValueError(f"{name}: unit_ids are needed to start a new session")
        self.unit_ids = None if unit_ids is None else np.asarray(unit_ids, dtype=np.int64)
        if self.unit_ids is not None:
            self.channels = (np.full(self.unit_ids.size, -1, np.int64) if channels is None
                             else np.asarray(channels, dtype=np.int64))
            check_protocol_units(protocol, self.unit_ids.size)
        line = rig.acquisition.photodiode_line
        self.photodiode_line = PHOTODIODE_LINE if line is None else int(line)
        self.window_s = (protocol.response.window_ms[0] / 1000.0, protocol.response.window_ms[1] / 1000.0)
        self.plan = Plan(protocol)
        self.position: int | None = None
        self.stop_reason = ""
        self.finished = False
        self.statuses: list[BlockStatus] = []
        self.writer: SessionWriter | None = None
        self.write_failure: StorageError | None = None  # a failed session/journal write stopped the run
        self.publisher = self.presenter = self.collector = self.link = None
        self.current = None  # (PlannedStep | None, generator)
        self.active: ActiveBlock | None = None
        self.library: StimulusLibrary | None = None

    # --- lifecycle --------------------------------------------------------------------

    def setup(self) -> None:
        self.publisher = Publisher(self.endpoints.responses, source=self.name, session=self.session_id)
        self.presenter = RequestClient(self.endpoints.blocks, source=self.name, session=self.session_id)
        self.collector = StreamCollector(self.endpoints.spikes, self.endpoints.stimulus, self.name)
        self.link = ModelLink(self.endpoints.model, self.endpoints.model_events, name=self.name,
                              session=self.session_id, request_timeout_s=self.settings.request_timeout_s)
        self.link.on_restart = self._server_lost_data
        self._inputs = zmq.Poller()
        for socket in (self.collector.acquisition, self.collector.stimulus, self.link.client, self.link.events,
                       self.presenter):
            self._inputs.register(socket.socket, zmq.POLLIN)
        self.journal = Journal(journal_path(self.session_path))
        self.history: list[TrialData] = []
        self.server_has: set[int] = set()
        self.server_blocks: set[int] = set()
        self.clock_offset: float | None = None
        self.refit_wanted = False
        self.marks: dict[str, float] = {}  # journal timing since the last record (`BlockRecord.times`)
        try:
            if self.resume:
                from closedloop.runner.resume import restore
                restore(self)
            else:
                self._create_session()
        except StorageError as error:  # the disk is full before the first block
            self._stop_writing(error)
            return
        self.current = (None, self._startup())

    def step(self) -> bool:
        if self.current is not None:
            self._inputs.poll(_IDLE_WAIT_MS)  # returns at once when anything is queued
        self._poll()
        if self.current is None:
            if self.stop_reason:
                return False
            step = self._next_step()
            if step is None:
                self.finished = True
                logger.info("%s: protocol %r finished: %d session blocks, %d trials", self.name, self.protocol.name,
                            self.writer.n_blocks, self.writer.n_trials)
                return False
            self.current = (step, self._run(step))
            self._blocks_before_step = self.writer.n_blocks
        step, task = self.current
        try:
            next(task)
        except StorageError as error:  # disk full or I/O error: write nothing more, stop the run
            self._stop_writing(error)
            return False
        except StopIteration:
            self.current = None
            if step is not None and self.writer.n_blocks == self._blocks_before_step and not self.stop_reason:
                # never run a step forever: one that left no block is recorded as failed
                self._step_failed(step, RuntimeError("the step ended without writing a block"))
        except Exception as error:  # noqa: BLE001 - a block fails, the run goes on
            self.current = None
            self._step_failed(step, error)
        return True

    def _stop_writing(self, error: StorageError) -> None:
        self.current, self.active, self.write_failure = None, None, error
        self.stop_reason = f"{error}; make room there before resuming"
        logger.info("%s: %s", self.name, error)  # the run's one error line says it (`stop_reason`)

    def teardown(self) -> None:
        try:
            if self.writer is not None and getattr(self, "library", None) is not None and self.write_failure is None:
                self._poll()
                try:
                    self._write_interrupted()
                except StorageError as error:  # stopping anyway: say why the last data is not in the file
                    self._stop_writing(error)
                    logger.error("%s: %s", self.name, error)
        finally:
            if self.writer is not None:
                try:
                    self.writer.close()
                except StorageError as error:  # the committed blocks are on disk already
                    logger.error("%s: %s", self.name, error)
            for part in (self.link, self.collector, self.presenter, self.publisher):
                if part is not None:
                    part.close()
            if self.collector is not None:
                logger.info("%s: streams %s", self.name, self.collector.stats())

    # --- steps ------------------------------------------------------------------------

    def _poll(self) -> None:
        self.collector.poll()
        self.link.poll()

    def _next_step(self) -> PlannedStep | None:
        r_median = None if self.link.newest is None else self.link.newest.metrics.get("r_median")
        step, skipped = self.plan.next_step(self.position, r_median)
        for loop in sorted({s.loop for s in skipped}):
            steps = [s for s in skipped if s.loop == loop]
            detail = (f"loop blocks[{loop}] stopped early: median held-out r {r_median:.3f} is above "
                      f"stop_when_r_above; {len(steps)} step(s) skipped")
            logger.info("%s: %s", self.name, detail)
            self._status(self.writer.n_blocks, "loop", "skipped", steps[0].iteration, 0, detail)
            self.position = steps[-1].index
        return step

    def _run(self, step: PlannedStep):
        block = step.block
        self._mark("step_started")
        self._status(self.writer.n_blocks, step.kind, "started", step.iteration, 0, step.where)
        yield from self._deliver_backlog()  # the probe: a server that is back gets what it missed
        if isinstance(block, NaturalBlock):
            count = self.library.natural_ids.size if block.images == "all" else block.images
            yield from self._present(step, self.library.next_natural(count), block.repeats, "natural")
        elif isinstance(block, GratingsBlock):
            start = self.writer.n_stimuli
            ids = self.library.gratings(block.set, self.rig, self.writer)
            added = [start, self.writer.n_stimuli] if self.writer.n_stimuli > start else None
            yield from self._present(step, ids, block.repeats, "gratings", added=added,
                                     added_set=block.set if added else "")
        elif isinstance(block, PresentSynthesizedBlock):
            ids = self.library.synthesized_ids
            if ids.size == 0:
                self._record_model_step(step, "skipped", "no synthesized images to show (the synthesize block "
                                        "before it made none)")
            else:
                yield from self._present(step, ids, block.repeats, "synthesized")
        elif isinstance(block, FitBlock):
            yield from self._fit(step)
        elif isinstance(block, SynthesizeBlock):
            yield from self._synthesize(step)

    def _startup(self):
        deadline = time.monotonic() + self.settings.startup_timeout_s
        while self.collector.heartbeats == 0 and time.monotonic() < deadline:
            yield
        if self.collector.heartbeats == 0:
            logger.warning("%s: no heartbeat from acquisition at %s within %g s; starting anyway", self.name,
                           self.endpoints.spikes, self.settings.startup_timeout_s)
        if self.settings.require_acquisition_data:
            while not np.isfinite(self.collector.horizon) and time.monotonic() < deadline:
                yield
            if not np.isfinite(self.collector.horizon):
                self.stop_reason = (f"no spike or photodiode edge from acquisition ({self.endpoints.spikes}) within "
                                    f"{self.settings.startup_timeout_s:g} s: start acquiring in the recording system "
                                    "(Open Ephys: press play, with the Event Broadcaster plugin on the rig's "
                                    "acquisition.event_endpoint) before the run")
                logger.error("%s: %s", self.name, self.stop_reason)
                return
        yield from self._pause(self.settings.settle_s)  # subscribers of our PUB (the simulated array) join
        if self.resume:
            yield from self._resend_after_resume()

    def _resend_after_resume(self):
        """Send the recorded responses again and, if the session had fitted, wait for a refit."""
        self._queue_everything()
        last = yield from self._deliver_backlog()
        if last is None or not self.refit_wanted:
            return
        version = getattr(last.message, "version", 0)
        deadline = time.monotonic() + self.settings.fit_timeout_s
        while self.link.version < version and time.monotonic() < deadline and not self.link.restarted:
            yield
        logger.info("%s: resumed at step %s with model version %d", self.name, self.position, self.link.version)

    def _step_failed(self, step: PlannedStep | None, error: Exception) -> None:
        block = self.writer.n_blocks
        where = "startup" if step is None else f"{step.kind}, {step.where}"
        expected = isinstance(error, (ClosedLoopError, ValueError, OSError))
        logger.error("%s: block %d (%s) failed: %s: %s", self.name, block, where, type(error).__name__, error,
                     exc_info=None if expected else error)  # a traceback only for what looks like a bug
        if self.active is not None:
            self.collector.forget(self.active.block)
            self.active = None
        if step is None:
            return
        self._commit(BlockRecord(0, step.index, step.where, step.kind, "failed", step.iteration,
                                 detail=f"{type(error).__name__}: {error}"),
                     BlockKind.OTHER, data=self.collector.take(), flag=BlockFlag.OTHER)

    def _write_interrupted(self) -> None:
        """At teardown: keep what a half-done step received (flagged), and data since the last block."""
        step = None if self.current is None else self.current[0]
        if self.active is not None:
            active = self.active
            logger.warning("%s: block %d (%s) interrupted; writing its %d reported trial(s) as an aborted block",
                           self.name, active.block, active.step.where, len(self.collector.trials_of(active.block).by_trial))
            for _ in self._finish_presentation(active, aborted=True):
                pass
        elif step is not None:
            self._commit(BlockRecord(0, step.index, step.where, step.kind, "aborted", step.iteration, advances=False,
                                     detail="interrupted before it finished; it runs again on resume"),
                         BlockKind.OTHER, data=self.collector.take(), flag=BlockFlag.ABORTED)
        else:
            data = self.collector.take()
            if not data.empty:
                self._commit(BlockRecord(0, -1, "", "idle", "finished", advances=False,
                                         detail="data received after the last block"), BlockKind.OTHER, data=data)

    # --- session ----------------------------------------------------------------------

    def _create_session(self) -> None:
        rng = np.random.default_rng()
        protocol = self.protocol

        def seed(value: int | None) -> int:
            return int(rng.integers(2**31)) if value is None else int(value)

        self.seeds = {"protocol": seed(protocol.seed), "images": seed(protocol.images.seed),
                      "synthesis": seed(protocol.synthesis.seed if protocol.synthesis else 0),
                      "acquisition": self.rig.acquisition.seed}
        size = self.rig.stimulus.size_px
        pool = natural_pool(protocol, self.rig, self.seeds["images"])
        if self.overwrite:
            self.journal.path.unlink(missing_ok=True)
        self.writer = SessionWriter(
            self.session_path, session_id=self.session_id, unit_ids=self.unit_ids, channels=self.channels,
            stimulus_shape=(size, size), response_window_s=self.window_s,
            rig_yaml=_text(self.rig), protocol_yaml=_text(protocol), seeds=self.seeds,
            metadata={"runner": {"journal": self.journal.path.name, "photodiode_line": self.photodiode_line,
                                 "plan_steps": len(self.plan), "stimulus_frames": self.frames.stimulus_frames,
                                 "blank_frames": self.frames.blank_frames}},
            overwrite=self.overwrite)
        if self.journal.path.exists():  # left from an older session of the same name
            os.replace(self.journal.path, self.journal.path.with_name(self.journal.path.name + ".old"))
        ids = self.writer.add_stimuli(pool, "natural", source_index=np.arange(len(pool)))
        self.library = StimulusLibrary(ids)
        self.library.add(ids, pool)

    def _commit(self, record: BlockRecord, kind: BlockKind, *, data: StreamData, stimulus_ids=(), onsets=(),
                flips=None, n_frames=None, dropped=None, rates=None, flag: BlockFlag = BlockFlag.NONE) -> None:
        """Journal record first, then the session block (see `closedloop.runner.journal`), then BlockStatus."""
        record.session_block = self.writer.n_blocks
        record.pool_cursor = self.library.cursor
        record.clock_offset = self.clock_offset
        record.times, self.marks = {**self.marks, **record.times}, {}
        self.journal.append(record)
        try:
            self.writer.append_block(kind, stimulus_ids=np.asarray(stimulus_ids, np.int64),
                                     onsets_s=np.asarray(onsets), flip_s=flips, n_frames=n_frames,
                                     dropped_frames=dropped, spike_unit_ids=data.spike_units,
                                     spike_times_s=data.spike_times, sync_times_s=data.sync_times,
                                     sync_lines=data.sync_lines, sync_states=data.sync_states, responses_hz=rates,
                                     flag=flag)
        except StorageError:
            self.journal.retract_last()  # the block is not in the session file: neither is its record
            raise
        if record.advances and record.step >= 0:
            self.position = record.step
        self._status(record.session_block, record.kind, record.state, record.iteration, record.n_trials, record.detail)

    def _mark(self, moment: str) -> None:
        """Note the wall-clock time of a moment named in `closedloop.runner.journal.TIMES`."""
        self.marks[moment] = time.time()

    def _status(self, block: int, kind: str, state: str, iteration: int, n_trials: int, detail: str) -> None:
        status = BlockStatus(block=block, kind=kind, state=state, iteration=iteration, n_trials=n_trials,
                             detail=detail)
        self.statuses.append(status)
        self.publisher.send(status)


def _text(config) -> str:
    source = getattr(config, "source", None)
    return "" if source is None else source.text
