"""Codec round trips for every message type, and rejection of bad frames."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from closedloop.messages import (
    MESSAGE_TYPES,
    SCHEMA_VERSION,
    Accepted,
    BlockRequest,
    BlockStatus,
    CodecError,
    Error,
    FitRequest,
    Heartbeat,
    ModelUpdated,
    PredictRequest,
    Predictions,
    Responses,
    SpikeBatch,
    StimulusShown,
    SyncEvent,
    SynthesizeRequest,
    SynthesizeResult,
    as_bytes,
    decode,
    describe,
    encode,
)

RNG = np.random.default_rng(0)


def one_of_each() -> list:
    images = RNG.random((3, 8, 8), dtype=np.float32)
    return [
        SpikeBatch(
            unit_ids=np.array([3, 1, 2], np.int32), times=[0.5, 0.51, 0.52], channels=np.array([7, 7, 9], np.int32)
        ),
        SpikeBatch(unit_ids=np.array([], np.int64), times=np.array([])),
        SyncEvent(line=1, state=1, time=12.25),
        StimulusShown(stimulus_id=4, trial=10, block=2, flip_time=100.125, n_frames=30, dropped_frames=1),
        BlockRequest(
            block=3, kind="synthesized", stimulus_ids=[5, 6, 7, 5], repeats=4, image_ids=[5, 6, 7], pixels=images
        ),
        BlockRequest(block=0, kind="natural", stimulus_ids=[1, 2]),
        Responses(block=1, trial_ids=[0, 1, 2], stimulus_ids=[4, 4, 5], rates=RNG.random((3, 2)), unit_ids=[11, 12]),
        FitRequest(
            block=1,
            stimulus_ids=[4, 4, 5, 6],
            rates=RNG.random((4, 2)),
            unit_ids=[11, 12],
            image_ids=[4, 5, 6],
            images=images,
        ),
        FitRequest(block=2, stimulus_ids=[4], rates=RNG.random((1, 2)), unit_ids=[11, 12], refit=False),
        FitRequest(
            block=3,
            stimulus_ids=[7, 8],
            rates=RNG.random((2, 2)),
            unit_ids=[11, 12],
            image_ids=[7, 8, 9],
            images=images,
            parent_ids=[4, -1, 5],
        ),
        Accepted(in_reply_to=3, version=2, detail="refit queued"),
        ModelUpdated(version=7, metrics={"r": 0.41, "ccnorm": float("nan")}),
        ModelUpdated(version=8, metrics={"r": 0.5}, unit_ids=[11, 12], heldout_r=[0.4, np.nan]),
        SynthesizeRequest(unit_ids=[11, 12], targets=[20.0, np.nan], seed=3, steps=50),
        SynthesizeResult(
            unit_ids=[11, 12, 12],
            targets=[1.0, 2.0, 3.0],
            images=images,
            achieved=[1.1, 1.9, 3.2],
            model_version=7,
            seed=3,
        ),
        SynthesizeResult(
            unit_ids=[11, 12],
            targets=[1.0, np.nan],
            images=images[:2],
            achieved=[1.1, 40.0],
            model_version=7,
            spread=[0.5, 4.0],
            start_ids=[5, -1],
        ),
        PredictRequest(images=images),
        Predictions(rates=RNG.random((3, 2)).astype(np.float32), unit_ids=[11, 12], model_version=7),
        PredictRequest(images=images, stimulus_ids=[1, 2, 3]),
        Predictions(rates=RNG.random((3, 2)), unit_ids=[11, 12], model_version=7, stimulus_ids=[1, 2, 3]),
        BlockStatus(block=2, kind="natural", state="started", iteration=1, n_trials=12),
        BlockStatus(block=3, kind="fit", state="flagged", detail="2 photodiode edges missing"),
        Heartbeat(state="running", steps=12),
        Error(code="no_model", message="no model fitted yet", in_reply_to=4),
    ]


def test_every_registered_type_has_a_sample() -> None:
    assert {type(m).__name__ for m in one_of_each()} == set(MESSAGE_TYPES)


@pytest.mark.parametrize("message", one_of_each(), ids=lambda m: type(m).__name__)
def test_round_trip_through_bytes(message) -> None:
    frames = encode(message, source="adapter", seq=41, session="s1", t_ns=123, reply_to=None)
    decoded = decode(as_bytes(frames))
    assert decoded.message.same_as(message)
    env = decoded.envelope
    assert (env.schema, env.type, env.source, env.seq, env.t_ns, env.session, env.topic) == (
        SCHEMA_VERSION,
        type(message).__name__,
        "adapter",
        41,
        123,
        "s1",
        type(message).__name__,
    )
    assert decoded.nbytes == sum(len(f) for f in as_bytes(frames))
    assert isinstance(describe(message), dict)


def test_decoded_arrays_are_read_only_views_of_the_frames() -> None:
    frames = as_bytes(encode(SpikeBatch(unit_ids=[1, 2], times=[0.1, 0.2]), source="a", seq=0))
    message = decode(frames).message
    assert not message.times.flags.owndata and not message.times.flags.writeable
    assert np.shares_memory(message.times, np.frombuffer(frames[3], np.uint8))


def test_reply_to_and_custom_topic_travel() -> None:
    frames = encode(Error(code="x", message="y"), source="server", seq=2, reply_to=9, topic="errors.server")
    env = decode(frames).envelope
    assert env.reply_to == 9 and env.topic == "errors.server"


def test_big_endian_input_is_sent_little_endian() -> None:
    message = SpikeBatch(unit_ids=np.array([1, 2], ">i8"), times=np.array([0.5, 1.0], ">f8"))
    decoded = decode(as_bytes(encode(message, source="a", seq=0))).message
    assert decoded.unit_ids.dtype.str == "<i8" and decoded.times.tolist() == [0.5, 1.0]


def _one_synthesized(**extra) -> SynthesizeResult:
    return SynthesizeResult(
        unit_ids=[1], targets=[1.0], images=np.zeros((1, 2, 2)), achieved=[1.0], model_version=1, **extra
    )


@pytest.mark.parametrize(
    "build, error",
    [
        (lambda: SpikeBatch(unit_ids=[0.5], times=[1.0]), TypeError),
        (lambda: SpikeBatch(unit_ids=[1, 2], times=[1.0]), ValueError),
        (lambda: SpikeBatch(unit_ids=[[1]], times=[[1.0]]), ValueError),
        (lambda: SyncEvent(line=True, state=1, time=0.0), TypeError),
        (lambda: SyncEvent(line=0, state=1, time=float("inf")), ValueError),
        (lambda: Responses(block=0, trial_ids=[0], stimulus_ids=[0], rates=[[1.0, 2.0]], unit_ids=[1]), ValueError),
        (lambda: ModelUpdated(version=1, metrics={"r": "high"}), TypeError),
        (lambda: BlockRequest(block=0, kind="x", stimulus_ids=[1], repeats=0), ValueError),
        (lambda: BlockRequest(block=0, kind="x", stimulus_ids=[1], pixels=np.zeros((1, 2, 2))), ValueError),
        (lambda: PredictRequest(images=np.zeros((1, 2, 2), complex)), TypeError),
        (
            lambda: FitRequest(block=0, stimulus_ids=[1], rates=[[1.0]], unit_ids=[1], images=np.zeros((1, 2, 2))),
            ValueError,
        ),
        (lambda: FitRequest(block=0, stimulus_ids=[1], rates=[[1.0]], unit_ids=[1], refit=1), TypeError),
        (lambda: ModelUpdated(version=1, unit_ids=[1, 2], heldout_r=[0.5]), ValueError),
        (lambda: Predictions(rates=[[1.0]], unit_ids=[1], model_version=0, stimulus_ids=[1, 2]), ValueError),
        (lambda: _one_synthesized(start_ids=[1, 2]), ValueError),
        (lambda: FitRequest(block=0, stimulus_ids=[1], rates=[[1.0]], unit_ids=[1], parent_ids=[2]), ValueError),
        (
            lambda: FitRequest(
                block=0,
                stimulus_ids=[],
                rates=np.zeros((0, 1)),
                unit_ids=[1],
                image_ids=[1],
                images=np.zeros((1, 2, 2)),
                parent_ids=[2, 3],
            ),
            ValueError,
        ),
        (lambda: _one_synthesized(start_ids=[0.5]), TypeError),
    ],
)
def test_invalid_messages_cannot_be_built(build, error) -> None:
    with pytest.raises(error):
        build()


def _valid(seq: int = 0) -> list[bytes]:
    return as_bytes(encode(SpikeBatch(unit_ids=[1, 2, 3], times=[0.1, 0.2, 0.3]), source="a", seq=seq))


def _with_header(**changes) -> list[bytes]:
    frames = _valid()
    header = msgpack.unpackb(frames[1])
    header.update(changes)
    return [frames[0], msgpack.packb(header), *frames[2:]]


@pytest.mark.parametrize(
    "frames, kind",
    [
        (_with_header(schema=SCHEMA_VERSION + 1), "wrong_schema"),
        (_with_header(schema="1"), "wrong_schema"),
        (_with_header(type="Teleport"), "unknown_type"),
        ([b"SpikeBatch", b"\xc1not msgpack", b"", b""], "malformed"),
        ([b"SpikeBatch", msgpack.packb([1, 2, 3])], "malformed"),
        (_valid()[:3] + [_valid()[3][:-1]], "malformed"),  # truncated array frame
        (_valid()[:3], "malformed"),  # array frame missing
        (_valid() + [b"extra"], "malformed"),
        (_with_header(arrays=[["unit_ids", "|O", [3]], ["times", "<f8", [3]]]), "malformed"),
        (_with_header(arrays=[["unit_ids", "<i8", [-3]], ["times", "<f8", [3]]]), "malformed"),
        (_with_header(arrays=[["secret", "<i8", [3]], ["times", "<f8", [3]]]), "malformed"),
        (_with_header(seq=-1), "malformed"),
        (_with_header(source=None), "malformed"),
        (_with_header(body={"unexpected": 1}), "malformed"),
        (_with_header(body={"unit_ids": 1}), "malformed"),
        ([b"only one frame"], "malformed"),
    ],
)
def test_bad_frames_are_rejected_with_their_kind(frames, kind) -> None:
    with pytest.raises(CodecError) as caught:
        decode(frames)
    assert caught.value.kind == kind


def test_oversized_message_is_rejected_before_parsing() -> None:
    with pytest.raises(CodecError) as caught:
        decode(_valid(), max_bytes=50)
    assert caught.value.kind == "oversized"
    decode(_valid(), max_bytes=10_000)


def test_bool_frames_must_hold_zero_or_one() -> None:
    from closedloop.messages.base import ArraySpec
    from closedloop.messages.codec import _arrays
    from closedloop.messages.types import SpikeBatch as Cls

    class Flags(Cls):
        ARRAYS = {"unit_ids": ArraySpec(("bool",), 1)}

    with pytest.raises(CodecError):
        _arrays([["unit_ids", "|b1", [2]]], [memoryview(b"\x01\x07")], Flags)


def test_encode_refuses_unregistered_objects() -> None:
    with pytest.raises(TypeError):
        encode(object(), source="a", seq=0)  # type: ignore[arg-type]
