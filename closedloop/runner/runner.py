"""The runner component: executes a protocol on a rig, block by block (docs/architecture.md).

The runner is composed of three collaborators, created when it starts: a
`SessionRecorder` (the session file, the journal, and the state they record), a
`BlockPresentation` (presentation blocks) and `ModelSteps` (fit and synthesize blocks,
and the responses the model server must have).  The runner owns the sockets and the
protocol's order: each protocol step (`closedloop.runner.plan`) runs as a generator
that yields while it waits; every `Runner.step` first drains all sockets (acquisition, presenter
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
import time
from collections.abc import Generator
from pathlib import Path

import numpy as np
import zmq

from closedloop.config.blocks import FitBlock, GratingsBlock, NaturalBlock, PresentSynthesizedBlock, SynthesizeBlock
from closedloop.config.protocol import Protocol
from closedloop.config.rig import Rig
from closedloop.data.session_format import BlockFlag, BlockKind
from closedloop.data.session_space import StorageError
from closedloop.errors import ClosedLoopError
from closedloop.messages import BlockStatus
from closedloop.runner.collect import StreamCollector
from closedloop.runner.discovery import listen_for_units
from closedloop.runner.journal import BlockRecord
from closedloop.runner.model_steps import ModelSteps
from closedloop.runner.plan import Plan, PlannedStep
from closedloop.runner.presentation import ActiveBlock, BlockPresentation, pause
from closedloop.runner.recorder import SessionRecorder
from closedloop.runner.settings import RunnerSettings
from closedloop.runner.targets import check_protocol_units
from closedloop.runner.viability import Viability
from closedloop.runtime.component import Component
from closedloop.server.client import ModelLink
from closedloop.transport import Endpoints, Publisher, RequestClient

logger = logging.getLogger(__name__)

#: Longest a step waits for input when nothing arrived.  Waiting on the sockets instead of
#: spinning leaves the cores (and the GIL, with the model server in this process) to the
#: refit and synthesis: spinning made the loop's CPU turnaround about three times longer.
_IDLE_WAIT_MS = 2


class Runner(Component):
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
        its brain's units).  With ``resume`` they may be omitted (the file has them);
        on a real rig (``settings.require_acquisition_data``) too: the runner then listens
        for ``acquisition.discover_units_s`` and records the units it heard
        (`closedloop.runner.discovery`).
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
    Sockets and the collaborators that use them are made in `setup` (the thread that
    runs the component owns them).
    """

    def __init__(
        self,
        rig: Rig,
        protocol: Protocol,
        session_path: str | Path,
        endpoints: Endpoints,
        *,
        unit_ids: np.ndarray | None = None,
        channels: np.ndarray | None = None,
        resume: bool = False,
        overwrite: bool = False,
        settings: RunnerSettings = RunnerSettings(),
        name: str = "runner",
        session_id: str | None = None,
        heartbeat_interval_s: float = 1.0,
    ):
        super().__init__(name, heartbeat_interval_s=heartbeat_interval_s)
        self.rig, self.protocol, self.endpoints, self.settings = rig, protocol, endpoints, settings
        self.session_path = Path(session_path)
        self.resume, self.overwrite = bool(resume), bool(overwrite)
        self.session_id = session_id or self.session_path.stem
        self.frames = protocol.frames(rig)
        # A real rig (require_acquisition_data) creates its session only once data flows: a silent
        # recording system leaves no empty file behind; without unit ids it listens for them first.
        self.deferred = settings.require_acquisition_data and not resume
        self.discover_s = rig.acquisition.discover_units_s if self.deferred and unit_ids is None else None
        if unit_ids is None and not resume and self.discover_s is None:
            raise ValueError(f"{name}: unit_ids are needed to start a new session")
        if unit_ids is not None:
            unit_ids = np.asarray(unit_ids, dtype=np.int64)
            channels = (
                np.full(unit_ids.size, -1, np.int64) if channels is None else np.asarray(channels, dtype=np.int64)
            )
            check_protocol_units(protocol, unit_ids.size)
        self.photodiode_line = rig.acquisition.onset_line
        self.viability = (
            Viability(self.photodiode_line, rig.acquisition.photodiode_timeout_s)
            if settings.require_acquisition_data
            else None
        )
        self.plan = Plan(protocol)
        self.recorder = SessionRecorder(
            self.session_path,
            protocol,
            unit_ids=unit_ids,
            channels=channels,
            window_s=protocol.response.window_s,
            announce=self._announce,
            name=name,
            session_id=self.session_id,
        )
        self.stop_reason = ""
        self.finished = False
        self.statuses: list[BlockStatus] = []
        self.write_failure: StorageError | None = None  # a failed session/journal write stopped the run
        # sockets and the collaborators using them: made in setup, in the component's thread
        self.publisher: Publisher | None = None
        self.presenter: RequestClient | None = None
        self.collector: StreamCollector | None = None
        self.link: ModelLink | None = None
        self.model_steps: ModelSteps | None = None
        self.presentation: BlockPresentation | None = None
        # the step in progress (None: startup) and its generator
        self.current: tuple[PlannedStep | None, Generator[None, None, None]] | None = None
        self._inputs: zmq.Poller | None = None
        self._blocks_before_step = 0

    @property
    def position(self) -> int | None:
        """The last protocol step done (``None``: none yet)."""
        return self.recorder.position

    @property
    def unit_ids(self) -> np.ndarray | None:
        return self.recorder.unit_ids

    @property
    def channels(self) -> np.ndarray | None:
        return self.recorder.channels

    @property
    def window_s(self) -> tuple[float, float]:
        return self.recorder.window_s

    @property
    def active(self) -> ActiveBlock | None:
        """The presentation block in progress, if any."""
        return None if self.presentation is None else self.presentation.active

    # --- lifecycle --------------------------------------------------------------------

    def setup(self) -> None:
        self.publisher = Publisher(self.endpoints.responses, source=self.name, session=self.session_id)
        self.presenter = RequestClient(self.endpoints.blocks, source=self.name, session=self.session_id)
        self.collector = StreamCollector(self.endpoints.spikes, self.endpoints.stimulus, self.name)
        self.link = ModelLink(
            self.endpoints.model,
            self.endpoints.model_events,
            name=self.name,
            session=self.session_id,
            request_timeout_s=self.settings.request_timeout_s,
        )
        self._inputs = zmq.Poller()
        for socket in (
            self.collector.acquisition,
            self.collector.stimulus,
            self.link.client,
            self.link.events,
            self.presenter,
        ):
            self._inputs.register(socket.socket, zmq.POLLIN)
        if not self.deferred:
            try:
                self._open_session()
            except StorageError as error:  # the disk is full before the first block
                self._stop_writing(error)
                return
        self.model_steps = ModelSteps(
            self.link,
            self.recorder,
            self.collector,
            rig=self.rig,
            protocol=self.protocol,
            plan=self.plan,
            settings=self.settings,
            name=self.name,
        )
        self.presentation = BlockPresentation(
            self.recorder,
            self.collector,
            self.presenter,
            self.publisher,
            self.model_steps,
            rig=self.rig,
            protocol=self.protocol,
            plan=self.plan,
            settings=self.settings,
            endpoints=self.endpoints,
            frames=self.frames,
            photodiode_line=self.photodiode_line,
            stop=self._stop,
            viability=self.viability,
            name=self.name,
        )
        self.current = (None, self._startup())

    def step(self) -> bool:
        if self.current is not None:
            if self._inputs is None:  # setup made it before the first step
                raise RuntimeError(f"{self.name}: a step ran before setup made the sockets")
            self._inputs.poll(_IDLE_WAIT_MS)  # returns at once when anything is queued
        self._poll()
        if self.current is None:
            if self.stop_reason:
                return False
            step = self._next_step()
            writer = self.recorder.open_writer
            if step is None:
                self.finished = True
                logger.info(
                    "%s: protocol %r finished: %d session blocks, %d trials",
                    self.name,
                    self.protocol.name,
                    writer.n_blocks,
                    writer.n_trials,
                )
                return False
            self.current = (step, self._run(step))
            self._blocks_before_step = writer.n_blocks
        step, task = self.current
        try:
            next(task)
        except StorageError as error:  # disk full or I/O error: write nothing more, stop the run
            self._stop_writing(error)
            return False
        except StopIteration:
            self.current = None
            if (
                step is not None
                and self.recorder.open_writer.n_blocks == self._blocks_before_step
                and not self.stop_reason
            ):
                # never run a step forever: one that left no block is recorded as failed
                self._step_failed(step, RuntimeError("the step ended without writing a block"))
        except Exception as error:  # noqa: BLE001 - a block fails, the run goes on
            self.current = None
            self._step_failed(step, error)
        return True

    def _stop_writing(self, error: StorageError) -> None:
        """A session or journal write failed: write nothing more and stop, saying why in `stop_reason`."""
        self.current, self.write_failure = None, error
        if self.presentation is not None:
            self.presentation.active = None
        self.stop_reason = f"{error}; make room there before resuming"
        logger.info("%s: %s", self.name, error)  # the run's one error line says it (`stop_reason`)

    def teardown(self) -> None:
        try:
            if self.recorder.writer is not None and self.recorder.library is not None and self.write_failure is None:
                self._poll()
                try:
                    self._write_interrupted()
                except StorageError as error:  # stopping anyway: say why the last data is not in the file
                    self._stop_writing(error)
                    logger.error("%s: %s", self.name, error)
        finally:
            try:
                self.recorder.close()
            except StorageError as error:  # the committed blocks are on disk already
                logger.error("%s: %s", self.name, error)
            for part in (self.link, self.collector, self.presenter, self.publisher):
                if part is not None:
                    part.close()
            if self.collector is not None:
                logger.info("%s: streams %s", self.name, self.collector.stats())

    # --- steps ------------------------------------------------------------------------

    def _poll(self) -> None:
        if self.collector is None or self.link is None:  # setup made them before the first step
            raise RuntimeError(f"{self.name}: polled before setup made the sockets")
        self.collector.poll()
        self.link.poll()

    def _collaborators(self) -> tuple[StreamCollector, ModelLink, ModelSteps, BlockPresentation]:
        """The collaborators `setup` made (steps run only once it has)."""
        if self.collector is None or self.link is None or self.model_steps is None or self.presentation is None:
            raise RuntimeError(f"{self.name}: a step ran before setup made the runner's collaborators")
        return self.collector, self.link, self.model_steps, self.presentation

    def _next_step(self) -> PlannedStep | None:
        if self.link is None:  # setup made it before the first step
            raise RuntimeError(f"{self.name}: a step ran before setup made the model server's link")
        newest = self.link.newest
        r_median = None if newest is None else newest.metrics.get("r_median")
        step, skipped = self.plan.next_step(self.position, r_median)
        for loop in sorted({s.loop for s in skipped if s.loop is not None}):  # skipped steps are in loops
            steps = [s for s in skipped if s.loop == loop]
            detail = (
                f"loop blocks[{loop}] stopped early: median held-out r {r_median:.3f} is above "
                f"stop_when_r_above; {len(steps)} step(s) skipped"
            )
            logger.info("%s: %s", self.name, detail)
            self.recorder.status(self.recorder.open_writer.n_blocks, "loop", "skipped", steps[0].iteration, 0, detail)
            self.recorder.skipped(steps[-1].index)
        return step

    def _run(self, step: PlannedStep) -> Generator[None, None, None]:
        _, _, model_steps, presentation = self._collaborators()
        writer, library = self.recorder.open_writer, self.recorder.open_library
        block = step.block
        self.recorder.mark("step_started")
        self.recorder.status(writer.n_blocks, step.kind, "started", step.iteration, 0, step.where)
        yield from model_steps.deliver_backlog()  # the probe: a server that is back gets what it missed
        if isinstance(block, NaturalBlock):
            count = library.natural_ids.size if block.images == "all" else block.images
            yield from presentation.present(step, library.next_natural(count), block.repeats, "natural")
        elif isinstance(block, GratingsBlock):
            start = writer.n_stimuli
            ids = library.gratings(block.set, self.rig, writer)
            added = [start, writer.n_stimuli] if writer.n_stimuli > start else None
            yield from presentation.present(
                step, ids, block.repeats, "gratings", added=added, added_set=block.set if added else ""
            )
        elif isinstance(block, PresentSynthesizedBlock):
            ids = library.synthesized_ids
            if ids.size == 0:
                model_steps.record(
                    step, "skipped", "no synthesized images to show (the synthesize block before it made none)"
                )
            else:
                yield from presentation.present(step, ids, block.repeats, "synthesized")
        elif isinstance(block, FitBlock):
            yield from model_steps.fit(step)
        elif isinstance(block, SynthesizeBlock):
            instead = yield from model_steps.synthesize(step)
            if instead:
                yield from presentation.natural_instead(step, instead)

    def _startup(self) -> Generator[None, None, None]:
        collector, _, model_steps, _ = self._collaborators()
        deadline = time.monotonic() + self.settings.startup_timeout_s
        while collector.heartbeats == 0 and time.monotonic() < deadline:
            yield
        if collector.heartbeats == 0:
            logger.warning(
                "%s: no heartbeat from acquisition at %s within %g s; starting anyway",
                self.name,
                self.endpoints.spikes,
                self.settings.startup_timeout_s,
            )
        if self.settings.require_acquisition_data:
            while not np.isfinite(collector.horizon) and time.monotonic() < deadline:
                yield
            if not np.isfinite(collector.horizon):
                self._stop(
                    f"no spike or photodiode edge from acquisition ({self.endpoints.spikes}) within "
                    f"{self.settings.startup_timeout_s:g} s: start acquiring in the recording system "
                    "(Open Ephys: press play, with the Event Broadcaster plugin on the rig's "
                    "acquisition.event_endpoint) before the run",
                    error=True,
                )
                return
        if self.deferred and not (yield from self._start_deferred_session(collector)):
            return
        yield from pause(self.settings.settle_s)  # subscribers of our PUB (the simulated array) join
        if self.resume:
            yield from model_steps.resend_after_resume()

    def _start_deferred_session(self, collector: StreamCollector) -> Generator[None, None, bool]:
        """Find the units (unless given), then create the session file; False when the run must stop."""
        if self.discover_s is not None:
            units = yield from listen_for_units(collector.pending_units, self.discover_s, self._startup_line)
            if units.size == 0:
                self._stop(
                    f"no unit spiked in {self.discover_s:g} s of listening: check that spikes reach the "
                    "recording system's broadcast (Open Ephys: a spike detector before the Event "
                    "Broadcaster), or give --units"
                )
                return False
            self.recorder.unit_ids, self.recorder.channels = units, np.full(units.size, -1, np.int64)
        try:
            check_protocol_units(self.protocol, self.recorder.units.size)
        except ClosedLoopError as error:
            self._stop(str(error))
            return False
        self._open_session()
        return True

    def _startup_line(self, text: str) -> None:
        logger.info("%s: %s", self.name, text)
        self.recorder.status(0, "unit discovery", "listening", 0, 0, text)

    def _step_failed(self, step: PlannedStep | None, error: Exception) -> None:
        block = self.recorder.writer.n_blocks if self.recorder.writer is not None else 0
        where = "startup" if step is None else f"{step.kind}, {step.where}"
        expected = isinstance(error, (ClosedLoopError, ValueError, OSError))
        logger.error(
            "%s: block %d (%s) failed: %s: %s",
            self.name,
            block,
            where,
            type(error).__name__,
            error,
            exc_info=None if expected else error,
        )  # a traceback only for what looks like a bug
        collector, _, _, presentation = self._collaborators()  # a step ran: setup made them
        presentation.abandon()
        if step is None:
            return
        self.recorder.commit(
            BlockRecord(
                0,
                step.index,
                step.where,
                step.kind,
                "failed",
                step.iteration,
                detail=f"{type(error).__name__}: {error}",
            ),
            BlockKind.OTHER,
            data=collector.take(),
            flag=BlockFlag.OTHER,
        )

    def _write_interrupted(self) -> None:
        """At teardown: keep what a half-done step received (flagged), and data since the last block."""
        step = None if self.current is None else self.current[0]
        collector = self.collector
        if collector is None:  # setup made it before the session could open
            raise RuntimeError(f"{self.name}: the session is open but setup made no collector")
        if self.active is not None and self.presentation is not None:
            active = self.active
            logger.warning(
                "%s: block %d (%s) interrupted; writing its %d reported trial(s) as an aborted block",
                self.name,
                active.block,
                active.step.where,
                len(collector.trials_of(active.block).by_trial),
            )
            for _ in self.presentation.finish(active, aborted=True):
                pass
        elif step is not None:
            self.recorder.commit(
                BlockRecord(
                    0,
                    step.index,
                    step.where,
                    step.kind,
                    "aborted",
                    step.iteration,
                    advances=False,
                    detail="interrupted before it finished; it runs again on resume",
                ),
                BlockKind.OTHER,
                data=collector.take(),
                flag=BlockFlag.ABORTED,
            )
        else:
            data = collector.take()
            if not data.empty:
                self.recorder.commit(
                    BlockRecord(
                        0, -1, "", "idle", "finished", advances=False, detail="data received after the last block"
                    ),
                    BlockKind.OTHER,
                    data=data,
                )

    # --- the run's state -------------------------------------------------------------

    def _stop(self, reason: str, *, error: bool = False) -> None:
        """Stop before the next step (the block in progress is finished as it is)."""
        self.stop_reason = reason
        if error:
            logger.error("%s: %s", self.name, reason)

    def _open_session(self) -> None:
        """Create the session file (or reopen it with ``resume``); a real rig then watches for late units."""
        if self.resume:
            if self.link is None:  # setup makes it before opening the session
                raise RuntimeError(f"{self.name}: resuming a session needs the model server's link")
            self.recorder.resume()
            # its newest fit decides a loop's stop rule; new models are numbered on from its last
            self.link.resume_session(self.recorder.newest_model, self.recorder.next_model_version)
        else:
            self.recorder.create(
                self.rig,
                self.frames,
                photodiode_line=self.photodiode_line,
                plan_steps=len(self.plan),
                overwrite=self.overwrite,
            )
        if self.viability is not None:
            self.recorder.watch_late_units(self.rig, self._late_units_line)

    def _late_units_line(self, text: str) -> None:
        logger.warning("%s: %s", self.name, text)

    def _announce(self, status: BlockStatus) -> None:
        self.statuses.append(status)
        if self.publisher is None:  # setup makes it first: the recorder announces nothing before
            raise RuntimeError(f"{self.name}: a block status before setup made the publisher")
        self.publisher.send(status)
