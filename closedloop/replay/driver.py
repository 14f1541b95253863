"""The passive replay driver: the runner's part in a replay, without a presenter (docs/architecture.md).

The replay adapter streams the recording (spikes, photodiode edges) and plays the
presenter (a `StimulusShown` per trial).  For each block of the archive the driver
waits until the block's trials are reported and the stream has passed its last
response window, cuts the block's photodiode edges out of the stream
(`closedloop.replay.stream`), matches them to the reports with the runner's own
`closedloop.runner.alignment.align_onsets`, counts spikes in the protocol's window
with the same functions the runner and the session file use, publishes `Responses`
and `BlockStatus` (and a `BlockRequest` copy with the pixels of new images) like the
runner, and sends the block to the model server (its `closedloop.replay.fitting.ReplayFitting`).

Like the runner, every step drains all sockets first and advances a generator, so
the acquisition stream never backs up while a refit runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass

import numpy as np
import zmq

from closedloop.data.responses import counts_to_rates, window_counts_from_spike_times
from closedloop.errors import ClosedLoopError
from closedloop.messages import BlockRequest, BlockStatus, ModelUpdated, Responses, StimulusShown
from closedloop.replay.fitting import ReplayFitting
from closedloop.replay.plan import ArchivePlan, ReplayBlock
from closedloop.replay.rows import BlockRow
from closedloop.replay.stream import ReplayStreams
from closedloop.runner.alignment import align_onsets
from closedloop.runner.settings import RunnerSettings
from closedloop.runtime.component import Component
from closedloop.server.client import ModelLink
from closedloop.transport import Endpoints, Publisher

logger = logging.getLogger(__name__)

_IDLE_POLL_MS = 5  # a step with nothing received waits this long (leaves the CPU to the refit)


@dataclass(frozen=True)
class DriverSettings:
    """How the driver cuts blocks and paces the fits.

    Attributes
    ----------
    window_s
        Response window after onset (the protocol's).
    frame_s
        One display frame: the alignment tolerance unit (the runner's).
    tolerance_frames
        Allowed disagreement of photodiode and flip intervals (the runner's default).
    fit_every
        Ask for a refit after every K-th block that added fitting data.
    wait
        Wait for each refit's `ModelUpdated` before the next block.
    max_blocks
        Stop after this many blocks (``None``: all).
    request_timeout_s, fit_timeout_s
        Reply to a FitRequest; a refit to finish.
    stall_timeout_s
        Longest silence of both streams before the replay counts as stuck.
    """

    window_s: tuple[float, float] = (0.05, 0.10)
    frame_s: float = 1 / 60
    tolerance_frames: float = RunnerSettings().photodiode_tolerance_frames
    fit_every: int = 1
    wait: bool = True
    max_blocks: int | None = None
    request_timeout_s: float = 30.0
    fit_timeout_s: float = RunnerSettings().fit_timeout_s
    stall_timeout_s: float = 60.0


class ReplayDriver(Component):
    """Turns a replayed stream into blocks of responses for the model server (see module notes).

    Parameters
    ----------
    plan
        The archive's trials, blocks, units and images (`closedloop.replay.plan.read_plan`).
    endpoints
        ``spikes``/``stimulus`` (the adapter's PUBs), ``model``/``model_events`` (the
        server), ``responses`` (bound here, for the monitor).
    settings
        Window, alignment tolerance, refit cadence.
    on_row, on_model
        Called (from the driver's thread) with each finished `BlockRow` and each `ModelUpdated`.

    Attributes
    ----------
    rows
        One `BlockRow` per block replayed (plus a final-refit row when one was needed).
    models
        Every `ModelUpdated` received, by version.
    sent_repeats
        Trials sent per stimulus id (what the offline comparison restricts to).
    error
        Why the replay stopped early ("" when it did not).
    """

    def __init__(
        self,
        plan: ArchivePlan,
        endpoints: Endpoints,
        settings: DriverSettings,
        *,
        name: str = "replay-driver",
        session: str = "",
        on_row: Callable[[BlockRow], None] | None = None,
        on_model: Callable[[ModelUpdated], None] | None = None,
    ):
        super().__init__(name, heartbeat_interval_s=1.0)
        self.plan, self.endpoints, self.settings, self.session = plan, endpoints, settings, session
        self.on_row, self.on_model = on_row, on_model
        self.rows: list[BlockRow] = []
        self.models: dict[int, ModelUpdated] = {}
        self.sent_repeats: dict[int, int] = {}
        self.error = ""
        self.finished = False
        # sockets and the collaborator using them: made in setup, in the component's thread
        self.streams: ReplayStreams | None = None
        self.link: ModelLink | None = None
        self.publisher: Publisher | None = None
        self.fitting: ReplayFitting | None = None
        self.poller: zmq.Poller | None = None
        self.clock_offset: float | None = None  # presenter -> acquisition clock, from the last aligned block
        self.published_images: set[int] = set()
        self._finished_at: float | None = None
        self._lost_at_start = 0
        self._task: Generator[None, None, None] | None = None

    # --- lifecycle --------------------------------------------------------------------

    def setup(self) -> None:
        self.publisher = Publisher(self.endpoints.responses, source=self.name, session=self.session)
        self.streams = ReplayStreams(
            self.endpoints.spikes, self.endpoints.stimulus, self.plan.photodiode_line, self.name
        )
        self.link = ModelLink(
            self.endpoints.model,
            self.endpoints.model_events,
            name=self.name,
            session=self.session,
            request_timeout_s=self.settings.request_timeout_s,
        )
        self.poller = zmq.Poller()
        for socket in (*self.streams.sockets(), self.link.events.socket, self.link.client.socket):
            self.poller.register(socket, zmq.POLLIN)
        self.fitting = ReplayFitting(
            self.link,
            self.plan,
            self.settings,
            self.rows,
            self.models,
            self.sent_repeats,
            emit=self._emit,
            on_model=self.on_model,
        )
        self._task = self._run()

    def step(self) -> bool:
        streams, fitting, task, poller = self.streams, self.fitting, self._task, self.poller
        if streams is None or fitting is None or task is None or poller is None:  # setup made them
            raise RuntimeError(f"{self.name}: a step ran before setup")
        received = streams.poll() + fitting.poll_model_events()
        try:
            next(task)
        except StopIteration:
            self.finished = True
            return False
        except ClosedLoopError as error:
            self.error = str(error)
            logger.error("%s: %s", self.name, error)
            return False
        if not received:
            poller.poll(_IDLE_POLL_MS)
        return True

    def teardown(self) -> None:
        for part in (self.link, self.streams, self.publisher):
            if part is not None:
                part.close()

    # --- blocks -----------------------------------------------------------------------

    def _parts(self) -> tuple[ReplayStreams, ReplayFitting, Publisher]:
        """What `setup` made (blocks run only once it has)."""
        if self.streams is None or self.fitting is None or self.publisher is None:
            raise RuntimeError(f"{self.name}: a block ran before setup made the sockets")
        return self.streams, self.fitting, self.publisher

    def _run(self) -> Generator[None, None, None]:
        _, fitting, _ = self._parts()
        blocks = self.plan.blocks[: self.settings.max_blocks]
        for block in blocks:
            cut = yield from self._wait_for(block)
            row, fit_rows = self._finish(block, cut)
            if fit_rows is None:
                self._emit(row)
                continue
            yield from fitting.send_block(block, row, *fit_rows)
        yield from fitting.final_refit(blocks[-1].number if blocks else 0)

    def _wait_for(self, block: ReplayBlock) -> Generator[None, None, float]:
        """Yield until ``block`` is complete; returns where its edges end (acquisition clock)."""
        streams, _, _ = self._parts()
        started, last_count, last_change = False, -1, time.monotonic()
        while True:
            reports = streams.reports
            if not started and block.trial_start in reports:
                self._announce(block)
                started = True
            cut = self._complete(block, streams)
            if cut is not None:
                if not started:
                    self._announce(block)
                return cut
            if streams.received != last_count:
                last_count, last_change = streams.received, time.monotonic()
            elif time.monotonic() - last_change > self.settings.stall_timeout_s:
                raise ClosedLoopError(
                    f"the replay stream went silent for {self.settings.stall_timeout_s:g} s during "
                    f"block {block.number} ({block.label}); "
                    f"{len(reports)} of {self.plan.n_trials} trials reported"
                )
            yield

    def _complete(self, block: ReplayBlock, s: ReplayStreams) -> float | None:
        """The edge cut of ``block`` once its trials and data are all in, else ``None``."""
        reports = s.reports
        have_all = all(k in reports for k in range(block.trial_start, block.trial_stop))
        next_known = block.trial_stop >= self.plan.n_trials or block.trial_stop in reports
        if s.finished:
            # all data are in; reports travel on another socket: give a late one a moment
            if have_all and next_known:
                return self._cut(block, s)
            if self._finished_at is None:
                self._finished_at = time.monotonic()
            return self._cut(block, s) if time.monotonic() - self._finished_at > 2.0 else None
        if not (have_all and next_known):
            return None
        offset = self._offset(reports[block.trial_start].flip_time, s)
        if offset is None:
            return None
        cut = self._cut(block, s)
        last_onset = offset + reports[block.trial_stop - 1].flip_time
        needed = max(
            cut if np.isfinite(cut) else -np.inf, last_onset + self.settings.window_s[1] + self.settings.frame_s
        )
        return cut if s.horizon >= needed else None

    def _offset(self, first_flip: float, s: ReplayStreams) -> float | None:
        """Presenter → acquisition clock: the last aligned block's, else the first pending edge's."""
        if self.clock_offset is not None:
            return self.clock_offset
        edge = s.first_edge()
        return None if edge is None else edge - first_flip

    def _cut(self, block: ReplayBlock, s: ReplayStreams) -> float:
        """Halfway between the block's last flip and the next block's first, on the acquisition clock."""
        reports, nxt = s.reports, block.trial_stop
        offset = self._offset(reports[block.trial_start].flip_time, s) if block.trial_start in reports else None
        if nxt not in reports or block.trial_stop - 1 not in reports or offset is None:
            return np.inf
        return offset + 0.5 * (reports[nxt - 1].flip_time + reports[nxt].flip_time)

    def _announce(self, block: ReplayBlock) -> None:
        """BlockRequest copy (pixels of fitting images shown the first time) and BlockStatus 'started'."""
        streams, _, publisher = self._parts()
        span = slice(block.trial_start, block.trial_stop)
        ids = self.plan.stimulus_ids[span]
        new = np.array(sorted({int(i) for i in ids[self.plan.fit_trial[span]]} - self.published_images), np.int64)
        publisher.send(
            BlockRequest(
                block=block.number,
                kind=block.kind,
                stimulus_ids=ids,
                repeats=1,
                image_ids=new if new.size else None,
                pixels=self.plan.images_of(new) if new.size else None,
            )
        )
        self.published_images.update(int(i) for i in new)
        self._status(block, "started", 0, block.label)
        self._lost_at_start = streams.lost

    def _finish(self, block: ReplayBlock, cut: float) -> tuple[BlockRow, tuple | None]:
        """Align and count one block; its row and, for a good block, (stimulus ids, rates) to fit."""
        s, _, publisher = self._parts()
        edges = s.take_edges(cut)
        row = BlockRow(block.number, block.label, "flagged", block.n_trials)
        span = range(block.trial_start, block.trial_stop)
        shown: list[StimulusShown] = [m for m in (s.reports.get(k) for k in span) if m is not None]
        expected = self.plan.stimulus_ids[block.trial_start : block.trial_stop]
        problem = ""
        if block.flagged:
            problem = f"flagged in the archive ({block.flagged}); left out, as the offline loader leaves it out"
        elif len(shown) < block.n_trials:
            problem = f"{block.n_trials - len(shown)} of {block.n_trials} trials were never reported"
        elif any(m.stimulus_id != int(e) for m, e in zip(shown, expected)):
            problem = "the replayed stimulus ids differ from the archive's trials"
        alignment = None
        if not problem:
            flips = np.array([m.flip_time for m in shown], dtype=np.float64)
            alignment = align_onsets(flips, edges, self.settings.frame_s, self.settings.tolerance_frames)
            if not alignment.ok:
                problem = f"photodiode: {alignment.problem}; responses not computed"
            elif s.lost > self._lost_at_start:
                problem = f"acquisition lost {s.lost - self._lost_at_start} message(s) during the block"
        if problem:
            row.detail = problem
            logger.info("%s: block %d (%s) flagged: %s", self.name, block.number, block.label, problem)
            self._status(block, "flagged", block.n_trials, problem)
            if np.isfinite(cut):
                s.forget_spikes(cut)
            return row, None
        if alignment is None or alignment.onsets is None:  # no problem: the block was aligned
            raise RuntimeError(f"block {block.number} has no aligned onsets")
        self.clock_offset = alignment.clock_offset(flips)
        units, times = s.spikes()
        counts = window_counts_from_spike_times(
            units, times, alignment.onsets, self.settings.window_s, self.plan.unit_ids
        )
        rates = counts_to_rates(counts, self.settings.window_s).astype(np.float64)
        if np.isfinite(cut):
            s.forget_spikes(cut)
        publisher.send(
            Responses(
                block=block.number,
                trial_ids=np.arange(block.trial_start, block.trial_stop),
                stimulus_ids=expected,
                rates=rates,
                unit_ids=self.plan.unit_ids,
            )
        )
        self._status(block, "finished", block.n_trials, block.label)
        fit = self.plan.fit_trial[block.trial_start : block.trial_stop]
        if not fit.any():
            row.state = "no fit data"
            row.detail = "no stimulus that fitting uses"
            return row, None
        return row, (expected[fit], rates[fit])

    def _status(self, block: ReplayBlock, state: str, n_trials: int, detail: str) -> None:
        _, _, publisher = self._parts()
        publisher.send(BlockStatus(block=block.number, kind=block.kind, state=state, n_trials=n_trials, detail=detail))

    def _emit(self, row: BlockRow) -> None:
        if row.state in ("flagged", "no fit data", "refused"):
            _, fitting, _ = self._parts()
            row.trials_so_far, row.images_so_far = fitting.trials_sent, len(fitting.server_has)
        self.rows.append(row)
        if self.on_row is not None:
            self.on_row(row)
