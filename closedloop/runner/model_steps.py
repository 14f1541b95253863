"""The runner's model-server blocks: fit and synthesize, and delivering the backlog.

Part of the `closedloop.runner.runner.Runner` component (a mixin).  When the server
is down a fit block is skipped (its refit request waits in the backlog) and a
synthesize block becomes a natural-image block, flagged "model server unavailable";
the loop goes on and picks the server up again at the next block.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from closedloop.data.session_format import BlockKind
from closedloop.messages import Accepted, Error, SynthesizeRequest, SynthesizeResult
from closedloop.runner.journal import BlockRecord
from closedloop.runner.model_link import empty_fit_request
from closedloop.runner.plan import PlannedStep
from closedloop.runner.targets import (
    SynthesisPlanError, natural_means, target_rates, top_units, well_fit_units,
)

logger = logging.getLogger(__name__)

UNAVAILABLE = "model server unavailable"


class ModelStepsMixin:
    """Fit and synthesize blocks of the `Runner` (see module notes)."""

    # --- the backlog --------------------------------------------------------------

    def _deliver_backlog(self):
        """Send queued fit requests; after a server restart, queue everything again first."""
        last = None
        for _ in range(3):  # a restart re-queues once; more means the server keeps restarting
            last = yield from self.link.flush()
            if not self.link.restarted:
                break
            self._queue_everything()
        return last

    def _server_lost_data(self) -> None:
        """Called by the link when the server restarted: it has none of our data now."""
        self.server_has.clear()
        self.server_blocks.clear()

    def _queue_everything(self) -> None:
        """Queue every good block not yet delivered to this server, then a refit if one was ever asked for."""
        self.link.backlog.clear()
        self.link.acknowledge_restart()
        for data in self.history:
            if data.block not in self.server_blocks:
                self._queue_fit_data(data)
        if self.refit_wanted:
            self._queue_refit(self.writer.n_blocks)
        logger.info("%s: %d block(s) of responses queued for the model server", self.name, len(self.link.backlog))

    def _queue_refit(self, block: int) -> None:
        self.link.submit(lambda: empty_fit_request(block, self.unit_ids))

    # --- fit ----------------------------------------------------------------------

    def _fit(self, step: PlannedStep):
        block = self.writer.n_blocks
        self.refit_wanted = True
        yield from self._deliver_backlog()
        if self.link.up is False:
            self._queue_refit(block)
            self._record_model_step(step, "skipped", f"{UNAVAILABLE}; the refit is asked for when it is back")
            return
        self._mark("fit_requested")
        reply = yield from self.link.request(empty_fit_request(block, self.unit_ids), self.settings.request_timeout_s)
        if reply is None:
            self._queue_refit(block)
            self._record_model_step(step, "skipped", f"{UNAVAILABLE}; the refit is asked for when it is back")
            return
        answer = reply.message
        if isinstance(answer, Accepted):
            self._mark("fit_accepted")
            self.link.saw_accepted(answer.version)
        if self.link.restarted:
            yield from self._restarted_during(step)
            return
        if not isinstance(answer, Accepted):
            text = f"{answer.code}: {answer.message}" if isinstance(answer, Error) else answer.type_name()
            self._record_model_step(step, "failed", f"the model server refused the refit ({text})")
            return
        errors_before = self.link.errors_seen
        deadline = time.monotonic() + self.settings.fit_timeout_s
        next_ping = time.monotonic() + self.settings.ping_interval_s
        while self.link.version < answer.version:
            if self.link.restarted:
                yield from self._restarted_during(step)
                return
            if self.link.errors_seen > errors_before:
                error = self.link.last_error
                self._record_model_step(step, "failed", f"the refit failed ({error.code}: {error.message})")
                return
            if time.monotonic() > deadline:
                self._record_model_step(step, "flagged", f"no ModelUpdated version {answer.version} within "
                                        f"{self.settings.fit_timeout_s:g} s; going on with version {self.link.version}")
                return
            if time.monotonic() > next_ping:  # a server that died mid-refit never answers
                alive = yield from self.link.ping()
                if alive is None:
                    self._queue_refit(block)
                    self._record_model_step(step, "skipped", f"{UNAVAILABLE} (it went away during the refit); "
                                            "the refit is asked for again when it is back")
                    return
                reached = getattr(alive.message, "model_version", 0)
                if reached >= answer.version and self.link.version < answer.version:
                    self._record_model_step(step, "flagged", f"the server has model version {reached} but its "
                                            "ModelUpdated never arrived (lost on the PUB); metrics unknown")
                    return
                next_ping = time.monotonic() + self.settings.ping_interval_s
            yield
        self._mark("model_updated")
        update = self.link.newest
        r_median = update.metrics.get("r_median", float("nan"))
        self._record_model_step(step, "finished", f"model version {update.version}, median held-out r "
                                f"{r_median:.3f}", update=update)

    def _restarted_during(self, step: PlannedStep):
        self._queue_everything()
        yield from self._deliver_backlog()
        self._record_model_step(step, "flagged", "the model server restarted and had lost its data; everything "
                                "recorded was sent again and a refit asked for")

    # --- synthesize -----------------------------------------------------------------

    def _synthesize(self, step: PlannedStep):
        yield from self._deliver_backlog()
        self.library.synthesized_ids = np.zeros(0, dtype=np.int64)
        synthesis = self.protocol.synthesis
        update = self.link.newest
        if self.link.up is False:
            yield from self._natural_instead(step, UNAVAILABLE)
            return
        if update is None:
            yield from self._natural_instead(step, "the model server has no fitted model yet")
            return
        try:
            units = top_units(update, synthesis.units.top_k)
            units, skipped = well_fit_units(update, units, synthesis.units.min_heldout_r)
            if units.size == 0:
                raise SynthesisPlanError(skipped)
            if skipped:
                logger.warning("%s: %s", self.name, skipped)
            unknown = sorted(set(units.tolist()) - set(self.unit_ids.tolist()))
            if unknown:
                raise SynthesisPlanError(f"model version {update.version} names units {unknown} that this session "
                                         "does not have")
            means = natural_means(self.history, self.library.natural_ids, self.unit_ids)
            targets = target_rates(synthesis, units, self.unit_ids, means)
        except SynthesisPlanError as error:
            self._record_model_step(step, "failed", str(error))
            return
        per = synthesis.images_per_target
        unit_column = np.repeat(np.repeat(units, targets.shape[1]), per)
        target_column = np.repeat(targets.ravel(), per)
        seed = int(np.random.SeedSequence([self.seeds["synthesis"], step.index]).generate_state(1)[0] % 2**31)
        request = SynthesizeRequest(unit_ids=unit_column, targets=target_column, seed=seed, steps=synthesis.steps)
        self._mark("synthesis_requested")
        reply = yield from self.link.request(request, self.settings.synth_timeout_s,
                                             ping_every_s=self.settings.ping_interval_s)
        if reply is None:
            yield from self._natural_instead(step, UNAVAILABLE)
            return
        if self.link.restarted:
            self._queue_everything()
            yield from self._natural_instead(step, "the model server restarted and has no model yet")
            return
        result = reply.message
        if isinstance(result, SynthesizeResult):
            self._mark("synthesis_received")
        if isinstance(result, Error):
            if result.code == "no_model":
                yield from self._natural_instead(step, f"the model server has no model ({result.message})")
            else:
                self._record_model_step(step, "failed", f"synthesis refused ({result.code}: {result.message})")
            return
        if not isinstance(result, SynthesizeResult):
            self._record_model_step(step, "failed", f"unexpected {result.type_name()} in reply to a SynthesizeRequest")
            return
        self._store_synthesized(step, result)

    def _store_synthesized(self, step: PlannedStep, result: SynthesizeResult) -> None:
        size = self.rig.stimulus.size_px
        images = np.asarray(result.images)
        if images.shape[1:] != (size, size):
            self._record_model_step(step, "failed", f"the model server sent images of shape {images.shape[1:]}, "
                                    f"but the rig's stimulus.size_px is {size}")
            return
        if images.dtype == np.uint8:
            images = images.astype(np.float32) / 255.0
        if not (np.all(np.isfinite(images)) and images.min() >= 0 and images.max() <= 1):
            self._record_model_step(step, "failed", "the model server sent images with values outside [0, 1]")
            return
        start = self.writer.n_stimuli
        ids = self.writer.add_stimuli(images, "synthesized", unit_id=result.unit_ids, target_hz=result.targets,
                                      achieved_hz=result.achieved, model_version=result.model_version,
                                      seed=result.seed, source_index=np.arange(len(images)))
        self.library.add(ids, images)
        self.library.synthesized_ids = ids
        self._mark("images_stored")
        self._record_model_step(step, "finished", f"{len(ids)} images for units "
                                f"{sorted(set(result.unit_ids.tolist()))} from model version {result.model_version}",
                                stimuli=[start, start + len(ids)], stimulus_set="synthesized")

    def _natural_instead(self, step: PlannedStep, why: str):
        """Show natural images where synthesized ones cannot be made (counts and repeats of the plan)."""
        count = min(self.protocol.synthesis.images_per_block, self.library.natural_ids.size)
        repeats = self.plan.next_present_repeats(step.index)
        ids = self.library.next_natural(count)
        logger.warning("%s: block %d (%s): %s; showing %d natural images x %d instead", self.name,
                       self.writer.n_blocks, step.where, why, ids.size, repeats)
        yield from self._present(step, ids, repeats, "natural", ran_as="natural",
                                 note=f"{why}: synthesize block replaced by {ids.size} natural images")

    # --- records --------------------------------------------------------------------

    def _record_model_step(self, step: PlannedStep, state: str, detail: str, update=None, **extra) -> None:
        record = BlockRecord(0, step.index, step.where, step.kind, state, step.iteration, detail=detail, **extra)
        if update is not None:
            record.model_version = int(update.version)
            record.metrics = {k: float(v) for k, v in update.metrics.items()}
            if update.unit_ids is not None and update.heldout_r is not None:
                record.unit_ids = [int(u) for u in update.unit_ids]
                record.heldout_r = [float(r) for r in update.heldout_r]
        log = logger.info if state in ("finished", "skipped") else logger.warning
        log("%s: block %d (%s, %s) %s: %s", self.name, self.writer.n_blocks, step.kind, step.where, state, detail)
        self._commit(record, BlockKind.OTHER, data=self.collector.take())
