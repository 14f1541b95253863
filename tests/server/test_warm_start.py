"""fit_model's additions for the server: a caller's split, and warm starts from a previous fit."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import TINY

from closedloop.data.dataset import Preprocessing
from closedloop.errors import ClosedLoopError
from closedloop.model.predict import predict
from closedloop.model.split import DataSplit
from closedloop.model.train import WARM_START_PATIENCE, fit_model
from closedloop.server.store import ResponseStore


@pytest.fixture(scope="module")
def data(recording):
    store = ResponseStore(
        stimulus_size_px=66, preprocessing=Preprocessing(), holdout_fraction=0.2, stop_fraction=0.14, seed=1
    )
    store.add(recording.request(block=1, index=slice(0, 60)))
    return store.snapshot()


def _fit(dataset, config, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fit_model(dataset, config, device="cpu", **options)


def test_a_given_split_is_used_and_checked(data) -> None:
    dataset, split = data
    result = _fit(dataset, TINY.replace(max_epochs=5), seed=0, split=split)
    assert result.split is split
    broken = DataSplit(split.train[1:], split.stop, split.held_out, seed=0)
    with pytest.raises(ClosedLoopError, match="does not list each of the 60 images exactly once"):
        _fit(dataset, TINY, seed=0, split=broken)


def test_a_warm_start_begins_from_the_previous_weights(data) -> None:
    dataset, split = data
    first = _fit(dataset, TINY, seed=0, split=split)
    frozen = TINY.replace(learning_rate=1e-9, max_epochs=1, patience=1)  # one step that cannot move the weights
    warm = _fit(dataset, frozen, seed=1, split=split, initial_model=first.model)
    cold = _fit(dataset, frozen, seed=1, split=split)
    assert warm.warm_started and not cold.warm_started and not first.warm_started
    np.testing.assert_allclose(predict(warm.model, dataset.images), predict(first.model, dataset.images), rtol=1e-4)
    assert warm.history["train_loss"][0, 0] < cold.history["train_loss"][0, 0]
    # Training on from there: its first epochs stay below a cold start's.
    warm_run = _fit(dataset, TINY.replace(max_epochs=10), seed=1, split=split, initial_model=first.model)
    cold_run = _fit(dataset, TINY.replace(max_epochs=10), seed=1, split=split)
    assert np.all(warm_run.history["train_loss"][:3, 0] < cold_run.history["train_loss"][:3, 0])


def test_each_member_of_a_rotating_ensemble_starts_from_its_own_previous_member(data) -> None:
    dataset, split = data
    ensemble = TINY.replace(ensemble_size=2, stop_sets="rotating", max_epochs=20)
    first = _fit(dataset, ensemble, seed=0, split=split)
    frozen = ensemble.replace(learning_rate=1e-9, max_epochs=1, patience=1)
    warm = _fit(dataset, frozen, seed=5, split=split, initial_model=first.model)
    assert warm.warm_started
    with torch.no_grad():
        images = torch.as_tensor(dataset.images[:8])
        now, before = warm.model.forward_members(images), first.model.forward_members(images)
    np.testing.assert_allclose(now.numpy(), before.numpy(), rtol=1e-4, atol=1e-4)


def test_a_model_that_does_not_fit_starts_cold(data) -> None:
    dataset, split = data
    first = _fit(dataset, TINY.replace(max_epochs=5), seed=0, split=split)
    fewer_units = dataset.select_units(np.arange(dataset.n_units - 1))
    fewer = _fit(fewer_units, TINY.replace(max_epochs=2), seed=0, split=split, initial_model=first.model)
    assert not fewer.warm_started
    other = TINY.replace(max_epochs=2, dense_units=8)
    assert not _fit(dataset, other, seed=0, split=split, initial_model=first.model).warm_started
    two = TINY.replace(max_epochs=2, ensemble_size=2)
    assert not _fit(dataset, two, seed=0, split=split, initial_model=first.model).warm_started


def test_a_warm_start_stops_sooner_than_the_protocols_patience(data) -> None:
    # It begins at the previous optimum: WARM_START_PATIENCE epochs without improvement end it.
    dataset, split = data
    config = TINY.replace(max_epochs=400, patience=60, stop_check_every=1, learning_rate=0.01)
    first = _fit(dataset, config, seed=0, split=split)
    warm = _fit(dataset, config, seed=1, split=split, initial_model=first.model)
    assert first.epochs_run == int(first.best_epoch.max()) + 60 + 1 < 400
    assert warm.warm_started and warm.epochs_run == int(warm.best_epoch.max()) + WARM_START_PATIENCE + 1
    assert warm.config.patience == 60  # the protocol's setting is recorded as it was given
