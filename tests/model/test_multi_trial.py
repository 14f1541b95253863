"""Search trials of one network shape fused into one training equal the trials fitted one by one."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _synthetic_responses import make_dataset  # noqa: E402

from closedloop.model.member_settings import fusion_key  # noqa: E402
from closedloop.model.model_config import ModelConfig  # noqa: E402
from closedloop.model.multi_trial import fit_trials  # noqa: E402
from closedloop.model.predict import predict  # noqa: E402
from closedloop.model.train import fit_model  # noqa: E402

# Batch norm, factorised readout with L1, output nonlinearity, rotating stop sets, 2 members each.
FACTORISED = ModelConfig(
    architecture="factorised",
    core_filters=(4, 4),
    core_kernels=(5, 5),
    pool_layers=(1,),
    batch_norm=True,
    output_knots=4,
    learning_rate=3e-3,
    max_epochs=15,
    patience=4,
    stop_check_every=3,
    stop_sets="rotating",
    ensemble_size=2,
    ensemble_mode="fused",  # alone too, so histories run on past a member's stop in both
)
DENSE = ModelConfig(
    core_filters=(4,), core_kernels=(5,), dense_units=8, max_epochs=10, patience=3, stop_check_every=2, dropout_keep=1.0
)


@pytest.fixture(scope="module")
def dataset():
    return make_dataset(n_images=40, n_units=4, size=15, seed=3)


def assert_same_fit(together, alone, images):
    assert np.array_equal(together.best_epoch, alone.best_epoch) and together.epochs_run == alone.epochs_run
    assert np.array_equal(together.unit_ids, alone.unit_ids)
    for key, value in alone.history.items():
        assert together.history[key].shape == value.shape, key
        finite = np.isfinite(value)
        assert np.array_equal(finite, np.isfinite(together.history[key])), key
        assert np.allclose(together.history[key][finite], value[finite], rtol=1e-4, atol=1e-6), key
    assert np.allclose(predict(together.model, images), predict(alone.model, images), rtol=1e-3, atol=1e-3)
    assert together.model.build_spec == alone.model.build_spec and together.config == alone.config


@pytest.mark.parametrize(
    "configs",
    [
        [
            FACTORISED.replace(l1_readout=0.01),
            FACTORISED.replace(learning_rate=1e-2, l1_readout=0.05, weight_decay=1e-3, patience=1),
            FACTORISED.replace(learning_rate=1e-3, max_epochs=7),
        ],
        [DENSE.replace(refit=True), DENSE.replace(learning_rate=5e-3, weight_decay=1e-2, refit=True, max_epochs=6)],
    ],
    ids=["factorised-lr-l1-decay-epochs", "dense-lr-decay-refit"],
)
def test_fused_trials_equal_trials_fitted_one_by_one(dataset, configs):
    fused = fit_trials(dataset, configs, seed=5, device="cpu")
    for config, together in zip(configs, fused):
        alone = fit_model(dataset, config, seed=5, device="cpu")
        assert_same_fit(together, alone, dataset.images[alone.split.held_out])


def test_a_trial_without_dropout_is_unaffected_by_its_neighbours_dropout(dataset):
    configs = [DENSE, DENSE.replace(dropout_keep=0.5, learning_rate=5e-3)]
    plain, dropped = fit_trials(dataset, configs, seed=5, device="cpu")
    alone = fit_model(dataset, DENSE, seed=5, device="cpu")
    assert_same_fit(plain, alone, dataset.images[alone.split.held_out])
    assert np.all(np.isfinite(dropped.history["train_loss"]))


def test_fusion_key_separates_shapes_and_ignores_training_settings():
    assert fusion_key(DENSE) == fusion_key(
        DENSE.replace(learning_rate=0.1, weight_decay=1, l1_readout=1, dropout_keep=0.5, max_epochs=3, patience=1)
    )
    for change in ({"dense_units": 9}, {"core_kernels": (3,)}, {"batch_norm": True}, {"ensemble_size": 2}):
        assert fusion_key(DENSE.replace(**change)) != fusion_key(DENSE), change
    assert fusion_key(DENSE.replace(input_normalisation="zscore")) is None
    with pytest.raises(ValueError, match="one network shape"):
        fit_trials(make_dataset(n_images=10, n_units=2, size=15, seed=1), [DENSE, DENSE.replace(dense_units=9)], seed=1)
