"""The message types of DESIGN §4.

Times are seconds as float64: spike and sync times on the acquisition clock, flip
times on the presenter's clock.  Images are (n, height, width) arrays in the display's
[0, 1] range.  Rates are Hz.  Every type is registered by its class name, which is
also its default PUB/SUB topic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from closedloop.messages.base import (
    ArraySpec, Message, as_float, as_int, as_metrics, as_optional_int, as_text, register, same_length,
)

_IDS = ("int64", "int32")
_RATES = ("float64", "float32")
_IMAGES = ("float32", "float64", "uint8")


def _one_column_per_unit(rates: np.ndarray, unit_ids: np.ndarray) -> None:
    if rates.shape[1] != len(unit_ids):
        raise ValueError(f"rates has {rates.shape[1]} columns but there are {len(unit_ids)} unit ids")


@register
@dataclass(frozen=True, eq=False)
class SpikeBatch(Message):
    """Spikes from the acquisition system, in time order within a batch.

    Attributes
    ----------
    unit_ids
        (n,) int32/int64 unit of each spike.
    times
        (n,) float64 spike time in seconds on the acquisition clock.
    channels
        Optional (n,) int channel (electrode) of each spike.
    """

    ARRAYS: ClassVar[dict[str, ArraySpec]] = {
        "unit_ids": ArraySpec(("int64", "int32"), 1),
        "times": ArraySpec(("float64",), 1),
        "channels": ArraySpec(("int32", "int16", "int64"), 1, optional=True),
    }
    unit_ids: np.ndarray
    times: np.ndarray
    channels: np.ndarray | None = None

    def _check(self) -> None:
        same_length(self, "unit_ids", "times", "channels")


@register
@dataclass(frozen=True, eq=False)
class SyncEvent(Message):
    """A photodiode/TTL edge recorded by acquisition (``state`` 1 = rising, 0 = falling)."""

    line: int
    state: int
    time: float

    def _check(self) -> None:
        self._set("line", as_int(self.line, "line", minimum=0))
        self._set("state", as_int(self.state, "state", minimum=0))
        self._set("time", as_float(self.time, "time"))


@register
@dataclass(frozen=True, eq=False)
class StimulusShown(Message):
    """The presenter showed a stimulus: first flip time, frames shown, frames dropped."""

    stimulus_id: int
    trial: int
    block: int
    flip_time: float
    n_frames: int
    dropped_frames: int = 0

    def _check(self) -> None:
        for name in ("stimulus_id", "trial", "block", "n_frames", "dropped_frames"):
            self._set(name, as_int(getattr(self, name), name, minimum=0))
        self._set("flip_time", as_float(self.flip_time, "flip_time"))


@register
@dataclass(frozen=True, eq=False)
class BlockRequest(Message):
    """The runner asks the presenter to show a block.

    ``stimulus_ids`` are shown in order, ``repeats`` times; ``pixels`` (n, h, w) carries
    images the presenter does not have yet (synthesized ones), one per stimulus id.
    """

    ARRAYS: ClassVar[dict[str, ArraySpec]] = {
        "stimulus_ids": ArraySpec(_IDS, 1),
        "pixels": ArraySpec(_IMAGES, 3, optional=True),
    }
    block: int
    kind: str
    stimulus_ids: np.ndarray
    repeats: int = 1
    pixels: np.ndarray | None = None

    def _check(self) -> None:
        self._set("block", as_int(self.block, "block", minimum=0))
        self._set("kind", as_text(self.kind, "kind"))
        self._set("repeats", as_int(self.repeats, "repeats", minimum=1))
        same_length(self, "stimulus_ids", "pixels")


@register
@dataclass(frozen=True, eq=False)
class Responses(Message):
    """Rates of every unit on each trial of a finished block: ``rates`` is (n_trials, n_units)."""

    ARRAYS: ClassVar[dict[str, ArraySpec]] = {
        "trial_ids": ArraySpec(_IDS, 1),
        "stimulus_ids": ArraySpec(_IDS, 1),
        "rates": ArraySpec(_RATES, 2),
        "unit_ids": ArraySpec(_IDS, 1),
    }
    block: int
    trial_ids: np.ndarray
    stimulus_ids: np.ndarray
    rates: np.ndarray
    unit_ids: np.ndarray

    def _check(self) -> None:
        self._set("block", as_int(self.block, "block", minimum=0))
        same_length(self, "trial_ids", "stimulus_ids", "rates")
        _one_column_per_unit(self.rates, self.unit_ids)


@register
@dataclass(frozen=True, eq=False)
class FitRequest(Message):
    """New data for the model server to add before it refits.

    ``rates`` is (n_images, n_units) mean rate per image; ``images`` (n, h, w) are the
    stimuli (omitted when the server already has them by ``stimulus_ids``).
    """

    ARRAYS: ClassVar[dict[str, ArraySpec]] = {
        "stimulus_ids": ArraySpec(_IDS, 1),
        "rates": ArraySpec(_RATES, 2),
        "unit_ids": ArraySpec(_IDS, 1),
        "images": ArraySpec(_IMAGES, 3, optional=True),
    }
    block: int
    stimulus_ids: np.ndarray
    rates: np.ndarray
    unit_ids: np.ndarray
    images: np.ndarray | None = None

    def _check(self) -> None:
        self._set("block", as_int(self.block, "block", minimum=0))
        same_length(self, "stimulus_ids", "rates", "images")
        _one_column_per_unit(self.rates, self.unit_ids)


@register
@dataclass(frozen=True, eq=False)
class ModelUpdated(Message):
    """A refit finished: the new model version and its held-out metrics."""

    version: int
    metrics: dict[str, float] = field(default_factory=dict)

    def _check(self) -> None:
        self._set("version", as_int(self.version, "version", minimum=0))
        self._set("metrics", as_metrics(self.metrics, "metrics"))


@register
@dataclass(frozen=True, eq=False)
class SynthesizeRequest(Message):
    """Synthesize one image per (unit, target rate in Hz) pair; NaN target = maximise."""

    ARRAYS: ClassVar[dict[str, ArraySpec]] = {
        "unit_ids": ArraySpec(_IDS, 1),
        "targets": ArraySpec(_RATES, 1),
    }
    unit_ids: np.ndarray
    targets: np.ndarray
    seed: int = 0

    def _check(self) -> None:
        same_length(self, "unit_ids", "targets")
        self._set("seed", as_int(self.seed, "seed", minimum=0))


@register
@dataclass(frozen=True, eq=False)
class SynthesizeResult(Message):
    """Synthesized images with the rate the model predicts for each (``achieved``)."""

    ARRAYS: ClassVar[dict[str, ArraySpec]] = {
        "unit_ids": ArraySpec(_IDS, 1),
        "targets": ArraySpec(_RATES, 1),
        "images": ArraySpec(_IMAGES, 3),
        "achieved": ArraySpec(_RATES, 1),
    }
    unit_ids: np.ndarray
    targets: np.ndarray
    images: np.ndarray
    achieved: np.ndarray
    model_version: int
    seed: int = 0

    def _check(self) -> None:
        same_length(self, "unit_ids", "targets", "images", "achieved")
        self._set("model_version", as_int(self.model_version, "model_version", minimum=0))
        self._set("seed", as_int(self.seed, "seed", minimum=0))


@register
@dataclass(frozen=True, eq=False)
class PredictRequest(Message):
    """Predict every unit's rate for these (n, h, w) images."""

    ARRAYS: ClassVar[dict[str, ArraySpec]] = {"images": ArraySpec(_IMAGES, 3)}
    images: np.ndarray


@register
@dataclass(frozen=True, eq=False)
class Predictions(Message):
    """Predicted ``rates`` (n_images, n_units) and the model version that made them."""

    ARRAYS: ClassVar[dict[str, ArraySpec]] = {
        "rates": ArraySpec(_RATES, 2),
        "unit_ids": ArraySpec(_IDS, 1),
    }
    rates: np.ndarray
    unit_ids: np.ndarray
    model_version: int

    def _check(self) -> None:
        self._set("model_version", as_int(self.model_version, "model_version", minimum=0))
        _one_column_per_unit(self.rates, self.unit_ids)


@register
@dataclass(frozen=True, eq=False)
class Heartbeat(Message):
    """A component is alive: its state (``"running"``, ``"stopping"``…) and steps so far."""

    state: str = "running"
    steps: int = 0

    def _check(self) -> None:
        self._set("state", as_text(self.state, "state"))
        self._set("steps", as_int(self.steps, "steps", minimum=0))


@register
@dataclass(frozen=True, eq=False)
class Error(Message):
    """A request could not be served: a short machine code and a human message."""

    code: str
    message: str
    in_reply_to: int | None = None

    def _check(self) -> None:
        self._set("code", as_text(self.code, "code"))
        self._set("message", as_text(self.message, "message"))
        self._set("in_reply_to", as_optional_int(self.in_reply_to, "in_reply_to", minimum=0))


def describe(message: Message) -> dict[str, Any]:
    """A short loggable summary: scalars and array shapes, never array contents."""
    summary: dict[str, Any] = {"type": message.type_name(), **message.scalars()}
    for name, array in message.arrays().items():
        summary[name] = f"{array.dtype}{list(array.shape)}"
    return summary
