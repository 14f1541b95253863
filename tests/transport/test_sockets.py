"""The socket wrappers in one process: inproc/tcp/ipc, requests, junk on the port."""

from __future__ import annotations

import socket as pysocket
import time

import numpy as np
import pytest
import zmq

from closedloop.messages import Error, Heartbeat, PredictRequest, Predictions, SpikeBatch, SyncEvent, as_bytes, encode
from closedloop.transport import (
    OPEN_EPHYS_PORTS,
    Publisher,
    RequestClient,
    RequestServer,
    Subscriber,
    check_endpoint,
    free_tcp_port,
    free_tcp_ports,
    inproc_endpoint,
    ipc_endpoint,
    random_tcp_endpoint,
    tcp_endpoint,
)


def connect_pair(endpoint: str, context: zmq.Context, **sub_kwargs) -> tuple[Publisher, Subscriber]:
    pub = Publisher(endpoint, source="adapter", session="s1", context=context)
    sub = Subscriber(pub.endpoint, context=context, **sub_kwargs)
    # PUB/SUB joins late: send until the subscription has propagated.
    for _ in range(200):
        pub.send(Heartbeat())
        if sub.recv(10) is not None:
            sub.drain()
            return pub, sub
    raise AssertionError("subscriber never connected")


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.mark.parametrize(
    "make_endpoint",
    [lambda folder: inproc_endpoint(), lambda folder: tcp_endpoint(), lambda folder: ipc_endpoint("t", folder)],
)
def test_pub_sub_round_trip(make_endpoint, context, tmp_path) -> None:
    pub, sub = connect_pair(make_endpoint(str(tmp_path)), context)
    with pub, sub:
        sent = SpikeBatch(unit_ids=np.arange(1000, dtype=np.int32), times=np.linspace(0, 1, 1000))
        seq = pub.send(sent)
        got = sub.recv(2000)
        assert got is not None and got.message.same_as(sent)
        assert (got.envelope.source, got.envelope.seq, got.envelope.session) == ("adapter", seq, "s1")
        assert sub.stats.gaps == 0


def test_bind_to_any_port_reports_the_port(context) -> None:
    with Publisher(tcp_endpoint(), source="a", context=context) as pub:
        port = int(pub.endpoint.rsplit(":", 1)[1])
        assert pub.endpoint.startswith("tcp://127.0.0.1:") and port > 0


def test_topic_filter(context) -> None:
    pub, sub = connect_pair(inproc_endpoint(), context, topics=[Heartbeat, "SyncEvent"])
    with pub, sub:
        pub.send(SpikeBatch(unit_ids=[1], times=[0.0]))
        pub.send(SyncEvent(line=0, state=1, time=0.5))
        got = sub.recv(1000)
        assert isinstance(got.message, SyncEvent)
        assert sub.recv(50) is None
        # the filtered SpikeBatch still used a sequence number: a gap, reported as such
        assert sub.stats.gaps == 1


def test_junk_frames_from_a_raw_peer_are_counted(context) -> None:
    with Subscriber(inproc_endpoint(), bind=True, context=context) as sub:
        raw = context.socket(zmq.PUB)
        raw.connect(sub.endpoint)
        good = as_bytes(encode(Heartbeat(), source="raw", seq=0))
        try:
            for _ in range(200):  # until subscribed
                raw.send_multipart(good)
                if sub.recv(10):
                    break
            raw.send_multipart([b"junk", b"\x00\xff"])
            raw.send(b"single frame")
            raw.send_multipart(good[:1] + [b"not msgpack"])
            raw.send_multipart(as_bytes(encode(Heartbeat(), source="raw2", seq=0)))
            got = sub.recv(1000)
            assert got is not None and got.envelope.source == "raw2"
            assert sub.stats.malformed == 3
        finally:
            raw.close(0)


def test_junk_bytes_on_a_tcp_port_do_not_break_the_socket(context) -> None:
    server = RequestServer(tcp_endpoint(), source="server", context=context)
    host, port = server.endpoint[len("tcp://") :].rsplit(":", 1)
    with pysocket.create_connection((host, int(port))) as raw:
        raw.sendall(b"GET / HTTP/1.0\r\n\r\n" + bytes(range(256)) * 4)
        time.sleep(0.05)
    with server, RequestClient(server.endpoint, source="client", context=context) as client:
        time.sleep(0.05)
        assert client.send(Heartbeat()) is not None
        request = server.recv(2000)
        assert request is not None and request.decoded.envelope.source == "client"


def test_request_reply_matches_replies_to_requests(context) -> None:
    with (
        RequestServer(inproc_endpoint(), source="model", context=context) as server,
        RequestClient(server.endpoint, source="runner", context=context) as client,
    ):
        assert client.send(PredictRequest(images=np.zeros((1, 4, 4), np.float32))) == 0
        first = server.recv(1000)
        server.reply(first, Predictions(rates=[[1.0]], unit_ids=[5], model_version=3))  # answered late

        def answer() -> None:
            request = server.recv(1000)
            server.reply(request, Error(code="busy", message="refitting", in_reply_to=request.decoded.envelope.seq))

        seq_expected = client.seq
        import threading

        helper = threading.Thread(target=answer)
        helper.start()
        reply = client.request(PredictRequest(images=np.zeros((1, 4, 4), np.float32)), timeout_ms=2000)
        helper.join()
        assert reply is not None and reply.envelope.reply_to == seq_expected
        assert isinstance(reply.message, Error) and reply.message.in_reply_to == seq_expected
        assert client.stale_replies == 1


def test_client_without_server_does_not_block(context) -> None:
    with RequestClient(random_tcp_endpoint(), source="runner", context=context) as client:
        start = time.monotonic()
        assert client.send(Heartbeat()) is None
        assert client.request(Heartbeat(), timeout_ms=1000) is None
        assert time.monotonic() - start < 0.5
        assert client.unsent == 2


def test_reply_to_a_vanished_client_is_counted(context) -> None:
    with RequestServer(inproc_endpoint(), source="model", context=context) as server:
        client = RequestClient(server.endpoint, source="runner", context=context)
        client.send(Heartbeat())
        request = server.recv(1000)
        client.close()
        time.sleep(0.05)
        assert server.reply(request, Heartbeat()) is False
        assert server.undeliverable == 1


def test_endpoints_drawn_one_after_another_never_share_a_port() -> None:
    # The kernel may hand the same free port to two draws in a row; a server whose request and
    # events endpoints were drawn so could not bind the second ("Address already in use").
    endpoints = [random_tcp_endpoint() for _ in range(2000)]
    assert len(set(endpoints)) == len(endpoints)


def test_endpoint_helpers() -> None:
    assert free_tcp_port() not in OPEN_EPHYS_PORTS
    ports = free_tcp_ports(40)
    assert len(set(ports)) == 40  # a rig's six ports drawn at once never collide
    assert inproc_endpoint("x") != inproc_endpoint("x")
    assert ipc_endpoint("x").startswith("ipc://")
    with pytest.raises(ValueError):
        check_endpoint("udp://127.0.0.1:1")
    with pytest.raises(ValueError):
        tcp_endpoint(70000)
    with pytest.raises(ValueError):
        ipc_endpoint("x", directory="/tmp/" + "d" * 120)
    with pytest.raises(OSError):
        Publisher("tcp://127.0.0.1:notaport", source="a")
