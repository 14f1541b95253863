"""The live monitor (docs/architecture.md): predicted vs measured rates as a session runs.

`MonitorState` (no Qt) holds everything shown in bounded buffers; `StreamReceiver`
feeds it from the loop's PUB streams on a thread, `SessionSource` from a session file;
`closedloop.monitor.window.MonitorWindow` (pyqtgraph) draws it.  Qt is only imported by
the window, so the state and receivers work (and are tested) without a display.
"""

from __future__ import annotations

from closedloop.monitor.session_source import SessionSource
from closedloop.monitor.spikes import PsthSettings
from closedloop.monitor.state import Caps, MonitorState, MonitorView
from closedloop.monitor.stream import StreamReceiver, host_endpoints, rig_endpoints

__all__ = [
    "Caps",
    "MonitorState",
    "MonitorView",
    "PsthSettings",
    "SessionSource",
    "StreamReceiver",
    "host_endpoints",
    "rig_endpoints",
]
