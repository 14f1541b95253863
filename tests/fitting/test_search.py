"""Random search: a declared space, a held-out criterion that is not the test set."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.data.loader import load_dataset
from closedloop.errors import ClosedLoopError
from closedloop.fitting.search import SearchSpace, fit_images_only, random_search, results_table, sample_config
from closedloop.model.model_config import ModelConfig
from closedloop.model.split import split_images

TINY_SPACE = SearchSpace(
    layers=(1, 2),
    filters=(4,),
    kernels=(3, 5),
    pooling=((1, 1), (2, 2)),
    dense_units=(8, 16),
    dropout_keep=(0.5, 0.9),
    learning_rate=(1e-3, 1e-2),
)
BASE = ModelConfig(max_epochs=8, patience=4, stop_check_every=4)


def test_samples_stay_in_the_space_and_fit_the_image():
    rng = np.random.default_rng(0)
    for _ in range(20):
        config = sample_config(BASE, TINY_SPACE, rng, 33)
        assert len(config.core_filters) in (1, 2) and set(config.core_filters) == {4}
        assert config.core_kernels[0] in (3, 5) and len(set(config.core_kernels)) == 1
        assert (config.pool_kernel, config.pool_stride) in TINY_SPACE.pooling
        assert 1e-3 <= config.learning_rate <= 1e-2 and 0.5 <= config.dropout_keep <= 0.9
        assert config.max_epochs == 8


def test_a_trial_is_one_network_even_from_a_blended_base():
    blended = BASE.replace(architecture="factorised", partner={"padding": "same", "pool_stride": 3})
    config = sample_config(blended, TINY_SPACE, np.random.default_rng(0), 33)
    assert config.partner is None and (config.pool_kernel, config.pool_stride) in TINY_SPACE.pooling


def test_space_that_cannot_fit_the_image_is_an_error():
    space = SearchSpace(layers=(3,), kernels=(15,), pooling=((3, 2),))
    with pytest.raises(ClosedLoopError, match="no configuration in the search space fits"):
        sample_config(BASE, space, np.random.default_rng(0), 33, max_tries=5)


def test_search_never_sees_the_test_images(archives):
    dataset = load_dataset(archives["session"])
    tuning = fit_images_only(dataset, seed=3)
    test_ids = dataset.image_ids[split_images(dataset.n_images, 3).held_out]
    assert not set(test_ids) & set(tuning.image_ids)
    assert tuning.n_images + len(test_ids) == dataset.n_images


def test_tiny_search_ranks_trials_best_first(archives):
    dataset = load_dataset(archives["session"])
    seen = []
    result = random_search(
        dataset, 3, base=BASE, space=TINY_SPACE, seed=1, on_trial=lambda done, total, trial: seen.append(done)
    )
    assert seen == [1, 2, 3] and sorted(t.index for t in result.trials) == [1, 2, 3]
    scores = [t.val_r for t in result.trials]
    assert scores == sorted(scores, reverse=True) and np.all(np.isfinite(scores))
    assert result.best is result.trials[0] and result.best.config.seed is None
    table = results_table(result)
    assert table.splitlines()[0].split()[:3] == ["trial", "val_r", "val_loss"]
    assert len(table.splitlines()) == 2 + 3
