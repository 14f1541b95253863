"""Rig rules beyond the bad-file corpus: acquisition kinds, endpoints, ports, geometry."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from config_helpers import DELETE, ROOT, write_variant

from closedloop.config import load_rig
from closedloop.errors import ConfigError

EXAMPLE = "rigs/example_openephys.yaml"


def _rig_error(tmp_path: Path, shipped: str, changes: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_rig(write_variant(tmp_path, shipped, changes))
    return str(caught.value)


def test_openephys_needs_the_photodiode_line(tmp_path: Path) -> None:
    message = _rig_error(tmp_path, EXAMPLE, {"acquisition.photodiode_line": DELETE})
    assert "acquisition.photodiode_line: required when kind is openephys" in message


@pytest.mark.parametrize("endpoint", ["localhost:5557", "tcp://127.0.0.1", "http://127.0.0.1:5557"])
def test_bad_event_endpoint(tmp_path: Path, endpoint: str) -> None:
    message = _rig_error(tmp_path, EXAMPLE, {"acquisition.event_endpoint": endpoint})
    assert "acquisition.event_endpoint: must look like tcp://HOST:PORT or ipc://PATH" in message


def test_event_port_out_of_range(tmp_path: Path) -> None:
    message = _rig_error(tmp_path, EXAMPLE, {"acquisition.event_endpoint": "tcp://127.0.0.1:70000"})
    assert "port must be 1..65535, got 70000" in message


def test_ipc_endpoint_and_remote_host_are_accepted(tmp_path: Path) -> None:
    rig = load_rig(write_variant(tmp_path, EXAMPLE, {"acquisition.event_endpoint": "ipc:///tmp/oe-events"}))
    assert rig.acquisition.event_port is None
    # The same port number on another machine is no clash.
    rig = load_rig(
        write_variant(
            tmp_path, EXAMPLE, {"acquisition.event_endpoint": "tcp://10.0.0.5:5600", "network.host": "127.0.0.1"}
        )
    )
    assert rig.acquisition.event_port == ("10.0.0.5", 5600)
    assert rig.network.endpoint("stimulus") == "tcp://127.0.0.1:5600"


def test_port_range(tmp_path: Path) -> None:
    assert "network.ports.model: must be <= 65535, got 70000" in _rig_error(
        tmp_path, EXAMPLE, {"network.ports.model": 70000}
    )


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_good_devices(tmp_path: Path, device: str) -> None:
    assert load_rig(write_variant(tmp_path, EXAMPLE, {"compute.device": device})).compute.device == device


@pytest.mark.parametrize("device", ["gpu", "CUDA", "cuda:", "cuda:x", "cuda0", "mps"])
def test_bad_devices(tmp_path: Path, device: str) -> None:
    assert "compute.device: must be 'auto', 'cpu', 'cuda' or 'cuda:N'" in _rig_error(
        tmp_path, EXAMPLE, {"compute.device": device}
    )


def test_kind_specific_keys(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "01.mat").write_bytes(b"")
    replay = load_rig(
        write_variant(
            tmp_path,
            "rigs/sim.yaml",
            {"acquisition": {"kind": "replay", "archive": "data/01.mat", "speed": 2.0}},
        )
    )
    # a path in a rig file is taken from the rig file's folder
    assert (replay.acquisition.archive, replay.acquisition.speed) == (str(tmp_path / "data/01.mat"), 2.0)
    message = _rig_error(tmp_path, "rigs/sim.yaml", {"acquisition.archive": "data/01.mat"})
    assert "acquisition.archive: only used when kind is replay, but kind is sim" in message
    message = _rig_error(tmp_path, EXAMPLE, {"acquisition.speed": 2.0})
    assert "acquisition.speed: only used when kind is sim or replay, but kind is openephys" in message


def test_negative_speed(tmp_path: Path) -> None:
    assert "acquisition.speed: must be >= 0, got -1" in _rig_error(tmp_path, "rigs/sim.yaml", {"acquisition.speed": -1})


def test_non_square_pixels(tmp_path: Path) -> None:
    assert "display.height_cm: pixels are not square" in _rig_error(tmp_path, EXAMPLE, {"display.height_cm": 40})


def test_photodiode_patch_larger_than_screen(tmp_path: Path) -> None:
    message = _rig_error(tmp_path, EXAMPLE, {"display.photodiode.size_px": 2000})
    assert "display.photodiode.size_px: larger than the screen (1920×1080 px)" in message


def test_disabled_photodiode_may_sit_under_the_aperture(tmp_path: Path) -> None:
    changes = {
        "display.photodiode": {"enabled": False, "corner": "bottom_left", "size_px": 200},
        "stimulus.centre_deg": [-22, -11],
        "stimulus.aperture_diameter_deg": 2,
    }
    assert load_rig(write_variant(tmp_path, EXAMPLE, changes)).display.photodiode.enabled is False
    changes["display.photodiode"]["corner"] = "top_right"
    changes["display.photodiode"]["enabled"] = True
    assert load_rig(write_variant(tmp_path, EXAMPLE, changes)).display.photodiode.corner == "top_right"


def test_degrees_to_pixels() -> None:
    display = load_rig(ROOT / EXAMPLE).display
    assert display.to_pixels(0, 0) == pytest.approx((960, 540))
    column, row = display.to_pixels(10, -10)
    offset_px = 57 * math.tan(math.radians(10)) * 1920 / 53.1
    assert column == pytest.approx(960 + offset_px)
    assert row == pytest.approx(540 + 57 * math.tan(math.radians(10)) * 1080 / 29.9)
    # Near the centre one degree spans about pixels_per_degree pixels.
    assert display.to_pixels(0.5, 0)[0] - display.to_pixels(-0.5, 0)[0] == pytest.approx(
        display.pixels_per_degree, rel=1e-4
    )
    assert display.frame_ms == pytest.approx(1000 / 120)
