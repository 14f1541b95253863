"""Endpoint strings (loopback TCP, inproc, ipc) and `Endpoints`, where each socket of the loop is.

Components run as threads talk over ``inproc://`` (one shared zmq context), as
processes on one machine over ``ipc://`` or ``tcp://127.0.0.1:PORT``.  Binding to
``tcp://127.0.0.1:*`` lets ZeroMQ pick a free port without a race; the sockets in
`closedloop.transport.sockets` report the endpoint actually bound.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import uuid
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the rig's type only: the transport does not depend on the config package
    from closedloop.config.rig import Rig

LOOPBACK = "127.0.0.1"
# Open Ephys's ZMQ Interface and Event Broadcaster defaults: never ours.
OPEN_EPHYS_PORTS = (5556, 5557)
_SCHEMES = ("tcp://", "ipc://", "inproc://")
# Linux limits a unix socket path to 107 bytes.
_MAX_IPC_PATH = 107
# Ports `free_tcp_ports` handed out lately, oldest first (a dict keeps insertion order).
_REMEMBERED_PORTS = 4096
_MAX_SKIPPED_PORTS = 1000
_drawn_ports: dict[int, None] = {}
_drawn_lock = threading.Lock()


def tcp_endpoint(port: int | None = None, host: str = LOOPBACK) -> str:
    """``tcp://host:port``; ``port=None`` gives ``tcp://host:*`` (bind to any free port)."""
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"port must be 1..65535, got {port}")
    return f"tcp://{host}:{'*' if port is None else port}"


def free_tcp_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago (prefer binding to ``tcp://host:*``)."""
    return free_tcp_ports(1, host)[0]


def free_tcp_ports(n: int, host: str = LOOPBACK) -> list[int]:
    """``n`` distinct TCP ports that were free a moment ago and that this process has not drawn
    recently.

    The kernel may hand the same free port to two draws in a row, so two endpoints drawn one
    after the other could collide when both are bound; ports drawn before are therefore
    skipped (the last `_REMEMBERED_PORTS` of them).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    probes: list[socket.socket] = []
    ports: list[int] = []
    with _drawn_lock:
        try:
            while len(ports) < n:
                if len(probes) >= n + _MAX_SKIPPED_PORTS:
                    raise OSError(f"no free TCP port on {host} that was not drawn before")
                probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                probes.append(probe)  # held open so this draw never sees the same port twice
                probe.bind((host, 0))
                port = probe.getsockname()[1]
                if port not in _drawn_ports:
                    ports.append(port)
        finally:
            for probe in probes:
                probe.close()
        for port in ports:
            _drawn_ports[port] = None
        while len(_drawn_ports) > _REMEMBERED_PORTS:
            del _drawn_ports[next(iter(_drawn_ports))]
    return ports


def random_tcp_endpoint(host: str = LOOPBACK) -> str:
    """``tcp://host:PORT`` with a port that was free a moment ago."""
    return tcp_endpoint(free_tcp_port(host), host)


def inproc_endpoint(name: str | None = None) -> str:
    """A unique ``inproc://`` endpoint (threads sharing one zmq context)."""
    return f"inproc://{name or 'closedloop'}-{uuid.uuid4().hex[:12]}"


def ipc_endpoint(name: str | None = None, directory: str | None = None) -> str:
    """A unique ``ipc://`` endpoint in ``directory`` (default: the temp folder)."""
    folder = directory or tempfile.gettempdir()
    path = os.path.join(folder, f"{name or 'closedloop'}-{uuid.uuid4().hex[:12]}.ipc")
    if len(path.encode()) > _MAX_IPC_PATH:
        raise ValueError(f"ipc path {path!r} is longer than {_MAX_IPC_PATH} bytes; use a shorter directory")
    return f"ipc://{path}"


def check_endpoint(endpoint: str) -> str:
    """Return ``endpoint`` if it uses a scheme we support, else raise ValueError."""
    if not isinstance(endpoint, str) or not endpoint.startswith(_SCHEMES) or endpoint.endswith("://"):
        raise ValueError(f"endpoint {endpoint!r} must look like tcp://HOST:PORT, ipc://PATH or inproc://NAME")
    return endpoint


@dataclass(frozen=True)
class Endpoints:
    """The loop's endpoints (names as in the rig's ``network.ports``).

    ``blocks`` presenter ROUTER, ``stimulus`` presenter PUB, ``spikes`` acquisition
    PUB, ``model`` model-server ROUTER, ``model_events`` model-server PUB,
    ``responses`` the runner's PUB (the only one the runner binds).
    """

    blocks: str
    stimulus: str
    spikes: str
    model: str
    model_events: str
    responses: str

    @classmethod
    def from_rig(cls, rig: Rig) -> Endpoints:
        """``tcp://host:port`` from the rig file (separate processes, real rigs)."""
        return cls(**{f.name: rig.network.endpoint(f.name) for f in fields(cls)})

    @classmethod
    def inproc(cls) -> Endpoints:
        """Fresh ``inproc://`` endpoints (every component a thread of one process)."""
        return cls(**{f.name: inproc_endpoint(f.name) for f in fields(cls)})

    @classmethod
    def local_tcp(cls) -> Endpoints:
        """Loopback TCP endpoints on ports that were free a moment ago."""
        return cls(**{f.name: random_tcp_endpoint() for f in fields(cls)})
