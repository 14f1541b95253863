"""Simulated archives: both layouts load into the same dataset and carry the ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.data.loader import load_dataset
from closedloop.data.pvc8 import read_pvc8
from closedloop.data.session import SessionReader
from closedloop.data.responses import counts_to_rates, window_counts_from_spike_times
from closedloop.errors import DataFileError
from closedloop.sim.archive import ArchiveSpec, make_archive, population_for, spec_from_archive
from closedloop.sim.archive_layouts import simulate_pvc8
from closedloop.sim.photographs import natural_images

SESSION = ArchiveSpec(layout="session", seed=5, n_units=12, n_images=40, n_repeats=6)
PVC8 = ArchiveSpec(layout="pvc8", seed=5, n_units=12, n_images=12, n_repeats=3)


@pytest.fixture(scope="module")
def session_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("archive") / "session.h5"
    make_archive(path, SESSION)
    return path


@pytest.fixture(scope="module")
def pvc8_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("archive") / "01.mat"
    make_archive(path, PVC8)
    return path


def test_session_trials_spikes_and_photodiode_agree(session_file):
    with SessionReader(session_file) as reader:
        trials, spikes, sync = reader.trials, reader.spikes, reader.sync
        responses, window = reader.responses, reader.response_window_s
        stimuli = reader.stimuli
    n_natural = SESSION.n_images * SESSION.n_repeats
    assert len(trials) == n_natural + 64 * SESSION.n_repeats
    # every natural image shown exactly n_repeats times
    natural_ids = stimuli["id"][stimuli["kind"] == 0]
    shown = np.bincount(trials["stimulus_id"], minlength=len(stimuli))[natural_ids]
    assert np.all(shown == SESSION.n_repeats)
    # one photodiode onset edge per trial, at the trial's onset
    onsets = sync["time_s"][sync["state"] == 1]
    np.testing.assert_allclose(onsets, trials["onset_s"])
    assert np.all(np.diff(spikes["time_s"]) >= 0)
    # stored responses are the window counts of the stored spikes
    recount = counts_to_rates(
        window_counts_from_spike_times(
            spikes["unit_id"], spikes["time_s"], trials["onset_s"], window, reader_unit_ids(session_file)
        ),
        window,
    )
    np.testing.assert_allclose(responses, recount, rtol=1e-6)


def reader_unit_ids(path):
    with SessionReader(path) as reader:
        return reader.unit_ids


def test_session_dataset_tracks_ground_truth(session_file):
    dataset = load_dataset(session_file)
    population = population_for(SESSION)
    assert dataset.images.shape == (SESSION.n_images, 33, 33)
    assert dataset.trial_rates.shape == (SESSION.n_images, SESSION.n_repeats, 12)
    np.testing.assert_array_equal(dataset.unit_ids, population.unit_ids)
    # the recorded means follow the simulator's exact expected rates
    images_seed = int(np.random.SeedSequence([population.seed, 10]).generate_state(1)[0])
    images = natural_images(
        SESSION.n_images,
        size_px=population.size_px,
        aperture_diameter_px=population.spec.aperture_diameter_px,
        seed=images_seed,
    )
    truth = population.expected_rates(images)[np.argsort(dataset.image_ids)]
    measured = dataset.mean_rates[np.argsort(dataset.image_ids)]
    tuned = truth.std(axis=0) > 2.0
    r = [np.corrcoef(truth[:, u], measured[:, u])[0, 1] for u in np.flatnonzero(tuned)]
    assert np.median(r) > 0.8
    assert dataset.gratings is not None and dataset.gratings.rates.shape == (16, 12)


def test_pvc8_round_trip_gives_identical_counts(pvc8_file):
    """Write with the simulator, read with the importer: the very same spike counts."""
    simulated = simulate_pvc8(population_for(PVC8), PVC8)
    recording = read_pvc8(pvc8_file, load_blank=True)
    n_stimuli = 2 * PVC8.n_images + 416
    assert recording.resp_train.shape == (12, n_stimuli, PVC8.n_repeats, 106)
    assert recording.resp_train.dtype == np.uint8
    np.testing.assert_array_equal(recording.resp_train, simulated.resp_train)
    np.testing.assert_array_equal(recording.resp_train_blk, simulated.resp_train_blk)
    np.testing.assert_array_equal(np.stack(list(recording.images)), simulated.images)
    # the dataset keeps the small natural images and the well-centred units, like the paper
    dataset = load_dataset(pvc8_file)
    keep = simulated.indcent == 1
    assert dataset.n_units == keep.sum() and dataset.n_images == PVC8.n_images
    np.testing.assert_array_equal(dataset.image_ids, np.arange(0, 2 * PVC8.n_images, 2))
    counts = simulated.resp_train[keep][:, 0 : 2 * PVC8.n_images : 2, :, 50:100].sum(axis=3)
    np.testing.assert_allclose(dataset.trial_rates, counts.transpose(1, 2, 0) / 0.05)


def test_archives_are_reproducible(tmp_path, session_file):
    again = tmp_path / "again.h5"
    make_archive(again, SESSION)
    with SessionReader(session_file) as a, SessionReader(again) as b:
        np.testing.assert_array_equal(a.spikes, b.spikes)
        np.testing.assert_array_equal(a.stimulus_pixels, b.stimulus_pixels)


def test_ground_truth_is_rebuilt_from_either_file(session_file, pvc8_file, tmp_path):
    for path, spec in ((session_file, SESSION), (pvc8_file, PVC8)):
        recorded = spec_from_archive(path)
        assert (recorded.layout, recorded.seed, recorded.n_units) == (spec.layout, spec.seed, spec.n_units)
        np.testing.assert_array_equal(population_for(recorded).spontaneous_hz, population_for(spec).spontaneous_hz)
    not_simulated = tmp_path / "real.mat"
    import scipy.io

    scipy.io.savemat(str(not_simulated), {"resp_train": np.zeros((1, 1, 1, 1), np.uint8)})
    with pytest.raises(DataFileError, match="not a simulated archive"):
        spec_from_archive(not_simulated)
