"""The oracle: a simulated archive's exact rates for its own stimuli."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.sim.archive import ArchiveSpec, make_archive, population_for
from closedloop.sim.truth import ArchiveTruth, oracle_rates


@pytest.mark.parametrize("layout", ["session", "pvc8"])
def test_oracle_rates_are_the_population_rates_of_the_stored_stimuli(tmp_path, layout):
    spec = ArchiveSpec(layout=layout, seed=4, n_units=5, n_images=4, n_repeats=2)
    path = tmp_path / ("a.h5" if layout == "session" else "a.mat")
    make_archive(path, spec)
    truth = ArchiveTruth(path)
    ids = np.array([2, 0])
    rates = oracle_rates(path, ids, np.array([5, 1]))
    expected = population_for(spec).expected_rates(truth.stimulus_pixels(ids), (0.05, 0.10), spec.durations_s[0])
    np.testing.assert_allclose(rates, expected[:, [4, 0]])
    assert rates.shape == (2, 2) and np.all(rates > 0)


def test_no_oracle_for_a_file_without_a_recipe(tmp_path):
    assert oracle_rates(tmp_path / "missing.h5", np.array([0]), np.array([1])) is None
    plain = tmp_path / "plain.mat"
    import scipy.io

    scipy.io.savemat(plain, {"x": np.zeros(3)})
    assert oracle_rates(plain, np.array([0]), np.array([1])) is None
