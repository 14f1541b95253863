"""ZeroMQ transport: sockets with deliberate options, endpoints, checked receiving."""

from __future__ import annotations

from closedloop.transport.endpoints import (
    LOOPBACK, Endpoints, OPEN_EPHYS_PORTS, check_endpoint, free_tcp_port, inproc_endpoint, ipc_endpoint,
    random_tcp_endpoint, tcp_endpoint,
)
from closedloop.transport.receiver import RateLimitedLog, Receiver, ReceiverStats
from closedloop.transport.sequence import SeqResult, SeqStatus, SequenceTracker, SourceCounts
from closedloop.transport.sockets import (
    DEFAULT_LINGER_MS, DEFAULT_RCVHWM, DEFAULT_SNDHWM, REQUEST_HWM, Publisher, Request, RequestClient,
    RequestServer, Subscriber, open_socket,
)

__all__ = [
    "DEFAULT_LINGER_MS", "DEFAULT_RCVHWM", "Endpoints", "DEFAULT_SNDHWM", "LOOPBACK", "OPEN_EPHYS_PORTS",
    "REQUEST_HWM", "Publisher", "RateLimitedLog", "Receiver", "ReceiverStats", "Request", "RequestClient",
    "RequestServer", "SeqResult", "SeqStatus", "SequenceTracker", "SourceCounts", "Subscriber",
    "check_endpoint", "free_tcp_port", "inproc_endpoint", "ipc_endpoint", "open_socket",
    "random_tcp_endpoint", "tcp_endpoint",
]
