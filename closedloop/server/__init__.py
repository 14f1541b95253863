"""The model server (DESIGN §2): accumulates a session's responses, refits in the background,
answers predictions and synthesis requests from the newest model."""

from closedloop.server.component import ModelServer
from closedloop.server.settings import ServerSettings

__all__ = ["ModelServer", "ServerSettings"]
