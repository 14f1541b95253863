"""The ZAP authenticator and the refusal counter of one zmq context.

ZeroMQ asks a ZAP handler (pyzmq's `zmq.auth.thread.ThreadAuthenticator`, one per
context) whether a CURVE client's public key may connect; ours allows the rig's role
keys and names the peer by its role (the ``User-Id`` every received frame carries).
A peer with an unknown key is refused by ZAP; one without CURVE at all fails the
handshake before ZAP is asked.  Both show as handshake failures on the socket's
monitor, which a background thread reads: `Guard.refused` counts them per endpoint and
every refusal is logged (rate-limited).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import parse_monitor_message

from closedloop.transport.endpoints import inproc_endpoint
from closedloop.transport.receiver import RateLimitedLog

logger = logging.getLogger(__name__)

#: The ZAP domain of our binding sockets.
DOMAIN = "closedloop"
_REFUSALS = zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
_EVENTS = _REFUSALS | zmq.EVENT_MONITOR_STOPPED


class _RoleAuthenticator(ThreadAuthenticator):
    """Allows the rig's keys; the User-Id of a peer is its role name."""

    def __init__(self, context: zmq.Context, peers: dict[bytes, str]):
        super().__init__(context, log=logging.getLogger("closedloop.transport.zap"))
        self.peers = dict(peers)

    def callback(self, domain: str, key: bytes) -> bool:  # the credentials provider
        return key in self.peers

    def curve_user_id(self, client_public_key: bytes) -> str:
        from zmq.utils import z85

        return self.peers.get(z85.encode(client_public_key), "unknown")


class Guard:
    """Authenticator and refusal monitor of one context (see `guard_for`)."""

    def __init__(self, context: zmq.Context, peers: dict[bytes, str]):
        self.context = context
        self.authenticator = _RoleAuthenticator(context, peers)
        self.authenticator.start()
        self.authenticator.configure_curve_callback(DOMAIN, credentials_provider=self.authenticator)
        self.refusals: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._new: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._log = RateLimitedLog(logger, 5.0)
        self._thread = threading.Thread(target=self._watch, name="closedloop-refusals", daemon=True)
        self._thread.start()

    def allow(self, peers: dict[bytes, str]) -> None:
        """Add allowed peers (a second rig key set in one process, e.g. tests)."""
        self.authenticator.peers.update(peers)

    def watch(self, socket: zmq.Socket, endpoint: str) -> None:
        """Count refused connections to ``socket`` (call from the socket's own thread)."""
        # a name of its own: a socket's id() and its thread's ident both come back for the next
        # socket, while the closed one's monitor may still hold the old name ("Address already in use")
        address = inproc_endpoint("closedloop-monitor")
        socket.monitor(address, _EVENTS)
        self._new.put((address, endpoint))

    def refused(self, endpoint: str | None = None) -> int:
        """Refused connection attempts to ``endpoint`` (all endpoints when ``None``)."""
        with self._lock:
            return sum(self.refusals.values()) if endpoint is None else self.refusals[endpoint]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.authenticator.stop()

    def _watch(self) -> None:
        poller = zmq.Poller()
        monitors: dict[zmq.Socket, str] = {}
        try:
            while not self._stop.is_set():
                if not monitors:  # pyzmq's poll returns at once with no socket: wait for one instead of spinning
                    try:
                        self._monitor(*self._new.get(timeout=0.1), monitors, poller)
                    except queue.Empty:
                        continue
                while not self._new.empty():
                    self._monitor(*self._new.get(), monitors, poller)
                for pair, _ in poller.poll(100):
                    self._read(pair, monitors, poller)
        except zmq.ContextTerminated:
            pass
        finally:
            for pair in monitors:
                pair.close(0)

    def _monitor(self, address: str, endpoint: str, monitors: dict[zmq.Socket, str], poller: zmq.Poller) -> None:
        try:
            pair = self.context.socket(zmq.PAIR)
        except zmq.ZMQError as error:  # e.g. the context's socket limit: the socket goes unwatched, the rest on
            logger.warning("%s: refused connections are not counted: %s", endpoint, error)
            return
        pair.linger = 0
        pair.connect(address)
        poller.register(pair, zmq.POLLIN)
        monitors[pair] = endpoint

    def _read(self, pair: zmq.Socket, monitors: dict[zmq.Socket, str], poller: zmq.Poller) -> None:
        try:
            event = parse_monitor_message(pair.recv_multipart(zmq.NOBLOCK))
        except (zmq.Again, ValueError):
            return
        endpoint = monitors[pair]
        if event["event"] == zmq.EVENT_MONITOR_STOPPED:
            poller.unregister(pair)
            del monitors[pair]
            pair.close(0)
            return
        with self._lock:
            self.refusals[endpoint] += 1
            count = self.refusals[endpoint]
        self._log.warning(
            f"refused {endpoint}",
            "%s: refused a connection without an allowed key (%s); %d refused so far",
            endpoint,
            _why(event["event"]),
            count,
        )


def _why(event: int) -> str:
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return "unknown key"
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        return "no CURVE"
    return "handshake failed"


_guards: dict[int, Guard] = {}
_guards_lock = threading.Lock()


def guard_for(context: zmq.Context, peers: dict[bytes, str]) -> Guard:
    """The context's `Guard`, started on first use; ``peers`` are added to its allowed keys."""
    with _guards_lock:
        guard = _guards.get(id(context))
        if guard is None or guard.context is not context:
            guard = _guards[id(context)] = Guard(context, peers)
        else:
            guard.allow(peers)
        return guard


def stop_guard(context: zmq.Context) -> None:
    """Stop a context's guard (before terminating a context of one's own)."""
    with _guards_lock:
        guard = _guards.pop(id(context), None)
    if guard is not None:
        guard.stop()


def refused_connections(endpoint: str | None = None, context: zmq.Context | None = None) -> int:
    """Refused connection attempts counted in ``context`` (default: the shared instance)."""
    guard = _guards.get(id(context or zmq.Context.instance()))
    return 0 if guard is None else guard.refused(endpoint)
