"""Who may add data to the session: the runner that opened it.

The first `FitRequest` opens the session: its sender's authenticated identity (the
``User-Id`` CURVE and ZAP give every frame: the rig role of the key it presented) and
its session token (the envelope's ``session``, the runner's session id) become the
owner.  From then on only requests carrying both are taken, so the unit set is the one
that runner sent first, and no other process can add, replace or refit data.  On a
CURVE socket only the ``runner`` role may open a session at all.  When the server was
started for a named session, only that token may open it.  A runner that resumes keeps
its session id and key, so it is the same owner.

On a plain socket (``security: none``, loopback only) there is no authenticated
identity: the token alone is checked.
"""

from __future__ import annotations

from dataclasses import dataclass

from closedloop.server.checks import RequestError
from closedloop.transport.sockets import Request

#: The rig role allowed to open a session on a CURVE socket.
OWNER_ROLE = "runner"


@dataclass
class SessionOwner:
    """The session's owner, once a `FitRequest` has opened it.

    Parameters
    ----------
    session
        The only token that may open the session; ``""``: the first runner's.
    """

    session: str = ""
    user: str | None = None
    token: str | None = None
    refused: int = 0

    @property
    def opened(self) -> bool:
        return self.token is not None

    def owns(self, request: Request) -> bool:
        """Whether ``request`` comes from the owner (False before the session is opened)."""
        return self.opened and (request.user, request.decoded.envelope.session) == (self.user, self.token)

    def check(self, request: Request) -> None:
        """Open the session with ``request`` or check that it comes from the owner.

        Raises
        ------
        RequestError
            ``not_owner``: another identity or token than the owner's.
        """
        user, token = request.user, request.decoded.envelope.session
        if not self.opened:
            if user and user != OWNER_ROLE:
                self._refuse(f"only the rig's {OWNER_ROLE} may open a session; this peer's key is {user!r}")
            if self.session and token != self.session:
                self._refuse(f"this server serves session {self.session!r}, not {token!r}")
            self.user, self.token = user, token
            return
        if (user, token) != (self.user, self.token):
            who = f"{user or 'an unauthenticated peer'} with session {token!r}"
            self._refuse(
                f"session {self.token!r} belongs to the {self.user or 'runner'} that opened it, not "
                f"{who}; start another model server for another session"
            )

    def _refuse(self, text: str) -> None:
        self.refused += 1
        raise RequestError("not_owner", text)
