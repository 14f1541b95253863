"""The Open Ephys GUI Event Broadcaster's JSON format, in one place (REFERENCE.md).

Each event is one ZeroMQ message of two frames:

1. a ``uint16`` in host byte order: ``0`` = TTL, ``1`` = spike;
2. a UTF-8 JSON object.  TTL: ``event_type "ttl"``, ``stream``, ``source_node``,
   ``sample_rate``, ``channel_name``, ``sample_number``, ``line``, ``state``.
   Spike: ``event_type "spike"``, ``stream``, ``source_node``, ``electrode``,
   ``num_channels``, ``sample_rate``, ``sample_number``, ``sorted_id``, ``amp1`` … ``ampN``.

Times are ``sample_number / sample_rate`` seconds on the GUI's acquisition clock.

Unit ids.  Open Ephys names a spike's source by its electrode (a string such as
``"Electrode 3"`` or ``"TT2"``) and the spike sorter's ``sorted_id`` (0 = unsorted).
We give it the unit id ``electrode_number × UNIT_STRIDE + sorted_id``, where the
electrode number is taken from an explicit ``{name: number}`` map when one is given,
otherwise from the trailing integer of the name.  Our own broadcaster (the simulated
array) names the electrode of channel ``c`` ``"Electrode {c + 1}"`` and numbers the
units on one channel ``sorted_id = 1, 2, …`` (see `electrode_layout`).

`decode` raises `EventFormatError` (with a counter ``kind``) and nothing else.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from closedloop.errors import ClosedLoopError
from closedloop.messages.codec import MALFORMED, OVERSIZED, UNKNOWN_TYPE

TTL, SPIKE = 0, 1
EVENT_TYPES = {TTL: "ttl", SPIKE: "spike"}
UNIT_STRIDE = 1000
#: An Event Broadcaster JSON object is a few hundred bytes; anything far larger is not one.
MAX_EVENT_BYTES = 64 * 1024
_TRAILING_NUMBER = re.compile(r"(\d+)\s*$")


class EventFormatError(ClosedLoopError):
    """An Event Broadcaster message that cannot be read; ``kind`` names the counter."""

    def __init__(self, kind: str, message: str):
        self.kind = kind
        self.message = message
        super().__init__(f"{kind}: {message}")


@dataclass(frozen=True)
class OpenEphysEvent:
    """One decoded event (``line``/``state`` for TTLs, ``electrode``/``sorted_id`` for spikes)."""

    event_type: str
    sample_number: int
    sample_rate: float
    stream: str = ""
    electrode: str = ""
    sorted_id: int = 0
    line: int = 0
    state: int = 0

    @property
    def time_s(self) -> float:
        return self.sample_number / self.sample_rate


def type_frame(kind: int) -> bytes:
    """The first frame: ``kind`` as a host-order uint16."""
    return int(kind).to_bytes(2, sys.byteorder)


def encode_ttl(sample_number: int, sample_rate: float, line: int, state: int, *, stream: str = "closedloop",
               source_node: int = 100, channel_name: str = "TTL") -> list[bytes]:
    """Frames of one TTL event."""
    body = {"event_type": "ttl", "stream": stream, "source_node": source_node, "sample_rate": float(sample_rate),
            "channel_name": channel_name, "sample_number": int(sample_number), "line": int(line),
            "state": int(state)}
    return [type_frame(TTL), json.dumps(body).encode()]


def encode_spike(sample_number: int, sample_rate: float, electrode: str, sorted_id: int, *,
                 amplitudes: Sequence[float] = (0.0,), stream: str = "closedloop",
                 source_node: int = 100) -> list[bytes]:
    """Frames of one spike event (``num_channels`` = number of amplitudes)."""
    body: dict[str, Any] = {"event_type": "spike", "stream": stream, "source_node": source_node,
                            "electrode": electrode, "num_channels": len(amplitudes),
                            "sample_rate": float(sample_rate), "sample_number": int(sample_number),
                            "sorted_id": int(sorted_id)}
    body.update({f"amp{i + 1}": float(a) for i, a in enumerate(amplitudes)})
    return [type_frame(SPIKE), json.dumps(body).encode()]


def decode(frames: Sequence[Any], *, max_bytes: int = MAX_EVENT_BYTES) -> OpenEphysEvent:
    """Decode one two-frame message (bytes, zmq.Frame or buffers).

    Raises
    ------
    EventFormatError
        For anything that is not a valid Event Broadcaster event.
    """
    try:
        return _decode(frames, max_bytes)
    except EventFormatError:
        raise
    except Exception as error:  # an unforeseen case must still be a counted rejection
        raise EventFormatError(MALFORMED, f"{type(error).__name__}: {error}") from None


def _decode(frames: Sequence[Any], max_bytes: int) -> OpenEphysEvent:
    if len(frames) != 2:
        raise EventFormatError(MALFORMED, f"expected 2 frames (type, JSON), got {len(frames)}")
    head, body = (_bytes_view(f) for f in frames)
    if head.nbytes + body.nbytes > max_bytes:
        raise EventFormatError(OVERSIZED, f"{head.nbytes + body.nbytes} bytes exceeds {max_bytes}")
    if head.nbytes != 2:
        raise EventFormatError(MALFORMED, f"type frame has {head.nbytes} bytes, expected a 2-byte uint16")
    kind = int.from_bytes(head, sys.byteorder)
    if kind not in EVENT_TYPES:
        raise EventFormatError(UNKNOWN_TYPE, f"event type {kind} is neither 0 (TTL) nor 1 (spike)")
    try:
        info = json.loads(bytes(body).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise EventFormatError(MALFORMED, f"second frame is not UTF-8 JSON ({type(error).__name__})") from None
    if not isinstance(info, dict):
        raise EventFormatError(MALFORMED, f"JSON is a {type(info).__name__}, not an object")
    event_type = info.get("event_type")
    if event_type not in ("ttl", "spike"):
        raise EventFormatError(UNKNOWN_TYPE, f"event_type {str(event_type)[:40]!r} is neither 'ttl' nor 'spike'")
    if event_type != EVENT_TYPES[kind]:
        raise EventFormatError(MALFORMED, f"type frame says {EVENT_TYPES[kind]} but event_type is {event_type}")
    sample_number = _integer(info, "sample_number", minimum=0)
    sample_rate = info.get("sample_rate")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)) \
            or not math.isfinite(sample_rate) or sample_rate <= 0:
        raise EventFormatError(MALFORMED, f"sample_rate {str(sample_rate)[:40]!r} is not a positive number")
    stream = info.get("stream", "")
    stream = stream if isinstance(stream, str) else str(stream)
    if event_type == "ttl":
        return OpenEphysEvent("ttl", sample_number, float(sample_rate), stream,
                              line=_integer(info, "line", minimum=0), state=_integer(info, "state", minimum=0))
    electrode = info.get("electrode")
    if not isinstance(electrode, str) or not electrode:
        raise EventFormatError(MALFORMED, "spike without an electrode name")
    return OpenEphysEvent("spike", sample_number, float(sample_rate), stream, electrode=electrode,
                          sorted_id=_integer(info, "sorted_id", minimum=0))


def _bytes_view(frame: Any) -> memoryview:
    view = memoryview(frame)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _integer(info: dict, key: str, *, minimum: int) -> int:
    value = info.get(key)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or value >= 2**63:
        raise EventFormatError(MALFORMED, f"{key} {str(value)[:40]!r} is not an integer >= {minimum}")
    return value


# --- unit ids <-> (electrode, sorted_id) -------------------------------------------------

def electrode_number(name: str, electrodes: Mapping[str, int] | None = None) -> int | None:
    """The number of an electrode: from ``electrodes`` if given, else the name's trailing integer."""
    if electrodes:
        return electrodes.get(name)
    match = _TRAILING_NUMBER.search(name)
    return int(match.group(1)) if match else None


def unit_id_for(electrode: int, sorted_id: int) -> int:
    """Our unit id for an Open Ephys (electrode number, sorted id)."""
    if not 0 <= sorted_id < UNIT_STRIDE:
        raise ValueError(f"sorted_id {sorted_id} must be in 0..{UNIT_STRIDE - 1}")
    return electrode * UNIT_STRIDE + sorted_id


def electrode_layout(channels: np.ndarray) -> tuple[list[str], np.ndarray]:
    """How our broadcaster names units: per unit (electrode name, sorted id).

    Channel ``c`` is ``"Electrode {c + 1}"``; units sharing a channel get sorted ids
    1, 2, … in unit order, so the receiving unit id is ``(c + 1) × UNIT_STRIDE + k``.
    """
    channels = np.asarray(channels, dtype=np.int64)
    names = [f"Electrode {c + 1}" for c in channels]
    sorted_ids = np.zeros(len(channels), dtype=np.int64)
    seen: dict[int, int] = {}
    for i, c in enumerate(channels):
        seen[int(c)] = seen.get(int(c), 0) + 1
        sorted_ids[i] = seen[int(c)]
    return names, sorted_ids
