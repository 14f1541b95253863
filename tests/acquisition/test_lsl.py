"""Lab Streaming Layer: real pylsl outlets in this process → `LslAdapter` → runner → session file."""

from __future__ import annotations

import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from closedloop.acquisition import BrainSpec, SimulatedArray
from closedloop.acquisition.lsl import LslAdapter, load_pylsl
from closedloop.cli import main
from closedloop.config import load_rig
from closedloop.errors import ClosedLoopError
from closedloop.messages import SpikeBatch, SyncEvent
from closedloop.runtime import Supervisor
from closedloop.transport import Subscriber, free_tcp_ports, random_tcp_endpoint

from .openephys_rig import PORT_NAMES
from .test_openephys_run import PROTOCOL, SCENARIO

EXAMPLE = "rigs/example_lsl.yaml"


def _pylsl():
    try:
        return load_pylsl()
    except ClosedLoopError as error:
        pytest.skip(f"liblsl cannot load here: {error}")


def test_bad_samples_are_counted_not_fatal():
    adapter = LslAdapter("inproc://unused", "s", "m", photodiode_line=3)
    units, times = adapter.spike_samples(
        [[7], [7.5], [-1], ["12"], [float("nan")], [], [2**60]], [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, float("inf")]
    )
    assert units.tolist() == [7, 12] and times.tolist() == [1.0, 1.3] and adapter.counts["bad_spike"] == 5
    sync = adapter.marker_samples([[1], [2, 0], ["0"], [5], [1, 1, 9], [300, 1]], [2.0, 2.1, 2.2, 2.3, 2.4, 2.5])
    assert sync == [(3, 1, 2.0), (2, 0, 2.1), (3, 0, 2.2), (1, 1, 2.4)] and adapter.counts["bad_marker"] == 2


class _Bridge:
    """Re-sends the simulated array's stream as LSL samples, timestamps on the LSL clock."""

    def __init__(self, pylsl, endpoint: str, names: tuple[str, str], line: int):
        spike_info = pylsl.StreamInfo(names[0], "Spikes", 1, pylsl.IRREGULAR_RATE, "int32", "test-spikes")
        marker_info = pylsl.StreamInfo(names[1], "Markers", 1, pylsl.IRREGULAR_RATE, "int32", "test-markers")
        self.spikes, self.markers = pylsl.StreamOutlet(spike_info), pylsl.StreamOutlet(marker_info)
        self.endpoint, self.line, self.stop = endpoint, line, threading.Event()
        self.zero = pylsl.local_clock()  # the array's time 0 on the LSL clock (speed 1: both on wall time)
        self.sent_edges = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with Subscriber(self.endpoint, name="bridge") as sub:
            while not self.stop.is_set():
                decoded = sub.recv(50)
                message = None if decoded is None else decoded.message
                if isinstance(message, SpikeBatch):
                    for unit, t in zip(message.unit_ids.tolist(), message.times.tolist()):
                        self.spikes.push_sample([unit], self.zero + t)
                elif isinstance(message, SyncEvent) and message.line == self.line:
                    self.markers.push_sample([message.state], self.zero + message.time)
                    self.sent_edges += message.state


def test_lsl_end_to_end_outlet_adapter_runner_session(tmp_path, capsys):
    pylsl = _pylsl()
    suffix = str(free_tcp_ports(1)[0])  # stream names no other test run on this network shares
    names = (f"closedloop-test-spikes-{suffix}", f"closedloop-test-markers-{suffix}")
    text = Path(EXAMPLE).read_text().replace("spike_stream: closedloop-spikes", f"spike_stream: {names[0]}")
    text = text.replace("marker_stream: closedloop-markers", f"marker_stream: {names[1]}")
    text = text.replace("discover_units_s: 10", "discover_units_s: 3")
    for name, port in zip(PORT_NAMES, free_tcp_ports(len(PORT_NAMES))):
        text = text.replace(f"    {name}: 56", f"    {name}: {port} #", 1)
    rig_path = tmp_path / "lsl_rig.yaml"
    rig_path.write_text(text)
    rig = load_rig(rig_path)
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(PROTOCOL)
    array_endpoint = random_tcp_endpoint()
    brain = BrainSpec(scenario=str(scenario), seed=1, size_px=66)
    array = SimulatedArray(
        array_endpoint,
        rig.network.endpoint("stimulus"),
        brain,
        speed=1.0,
        refresh_hz=rig.display.refresh_hz,
        photodiode_line=1,
        seed=2,
        block_endpoint=rig.network.endpoint("responses"),
    )
    bridge = _Bridge(pylsl, array_endpoint, names, line=1)
    # Its own process, not a thread beside the runner and the LSL bridge (one GIL): once, on a shared
    # 2-core machine, a stimulus message reached it 14 ms late and the runner rightly flagged the block.
    supervisor = Supervisor([array], mode="process", setup_timeout_s=60)
    session = tmp_path / "s.h5"
    try:
        bridge.thread.start()
        assert supervisor.start()
        status = main(
            [
                "run",
                str(protocol),
                "--rig",
                str(rig_path),
                "--session",
                str(session),
                "--presenter",
                "headless",
                "--timeout",
                "120",
            ]
        )
    finally:
        supervisor.shutdown()
        bridge.stop.set()
        bridge.thread.join(5)
    captured = capsys.readouterr()
    assert status == 0, captured.out + captured.err
    assert "found 10 units" in captured.out
    with h5py.File(session, "r", locking=False) as file:
        assert not file["blocks/flagged"][()].any()
        assert file["trials/stimulus_id"].shape[0] == 18
        assert sorted(file["units/id"][()].tolist()) == sorted(brain.build().unit_ids.tolist())
        lines, states = file["sync/line"][()], file["sync/state"][()]
        times = file["spikes/time_s"][()]
        assert int(np.sum((lines == 1) & (states == 1))) == 18
        assert times.size > 100 and np.all(np.abs(times - bridge.zero) < 600)  # on the LSL clock, not sim time
