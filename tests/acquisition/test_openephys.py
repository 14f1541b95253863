"""Open Ephys: the Event Broadcaster format, and our adapter against a stand-in broadcaster in another process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from closedloop.acquisition import OpenEphysAdapter
from closedloop.acquisition.openephys_clock import OtherStream
from closedloop.acquisition.openephys_format import EventFormatError, decode, encode_spike, encode_ttl
from closedloop.acquisition.openephys_units import UnitIdError, UnitIds, UnitSource, electrode_layout
from closedloop.runtime import Supervisor
from closedloop.transport import Subscriber, free_tcp_ports, random_tcp_endpoint

from .helpers import collect

CHILD = Path(__file__).with_name("fake_broadcaster.py")
sys.path.insert(0, str(CHILD.parent))
from fake_broadcaster import START, A, B  # noqa: E402

OFFSET_B = (START[A] - START[B]) / 30000.0


def test_format_reads_what_the_plugin_writes():
    frames = encode_ttl(30000, 30000.0, 2, True)
    assert b'\r\n  "state": true' in frames[1]  # JUCE's layout and a C++ bool
    ttl = decode(frames)
    assert (ttl.event_type, ttl.time_s, ttl.line, ttl.state) == ("ttl", 1.0, 2, 1)
    assert decode(encode_ttl(5, 30000.0, 0, False, pretty=False)).state == 0
    documented = json.loads(frames[1])
    documented["state"] = 1  # the docs' example writes 1
    assert decode([frames[0], json.dumps(documented).encode()]).state == 1
    spike = decode(encode_spike(15000, 30000.0, "Tetrode 4", 2, amplitudes=(1.0, 2.0, 3.0, 4.0), stream="B"))
    assert (spike.electrode, spike.sorted_id, spike.time_s, spike.stream) == ("Tetrode 4", 2, 0.5, "B")
    with pytest.raises(EventFormatError) as error:
        decode([b"\x00\x00", b"\x80"])
    assert error.value.kind == "wrong_format" and "Format set to JSON" in error.value.message


def test_unit_ids_are_distinct_per_stream_and_kind_and_read_back():
    ids = UnitIds({"left probe": 7}, stream_names=["Acquisition Board", "Probe B"])
    cases = {
        (0, "Electrode 3", 1): 3001,
        (0, "Tetrode 1", 2): 20_001_002,
        (0, "Stereotrode 1", 0): 10_001_000,
        (1, "Electrode 3", 1): 100_003_001,
        (0, "left probe", 4): 30_007_004,
        (0, "electrode 12", 2): 12002,
    }
    for (slot, name, sorted_id), unit in cases.items():
        assert ids.unit_id(slot, name, sorted_id) == unit
    assert ids.describe(100_003_001) == UnitSource("Probe B", "Electrode 3", 1)
    assert ids.describe(30_007_004) == UnitSource("Acquisition Board", "left probe", 4)
    assert ids.table([20_001_002])[0] == {
        "unit_id": 20_001_002,
        "stream": "Acquisition Board",
        "electrode": "Tetrode 1",
        "sorted_id": 2,
    }
    for name, sorted_id, kind in (
        ("TT12", 1, "unmapped_electrode"),
        ("Electrode 3000000", 1, "out_of_range"),
        ("Electrode 1099511627776", 1, "out_of_range"),
        ("Electrode 1", 1000, "out_of_range"),
    ):
        with pytest.raises(UnitIdError) as error:
            ids.unit_id(0, name, sorted_id)
        assert error.value.kind == kind
    names, sorted_ids = electrode_layout([5, 5, 0])
    assert names == ["Electrode 6", "Electrode 6", "Electrode 1"] and sorted_ids.tolist() == [1, 2, 1]


def test_adapter_translates_a_two_stream_gui_and_counts_bad_input():
    event_endpoint, endpoint = random_tcp_endpoint(), random_tcp_endpoint()
    child = subprocess.Popen(
        [sys.executable, str(CHILD), event_endpoint], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    adapter = OpenEphysAdapter(
        endpoint, event_endpoint, sample_rate_hz=30000.0, photodiode_line=1, streams=[OtherStream(B, OFFSET_B)]
    )
    supervisor = Supervisor([adapter], mode="thread")
    try:
        with Subscriber(endpoint, name="test") as sub:
            assert supervisor.start()
            collect(sub, lambda c: any(e.line == 8 for e in c.sync), timeout_s=20)  # broadcaster connected
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "sent"
            got = collect(sub, lambda c: len(c.times) == 4 and len([e for e in c.sync if e.line == 1]) == 2)
            time.sleep(0.1)
        report = supervisor.shutdown()
    finally:
        child.stdin.close()
        child.wait(10)
    assert report.ok
    assert adapter.clocks.clock_stream == A
    t0 = START[A] / 30000.0
    edges = [(e.line, e.state, round(e.time - t0, 9)) for e in got.sync if e.line == 1]
    assert edges == [(1, 1, 0.1), (1, 0, 0.2)]  # GUI line 1 = the plugin's line 0; stream B's TTL not mixed in
    assert [round(t - t0, 9) for t in got.times] == [0.11, 0.11, 0.115, 0.21]  # stream B moved onto A's clock
    assert sorted(got.unit_ids.tolist()[:2]) == [3001, 100_003_001]  # same name, two streams: two units
    assert got.unit_ids.tolist()[2:] == [20_002_002, 3000]  # a tetrode; sorted_id 0 = unsorted activity
    counts = adapter.counts
    assert (counts["malformed"], counts["wrong_format"], counts["unknown_type"]) == (6, 4, 2)
    assert (counts["oversized"], counts["unmapped_electrode"], counts["out_of_range"]) == (1, 1, 3)
    assert counts["other_stream"] == 1 and counts["spikes"] == 4


def test_unsorted_spikes_can_be_dropped_and_unlisted_streams_are_refused():
    adapter = OpenEphysAdapter(
        "inproc://unused", "inproc://unused-events", photodiode_line=1, clock_stream="A", drop_unsorted=True
    )
    out = ([], [], [], [])
    adapter.translate(encode_spike(30, 30000.0, "Electrode 2", 0, stream="A"), out)
    adapter.translate(encode_spike(30, 30000.0, "Electrode 2", 1, stream="B"), out)
    adapter.translate(encode_spike(60, 30000.0, "Electrode 2", 1, stream="A"), out)
    assert out[0] == [2001] and out[2] == [0.002]
    assert adapter.counts["unsorted_dropped"] == 1 and adapter.counts["other_stream"] == 1


def test_serve_acquisition_translates_the_stand_in_with_the_rig_file(tmp_path):
    from closedloop.config import load_rig

    from .openephys_rig import openephys_rig

    event_port = free_tcp_ports(1)[0]
    rig_path = openephys_rig(tmp_path, event_port, streams=f'[{{name: "{B}", offset_s: {OFFSET_B!r}}}]')
    rig = load_rig(rig_path)
    child = subprocess.Popen(
        [sys.executable, str(CHILD), f"tcp://127.0.0.1:{event_port}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    serve = subprocess.Popen(
        [sys.executable, "-m", "closedloop.cli", "serve", "acquisition", "--rig", str(rig_path), "--timeout", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with Subscriber(rig.network.endpoint("spikes"), name="test") as sub:
            collect(sub, lambda c: any(e.line == 8 for e in c.sync), timeout_s=30)  # both connected
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "sent"
            got = collect(sub, lambda c: len(c.times) == 4, timeout_s=20)
    finally:
        child.stdin.close()
        child.wait(10)
        serve.terminate()
        out, _ = serve.communicate(timeout=20)
    assert serve.returncode == 0, out
    assert sorted(got.unit_ids.tolist()) == [3000, 3001, 20_002_002, 100_003_001]
    assert [e.line for e in got.sync if e.state == 1 and e.line != 8] == [1]
    assert "Raw Binary" in out or "Format set to JSON" in out  # the wrong-format line reached the log
