"""Every file in tests/configs/bad_*.yaml fails with a message that names its line and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_helpers import ROOT

from closedloop.config import load_protocol, load_rig, validate
from closedloop.errors import ConfigError

CORPUS = ROOT / "tests" / "configs"

# file, how it is loaded, a fragment of the message, the line it must name.
# "rig" / "protocol": the loader alone; "pair": the protocol validated on rigs/sim.yaml.
CASES = [
    ("bad_tabs.yaml", "rig", "tab used for indentation", 9),
    ("bad_duplicate_key.yaml", "rig", "duplicate key (first defined on line 9, again on line 11)", 11),
    ("bad_unknown_key.yaml", "rig", "unknown key 'refresh_rate'; did you mean 'refresh_hz'?", 9),
    ("bad_wrong_type.yaml", "rig", "display.width_px: expected an integer, got number 1920.5", 4),
    ("bad_bool_string.yaml", "rig", "display.fullscreen: expected true or false, got text 'yes'", 11),
    ("bad_bool_yes.yaml", "rig", "display.fullscreen: write true or false, not 'yes'", 11),
    ("bad_missing_required.yaml", "rig", "display.distance_cm: missing required key 'distance_cm'", 3),
    ("bad_aperture_too_large.yaml", "rig", "stimulus.aperture_diameter_deg: aperture larger than the screen", 13),
    ("bad_aperture_off_screen.yaml", "rig", "stimulus.centre_deg: the aperture (4° at (24, 0)°) reaches past", 12),
    ("bad_duplicate_ports.yaml", "rig", "port 5601 is also used by network.ports.spikes (line 19)", 20),
    ("bad_port_clash_openephys.yaml", "rig", "port 5557 is also used by acquisition.event_endpoint (line 16)", 21),
    ("bad_device.yaml", "rig", "compute.device: must be 'auto', 'cpu', 'cuda' or 'cuda:N'", 17),
    ("bad_literal.yaml", "rig", "did you mean 'bottom_left'?", 12),
    ("bad_acquisition_key.yaml", "rig", "acquisition.sample_rate_hz: only used when kind is openephys", 16),
    ("bad_photodiode_overlap.yaml", "rig", "photodiode patch in the bottom_left corner overlaps the stimulus", 12),
    ("bad_empty.yaml", "rig", "the file is empty", 1),
    ("bad_list_top_level.yaml", "rig", "the top level must be a mapping of settings (key: value", 2),
    ("bad_syntax.yaml", "rig", "YAML syntax error (while parsing a flow sequence started on line 12", 13),
    ("bad_negative_duration.yaml", "protocol", "timing.blank_ms: must be > 0, got -200", 5),
    ("bad_window_outside.yaml", "protocol", "response window outside the presentation period", 7),
    ("bad_window_order.yaml", "protocol", "0 <= start < stop, got [100, 50]", 7),
    ("bad_target.yaml", "protocol", "synthesis.targets[1]: percentile target 'p150' must be between p0 and p100", 17),
    ("bad_target_grammar.yaml", "protocol", "synthesis.targets[2]: target 'fast' is not understood", 15),
    ("bad_present_before_synthesize.yaml", "protocol", "blocks[2].blocks[0].kind: present_synthesized needs", 22),
    ("bad_too_many_images.yaml", "protocol", "blocks[0].images: asks for 30 images but images.n is 10", 10),
    ("bad_block_kind.yaml", "protocol", "blocks[0].kind: must be one of natural, gratings", 9),
    ("bad_missing_blocks.yaml", "protocol", "blocks: missing required key 'blocks'", 2),
    ("bad_repeats_string.yaml", "protocol", "blocks[0].repeats: expected an integer, got text 'twenty'", 11),
    ("bad_huge_integer.yaml", "rig", "display.width_px: must be <= 32768, got 999999999999...(400 characters)", 4),
    ("bad_huge_float.yaml", "rig", "display.width_cm: must be <= 10000, got 1e308", 6),
    ("bad_negative_seed.yaml", "rig", "acquisition.seed: must be >= 0, got -1", 17),
    ("bad_stimulus_size_huge.yaml", "rig", "stimulus.size_px: must be <= 4096, got 1000000000", 14),
    (
        "bad_stimulus_size_display.yaml",
        "rig",
        "2000 px is larger than the display (1920×1080 px); use at most 1080",
        14,
    ),
    ("bad_nested.yaml", "rig", "nested more than 32 levels deep", 2),
    ("bad_alias_bomb.yaml", "rig", "aliases (*name) here expand to more than 20000 values", 6),
    ("bad_images_n.yaml", "protocol", "images.n: must be <= 100000, got 1e12", 7),
    ("bad_top_k.yaml", "protocol", "synthesis.units.top_k: must be <= 10000, got 100000", 13),
    ("bad_rate_target.yaml", "protocol", "synthesis.targets[1]: rate target '10000", 15),
    ("bad_too_many_trials.yaml", "protocol", "blocks: asks for 1000000048 presentations; keep it at most", 16),
    ("bad_protocol_seed.yaml", "protocol", "seed: must be >= 0, got -1", 3),
    ("bad_frames.yaml", "pair", "20 ms is 1.20 frames at 60 Hz", 4),
    ("bad_crop_too_large.yaml", "pair", "crop 40 × downsample 2 = 80 px, but the rig's stimulus.size_px is 66", 12),
]


def _load(path: Path, how: str) -> None:
    if how == "rig":
        load_rig(path)
    elif how == "protocol":
        load_protocol(path)
    else:
        validate(load_rig(ROOT / "rigs" / "sim.yaml"), load_protocol(path))


@pytest.mark.parametrize(("name", "how", "fragment", "line"), CASES, ids=[case[0] for case in CASES])
def test_bad_file_fails_at_its_line(name: str, how: str, fragment: str, line: int) -> None:
    path = CORPUS / name
    with pytest.raises(ConfigError) as caught:
        _load(path, how)
    error = caught.value
    assert fragment in str(error)
    assert error.line == line
    assert str(error).startswith(f"{path}:{line}: ")


def test_every_corpus_file_is_in_the_table() -> None:
    on_disk = {path.name for path in CORPUS.glob("bad_*.yaml")}
    assert on_disk == {case[0] for case in CASES}
    assert len(on_disk) >= 15


@pytest.mark.parametrize("how", ["rig", "protocol"])
def test_missing_file_names_the_path(tmp_path: Path, how: str) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigError, match="file not found") as caught:
        _load(path, how)
    assert str(caught.value).startswith(str(path))
