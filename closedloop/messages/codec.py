"""The one place that turns messages into ZeroMQ frames and back (docs/architecture.md, Messages).

Wire format: ``[topic, header, *array_frames]``; the header is msgpack (see
`closedloop.messages.envelope`), each array travels as its raw little-endian bytes.
Encoding hands out the arrays' own buffers (send them with ``copy=False``: do not
modify an array after sending it); decoding builds read-only numpy views on the
received buffers without copying.

`decode` raises `CodecError` and nothing else, whatever bytes it is given: the error's
``kind`` says which counter a receiver should bump.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from closedloop.errors import ClosedLoopError
from closedloop.messages.base import Message, message_class
from closedloop.messages.envelope import (
    ALLOWED_DTYPES,
    MAX_ARRAYS,
    MAX_HEADER_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_NDIM,
    MAX_TOPIC_BYTES,
    SCHEMA_VERSION,
    Envelope,
)

# Kinds of rejection; receivers keep one counter per kind.
MALFORMED = "malformed"
WRONG_SCHEMA = "wrong_schema"
OVERSIZED = "oversized"
UNKNOWN_TYPE = "unknown_type"
REJECTION_KINDS = (MALFORMED, WRONG_SCHEMA, OVERSIZED, UNKNOWN_TYPE)


class CodecError(ClosedLoopError):
    """A received message cannot be decoded.

    Parameters
    ----------
    kind
        One of `REJECTION_KINDS`.
    message
        What is wrong, for the log.
    """

    def __init__(self, kind: str, message: str):
        self.kind = kind
        self.message = message
        super().__init__(f"{kind}: {message}")


@dataclass(frozen=True, eq=False)
class Decoded:
    """A decoded message with its envelope and its size on the wire in bytes."""

    envelope: Envelope
    message: Message
    nbytes: int


def encode(
    message: Message,
    *,
    source: str,
    seq: int,
    session: str = "",
    t_ns: int | None = None,
    reply_to: int | None = None,
    topic: str | None = None,
) -> list[Any]:
    """Frames for one message: ``[topic, header, *arrays]``.

    Array frames are the (C-contiguous) arrays themselves, so ``send_multipart(frames,
    copy=False)`` sends them without a copy.  ``t_ns`` defaults to now on the monotonic
    clock.
    """
    if not isinstance(message, Message) or message_class(message.type_name()) is not type(message):
        raise TypeError(f"not a registered message: {type(message).__name__}")
    arrays = [(name, np.ascontiguousarray(a)) for name, a in message.arrays().items()]
    header = {
        "schema": SCHEMA_VERSION,
        "type": message.type_name(),
        "source": source,
        "seq": int(seq),
        "t_ns": time.monotonic_ns() if t_ns is None else int(t_ns),
        "session": session,
        "reply_to": reply_to,
        "body": message.scalars(),
        "arrays": [[name, a.dtype.str, list(a.shape)] for name, a in arrays],
    }
    topic_bytes = (message.type_name() if topic is None else topic).encode()
    # Flat byte views of the arrays' own memory: zero-copy, and plain bytes to any reader.
    return [topic_bytes, msgpack.packb(header, use_bin_type=True), *(a.reshape(-1).view(np.uint8) for _, a in arrays)]


def with_routing(identity: bytes, frames: list[Any]) -> list[Any]:
    """Prefix a ROUTER peer identity (to send a reply to that peer)."""
    return [identity, *frames]


def split_routing(frames: Sequence[Any]) -> tuple[bytes, list[Any]]:
    """Split what a ROUTER received into (peer identity, message frames)."""
    if len(frames) < 1:
        raise CodecError(MALFORMED, "empty frame list")
    return bytes(_as_bytes_view(frames[0])), list(frames[1:])


def decode(frames: Sequence[Any], *, max_bytes: int = MAX_MESSAGE_BYTES) -> Decoded:
    """Decode ``[topic, header, *arrays]`` (bytes, zmq.Frame or any buffer).

    Raises
    ------
    CodecError
        For anything that is not a valid message of this schema; never another error.
    """
    try:
        return _decode(frames, max_bytes)
    except CodecError:
        raise
    except Exception as error:  # a check we did not foresee must still not kill a receiver
        raise CodecError(MALFORMED, f"{type(error).__name__}: {error}") from None


def peek_seq(frames: Sequence[Any]) -> int | None:
    """The ``seq`` in a message's header if one can be read, else ``None``; never raises.

    For answering a request that cannot be decoded: the `Error` then names the request
    it refuses, so a client waiting for that reply gets it instead of timing out.
    """
    try:
        if len(frames) < 2:
            return None
        view = _as_bytes_view(frames[1])
        if view.nbytes > MAX_HEADER_BYTES:
            return None
        header = msgpack.unpackb(view, raw=False, strict_map_key=True, ext_hook=_reject_ext, timestamp=0)
        seq = header.get("seq") if isinstance(header, dict) else None
    except Exception:  # noqa: BLE001 - anything unreadable simply has no seq
        return None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq < 2**63 else None


def as_bytes(frames: Sequence[Any]) -> list[bytes]:
    """Copy frames to plain bytes (what arrives on the wire): for tests and debugging."""
    return [bytes(_as_bytes_view(f)) for f in frames]


def _as_bytes_view(frame: Any) -> memoryview:
    view = memoryview(frame)
    if view.nbytes == 0:
        return memoryview(b"")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B") if view.c_contiguous else memoryview(bytes(view))
    return view


def _decode(frames: Sequence[Any], max_bytes: int) -> Decoded:
    if isinstance(frames, (bytes, bytearray, memoryview, str)) or not isinstance(frames, Sequence):
        raise CodecError(MALFORMED, "expected a list of frames")
    if len(frames) < 2:
        raise CodecError(MALFORMED, f"expected at least 2 frames (topic, header), got {len(frames)}")
    views = [_as_bytes_view(f) for f in frames]
    nbytes = sum(v.nbytes for v in views)
    if nbytes > max_bytes:
        raise CodecError(OVERSIZED, f"{nbytes} bytes exceeds the limit of {max_bytes}")
    topic_view, header_view, array_views = views[0], views[1], views[2:]
    if topic_view.nbytes > MAX_TOPIC_BYTES:
        raise CodecError(MALFORMED, f"topic longer than {MAX_TOPIC_BYTES} bytes")
    if header_view.nbytes > MAX_HEADER_BYTES:
        raise CodecError(OVERSIZED, f"header of {header_view.nbytes} bytes exceeds {MAX_HEADER_BYTES}")
    header = _unpack_header(header_view)
    schema = header.get("schema")
    if schema != SCHEMA_VERSION or isinstance(schema, bool):
        raise CodecError(WRONG_SCHEMA, f"schema version {schema!r}, this program speaks {SCHEMA_VERSION}")
    type_name = _field(header, "type", str)
    cls = message_class(type_name)
    if cls is None:
        raise CodecError(UNKNOWN_TYPE, f"unknown message type {type_name[:80]!r}")
    envelope = Envelope(
        schema=schema,
        type=type_name,
        source=_field(header, "source", str),
        seq=_nonnegative(header, "seq"),
        t_ns=_field(header, "t_ns", int),
        session=_field(header, "session", str),
        topic=bytes(topic_view).decode("utf-8", errors="replace"),
        reply_to=None if header.get("reply_to") is None else _nonnegative(header, "reply_to"),
    )
    arrays = _arrays(header.get("arrays"), array_views, cls)
    body = header.get("body")
    if not isinstance(body, dict):
        raise CodecError(MALFORMED, "header body is not a map")
    overlap = set(body) & set(arrays)
    if overlap:
        raise CodecError(MALFORMED, f"fields sent both as scalar and array: {sorted(overlap)}")
    try:
        message = cls(**body, **arrays)
    except (TypeError, ValueError) as error:
        raise CodecError(MALFORMED, f"{type_name}: {error}") from None
    return Decoded(envelope=envelope, message=message, nbytes=nbytes)


def _reject_ext(code: int, data: bytes) -> Any:
    raise CodecError(MALFORMED, f"header uses msgpack extension type {code}")


def _unpack_header(view: memoryview) -> dict:
    try:
        header = msgpack.unpackb(view, raw=False, strict_map_key=True, ext_hook=_reject_ext, timestamp=0)
    except CodecError:
        raise
    except Exception as error:
        raise CodecError(MALFORMED, f"header is not msgpack ({type(error).__name__})") from None
    if not isinstance(header, dict):
        raise CodecError(MALFORMED, f"header is a msgpack {type(header).__name__}, not a map")
    return header


def _field(header: dict, key: str, kind: type) -> Any:
    value = header.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise CodecError(MALFORMED, f"header field {key!r} missing or not {kind.__name__}")
    return value


def _nonnegative(header: dict, key: str) -> int:
    value = _field(header, key, int)
    if value < 0:
        raise CodecError(MALFORMED, f"header field {key!r} is negative")
    return value


def _arrays(described: Any, views: list[memoryview], cls: type[Message]) -> dict[str, np.ndarray]:
    if not isinstance(described, list) or len(described) > MAX_ARRAYS:
        raise CodecError(MALFORMED, "header 'arrays' is not a list of array descriptions")
    if len(described) != len(views):
        raise CodecError(MALFORMED, f"header describes {len(described)} arrays but {len(views)} frames follow")
    arrays: dict[str, np.ndarray] = {}
    for entry, view in zip(described, views):
        if not (
            isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str) and isinstance(entry[2], list)
        ):
            raise CodecError(MALFORMED, "array description is not [name, dtype, shape]")
        name, dtype_text, shape = entry
        if name not in cls.ARRAYS or name in arrays:
            raise CodecError(MALFORMED, f"{cls.type_name()} has no array field {name[:80]!r} (or it repeats)")
        dtype = ALLOWED_DTYPES.get(dtype_text) if isinstance(dtype_text, str) else None
        if dtype is None:
            raise CodecError(MALFORMED, f"array {name!r}: dtype {str(dtype_text)[:40]!r} is not allowed")
        if len(shape) > MAX_NDIM or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
            raise CodecError(MALFORMED, f"array {name!r}: bad shape {shape[: MAX_NDIM + 1]!r}")
        expected = dtype.itemsize * math.prod(shape)  # Python ints: no overflow
        if view.nbytes != expected:
            raise CodecError(
                MALFORMED, f"array {name!r}: frame has {view.nbytes} bytes, shape {shape} needs {expected}"
            )
        array = np.frombuffer(view, dtype=dtype).reshape(shape)
        if dtype.kind == "b" and array.size and array.view(np.uint8).max() > 1:
            raise CodecError(MALFORMED, f"array {name!r}: bool bytes other than 0/1")
        arrays[name] = array
    return arrays
