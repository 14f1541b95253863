"""The dataset object that fitting uses, whatever file it came from.

A session file (`closedloop.data.session`) and a pvc-8 file (`closedloop.data.pvc8`)
both load into a `ResponseDataset`: preprocessed images, trial-level rates, unit ids
and, where the recording has them, grating responses for circular variance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Preprocessing:
    """How a presented stimulus becomes the network's input (docs/methods.md, Model).

    Non-overlapping ``downsample`` × ``downsample`` averaging, then a centred
    ``crop`` × ``crop`` window.  Pixel values stay in the display's [0, 1] range.
    """

    downsample: int = 2
    crop: int = 33

    def to_dict(self) -> dict:
        return {"downsample": self.downsample, "crop": self.crop}


@dataclass(frozen=True)
class GratingResponses:
    """Mean rate per orientation (averaged over phases and repeats), for circular variance.

    Attributes
    ----------
    orientations_deg
        (n_orientations,) grating orientation in degrees.
    rates
        (n_orientations, n_units) mean rate in Hz.
    """

    orientations_deg: np.ndarray
    rates: np.ndarray


@dataclass(frozen=True)
class ResponseDataset:
    """Images and the responses of every unit to them.

    Attributes
    ----------
    images
        (n_images, crop, crop) float32 network input, after `Preprocessing`, in [0, 1].
    trial_rates
        (n_images, n_repeats, n_units) float32 rate in Hz in the response window, one
        entry per repeat; NaN where an image was shown fewer than ``n_repeats`` times.
    unit_ids
        (n_units,) int64 unit identifiers as the recording names them.
    image_ids
        (n_images,) int64 stimulus identifiers in the source file (session stimulus id,
        or 0-based pvc-8 stimulus index).
    source
        Path or description of where the data came from.
    preprocessing
        How the images were preprocessed.
    window_s
        (start, stop) of the response window after onset, in seconds.
    gratings
        Orientation-grating responses, or ``None`` if the recording has none.
    """

    images: np.ndarray
    trial_rates: np.ndarray
    unit_ids: np.ndarray
    image_ids: np.ndarray
    source: str
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    window_s: tuple[float, float] = (0.05, 0.10)
    gratings: GratingResponses | None = None

    def __post_init__(self) -> None:
        n_images, n_units = self.images.shape[0], self.unit_ids.shape[0]
        if self.trial_rates.ndim != 3 or self.trial_rates.shape[0] != n_images:
            raise ValueError(
                f"trial_rates must be (n_images={n_images}, n_repeats, n_units), got {self.trial_rates.shape}"
            )
        if self.trial_rates.shape[2] != n_units:
            raise ValueError(f"trial_rates has {self.trial_rates.shape[2]} units, unit_ids {n_units}")
        if self.image_ids.shape[0] != n_images:
            raise ValueError(f"image_ids has {self.image_ids.shape[0]} entries, images {n_images}")

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_units(self) -> int:
        return int(self.unit_ids.shape[0])

    @property
    def mean_rates(self) -> np.ndarray:
        """(n_images, n_units) mean rate over repeats, ignoring missing repeats."""
        return np.nanmean(self.trial_rates, axis=1)

    @property
    def repeat_counts(self) -> np.ndarray:
        """(n_images, n_units) number of repeats actually recorded."""
        return np.sum(~np.isnan(self.trial_rates), axis=1)

    def select_units(self, index: np.ndarray) -> ResponseDataset:
        """A dataset restricted to the units at ``index`` (positions, not ids)."""
        index = np.asarray(index)
        gratings = None
        if self.gratings is not None:
            gratings = GratingResponses(self.gratings.orientations_deg, self.gratings.rates[:, index])
        return ResponseDataset(
            images=self.images,
            trial_rates=self.trial_rates[:, :, index],
            unit_ids=self.unit_ids[index],
            image_ids=self.image_ids,
            source=self.source,
            preprocessing=self.preprocessing,
            window_s=self.window_s,
            gratings=gratings,
        )
