"""The model server (docs/architecture.md): accumulates a session's responses, refits in the background,
answers predictions and synthesis requests from the newest model.

`ModelLink` (`closedloop.server.client`) is its client, used by the runner and replay.
Names are imported on first use (`closedloop.lazy`): the client does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from closedloop.lazy import lazy_exports

if TYPE_CHECKING:  # the names as mypy reads them; at run time each is imported on first use
    from closedloop.server.client import ModelLink as ModelLink
    from closedloop.server.component import ModelServer as ModelServer
    from closedloop.server.settings import ServerSettings as ServerSettings


_EXPORTS = {
    "ModelServer": "closedloop.server.component",
    "ServerSettings": "closedloop.server.settings",
    "ModelLink": "closedloop.server.client",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
