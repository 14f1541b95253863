"""`closedloop serve model` as its own process, over TCP on free ports, stopped by SIGTERM or --timeout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from conftest import UNIT_IDS

from closedloop.messages import Accepted, Error, FitRequest, PredictRequest
from closedloop.transport import RequestClient
from closedloop.transport.endpoints import free_tcp_ports

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).with_name("closedloop")


def _rig(tmp_path: Path) -> Path:
    rig = yaml.safe_load((ROOT / "rigs" / "sim.yaml").read_text())
    ports = rig["network"]["ports"]
    ports.update(zip(ports, free_tcp_ports(len(ports))))
    rig["compute"]["device"] = "cpu"
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(rig))
    return path


def _start(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    rig = _rig(tmp_path)
    command = [
        str(SCRIPT),
        "serve",
        "model",
        "--rig",
        str(rig),
        "--protocol",
        str(ROOT / "protocols" / "demo.yaml"),
        *extra,
    ]
    child = subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return child, rig


def _wait_for_line(child: subprocess.Popen, text: str, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        if text in line:
            return line
        if not line and child.poll() is not None:
            raise AssertionError(f"server exited ({child.returncode}): {child.stderr.read()}")
    raise AssertionError(f"no {text!r} line within {timeout_s} s")


def test_serve_model_answers_over_tcp_and_stops_on_sigterm(tmp_path: Path, recording) -> None:
    child, rig = _start(tmp_path, "--out", str(tmp_path / "models"))
    try:
        line = _wait_for_line(child, "serving the model")
        port = yaml.safe_load(rig.read_text())["network"]["ports"]["model"]
        assert f"tcp://127.0.0.1:{port}" in line
        with RequestClient(f"tcp://127.0.0.1:{port}", source="runner") as client:
            time.sleep(0.2)  # the DEALER connects in the background; IMMEDIATE refuses sends until then
            fit = FitRequest(
                block=1,
                stimulus_ids=recording.ids[:2],
                rates=np.full((2, len(UNIT_IDS)), 5.0),
                unit_ids=UNIT_IDS,
                image_ids=recording.ids[:2],
                images=recording.images[:2],
                refit=False,
            )
            reply = client.request(fit, 10_000)
            assert reply is not None and isinstance(reply.message, Accepted) and reply.message.version == 0
            reply = client.request(PredictRequest(images=recording.images[:1]), 10_000)
            assert isinstance(reply.message, Error) and reply.message.code == "no_model"
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0, err
    assert "model: stopped (signal); model version 0" in out and "fit_requests 1" in out
    assert "error:no_model 1" in out


def test_serve_model_stops_after_its_timeout(tmp_path: Path) -> None:
    child, _ = _start(tmp_path, "--timeout", "1")
    out, err = child.communicate(timeout=90)
    assert child.returncode == 0, err
    assert "model: stopped (timeout); model version 0; no requests" in out
