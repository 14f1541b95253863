"""Small seeded archives of both layouts and a tiny model configuration for fast fits."""

from __future__ import annotations

import pytest

from closedloop.sim.archive import ArchiveSpec, make_archive

TINY_YAML = """\
# a network small enough to fit in about a second
model:
  core_filters: [4]
  core_kernels: [5]
  dense_units: 16
  max_epochs: 10
  patience: 5
  stop_check_every: 5
"""


@pytest.fixture(scope="session")
def archives(tmp_path_factory):
    """A session-layout .h5, a pvc-8 .mat and a session with too few images to split."""
    folder = tmp_path_factory.mktemp("archives")
    paths = {
        "session": folder / "s1.h5",
        "pvc8": folder / "01.mat",
        "few": folder / "few.h5",
    }
    make_archive(paths["session"], ArchiveSpec(layout="session", seed=1, n_units=6, n_images=40, n_repeats=4))
    make_archive(paths["pvc8"], ArchiveSpec(layout="pvc8", seed=2, n_units=6, n_images=30, n_repeats=3))
    make_archive(paths["few"], ArchiveSpec(layout="session", seed=3, n_units=4, n_images=8, n_repeats=3))
    return paths


@pytest.fixture(scope="session")
def tiny_config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("configs") / "tiny.yaml"
    path.write_text(TINY_YAML)
    return path


TINY_SPACE_YAML = """\
# a search space of networks small enough to fit in about a second
layers: [1, 2]
filters: [4]
kernels: [3, 5]
pooling: [[1, 1], [2, 2]]
dense_units: [8, 16]
dropout_keep: [0.5, 0.9]
learning_rate: [1.0e-3, 1.0e-2]
"""


@pytest.fixture(scope="session")
def tiny_space_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("spaces") / "space.yaml"
    path.write_text(TINY_SPACE_YAML)
    return path


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def ray_cluster():
    """One Ray head with 2 CPUs on 127.0.0.1 for every Ray test (its start-up takes seconds).

    Started with ``ray start --head --block`` in its own process group, which the
    teardown ends (SIGTERM, then SIGKILL).
    """
    import os
    import shutil
    import signal
    import socket
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path

    port = _free_port()
    temp = tempfile.mkdtemp(prefix="clray-")  # short: Ray's socket paths must stay under 107 characters
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    command = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--head",
        f"--port={port}",
        "--num-cpus=2",
        "--num-gpus=0",
        "--include-dashboard=false",
        f"--temp-dir={temp}",
        "--block",
    ]
    log = open(Path(temp) / "ray-start.log", "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "ray start failed: " + (Path(temp) / "ray-start.log").read_text()[-2000:]
                    ) from None
                time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()
        shutil.rmtree(temp, ignore_errors=True)
