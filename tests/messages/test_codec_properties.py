"""Property-based tests: random arrays round-trip exactly; junk never escapes as anything but CodecError."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar
from unittest.mock import patch

import msgpack
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from closedloop.messages import ALLOWED_DTYPES, MESSAGE_TYPES, CodecError, SpikeBatch, as_bytes, decode, encode
from closedloop.messages.base import ArraySpec, Message

_ALL = tuple(d.name for d in ALLOWED_DTYPES.values())


@dataclass(frozen=True, eq=False)
class AnyArrays(Message):
    """Test-only type accepting every allowed dtype in 1, 2 and 3 dimensions."""

    ARRAYS: ClassVar[dict[str, ArraySpec]] = {
        "one": ArraySpec(_ALL, 1, optional=True),
        "two": ArraySpec(_ALL, 2, optional=True),
        "three": ArraySpec(_ALL, 3, optional=True),
    }
    one: np.ndarray | None = None
    two: np.ndarray | None = None
    three: np.ndarray | None = None
    note: str = ""


def arrays_of(ndim: int):
    dtypes = st.sampled_from(list(ALLOWED_DTYPES.values()))
    shapes = hnp.array_shapes(min_dims=ndim, max_dims=ndim, min_side=0, max_side=6)
    return st.one_of(st.none(), dtypes.flatmap(lambda d: hnp.arrays(d, shapes)))


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(
    one=arrays_of(1),
    two=arrays_of(2),
    three=arrays_of(3),
    note=st.text(max_size=20),
    seq=st.integers(0, 2**63 - 1),
    t_ns=st.integers(-(2**63), 2**63 - 1),
)
def test_random_arrays_round_trip_exactly(one, two, three, note, seq, t_ns) -> None:
    with patch.dict(MESSAGE_TYPES, {"AnyArrays": AnyArrays}):
        message = AnyArrays(one=one, two=two, three=three, note=note)
        decoded = decode(as_bytes(encode(message, source="src", seq=seq, t_ns=t_ns)))
    assert decoded.message.same_as(message)
    for name in ("one", "two", "three"):
        original, received = getattr(message, name), getattr(decoded.message, name)
        if original is not None:  # byte-exact, NaN payloads included
            assert received.tobytes() == original.tobytes()
    assert (decoded.envelope.seq, decoded.envelope.t_ns) == (seq, t_ns)


@FAST
@given(st.lists(st.binary(max_size=64), max_size=6))
def test_junk_frames_raise_only_codec_errors(frames) -> None:
    try:
        decode(frames)
    except CodecError as error:
        assert error.kind in ("malformed", "wrong_schema", "oversized", "unknown_type")


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
header_keys = st.sampled_from(["schema", "type", "source", "seq", "t_ns", "session", "reply_to", "body", "arrays"])


@FAST
@given(
    base=st.booleans(),
    changes=st.dictionaries(header_keys, msgpack_values, max_size=4),
    extra=st.lists(st.binary(max_size=40), max_size=3),
)
def test_well_formed_msgpack_with_junk_fields_raises_only_codec_errors(base, changes, extra) -> None:
    frames = as_bytes(encode(SpikeBatch(unit_ids=[1, 2], times=[0.0, 1.0]), source="a", seq=1))
    header = msgpack.unpackb(frames[1]) if base else {}
    header.update(changes)
    try:
        decode([frames[0], msgpack.packb(header), *(frames[2:] if base else []), *extra])
    except CodecError:
        pass


@FAST
@given(position=st.integers(0, 10_000), value=st.integers(0, 255), frame=st.integers(0, 3))
def test_corrupted_bytes_decode_or_raise_codec_error(position, value, frame) -> None:
    frames = [bytearray(f) for f in as_bytes(encode(SpikeBatch(unit_ids=[1, 2], times=[0.0, 1.0]), source="a", seq=1))]
    if frames[frame]:
        frames[frame][position % len(frames[frame])] = value
    try:
        decode([bytes(f) for f in frames])
    except CodecError:
        pass
