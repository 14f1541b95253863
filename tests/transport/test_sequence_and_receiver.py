"""Sequence checking per source, and a Receiver that counts instead of crashing."""

from __future__ import annotations

import gc
import logging
import weakref

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop.messages import SCHEMA_VERSION, Heartbeat, SpikeBatch, as_bytes, encode
from closedloop.transport import Receiver, SequenceTracker, SeqStatus


def test_in_order_gap_and_restarts() -> None:
    tracker = SequenceTracker()
    # 0 after 11: restart; 3 after 1 is a gap; 2 after 3: restart whose seq 0, 1 were lost
    statuses = [tracker.observe("a", s).status for s in (5, 6, 7, 10, 11, 0, 1, 3, 2, 3)]
    assert statuses == [
        SeqStatus.FIRST,
        SeqStatus.IN_ORDER,
        SeqStatus.IN_ORDER,
        SeqStatus.GAP,
        SeqStatus.IN_ORDER,
        SeqStatus.RESTART,
        SeqStatus.IN_ORDER,
        SeqStatus.GAP,
        SeqStatus.RESTART,
        SeqStatus.IN_ORDER,
    ]
    counts = tracker.sources["a"]
    assert (counts.received, counts.gaps, counts.missing, counts.restarts) == (10, 2, 3, 2)


def test_sources_are_tracked_independently() -> None:
    tracker = SequenceTracker()
    for seq in range(5):
        tracker.observe("spikes", seq)
        tracker.observe("sync", seq * 2)  # sync loses every other message
    assert tracker.sources["spikes"].gaps == 0
    assert (tracker.sources["sync"].gaps, tracker.sources["sync"].missing) == (4, 4)
    assert tracker.totals()["missing"] == 4


def test_new_session_is_a_restart_not_a_gap() -> None:
    tracker = SequenceTracker()
    tracker.observe("a", 0, "s1")
    tracker.observe("a", 1, "s1")
    assert tracker.observe("a", 900, "s2").status is SeqStatus.RESTART
    assert tracker.sources["a"].missing == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=60))
def test_missing_count_equals_skipped_numbers_of_increasing_streams(increments) -> None:
    seqs, seq = [], 0
    for inc in increments:
        seq += inc + 1
        seqs.append(seq)
    tracker = SequenceTracker()
    for s in seqs:
        tracker.observe("a", s)
    assert tracker.sources["a"].missing == seqs[-1] - seqs[0] + 1 - len(seqs)


def frames(seq: int, source: str = "adapter", session: str = "") -> list[bytes]:
    return as_bytes(encode(SpikeBatch(unit_ids=[1], times=[0.1]), source=source, seq=seq, session=session))


def test_receiver_counts_gaps_and_restarts(caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver("test")
    with caplog.at_level(logging.WARNING):
        for seq in (0, 1, 2, 5, 6, 9, 0, 1):
            assert receiver.accept(frames(seq)) is not None
    stats = receiver.stats
    assert (stats.received, stats.gaps, stats.missing, stats.restarts) == (8, 2, 4, 1)
    assert "LOST 2 message(s) from 'adapter'" in caplog.text
    assert "restarted" in caplog.text


def _rewritten(**changes) -> list[bytes]:
    good = frames(0)
    header = msgpack.unpackb(good[1])
    header.update(changes)
    return [good[0], msgpack.packb(header), *good[2:]]


def test_receiver_counts_every_kind_of_rejection_and_keeps_going(caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver("test", max_bytes=200, log_interval_s=60)
    bad = [
        [b"junk"],
        [b"t", b"\xc1\xc1"],  # malformed
        _rewritten(schema=SCHEMA_VERSION + 5),
        _rewritten(type="NoSuchThing"),
        as_bytes(encode(SpikeBatch(unit_ids=list(range(100)), times=[0.0] * 100), source="a", seq=0)),
        frames(0)[:3] + [frames(0)[3][:4]],  # truncated array frame
    ]
    with caplog.at_level(logging.WARNING):
        for f in bad * 3:
            assert receiver.accept(f) is None
        assert receiver.accept(frames(0)) is not None
    s = receiver.stats
    assert (s.malformed, s.wrong_schema, s.unknown_type, s.oversized, s.received) == (9, 3, 3, 3, 1)
    assert s.rejected == 18 and s.as_dict()["rejected"] == 18
    # rate-limited: one line per kind within the interval, not one per message
    assert len([r for r in caplog.records if "rejected" in r.getMessage()]) == 4


def test_a_rejected_message_is_freed_at_once_not_by_the_cyclic_gc() -> None:
    # a server flooded with large junk held every rejected buffer until the cyclic GC ran (GiBs)
    receiver = Receiver("test", max_bytes=200, log_interval_s=60)
    bad = [
        [b"t", b"\xc1\xc1"],
        _rewritten(type="NoSuchThing"),
        as_bytes(encode(SpikeBatch(unit_ids=list(range(100)), times=[0.0] * 100), source="a", seq=0)),
    ]
    gc.disable()
    try:
        for message in bad:
            buffers = [np.frombuffer(frame, np.uint8).copy() for frame in message]
            alive = [weakref.ref(b) for b in buffers]
            assert receiver.accept(buffers) is None
            del buffers
            assert [ref() for ref in alive] == [None] * len(alive), receiver.rejection
    finally:
        gc.enable()
    assert receiver.rejection is not None and receiver.rejection.kind == "oversized"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.binary(max_size=32), max_size=5), max_size=10))
def test_receiver_never_raises_on_junk(batches) -> None:
    receiver = Receiver("junk", log_interval_s=60)
    for f in batches:
        receiver.accept(f)
    assert receiver.stats.rejected + receiver.stats.received == len(batches)
    assert receiver.accept(as_bytes(encode(Heartbeat(), source="x", seq=0))) is not None
