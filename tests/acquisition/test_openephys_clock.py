"""Which stream is the session clock: named, learned from the photodiode, or the one stream sending."""

from __future__ import annotations

from closedloop.acquisition import openephys_clock
from closedloop.acquisition.openephys_clock import OtherStream, StreamClocks
from closedloop.acquisition.openephys_format import OpenEphysEvent


def _spike(stream: str, sample: int = 300) -> OpenEphysEvent:
    return OpenEphysEvent("spike", sample, 30000.0, stream, electrode="Electrode 1", sorted_id=1)


def _ttl(stream: str, line: int, sample: int = 600) -> OpenEphysEvent:
    return OpenEphysEvent("ttl", sample, 30000.0, stream, line=line, state=1)


def test_the_photodiode_ttl_decides_and_releases_what_waited():
    clocks = StreamClocks(streams=[OtherStream("B", 2.0)], photodiode_wire_line=0, settle_s=60)
    assert clocks.hold(_spike("B")) == [] and clocks.hold(_spike("A")) == []
    assert clocks.hold(_ttl("A", line=3)) == []  # another line decides nothing
    ready = clocks.hold(_ttl("A", line=0))
    assert clocks.clock_stream == "A" and clocks.decided_by == "photodiode TTL" and len(ready) == 4
    assert [clocks.place(e) for e in ready[:2]] == [(1, 2.01), (0, 0.01)]  # B converted with its offset
    assert clocks.place(_spike("C")) is None  # unlisted: refused
    assert clocks.stream_names() == ["A", "B"]


def test_the_only_stream_not_listed_becomes_the_clock_after_settling():
    clocks = StreamClocks(streams=[OtherStream("B")], photodiode_wire_line=0, settle_s=0.0)
    clocks.hold(_spike("B"))
    assert not clocks.known  # B is listed as an *other* stream: it cannot be the clock
    assert clocks.hold(_spike("A")) and clocks.clock_stream == "A"
    assert clocks.place(_spike("B")) is None  # listed without offset_s: refused, never mixed


def test_waiting_is_bounded(monkeypatch):
    monkeypatch.setattr(openephys_clock, "MAX_HELD", 5)
    clocks = StreamClocks(photodiode_wire_line=0, settle_s=60)
    for i in range(8):
        clocks.hold(_spike("A" if i % 2 else "B", sample=i))
    assert len(clocks.held) == 5 and clocks.held_dropped == 3
    for i in range(500):
        clocks.hold(_spike(f"S{i}"))
    assert len(clocks.heard) <= openephys_clock.MAX_STREAM_NAMES
