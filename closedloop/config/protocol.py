"""The protocol file: timing, response window, images, fitting, synthesis and the blocks.

`load_protocol` reads a protocol YAML into a frozen `Protocol`; every key is
described in ``protocols/kindel2017.yaml``.  Rules that need the rig (whole frames
at its refresh rate) are checked by `closedloop.config.validate`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from closedloop.config.blocks import Block, check_block_order, count_trials
from closedloop.config.rig import MAX_SEED, check_device
from closedloop.config.session_info import SessionInfo
from closedloop.config.schema import (
    ConfigSource,
    LoadedFromFile,
    Where,
    internal,
    load_settings_file,
    path_setting,
    setting,
)
from closedloop.data.dataset import Preprocessing
from closedloop.errors import ConfigError
from closedloop.model.model_config import MAX_INPUT_NOISE, ModelConfig
from closedloop.model.presets import PRESETS

if TYPE_CHECKING:
    from closedloop.config.rig import Rig

_PERCENTILE = re.compile(r"p(\d+(?:\.\d+)?)")
_RATE = re.compile(r"(\d+(?:\.\d+)?)\s*hz", re.IGNORECASE)
#: Highest absolute-rate target; V1 neurons fire well below it.
MAX_TARGET_HZ = 1000.0
#: Most natural images in a pool (each is size_px² float32 in memory).
MAX_IMAGES = 100_000
#: Most presentations a protocol may ask for (about 35 days at 300 ms a trial).
MAX_TRIALS = 10_000_000
#: Most images one synthesize block may make.
MAX_SYNTHESIZED = 100_000
#: Ensemble members that judge synthesized images instead of optimising them (`Synthesis`).
DEFAULT_HELDOUT_MEMBERS = 1

#: Where synthesized images start (`closedloop.synth.starts`): grey, or a fit image near the target.
SynthesisStart = Literal["blank", "natural"]
START_MODES: tuple[str, ...] = get_args(SynthesisStart)

#: What a protocol's fit starts from: every model preset (`closedloop.model.presets.PRESETS`),
#: Table 1's core with the factorised readout, or ridge regression on pixels.
FitArchitecture = Literal[
    "recommended", "divisive", "gabor", "gabor-wide", "gabor-blend", "kindel2017", "factorised", "linear"
]


@dataclass(frozen=True)
class Target:
    """A parsed synthesis target.

    Attributes
    ----------
    kind
        ``"percentile"`` (of the unit's measured rates), ``"max"`` (as high as possible)
        or ``"rate"`` (an absolute rate).
    value
        The percentile (0–100, exclusive) or the rate in Hz; ``None`` for ``"max"``.
    """

    kind: Literal["percentile", "max", "rate"]
    value: float | None = None


def parse_target(text: str) -> Target:
    """Parse ``"p20"``, ``"max"`` or ``"12.5hz"``.

    Raises
    ------
    ValueError
        If ``text`` is none of those, with a message saying what is allowed.
    """
    text = text.strip()
    if text == "max":
        return Target("max")
    if match := _PERCENTILE.fullmatch(text):
        percentile = float(match[1])
        if 0 < percentile < 100:
            return Target("percentile", percentile)
        raise ValueError(f"percentile target {text!r} must be between p0 and p100 (exclusive), e.g. p20")
    if match := _RATE.fullmatch(text):
        rate = float(match[1])
        if rate <= MAX_TARGET_HZ:
            return Target("rate", rate)
        raise ValueError(f"rate target {text[:40]!r} is above {MAX_TARGET_HZ:g} Hz; use a rate a neuron can reach")
    raise ValueError(
        f"target {text!r} is not understood; write a percentile like 'p20', 'max', or a rate like '12.5hz'"
    )


@dataclass(frozen=True)
class Timing:
    """Stimulus on-time and blank after it, in ms (converted to whole frames by the rig)."""

    stimulus_ms: float = setting(gt=0, le=60_000)
    blank_ms: float = setting(gt=0, le=60_000)

    @property
    def trial_ms(self) -> float:
        return self.stimulus_ms + self.blank_ms


@dataclass(frozen=True)
class Response:
    """Spike-count window after stimulus onset, [start, stop) in ms."""

    window_ms: tuple[float, float] = (50.0, 100.0)

    @property
    def window_s(self) -> tuple[float, float]:
        """The window in seconds, as the runner, the model server and replay count spikes."""
        return self.window_ms[0] / 1000.0, self.window_ms[1] / 1000.0

    def check(self, where: Where) -> None:
        start, stop = self.window_ms
        if not 0 <= start < stop:
            raise where.error("window_ms", f"must be [start, stop] with 0 <= start < stop, got [{start:g}, {stop:g}]")


@dataclass(frozen=True)
class Images:
    """The pool of natural images the blocks draw from.

    ``source``: ``photographs`` (default), ``pink_noise`` (1/f noise), ``dead_leaves``, or
    ``mixed`` (a third of each), all in the rig's aperture at natural-image contrasts.
    """

    n: int = setting(ge=1, le=MAX_IMAGES)
    source: Literal["photographs", "pink_noise", "dead_leaves", "mixed"] = "photographs"
    seed: int | None = setting(None, ge=0, le=MAX_SEED)


@dataclass(frozen=True)
class Fit:
    """Model fitting (docs/methods.md, Model).

    ``architecture`` names a starting point: ``recommended`` (the preset that closes
    most of the gap to the noise ceiling, `closedloop.model.presets`), ``divisive``
    (``recommended`` with a core that saturates with contrast), ``gabor``
    (``recommended`` whose readout also sees a fixed Gabor bank), ``gabor-wide`` (``gabor``
    on a readout grid that reaches the image's edges, with a flat output tail), ``gabor-blend``
    (``gabor-wide`` and ``gabor``'s grid, two ensembles blended per unit), ``kindel2017``
    (Table 1), ``factorised`` (Table 1's core with the factorised readout) or
    ``linear`` (ridge regression on pixels).  ``learning_rate``, ``dropout_keep``,
    ``input_noise`` (training-image noise, `ModelConfig.input_noise`), ``stop_metric``
    (`ModelConfig.stop_metric`) and ``ensemble`` left out (or ``null``) take that
    architecture's values; a key the architecture does
    not use is an error.  ``holdout_fraction`` of the images is held
    out for evaluation and ``stop_fraction`` (of all images) decides early stopping;
    ``batch_size`` ``None`` is full batch; ``device`` ``None`` uses the rig's
    ``compute.device``.  ``model_file`` instead of ``architecture``: a model YAML (such
    as the ``best.yaml`` of ``closedloop fit --search``), relative to the protocol file,
    to start from.  ``core_from``: a fitted model file (``model.pt``, e.g. one session's
    share of ``closedloop fit --shared-core`` on earlier sessions) whose core every refit
    starts from and trains on (with ``fixed_core: true``, keeps as it is, fitting only
    this session's readouts); it must have this section's core.
    With ``gabor-blend``, ``ensemble`` counts the members of each of its two ensembles.
    `model_config` gives the `ModelConfig` a fit uses.
    """

    max_epochs: int = setting(ge=1, le=100_000)
    patience: int = setting(ge=1, le=100_000)
    architecture: FitArchitecture = "kindel2017"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    holdout_fraction: float = setting(0.2, gt=0, lt=1)
    stop_fraction: float = setting(0.14, gt=0, lt=1)
    learning_rate: float | None = setting(None, gt=0, le=10)
    batch_size: int | None = setting(None, ge=1, le=1_000_000)
    dropout_keep: float | None = setting(None, gt=0, le=1)
    input_noise: float | None = setting(None, ge=0, le=MAX_INPUT_NOISE)
    stop_metric: Literal["loss", "correlation"] | None = None
    ensemble: int | None = setting(None, ge=1, le=64)
    device: str | None = None
    # A model file (e.g. a search's best.yaml; relative to this protocol) to start from instead of architecture.
    model_file: str | None = path_setting(None)
    # A fitted model.pt (relative to this protocol) whose core every refit starts from: kept fixed,
    # training it on with the rest, or keeping it as it is (fixed_core), fitting only readouts.
    core_from: str | None = path_setting(None)
    fixed_core: bool = False
    loaded_model: ModelConfig | None = internal()

    def model_config(self, seed: int | None = None) -> ModelConfig:
        """The model and training settings this section asks for.

        The architecture's preset, with this section's ``max_epochs``, ``patience`` and
        ``batch_size`` and whichever of ``learning_rate``, ``dropout_keep``,
        ``input_noise``, ``stop_metric`` and ``ensemble`` it gives.
        """
        changes: dict = {
            "max_epochs": self.max_epochs,
            "patience": self.patience,
            "batch_size": self.batch_size,
            "seed": seed,
        }
        for key, name in (
            ("learning_rate", "learning_rate"),
            ("dropout_keep", "dropout_keep"),
            ("input_noise", "input_noise"),
            ("stop_metric", "stop_metric"),
            ("ensemble", "ensemble_size"),
        ):
            if getattr(self, key) is not None:
                changes[name] = getattr(self, key)
        base = self.loaded_model if self.loaded_model is not None else _ARCHITECTURE_BASE[self.architecture]
        return base.replace(**changes)

    def check(self, where: Where) -> None:
        if self.model_file is not None:
            self._load_model_file(self.model_file, where)
        for name in ("downsample", "crop"):
            value = getattr(self.preprocessing, name)
            if value < 1:
                raise where.error(f"preprocessing.{name}", f"must be >= 1, got {value}")
            if value > 4096:
                raise where.error(f"preprocessing.{name}", f"must be <= 4096, got {value}")
        if self.holdout_fraction + self.stop_fraction >= 1:
            raise where.error(
                "stop_fraction",
                f"holdout_fraction + stop_fraction = {self.holdout_fraction + self.stop_fraction:g} leaves no "
                "images to train on; keep the sum below 1",
            )
        if self.device is not None:
            check_device(where, "device", self.device)
        for key, used_by in _USED_BY.items():
            if getattr(self, key) is not None and self.architecture not in used_by and self.model_file is None:
                raise where.error(
                    key,
                    f"is not used by the {self.architecture} architecture (only by {' and '.join(used_by)}); remove it",
                )
        if self.fixed_core and self.core_from is None:
            raise where.error("fixed_core", "keeps the core of core_from fixed; give core_from or remove fixed_core")
        if self.core_from is not None and self.architecture == "linear" and self.model_file is None:
            raise where.error("core_from", "the linear architecture has no core; remove core_from or choose a CNN")
        if self.core_from is not None and self.model_config().partner is not None:
            raise where.error(
                "core_from",
                f"the {self.architecture if self.model_file is None else 'model file'}'s model blends two "
                "ensembles with different cores; remove core_from or choose a single-network architecture "
                "such as gabor-wide",
            )
        if self.architecture == "linear" and self.ensemble not in (None, 1):
            raise where.error(
                "ensemble",
                f"must be 1 for the linear architecture (its closed-form fit has no randomness), got {self.ensemble}",
            )

    def _load_model_file(self, model_file: str, where: Where) -> None:
        # Imported here: closedloop.fitting.model_files imports closedloop.config, whose __init__ imports this module.
        from closedloop.fitting.model_files import load_config_yaml

        if where.has("architecture"):
            raise where.error("model_file", "give either architecture or model_file, not both")
        # model_file is already resolved against this protocol's folder and known to exist (path_setting).
        object.__setattr__(self, "loaded_model", load_config_yaml(model_file))  # errors name the model file


# What each architecture starts from; a protocol's fit section changes only what it gives.
_ARCHITECTURE_BASE: dict[str, ModelConfig] = {
    **PRESETS,
    "factorised": PRESETS["kindel2017"].replace(architecture="factorised"),
    "linear": ModelConfig(architecture="linear"),
}
# Settings only some architectures have: the dense readout's dropout; gradient steps.
_GRADIENT_TRAINED = tuple(name for name in get_args(FitArchitecture) if name != "linear")
_USED_BY = {
    "dropout_keep": ("kindel2017",),
    "learning_rate": _GRADIENT_TRAINED,
    "input_noise": _GRADIENT_TRAINED,
    "stop_metric": _GRADIENT_TRAINED,
}


@dataclass(frozen=True)
class UnitSelection:
    """Which units get synthesized images: the ``top_k`` best by held-out r.

    Of those, units whose held-out r is below ``min_heldout_r`` (default 0.3) are
    skipped, with a message: the model cannot promise rates for them.
    """

    top_k: int = setting(ge=1, le=10_000)
    by: Literal["heldout_r"] = "heldout_r"
    min_heldout_r: float = setting(0.3, ge=-1.0, le=1.0)


@dataclass(frozen=True)
class Synthesis:
    """Stimulus synthesis (docs/methods.md, Synthesis).

    ``targets`` are percentiles of each unit's measured rates (``p20``), ``max``, or
    absolute rates (``12.5hz``); ``images_per_target`` images (different noise
    seeds) are made for each unit and target.  ``heldout_members`` ensemble members
    take no part in the optimisation and give the predicted rate recorded for each
    image, so "max" images are not promised the optimising members' over-estimate
    (0: every member optimises and predicts).  ``start`` "blank" (default) grows every
    image from grey; "natural" starts each rate target from a fit image that the model
    and the recording put close to it, edited to reach it (`closedloop.synth.starts`).
    """

    units: UnitSelection
    steps: int = setting(ge=1, le=100_000)
    targets: tuple[str, ...] = ("p20", "p35", "p50", "p65", "p80")
    images_per_target: int = setting(1, ge=1, le=1000)
    seed: int | None = setting(None, ge=0, le=MAX_SEED)
    heldout_members: int = setting(DEFAULT_HELDOUT_MEMBERS, ge=0, le=64)
    start: SynthesisStart = "blank"

    @property
    def parsed_targets(self) -> tuple[Target, ...]:
        return tuple(parse_target(target) for target in self.targets)

    @property
    def images_per_block(self) -> int:
        """Images one synthesize block makes (if the session has at least ``top_k`` units)."""
        return self.units.top_k * len(self.targets) * self.images_per_target

    def check(self, where: Where) -> None:
        if not self.targets:
            raise where.error("targets", "give at least one target, e.g. [p20, p50, p80]")
        if len(self.targets) > 100:
            raise where.error("targets", f"{len(self.targets)} targets; give at most 100")
        for index, target in enumerate(self.targets):
            try:
                parse_target(target)
            except ValueError as error:
                raise where.error(f"targets[{index}]", str(error)) from None
        if self.images_per_block > MAX_SYNTHESIZED:
            raise where.error(
                "images_per_target",
                f"top_k × targets × images_per_target = {self.images_per_block} "
                f"images per synthesize block; keep it at most {MAX_SYNTHESIZED}",
            )


@dataclass(frozen=True)
class FrameTiming:
    """A protocol's durations in whole frames of one rig's display."""

    stimulus_frames: int
    blank_frames: int
    refresh_hz: float

    @property
    def stimulus_ms(self) -> float:
        return self.stimulus_frames * 1000.0 / self.refresh_hz

    @property
    def blank_ms(self) -> float:
        return self.blank_frames * 1000.0 / self.refresh_hz

    @property
    def trial_ms(self) -> float:
        return self.stimulus_ms + self.blank_ms


@dataclass(frozen=True, kw_only=True)
class Protocol(LoadedFromFile):
    """One experiment, as read from its YAML file.

    ``source`` keeps the file's path and text (session files store the text).
    """

    name: str
    seed: int | None = setting(None, ge=0, le=MAX_SEED)
    timing: Timing
    response: Response = field(default_factory=Response)
    images: Images
    fit: Fit | None = None
    synthesis: Synthesis | None = None
    blocks: tuple[Block, ...]
    session: SessionInfo | None = None
    source: ConfigSource | None = internal()

    @property
    def total_trials(self) -> int:
        """Presentations if every loop runs all its iterations."""
        synthesized = 0 if self.synthesis is None else self.synthesis.images_per_block
        return count_trials(self.blocks, self.images.n, synthesized)

    def error(self, field_name: str | None, message: str) -> ConfigError:
        """A `ConfigError` placed at a field of this protocol's file."""
        if self.source is None:
            return ConfigError("<protocol>", None, field_name, message)
        return self.source.error(field_name, message)

    def frames(self, rig: Rig) -> FrameTiming:
        """Stimulus and blank durations in whole frames at ``rig``'s refresh rate.

        Raises
        ------
        ConfigError
            If a duration is shorter than one frame, or rounding it to whole frames
            changes it by more than 10 %.
        """
        refresh = rig.display.refresh_hz
        counts = [self._whole_frames(name, getattr(self.timing, name), refresh) for name in ("stimulus_ms", "blank_ms")]
        return FrameTiming(counts[0], counts[1], refresh)

    def _whole_frames(self, name: str, ms: float, refresh_hz: float) -> int:
        exact = ms * refresh_hz / 1000.0
        frames = math.floor(exact + 0.5)  # half up, not Python's round-half-to-even
        frame_ms = 1000.0 / refresh_hz
        field_name = f"timing.{name}"
        if frames < 1:
            raise self.error(
                field_name, f"{ms:g} ms is shorter than one frame ({frame_ms:.2f} ms at {refresh_hz:g} Hz)"
            )
        if abs(frames * frame_ms - ms) > 0.1 * ms:
            low, high = max(1, int(exact)), int(exact) + 1
            raise self.error(
                field_name,
                f"{ms:g} ms is {exact:.2f} frames at {refresh_hz:g} Hz and rounding to {frames} changes it by more "
                f"than 10 %; whole frames give {low * frame_ms:.2f} ms ({_frames(low)}) or "
                f"{high * frame_ms:.2f} ms ({_frames(high)})",
            )
        return frames

    def check(self, where: Where) -> None:
        stop = self.response.window_ms[1]
        if stop > self.timing.trial_ms:
            raise where.error(
                "response.window_ms",
                f"response window outside the presentation period: it ends at {stop:g} ms but a trial "
                f"(stimulus_ms + blank_ms) lasts {self.timing.trial_ms:g} ms",
            )
        check_block_order(self.blocks, where, self.images.n)
        if self.total_trials > MAX_TRIALS:
            raise where.error(
                "blocks",
                f"asks for {self.total_trials} presentations; keep it at most {MAX_TRIALS} "
                "(lower repeats, images or loop iterations)",
            )
        _require_section(self.blocks, self.fit, "fit", "fit", where)
        _require_section(self.blocks, self.synthesis, "synthesize", "synthesis", where)


def _frames(count: int) -> str:
    return f"{count} frame" if count == 1 else f"{count} frames"


def _require_section(blocks: tuple[Block, ...], section: object, kind: str, key: str, where: Where) -> None:
    if section is not None:
        return
    for index, block in enumerate(blocks):
        inner = [(f"blocks[{index}].blocks[{j}]", b) for j, b in enumerate(getattr(block, "blocks", ()))]
        for name, candidate in [(f"blocks[{index}]", block), *inner]:
            if candidate.kind == kind:
                raise where.error(f"{name}.kind", f"a {kind} block needs a '{key}:' section in the protocol")


def load_protocol(path: str | Path) -> Protocol:
    """Read and check a protocol YAML file.

    Parameters
    ----------
    path
        The protocol file.

    Returns
    -------
    Protocol
        The protocol, with its source text kept in ``protocol.source``.

    Raises
    ------
    ConfigError
        If the file is missing, not valid YAML, or any setting is unknown, missing,
        of the wrong type or inconsistent (the message names the line and field).
    """
    return load_settings_file(Protocol, path)
