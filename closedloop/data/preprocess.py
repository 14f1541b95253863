"""Turn presented stimuli into the network's input (docs/methods.md, Model).

Non-overlapping ``d`` × ``d`` mean downsampling (an edge that does not fill a whole
block is trimmed), then a centred ``crop`` × ``crop`` window.
"""

from __future__ import annotations

import numpy as np

from closedloop.data.dataset import Preprocessing

# Images are converted to float32 in batches so a full pvc-8 image set
# (956 × 320 × 320) never exists as one float copy.
_BATCH = 64


def preprocess(images: np.ndarray, preprocessing: Preprocessing = Preprocessing()) -> np.ndarray:
    """Downsample and crop a stack of images.

    Parameters
    ----------
    images
        (n, H, W) or (H, W) array. ``uint8`` is scaled by 1/255; any float is taken to
        be on the display's [0, 1] scale already.
    preprocessing
        Downsampling factor and crop size.

    Returns
    -------
    numpy.ndarray
        (n, crop, crop) float32.

    Raises
    ------
    ValueError
        If the images are not 2-D/3-D, or the downsampled image is smaller than the crop.
    """
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[np.newaxis]
    if images.ndim != 3:
        raise ValueError(f"images must be (n, H, W) or (H, W), got shape {images.shape}")
    factor, crop = int(preprocessing.downsample), int(preprocessing.crop)
    if factor < 1 or crop < 1:
        raise ValueError(f"downsample and crop must be >= 1, got {preprocessing}")
    n, height, width = images.shape
    small_h, small_w = height // factor, width // factor
    if small_h < crop or small_w < crop:
        raise ValueError(
            f"images of {height}x{width} downsampled by {factor} are {small_h}x{small_w}, "
            f"smaller than the {crop}x{crop} crop; lower preprocessing.crop or downsample"
        )
    top, left = (small_h - crop) // 2, (small_w - crop) // 2
    scale = np.float32(1 / 255) if images.dtype == np.uint8 else np.float32(1)
    out = np.empty((n, crop, crop), dtype=np.float32)
    for start in range(0, n, _BATCH):
        # Only the pixels that end up inside the crop are averaged.
        block = images[
            start : start + _BATCH,
            top * factor : (top + crop) * factor,
            left * factor : (left + crop) * factor,
        ].astype(np.float32)
        m = block.shape[0]
        pooled = block.reshape(m, crop, factor, crop, factor).mean(axis=(2, 4), dtype=np.float32)
        out[start : start + m] = pooled * scale
    return out
