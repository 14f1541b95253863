"""ZeroMQ transport: sockets with deliberate options, endpoints, checked receiving."""

from __future__ import annotations

from closedloop.transport.endpoints import (
    LOOPBACK,
    Endpoints,
    OPEN_EPHYS_PORTS,
    check_endpoint,
    free_tcp_port,
    free_tcp_ports,
    inproc_endpoint,
    ipc_endpoint,
    random_tcp_endpoint,
    tcp_endpoint,
)
from closedloop.transport.receiver import RateLimitedLog, Receiver, ReceiverStats
from closedloop.transport.security import (
    PLAIN,
    SocketSecurity,
    current_security,
    rig_security,
    use_rig_security,
    use_security,
)
from closedloop.transport.sequence import SeqResult, SeqStatus, SequenceTracker, SourceCounts
from closedloop.transport.sockets import (
    DEFAULT_LINGER_MS,
    DEFAULT_RCVHWM,
    DEFAULT_SNDHWM,
    REQUEST_HWM,
    Publisher,
    Request,
    RequestClient,
    RequestServer,
    Subscriber,
    open_socket,
)

__all__ = [
    "DEFAULT_LINGER_MS",
    "DEFAULT_RCVHWM",
    "DEFAULT_SNDHWM",
    "Endpoints",
    "LOOPBACK",
    "OPEN_EPHYS_PORTS",
    "PLAIN",
    "REQUEST_HWM",
    "Publisher",
    "RateLimitedLog",
    "Receiver",
    "ReceiverStats",
    "Request",
    "RequestClient",
    "RequestServer",
    "SeqResult",
    "SeqStatus",
    "SequenceTracker",
    "SocketSecurity",
    "SourceCounts",
    "Subscriber",
    "check_endpoint",
    "current_security",
    "free_tcp_port",
    "free_tcp_ports",
    "inproc_endpoint",
    "ipc_endpoint",
    "open_socket",
    "random_tcp_endpoint",
    "rig_security",
    "tcp_endpoint",
    "use_rig_security",
    "use_security",
]
