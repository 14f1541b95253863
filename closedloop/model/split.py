"""Seeded split of a dataset's images into training, stopping and held-out parts (docs/methods.md, Model).

Kindel et al. fitted on 80 % of the images and held out 20 % for evaluation; of the
80 %, a subset of about 14 % *of all images* was used only to decide when to stop
training.  With 270 images: 178 train, 38 stop, 54 held out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from closedloop.errors import ClosedLoopError

MIN_IMAGES = 10


@dataclass(frozen=True)
class DataSplit:
    """Positions (0-based indices into the dataset's images) of each part, sorted.

    Attributes
    ----------
    train
        Images the weights are fitted on.
    stop
        Early-stopping subset (part of the 80 % "fit" images, never trained on).
    held_out
        Evaluation images, never seen during fitting.
    seed
        Seed the split was drawn with.
    """

    train: np.ndarray
    stop: np.ndarray
    held_out: np.ndarray
    seed: int

    @property
    def fit(self) -> np.ndarray:
        """Train and stop images together (the 80 %)."""
        return np.sort(np.concatenate([self.train, self.stop]))

    @property
    def n_images(self) -> int:
        return int(len(self.train) + len(self.stop) + len(self.held_out))

    def to_dict(self) -> dict:
        return {
            "train": self.train.tolist(),
            "stop": self.stop.tolist(),
            "held_out": self.held_out.tolist(),
            "seed": int(self.seed),
        }

    @classmethod
    def from_dict(cls, data: dict) -> DataSplit:
        return cls(
            train=np.asarray(data["train"], dtype=np.int64),
            stop=np.asarray(data["stop"], dtype=np.int64),
            held_out=np.asarray(data["held_out"], dtype=np.int64),
            seed=int(data["seed"]),
        )


def split_images(n_images: int, seed: int, held_out_fraction: float = 0.2, stop_fraction: float = 0.14) -> DataSplit:
    """Draw a seeded random split.

    Parameters
    ----------
    n_images
        Number of images in the dataset.
    seed
        Same seed, same split.
    held_out_fraction
        Fraction of all images held out for evaluation.
    stop_fraction
        Fraction of all images used as the early-stopping subset (taken from the
        non-held-out part).

    Raises
    ------
    ClosedLoopError
        Fewer than `MIN_IMAGES` images, or a fraction leaves a part empty.
    """
    if not (0 < held_out_fraction < 1 and 0 < stop_fraction < 1 and held_out_fraction + stop_fraction < 1):
        raise ClosedLoopError(
            f"split fractions must be in (0, 1) and sum to less than 1: held out {held_out_fraction}, "
            f"stop {stop_fraction}"
        )
    if n_images < MIN_IMAGES:
        raise ClosedLoopError(
            f"only {n_images} images with responses: fitting needs at least {MIN_IMAGES} "
            "(training, early-stopping and held-out parts must each have some); record more images"
        )
    n_held_out = int(round(held_out_fraction * n_images))
    n_stop = int(round(stop_fraction * n_images))
    n_train = n_images - n_held_out - n_stop
    if min(n_held_out, n_stop, n_train) < 1:
        raise ClosedLoopError(
            f"{n_images} images give an empty part (train {n_train}, stop {n_stop}, held out {n_held_out}); "
            "record more images"
        )
    order = np.random.default_rng(seed).permutation(n_images)
    held_out = np.sort(order[:n_held_out])
    stop = np.sort(order[n_held_out : n_held_out + n_stop])
    train = np.sort(order[n_held_out + n_stop :])
    return DataSplit(train=train, stop=stop, held_out=held_out, seed=int(seed))
