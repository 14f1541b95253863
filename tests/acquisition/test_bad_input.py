"""Bad input to the simulated array: counted, logged, and the array keeps running."""

from __future__ import annotations

import socket
import time

import msgpack
import pytest
import zmq

from closedloop.acquisition import BrainSpec, SimulatedArray
from closedloop.cli import main
from closedloop.messages import StimulusShown, encode
from closedloop.runtime import Supervisor
from closedloop.transport import Subscriber, random_tcp_endpoint

from .helpers import collect, wait_for_heartbeat


def test_junk_frames_wrong_schema_and_junk_bytes_are_survived():
    presenter = zmq.Context.instance().socket(zmq.PUB)
    presenter.setsockopt(zmq.LINGER, 0)
    port = presenter.bind_to_random_port("tcp://127.0.0.1")
    endpoint = random_tcp_endpoint()
    array = SimulatedArray(
        endpoint, f"tcp://127.0.0.1:{port}", BrainSpec(scenario="sim/default.yaml", n_units=5, seed=1), speed=0, seed=2
    )
    supervisor = Supervisor([array], mode="thread", setup_timeout_s=60)
    try:
        with Subscriber(endpoint, name="test") as sub:
            assert supervisor.start()
            wait_for_heartbeat(sub)
            time.sleep(0.2)
            header = msgpack.unpackb(encode(StimulusShown(0, 0, 0, 1.0, 6), source="p", seq=0)[1])
            presenter.send_multipart([b"StimulusShown", msgpack.packb(dict(header, schema=99))])
            presenter.send_multipart([b"StimulusShown", b"\x00junk"])
            presenter.send_multipart([b"x"])
            with socket.create_connection(("127.0.0.1", int(endpoint.rsplit(":", 1)[1]))) as raw:
                raw.sendall(b"\xff" * 5000)  # not ZMTP at all, on our spike port
            presenter.send_multipart(encode(StimulusShown(1, 1, 0, 2.0, 6), source="p", seq=5))
            got = collect(sub, lambda c: len(c.onsets(1, 0)) == 1)
        supervisor.shutdown()
    finally:
        presenter.close()
    stats = array.stimuli.stats
    assert (stats.wrong_schema, stats.malformed) == (1, 2)
    assert array.counts["stimuli"] == 1 and len(got.onsets(1)) == 1


@pytest.mark.parametrize("component", ["runner", "presenter", "model"])
def test_serve_says_what_a_component_needs(capsys, component):
    assert main(["serve", component, "--rig", "rigs/sim.yaml"]) == 2
    err = capsys.readouterr().err
    assert "needs --protocol" in err and len(err.strip().splitlines()) == 1
