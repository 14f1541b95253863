"""The replay driver's side of the model server: send each block, ask for refits, wait for them.

`ReplayFitting` is a collaborator of `closedloop.replay.driver.ReplayDriver`: it talks
to the server through the driver's `ModelLink` and fills the driver's rows, models and
trial counts.  A block's fitting trials go out in one `FitRequest` with the display images
of stimuli the server has not seen.  The first block after which a split is possible
asks for a refit, then every ``fit_every``-th block that added data since; with
``wait`` the driver waits for that version's `ModelUpdated` (or the refit's
``fit_failed`` Error) before the next block, so "the online fit after each block" is
well defined at any replay speed.  Until the server has the images a split
needs (`MIN_IMAGES`), data are added without a refit and the row says when fitting
starts.  If the last block's data were not refitted, one more refit covers them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from closedloop.errors import ClosedLoopError
from closedloop.messages import Accepted, Error, FitRequest, ModelUpdated
from closedloop.model.split import MIN_IMAGES
from closedloop.replay.plan import ArchivePlan, ReplayBlock
from closedloop.replay.rows import BlockRow
from closedloop.server.client import ModelLink, empty_fit_request


class ReplayFitting:
    """Model-server requests of the `ReplayDriver` (see module notes).

    Parameters
    ----------
    link
        The model server's client.
    plan
        The archive's blocks, units and images.
    settings
        The driver's `DriverSettings` (refit cadence, waits).
    rows, models, sent_repeats
        The driver's block rows, `ModelUpdated` by version and trials sent per stimulus:
        filled here.
    emit
        Called with each finished row.
    on_model
        Called with each `ModelUpdated` (``None``: nothing).
    """

    def __init__(
        self,
        link: ModelLink,
        plan: ArchivePlan,
        settings,
        rows: list[BlockRow],
        models: dict[int, ModelUpdated],
        sent_repeats: dict[int, int],
        *,
        emit: Callable[[BlockRow], None],
        on_model: Callable[[ModelUpdated], None] | None = None,
    ):
        self.link, self.plan, self.settings = link, plan, settings
        self.rows, self.models, self.sent_repeats = rows, models, sent_repeats
        self.emit, self.on_model = emit, on_model
        self.server_has: set[int] = set()
        self.trials_sent = 0
        self.data_blocks = 0
        self.blocks_since_refit = 0  # data blocks sent since the last refit was asked for
        self.unfitted_data = False
        self.last_version = 0  # newest version the server reserved for us
        self.version_of_seq: dict[int, int] = {}
        self.failed_versions: dict[int, str] = {}
        self._fit_errors: dict[int, str] = {}  # FitRequest seq -> why its refit failed
        counts = self.plan.fit_images_through(self.plan.blocks)
        enough = np.flatnonzero(counts >= MIN_IMAGES)
        self.first_fittable_block = int(enough[0]) if enough.size else None

    # --- events -----------------------------------------------------------------------

    def poll_model_events(self) -> int:
        """Take ModelUpdated and fit_failed Errors from the server's PUB; returns how many arrived."""
        events = self.link.events.drain(1000)
        for decoded in events:
            message = decoded.message
            if isinstance(message, ModelUpdated):
                self.models[message.version] = message
                for row in self.rows:
                    if row.version == message.version and row.state == "refit pending":
                        row.metrics, row.state = dict(message.metrics), "fitted"
                if self.on_model is not None:
                    self.on_model(message)
            elif isinstance(message, Error) and message.code == "fit_failed" and message.in_reply_to is not None:
                self._fit_errors[int(message.in_reply_to)] = message.message
                self._note_failure(int(message.in_reply_to))
        return len(events)

    def _note_failure(self, seq: int) -> None:
        version = self.version_of_seq.get(seq)
        if version is not None and seq in self._fit_errors:
            self.failed_versions[version] = self._fit_errors[seq]
            for row in self.rows:
                if row.version == version and row.state == "refit pending":
                    row.state, row.detail = "refit failed", self._fit_errors[seq]

    @property
    def newest_version(self) -> int:
        return max(self.models, default=0)

    # --- requests ---------------------------------------------------------------------

    def send_block(self, block: ReplayBlock, row: BlockRow, stimulus_ids: np.ndarray, rates: np.ndarray):
        """Send one block's fitting trials; refit and wait as the settings say."""
        new = np.array(sorted({int(i) for i in stimulus_ids} - self.server_has), dtype=np.int64)
        images_after = len(self.server_has) + new.size
        # every K-th data block since the last refit; the first refit as soon as there are enough images
        refit = self.blocks_since_refit + 1 >= self.settings.fit_every or self.last_version == 0
        if refit and images_after < MIN_IMAGES:
            refit = False
            when = (
                ""
                if self.first_fittable_block is None
                else f"; refits start once block {self.first_fittable_block} is in"
            )
            row.detail = f"{images_after} images so far, a fit needs at least {MIN_IMAGES}{when}"
        request = FitRequest(
            block=block.number,
            stimulus_ids=stimulus_ids,
            rates=rates,
            unit_ids=self.plan.unit_ids,
            image_ids=new if new.size else None,
            images=self.plan.images_of(new) if new.size else None,
            refit=refit,
        )
        reply = yield from self.link.request(request, self.settings.request_timeout_s)
        if reply is None:
            raise ClosedLoopError(
                f"the model server did not answer the data of block {block.number} within "
                f"{self.settings.request_timeout_s:g} s"
            )
        answer = reply.message
        if not isinstance(answer, Accepted):
            row.state = "refused"
            row.detail = f"{answer.code}: {answer.message}" if isinstance(answer, Error) else answer.type_name()
            self.emit(row)
            return
        self.data_blocks += 1
        self.blocks_since_refit += 1
        self.server_has.update(int(i) for i in new)
        self.trials_sent += int(stimulus_ids.size)
        for stimulus_id in stimulus_ids:
            self.sent_repeats[int(stimulus_id)] = self.sent_repeats.get(int(stimulus_id), 0) + 1
        row.fit_trials, row.trials_so_far, row.images_so_far = int(stimulus_ids.size), self.trials_sent, images_after
        if not refit:
            self.unfitted_data = True
            row.state = "added"
            self.emit(row)
            return
        yield from self._refit_asked(row, reply)

    def _refit_asked(self, row: BlockRow, reply):
        """Record the version a refit will produce; wait for it when asked to."""
        seq = int(reply.envelope.reply_to)
        row.version, row.request_seq, row.state = int(reply.message.version), seq, "refit pending"
        self.version_of_seq[seq] = row.version
        self.last_version = max(self.last_version, row.version)
        self.unfitted_data = False
        self.blocks_since_refit = 0
        self._note_failure(seq)  # its fit_failed Error may have come before the Accepted
        if self.settings.wait:
            yield from self._await_version(row.version)
            self._settle(row)
        self.emit(row)

    def _settle(self, row: BlockRow) -> None:
        if row.version in self.models:
            row.metrics, row.state = dict(self.models[row.version].metrics), "fitted"
        elif row.version in self.failed_versions:
            row.state, row.detail = "refit failed", self.failed_versions[row.version]

    def _await_version(self, version: int):
        deadline = time.monotonic() + self.settings.fit_timeout_s
        while version not in self.models and version not in self.failed_versions:
            if time.monotonic() > deadline:
                raise ClosedLoopError(
                    f"model version {version} did not finish within {self.settings.fit_timeout_s:g} s"
                )
            yield

    def final_refit(self, last_block: int):
        """Refit once more if the last data were not refitted; then wait for the newest version."""
        if self.unfitted_data and len(self.server_has) >= MIN_IMAGES:
            row = BlockRow(
                last_block,
                "final refit on all data",
                "refit pending",
                0,
                trials_so_far=self.trials_sent,
                images_so_far=len(self.server_has),
            )
            reply = yield from self.link.request(
                empty_fit_request(last_block, self.plan.unit_ids), self.settings.request_timeout_s
            )
            if reply is None or not isinstance(reply.message, Accepted):
                raise ClosedLoopError("the model server refused the final refit")
            yield from self._refit_asked(row, reply)
        if self.last_version:
            yield from self._await_version(self.last_version)
            for row in self.rows:
                if row.state == "refit pending":
                    self._settle(row)
