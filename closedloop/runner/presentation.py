"""Running one presentation block: request, wait for trials and data, align, store, forward.

`BlockPresentation` is one of the `closedloop.runner.runner.Runner`'s collaborators: it
sends the block to the presenter, waits on the runner's `StreamCollector`, records the
block with the `SessionRecorder` and hands a good block's responses to `ModelSteps`.
A block is a generator that yields while it waits, so the runner keeps draining its
sockets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from closedloop.config.protocol import FrameTiming, Protocol
from closedloop.config.rig import Rig
from closedloop.data.responses import counts_to_rates, window_counts_from_spike_times
from closedloop.data.session_format import BlockFlag, BlockKind
from closedloop.messages import BlockRequest, Error, Responses
from closedloop.runner.alignment import align_onsets, estimated_onsets
from closedloop.runner.collect import StreamCollector
from closedloop.runner.journal import BlockRecord
from closedloop.runner.model_steps import ModelSteps
from closedloop.runner.plan import Plan, PlannedStep, trial_order
from closedloop.runner.recorder import SessionRecorder
from closedloop.runner.settings import RunnerSettings
from closedloop.runner.trials import TrialData
from closedloop.runner.viability import Viability
from closedloop.transport import Endpoints, Publisher, RequestClient

logger = logging.getLogger(__name__)


@dataclass
class ActiveBlock:
    """A presentation block in progress."""

    step: PlannedStep
    block: int
    kind: str  # "natural" | "gratings" | "synthesized" (BlockRequest.kind)
    order: np.ndarray
    started: float
    deadline: float
    ran_as: str = ""
    note: str = ""  # e.g. why a synthesize block became natural
    missing_at_start: int = 0
    rejected: list[str] = field(default_factory=list)
    added: list[int] | None = None  # [start, stop) of stimuli stored for this block (a grating set)
    added_set: str = ""
    first_report_at: float | None = None  # time.monotonic() of the first trial report
    stopped_run: bool = False  # the viability check stopped the run while the block waited

    @property
    def n_trials(self) -> int:
        return int(self.order.size)


_BLOCK_KINDS = {"natural": BlockKind.NATURAL, "gratings": BlockKind.GRATING, "synthesized": BlockKind.SYNTHESIZED}


def pause(seconds: float):
    """A generator that yields (the runner keeps polling) for ``seconds``."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        yield


class BlockPresentation:
    """Presentation blocks (see module notes).

    Parameters
    ----------
    recorder
        Where blocks are recorded (writer, library, seeds, clock offset).
    collector
        The runner's acquisition stream and presenter reports.
    presenter, publisher
        The presenter's ROUTER (a `RequestClient`) and the runner's PUB.
    model
        Takes a good block's responses for the model server.
    rig, plan, settings, endpoints
        The rig (refresh rate), the plan (repeats of a replacement block), waits, where
        the presenter is (for messages).
    frames, photodiode_line
        The protocol's frame timing and the sync line of onsets.
    stop
        Called with the reason when the run cannot go on (no presenter, or ``viability`` says so).
    viability
        On a real rig: stops a run whose photodiode never arrives or whose blocks are all
        flagged (`closedloop.runner.viability`); ``None`` elsewhere.
    name
        For log lines.

    Attributes
    ----------
    active
        The presentation block in progress, if any.
    """

    def __init__(
        self,
        recorder: SessionRecorder,
        collector: StreamCollector,
        presenter: RequestClient,
        publisher: Publisher,
        model: ModelSteps,
        *,
        rig: Rig,
        protocol: Protocol,
        plan: Plan,
        settings: RunnerSettings,
        endpoints: Endpoints,
        frames: FrameTiming,
        photodiode_line: int,
        stop: Callable[[str], None],
        viability: Viability | None = None,
        name: str = "runner",
    ):
        self.recorder, self.collector, self.presenter, self.publisher, self.model = (
            recorder,
            collector,
            presenter,
            publisher,
            model,
        )
        self.rig, self.protocol, self.plan, self.settings, self.endpoints = rig, protocol, plan, settings, endpoints
        self.frames, self.photodiode_line, self.stop, self.name = frames, photodiode_line, stop, name
        self.viability = viability
        self.window_s = recorder.window_s
        self.active: ActiveBlock | None = None

    def present(
        self,
        step: PlannedStep,
        ids: np.ndarray,
        repeats: int,
        kind: str,
        ran_as: str = "",
        note: str = "",
        added: list[int] | None = None,
        added_set: str = "",
    ):
        library = self.recorder.open_library
        order = trial_order(ids, repeats, self.recorder.seed("protocol"), step.index)
        block = self.recorder.open_writer.n_blocks
        timeout = self.settings.block_timeout_s
        if timeout is None:
            timeout = 2 * order.size * self.frames.trial_ms / 1000 + 10.0
        now = time.monotonic()
        active = ActiveBlock(
            step,
            block,
            kind,
            order,
            now,
            now + timeout,
            ran_as,
            note,
            self.collector.acquisition.stats.missing,
            added=added,
            added_set=added_set,
        )
        self.active = active
        new = library.new_for_presenter(order)
        request = BlockRequest(
            block=block,
            kind=kind,
            stimulus_ids=order,
            repeats=1,
            image_ids=new if new.size else None,
            pixels=library.images(new) if new.size else None,
        )
        self.publisher.send(request)  # the monitor and the simulated array cache the pixels by id
        if new.size:
            yield from pause(self.settings.pixel_lead_s)
        sent = yield from self._send_to_presenter(active, request)
        if sent is None:
            return
        self.recorder.mark("block_sent")
        library.presenter_has.update(int(i) for i in new)
        line, window_stop = self.photodiode_line, self.window_s[1]
        while not self.collector.block_complete(block, order.size, line, window_stop, self.settings.settle_s):
            if self._presenter_rejected(active, sent):
                if len(active.rejected) == 1:  # the presenter may have restarted: send every image again
                    library.presenter_has.clear()
                    logger.warning(
                        "%s: block %d: presenter refused it (%s); sending it again with all pixels",
                        self.name,
                        block,
                        active.rejected[-1],
                    )
                    full = BlockRequest(
                        block=block,
                        kind=kind,
                        stimulus_ids=order,
                        repeats=1,
                        image_ids=np.unique(order),
                        pixels=library.images(np.unique(order)),
                    )
                    self.publisher.send(full)
                    yield from pause(self.settings.pixel_lead_s)
                    sent = yield from self._send_to_presenter(active, full)
                    if sent is None:
                        return
                    library.presenter_has.update(int(i) for i in np.unique(order))
                    continue
                self._finish_failed_block(active, f"the presenter refused the block: {active.rejected[-1]}")
                return
            if self._not_viable(active):
                break
            if time.monotonic() > active.deadline:
                shown = len(self.collector.trials_of(block).by_trial)
                active.note = _join(
                    active.note, f"timed out after {timeout:.0f} s with {shown} of {order.size} trials reported"
                )
                break
            yield
        yield from self.finish(active)

    def _not_viable(self, active: ActiveBlock) -> bool:
        """A real rig whose photodiode never arrives: stop (see `closedloop.runner.viability`)."""
        if self.viability is None:
            return False
        trials = self.collector.trials_of(active.block)
        if active.first_report_at is None and trials.by_trial:
            active.first_report_at = trials.last_received
        reason = self.viability.waiting(active.first_report_at, self.collector.pending_edges(self.photodiode_line).size)
        if reason:
            active.stopped_run = True
            active.note = _join(active.note, reason)
            self.stop(reason)
        return bool(reason)

    def _send_to_presenter(self, active: ActiveBlock, request: BlockRequest):
        """Send a BlockRequest, retrying while no presenter is connected; the seq or ``None``."""
        deadline = time.monotonic() + self.settings.presenter_timeout_s
        while True:
            seq = self.presenter.send(request)
            if seq is not None:
                return seq
            if time.monotonic() > deadline:
                self._finish_failed_block(
                    active,
                    f"no presenter took the block within "
                    f"{self.settings.presenter_timeout_s:g} s at {self.endpoints.blocks}",
                    advances=False,
                )
                self.stop("presenter unreachable")
                return None
            yield from pause(0.1)

    def _presenter_rejected(self, active: ActiveBlock, seq: int) -> bool:
        reply = self.presenter.recv(0)
        while reply is not None:
            if isinstance(reply.message, Error) and reply.envelope.reply_to == seq:
                active.rejected.append(f"{reply.message.code}: {reply.message.message}")
                return True
            reply = self.presenter.recv(0)
        return False

    def _finish_failed_block(self, active: ActiveBlock, detail: str, advances: bool = True) -> None:
        logger.error("%s: block %d (%s, %s): %s", self.name, active.block, active.step.kind, active.step.where, detail)
        self.collector.forget(active.block)
        data = self.collector.take()
        self.recorder.commit(
            BlockRecord(
                0,
                active.step.index,
                active.step.where,
                active.step.kind,
                "failed",
                active.step.iteration,
                advances=advances,
                detail=detail,
                ran_as=active.ran_as,
                stimuli=active.added,
                stimulus_set=active.added_set,
            ),
            BlockKind.OTHER,
            data=data,
            flag=BlockFlag.OTHER,
        )
        self.active = None

    def finish(self, active: ActiveBlock, aborted: bool = False):
        """Align, count, store; then publish and forward the responses of a good block."""
        self.recorder.mark("responses_in_hand")
        self.active = None
        trials = self.collector.trials_of(active.block)
        shown = trials.ordered()
        self.collector.forget(active.block)
        data = self.collector.take()
        problems, flag = [], BlockFlag.NONE
        if aborted:
            problems.append(f"interrupted after {len(shown)} of {active.n_trials} trials")
            flag = BlockFlag.ABORTED
        elif len(shown) < active.n_trials:
            problems.append(f"the presenter reported {len(shown)} of {active.n_trials} trials")
            flag = BlockFlag.OTHER
        wrong = [m for m in shown if m.trial >= active.n_trials or active.order[m.trial] != m.stimulus_id]
        if wrong:
            first = wrong[0]
            expected = active.order[first.trial] if first.trial < active.n_trials else "none"
            problems.append(
                f"the presenter showed stimulus {first.stimulus_id} on trial {first.trial} "
                f"(requested {expected}); {len(wrong)} such trial(s)"
            )
            flag = flag or BlockFlag.OTHER
        flips = np.array([m.flip_time for m in shown], dtype=np.float64)
        edges = data.rising_edges(self.photodiode_line)
        alignment = align_onsets(
            flips, edges, 1.0 / self.rig.display.refresh_hz, self.settings.photodiode_tolerance_frames
        )
        unit_ids = self.recorder.units
        if alignment.ok and alignment.onsets is not None:  # ok: the onsets are there
            onsets, how = alignment.onsets, "photodiode"
            counts = window_counts_from_spike_times(data.spike_units, data.spike_times, onsets, self.window_s, unit_ids)
            rates = counts_to_rates(counts, self.window_s)
            if flag == BlockFlag.NONE:
                self.recorder.clock_offset = alignment.clock_offset(flips)
        else:
            problems.append(f"photodiode: {alignment.problem}; responses not computed")
            flag = flag or BlockFlag.PHOTODIODE_MISMATCH
            onsets, how = estimated_onsets(flips, edges, self.recorder.clock_offset)
            how = f"estimated: {how}"
            rates = np.full((len(shown), unit_ids.size), np.nan, dtype=np.float32)
        lost = self.collector.acquisition.stats.missing - active.missing_at_start
        if lost:
            problems.append(f"acquisition lost {lost} message(s) during the block")
            flag = flag or BlockFlag.OTHER
        notes = [active.note] if active.note else []
        if alignment.ok and rates.size and not np.any(rates > 0):
            notes.append("no unit responded (no spike in any response window)")
        self.recorder.mark("responses_computed")
        dropped = sum(1 for m in shown if m.dropped_frames)
        if dropped:
            notes.append(f"{dropped} trial(s) with dropped frames")
        detail = "; ".join(problems + notes)
        state = "aborted" if aborted else ("flagged" if detail or active.ran_as else "finished")
        good = flag == BlockFlag.NONE and alignment.ok
        if detail:
            log = logger.warning if problems else logger.info
            log(
                "%s: block %d (%s, %s) %s: %s",
                self.name,
                active.block,
                active.step.kind,
                active.step.where,
                state,
                detail,
            )
        stimulus_ids = np.array([m.stimulus_id for m in shown], dtype=np.int64)
        record = BlockRecord(
            0,
            active.step.index,
            active.step.where,
            active.step.kind,
            state,
            active.step.iteration,
            advances=not aborted,
            detail=detail,
            n_trials=len(shown),
            ran_as=active.ran_as,
            onsets=how,
            stimuli=active.added,
            stimulus_set=active.added_set,
        )
        self.recorder.commit(
            record,
            _BLOCK_KINDS[active.kind],
            data=data,
            stimulus_ids=stimulus_ids,
            onsets=onsets,
            flips=flips,
            n_frames=[m.n_frames for m in shown],
            dropped=[m.dropped_frames for m in shown],
            rates=rates,
            flag=flag,
        )
        if self.viability is not None and not aborted and not active.stopped_run:
            reason = self.viability.block_done(not good, detail)
            if reason:
                self.stop(reason)
        if good and stimulus_ids.size:
            trial_data = TrialData(active.block, stimulus_ids, rates.astype(np.float64))
            self.recorder.history.append(trial_data)
            self.publisher.send(
                Responses(
                    block=active.block,
                    trial_ids=np.arange(stimulus_ids.size),
                    stimulus_ids=stimulus_ids,
                    rates=rates.astype(np.float64),
                    unit_ids=unit_ids,
                )
            )
            self.model.queue_fit_data(trial_data)
            if not aborted:
                delivered = yield from self.model.deliver_backlog()
                if delivered is not None:
                    self.recorder.mark("responses_delivered")  # lands in the next block's record

    def abandon(self) -> None:
        """Forget the block in progress (its step failed): its reports go, its data stay for the record."""
        if self.active is not None:
            self.collector.forget(self.active.block)
            self.active = None

    def natural_instead(self, step: PlannedStep, why: str):
        """Show natural images where synthesized ones cannot be made (counts and repeats of the plan)."""
        synthesis, library = self.protocol.synthesis, self.recorder.open_library
        if synthesis is None:  # the protocol's check refuses synthesize blocks without the section
            raise RuntimeError("a synthesize block needs the protocol's synthesis section")
        count = min(synthesis.images_per_block, library.natural_ids.size)
        repeats = self.plan.next_present_repeats(step.index)
        ids = library.next_natural(count)
        logger.warning(
            "%s: block %d (%s): %s; showing %d natural images x %d instead",
            self.name,
            self.recorder.open_writer.n_blocks,
            step.where,
            why,
            ids.size,
            repeats,
        )
        yield from self.present(
            step,
            ids,
            repeats,
            "natural",
            ran_as="natural",
            note=f"{why}: synthesize block replaced by {ids.size} natural images",
        )


def _join(first: str, second: str) -> str:
    return f"{first}; {second}" if first else second
