"""The Open Ephys GUI Event Broadcaster's JSON format, in one place.

Written from the plugin's source (open-ephys-plugins/event-broadcaster,
``EventBroadcaster::sendEvent`` / ``sendSpike``, GUI 0.6 and later).  Each event is one
ZeroMQ message of two frames:

1. a ``uint16`` in host byte order: ``0`` = TTL, ``1`` = spike;
2. a UTF-8 JSON object, as JUCE's ``JSON::toString`` writes it (pretty-printed, CRLF
   line ends, non-ASCII escaped).  TTL: ``event_type "ttl"``, ``stream``,
   ``source_node``, ``sample_rate``, ``channel_name``, ``sample_number``, ``line``
   (0-based, as sent), ``state`` (a C++ bool: JSON ``true``/``false``; the docs show
   ``1``/``0``, both are read).  Spike: ``event_type "spike"``, ``stream``,
   ``source_node``, ``electrode`` (``"Electrode N"``, ``"Stereotrode N"``, ``"Tetrode N"``,
   numbered per stream), ``num_channels``, ``sample_rate``, ``sample_number``,
   ``sorted_id`` (0 = unsorted), ``amp1`` … ``ampN``.

``sample_number`` counts samples of the event's *stream* (each stream its own hardware
counter, which need not start at 0).  Times and unit ids are worked out by the adapter
(`closedloop.acquisition.openephys_clock`, `closedloop.acquisition.openephys_units`).

Other settings of the plugin, and older GUIs, send other messages: the plugin's
"Raw Binary" format (two frames, a binary second frame), GUI 0.4/0.5 (three or more
frames).  `decode` names those with the setting to change (kind ``wrong_format``).

`decode` raises `EventFormatError` (with a counter ``kind``) and nothing else.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from closedloop.errors import ClosedLoopError
from closedloop.messages.codec import MALFORMED, OVERSIZED, UNKNOWN_TYPE

TTL, SPIKE = 0, 1
EVENT_TYPES = {TTL: "ttl", SPIKE: "spike"}
#: A value outside the plugin's own types (out of range, not finite).
OUT_OF_RANGE = "out_of_range"
#: Another plugin setting or an older GUI: one line says what to change.
WRONG_FORMAT = "wrong_format"
#: An Event Broadcaster JSON object is a few hundred bytes; anything far larger is not one.
MAX_EVENT_BYTES = 64 * 1024
#: The plugin's fields are C++ int64 (sample_number), uint8 (line), uint16 (sorted_id).
MAX_SAMPLE_NUMBER = 2**62
MAX_LINE = 255
MAX_SORTED_ID = 65535
#: Sample rates any acquisition hardware uses (1 Hz .. 10 MHz); others make times meaningless.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1.0, 1e7
MAX_NAME_CHARS = 200

JSON_SETTING = (
    "the Open Ephys GUI 0.6 or later with the Event Broadcaster plugin's Format set to JSON "
    "(one message of 2 frames per event)"
)


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
        """Seconds on the event's own stream clock."""
        return self.sample_number / self.sample_rate


def type_frame(kind: int) -> bytes:
    """The first frame: ``kind`` as a host-order uint16."""
    return int(kind).to_bytes(2, sys.byteorder)


def juce_json(body: dict[str, Any]) -> bytes:
    """``body`` as JUCE's ``JSON::toString(var)`` writes it: 2-space indent, CRLF, ASCII."""
    return json.dumps(body, indent=2, separators=(",", ": ")).replace("\n", "\r\n").encode()


def encode_ttl(
    sample_number: int,
    sample_rate: float,
    line: int,
    state: bool | int,
    *,
    stream: str = "closedloop",
    source_node: int = 100,
    channel_name: str = "TTL Input",
    pretty: bool = True,
) -> list[bytes]:
    """Frames of one TTL event; ``line`` 0-based and ``state`` a JSON bool, as the plugin sends them."""
    body = {
        "event_type": "ttl",
        "stream": stream,
        "source_node": source_node,
        "sample_rate": float(sample_rate),
        "channel_name": channel_name,
        "sample_number": int(sample_number),
        "line": int(line),
        "state": bool(state),
    }
    return [type_frame(TTL), juce_json(body) if pretty else json.dumps(body).encode()]


def encode_spike(
    sample_number: int,
    sample_rate: float,
    electrode: str,
    sorted_id: int,
    *,
    amplitudes: Sequence[float] = (0.0,),
    stream: str = "closedloop",
    source_node: int = 100,
    pretty: bool = True,
) -> list[bytes]:
    """Frames of one spike event (``num_channels`` = number of amplitudes)."""
    body: dict[str, Any] = {
        "event_type": "spike",
        "stream": stream,
        "source_node": source_node,
        "electrode": electrode,
        "num_channels": len(amplitudes),
        "sample_rate": float(sample_rate),
        "sample_number": int(sample_number),
        "sorted_id": int(sorted_id),
    }
    body.update({f"amp{i + 1}": float(a) for i, a in enumerate(amplitudes)})
    return [type_frame(SPIKE), juce_json(body) if pretty else json.dumps(body).encode()]


def decode(frames: Sequence[Any], *, max_bytes: int = MAX_EVENT_BYTES) -> OpenEphysEvent:
    """Decode one two-frame message (bytes, zmq.Frame or buffers).

    Raises
    ------
    EventFormatError
        For anything that is not a valid Event Broadcaster JSON event.
    """
    try:
        return _decode(frames, max_bytes)
    except EventFormatError:
        raise
    except Exception as error:  # an unforeseen case must still be a counted rejection
        raise EventFormatError(MALFORMED, f"{type(error).__name__}: {str(error)[:80]}") from None


def _decode(frames: Sequence[Any], max_bytes: int) -> OpenEphysEvent:
    views = [_bytes_view(f) for f in frames]
    size = sum(v.nbytes for v in views)
    if size > max_bytes:
        raise EventFormatError(OVERSIZED, f"{size} bytes exceeds {max_bytes}")
    if len(views) != 2:
        _wrong_frame_count(views)
    head, body = views
    if head.nbytes != 2:
        if _looks_like_json(head):
            raise EventFormatError(
                WRONG_FORMAT,
                "a JSON header frame before the event: an older Event Broadcaster "
                f"(Open Ephys GUI 0.5); use {JSON_SETTING}",
            )
        raise EventFormatError(MALFORMED, f"type frame has {head.nbytes} bytes, expected a 2-byte uint16")
    kind = int.from_bytes(head, sys.byteorder)
    if kind not in EVENT_TYPES:
        raise EventFormatError(UNKNOWN_TYPE, f"event type {kind} is neither 0 (TTL) nor 1 (spike)")
    if _looks_binary(body):
        raise EventFormatError(
            WRONG_FORMAT, f"binary event data: the Event Broadcaster's Format is 'Raw Binary'; use {JSON_SETTING}"
        )
    try:
        info = json.loads(bytes(body).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise EventFormatError(MALFORMED, f"second frame is not UTF-8 JSON ({type(error).__name__})") from None
    if not isinstance(info, dict):
        raise EventFormatError(MALFORMED, f"JSON is a {type(info).__name__}, not an object")
    event_type = info.get("event_type")
    if event_type not in ("ttl", "spike"):
        raise EventFormatError(UNKNOWN_TYPE, f"event_type {_show(event_type)} is neither 'ttl' nor 'spike'")
    if event_type != EVENT_TYPES[kind]:
        raise EventFormatError(MALFORMED, f"type frame says {EVENT_TYPES[kind]} but event_type is {event_type}")
    sample_number = _integer(info, "sample_number", 0, MAX_SAMPLE_NUMBER)
    sample_rate = info.get("sample_rate")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)):
        raise EventFormatError(MALFORMED, f"sample_rate {_show(sample_rate)} is not a number")
    if not (math.isfinite(sample_rate) and MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE):
        raise EventFormatError(
            OUT_OF_RANGE, f"sample_rate {_show(sample_rate)} is outside {MIN_SAMPLE_RATE:g}..{MAX_SAMPLE_RATE:g} Hz"
        )
    stream = info.get("stream", "")
    if not isinstance(stream, str) or len(stream) > MAX_NAME_CHARS:
        raise EventFormatError(MALFORMED, f"stream {_show(stream)} is not a name")
    if event_type == "ttl":
        return OpenEphysEvent(
            "ttl",
            sample_number,
            float(sample_rate),
            stream,
            line=_integer(info, "line", 0, MAX_LINE),
            state=_state(info.get("state")),
        )
    electrode = info.get("electrode")
    if not isinstance(electrode, str) or not electrode or len(electrode) > MAX_NAME_CHARS:
        raise EventFormatError(MALFORMED, f"electrode {_show(electrode)} is not a name")
    return OpenEphysEvent(
        "spike",
        sample_number,
        float(sample_rate),
        stream,
        electrode=electrode,
        sorted_id=_integer(info, "sorted_id", 0, MAX_SORTED_ID),
    )


def _wrong_frame_count(views: list[memoryview]) -> None:
    if len(views) >= 3:  # the plugin has sent 2 frames since GUI 0.6; older ones sent 3 or more
        raise EventFormatError(
            WRONG_FORMAT,
            f"{len(views)} frames per event: an older Event Broadcaster (Open Ephys GUI 0.4/0.5); use {JSON_SETTING}",
        )
    raise EventFormatError(MALFORMED, f"expected 2 frames (type, JSON), got {len(views)}")


def _looks_like_json(view: memoryview) -> bool:
    text = bytes(view[:64]).lstrip()
    return text.startswith(b"{")


def _looks_binary(view: memoryview) -> bool:
    """Raw Binary events start with a small type byte; JSON text with a printable character."""
    text = bytes(view[:64]).lstrip()
    return not text or not 0x20 <= text[0] < 0x7F


def _bytes_view(frame: Any) -> memoryview:
    view = memoryview(frame)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _show(value: Any) -> str:
    return repr(str(value)[:40]) if not isinstance(value, (int, float)) or isinstance(value, bool) else repr(value)


def _integer(info: dict, key: str, minimum: int, maximum: int) -> int:
    value = info.get(key)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise EventFormatError(MALFORMED, f"{key} {_show(value)} is not an integer")
    if not minimum <= value <= maximum:
        raise EventFormatError(OUT_OF_RANGE, f"{key} {_show(value)} is outside {minimum}..{maximum}")
    return value


def _state(value: Any) -> int:
    """The plugin sends a bool; the docs' example (and older builds) 1/0."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    raise EventFormatError(MALFORMED, f"state {_show(value)} is neither true/false nor 1/0")
