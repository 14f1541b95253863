"""The receiving thread: owns the SUB sockets and feeds the monitor's state.

One thread polls all four streams and hands each message to `MonitorState.ingest`; the
window only ever reads the state, so a slow repaint never holds up receiving (and a
flood of spikes never freezes the window: each poll round takes a bounded number of
messages per stream).  The sockets are read-only subscribers: ZeroMQ reconnects them by
itself when a publisher goes away and comes back, and a restarted publisher shows up as
a sequence restart in the counters, not as an error.
"""

from __future__ import annotations

import logging
import threading

import zmq

from closedloop.config.rig import Ports
from closedloop.monitor.health import STREAMS
from closedloop.monitor.state import MonitorState
from closedloop.transport import Subscriber

logger = logging.getLogger(__name__)

#: Messages taken from one stream per poll round before the others get a turn.
BATCH = 500
POLL_MS = 100


def rig_endpoints(network) -> dict[str, str]:
    """Endpoints of the monitored streams from a rig's `Network` section."""
    return {name: network.endpoint(name) for name in STREAMS}


def host_endpoints(host: str, ports: dict[str, int] | None = None) -> dict[str, str]:
    """Endpoints of the monitored streams on ``host`` (default rig ports unless given)."""
    ports = ports or Ports().named()
    return {name: f"tcp://{host}:{ports[name]}" for name in STREAMS}


class StreamReceiver:
    """Subscribe to ``endpoints`` (stream name → endpoint) and feed ``state`` on a thread.

    Parameters
    ----------
    endpoints
        Stream name (a key of `closedloop.monitor.health.STREAMS`) → ``tcp://``,
        ``ipc://`` or ``inproc://`` endpoint of its publisher.
    state
        Where messages go.
    context
        zmq context (``inproc://`` endpoints need the publishers' context).
    """

    def __init__(self, endpoints: dict[str, str], state: MonitorState, *, context: zmq.Context | None = None):
        unknown = sorted(set(endpoints) - set(STREAMS))
        if unknown:
            raise ValueError(f"unknown stream(s) {unknown}; the monitor listens to {sorted(STREAMS)}")
        self.state = state
        self.endpoints = dict(endpoints)
        self._context = context
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitor-receiver", daemon=True)
        self.error: BaseException | None = None
        for name, endpoint in self.endpoints.items():
            state.stream(name, endpoint)

    def start(self, timeout_s: float = 5.0) -> StreamReceiver:
        """Start receiving; returns once the sockets are connected."""
        self._thread.start()
        self._ready.wait(timeout_s)
        if self.error is not None:
            raise self.error
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        subscribers: dict[str, Subscriber] = {}
        try:
            for name, endpoint in self.endpoints.items():
                subscribers[name] = Subscriber(endpoint, name=f"monitor {name}", context=self._context)
        except (OSError, ValueError) as error:
            self.error = error
            for subscriber in subscribers.values():
                subscriber.close()
            self._ready.set()
            return
        self._ready.set()
        poller = zmq.Poller()
        by_socket = {}
        for name, subscriber in subscribers.items():
            poller.register(subscriber.socket, zmq.POLLIN)
            by_socket[subscriber.socket] = name
        try:
            while not self._stop.is_set():
                for socket, _ in poller.poll(POLL_MS):
                    name = by_socket[socket]
                    for decoded in subscribers[name].drain(BATCH):
                        self.state.ingest(name, decoded.message)
                for name, subscriber in subscribers.items():
                    self.state.update_transport(name, subscriber.stats.as_dict())
        except Exception:  # the monitor must never take the session down; log and stop receiving
            logger.exception("monitor receiver stopped")
        finally:
            for subscriber in subscribers.values():
                subscriber.close()
