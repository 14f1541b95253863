"""Where a stimulus lands on the screen and what pixel values it is drawn with.

Everything here is plain numpy, shared by the PsychoPy presenter (which draws what
`stimulus_texture` returns at `aperture_box`) and by tests, which compare the window's
back buffer with `expected_screen`.  Arrays use image orientation: row 0 is the top.
Pixel values are fractions of the display's range in [0, 1] after gamma encoding;
PsychoPy's ``rgb`` colour space wants ``2·v − 1`` and numpy row 0 at the *bottom*,
which `to_psychopy` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from closedloop.config.rig import Rig


@dataclass(frozen=True)
class ScreenBox:
    """A square on the screen in whole pixels: ``left``/``top`` from the top-left corner."""

    left: int
    top: int
    size: int

    @property
    def right(self) -> int:
        return self.left + self.size

    @property
    def bottom(self) -> int:
        return self.top + self.size

    def psychopy_centre(self, width_px: int, height_px: int) -> tuple[float, float]:
        """Centre in PsychoPy ``pix`` units (origin at the window centre, y up).

        Using the box's exact edges keeps the quad on pixel boundaries, so an
        un-interpolated texture maps one texel to one screen pixel.
        """
        x = self.left + self.size / 2 - width_px / 2
        y = height_px / 2 - (self.top + self.size / 2)
        return x, y


def aperture_diameter_px(rig: Rig) -> int:
    """The aperture's diameter on screen in whole pixels.

    The flat screen stretches a disc seen in degrees a little away from the screen
    centre; we measure it along both meridians through the aperture centre and use
    the mean, so the drawn aperture is a circle of the right size.
    """
    display = rig.display
    (x, y), radius = rig.stimulus.centre_deg, rig.stimulus.aperture_diameter_deg / 2
    left, _ = display.to_pixels(x - radius, y)
    right, _ = display.to_pixels(x + radius, y)
    _, top = display.to_pixels(x, y + radius)
    _, bottom = display.to_pixels(x, y - radius)
    return max(1, int(round(((right - left) + (bottom - top)) / 2)))


def aperture_box(rig: Rig) -> ScreenBox:
    """The square, in whole screen pixels, that the circular aperture is inscribed in."""
    size = aperture_diameter_px(rig)
    column, row = rig.display.to_pixels(*rig.stimulus.centre_deg)
    return ScreenBox(int(round(column - size / 2)), int(round(row - size / 2)), size)


def photodiode_box(rig: Rig) -> ScreenBox | None:
    """The photodiode patch's square in its screen corner (``None`` when disabled)."""
    patch, display = rig.display.photodiode, rig.display
    if not patch.enabled:
        return None
    left = 0 if patch.corner.endswith("left") else display.width_px - patch.size_px
    top = 0 if patch.corner.startswith("top") else display.height_px - patch.size_px
    return ScreenBox(left, top, patch.size_px)


def resampling_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) weights that resample a line of ``n_in`` pixels to ``n_out``.

    Each output pixel averages the input pixels it covers, weighted by overlap: a
    box filter, so shrinking does not alias and enlarging replicates pixels (a
    stimulus keeps its sharp edges) with at most one blended pixel at each seam.
    """
    edges_out = np.linspace(0.0, n_in, n_out + 1)
    starts, stops = edges_out[:-1, None], edges_out[1:, None]
    pixel = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(stops, pixel + 1) - np.maximum(starts, pixel), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def resample(image: np.ndarray, size: int) -> np.ndarray:
    """A square ``image`` resampled to ``size × size`` (see `resampling_matrix`)."""
    rows = resampling_matrix(size, image.shape[0])
    cols = resampling_matrix(size, image.shape[1])
    return rows @ image.astype(np.float64) @ cols.T


def disc(size: int) -> np.ndarray:
    """(size, size) bool: pixels whose centre lies within the inscribed circle."""
    centre = (size - 1) / 2.0
    rows, cols = np.mgrid[0:size, 0:size]
    return np.hypot(rows - centre, cols - centre) <= size / 2.0


def gamma_encode(luminance: np.ndarray | float, gamma: float | None) -> np.ndarray:
    """Pixel value that makes a display with this ``gamma`` emit ``luminance``.

    A display emits ``v ** gamma`` for pixel value ``v``; linearising means sending
    ``luminance ** (1 / gamma)``.  ``gamma=None`` is an already linear display.
    """
    values = np.clip(np.asarray(luminance, dtype=np.float64), 0.0, 1.0)
    return values if gamma is None else values ** (1.0 / gamma)


def background_value(rig: Rig) -> float:
    """Pixel value of the mean-luminance grey around the aperture and between stimuli."""
    return float(gamma_encode(rig.display.mean_luminance, rig.display.gamma))


def stimulus_texture(image: np.ndarray, rig: Rig) -> np.ndarray:
    """What to draw in `aperture_box`: pixel values in [0, 1], row 0 at the top.

    ``image`` (luminance fractions, row 0 at the top) is resampled to the aperture's
    size on screen, cut to the circle (mean luminance outside) and gamma encoded.
    """
    size = aperture_diameter_px(rig)
    luminance = np.where(disc(size), resample(image, size), rig.display.mean_luminance)
    return gamma_encode(luminance, rig.display.gamma)


def to_psychopy(values: np.ndarray) -> np.ndarray:
    """Pixel values in [0, 1], row 0 at the top → PsychoPy's [−1, 1], row 0 at the bottom."""
    return np.ascontiguousarray(np.flipud(2.0 * values - 1.0), dtype=np.float32)


def expected_screen(rig: Rig, texture: np.ndarray | None, photodiode_on: bool) -> np.ndarray:
    """The whole screen as the presenter should draw it, (height, width) in [0, 1].

    ``texture`` is a `stimulus_texture` (``None`` for a blank frame); the photodiode
    patch is white when ``photodiode_on`` and black otherwise.
    """
    display = rig.display
    screen = np.full((display.height_px, display.width_px), background_value(rig))
    if texture is not None:
        box = aperture_box(rig)
        screen[box.top : box.bottom, box.left : box.right] = texture
    patch = photodiode_box(rig)
    if patch is not None:
        screen[patch.top : patch.bottom, patch.left : patch.right] = 1.0 if photodiode_on else 0.0
    return screen
