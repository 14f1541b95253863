"""Acquisition adapters: simulated array, replay, Open Ephys and Lab Streaming Layer, on one base.

Names are imported on first use (`closedloop.lazy`): the stream buffer the runner uses
does not load the simulator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from closedloop.lazy import lazy_exports

if TYPE_CHECKING:  # the names as mypy reads them; at run time each is imported on first use
    from closedloop.acquisition.base import (
        Acquired as Acquired,
        AcquisitionAdapter as AcquisitionAdapter,
        AdapterStats as AdapterStats,
        PlaybackClock as PlaybackClock,
    )
    from closedloop.acquisition.buffer import AcquisitionBuffer as AcquisitionBuffer, StreamData as StreamData
    from closedloop.acquisition.lsl import LslAdapter as LslAdapter
    from closedloop.acquisition.openephys import OpenEphysAdapter as OpenEphysAdapter
    from closedloop.acquisition.recording import (
        recording_adapter as recording_adapter,
        RECORDING_KINDS as RECORDING_KINDS,
    )
    from closedloop.acquisition.replay import ReplayAdapter as ReplayAdapter
    from closedloop.acquisition.sim_array import BrainSpec as BrainSpec, SimulatedArray as SimulatedArray


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
