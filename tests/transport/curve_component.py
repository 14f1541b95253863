"""A component for the process-mode CURVE test: answers every request with the sender's identity."""

from __future__ import annotations

from closedloop.messages import Error
from closedloop.runtime.component import Component
from closedloop.transport import RequestServer


class WhoIsIt(Component):
    """Replies ``Error(code="identity", message=<the sender's authenticated role>)``."""

    def __init__(self, name: str, endpoint: str):
        super().__init__(name)
        self.endpoint = endpoint
        self.server: RequestServer | None = None

    def setup(self) -> None:
        self.server = RequestServer(self.endpoint, source=self.name)  # the process default's security

    def step(self) -> None:
        request = self.server.recv(50)
        if request is not None:
            self.server.reply(request, Error(code="identity", message=request.user or "nobody"))

    def teardown(self) -> None:
        if self.server is not None:
            self.server.close()
