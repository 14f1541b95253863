"""The rig's CURVE certificates: one folder, made once by ``closedloop keys init RIG.yaml``.

Layout of the keys folder (``network.keys`` in the rig file, ``keys/`` next to it by
default)::

    keys/public/server.key           every socket that binds presents this key
    keys/public/<role>.key           one per component role; the list of allowed peers
    keys/private/server.key_secret   0600, on every machine that runs a component
    keys/private/<role>.key_secret   0600, on the machine that runs that role

Public files may be copied anywhere; a private file only to the machine that runs that
role (and the server secret to every machine of the rig).  A peer is allowed when its
public key is one of ``public/<role>.key``; the role's name becomes its authenticated
identity (ZeroMQ's ``User-Id``).  Certificates are pyzmq's (`zmq.auth.create_certificates`).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from closedloop.errors import ClosedLoopError

#: Identities a certificate is made for.  ``server`` is the key every binding socket presents.
ROLES = ("runner", "presenter", "acquisition", "model", "monitor")
SERVER = "server"
PUBLIC_DIR = "public"
PRIVATE_DIR = "private"


class KeysError(ClosedLoopError):
    """A missing, unreadable or too widely readable certificate (the message says what to do)."""


@dataclass(frozen=True, eq=False)
class RigKeys:
    """The keys one process uses: its role's pair, the server pair, and every allowed peer.

    Attributes
    ----------
    folder
        The keys folder.
    role
        This process's role (its identity when it connects).
    public_key, secret_key
        This role's CURVE pair (z85 bytes).
    server_public, server_secret
        The pair every binding socket presents.
    peers
        Allowed public key (z85 bytes) -> role.
    """

    folder: Path
    role: str
    public_key: bytes
    secret_key: bytes
    server_public: bytes
    server_secret: bytes
    peers: dict[bytes, str]


def public_file(folder: str | Path, name: str) -> Path:
    """Path of a public certificate in a keys folder."""
    return Path(folder) / PUBLIC_DIR / f"{name}.key"


def secret_file(folder: str | Path, name: str) -> Path:
    """Path of a private certificate in a keys folder."""
    return Path(folder) / PRIVATE_DIR / f"{name}.key_secret"


def create_keys(folder: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Make the server's and every role's certificates in ``folder``; returns the files written.

    Private files are created 0600 in a 0700 folder (never readable by others, not even
    for a moment: the umask is tightened while they are written).

    Raises
    ------
    KeysError
        Certificates exist already (and not ``overwrite``) or the folder cannot be written.
    """
    folder = Path(folder)
    existing = [p for p in (secret_file(folder, n) for n in (SERVER, *ROLES)) if p.exists()]
    if existing and not overwrite:
        raise KeysError(
            f"{existing[0]}: certificates exist already; keep them (every machine of the rig has "
            "copies) or give --force to make new ones"
        )
    old_umask = os.umask(0o077)
    try:
        (folder / PUBLIC_DIR).mkdir(parents=True, exist_ok=True)
        (folder / PRIVATE_DIR).mkdir(parents=True, exist_ok=True)
        os.chmod(folder / PRIVATE_DIR, 0o700)
        os.chmod(folder / PUBLIC_DIR, 0o755)
        written = []
        for name in (SERVER, *ROLES):
            public, secret = zmq.auth.create_certificates(folder / PRIVATE_DIR, name, metadata={"role": name})
            target = public_file(folder, name)
            os.replace(public, target)
            os.chmod(target, 0o644)
            os.chmod(secret, 0o600)
            written += [target, Path(secret)]
    except OSError as error:
        raise KeysError(f"{folder}: cannot write certificates ({error.strerror or error})") from None
    finally:
        os.umask(old_umask)
    return written


def load_keys(folder: str | Path, role: str) -> RigKeys:
    """The keys of ``role`` from a keys folder.

    Raises
    ------
    KeysError
        A file is missing or malformed, or a private file is readable by others.
    """
    if role not in ROLES:
        raise KeysError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    folder = Path(folder)
    public_key, secret_key = _load_pair(folder, role)
    server_public, server_secret = _load_pair(folder, SERVER)
    peers = {}
    for name in ROLES:
        path = public_file(folder, name)
        if path.is_file():
            peers[_load_public(path)] = name
    return RigKeys(folder, role, public_key, secret_key, server_public, server_secret, peers)


def check_folder(folder: str | Path) -> None:
    """Check what every machine of the rig needs: the server pair (private) and every role's public key.

    A role's own private key is checked when a component of that role starts.

    Raises
    ------
    KeysError
        Something is missing, malformed or readable by others.
    """
    folder = Path(folder)
    _load_pair(folder, SERVER)
    for name in ROLES:
        path = public_file(folder, name)
        if not path.is_file():
            raise KeysError(
                f"{path}: no such public certificate; run 'closedloop keys init RIG.yaml' again "
                "and copy the keys folder to this machine"
            )
        _load_public(path)


def _load_pair(folder: Path, name: str) -> tuple[bytes, bytes]:
    path = secret_file(folder, name)
    if not path.is_file():
        raise KeysError(
            f"{path}: no such certificate; make the rig's keys with 'closedloop keys init RIG.yaml' "
            "and copy the keys folder to this machine"
        )
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeysError(
            f"{path}: private key is readable by others (mode {stat.S_IMODE(mode):o}); run 'chmod 600 {path}'"
        )
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as error:
        raise KeysError(f"{path}: not a certificate ({error}); make new keys with 'closedloop keys init'") from None
    if secret is None or len(public) != 40 or len(secret) != 40:
        raise KeysError(f"{path}: no CURVE key pair in it; make new keys with 'closedloop keys init'")
    return public, secret


def _load_public(path: Path) -> bytes:
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as error:
        raise KeysError(f"{path}: not a public certificate ({error})") from None
    if len(public) != 40:
        raise KeysError(f"{path}: the public key is not 40 z85 characters")
    return public
