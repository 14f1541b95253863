"""The rigs and protocols shipped in the repository load, agree, and document every key."""

from __future__ import annotations

import dataclasses
import math
import pickle
import re
import typing

import pytest
from config_helpers import ROOT

from closedloop.config import Protocol, Rig, load_protocol, load_rig, validate
from closedloop.config.blocks import Block

RIGS = sorted(path.name for path in (ROOT / "rigs").glob("*.yaml"))
PROTOCOLS = sorted(path.name for path in (ROOT / "protocols").glob("*.yaml"))


def test_the_expected_files_are_shipped() -> None:
    assert {"sim.yaml", "example_openephys.yaml"} <= set(RIGS)
    assert {"demo.yaml", "kindel2017.yaml"} <= set(PROTOCOLS)


@pytest.mark.parametrize("rig_name", RIGS)
@pytest.mark.parametrize("protocol_name", PROTOCOLS)
def test_every_shipped_pair_validates(rig_name: str, protocol_name: str) -> None:
    rig = load_rig(ROOT / "rigs" / rig_name)
    protocol = load_protocol(ROOT / "protocols" / protocol_name)
    summary = validate(rig, protocol)
    assert f"rig '{rig.name}'" in summary
    assert f"protocol '{protocol.name}'" in summary
    assert f"{protocol.total_trials} trials" in summary


def test_sim_rig_values() -> None:
    rig = load_rig(ROOT / "rigs" / "sim.yaml")
    assert rig.acquisition.kind == "sim"
    assert rig.display.refresh_hz == 60.0
    assert rig.display.gamma is None
    assert rig.path == str(ROOT / "rigs" / "sim.yaml")
    assert rig.source_text == (ROOT / "rigs" / "sim.yaml").read_text()
    # 1920 px over 53.1 cm at 57 cm: one pixel subtends 2·atan(p/2d).
    pixel_cm = 53.1 / 1920
    expected = 1 / math.degrees(2 * math.atan(pixel_cm / (2 * 57)))
    assert rig.pixels_per_degree == pytest.approx(expected, rel=1e-12)
    assert 35.5 < rig.pixels_per_degree < 36.5


def test_example_rig_values() -> None:
    rig = load_rig(ROOT / "rigs" / "example_openephys.yaml")
    assert rig.acquisition.kind == "openephys"
    assert rig.acquisition.event_port == ("127.0.0.1", 5557)
    assert rig.acquisition.photodiode_line == 1
    assert rig.display.refresh_hz == 120.0
    assert rig.display.photodiode.corner == "bottom_left"
    assert rig.stimulus.centre_deg == (-3.0, -2.0)
    assert 5557 not in rig.network.ports.named().values()


def test_kindel_protocol_frames_and_trials() -> None:
    protocol = load_protocol(ROOT / "protocols" / "kindel2017.yaml")
    assert protocol.fit is not None
    assert (protocol.fit.holdout_fraction, protocol.fit.stop_fraction, protocol.fit.dropout_keep) == (0.2, 0.14, 0.55)
    assert protocol.total_trials == 270 * 20 + 64 * 20
    for rig_name, refresh in (("sim.yaml", 60), ("example_openephys.yaml", 120)):
        frames = protocol.frames(load_rig(ROOT / "rigs" / rig_name))
        assert (frames.stimulus_frames, frames.blank_frames) == (refresh // 10, refresh // 5)
        assert frames.stimulus_ms == pytest.approx(100.0)


def test_demo_protocol_loop() -> None:
    protocol = load_protocol(ROOT / "protocols" / "demo.yaml")
    assert protocol.synthesis is not None and protocol.synthesis.images_per_block == 30
    # 200 images × 6 repeats, then 3 iterations of 30 synthesized images × 6 repeats.
    assert protocol.total_trials == 200 * 6 + 3 * 30 * 6
    assert protocol.blocks[-1].kind == "loop"


def _field_names(cls: type, seen: set[type]) -> set[str]:
    """Every YAML key a settings class accepts, nested classes included."""
    if cls in seen:
        return set()
    seen.add(cls)
    names: set[str] = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        names.add(f.name)
        for inner in _classes_in(hints[f.name]):
            names |= _field_names(inner, seen)
    return names


def _classes_in(hint: object) -> list[type]:
    if dataclasses.is_dataclass(hint):
        return [hint]  # type: ignore[list-item]
    return [cls for arg in typing.get_args(hint) for cls in _classes_in(arg)]


@pytest.mark.parametrize(("cls", "folder"), [(Rig, "rigs"), (Protocol, "protocols")])
def test_every_key_appears_in_the_shipped_files(cls: type, folder: str) -> None:
    text = "\n".join(path.read_text() for path in (ROOT / folder).glob("*.yaml"))
    missing = sorted(name for name in _field_names(cls, set()) if not re.search(rf"\b{name}\b", text))
    assert not missing, f"document these keys in {folder}/*.yaml: {missing}"


def test_every_block_kind_appears_in_the_shipped_protocols() -> None:
    text = "\n".join(path.read_text() for path in (ROOT / "protocols").glob("*.yaml"))
    kinds = [typing.get_args(typing.get_type_hints(cls)["kind"])[0] for cls in typing.get_args(Block)]
    assert [kind for kind in kinds if f"kind: {kind}" not in text] == []


def test_loaded_settings_are_hashable_and_survive_pickling() -> None:
    # Components started as separate processes receive these objects pickled.
    rig = load_rig(ROOT / "rigs" / "example_openephys.yaml")
    protocol = load_protocol(ROOT / "protocols" / "demo.yaml")
    for settings in (rig, protocol):
        assert pickle.loads(pickle.dumps(settings)) == settings
        assert hash(settings) == hash(pickle.loads(pickle.dumps(settings)))
    assert pickle.loads(pickle.dumps(rig)).source_text == rig.source_text
