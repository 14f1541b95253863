"""Natural images cut from photographs that ship inside scikit-image and scikit-learn.

The files are read straight from the installed packages' folders (never through
``skimage.data``'s fetchers, which may download).  Each image is a random crop at
a random scale, grayscale, normalised to mean grey and a natural spread of RMS
contrast, and shown in the circular aperture.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from closedloop.errors import DataFileError
from closedloop.sim.aperture import GREY, aperture_mask

#: Photographs used, by package and file name.  Synthetic or binary pictures
#: (text, chessboards, the horse silhouette) are left out on purpose.
PHOTOGRAPHS: tuple[tuple[str, str], ...] = (
    ("skimage", "astronaut.png"),
    ("skimage", "brick.png"),
    ("skimage", "camera.png"),
    ("skimage", "chelsea.png"),
    ("skimage", "coffee.png"),
    ("skimage", "coins.png"),
    ("skimage", "grass.png"),
    ("skimage", "gravel.png"),
    ("skimage", "hubble_deep_field.jpg"),
    ("skimage", "moon.png"),
    ("skimage", "motorcycle_left.png"),
    ("skimage", "retina.jpg"),
    ("skimage", "rocket.jpg"),
    ("sklearn", "china.jpg"),
    ("sklearn", "flower.jpg"),
)

#: Crop side, as a multiple of the output size, is drawn log-uniformly in this range.
CROP_SCALE_RANGE = (1.0, 4.0)
#: RMS contrast (fraction of the display range) is log-normal around this median ...
RMS_CONTRAST_MEDIAN = 0.15
#: ... with this standard deviation of its natural log.
RMS_CONTRAST_LOG_SD = 0.3
#: Crops flatter than this (std of the grayscale crop) are drawn again: they are sky or background.
MIN_CROP_STD = 0.03
#: Photographs are shrunk once so their longer side is at most this many pixels.
MAX_PHOTO_SIDE_PX = 512


def _package_folder(package: str) -> Path:
    if package == "skimage":
        import skimage

        return Path(skimage.__file__).parent / "data"
    import sklearn

    return Path(sklearn.__file__).parent / "datasets" / "images"


def photograph_paths() -> list[Path]:
    """Paths of the bundled photographs that are present in this installation."""
    paths = [_package_folder(package) / name for package, name in PHOTOGRAPHS]
    return [p for p in paths if p.is_file()]


@functools.lru_cache(maxsize=1)
def load_photographs() -> tuple[np.ndarray, ...]:
    """The bundled photographs, grayscale float64 in [0, 1], longer side <= 512 px.

    Raises
    ------
    DataFileError
        If fewer than three photographs can be found (scikit-image or
        scikit-learn is missing or stripped of its data files).
    """
    import imageio.v3 as iio
    from skimage.color import rgb2gray
    from skimage.transform import rescale

    photos = []
    for path in photograph_paths():
        try:
            pixels = np.asarray(iio.imread(path))
        except Exception as error:  # a corrupt file should not stop the others
            raise DataFileError(path, f"cannot read bundled photograph ({error}); reinstall the package") from error
        if pixels.ndim == 3:
            pixels = rgb2gray(pixels[..., :3])
        elif pixels.dtype == np.uint8:
            pixels = pixels / 255.0
        pixels = np.asarray(pixels, dtype=np.float64)
        if pixels.max() > 1.0:
            pixels = pixels / pixels.max()
        longest = max(pixels.shape)
        if longest > MAX_PHOTO_SIDE_PX:
            pixels = rescale(pixels, MAX_PHOTO_SIDE_PX / longest, anti_aliasing=True)
        photos.append(pixels)
    if len(photos) < 3:
        raise DataFileError(
            _package_folder("skimage"),
            "found fewer than 3 bundled photographs; install scikit-image and scikit-learn with their data files",
        )
    return tuple(photos)


def natural_images(
    n: int,
    *,
    size_px: int = 66,
    aperture_diameter_px: float = 60.0,
    seed: int = 0,
) -> np.ndarray:
    """Seeded natural images in a circular aperture.

    Parameters
    ----------
    n
        Number of images.
    size_px
        Side of each square image.
    aperture_diameter_px
        Diameter of the circular aperture; grey (0.5) outside it.
    seed
        Seed; the same seed and sizes give the same images.

    Returns
    -------
    (n, size_px, size_px) float32 in [0, 1], mean 0.5 inside the aperture.
    """
    from skimage.transform import resize

    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a whole number >= 0, got {n!r}")
    photos = load_photographs()
    rng = np.random.default_rng(seed)
    mask = aperture_mask(size_px, aperture_diameter_px).astype(np.float64)
    weights = mask / mask.sum()
    out = np.empty((n, size_px, size_px), dtype=np.float32)
    for i in range(n):
        while True:
            photo = photos[rng.integers(len(photos))]
            biggest = min(photo.shape)
            low, high = np.log(CROP_SCALE_RANGE[0] * size_px), np.log(min(CROP_SCALE_RANGE[1] * size_px, biggest))
            side = int(round(np.exp(rng.uniform(low, max(low, high)))))
            side = min(side, biggest)
            top = rng.integers(photo.shape[0] - side + 1)
            left = rng.integers(photo.shape[1] - side + 1)
            crop = photo[top : top + side, left : left + side]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            crop = resize(crop, (size_px, size_px), anti_aliasing=side > size_px, preserve_range=True)
            mean = float((crop * weights).sum())
            std = float(np.sqrt(((crop - mean) ** 2 * weights).sum()))
            if std >= MIN_CROP_STD:
                break
        rms = RMS_CONTRAST_MEDIAN * np.exp(RMS_CONTRAST_LOG_SD * rng.standard_normal())
        out[i] = in_aperture(crop, mask, weights, rms, mean, std)
    return out


def in_aperture(
    picture: np.ndarray,
    mask: np.ndarray,
    weights: np.ndarray,
    rms: float,
    mean: float | None = None,
    std: float | None = None,
) -> np.ndarray:
    """A picture at mean grey and the given RMS contrast (within the aperture), grey outside.

    ``weights`` is the mask divided by its sum; ``mean``/``std`` are the picture's
    aperture-weighted statistics (computed when not given).
    """
    if mean is None or std is None:
        mean = float((picture * weights).sum())
        std = float(np.sqrt(((picture - mean) ** 2 * weights).sum()))
    contrast = np.clip((picture - mean) / max(std, 1e-12) * rms, -GREY, 1.0 - GREY)
    for _ in range(3):  # clipping a skewed image moves its mean; pull it back to grey
        contrast = np.clip(contrast - (contrast * weights).sum(), -GREY, 1.0 - GREY)
    return GREY + mask * contrast
