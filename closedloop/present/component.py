"""The presenter as a component: BlockRequests in, one StimulusShown per trial out.

Requests arrive on a ROUTER socket (`RequestServer`): the runner sends a
`BlockRequest` with a `RequestClient`, which fails at once if no presenter is there
instead of losing the block.  A request that cannot be shown (unknown stimulus id,
wrong image size…) is answered with an `Error` reply; an accepted one is answered by
its trials, published as `StimulusShown` on the stimulus PUB socket as each trial
ends.  Trials run one per `step`, so heartbeats and a stop request are seen between
trials, never in the middle of one; requests that arrive during a block wait in the
socket until it ends.

Images sent in a request's ``pixels`` are kept by their ``image_ids``, so later blocks
may name them without sending them again.  Every image sent is checked (the rig's
stimulus size, finite, in [0, 1]) whether or not the block shows it, the trials of a
block are bounded by what a protocol may ask for, and the kept images by
``MAX_IMAGE_BYTES``: a request over either limit is refused, counted and answered.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import numpy as np

from closedloop.config.protocol import MAX_TRIALS, FrameTiming
from closedloop.config.rig import Rig
from closedloop.messages.types import BlockRequest, Error, StimulusShown
from closedloop.present.base import Presenter, PresenterError, TrialRecord, check_image
from closedloop.present.headless import HeadlessPresenter
from closedloop.runtime.component import Component
from closedloop.transport.sockets import Publisher, Request, RequestServer

logger = logging.getLogger(__name__)

PresenterKind = Literal["psychopy", "headless"]
# How long an idle step waits for a request: short enough to see a stop request promptly.
_POLL_MS = 50
#: Most bytes of images the presenter keeps (natural and synthesized, by stimulus id).
MAX_IMAGE_BYTES = 2 * 1024**3


def make_presenter(kind: PresenterKind, **options: Any) -> Presenter:
    """A presenter by name: ``"psychopy"`` (a window) or ``"headless"`` (simulation)."""
    if kind == "psychopy":
        from closedloop.present.psychopy_presenter import PsychoPyPresenter  # imports PsychoPy only when used

        return PsychoPyPresenter(**options)
    if kind == "headless":
        return HeadlessPresenter(**options)
    raise ValueError(f"presenter kind must be 'psychopy' or 'headless', got {kind!r}")


class PresenterComponent(Component):
    """Shows the blocks the runner asks for and reports every trial.

    Parameters
    ----------
    name
        Component name (also the message source).
    rig
        The rig (display geometry, refresh rate).
    timing
        Stimulus and blank durations in frames (``protocol.frames(rig)``).
    request_endpoint
        Where the `RequestServer` for `BlockRequest` binds.
    shown_endpoint
        Where the `StimulusShown` publisher binds (the rig's ``network.ports.stimulus``).
    presenter
        ``"psychopy"`` or ``"headless"``; ``presenter_options`` go to its constructor.
    images
        Images the presenter has from the start, by stimulus id (e.g. natural images).
    session
        Session id carried in every message envelope.
    """

    def __init__(
        self,
        name: str,
        *,
        rig: Rig,
        timing: FrameTiming,
        request_endpoint: str,
        shown_endpoint: str,
        presenter: PresenterKind = "headless",
        presenter_options: dict[str, Any] | None = None,
        images: Mapping[int, np.ndarray] | None = None,
        session: str = "",
        heartbeat_interval_s: float = 1.0,
    ):
        super().__init__(name, heartbeat_interval_s=heartbeat_interval_s)
        if presenter not in ("psychopy", "headless"):
            raise ValueError(f"{name}: presenter must be 'psychopy' or 'headless', got {presenter!r}")
        self.rig, self.timing = rig, timing
        self.request_endpoint, self.shown_endpoint = request_endpoint, shown_endpoint
        self.presenter_kind, self.presenter_options = presenter, dict(presenter_options or {})
        self.images: dict[int, np.ndarray] = {int(k): np.asarray(v) for k, v in (images or {}).items()}
        self.session = session
        self.presenter: Presenter | None = None
        self.requests: RequestServer | None = None
        self.shown: Publisher | None = None
        self.blocks_shown = 0
        self.blocks_rejected = 0
        self._block: int | None = None
        self._trials: Iterator[TrialRecord] | None = None

    def setup(self) -> None:
        # Sockets first: a runner that connects early finds us even while the window opens.
        self.requests = RequestServer(
            self.request_endpoint, source=self.name, session=self.session, only_from="runner"
        )  # with CURVE: blocks from the rig's runner only
        self.shown = Publisher(self.shown_endpoint, source=self.name, session=self.session)
        self.request_endpoint, self.shown_endpoint = self.requests.endpoint, self.shown.endpoint
        presenter = make_presenter(self.presenter_kind, **self.presenter_options)
        presenter.open(self.rig, self.timing)
        self.presenter = presenter

    def step(self) -> bool | None:
        if self._trials is not None:
            self._next_trial(self._trials)
            return None
        request = self._requests().recv(timeout_ms=_POLL_MS)
        if request is not None:
            self._start_block(request)
        return None

    def teardown(self) -> None:
        self._trials = None
        for resource in (self.presenter, self.shown, self.requests):
            if resource is not None:
                resource.close()

    # --- internals -------------------------------------------------------------------

    def _requests(self) -> RequestServer:
        if self.requests is None:
            raise RuntimeError(f"{self.name}: not set up (no request socket)")
        return self.requests

    def _start_block(self, request: Request) -> None:
        message = request.decoded.message
        if not isinstance(message, BlockRequest):
            self._reject(
                request, "unexpected_request", f"{self.name} takes BlockRequest messages, not {message.type_name()}"
            )
            return
        trials = len(message.stimulus_ids) * message.repeats
        if trials > MAX_TRIALS:
            self._reject(
                request, "bad_block", f"block {message.block} asks for {trials} trials; at most {MAX_TRIALS} per block"
            )
            return
        ids = [int(i) for i in message.stimulus_ids]
        images = dict(self.images)  # kept only if the block is accepted: bad pixels must not linger
        try:
            if message.pixels is not None:
                if message.image_ids is None:  # BlockRequest checks that both come or neither
                    raise PresenterError("pixels came without image_ids")
                size = self.rig.stimulus.size_px
                for stimulus_id, pixels in zip((int(i) for i in message.image_ids), message.pixels):
                    check_image(stimulus_id, pixels, size)  # every image sent, shown in this block or not
                    images[stimulus_id] = pixels
                kept = sum(np.asarray(image).nbytes for image in images.values())
                if kept > MAX_IMAGE_BYTES:
                    raise PresenterError(
                        f"keeping its images would take {kept / 1024**3:.1f} GiB; at most "
                        f"{MAX_IMAGE_BYTES / 1024**3:g} GiB of images are kept"
                    )
            if self.presenter is None:
                raise RuntimeError(f"{self.name}: not set up (no presenter)")
            self._trials = self.presenter.iter_block(images, ids * message.repeats)
        except PresenterError as error:
            self._reject(request, "bad_block", f"block {message.block} ({message.kind}) not shown: {error}")
            return
        self.images = images
        self._block = message.block
        logger.info("%s: block %d (%s), %d trials", self.name, message.block, message.kind, trials)

    def _next_trial(self, trials: Iterator[TrialRecord]) -> None:
        record = next(trials, None)
        if record is None:
            self._trials, self._block = None, None
            self.blocks_shown += 1
            return
        if self.shown is None or self._block is None:
            raise RuntimeError(f"{self.name}: a trial outside a block, or before setup")
        self.shown.send(
            StimulusShown(
                stimulus_id=record.stimulus_id,
                trial=record.trial,
                block=self._block,
                flip_time=record.flip_time,
                n_frames=record.n_frames,
                dropped_frames=record.dropped_frames,
            )
        )

    def _reject(self, request: Request, code: str, text: str) -> None:
        self.blocks_rejected += 1
        logger.warning("%s: %s", self.name, text)
        self._requests().reply(request, Error(code=code, message=text, in_reply_to=request.decoded.envelope.seq))
