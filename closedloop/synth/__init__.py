"""Stimulus synthesis: invert a fitted network to reach target firing rates (docs/methods.md, Synthesis).

- `targets`: target grammar (``p20``, ``max``, ``12.5hz``), unit selection, jobs;
- `canvas`: model vs display resolution, aperture, range, mean luminance;
- `optimise`: the batched optimiser (`synthesize`);
- `starts`: where each image starts (the blank screen, or a fit image near its target);
- `plan`: synthesis from a fitted checkpoint (`synthesize_from_checkpoint`);
- `library`: the stimulus library file; `figure`: the Fig. 4-style grid.
"""

from closedloop.synth.canvas import Canvas
from closedloop.synth.optimise import SynthesisResult, SynthesisSettings, synthesize
from closedloop.synth.targets import DEFAULT_TARGETS, SynthesisJob, build_jobs, parse_targets, select_units

__all__ = [
    "Canvas",
    "DEFAULT_TARGETS",
    "SynthesisJob",
    "SynthesisResult",
    "SynthesisSettings",
    "build_jobs",
    "parse_targets",
    "select_units",
    "synthesize",
]
