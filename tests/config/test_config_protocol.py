"""Protocol rules beyond the bad-file corpus: targets, frames, block order, sections."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from config_helpers import DELETE, ROOT, write_variant

from closedloop.config import Target, load_protocol, load_rig, parse_target, validate
from closedloop.errors import ConfigError

DEMO = "protocols/demo.yaml"
KINDEL = "protocols/kindel2017.yaml"


def _protocol_error(tmp_path: Path, shipped: str, changes: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_protocol(write_variant(tmp_path, shipped, changes))
    return str(caught.value)


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("p20", Target("percentile", 20.0)),
        ("p0.5", Target("percentile", 0.5)),
        ("p99.9", Target("percentile", 99.9)),
        ("max", Target("max")),
        ("12.5hz", Target("rate", 12.5)),
        ("0hz", Target("rate", 0.0)),
        ("30Hz", Target("rate", 30.0)),
    ],
)
def test_target_grammar_accepts(text: str, target: Target) -> None:
    assert parse_target(text) == target


@pytest.mark.parametrize("text", ["p0", "p100", "P20", "p", "-1hz", "hz", "20", "maximum", "p20hz", "1e3hz"])
def test_target_grammar_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_target(text)


@pytest.mark.parametrize(
    ("stimulus_ms", "refresh_hz", "frames"),
    [(100, 60, 6), (100, 120, 12), (106, 120, 13), (106, 60, 6), (50, 144, 7), (8.3, 120, 1)],
)
def test_frames_round_to_the_nearest_whole_frame(
    tmp_path: Path, stimulus_ms: float, refresh_hz: float, frames: int
) -> None:
    rig = load_rig(write_variant(tmp_path, "rigs/sim.yaml", {"display.refresh_hz": refresh_hz}, "rig.yaml"))
    protocol = load_protocol(write_variant(tmp_path, DEMO, {"timing.stimulus_ms": stimulus_ms}))
    assert protocol.frames(rig).stimulus_frames == frames


@pytest.mark.parametrize(
    ("blank_ms", "fragment"),
    [
        (5, "timing.blank_ms: 5 ms is shorter than one frame (16.67 ms at 60 Hz)"),
        (
            25,
            "timing.blank_ms: 25 ms is 1.50 frames at 60 Hz and rounding to 2 changes it by more than 10 %; "
            "whole frames give 16.67 ms (1 frame) or 33.33 ms (2 frames)",
        ),
    ],
)
def test_durations_that_are_not_whole_frames(tmp_path: Path, blank_ms: float, fragment: str) -> None:
    rig = load_rig(ROOT / "rigs" / "sim.yaml")
    protocol = load_protocol(
        write_variant(tmp_path, DEMO, {"timing.blank_ms": blank_ms, "response.window_ms": [20, 60]})
    )
    with pytest.raises(ConfigError) as caught:
        validate(rig, protocol)
    assert fragment in str(caught.value)


def test_window_checked_against_the_trial_as_shown(tmp_path: Path) -> None:
    # 106 + 212 ms = 318 ms nominal, but 13 + 25 frames at 120 Hz show 316.7 ms.
    changes = {"timing.stimulus_ms": 106, "timing.blank_ms": 212, "response.window_ms": [50, 318]}
    protocol = load_protocol(write_variant(tmp_path, DEMO, changes))
    with pytest.raises(ConfigError, match="response window outside the presentation period.*316.7 ms"):
        validate(load_rig(ROOT / "rigs" / "example_openephys.yaml"), protocol)


@pytest.mark.parametrize(
    ("shipped", "changes", "fragment"),
    [
        (DEMO, {"fit": DELETE}, "blocks[1].kind: a fit block needs a 'fit:' section"),
        (DEMO, {"synthesis": DELETE}, "blocks[2].blocks[0].kind: a synthesize block needs a 'synthesis:' section"),
        (DEMO, {"blocks": [{"kind": "fit"}]}, "blocks[0].kind: fit needs recorded responses"),
        (
            DEMO,
            {"blocks": [{"kind": "natural", "repeats": 1}, {"kind": "synthesize"}]},
            "blocks[1].kind: synthesize needs a fitted model",
        ),
        (DEMO, {"blocks": []}, "blocks: the protocol has no blocks"),
        (
            DEMO,
            {"blocks": [{"kind": "natural", "repeats": 1}, {"kind": "loop", "iterations": 2, "blocks": []}]},
            "blocks[1].blocks: a loop needs at least one block",
        ),
        (
            DEMO,
            {
                "blocks": [
                    {"kind": "natural", "repeats": 1},
                    {
                        "kind": "loop",
                        "iterations": 2,
                        "blocks": [{"kind": "loop", "iterations": 1, "blocks": [{"kind": "fit"}]}],
                    },
                ]
            },
            "blocks[1].blocks[0].kind: loops cannot be nested",
        ),
        (
            DEMO,
            {
                "blocks": [
                    {"kind": "natural", "repeats": 1},
                    {
                        "kind": "loop",
                        "iterations": 2,
                        "stop_when_r_above": 0.5,
                        "blocks": [{"kind": "natural", "repeats": 1}],
                    },
                ]
            },
            "blocks[1].stop_when_r_above: needs a fit block inside the loop",
        ),
        (
            DEMO,
            {"blocks": [{"kind": "gratings", "set": "colour", "repeats": 1}]},
            "blocks[0].set: must be one of 'orientation', 'sf', 'size'",
        ),
        (KINDEL, {"fit.stop_fraction": 0.9}, "fit.stop_fraction: holdout_fraction + stop_fraction = 1.1 leaves no"),
        (KINDEL, {"fit.dropout_keep": 0}, "fit.dropout_keep: must be > 0, got 0"),
        (KINDEL, {"fit.device": "gpu"}, "fit.device: must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        (KINDEL, {"fit.preprocessing": {"downsample": 0}}, "fit.preprocessing.downsample: must be >= 1, got 0"),
        (KINDEL, {"fit.architecture": "kindel"}, "did you mean 'kindel2017'?"),
        (KINDEL, {"fit.batch_size": 0}, "fit.batch_size: must be >= 1, got 0"),
        (
            KINDEL,
            {"images.source": "imagenet"},
            "images.source: must be one of 'photographs', 'pink_noise', 'dead_leaves', 'mixed'",
        ),
        (DEMO, {"synthesis.targets": []}, "synthesis.targets: give at least one target"),
    ],
)
def test_protocol_rules(tmp_path: Path, shipped: str, changes: dict[str, Any], fragment: str) -> None:
    assert fragment in _protocol_error(tmp_path, shipped, changes)


def test_recording_only_protocol_needs_no_fit_section(tmp_path: Path) -> None:
    changes = {"fit": DELETE, "synthesis": DELETE, "blocks": [{"kind": "gratings", "set": "sf", "repeats": 2}]}
    protocol = load_protocol(write_variant(tmp_path, DEMO, changes))
    assert protocol.fit is None and protocol.total_trials == 128 * 2
    assert "256 trials" in validate(load_rig(ROOT / "rigs" / "sim.yaml"), protocol)


def test_rig_alone_is_summarised() -> None:
    summary = validate(load_rig(ROOT / "rigs" / "example_openephys.yaml"))
    assert summary.startswith("rig 'example_openephys': 1920×1080 px at 120 Hz")
    assert "36.0 px/deg" in summary and "\n" not in summary


def test_protocol_made_in_code_reports_without_a_file() -> None:
    protocol = load_protocol(ROOT / DEMO)
    error = dataclasses.replace(protocol, source=None).error("timing", "bad")
    assert str(error) == "<protocol>: timing: bad"
