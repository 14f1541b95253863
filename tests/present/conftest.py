"""Fixtures for the presenter tests: small rigs, and an Xvfb server the PsychoPy tests draw on.

Xvfb is started once per session on a display number it picks itself (``-displayfd``),
so the tests need no DISPLAY and never collide with another X server.  They are skipped
only when the Xvfb binary is missing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from closedloop.config import load_rig
from closedloop.config.protocol import FrameTiming
from closedloop.config.rig import Rig
from closedloop.present.xvfb import virtual_display

RIG_TEMPLATE = """\
name: present-test
display:
  width_px: 800
  height_px: 600
  width_cm: 40.0
  height_cm: 30.0
  distance_cm: 57
  refresh_hz: {refresh_hz}
  gamma: {gamma}
  mean_luminance: {mean_luminance}
  fullscreen: {fullscreen}
  screen: 0
  photodiode: {{enabled: true, corner: bottom_left, size_px: 40}}
stimulus:
  centre_deg: [-3.0, 2.0]
  aperture_diameter_deg: 3.0
  size_px: 20
acquisition:
  kind: sim
"""


def write_rig(
    folder: Path,
    *,
    refresh_hz: float = 60,
    gamma: float | None = None,
    mean_luminance: float = 0.5,
    fullscreen: bool = False,
) -> Rig:
    """An 800 × 600 px rig (about 20 px/deg, aperture ≈ 60 px) with 20 × 20 px stimuli."""
    text = RIG_TEMPLATE.format(
        refresh_hz=refresh_hz,
        gamma="null" if gamma is None else gamma,
        mean_luminance=mean_luminance,
        fullscreen=str(fullscreen).lower(),
    )
    path = folder / f"rig_{refresh_hz}_{gamma}_{mean_luminance}_{fullscreen}.yaml"
    path.write_text(text)
    return load_rig(path)


@pytest.fixture(scope="session")
def rig_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rigs")


@pytest.fixture(scope="session")
def test_rig(rig_folder: Path) -> Rig:
    return write_rig(rig_folder)


@pytest.fixture(scope="session")
def timing() -> FrameTiming:
    return FrameTiming(stimulus_frames=3, blank_frames=2, refresh_hz=60.0)


def quadrant_image(size: int = 20) -> np.ndarray:
    """Top-left 0.9, top-right 0.1, bottom-left 0.3, bottom-right 0.7: any flip or turn shows."""
    image = np.empty((size, size), dtype=np.float32)
    half = size // 2
    image[:half, :half], image[:half, half:] = 0.9, 0.1
    image[half:, :half], image[half:, half:] = 0.3, 0.7
    return image


@pytest.fixture(scope="session")
def xvfb_display():
    """Start Xvfb (1920 × 1080, 24 bit, GLX) for this session and point DISPLAY at it."""
    if shutil.which("Xvfb") is None:
        pytest.skip(
            "Xvfb is not installed (apt-get install -y xvfb libgl1 libglx-mesa0 libgl1-mesa-dri); "
            "the PsychoPy presenter tests draw on it"
        )
    with virtual_display(1920, 1080) as display:
        yield display
