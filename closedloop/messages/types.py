"""The message types (docs/architecture.md, Messages).

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
    ArraySpec,
    Message,
    as_bool,
    as_float,
    as_int,
    as_metrics,
    as_optional_int,
    as_text,
    register,
    same_length,
)

_IDS = ("int64", "int32")
_RATES = ("float64", "float32")
_IMAGES = ("float32", "float64", "uint8")
#: The largest model version a message may name (a model file is named model_v{version:03d}.pt).
MAX_VERSION = 2**31 - 1


def _ids_with_images(message: Message, ids: str, images: str) -> None:
    if (getattr(message, ids) is None) != (getattr(message, images) is None):
        raise ValueError(f"{ids} and {images} come together (one id per image) or not at all")
    same_length(message, ids, images)


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
    """The runner asks the presenter to show a block (and publishes it for the monitor).

    ``stimulus_ids`` are shown in that order, the whole list ``repeats`` times.
    ``pixels`` (n_new, h, w) are images the presenter does not have yet (natural images
    the first time, synthesized ones), named by ``image_ids``; later blocks name them by
    id only.
    """

    ARRAYS: ClassVar[dict[str, ArraySpec]] = {
        "stimulus_ids": ArraySpec(_IDS, 1),
        "image_ids": ArraySpec(_IDS, 1, optional=True),
        "pixels": ArraySpec(_IMAGES, 3, optional=True),
    }
    block: int
    kind: str
    stimulus_ids: np.ndarray
    repeats: int = 1
    image_ids: np.ndarray | None = None
    pixels: np.ndarray | None = None

    def _check(self) -> None:
        self._set("block", as_int(self.block, "block", minimum=0))
        self._set("kind", as_text(self.kind, "kind"))
        self._set("repeats", as_int(self.repeats, "repeats", minimum=1))
        _ids_with_images(self, "image_ids", "pixels")


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
    """Responses for the model server to add to its data, and whether to refit now.

    ``rates`` is (n_trials, n_units): one row per trial of ``stimulus_ids`` (a stimulus
    shown on several trials appears on several rows; the server averages repeats).
    ``images`` (n_new, h, w) are stimuli the server does not have yet, named by
    ``image_ids``; stimuli it already has are named by id only.  With ``refit`` the
    server starts a background refit on everything it has (answered at once by
    `Accepted`; `ModelUpdated` is published when the refit finishes).
    ``version_floor`` (a resumed session's runner): the server's next model version is
    at least this, so versions recorded before the resume are never reused; 0: no floor.
    ``parent_ids`` (optional, one per image, only with images): the stimulus an image was
    edited from (a synthesized image's start image), −1 for none; the server puts an image
    in its parent's part of the split, so an edit is never held out while its original
    trains the model.
    """

    ARRAYS: ClassVar[dict[str, ArraySpec]] = {
        "stimulus_ids": ArraySpec(_IDS, 1),
        "rates": ArraySpec(_RATES, 2),
        "unit_ids": ArraySpec(_IDS, 1),
        "image_ids": ArraySpec(_IDS, 1, optional=True),
        "images": ArraySpec(_IMAGES, 3, optional=True),
        "parent_ids": ArraySpec(_IDS, 1, optional=True),
    }
    block: int
    stimulus_ids: np.ndarray
    rates: np.ndarray
    unit_ids: np.ndarray
    image_ids: np.ndarray | None = None
    images: np.ndarray | None = None
    refit: bool = True
    version_floor: int = 0
    parent_ids: np.ndarray | None = None

    def _check(self) -> None:
        self._set("block", as_int(self.block, "block", minimum=0))
        same_length(self, "stimulus_ids", "rates")
        _ids_with_images(self, "image_ids", "images")
        if self.parent_ids is not None and self.image_ids is None:
            raise ValueError("parent_ids name the parents of images: send them with image_ids and images")
        same_length(self, "image_ids", "parent_ids")
        _one_column_per_unit(self.rates, self.unit_ids)
        self._set("refit", as_bool(self.refit, "refit"))
        self._set("version_floor", as_int(self.version_floor, "version_floor", minimum=0))
        if self.version_floor > MAX_VERSION:
            raise ValueError(f"version_floor: {self.version_floor} is above the largest model version {MAX_VERSION}")


@register
@dataclass(frozen=True, eq=False)
class Accepted(Message):
    """A request was taken: ``version`` is the model version it will produce (Fit) or used."""

    in_reply_to: int
    version: int = 0
    detail: str = ""

    def _check(self) -> None:
        self._set("in_reply_to", as_int(self.in_reply_to, "in_reply_to", minimum=0))
        self._set("version", as_int(self.version, "version", minimum=0))
        self._set("detail", as_text(self.detail, "detail"))


@register
@dataclass(frozen=True, eq=False)
class ModelUpdated(Message):
    """A refit finished: the new model version, its summary held-out metrics, and per unit r.

    ``unit_ids`` / ``heldout_r`` (optional, same length) give each fitted unit's
    held-out Pearson r, which the runner uses to pick units for synthesis.
    """

    ARRAYS: ClassVar[dict[str, ArraySpec]] = {
        "unit_ids": ArraySpec(_IDS, 1, optional=True),
        "heldout_r": ArraySpec(_RATES, 1, optional=True),
    }
    version: int
    metrics: dict[str, float] = field(default_factory=dict)
    unit_ids: np.ndarray | None = None
    heldout_r: np.ndarray | None = None

    def _check(self) -> None:
        self._set("version", as_int(self.version, "version", minimum=0))
        self._set("metrics", as_metrics(self.metrics, "metrics"))
        same_length(self, "unit_ids", "heldout_r")


@register
@dataclass(frozen=True, eq=False)
class SynthesizeRequest(Message):
    """Synthesize one image per (unit, target rate in Hz) pair.

    A NaN target means "as high as possible"; ``steps`` 0 means the server's default.
    """

    ARRAYS: ClassVar[dict[str, ArraySpec]] = {
        "unit_ids": ArraySpec(_IDS, 1),
        "targets": ArraySpec(_RATES, 1),
    }
    unit_ids: np.ndarray
    targets: np.ndarray
    seed: int = 0
    steps: int = 0

    def _check(self) -> None:
        same_length(self, "unit_ids", "targets")
        self._set("seed", as_int(self.seed, "seed", minimum=0))
        self._set("steps", as_int(self.steps, "steps", minimum=0))


@register
@dataclass(frozen=True, eq=False)
class SynthesizeResult(Message):
    """Synthesized images with the rate the model predicts for each (``achieved``).

    ``spread`` (optional) is the standard deviation of the ensemble members'
    predictions for each image's unit: how sure the model is of ``achieved``.
    ``start_ids`` (optional) is the stimulus id of the fitted image each image started
    from, −1 for the blank screen.
    """

    ARRAYS: ClassVar[dict[str, ArraySpec]] = {
        "unit_ids": ArraySpec(_IDS, 1),
        "targets": ArraySpec(_RATES, 1),
        "images": ArraySpec(_IMAGES, 3),
        "achieved": ArraySpec(_RATES, 1),
        "spread": ArraySpec(_RATES, 1, optional=True),
        "start_ids": ArraySpec(_IDS, 1, optional=True),
    }
    unit_ids: np.ndarray
    targets: np.ndarray
    images: np.ndarray
    achieved: np.ndarray
    model_version: int
    seed: int = 0
    spread: np.ndarray | None = None
    start_ids: np.ndarray | None = None

    def _check(self) -> None:
        same_length(self, "unit_ids", "targets", "images", "achieved", "spread", "start_ids")
        self._set("model_version", as_int(self.model_version, "model_version", minimum=0))
        self._set("seed", as_int(self.seed, "seed", minimum=0))


@register
@dataclass(frozen=True, eq=False)
class PredictRequest(Message):
    """Predict every unit's rate for these (n, h, w) images (optionally naming their stimulus ids).

    With no images it is a liveness check, answered by `Accepted` with the current model version.
    """

    ARRAYS: ClassVar[dict[str, ArraySpec]] = {
        "images": ArraySpec(_IMAGES, 3),
        "stimulus_ids": ArraySpec(_IDS, 1, optional=True),
    }
    images: np.ndarray
    stimulus_ids: np.ndarray | None = None

    def _check(self) -> None:
        same_length(self, "images", "stimulus_ids")


@register
@dataclass(frozen=True, eq=False)
class Predictions(Message):
    """Predicted ``rates`` (n_images, n_units), the model version that made them, and the
    request's ``stimulus_ids`` when it named them (the server also publishes these)."""

    ARRAYS: ClassVar[dict[str, ArraySpec]] = {
        "rates": ArraySpec(_RATES, 2),
        "unit_ids": ArraySpec(_IDS, 1),
        "stimulus_ids": ArraySpec(_IDS, 1, optional=True),
    }
    rates: np.ndarray
    unit_ids: np.ndarray
    model_version: int
    stimulus_ids: np.ndarray | None = None

    def _check(self) -> None:
        self._set("model_version", as_int(self.model_version, "model_version", minimum=0))
        _one_column_per_unit(self.rates, self.unit_ids)
        same_length(self, "rates", "stimulus_ids")


@register
@dataclass(frozen=True, eq=False)
class BlockStatus(Message):
    """The runner's progress, for the monitor and logs.

    ``state`` is ``"started"``, ``"finished"``, ``"flagged"`` (finished, but alignment
    or data had a problem, described in ``detail``), ``"skipped"`` or ``"failed"``;
    ``iteration`` is the loop iteration (0 outside loops).  The images of a
    presentation block travel in the `BlockRequest` the runner also publishes.
    """

    block: int
    kind: str
    state: str
    iteration: int = 0
    n_trials: int = 0
    detail: str = ""

    def _check(self) -> None:
        self._set("block", as_int(self.block, "block", minimum=0))
        self._set("kind", as_text(self.kind, "kind"))
        self._set("state", as_text(self.state, "state"))
        self._set("iteration", as_int(self.iteration, "iteration", minimum=0))
        self._set("n_trials", as_int(self.n_trials, "n_trials", minimum=0))
        self._set("detail", as_text(self.detail, "detail"))


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
