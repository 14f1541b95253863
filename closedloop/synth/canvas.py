"""Where synthesized pixels may live: model resolution, aperture, range, mean luminance.

Images are synthesized at the model's input resolution (33 × 33 by default) and shown
at the display's (66 × 66): the display image is the model image upsampled by
nearest neighbour (each model pixel becomes a ``downsample`` × ``downsample`` block),
placed in the centre of a grey canvas, so ``closedloop.data.preprocess.preprocess``
(block means, centred crop) gives back the model image *exactly*.

The aperture is the set of model pixels whose block centre lies inside the display's
circular aperture (60 display px across by default: a 30-px disc in model space).
Outside it every pixel is the mean luminance (the rig's grey); inside it the pixels
are in the display's range and their mean *is* the mean luminance, so synthesized
images differ from the blank screen only in pattern, never in overall brightness.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from closedloop.errors import ClosedLoopError


@dataclass(frozen=True)
class Canvas:
    """The geometry and photometry synthesized images must respect.

    Attributes
    ----------
    model_size
        Side of the model's input (the checkpoint's preprocessing crop).
    downsample
        Display pixels per model pixel (the checkpoint's preprocessing).
    display_size
        Side of the presented stimulus array (the rig's ``stimulus.size_px``).
    aperture_diameter_px
        Aperture diameter in display pixels.
    mean_luminance
        Grey level of the blank screen, a fraction of the display range.
    low, high
        The display's range.
    max_contrast
        Optional cap on the RMS contrast (standard deviation of the pixels inside
        the aperture); ``None``: only the range limits contrast.
    min_contrast
        Optional floor on the RMS contrast: fainter images have their deviations from
        grey scaled up to it (before the range is enforced, which at natural contrasts
        clips nothing); ``None``: no floor.
    """

    model_size: int = 33
    downsample: int = 2
    display_size: int = 66
    aperture_diameter_px: float = 60.0
    mean_luminance: float = 0.5
    low: float = 0.0
    high: float = 1.0
    max_contrast: float | None = None
    min_contrast: float | None = None

    def __post_init__(self) -> None:
        if self.model_size < 1 or self.downsample < 1:
            raise ClosedLoopError(f"model size and downsampling must be at least 1, got {self}")
        if self.model_size * self.downsample > self.display_size:
            raise ClosedLoopError(
                f"the model sees {self.model_size}×{self.downsample} = {self.model_size * self.downsample} display "
                f"pixels but the display is only {self.display_size} px across"
            )
        if not self.low <= self.mean_luminance <= self.high or not self.low < self.high:
            raise ClosedLoopError(
                f"mean luminance {self.mean_luminance} must lie in the display range [{self.low}, {self.high}]"
            )
        if self.aperture_diameter_px <= 0:
            raise ClosedLoopError(f"aperture diameter must be positive, got {self.aperture_diameter_px}")
        if self.max_contrast is not None and not self.max_contrast > 0:
            raise ClosedLoopError(f"max_contrast must be positive, got {self.max_contrast}")
        if self.min_contrast is not None and not (
            self.min_contrast > 0 and (self.max_contrast is None or self.min_contrast <= self.max_contrast)
        ):
            raise ClosedLoopError(
                f"min_contrast must be positive and at most max_contrast, got {self.min_contrast} "
                f"(max_contrast {self.max_contrast})"
            )
        if not self.aperture_mask().any():
            raise ClosedLoopError("the aperture holds no model pixel; make it larger")

    @classmethod
    def for_preprocessing(cls, preprocessing: dict, **overrides) -> Canvas:
        """The canvas of a checkpoint's ``preprocessing`` (``downsample``, ``crop``)."""
        return cls(
            model_size=int(preprocessing.get("crop", 33)),
            downsample=int(preprocessing.get("downsample", 2)),
            **overrides,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def offset_px(self) -> int:
        """Display row/column where the model's crop starts (as `preprocess` centres it)."""
        small = self.display_size // self.downsample
        return (small - self.model_size) // 2 * self.downsample

    def aperture_mask(self) -> np.ndarray:
        """(model_size, model_size) bool: model pixels inside the aperture."""
        d = self.downsample
        index = np.arange(self.model_size)
        centres = self.offset_px + index * d + (d - 1) / 2.0
        middle = (self.display_size - 1) / 2.0
        distance = np.hypot(centres[:, None] - middle, centres[None, :] - middle)
        return distance <= self.aperture_diameter_px / 2.0

    def to_display(self, images: np.ndarray) -> np.ndarray:
        """(n, model_size, model_size) → (n, display_size, display_size) float32, grey around."""
        images = np.asarray(images, dtype=np.float32)
        d, start = self.downsample, self.offset_px
        out = np.full((images.shape[0], self.display_size, self.display_size), self.mean_luminance, np.float32)
        block = np.repeat(np.repeat(images, d, axis=1), d, axis=2)
        out[:, start : start + block.shape[1], start : start + block.shape[2]] = block
        return out

    def blank(self, n: int = 1) -> np.ndarray:
        """(n, model_size, model_size) uniform mean-luminance images."""
        return np.full((n, self.model_size, self.model_size), self.mean_luminance, np.float32)

    def violations(self, images: np.ndarray, atol: float = 1e-4) -> list[str]:
        """What is wrong with model-resolution images (empty when they respect the canvas)."""
        images = np.asarray(images, dtype=np.float64)
        inside = self.aperture_mask()
        problems = []
        if images.min() < self.low - atol or images.max() > self.high + atol:
            problems.append(f"pixels outside [{self.low}, {self.high}]")
        if np.abs(images[:, ~inside] - self.mean_luminance).max(initial=0) > atol:
            problems.append("pixels outside the aperture are not grey")
        means = images[:, inside].mean(axis=1)
        if np.abs(means - self.mean_luminance).max(initial=0) > atol:
            problems.append("mean luminance inside the aperture differs from the rig's")
        if self.max_contrast is not None and images[:, inside].std(axis=1).max() > self.max_contrast + atol:
            problems.append(f"RMS contrast above {self.max_contrast}")
        return problems


class Projection:
    """Euclidean projection of pixel batches onto the canvas's constraint set.

    Inside the aperture the set is {range box} ∩ {mean = mean luminance}; the
    projection onto it is ``clamp(x - t)`` for the one shift ``t`` that restores the
    mean (KKT), found by bisection.  An RMS-contrast cap, if any, then scales the
    deviations from grey, which keeps both the range and the mean.  An RMS-contrast
    floor, if any, scales fainter images' deviations up to it first (in the rows asked).
    """

    def __init__(self, canvas: Canvas, device: torch.device, iterations: int = 40):
        self.canvas = canvas
        self.inside = torch.as_tensor(canvas.aperture_mask(), device=device)
        self.n_inside = int(self.inside.sum())
        self.iterations = iterations

    def __call__(self, images: torch.Tensor, floored: torch.Tensor | None = None) -> torch.Tensor:
        """Project ``images`` (B, S, S); ``floored`` (B,) bool: the rows the contrast floor
        applies to (default all)."""
        c = self.canvas
        x = images[:, self.inside]  # (B, n_inside)
        if c.min_contrast is not None:  # the pattern, not the overall brightness, is scaled up
            mean = x.mean(dim=1, keepdim=True)
            rms = (x - mean).pow(2).mean(dim=1).sqrt()
            factor = c.min_contrast / rms.clamp_min(1e-12)
            lift = factor > 1 if floored is None else (factor > 1) & floored
            # Rows left alone keep their pixels bit for bit.
            x = torch.where(lift[:, None], mean + (x - mean) * factor[:, None], x)
        lo, hi = x.min(dim=1).values - c.high, x.max(dim=1).values - c.low
        for _ in range(self.iterations):  # mean(clamp(x - t)) falls as t rises
            t = 0.5 * (lo + hi)
            too_bright = (x - t[:, None]).clamp(c.low, c.high).mean(dim=1) > c.mean_luminance
            lo = torch.where(too_bright, t, lo)
            hi = torch.where(too_bright, hi, t)
        x = (x - (0.5 * (lo + hi))[:, None]).clamp(c.low, c.high)
        # The bisection leaves a tiny residual; clamped pixels stay put when it is removed.
        free = (x > c.low) & (x < c.high)
        residual = x.mean(dim=1) - c.mean_luminance
        x = torch.where(free, x - residual[:, None] * self.n_inside / free.sum(1).clamp_min(1)[:, None], x)
        x = x.clamp(c.low, c.high)
        if c.max_contrast is not None:
            deviation = x - c.mean_luminance
            rms = deviation.pow(2).mean(dim=1).sqrt()
            factor = (c.max_contrast / rms.clamp_min(1e-12)).clamp(max=1.0)
            x = c.mean_luminance + deviation * factor[:, None]
        out = torch.full_like(images, c.mean_luminance)
        out[:, self.inside] = x
        return out
