"""The versioned envelope every message travels in (docs/architecture.md, Messages).

A message on the wire is ``[topic, header, *array_frames]``.  The header is a msgpack
map whose keys are fixed here; the body of a message (its scalar fields) sits under
``body`` and the description of each array frame under ``arrays``.  Bump
`SCHEMA_VERSION` whenever the meaning of a header key or a message field changes:
receivers reject (and count) any other version instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCHEMA_VERSION = 1

# Large enough for a block of synthesized images (200 × 320 × 320 float32 ≈ 82 MB),
# small enough that one bad peer cannot make a receiver allocate gigabytes.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
# Headers hold scalars and small dicts (metrics); anything bigger is an error.
MAX_HEADER_BYTES = 1024 * 1024
MAX_TOPIC_BYTES = 256
MAX_ARRAYS = 64
MAX_NDIM = 8

# The only dtypes that may cross the wire, keyed by their little-endian descriptor.
# Decoding looks dtypes up here and never calls ``np.dtype`` on untrusted text.
ALLOWED_DTYPES: dict[str, np.dtype] = {
    np.dtype(name).str: np.dtype(name)
    for name in (
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float32",
        "float64",
    )
}

# Header keys, in one place so codec and tests agree.
HEADER_KEYS = ("schema", "type", "source", "seq", "t_ns", "session", "reply_to", "body", "arrays")


@dataclass(frozen=True)
class Envelope:
    """Who sent a message, when, and in which order.

    Attributes
    ----------
    schema
        Wire-format version (`SCHEMA_VERSION` for anything decoded successfully).
    type
        Message type name (the class name in the registry, e.g. ``"SpikeBatch"``).
    source
        Name of the sending component; sequence numbers count per source.
    seq
        Per-source counter, +1 per message, starting at 0 when the source starts.
    t_ns
        Sender's ``time.monotonic_ns()`` when the message was encoded (system-wide on
        Linux, so comparable across processes on one machine).
    session
        Recording-session id, ``""`` when there is none.
    topic
        The first frame (PUB/SUB filter), by default the type name.
    reply_to
        For a reply, the ``seq`` of the request it answers; otherwise ``None``.
    """

    schema: int
    type: str
    source: str
    seq: int
    t_ns: int
    session: str = ""
    topic: str = ""
    reply_to: int | None = None
