"""The runner's side of the model server: requests that never block the loop, and a backlog.

Requests go out on a `RequestClient` (DEALER); waiting for a reply is a generator that
yields between polls, so the runner keeps draining its streams meanwhile.  A request
that cannot be sent or gets no reply in time marks the server *down*: presentation
goes on, and every `FitRequest` not yet accepted stays in `ModelLink.backlog`, to be
delivered in order by `ModelLink.flush`, which the runner calls at each block (the
probe).  A server that comes back *restarted* (its replies start a new sequence, or
its model version went backwards) has lost its data: the runner is told
(`ModelLink.restarted`) so it can send everything again.

``model_events`` (the server's PUB) is drained on every poll: the newest
`ModelUpdated` and the last published `Error` are kept.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable, Generator

import numpy as np

from closedloop.messages import Accepted, Decoded, Error, FitRequest, Message, ModelUpdated, PredictRequest
from closedloop.transport import RequestClient, Subscriber
from closedloop.transport.receiver import RateLimitedLog

logger = logging.getLogger(__name__)

Waiting = Generator[None, None, "Decoded | None"]


#: A liveness check: a PredictRequest with no images (the server answers it at once).
_PING = PredictRequest(images=np.zeros((0, 1, 1), np.float32))


class ModelLink:
    """Requests to and events from the model server (see module notes).

    Parameters
    ----------
    model_endpoint, events_endpoint
        The server's ROUTER and PUB, connected to.
    request_timeout_s
        Longest wait for the reply to a `FitRequest` before the server counts as down.
    name, session
        Message source and session id.
    """

    def __init__(
        self,
        model_endpoint: str,
        events_endpoint: str,
        *,
        request_timeout_s: float = 2.0,
        name: str = "runner",
        session: str = "",
    ):
        self.client = RequestClient(model_endpoint, source=name, session=session)
        # every topic: the server numbers all its messages in one sequence (gap checks)
        self.events = Subscriber(events_endpoint, name=f"{name} model events")
        self.request_timeout_s = float(request_timeout_s)
        self.name = name
        self.up: bool | None = None  # None until the first exchange
        self.backlog: deque[tuple[Callable[[], FitRequest], Callable[[FitRequest], None] | None]] = deque()
        self.newest: ModelUpdated | None = None
        self.last_error: Error | None = None
        self.errors_seen = 0
        self.known_version = 0  # highest version in the server's Accepted replies
        self.version_floor = 0  # a resumed session: the first version its new models may take
        self.restarted = False
        self.on_restart: Callable[[], None] | None = None  # called when a restart is noticed
        self._restarts_seen = 0
        self._log = RateLimitedLog(logger, 5.0)

    def close(self) -> None:
        self.client.close()
        self.events.close()

    # --- events -------------------------------------------------------------------

    def poll(self) -> None:
        for decoded in self.events.drain(1000):
            message = decoded.message
            if isinstance(message, ModelUpdated):
                if self.newest is None or message.version >= self.newest.version:
                    self.newest = message
            elif isinstance(message, Error):
                self.last_error = message
                self.errors_seen += 1
                logger.warning("%s: the model server reported %s: %s", self.name, message.code, message.message)

    def assume(self, update: ModelUpdated) -> None:
        """Take ``update`` as the newest model until the server says otherwise (a resumed session's
        journal: its newest fit decides a loop's stop rule)."""
        self.newest = update
        self.known_version = int(update.version)

    def resume_session(self, newest: ModelUpdated | None, next_version: int) -> None:
        """A resumed session: its newest recorded fit (see `assume`) and the first model version
        its new fits may take, sent with every `FitRequest` so that any server, also one
        started separately, never reuses a recorded version."""
        if newest is not None:
            self.assume(newest)
        self.version_floor = int(next_version)

    @property
    def version(self) -> int:
        return 0 if self.newest is None else self.newest.version

    def saw_accepted(self, version: int) -> None:
        """Note the version in an `Accepted`; a lower one than before means the server restarted.

        (Replies of one server come in order and their versions never go down; the
        versions of ModelUpdated events lag behind them, so only replies are compared.)
        """
        if self.restarted:
            return
        if version < self.known_version:
            self._server_restarted(f"its model version went back from {self.known_version} to {version}")
        else:
            self.known_version = version

    def _server_restarted(self, why: str) -> None:
        if not self.restarted:
            logger.warning(
                "%s: the model server restarted (%s); everything recorded will be sent again", self.name, why
            )
        self.restarted = True
        self.newest = None
        if self.on_restart is not None:
            self.on_restart()

    def acknowledge_restart(self) -> None:
        """The runner has queued everything again (after a restart: versions start afresh)."""
        if self.restarted:
            self.restarted = False
            self.known_version = 0

    # --- requests -------------------------------------------------------------------

    def request(self, message: Message, timeout_s: float, *, ping_every_s: float | None = None) -> Waiting:
        """Send ``message`` and yield until its reply (returned) or ``None`` (down).

        For a request that may take long (a synthesis), ``ping_every_s`` checks meanwhile
        that the server still answers, so a server that died is noticed in seconds, not
        at ``timeout_s``.
        """
        if isinstance(message, FitRequest) and self.version_floor > message.version_floor:
            message = dataclasses.replace(message, version_floor=self.version_floor)
        seq = self.client.send(message)
        if seq is None:
            self._down("nobody is listening on its endpoint")
            return None
        deadline = time.monotonic() + timeout_s
        ping_gap = ping_every_s or 0.0  # only used when pings are asked for
        ping_seq, ping_at = None, time.monotonic() + ping_gap
        while True:
            reply = self.client.recv(0)
            while reply is not None:
                if reply.envelope.reply_to == seq:
                    self._check_restart()
                    self.up = True
                    return reply
                if ping_seq is not None and reply.envelope.reply_to == ping_seq:
                    ping_seq, ping_at = None, time.monotonic() + ping_gap
                else:
                    self.client.stale_replies += 1
                reply = self.client.recv(0)
            now = time.monotonic()
            if now >= deadline:
                self._down(f"no reply to a {message.type_name()} within {timeout_s:g} s")
                return None
            if ping_every_s is not None and now >= ping_at:
                if ping_seq is not None:  # the last check went unanswered for a whole request timeout
                    self._down(f"it stopped answering while a {message.type_name()} was pending")
                    return None
                ping_seq, ping_at = self.client.send(_PING), now + self.request_timeout_s
                if ping_seq is None:
                    self._down(f"nobody is listening on its endpoint any more (a {message.type_name()} was pending)")
                    return None
            yield

    def _check_restart(self) -> None:
        restarts = self.client.receiver.stats.restarts
        if restarts > self._restarts_seen:
            self._restarts_seen = restarts
            self._server_restarted("its replies started a new sequence")

    def _down(self, why: str) -> None:
        if self.up is not False:
            logger.warning(
                "%s: model server unavailable (%s); presenting and recording go on, %d fit request(s) kept for later",
                self.name,
                why,
                len(self.backlog),
            )
        self.up = False

    def ping(self) -> Waiting:
        """Ask the server something harmless (a PredictRequest with no images); its reply or ``None``.

        Any reply means it is alive; `Predictions` also say its newest model version.
        """
        return (yield from self.request(_PING, self.request_timeout_s))

    def submit(self, build: Callable[[], FitRequest], accepted: Callable[[FitRequest], None] | None = None) -> None:
        """Queue a FitRequest, built when sent (so it can include images the server still
        lacks); ``accepted`` is called with it once the server accepts it."""
        self.backlog.append((build, accepted))

    def flush(self) -> Waiting:
        """Deliver the backlog in order; returns the last reply, ``None`` when the server is down.

        A request the server answers with `Error` is dropped (it would be refused
        again) and logged.
        """
        last: Decoded | None = None
        if not self.backlog and self.up is False:  # nothing to send: ask whether it is back
            return (yield from self.ping())
        while self.backlog:
            build, accepted = self.backlog[0]
            message = build()
            reply = yield from self.request(message, self.request_timeout_s)
            if reply is None:
                return None
            answer = reply.message
            if isinstance(answer, Accepted):
                self.saw_accepted(answer.version)  # may notice a restart (and forget what it had)
            self.backlog.popleft()
            last = reply
            if isinstance(answer, Accepted):
                if accepted is not None:
                    accepted(message)  # the (possibly restarted) server has this one now
            elif not self.restarted:
                text = f"{answer.code}: {answer.message}" if isinstance(answer, Error) else answer.type_name()
                logger.error(
                    "%s: the model server refused the fit request of block %d (%s); dropped",
                    self.name,
                    message.block,
                    text,
                )
            if self.restarted:
                return reply  # the caller queues everything again before going on
        return last


def empty_fit_request(block: int, unit_ids: np.ndarray) -> FitRequest:
    """A FitRequest with no trials and ``refit=True``: how a fit block asks for a refit."""
    return FitRequest(
        block=block,
        stimulus_ids=np.zeros(0, np.int64),
        rates=np.zeros((0, len(unit_ids)), np.float64),
        unit_ids=np.asarray(unit_ids, np.int64),
        refit=True,
    )
