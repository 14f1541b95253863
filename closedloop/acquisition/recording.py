"""The adapter for a real recording system, from its rig file (Open Ephys or Lab Streaming Layer)."""

from __future__ import annotations

from closedloop.acquisition.base import AcquisitionAdapter
from closedloop.acquisition.lsl import LslAdapter
from closedloop.acquisition.openephys import OpenEphysAdapter

#: ``acquisition.kind`` values that name a real recording system (data on wall time, units unknown ahead).
RECORDING_KINDS = ("openephys", "lsl")


def recording_adapter(rig, endpoint: str, **options) -> AcquisitionAdapter:
    """The Open Ephys or LSL adapter the rig's ``acquisition`` section describes, publishing on ``endpoint``."""
    kind = rig.acquisition.kind
    if kind == "openephys":
        return OpenEphysAdapter.from_rig(rig, endpoint, **options)
    if kind == "lsl":
        return LslAdapter.from_rig(rig, endpoint, **options)
    raise ValueError(f"acquisition.kind {kind!r} is not a recording system ({', '.join(RECORDING_KINDS)})")
