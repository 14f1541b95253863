"""The session's stimuli: natural-image pool, grating sets and synthesized images, by session id.

Every image the runner shows is stored in the session file first (`SessionWriter.add_stimuli`,
with its provenance), and the id the file gives it is the id on the wire.  The
natural pool is stored when the session is created (ids 0 … n−1, ``source_index`` = pool
index); a grating set the first time a block needs it; synthesized images when they
arrive.  The library also remembers which ids the presenter and the model server
already have, so pixels travel once.
"""

from __future__ import annotations

import numpy as np

from closedloop.config.protocol import Protocol
from closedloop.config.rig import Rig
from closedloop.data.session_writer import SessionWriter


def natural_pool(protocol: Protocol, rig: Rig, seed: int) -> np.ndarray:
    """(images.n, size_px, size_px) float32 images of the protocol's ``images.source`` in the rig's
    circular aperture."""
    from closedloop.sim.stimuli import stimulus_set  # the simulator package is heavy: only a new session

    size = rig.stimulus.size_px
    return stimulus_set(
        protocol.images.source, protocol.images.n, size_px=size, aperture_diameter_px=float(size), seed=seed
    )


def grating_set(name: str, rig: Rig) -> tuple[np.ndarray, np.ndarray]:
    """A pvc-8 grating set at the rig's stimulus size: images and their parameter records.

    The stimulus array of ``size_px`` pixels spans the aperture, which fixes the
    pixels per degree that spatial frequencies are drawn at.
    """
    from closedloop.sim import gratings  # the simulator package is heavy: only when a grating block runs

    size = rig.stimulus.size_px
    ppd = size / rig.stimulus.aperture_diameter_deg
    if name == "orientation":
        return gratings.orientation_grating_set(canvas_px=size, pixels_per_degree=ppd, aperture_diameter_px=size)
    if name == "sf":
        return gratings.sf_grating_set(canvas_px=size, pixels_per_degree=ppd, aperture_diameter_px=size)
    if name == "size":
        return gratings.size_grating_set(canvas_px=size, pixels_per_degree=ppd)
    raise ValueError(f"unknown grating set {name!r}; use orientation, sf or size")


class StimulusLibrary:
    """Pixels by session stimulus id, and who has seen which.

    Parameters
    ----------
    natural_ids
        Session ids of the natural pool, in pool order.
    """

    def __init__(self, natural_ids: np.ndarray):
        self.natural_ids = np.asarray(natural_ids, dtype=np.int64)
        self.pixels: dict[int, np.ndarray] = {}
        self.parents: dict[int, int] = {}  # synthesized id -> the stimulus it was edited from (natural starts)
        self.grating_ids: dict[str, np.ndarray] = {}
        self.synthesized_ids = np.zeros(0, dtype=np.int64)  # of the most recent synthesize block
        self.presenter_has: set[int] = set()
        self.cursor = 0  # next natural image a natural block starts with

    def add(self, ids: np.ndarray, pixels: np.ndarray) -> None:
        for stimulus_id, image in zip(np.asarray(ids), np.asarray(pixels, dtype=np.float32)):
            self.pixels[int(stimulus_id)] = image

    def add_parents(self, ids: np.ndarray, parents: np.ndarray | None) -> None:
        """Record which stimulus each of ``ids`` was edited from (−1 or ``None``: none)."""
        if parents is not None:
            self.parents.update((int(i), int(p)) for i, p in zip(ids, parents) if int(p) >= 0)

    def parent_ids(self, ids: np.ndarray) -> np.ndarray | None:
        """Each id's parent (−1: none); ``None`` when none of them has one."""
        parents = np.asarray([self.parents.get(int(i), -1) for i in ids], dtype=np.int64)
        return parents if np.any(parents >= 0) else None

    def images(self, ids: np.ndarray) -> np.ndarray:
        """(n, H, W) float32 pixels of ``ids``."""
        return np.stack([self.pixels[int(i)] for i in ids]) if len(ids) else np.zeros((0, 1, 1), np.float32)

    def next_natural(self, count: int) -> np.ndarray:
        """``count`` natural ids starting at the cursor (wrapping), which then moves on.

        Successive blocks of fewer than ``images.n`` images thus walk through the pool
        instead of showing its first images again.
        """
        n = self.natural_ids.size
        count = min(int(count), n)
        ids = self.natural_ids[(self.cursor + np.arange(count)) % n]
        self.cursor = (self.cursor + count) % n
        return ids

    def gratings(self, name: str, rig: Rig, writer: SessionWriter) -> np.ndarray:
        """Ids of grating set ``name``, storing it in the session the first time."""
        if name not in self.grating_ids:
            images, params = grating_set(name, rig)
            ids = writer.add_stimuli(
                images,
                "grating",
                source_index=np.arange(len(images)),
                orientation_deg=params["orientation_deg"],
                phase_deg=params["phase_deg"],
                sf_cpd=params["sf_cpd"],
                radius_px=params["radius_px"],
                annulus=params["annulus"].astype(np.int8),
            )
            self.add(ids, images)
            self.grating_ids[name] = ids
        return self.grating_ids[name]

    def new_for_presenter(self, order: np.ndarray) -> np.ndarray:
        """Ids in ``order`` whose pixels the presenter has not been sent (sorted, unique)."""
        return np.array(sorted({int(i) for i in order} - self.presenter_has), dtype=np.int64)
