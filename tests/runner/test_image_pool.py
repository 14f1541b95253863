"""The natural-image pool a protocol asks for: photographs, or the simulator's other image sets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from closedloop.config import load_protocol, load_rig
from closedloop.runner.stimuli import natural_pool
from closedloop.sim.photographs import natural_images
from closedloop.sim.stimuli import pink_noise

ROOT = Path(__file__).resolve().parents[2]


def _pool(source: str) -> np.ndarray:
    protocol = load_protocol(ROOT / "protocols/kindel2017.yaml")
    protocol = dataclasses.replace(protocol, images=dataclasses.replace(protocol.images, n=6, source=source))
    return natural_pool(protocol, load_rig(ROOT / "rigs/sim.yaml"), seed=3)


def test_photographs_are_the_pool_they_always_were():
    pool = _pool("photographs")
    assert np.array_equal(pool, natural_images(6, size_px=pool.shape[1], aperture_diameter_px=pool.shape[1], seed=3))


def test_a_mixed_pool_holds_photographs_and_1_over_f_noise():
    pool, photographs = _pool("mixed"), _pool("photographs")
    size = pool.shape[1]
    assert np.array_equal(pool[1::3], pink_noise(2, size_px=size, aperture_diameter_px=size, seed=4))
    assert not np.array_equal(pool, photographs)
    assert pool.shape == photographs.shape and pool.dtype == np.float32
