"""Archives that share one natural-image set across sessions (``--image-seed``), as pvc-8's do."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from closedloop.cli import main
from closedloop.data.loader import load_dataset
from closedloop.data.session import SessionReader
from closedloop.errors import ClosedLoopError
from closedloop.sim.archive import ArchiveSpec, make_archive, population_for, spec_from_archive
from closedloop.sim.archive_layouts import images_seed, simulate_pvc8
from closedloop.sim.stimuli import stimulus_set
from closedloop.sim.truth import ArchiveTruth, oracle_rates

SMALL = ["--units", "4", "--images", "12", "--repeats", "2"]
SUFFIX = {"session": ".h5", "pvc8": ".mat"}


@pytest.fixture(scope="module", params=["session", "pvc8"])
def shared(request, tmp_path_factory) -> tuple[str, Path, Path]:
    """Two archives made on the command line: seeds 1 and 2, both with --image-seed 7."""
    layout = request.param
    folder = tmp_path_factory.mktemp(f"shared-{layout}")
    paths = []
    for seed in (1, 2):
        path = folder / f"s{seed}{SUFFIX[layout]}"
        arguments = ["--out", str(path), "--layout", layout, "--seed", str(seed), "--image-seed", "7", *SMALL]
        assert main(["sim", "make-archive", *arguments]) == 0
        paths.append(path)
    return layout, paths[0], paths[1]


def test_same_image_seed_gives_the_same_images_to_different_populations(shared):
    layout, first, second = shared
    a, b = (load_dataset(path, units="all") for path in (first, second))
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.image_ids, b.image_ids)
    # different seeds: different neurons and trials, hence different responses
    assert a.trial_rates.shape == b.trial_rates.shape
    assert not np.array_equal(a.trial_rates, b.trial_rates)
    one, two = (population_for(spec_from_archive(path)) for path in (first, second))
    assert not np.array_equal(one.spontaneous_hz, two.spontaneous_hz)


def test_the_image_seed_is_recorded_and_read_back(shared):
    layout, first, _ = shared
    spec = spec_from_archive(first)
    assert (spec.layout, spec.seed, spec.image_seed, spec.n_units, spec.n_images) == (layout, 1, 7, 4, 12)
    if layout == "session":
        with SessionReader(first) as reader:
            assert reader.seeds == {"population": 1, "images": images_seed(1, 7), "image_seed": 7}


def test_the_oracle_scores_the_images_in_the_file(shared):
    """Truth rebuilt from the recipe: the seed-1 population's rates for the shared images in the file."""
    layout, first, second = shared
    truth = ArchiveTruth(first)
    ids = np.array([2, 0, 5])
    pixels = truth.stimulus_pixels(ids)
    np.testing.assert_array_equal(pixels, ArchiveTruth(second).stimulus_pixels(ids))
    population = truth.population
    if layout == "session":  # the stored images are the set drawn from the image seed, not from --seed
        drawn = stimulus_set(
            population.spec.images,
            12,
            size_px=population.size_px,
            aperture_diameter_px=population.spec.aperture_diameter_px,
            seed=images_seed(1, 7),
        )
        np.testing.assert_array_equal(pixels, drawn[ids])
    units = population.unit_ids[[3, 0]]
    rates = oracle_rates(first, ids, units)
    expected = population_for(ArchiveSpec(layout=layout, seed=1, n_units=4)).expected_rates(
        pixels, (0.05, 0.10), truth.spec.durations_s[0]
    )
    np.testing.assert_allclose(rates, expected[:, [3, 0]])
    assert rates.shape == (3, 2) and np.all(rates > 0)


def test_image_seed_equal_to_seed_is_the_same_archive_as_none(tmp_path):
    plain = ArchiveSpec(layout="session", seed=3, n_units=4, n_images=12, n_repeats=2)
    same = replace(plain, image_seed=3)
    make_archive(tmp_path / "plain.h5", plain)
    make_archive(tmp_path / "same.h5", same)
    with SessionReader(tmp_path / "plain.h5") as a, SessionReader(tmp_path / "same.h5") as b:
        np.testing.assert_array_equal(a.stimulus_pixels, b.stimulus_pixels)
        np.testing.assert_array_equal(a.trials, b.trials)
        np.testing.assert_array_equal(a.spikes, b.spikes)
        # an archive without an image seed keeps the recipe and seeds it always had
        assert "image_seed" not in a.protocol_yaml and a.seeds == {"population": 3, "images": images_seed(3)}
        assert b.seeds["images"] == a.seeds["images"]
    assert spec_from_archive(tmp_path / "plain.h5").image_seed is None
    assert spec_from_archive(tmp_path / "same.h5").image_seed == 3
    pvc8 = ArchiveSpec(layout="pvc8", seed=3, n_units=4, n_images=6, n_repeats=2)
    a8, b8 = simulate_pvc8(population_for(pvc8), pvc8), simulate_pvc8(population_for(pvc8), replace(pvc8, image_seed=3))
    np.testing.assert_array_equal(a8.images, b8.images)
    np.testing.assert_array_equal(a8.resp_train, b8.resp_train)


def test_the_image_seed_changes_only_the_images():
    spec = ArchiveSpec(layout="pvc8", seed=3, n_units=4, n_images=6, n_repeats=2)
    plain, other = (
        simulate_pvc8(population_for(spec), spec),
        simulate_pvc8(population_for(spec), replace(spec, image_seed=4)),
    )
    assert not np.array_equal(plain.images[:12], other.images[:12])  # the 6 small + 6 large naturals
    np.testing.assert_array_equal(plain.images[12:], other.images[12:])  # the same 416 gratings
    np.testing.assert_array_equal(plain.indcent, other.indcent)  # the same units


def test_a_negative_image_seed_is_refused():
    with pytest.raises(ClosedLoopError, match="image_seed must be 0 or more"):
        ArchiveSpec(image_seed=-1)
