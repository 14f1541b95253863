"""Which sockets speak CURVE, with which keys: the rig's ``network.security``.

A process decides once, at start, from its rig file and its role
(`use_rig_security`); from then on every TCP or IPC socket opened through
`closedloop.transport.sockets.open_socket` is secured: a binding socket is a CURVE
server presenting the rig's server key and allows only the rig's role keys (ZAP, see
`closedloop.transport.guard`); a connecting socket presents its role's key and checks
the server's.  ``inproc://`` sockets (threads of one process) are never secured.  A
socket may be given its own `SocketSecurity` (tests; a connection to Open Ephys,
which speaks no CURVE, is opened with `PLAIN`).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import zmq

from closedloop.transport.guard import DOMAIN, guard_for
from closedloop.transport.keys import KeysError, RigKeys, check_folder, load_keys


@dataclass(frozen=True, eq=False)
class SocketSecurity:
    """CURVE with ``keys``, or plain when ``keys`` is ``None``."""

    keys: RigKeys | None = None

    @property
    def curve(self) -> bool:
        return self.keys is not None

    def describe(self) -> str:
        if self.keys is None:
            return "security none (plain ZeroMQ: any local process may connect)"
        return f"CURVE as {self.keys.role!r} with the keys in {self.keys.folder}"

    def apply(self, socket: zmq.Socket, endpoint: str, *, bind: bool) -> None:
        """Set the socket's CURVE options (before bind/connect); nothing for plain or inproc."""
        keys = self.keys
        if keys is None or endpoint.startswith("inproc://"):
            return
        if bind:
            guard_for(socket.context, keys.peers)  # the ZAP handler must run before the first handshake
            socket.setsockopt(zmq.ZAP_DOMAIN, DOMAIN.encode())
            socket.curve_secretkey = keys.server_secret
            socket.curve_publickey = keys.server_public
            socket.curve_server = True
        else:
            socket.curve_secretkey = keys.secret_key
            socket.curve_publickey = keys.public_key
            socket.curve_serverkey = keys.server_public

    def watch(self, socket: zmq.Socket, endpoint: str) -> None:
        """Count refused connections to a bound socket under its actual ``endpoint`` (after bind)."""
        if self.keys is not None and not endpoint.startswith("inproc://"):
            guard_for(socket.context, self.keys.peers).watch(socket, endpoint)


PLAIN = SocketSecurity()
#: Carries the process's choice to the processes it starts (multiprocessing spawn): "ROLE:FOLDER".
ENVIRONMENT = "CLOSEDLOOP_SOCKET_KEYS"
_current: SocketSecurity | None = None
_lock = threading.Lock()


def current_security() -> SocketSecurity:
    """The process's default: `PLAIN` until `use_security`, or what the parent process chose."""
    global _current
    with _lock:
        if _current is None:
            role, _, folder = os.environ.get(ENVIRONMENT, "").partition(":")
            _current = SocketSecurity(load_keys(folder, role)) if folder else PLAIN
        return _current


def use_security(security: SocketSecurity) -> SocketSecurity:
    """Make ``security`` the default for sockets opened from now on, here and in processes started later.

    Returns the previous default.
    """
    previous = current_security()
    global _current
    with _lock:
        _current = security
        if security.keys is None:
            os.environ.pop(ENVIRONMENT, None)
        else:
            os.environ[ENVIRONMENT] = f"{security.keys.role}:{Path(security.keys.folder).resolve()}"
    return previous


def rig_security(rig, role: str) -> SocketSecurity:
    """The security ``rig``'s ``network`` section asks for, with ``role``'s keys.

    Raises
    ------
    KeysError
        CURVE is on (``security: curve``, or a non-loopback host) and the keys are missing.
    """
    if not rig.network.curve:
        return PLAIN
    try:
        return SocketSecurity(load_keys(keys_folder(rig), role))
    except KeysError as error:
        raise KeysError(f"{_why_curve(rig)}: {error}") from None


def keys_folder(rig) -> Path:
    """The rig's keys folder: ``network.keys``, relative to the rig file's folder."""
    folder = Path(rig.network.keys).expanduser()
    if not folder.is_absolute() and rig.path:
        folder = Path(rig.path).parent / folder
    return folder


def use_rig_security(rig, role: str) -> SocketSecurity:
    """`rig_security` made the process default; call once when a command starts."""
    security = rig_security(rig, role)
    use_security(security)
    return security


def check_rig_keys(rig) -> str:
    """One line on the rig's socket security; raises `KeysError` when CURVE is on and keys are missing."""
    if not rig.network.curve:
        return "network: security none (loopback only; plain ZeroMQ)"
    folder = keys_folder(rig)
    try:
        check_folder(folder)
    except KeysError as error:
        raise KeysError(f"{_why_curve(rig)}: {error}") from None
    return f"network: CURVE on {rig.network.host}, keys in {folder}"


def _why_curve(rig) -> str:
    network = rig.network
    why = "security: curve" if network.security == "curve" else f"host {network.host} is not loopback"
    return f"{rig.path or 'rig'}: sockets need CURVE keys ({why})"
