"""CURVE on our sockets: the rig's certificates, ZAP refusals counted, identities, Error replies."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time

import msgpack
import numpy as np
import pytest
import zmq

from closedloop.cli import main
from closedloop.config import load_rig
from closedloop.messages import Error, Heartbeat, PredictRequest, decode, encode
from closedloop.transport import (
    PLAIN,
    Publisher,
    RequestClient,
    RequestServer,
    SocketSecurity,
    Subscriber,
    random_tcp_endpoint,
)
from closedloop.transport.keys import KeysError, create_keys, load_keys, secret_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rig") / "keys"
    create_keys(folder)
    return folder


def curve(folder, role: str) -> SocketSecurity:
    return SocketSecurity(load_keys(folder, role))


def wait_for(condition, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_keys_are_made_private(keys) -> None:
    for role in ("server", "runner", "model", "monitor"):
        secret = secret_file(keys, role)
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert stat.S_IMODE((keys / "public" / f"{role}.key").stat().st_mode) == 0o644
    assert stat.S_IMODE((keys / "private").stat().st_mode) == 0o700
    loaded = load_keys(keys, "runner")
    assert loaded.peers[loaded.public_key] == "runner" and len(loaded.peers) == 5
    with pytest.raises(KeysError, match="exist already"):
        create_keys(keys)


def test_a_readable_or_missing_private_key_is_refused(tmp_path) -> None:
    create_keys(tmp_path)
    os.chmod(secret_file(tmp_path, "model"), 0o644)
    with pytest.raises(KeysError, match="chmod 600"):
        load_keys(tmp_path, "model")
    secret_file(tmp_path, "runner").unlink()
    with pytest.raises(KeysError, match="closedloop keys init"):
        load_keys(tmp_path, "runner")


def test_curve_request_reply_names_the_peer_by_role(keys) -> None:
    with (
        RequestServer(random_tcp_endpoint(), source="server", security=curve(keys, "model")) as server,
        RequestClient(server.endpoint, source="runner", security=curve(keys, "runner")) as client,
    ):
        assert wait_for(lambda: client.send(Heartbeat()) is not None)
        request = server.recv(2000)
        assert request is not None and request.user == "runner"
        server.reply(request, Error(code="x", message="y"))
        assert client.recv(2000) is not None
        assert server.refused == 0


def test_curve_stream_flows_and_counts_by_identity(keys) -> None:
    with (
        Publisher(random_tcp_endpoint(), source="sim-array", security=curve(keys, "acquisition")) as pub,
        Subscriber(pub.endpoint, security=curve(keys, "runner")) as sub,
    ):
        assert wait_for(lambda: pub.send(Heartbeat()) is not None and sub.recv(10) is not None)
        sub.drain()
        # The binding PUB is the CURVE server (its key is checked by the SUB); ZAP names clients only,
        # so a connecting SUB tracks its one publisher by source name.
        assert list(sub.receiver.sequences.sources) == ["sim-array"]


IDLE_GUARD = """
import resource, sys, time
from closedloop.transport import RequestServer, random_tcp_endpoint, SocketSecurity
from closedloop.transport.keys import load_keys
with RequestServer(random_tcp_endpoint(), source="server", security=SocketSecurity(load_keys(sys.argv[1], "model"))):
    pass  # the socket is gone, its context's guard stays: it must wait, not spin
start = resource.getrusage(resource.RUSAGE_SELF)
time.sleep(1.0)
end = resource.getrusage(resource.RUSAGE_SELF)
print(end.ru_utime + end.ru_stime - start.ru_utime - start.ru_stime)
"""


def test_an_idle_guard_uses_no_cpu(keys) -> None:
    # a guard with nothing to watch once spun at 100 % of a core with the GIL held
    done = subprocess.run(
        [sys.executable, "-c", IDLE_GUARD, str(keys)], capture_output=True, text=True, timeout=120, check=True
    )
    assert float(done.stdout.split()[-1]) < 0.2


def test_binding_sockets_opened_one_after_another_are_each_watched(keys) -> None:
    # each takes the memory, hence the id(), of the one closed before it, in the same thread:
    # their refusal monitors once shared a name, and binding failed with "Address already in use"
    for _ in range(200):
        with RequestServer("tcp://127.0.0.1:*", source="server", security=curve(keys, "model")):
            pass
    with RequestServer("tcp://127.0.0.1:*", source="server", security=curve(keys, "model")) as server:
        with RequestClient(server.endpoint, source="runner", security=PLAIN) as rogue:
            rogue.send(Heartbeat())
            assert wait_for(lambda: server.refused >= 1)  # the last one's monitor counts its refusals


@pytest.mark.parametrize("intruder", ["plain", "unknown key"])
def test_a_peer_without_an_allowed_key_is_refused_and_counted(keys, intruder) -> None:
    security = PLAIN
    if intruder == "unknown key":
        public, secret = zmq.curve_keypair()
        rig = load_keys(keys, "runner")
        security = SocketSecurity(type(rig)(rig.folder, "runner", public, secret, rig.server_public, b"", {}))
    with RequestServer("tcp://127.0.0.1:*", source="server", security=curve(keys, "model")) as server:
        with RequestClient(server.endpoint, source="runner", security=security) as rogue:
            rogue.send(Heartbeat())
            assert server.recv(500) is None
            assert wait_for(lambda: server.refused >= 1)


def test_only_from_refuses_other_roles_with_an_error(keys) -> None:
    with (
        RequestServer(
            random_tcp_endpoint(), source="presenter", security=curve(keys, "presenter"), only_from="runner"
        ) as server,
        RequestClient(server.endpoint, source="runner", security=curve(keys, "monitor")) as client,
    ):
        assert wait_for(lambda: client.send(Heartbeat()) is not None)
        assert server.recv(500) is None
        reply = client.recv(2000)
        assert isinstance(reply.message, Error) and reply.message.code == "not_allowed"
        assert server.not_allowed == 1


def _junk(seq: int = 7) -> dict[str, list]:
    header = {
        "schema": 1,
        "type": "PredictRequest",
        "source": "x",
        "seq": seq,
        "t_ns": 0,
        "session": "",
        "reply_to": None,
        "body": {},
    }
    good = encode(PredictRequest(images=np.zeros((1, 4, 4), np.float32)), source="x", seq=seq)
    return {
        "random bytes": [os.urandom(64)],
        "empty frame": [b""],
        "no frames but topic": [b"PredictRequest"],
        "wrong schema": [b"t", msgpack.packb({**header, "schema": 99})],
        "unknown type": [b"t", msgpack.packb({**header, "type": "Nope", "arrays": []})],
        "absurd shape": [
            b"t",
            msgpack.packb({**header, "arrays": [["images", "<f4", [10**12, 10**6, 10**6]]]}),
            b"\0" * 16,
        ],
        "object dtype": [b"t", msgpack.packb({**header, "arrays": [["images", "|O", [1, 4, 4]]]}), b"\0" * 16],
        "oversized": [*good[:2], b"\0" * 40_000, b"\0" * 40_000],  # each frame under the cap, all above
        "bad body": [b"t", msgpack.packb({**header, "body": {"nope": 1}, "arrays": []})],
    }


@pytest.mark.parametrize("kind", list(_junk()))
def test_every_undecodable_request_gets_an_error(kind) -> None:
    with RequestServer(random_tcp_endpoint(), source="server", max_bytes=65_536, security=PLAIN) as server:
        dealer = zmq.Context.instance().socket(zmq.DEALER)
        dealer.linger = 0
        dealer.connect(server.endpoint)
        try:
            dealer.send_multipart(_junk()[kind])
            assert server.recv(300) is None
            assert dealer.poll(2000), f"no reply to {kind}"
            decoded = decode(dealer.recv_multipart())
            assert isinstance(decoded.message, Error), kind
            if kind not in ("random bytes", "empty frame", "no frames but topic"):
                assert decoded.envelope.reply_to == 7 and decoded.message.in_reply_to == 7
        finally:
            dealer.close(0)
        assert server.error_replies == 1


def test_a_frame_above_the_cap_disconnects_its_sender_and_the_server_goes_on() -> None:
    with (
        RequestServer(random_tcp_endpoint(), source="server", max_bytes=65_536, security=PLAIN) as server,
        RequestClient(server.endpoint, source="big", security=PLAIN) as big,
    ):

        def send_big() -> bool:
            try:
                big.socket.send_multipart([b"t", b"h", b"\0" * 200_000], zmq.NOBLOCK)
            except zmq.Again:
                return False
            return True

        assert wait_for(send_big)
        assert server.recv(300) is None
        with RequestClient(server.endpoint, source="small", security=PLAIN) as small:
            assert wait_for(lambda: small.send(Heartbeat()) is not None)
            assert server.recv(2000) is not None


def _rig(tmp_path, host: str, security: str | None) -> str:
    text = re.sub(r"\n *security:[^\n]*", "", open(os.path.join(ROOT, "rigs", "sim.yaml")).read())
    text = text.replace("host: 127.0.0.1", f"host: {host}" + (f"\n  security: {security}" if security else ""))
    path = tmp_path / "rig.yaml"
    path.write_text(text)
    return str(path)


def test_validate_refuses_an_open_host_without_keys(tmp_path, capsys) -> None:
    assert main(["validate", _rig(tmp_path, "0.0.0.0", None)]) == 2
    assert "not loopback" in capsys.readouterr().err
    assert main(["validate", _rig(tmp_path, "0.0.0.0", "none")]) == 2
    assert "open to the network" in capsys.readouterr().err
    rig = _rig(tmp_path, "0.0.0.0", None)
    assert main(["keys", "init", rig]) == 0
    assert main(["validate", rig]) == 0
    assert load_rig(rig).network.curve
    assert not load_rig(_rig(tmp_path, "127.0.0.1", None)).network.curve
    assert load_rig(_rig(tmp_path, "127.0.0.1", "curve")).network.curve


def test_fuzzed_requests_are_each_answered_or_taken() -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    valid = encode(PredictRequest(images=np.zeros((1, 4, 4), np.float32)), source="x", seq=3)
    frame = st.binary(max_size=300)
    mutated = st.tuples(st.integers(0, 2), st.integers(0, 400), st.binary(min_size=1, max_size=8)).map(
        lambda edit: [
            bytes(f) if i != edit[0] else bytes(f)[: edit[1]] + edit[2] + bytes(f)[edit[1] + 1 :]
            for i, f in enumerate(valid)
        ]
    )
    with RequestServer(random_tcp_endpoint(), source="server", max_bytes=65_536, security=PLAIN) as server:
        dealer = zmq.Context.instance().socket(zmq.DEALER)
        dealer.linger = 0
        dealer.connect(server.endpoint)
        try:

            @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
            @given(st.one_of(st.lists(frame, min_size=1, max_size=5), mutated))
            def one(frames):
                dealer.send_multipart(frames)
                assert server.socket.poll(2000)
                request = server.recv(0)  # reads this one message: taken, or answered with an Error
                if request is not None:
                    return  # still a valid message: served as usual
                assert dealer.poll(2000), f"no reply to {frames!r}"
                reply = decode(dealer.recv_multipart())
                assert isinstance(reply.message, Error)

            one()
        finally:
            dealer.close(0)


def test_a_curve_request_socket_with_a_high_water_mark_of_one_still_delivers(keys) -> None:
    with (
        RequestServer("tcp://127.0.0.1:*", source="server", hwm=1, security=curve(keys, "model")) as server,
        RequestClient(server.endpoint, source="runner", hwm=1, security=curve(keys, "runner")) as client,
    ):
        assert wait_for(lambda: client.send(Heartbeat()) is not None)
        assert server.recv(2000) is not None


def test_a_component_in_its_own_process_uses_the_parents_security(keys) -> None:
    from curve_component import WhoIsIt

    from closedloop.runtime import Supervisor
    from closedloop.transport import use_security

    endpoint = random_tcp_endpoint()
    previous = use_security(curve(keys, "model"))
    try:
        supervisor = Supervisor([WhoIsIt("who", endpoint)], mode="process", setup_timeout_s=60)
        assert supervisor.start()
        try:
            with RequestClient(endpoint, source="runner", security=curve(keys, "runner")) as client:
                assert wait_for(lambda: client.send(Heartbeat()) is not None, 20)
                reply = client.recv(5000)
                assert reply is not None and reply.message.message == "runner"
            with RequestClient(endpoint, source="x", security=PLAIN) as rogue:
                rogue.send(Heartbeat())
                assert rogue.recv(1000) is None
        finally:
            assert supervisor.shutdown().ok
    finally:
        use_security(previous)
