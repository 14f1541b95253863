"""PUB/SUB between two processes: a burst arrives whole; a vanishing peer is survived."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from closedloop.messages import Heartbeat, SpikeBatch
from closedloop.transport import DEFAULT_RCVHWM, DEFAULT_SNDHWM, Subscriber, ipc_endpoint, tcp_endpoint

CHILD = Path(__file__).with_name("publisher_child.py")


def start_child(endpoint: str, source: str, mode: str, n: int = 0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(CHILD), endpoint, source, mode, str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def wait_for_heartbeat(sub: Subscriber, child: subprocess.Popen, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = sub.recv(100)
        if got is not None and isinstance(got.message, Heartbeat):
            child.stdin.write("go\n")
            child.stdin.flush()
            return
        assert child.poll() is None, "publisher process died during start-up"
    raise AssertionError("no heartbeat from the publisher process")


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_burst_below_hwm_arrives_without_loss(transport: str, tmp_path) -> None:
    n = 5000
    assert n < min(DEFAULT_SNDHWM, DEFAULT_RCVHWM)
    endpoint = tcp_endpoint() if transport == "tcp" else ipc_endpoint("burst", directory=str(tmp_path))
    with Subscriber(endpoint, bind=True, name="burst") as sub:
        child = start_child(sub.endpoint, "burster", "burst", n)
        try:
            wait_for_heartbeat(sub, child)
            assert child.stdout.readline().strip() == "sent"
            batches, spikes = 0, 0
            while batches < n:
                got = sub.recv(5000)
                assert got is not None, f"only {batches} of {n} batches arrived"
                if isinstance(got.message, SpikeBatch):
                    batches += 1
                    spikes += len(got.message.times)
            assert spikes == 100 * n
            assert (sub.stats.gaps, sub.stats.missing, sub.stats.rejected) == (0, 0, 0)
        finally:
            child.kill()
            child.wait()


def test_publisher_killed_mid_stream_then_restarted() -> None:
    with Subscriber(tcp_endpoint(), bind=True, name="vanish") as sub:
        first = start_child(sub.endpoint, "adapter", "stream")
        try:
            wait_for_heartbeat(sub, first)
            received = 0
            while received < 200:
                if sub.recv(2000) is not None:
                    received += 1
            first.kill()  # SIGKILL: no goodbye, possibly mid-send
            first.wait()
            sub.drain()
            assert sub.recv(300) is None  # nothing more, and no exception
            second = start_child(sub.endpoint, "adapter", "stream")
            try:
                wait_for_heartbeat(sub, second)
                for _ in range(50):
                    assert sub.recv(2000) is not None
            finally:
                second.kill()
                second.wait()
        finally:
            first.kill()
            first.wait()
    # the second process's first messages may be lost while it connects: still one restart
    assert sub.stats.restarts == 1
    assert sub.stats.gaps == 0 and sub.stats.rejected == 0
