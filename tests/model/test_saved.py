"""Saved model versions: file names, loading, and display pixels to predicted rates."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _synthetic_responses import make_dataset  # noqa: E402

from closedloop.data.dataset import Preprocessing  # noqa: E402
from closedloop.data.preprocess import preprocess  # noqa: E402
from closedloop.errors import DataFileError  # noqa: E402
from closedloop.model.checkpoint import save_checkpoint  # noqa: E402
from closedloop.model.model_config import ModelConfig  # noqa: E402
from closedloop.model.predict import predict  # noqa: E402
from closedloop.model.saved import (  # noqa: E402
    checkpoint_preprocessing,
    load_saved,
    model_file_name,
    model_path,
    predict_pixels,
)
from closedloop.model.train import fit_model  # noqa: E402

PREPROCESSING = Preprocessing(downsample=2, crop=15)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    dataset = dataclasses.replace(make_dataset(n_images=30, n_units=3, size=15, seed=4), preprocessing=PREPROCESSING)
    fitted = fit_model(
        dataset, ModelConfig(core_filters=(4,), core_kernels=(5,), dense_units=8, max_epochs=2, seed=0), device="cpu"
    )
    folder = tmp_path_factory.mktemp("models")
    save_checkpoint(model_path(folder, 7), fitted, model_version=7)
    return folder


def test_model_file_names():
    assert model_file_name(3) == "model_v003.pt" and model_file_name(1234) == "model_v1234.pt"
    assert model_path("out", 12) == Path("out") / "model_v012.pt"


def test_load_saved_gives_the_version_or_none(saved, tmp_path):
    checkpoint = load_saved(saved, 7)
    assert checkpoint is not None and checkpoint.model_version == 7
    assert checkpoint_preprocessing(checkpoint) == PREPROCESSING
    assert load_saved(saved, 8) is None
    (tmp_path / model_file_name(1)).write_bytes(b"not a model")
    with pytest.raises(DataFileError):
        load_saved(tmp_path, 1)


def test_display_pixels_are_preprocessed_as_the_model_was_fitted(saved):
    checkpoint = load_saved(saved, 7)
    rng = np.random.default_rng(0)
    pixels = rng.random((5, 30, 30)).astype(np.float32)
    rates = predict_pixels(checkpoint, pixels)
    assert rates.shape == (5, 3) and rates.dtype == np.float64
    np.testing.assert_allclose(rates, predict(checkpoint, preprocess(pixels, PREPROCESSING)), rtol=1e-6)
    as_bytes = np.round(pixels * 255).astype(np.uint8)  # uint8 display images are scaled, not clipped
    np.testing.assert_allclose(
        predict_pixels(checkpoint, as_bytes), predict_pixels(checkpoint, as_bytes / 255.0), rtol=1e-5, atol=1e-6
    )
    # a rounding excursion outside [0, 1] is clipped before preprocessing
    np.testing.assert_allclose(
        predict_pixels(checkpoint, pixels * 1.5 - 0.25), predict_pixels(checkpoint, np.clip(pixels * 1.5 - 0.25, 0, 1))
    )
