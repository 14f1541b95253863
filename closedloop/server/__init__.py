"""The model server (docs/architecture.md): accumulates a session's responses, refits in the background,
answers predictions and synthesis requests from the newest model.

`ModelLink` (`closedloop.server.client`) is its client, used by the runner and replay.
Names are imported on first use (`closedloop.lazy`): the client does not load torch.
"""

from __future__ import annotations

from closedloop.lazy import lazy_exports

_EXPORTS = {
    "ModelServer": "closedloop.server.component",
    "ServerSettings": "closedloop.server.settings",
    "ModelLink": "closedloop.server.client",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
