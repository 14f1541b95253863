"""Acquisition adapters: simulated array, replay, Open Ephys and Lab Streaming Layer, on one base.

Names are imported on first use (`closedloop.lazy`): the stream buffer the runner uses
does not load the simulator.
"""

from __future__ import annotations

from closedloop.lazy import lazy_exports

_EXPORTS = {
    "AcquisitionAdapter": "closedloop.acquisition.base",
    "Acquired": "closedloop.acquisition.base",
    "AdapterStats": "closedloop.acquisition.base",
    "PlaybackClock": "closedloop.acquisition.base",
    "AcquisitionBuffer": "closedloop.acquisition.buffer",
    "StreamData": "closedloop.acquisition.buffer",
    "LslAdapter": "closedloop.acquisition.lsl",
    "OpenEphysAdapter": "closedloop.acquisition.openephys",
    "ReplayAdapter": "closedloop.acquisition.replay",
    "RECORDING_KINDS": "closedloop.acquisition.recording",
    "recording_adapter": "closedloop.acquisition.recording",
    "BrainSpec": "closedloop.acquisition.sim_array",
    "SimulatedArray": "closedloop.acquisition.sim_array",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
