"""Thin pyzmq wrappers: PUB/SUB for streams, ROUTER/DEALER for requests.

Every socket gets its high-water marks and linger set on purpose (pyzmq's defaults —
1000 messages, linger forever — lose spikes silently or hang a shutdown).  Senders
number their messages per source; receivers go through a `Receiver`, so bad input is
counted and logged, never raised.  Only the codec builds or reads frames.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from collections.abc import Iterable

import zmq

from closedloop.messages.base import Message
from closedloop.messages.codec import CodecError, Decoded, encode, peek_seq, split_routing, with_routing
from closedloop.messages.envelope import MAX_MESSAGE_BYTES
from closedloop.messages.types import Error
from closedloop.runtime.clocks import Deadline
from closedloop.transport.endpoints import check_endpoint
from closedloop.transport.guard import refused_connections
from closedloop.transport.receiver import RateLimitedLog, Receiver
from closedloop.transport.security import SocketSecurity, current_security

logger = logging.getLogger(__name__)

# Streams: spikes travel in batches of ~1–10 ms, so 10 000 messages is 10–100 s of a
# stalled peer before PUB starts dropping (and memory stays bounded by HWM × batch).
DEFAULT_SNDHWM = 10_000
DEFAULT_RCVHWM = 10_000
# A publisher gets a second to flush its last messages on close, never longer.
DEFAULT_LINGER_MS = 1000
# Requests: few and large; a client must find out quickly that no server is there.
REQUEST_HWM = 100


def open_socket(
    kind: int,
    endpoint: str,
    *,
    bind: bool,
    context: zmq.Context | None = None,
    sndhwm: int | None = None,
    rcvhwm: int | None = None,
    linger_ms: int = 0,
    options: dict[int, int] | None = None,
    max_bytes: int | None = None,
    security: SocketSecurity | None = None,
) -> tuple[zmq.Socket, str]:
    """Create a socket with its options set *before* bind/connect; return it and its endpoint.

    When binding to ``tcp://HOST:*`` the returned endpoint names the port picked.
    ``max_bytes`` caps every received frame (ZMQ_MAXMSGSIZE: a peer sending a bigger one
    is disconnected before it is buffered).  ``security`` defaults to the process's
    (`closedloop.transport.security.current_security`).
    """
    check_endpoint(endpoint)
    security = security or current_security()
    if security.curve and rcvhwm is not None and rcvhwm < 2:
        rcvhwm = 2  # with CURVE + ZAP a receive high-water mark of 1 never delivers anything (libzmq 4.3.5)
    socket = (context or zmq.Context.instance()).socket(kind)
    try:
        socket.setsockopt(zmq.LINGER, linger_ms)
        if sndhwm is not None:
            socket.setsockopt(zmq.SNDHWM, sndhwm)
        if rcvhwm is not None:
            socket.setsockopt(zmq.RCVHWM, rcvhwm)
        if max_bytes is not None:
            socket.setsockopt(zmq.MAXMSGSIZE, int(max_bytes))
        for option, value in (options or {}).items():
            socket.setsockopt(option, value)
        security.apply(socket, endpoint, bind=bind)
        if bind:
            socket.bind(endpoint)
            endpoint = socket.getsockopt_string(zmq.LAST_ENDPOINT) or endpoint
            security.watch(socket, endpoint)
        else:
            socket.connect(endpoint)
    except zmq.ZMQError as error:
        socket.close(0)
        raise OSError(f"cannot {'bind' if bind else 'connect'} {endpoint}: {error}") from None
    return socket, endpoint


def peer_identity(frame: Any) -> str:
    """The authenticated identity (ZAP ``User-Id``: the rig role) a received frame came from; "" when none."""
    try:
        return frame.get("User-Id") or ""
    except (AttributeError, zmq.ZMQError):  # plain bytes, or a socket without ZAP
        return ""


class _Socket:
    """Shared close / context-manager behaviour."""

    socket: zmq.Socket
    endpoint: str

    def close(self) -> None:
        if not self.socket.closed:
            self.socket.close()

    @property
    def refused(self) -> int:
        """Connections to this (binding, CURVE) socket refused for want of an allowed key."""
        return refused_connections(self.endpoint, self.socket.context)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Numbered:
    """Per-source sequence numbering for everything a socket sends."""

    def _init_sender(self, source: str, session: str) -> None:
        self.source = source
        self.session = session
        self.seq = 0  # the number the next message gets

    def _frames(
        self, message: Message, *, t_ns: int | None, reply_to: int | None = None, topic: str | None = None
    ) -> tuple[list[Any], int]:
        seq = self.seq
        frames = encode(
            message, source=self.source, seq=seq, session=self.session, t_ns=t_ns, reply_to=reply_to, topic=topic
        )
        return frames, seq


class _Receiving(_Socket):
    receiver: Receiver

    def _recv_frames(self, timeout_ms: int | None) -> list[Any] | None:
        if self.socket.poll(-1 if timeout_ms is None else timeout_ms, zmq.POLLIN) == 0:
            return None
        try:
            return self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None

    def recv(self, timeout_ms: int | None = 0) -> Decoded | None:
        """The next valid message within ``timeout_ms`` (None = wait forever), else ``None``.

        Rejected messages are counted and skipped; a timeout of 0 only looks.
        """
        deadline = Deadline.after_ms(timeout_ms)
        while True:
            frames = self._recv_frames(deadline.remaining_ms())
            if frames is None:
                return None
            decoded = self.receiver.accept(frames, peer=peer_identity(frames[0]) if frames else "")
            if decoded is not None:
                return decoded
            if deadline.expired():
                return None

    @property
    def stats(self):
        """The receiver's counters (`closedloop.transport.receiver.ReceiverStats`)."""
        return self.receiver.stats


class Publisher(_Socket, _Numbered):
    """PUB socket for one source's stream (spikes, sync events, stimulus reports…).

    Parameters
    ----------
    endpoint
        Where to bind (default) or connect.
    source
        Name that receivers track sequence numbers by.
    session
        Recording-session id carried in every envelope.
    sndhwm
        Messages queued per subscriber before PUB drops (it never blocks).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        source: str,
        session: str = "",
        bind: bool = True,
        sndhwm: int = DEFAULT_SNDHWM,
        linger_ms: int = DEFAULT_LINGER_MS,
        context: zmq.Context | None = None,
        security: SocketSecurity | None = None,
    ):
        self.socket, self.endpoint = open_socket(
            zmq.PUB, endpoint, bind=bind, context=context, sndhwm=sndhwm, linger_ms=linger_ms, security=security
        )
        self._init_sender(source, session)

    def send(self, message: Message, *, t_ns: int | None = None, topic: str | None = None) -> int:
        """Publish a message; returns its sequence number.  Do not modify its arrays afterwards."""
        frames, seq = self._frames(message, t_ns=t_ns, topic=topic)
        self.socket.send_multipart(frames, copy=False)
        self.seq += 1
        return seq


class Subscriber(_Receiving):
    """SUB socket: receives, checks and counts (see `Receiver`).

    Parameters
    ----------
    topics
        Message classes or topic strings to receive; empty = everything.
    bind
        Bind instead of connect (a subscriber may bind and publishers connect).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        topics: Iterable[str | type[Message]] = (),
        bind: bool = False,
        rcvhwm: int = DEFAULT_RCVHWM,
        max_bytes: int = MAX_MESSAGE_BYTES,
        name: str | None = None,
        context: zmq.Context | None = None,
        security: SocketSecurity | None = None,
    ):
        self.socket, self.endpoint = open_socket(
            zmq.SUB, endpoint, bind=bind, context=context, rcvhwm=rcvhwm, max_bytes=max_bytes, security=security
        )
        names = [t if isinstance(t, str) else t.type_name() for t in topics] or [""]
        for topic in names:
            self.socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self.receiver = Receiver(name or f"SUB {self.endpoint}", max_bytes=max_bytes)

    def drain(self, max_messages: int = 10_000) -> list[Decoded]:
        """Every valid message already queued (up to ``max_messages``), without waiting."""
        out: list[Decoded] = []
        while len(out) < max_messages:
            decoded = self.recv(0)
            if decoded is None:
                break
            out.append(decoded)
        return out


@dataclass(frozen=True, eq=False)
class Request:
    """A request received by a `RequestServer`: who sent it and what.

    ``user`` is the sender's authenticated identity (its rig role, e.g. ``"runner"``)
    on a CURVE socket, ``""`` on a plain one.
    """

    peer: bytes
    decoded: Decoded
    user: str = ""


class RequestServer(_Receiving, _Numbered):
    """ROUTER socket answering requests from any number of `RequestClient` s.

    A request that cannot be decoded is answered with an `Error` (its code is the
    rejection kind: ``malformed``, ``wrong_schema``, ``oversized``, ``unknown_type``) so
    its sender never waits for a timeout.  With ``only_from`` (a rig role) a CURVE
    socket answers requests of any other authenticated peer with ``Error("not_allowed")``.

    Parameters
    ----------
    hwm
        Messages queued per peer, each way; with ``max_bytes`` this bounds the memory
        one peer's requests can take here: ``(hwm + 1) × max_bytes``.
    max_bytes
        Largest request accepted (a bigger frame disconnects its sender).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        source: str,
        session: str = "",
        bind: bool = True,
        hwm: int = REQUEST_HWM,
        max_bytes: int = MAX_MESSAGE_BYTES,
        context: zmq.Context | None = None,
        security: SocketSecurity | None = None,
        only_from: str | None = None,
    ):
        # ROUTER_MANDATORY: a reply to a vanished client fails loudly instead of vanishing.
        self.socket, self.endpoint = open_socket(
            zmq.ROUTER,
            endpoint,
            bind=bind,
            context=context,
            sndhwm=hwm,
            rcvhwm=hwm,
            options={zmq.ROUTER_MANDATORY: 1},
            max_bytes=max_bytes,
            security=security,
        )
        self._init_sender(source, session)
        self.receiver = Receiver(f"ROUTER {self.endpoint}", max_bytes=max_bytes)
        self.secured = (security or current_security()).curve and not self.endpoint.startswith("inproc://")
        self.only_from = only_from
        self.undeliverable = 0
        self.not_allowed = 0
        self.error_replies = 0
        self._log = RateLimitedLog(logger)

    def recv(self, timeout_ms: int | None = 0) -> Request | None:  # type: ignore[override]  # a request carries its peer
        """The next valid request within ``timeout_ms``, else ``None`` (bad ones are answered with `Error`)."""
        deadline = Deadline.after_ms(timeout_ms)
        while True:
            frames = self._recv_frames(deadline.remaining_ms())
            if frames is None:
                return None
            request = self._accept(frames)
            if request is not None:
                return request
            if deadline.expired():
                return None

    def _accept(self, frames: list[Any]) -> Request | None:
        try:
            peer, rest = split_routing(frames)
        except CodecError:
            return None  # nothing to reply to
        user = peer_identity(frames[0])
        decoded = self.receiver.accept(rest, peer=user)
        if decoded is None:
            error = self.receiver.rejection
            self._send_error(
                peer,
                peek_seq(rest),
                error.kind if error else "malformed",
                f"request not understood: {error.message if error else 'rejected'}",
            )
            return None
        if self.secured and self.only_from is not None and user != self.only_from:
            self.not_allowed += 1
            self._log.warning(
                "not_allowed",
                "%s: refused a %s from %r (authenticated as %r; only %r may send requests here); %d refused so far",
                self.receiver.name,
                decoded.envelope.type,
                decoded.envelope.source,
                user,
                self.only_from,
                self.not_allowed,
            )
            self._send_error(
                peer,
                decoded.envelope.seq,
                "not_allowed",
                f"only the rig's {self.only_from} may send requests here, not {user or 'anyone else'}",
            )
            return None
        return Request(peer, decoded, user)

    def _send_error(self, peer: bytes, seq: int | None, code: str, text: str) -> None:
        self.error_replies += 1
        self._send(peer, Error(code=code, message=text, in_reply_to=seq), reply_to=seq)

    def reply(self, request: Request, message: Message, *, t_ns: int | None = None) -> bool:
        """Send ``message`` to the request's peer; False (counted, logged) if it is gone."""
        return self._send(request.peer, message, reply_to=request.decoded.envelope.seq, t_ns=t_ns)

    def _send(self, peer: bytes, message: Message, *, reply_to: int | None, t_ns: int | None = None) -> bool:
        frames, _ = self._frames(message, t_ns=t_ns, reply_to=reply_to)
        try:
            self.socket.send_multipart(with_routing(peer, frames), zmq.NOBLOCK, copy=False)
        except (zmq.Again, zmq.ZMQError) as error:
            self.undeliverable += 1
            self._log.warning(
                "undeliverable",
                "%s: reply to peer %r not delivered (%s); %d so far",
                self.receiver.name,
                peer[:16],
                error,
                self.undeliverable,
            )
            return False
        self.seq += 1
        return True


class RequestClient(_Receiving, _Numbered):
    """DEALER socket sending requests to a `RequestServer` without ever blocking.

    With no server connected a send fails at once (``IMMEDIATE``) instead of queueing,
    so a caller can carry on when the model server is gone.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        source: str,
        session: str = "",
        bind: bool = False,
        hwm: int = REQUEST_HWM,
        max_bytes: int = MAX_MESSAGE_BYTES,
        context: zmq.Context | None = None,
        security: SocketSecurity | None = None,
    ):
        self.socket, self.endpoint = open_socket(
            zmq.DEALER,
            endpoint,
            bind=bind,
            context=context,
            sndhwm=hwm,
            rcvhwm=hwm,
            options={zmq.IMMEDIATE: 1},
            max_bytes=max_bytes,
            security=security,
        )
        self._init_sender(source, session)
        self.receiver = Receiver(f"DEALER {self.endpoint}", max_bytes=max_bytes)
        self.unsent = 0
        self.stale_replies = 0

    def send(self, message: Message, *, t_ns: int | None = None) -> int | None:
        """Send a request; its sequence number, or ``None`` (counted) if no server takes it now."""
        frames, seq = self._frames(message, t_ns=t_ns)
        try:
            self.socket.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self.unsent += 1
            return None
        self.seq += 1
        return seq

    def request(self, message: Message, timeout_ms: int) -> Decoded | None:
        """Send and wait for the reply to *this* request; ``None`` if unsent or no reply in time.

        Replies to earlier requests that arrive meanwhile are counted as stale and dropped.
        """
        seq = self.send(message)
        if seq is None:
            return None
        deadline = Deadline.after_ms(timeout_ms)
        while True:
            reply = self.recv(deadline.remaining_ms())
            if reply is None:
                return None
            if reply.envelope.reply_to == seq:
                return reply
            self.stale_replies += 1
