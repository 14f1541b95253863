"""Acquisition adapters: simulated array, replay and Open Ephys, on one base (DESIGN §2, §5)."""

from __future__ import annotations

from closedloop.acquisition.base import AcquisitionAdapter, Acquired, AdapterStats, PlaybackClock
from closedloop.acquisition.openephys import OpenEphysAdapter
from closedloop.acquisition.replay import ReplayAdapter
from closedloop.acquisition.sim_array import BrainSpec, SimulatedArray

__all__ = [
    "AcquisitionAdapter", "Acquired", "AdapterStats", "BrainSpec", "OpenEphysAdapter", "PlaybackClock",
    "ReplayAdapter", "SimulatedArray",
]
