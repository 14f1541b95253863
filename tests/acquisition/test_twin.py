"""The digital twin built from a real fitted checkpoint and the archive it was fitted to."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.acquisition.twin import DigitalTwin, archive_statistics
from closedloop.errors import DataFileError
from closedloop.fitting.session import FitSettings, fit_session
from closedloop.model.model_config import ModelConfig
from closedloop.sim.archive import ArchiveSpec, make_archive, population_for
from closedloop.sim.photographs import natural_images

SPEC = ArchiveSpec(layout="session", seed=4, n_units=6, n_images=40, n_repeats=6)
TINY = ModelConfig(core_filters=(4,), core_kernels=(5,), dense_units=16, max_epochs=20, patience=10, stop_check_every=5)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("twin")
    archive = folder / "session.h5"
    make_archive(archive, SPEC)
    outcome = fit_session(archive, folder, "fit", FitSettings(config=TINY, device="cpu", seed=0))
    return archive, folder / "fit" / "model.pt", outcome


def test_twin_predicts_rates_for_new_images(fitted):
    archive, model, outcome = fitted
    twin = DigitalTwin.from_files(model, archive)
    images = natural_images(5, size_px=66, seed=123)  # never recorded
    rates = twin(images)
    assert rates.shape == (5, twin.unit_ids.size)
    assert np.all(np.isfinite(rates)) and np.all(rates >= 0)
    source = twin.source()
    np.testing.assert_array_equal(source.unit_ids, twin.unit_ids)


def test_archive_statistics_recover_the_simulated_noise(fitted):
    archive, _, _ = fitted
    stats = archive_statistics(archive)
    truth = population_for(SPEC)
    np.testing.assert_array_equal(stats.unit_ids, truth.unit_ids)
    # spontaneous rates from the first 30 ms after onset, against the simulator's own
    np.testing.assert_allclose(stats.spontaneous_hz, truth.spontaneous_hz, rtol=0.5, atol=1.0)
    assert np.all(stats.overdispersion >= 0)
    start, stop = (int(round(t * 1000)) for t in stats.window_s)
    np.testing.assert_allclose(stats.shape[:, start:stop].mean(axis=1), 1.0, atol=1e-6)


def test_twin_refuses_an_archive_without_the_model_units(fitted, tmp_path):
    _, model, _ = fitted
    other = tmp_path / "other.h5"
    make_archive(other, ArchiveSpec(layout="session", seed=5, n_units=2, n_images=12, n_repeats=2))
    with pytest.raises(DataFileError, match="not in the archive"):
        DigitalTwin.from_files(model, other)
