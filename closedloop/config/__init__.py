"""Rig and protocol YAML files, read into checked, frozen dataclasses.

    rig = load_rig("rigs/sim.yaml")
    protocol = load_protocol("protocols/demo.yaml")
    print(validate(rig, protocol))

Every problem raises `closedloop.errors.ConfigError` naming the file, line and field.
"""

from __future__ import annotations

from closedloop.config.blocks import (
    GRATING_SET_SIZES,
    Block,
    FitBlock,
    GratingsBlock,
    LoopBlock,
    NaturalBlock,
    PresentSynthesizedBlock,
    SynthesizeBlock,
)
from closedloop.config.protocol import (
    Fit,
    FrameTiming,
    Images,
    Protocol,
    Response,
    Synthesis,
    Target,
    Timing,
    UnitSelection,
    load_protocol,
    parse_target,
)
from closedloop.config.rig import Acquisition, Compute, Display, Network, Photodiode, Ports, Rig, Stimulus, load_rig
from closedloop.config.schema import ConfigSource
from closedloop.config.validate import validate

__all__ = [
    "GRATING_SET_SIZES",
    "Acquisition",
    "Block",
    "Compute",
    "ConfigSource",
    "Display",
    "Fit",
    "FitBlock",
    "FrameTiming",
    "GratingsBlock",
    "Images",
    "LoopBlock",
    "NaturalBlock",
    "Network",
    "Photodiode",
    "Ports",
    "PresentSynthesizedBlock",
    "Protocol",
    "Response",
    "Rig",
    "Stimulus",
    "Synthesis",
    "SynthesizeBlock",
    "Target",
    "Timing",
    "UnitSelection",
    "load_protocol",
    "load_rig",
    "parse_target",
    "validate",
]
