"""The runner's model-server blocks: fit and synthesize, and delivering the backlog.

`ModelSteps` is one of the `closedloop.runner.runner.Runner`'s collaborators: it talks to
the model server through a `ModelLink` and records its blocks with the runner's
`SessionRecorder`.  When the server is down a fit block is skipped (its refit request
waits in the backlog) and a synthesize block becomes a natural-image block (the runner
shows it), flagged "model server unavailable"; the loop goes on and picks the server up
again at the next block.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from closedloop.config.protocol import Protocol
from closedloop.config.rig import Rig
from closedloop.data.session_format import BlockKind
from closedloop.messages import Accepted, Error, FitRequest, SynthesizeRequest, SynthesizeResult
from closedloop.runner.collect import StreamCollector
from closedloop.runner.journal import BlockRecord
from closedloop.runner.plan import Plan, PlannedStep
from closedloop.runner.recorder import SessionRecorder
from closedloop.runner.settings import RunnerSettings
from closedloop.runner.targets import (
    SynthesisPlanError,
    narrow_targets,
    natural_means,
    target_rates,
    top_units,
    well_fit_units,
)
from closedloop.runner.trials import TrialData
from closedloop.server.client import ModelLink, empty_fit_request

logger = logging.getLogger(__name__)

UNAVAILABLE = "model server unavailable"


class ModelSteps:
    """Fit and synthesize blocks, and the responses the model server must have (see module notes).

    Parameters
    ----------
    link
        The model server's client.
    recorder
        Where blocks are recorded; its ``history`` holds the responses to send.
    collector
        The runner's streams (a model block takes the data received meanwhile).
    rig, protocol, plan, settings
        The run's configs, plan and waits.
    name
        For log lines.
    """

    def __init__(
        self,
        link: ModelLink,
        recorder: SessionRecorder,
        collector: StreamCollector,
        *,
        rig: Rig,
        protocol: Protocol,
        plan: Plan,
        settings: RunnerSettings,
        name: str = "runner",
    ):
        self.link, self.recorder, self.collector = link, recorder, collector
        self.rig, self.protocol, self.plan, self.settings, self.name = rig, protocol, plan, settings, name
        self.server_has: set[int] = set()  # stimulus ids whose pixels this server has
        self.server_blocks: set[int] = set()  # blocks of responses this server has accepted
        link.on_restart = self.server_lost_data

    # --- the backlog --------------------------------------------------------------

    def deliver_backlog(self):
        """Send queued fit requests; after a server restart, queue everything again first."""
        last = None
        for _ in range(3):  # a restart re-queues once; more means the server keeps restarting
            last = yield from self.link.flush()
            if not self.link.restarted:
                break
            self.queue_everything()
        return last

    def server_lost_data(self) -> None:
        """Called by the link when the server restarted: it has none of our data now."""
        self.server_has.clear()
        self.server_blocks.clear()

    def queue_everything(self) -> None:
        """Queue every good block not yet delivered to this server, then a refit if one was ever asked for."""
        self.link.backlog.clear()
        self.link.acknowledge_restart()
        for data in self.recorder.history:
            if data.block not in self.server_blocks:
                self.queue_fit_data(data)
        if self.recorder.refit_wanted:
            self._queue_refit(self.recorder.open_writer.n_blocks)
        logger.info("%s: %d block(s) of responses queued for the model server", self.name, len(self.link.backlog))

    def _queue_refit(self, block: int) -> None:
        self.link.submit(lambda: empty_fit_request(block, self.recorder.units))

    def queue_fit_data(self, trial_data: TrialData) -> None:
        self.link.submit(lambda: self._fit_request(trial_data), self._fit_accepted)

    def _fit_request(self, data: TrialData, refit: bool = False) -> FitRequest:
        new = np.array(sorted({int(i) for i in data.stimulus_ids} - self.server_has), dtype=np.int64)
        library = self.recorder.open_library
        return FitRequest(
            block=data.block,
            stimulus_ids=data.stimulus_ids,
            rates=data.rates,
            unit_ids=self.recorder.units,
            image_ids=new if new.size else None,
            images=library.images(new) if new.size else None,
            parent_ids=library.parent_ids(new) if new.size else None,
            refit=refit,
        )

    def _fit_accepted(self, request: FitRequest) -> None:
        self.server_blocks.add(request.block)
        if request.image_ids is not None:
            self.server_has.update(int(i) for i in request.image_ids)

    def resend_after_resume(self):
        """Send the recorded responses again and, if the session had fitted, wait for a refit."""
        self.queue_everything()
        last = yield from self.deliver_backlog()
        if last is None or not self.recorder.refit_wanted:
            return
        version = getattr(last.message, "version", 0)
        deadline = time.monotonic() + self.settings.fit_timeout_s
        while self.link.version < version and time.monotonic() < deadline and not self.link.restarted:
            yield
        logger.info(
            "%s: resumed at step %s with model version %d", self.name, self.recorder.position, self.link.version
        )

    # --- fit ----------------------------------------------------------------------

    def fit(self, step: PlannedStep):
        block = self.recorder.open_writer.n_blocks
        self.recorder.refit_wanted = True
        yield from self.deliver_backlog()
        if self.link.up is False:
            self._queue_refit(block)
            self.record(step, "skipped", f"{UNAVAILABLE}; the refit is asked for when it is back")
            return
        self.recorder.mark("fit_requested")
        reply = yield from self.link.request(
            empty_fit_request(block, self.recorder.units), self.settings.request_timeout_s
        )
        if reply is None:
            self._queue_refit(block)
            self.record(step, "skipped", f"{UNAVAILABLE}; the refit is asked for when it is back")
            return
        answer = reply.message
        if isinstance(answer, Accepted):
            self.recorder.mark("fit_accepted")
            self.link.saw_accepted(answer.version)
        if self.link.restarted:
            yield from self._restarted_during(step)
            return
        if not isinstance(answer, Accepted):
            text = f"{answer.code}: {answer.message}" if isinstance(answer, Error) else answer.type_name()
            self.record(step, "failed", f"the model server refused the refit ({text})")
            return
        errors_before = self.link.errors_seen
        deadline = time.monotonic() + self.settings.fit_timeout_s
        next_ping = time.monotonic() + self.settings.ping_interval_s
        while self.link.version < answer.version:
            if self.link.restarted:
                yield from self._restarted_during(step)
                return
            if self.link.errors_seen > errors_before:
                error = self.link.last_error  # set with every error counted
                reason = "no error message" if error is None else f"{error.code}: {error.message}"
                self.record(step, "failed", f"the refit failed ({reason})")
                return
            if time.monotonic() > deadline:
                self.record(
                    step,
                    "flagged",
                    f"no ModelUpdated version {answer.version} within "
                    f"{self.settings.fit_timeout_s:g} s; going on with version {self.link.version}",
                )
                return
            if time.monotonic() > next_ping:  # a server that died mid-refit never answers
                alive = yield from self.link.ping()
                if alive is None:
                    self._queue_refit(block)
                    self.record(
                        step,
                        "skipped",
                        f"{UNAVAILABLE} (it went away during the refit); the refit is asked for again when it is back",
                    )
                    return
                reached = getattr(alive.message, "model_version", 0)
                if reached >= answer.version and self.link.version < answer.version:
                    self.record(
                        step,
                        "flagged",
                        f"the server has model version {reached} but its "
                        "ModelUpdated never arrived (lost on the PUB); metrics unknown",
                    )
                    return
                next_ping = time.monotonic() + self.settings.ping_interval_s
            yield
        self.recorder.mark("model_updated")
        update = self.link.newest
        if update is None:  # the link reached the accepted version: only a version 0 leaves it without a model
            raise RuntimeError(f"model version {answer.version} was accepted, but no ModelUpdated arrived")
        r_median = update.metrics.get("r_median", float("nan"))
        self.record(
            step, "finished", f"model version {update.version}, median held-out r {r_median:.3f}", update=update
        )

    def _restarted_during(self, step: PlannedStep):
        self.queue_everything()
        yield from self.deliver_backlog()
        self.record(
            step,
            "flagged",
            "the model server restarted and had lost its data; everything "
            "recorded was sent again and a refit asked for",
        )

    # --- synthesize -----------------------------------------------------------------

    def synthesize(self, step: PlannedStep):
        """Ask for synthesized images; returns why natural images must be shown instead (``None``: no need)."""
        yield from self.deliver_backlog()
        library, unit_ids = self.recorder.open_library, self.recorder.units
        library.synthesized_ids = np.zeros(0, dtype=np.int64)
        synthesis = self.protocol.synthesis
        if synthesis is None:  # the protocol's check refuses synthesize blocks without the section
            raise RuntimeError("a synthesize block needs the protocol's synthesis section")
        update = self.link.newest
        if self.link.up is False:
            return UNAVAILABLE
        if update is None:
            return "the model server has no fitted model yet"
        try:
            units = top_units(update, synthesis.units.top_k)
            units, skipped = well_fit_units(update, units, synthesis.units.min_heldout_r)
            if units.size == 0:
                raise SynthesisPlanError(skipped)
            if skipped:
                logger.warning("%s: %s", self.name, skipped)
            unknown = sorted(set(units.tolist()) - set(unit_ids.tolist()))
            if unknown:
                raise SynthesisPlanError(
                    f"model version {update.version} names units {unknown} that this session does not have"
                )
            means = natural_means(self.recorder.history, library.natural_ids, unit_ids)
            targets = target_rates(synthesis, units, unit_ids, means)
            for line in narrow_targets(synthesis, units, unit_ids, means, targets):
                logger.warning("%s: %s", self.name, line)
        except SynthesisPlanError as error:
            self.record(step, "failed", str(error))
            return
        per = synthesis.images_per_target
        unit_column = np.repeat(np.repeat(units, targets.shape[1]), per)
        target_column = np.repeat(targets.ravel(), per)
        seeds = np.random.SeedSequence([self.recorder.seed("synthesis"), step.index])
        seed = int(seeds.generate_state(1)[0] % 2**31)
        request = SynthesizeRequest(unit_ids=unit_column, targets=target_column, seed=seed, steps=synthesis.steps)
        self.recorder.mark("synthesis_requested")
        reply = yield from self.link.request(
            request, self.settings.synth_timeout_s, ping_every_s=self.settings.ping_interval_s
        )
        if reply is None:
            return UNAVAILABLE
        if self.link.restarted:
            self.queue_everything()
            return "the model server restarted and has no model yet"
        result = reply.message
        if isinstance(result, SynthesizeResult):
            self.recorder.mark("synthesis_received")
        if isinstance(result, Error):
            if result.code == "no_model":
                return f"the model server has no model ({result.message})"
            self.record(step, "failed", f"synthesis refused ({result.code}: {result.message})")
            return None
        if not isinstance(result, SynthesizeResult):
            self.record(step, "failed", f"unexpected {result.type_name()} in reply to a SynthesizeRequest")
            return
        self._store_synthesized(step, result)

    def _store_synthesized(self, step: PlannedStep, result: SynthesizeResult) -> None:
        size = self.rig.stimulus.size_px
        images = np.asarray(result.images)
        if images.shape[1:] != (size, size):
            self.record(
                step,
                "failed",
                f"the model server sent images of shape {images.shape[1:]}, but the rig's stimulus.size_px is {size}",
            )
            return
        if images.dtype == np.uint8:
            images = images.astype(np.float32) / 255.0
        if not (np.all(np.isfinite(images)) and images.min() >= 0 and images.max() <= 1):
            self.record(step, "failed", "the model server sent images with values outside [0, 1]")
            return
        writer, library = self.recorder.open_writer, self.recorder.open_library
        start = writer.n_stimuli
        ids = writer.add_stimuli(
            images,
            "synthesized",
            unit_id=result.unit_ids,
            target_hz=result.targets,
            achieved_hz=result.achieved,
            spread_hz=result.spread,  # None (a server that sends no spread): stored as NaN
            start_stimulus_id=result.start_ids,  # None: -1, as for a grey start
            model_version=result.model_version,
            seed=result.seed,
            source_index=np.arange(len(images)),
        )
        library.add(ids, images)
        library.add_parents(ids, result.start_ids)
        library.synthesized_ids = ids
        self.recorder.mark("images_stored")
        self.record(
            step,
            "finished",
            f"{len(ids)} images for units "
            f"{sorted(set(result.unit_ids.tolist()))} from model version {result.model_version}",
            stimuli=[start, start + len(ids)],
            stimulus_set="synthesized",
        )

    # --- records --------------------------------------------------------------------

    def record(self, step: PlannedStep, state: str, detail: str, update=None, **extra) -> None:
        record = BlockRecord(0, step.index, step.where, step.kind, state, step.iteration, detail=detail, **extra)
        if update is not None:
            record.model_version = int(update.version)
            record.metrics = {k: float(v) for k, v in update.metrics.items()}
            if update.unit_ids is not None and update.heldout_r is not None:
                record.unit_ids = [int(u) for u in update.unit_ids]
                record.heldout_r = [float(r) for r in update.heldout_r]
        log = logger.info if state in ("finished", "skipped") else logger.warning
        log(
            "%s: block %d (%s, %s) %s: %s",
            self.name,
            self.recorder.open_writer.n_blocks,
            step.kind,
            step.where,
            state,
            detail,
        )
        self.recorder.commit(record, BlockKind.OTHER, data=self.collector.take())
