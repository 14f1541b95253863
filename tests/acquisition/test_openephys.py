"""Open Ephys: the Event Broadcaster format, and our adapter against a broadcaster in another process."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from closedloop.acquisition import OpenEphysAdapter
from closedloop.acquisition.openephys_format import (
    EventFormatError, decode, electrode_layout, electrode_number, encode_spike, encode_ttl, unit_id_for,
)
from closedloop.runtime import Supervisor
from closedloop.transport import Subscriber, random_tcp_endpoint

from .helpers import collect

CHILD = Path(__file__).with_name("fake_broadcaster.py")


def test_format_round_trip_and_unit_mapping():
    ttl = decode(encode_ttl(30000, 30000.0, 2, 1))
    assert (ttl.event_type, ttl.time_s, ttl.line, ttl.state) == ("ttl", 1.0, 2, 1)
    spike = decode(encode_spike(15000, 30000.0, "Electrode 4", 2, amplitudes=(1.0, 2.0)))
    assert (spike.electrode, spike.sorted_id, spike.time_s) == ("Electrode 4", 2, 0.5)
    assert electrode_number("TT12") == 12 and electrode_number("SE") is None
    assert electrode_number("left", {"left": 3}) == 3
    assert unit_id_for(4, 2) == 4002
    names, sorted_ids = electrode_layout([5, 5, 0])
    assert names == ["Electrode 6", "Electrode 6", "Electrode 1"] and sorted_ids.tolist() == [1, 2, 1]
    with pytest.raises(EventFormatError) as error:
        decode([b"\x00\x00", b"\x80"])
    assert error.value.kind == "malformed"


def test_adapter_translates_events_and_counts_bad_input():
    event_endpoint, endpoint = random_tcp_endpoint(), random_tcp_endpoint()
    child = subprocess.Popen([sys.executable, str(CHILD), event_endpoint], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    adapter = OpenEphysAdapter(endpoint, event_endpoint, sample_rate_hz=30000.0)
    supervisor = Supervisor([adapter], mode="thread")
    try:
        with Subscriber(endpoint, name="test") as sub:
            assert supervisor.start()
            collect(sub, lambda c: any(e.line == 7 for e in c.sync), timeout_s=20)  # broadcaster connected
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "sent"
            got = collect(sub, lambda c: len(c.times) == 3 and len([e for e in c.sync if e.line == 1]) == 2)
            time.sleep(0.1)
        report = supervisor.shutdown()
    finally:
        child.stdin.close()
        child.wait(10)
    assert report.ok
    edges = [(e.line, e.state, e.time) for e in got.sync if e.line == 1]
    assert edges == [(1, 1, 0.1), (1, 0, 0.2)]
    assert got.times.tolist() == [0.11, 0.115, 0.21]
    assert got.unit_ids.tolist() == [3001, 12002, 3000]  # sorted_id 0 = the electrode's unsorted activity
    assert [c for b in got.batches for c in b.channels.tolist()] == [3, 12, 3]
    counts = adapter.counts
    assert counts["malformed"] == 7 and counts["unknown_type"] == 2
    assert counts["oversized"] == 1 and counts["unmapped_electrode"] == 1
    assert counts["spikes"] == 3
