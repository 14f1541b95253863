"""Attacks on the rig's sockets with CURVE on, against live components on 127.0.0.1 random ports.

Each attack that worked on plain sockets (a foreign BlockRequest shown, a foreign
FitRequest training the next model, a rogue first FitRequest locking the runner out,
forged sender names resetting gap counts, a flood) is refused here: a peer without an
allowed key never gets through the handshake (and is counted), and one with another
role's key is refused by the component it talks to.
"""

from __future__ import annotations

import importlib.util
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from closedloop.config import load_protocol, load_rig
from closedloop.messages import Accepted, BlockRequest, Error, FitRequest, PredictRequest, encode
from closedloop.model.model_config import ModelConfig
from closedloop.present import PresenterComponent
from closedloop.runtime import Supervisor
from closedloop.server import ModelServer, ServerSettings
from closedloop.transport import PLAIN, RequestClient, SocketSecurity, Subscriber, random_tcp_endpoint, use_security
from closedloop.transport.keys import RigKeys, create_keys, load_keys

ROOT = Path(__file__).resolve().parents[2]
TINY = ModelConfig(
    core_filters=(4,),
    core_kernels=(5,),
    pool_kernel=2,
    pool_stride=2,
    dense_units=16,
    dropout_keep=1.0,
    learning_rate=1e-2,
    max_epochs=20,
    patience=10,
    stop_check_every=5,
)
UNITS = np.arange(1, 5, dtype=np.int64)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("rig") / "keys"
    create_keys(folder)
    return folder


@pytest.fixture
def curve_on(keys):
    """This process is the rig's runner: components bind with the server key, clients present the runner's."""
    previous = use_security(SocketSecurity(load_keys(keys, "runner")))
    yield keys
    use_security(previous)


def role(keys: Path, name: str) -> SocketSecurity:
    return SocketSecurity(load_keys(keys, name))


def stranger(keys: Path) -> SocketSecurity:
    """A CURVE client that knows the server's public key but holds no allowed key."""
    rig = load_keys(keys, "runner")
    public, secret = zmq.curve_keypair()
    return SocketSecurity(RigKeys(rig.folder, "runner", public, secret, rig.server_public, b"", {}))


def intruders(keys: Path) -> dict[str, SocketSecurity]:
    return {"plain": PLAIN, "unknown key": stranger(keys)}


def eventually(condition, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def ask(client: RequestClient, message, timeout_s: float = 10.0):
    """The reply to ``message`` (``None`` if none in time), once the client has connected."""
    for _ in range(250):
        unsent = client.unsent
        reply = client.request(message, int(timeout_s * 1000))
        if client.unsent == unsent:
            return reply
        time.sleep(0.02)
    raise AssertionError("the client never connected")


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 66, 66)).astype(np.float32)


def fit_request(
    block: int, ids: np.ndarray, *, units: np.ndarray = UNITS, seed: int = 0, refit: bool = False
) -> FitRequest:
    rates = np.random.default_rng(seed).gamma(2.0, 5.0, (len(ids), len(units)))
    return FitRequest(
        block=block,
        stimulus_ids=ids,
        rates=rates,
        unit_ids=units,
        image_ids=ids,
        images=images(len(ids), seed),
        refit=refit,
    )


@pytest.fixture
def server(curve_on):
    settings = ServerSettings(
        request_endpoint=random_tcp_endpoint(),
        events_endpoint=random_tcp_endpoint(),
        model=TINY,
        device="cpu",
        seed=3,
        session="s1",
    )
    component = ModelServer("model", settings)
    supervisor = Supervisor([component], mode="thread")
    assert supervisor.start()
    yield component
    assert supervisor.shutdown().ok


@pytest.fixture
def presenter(curve_on):
    rig = load_rig(ROOT / "rigs" / "sim.yaml")
    timing = load_protocol(ROOT / "protocols" / "demo.yaml").frames(rig)
    component = PresenterComponent(
        "presenter",
        rig=rig,
        timing=timing,
        request_endpoint=random_tcp_endpoint(),
        shown_endpoint=random_tcp_endpoint(),
        presenter="headless",
    )
    supervisor = Supervisor([component], mode="thread")
    assert supervisor.start()
    yield component
    assert supervisor.shutdown().ok


def _block() -> BlockRequest:
    ids = np.arange(900, 920, dtype=np.int64)
    return BlockRequest(block=0, kind="natural", stimulus_ids=ids, image_ids=ids, pixels=images(20))


def test_a_foreign_block_request_is_never_shown(presenter, keys) -> None:
    for name, security in intruders(keys).items():
        with RequestClient(presenter.request_endpoint, source="runner", security=security) as rogue:
            rogue.send(_block())
            assert rogue.recv(500) is None, name
    assert eventually(lambda: presenter.requests.refused >= 2)
    with RequestClient(presenter.request_endpoint, source="runner", security=role(keys, "monitor")) as monitor:
        assert eventually(lambda: monitor.send(_block()) is not None)
        reply = monitor.recv(3000)
        assert isinstance(reply.message, Error) and reply.message.code == "not_allowed"
    time.sleep(0.3)
    assert presenter.blocks_shown == 0 and presenter.requests.not_allowed == 1


def test_a_foreign_fit_request_never_reaches_the_data(server, keys) -> None:
    runner = RequestClient(server.request_endpoint, source="runner", session="s1")
    try:
        ids = np.arange(100, 130, dtype=np.int64)
        reply = ask(runner, fit_request(1, ids))
        assert isinstance(reply.message, Accepted)
        trials = server.store.n_trials
        for name, security in intruders(keys).items():
            with RequestClient(server.request_endpoint, source="runner", session="s1", security=security) as rogue:
                rogue.send(fit_request(1, ids, seed=9, refit=True))
                assert rogue.recv(500) is None, name
        assert eventually(lambda: server.requests.refused >= 2)
        # a rig key of another role, even with the session's token, is not the session's owner
        with RequestClient(
            server.request_endpoint, source="runner", session="s1", security=role(keys, "monitor")
        ) as monitor:
            answer = ask(monitor, fit_request(1, ids, seed=9, refit=True))
            assert isinstance(answer.message, Error) and answer.message.code == "not_owner"
        assert server.store.n_trials == trials and server.counts["refits_started"] == 0
    finally:
        runner.close()


def test_a_rogue_first_fit_request_cannot_lock_the_runner_out(server, keys) -> None:
    lockout = fit_request(0, np.arange(5, dtype=np.int64), units=np.asarray([-7]))
    with RequestClient(
        server.request_endpoint, source="runner", session="s1", security=role(keys, "presenter")
    ) as rogue:
        reply = ask(rogue, lockout)
        assert isinstance(reply.message, Error) and reply.message.code == "not_owner"
    with RequestClient(server.request_endpoint, source="runner", session="s1", security=stranger(keys)) as rogue:
        rogue.send(lockout)
        assert rogue.recv(500) is None
    with RequestClient(server.request_endpoint, source="runner", session="s1") as runner:
        reply = ask(runner, fit_request(1, np.arange(100, 130, dtype=np.int64)))
        assert isinstance(reply.message, Accepted), reply.message
    np.testing.assert_array_equal(server.store.unit_ids, UNITS)
    assert (server.owner.user, server.owner.token) == ("runner", "s1")


def test_forged_sender_names_do_not_touch_the_runners_counts(server, keys) -> None:
    ping = PredictRequest(images=np.zeros((0, 1, 1), np.float32))
    with (
        RequestClient(server.request_endpoint, source="runner", session="s1") as runner,
        RequestClient(server.request_endpoint, source="monitor", security=role(keys, "monitor")) as forger,
    ):
        for _ in range(3):
            assert ask(runner, ping) is not None
        assert eventually(lambda: forger.send(ping) is not None)
        for seq in (1000, 0, 5000, 3):  # "runner", numbered to look like losses and restarts
            forger.socket.send_multipart(encode(ping, source="runner", seq=seq, session="s1"))
        for _ in range(5):
            assert forger.recv(2000) is not None
        assert ask(runner, ping) is not None
    sources = server.requests.receiver.sequences.sources
    mine = sources["runner@runner"]
    assert (mine.received, mine.gaps, mine.restarts) == (4, 0, 0)
    forged = sources["runner@monitor"]
    assert forged.gaps + forged.restarts >= 3


def test_a_flood_without_keys_is_refused_and_the_runner_is_still_answered(server, keys) -> None:
    ping = PredictRequest(images=np.zeros((0, 1, 1), np.float32))
    context = zmq.Context.instance()
    floods = []
    try:
        for index in range(20):
            rogue = context.socket(zmq.DEALER)
            rogue.linger = 0
            if index % 2:
                stranger(keys).apply(rogue, server.request_endpoint, bind=False)
            rogue.connect(server.request_endpoint)
            for _ in range(50):
                try:
                    rogue.send_multipart([b"PredictRequest", b"\0" * 100_000], zmq.NOBLOCK)
                except zmq.Again:
                    break
            floods.append(rogue)
        with RequestClient(server.request_endpoint, source="runner", session="s1") as runner:
            for _ in range(5):
                started = time.perf_counter()
                assert ask(runner, ping) is not None
                assert time.perf_counter() - started < 1.0
        assert eventually(lambda: server.requests.refused >= 20)
        assert server.requests.stats.rejected == 0 and server.requests.error_replies == 0
    finally:
        for rogue in floods:
            rogue.close(0)


def test_a_subscriber_without_a_key_hears_nothing(server, keys) -> None:
    with (
        Subscriber(server.events_endpoint, security=PLAIN) as eavesdropper,
        RequestClient(server.request_endpoint, source="runner", session="s1") as runner,
    ):
        reply = ask(runner, fit_request(1, np.arange(100, 140, dtype=np.int64), refit=True))
        assert isinstance(reply.message, Accepted)
        assert eavesdropper.recv(3000) is None
        assert eventually(lambda: server.events.refused >= 1)


def _runner_test_files(tmp_path: Path, ports: list[int]) -> tuple[Path, Path]:
    """The runner tests' tiny rig and protocol, with CURVE on and the rig's keys next to the rig."""
    spec = importlib.util.spec_from_file_location("runner_helpers", ROOT / "tests" / "runner" / "helpers.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(helpers.SCENARIO.format(n_units=helpers.N_UNITS))
    names = ("stimulus", "spikes", "model", "model_events", "responses", "blocks")
    listed = "\n".join(f"    {name}: {port}" for name, port in zip(names, ports))
    rig = tmp_path / "rig.yaml"
    rig.write_text(
        helpers.RIG.format(scenario=scenario)
        + f"network:\n  host: 127.0.0.1\n  security: curve\n  keys: keys\n  ports:\n{listed}\n"
    )
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(helpers.PROTOCOL.format(top_k=2, iterations=1))
    return rig, protocol


@pytest.mark.slow
def test_every_component_as_its_own_process_with_curve(tmp_path) -> None:
    # closedloop serve acquisition | presenter | model | runner, each with its own role's key.
    ports = []
    for _ in range(6):
        ports.append(int(random_tcp_endpoint().rsplit(":", 1)[1]))
    rig, protocol = _runner_test_files(tmp_path, ports)
    cli = [sys.executable, "-m", "closedloop.cli"]
    refused = subprocess.run(
        [*cli, "serve", "runner", "--rig", str(rig), "--protocol", str(protocol)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "closedloop keys init" in refused.stderr, refused.stderr
    assert subprocess.run([*cli, "keys", "init", str(rig)], capture_output=True, timeout=60).returncode == 0
    session = tmp_path / "s.h5"
    serving = [
        subprocess.Popen(
            [*cli, "serve", component, "--rig", str(rig), "--protocol", str(protocol), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for component, extra in (("acquisition", []), ("presenter", ["--presenter", "headless"]), ("model", []))
    ]
    try:
        with RequestClient(f"tcp://127.0.0.1:{ports[2]}", source="runner", security=PLAIN) as rogue:
            rogue.send(fit_request(0, np.arange(5, dtype=np.int64), units=np.asarray([-7])))
            runner = subprocess.run(
                [*cli, "serve", "runner", "--rig", str(rig), "--protocol", str(protocol), "--session", str(session)],
                capture_output=True,
                text=True,
                timeout=240,
            )
            assert rogue.recv(0) is None
    finally:
        for process in serving:
            process.send_signal(signal.SIGTERM)
        outputs = [process.communicate(timeout=20)[0] for process in serving]
    assert runner.returncode == 0, runner.stdout + runner.stderr
    assert "model v2" in runner.stdout
    assert [process.returncode for process in serving] == [0, 0, 0]
    # each says at the end how many connections it refused (the rogue tried the model server only)
    assert re.search(r"model: .*; \d+ connections? without an allowed key refused", outputs[2]), outputs[2]
    assert "without an allowed key" not in outputs[0] + outputs[1]


@pytest.mark.slow
def test_closedloop_run_with_curve_on_the_rigs_tcp_ports(tmp_path) -> None:
    # One process, every component a thread, all talking over TCP with the runner's key.
    rig, protocol = _runner_test_files(tmp_path, [int(random_tcp_endpoint().rsplit(":", 1)[1]) for _ in range(6)])
    cli = [sys.executable, "-m", "closedloop.cli"]
    assert subprocess.run([*cli, "keys", "init", str(rig)], capture_output=True, timeout=60).returncode == 0
    run = subprocess.run(
        [*cli, "run", str(protocol), "--rig", str(rig), "--session", str(tmp_path / "s.h5")],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "model v2" in run.stdout and "5 finished" in run.stdout
