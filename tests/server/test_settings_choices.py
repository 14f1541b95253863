"""The model server's settings: a command line's choices over the protocol's, over the rig's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "config"))
from config_helpers import ROOT, write_variant  # noqa: E402

from closedloop.config import load_protocol, load_rig  # noqa: E402
from closedloop.errors import ClosedLoopError  # noqa: E402
from closedloop.server.settings import ServerSettings, device_choice, resolved_device  # noqa: E402


@pytest.fixture
def configs(tmp_path):
    rig = load_rig(write_variant(tmp_path, "rigs/sim.yaml", {"compute.device": "cuda:1"}, "rig.yaml"))
    protocol = load_protocol(ROOT / "protocols/demo.yaml")
    return rig, protocol, tmp_path


def test_device_rule_command_line_then_protocol_then_rig(configs):
    rig, protocol, tmp_path = configs
    assert protocol.fit.device is None
    assert device_choice(None, protocol, rig) == "cuda:1"
    assert device_choice("cpu", protocol, rig) == "cpu"
    with_fit = load_protocol(write_variant(tmp_path, "protocols/demo.yaml", {"fit.device": "cuda"}, "p.yaml"))
    assert device_choice(None, with_fit, rig) == "cuda" and device_choice("auto", with_fit, rig) == "auto"
    assert resolved_device("cpu", protocol, rig) == "cpu"


def test_explicit_cuda_without_a_gpu_is_bad_input(configs, monkeypatch):
    rig, protocol, _ = configs
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ClosedLoopError):
        resolved_device(None, protocol, rig)


def test_from_configs_takes_typed_choices(configs):
    rig, protocol, _ = configs
    plain = ServerSettings.from_configs(rig, protocol)
    assert plain.device == "cuda:1" and plain.stimulus_size_px == rig.stimulus.size_px
    assert plain.window_s == protocol.response.window_s
    chosen = ServerSettings.from_configs(rig, protocol, device="cpu", seed=11, stimulus_size_px=80)
    assert (chosen.device, chosen.seed, chosen.stimulus_size_px) == ("cpu", 11, 80)
    with pytest.raises(TypeError):
        ServerSettings.from_configs(rig, protocol, holdout_fraction=0.5)  # no untyped overrides


def test_the_protocols_held_out_members_reach_the_server_and_bad_ones_name_the_field(configs):
    rig, protocol, tmp_path = configs
    assert ServerSettings.from_configs(rig, protocol).synthesis_heldout_members == 1  # the stated default
    none = load_protocol(write_variant(tmp_path, "protocols/demo.yaml", {"synthesis.heldout_members": 0}, "p0.yaml"))
    assert ServerSettings.from_configs(rig, none).synthesis_heldout_members == 0
    with pytest.raises(ClosedLoopError, match="synthesis.heldout_members"):
        load_protocol(write_variant(tmp_path, "protocols/demo.yaml", {"synthesis.heldout_members": -1}, "bad.yaml"))


def test_the_protocols_synthesis_start_reaches_the_server_and_a_bad_one_names_the_field(configs):
    rig, protocol, tmp_path = configs
    assert ServerSettings.from_configs(rig, protocol).synthesis_start == "blank"
    natural = load_protocol(write_variant(tmp_path, "protocols/demo.yaml", {"synthesis.start": "natural"}, "n.yaml"))
    assert ServerSettings.from_configs(rig, natural).synthesis_start == "natural"
    with pytest.raises(ClosedLoopError, match="synthesis.start"):
        load_protocol(write_variant(tmp_path, "protocols/demo.yaml", {"synthesis.start": "photo"}, "bad.yaml"))
