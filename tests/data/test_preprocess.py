from __future__ import annotations

import numpy as np
import pytest

from closedloop.data.dataset import Preprocessing
from closedloop.data.preprocess import preprocess


def test_two_by_two_means_by_hand():
    image = np.array([[0, 2, 4, 4], [2, 4, 8, 8], [1, 1, 0, 0], [1, 1, 0, 4]], dtype=np.float64) / 10
    out = preprocess(image, Preprocessing(downsample=2, crop=2))
    assert out.dtype == np.float32 and out.shape == (1, 2, 2)
    np.testing.assert_allclose(out[0], [[0.2, 0.6], [0.1, 0.1]], rtol=1e-6)


def test_odd_edge_is_trimmed():
    image = np.zeros((5, 5))
    image[4, :] = 1.0  # the odd last row and column must not leak into any block
    image[:, 4] = 1.0
    image[0:2, 0:2] = [[0.1, 0.2], [0.3, 0.4]]
    out = preprocess(image, Preprocessing(downsample=2, crop=2))
    np.testing.assert_allclose(out[0], [[0.25, 0.0], [0.0, 0.0]], rtol=1e-6)


@pytest.mark.parametrize("size, top", [(8, 3), (7, 2)])
def test_centred_crop(size, top):
    image = np.arange(size * size, dtype=np.float64).reshape(size, size) / size**2
    out = preprocess(image, Preprocessing(downsample=1, crop=2))
    np.testing.assert_allclose(out[0], image[top : top + 2, top : top + 2], rtol=1e-6)


def test_downsample_then_crop_on_a_stack():
    rng = np.random.default_rng(0)
    images = rng.random((3, 10, 12))
    out = preprocess(images, Preprocessing(downsample=2, crop=3))
    pooled = images.reshape(3, 5, 2, 6, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(out, pooled[:, 1:4, 1:4], rtol=1e-5)


def test_uint8_is_scaled_to_unit_range():
    images = np.full((2, 4, 4), 255, dtype=np.uint8)
    images[1] = 0
    out = preprocess(images, Preprocessing(downsample=2, crop=2))
    np.testing.assert_allclose(out[0], 1.0)
    np.testing.assert_allclose(out[1], 0.0)


def test_too_small_for_crop_is_a_clear_error():
    with pytest.raises(ValueError, match="smaller than the 33x33 crop"):
        preprocess(np.zeros((1, 64, 64)), Preprocessing(downsample=2, crop=33))


def test_wrong_dimensions():
    with pytest.raises(ValueError, match="must be"):
        preprocess(np.zeros((2, 2, 8, 8)), Preprocessing(downsample=1, crop=2))
