"""One core for several sessions: the pooled data, the joint fit, and each session's share of it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from tiny_models import TINY_RECOMMENDED
import torch

from closedloop.data.loader import load_dataset
from closedloop.errors import ClosedLoopError
from closedloop.model.model_config import ModelConfig
from closedloop.model.networks import build_network
from closedloop.model.predict import predict
from closedloop.model.shared_core import fit_shared_core, group_by_input_size, pool_sessions, units_of
from closedloop.model.train import fit_model, prepare_fit
from closedloop.model.trainer import DeviceData, Trainer

CONFIG = TINY_RECOMMENDED


def _images(dataset, order):
    return dataclasses.replace(
        dataset,
        images=dataset.images[order],
        trial_rates=dataset.trial_rates[order],
        image_ids=dataset.image_ids[order],
    )


@pytest.fixture(scope="module")
def whole(archives):
    return load_dataset(archives["session"])


@pytest.fixture(scope="module")
def two_sessions(whole):
    """One recording's units cut into two sessions; the second shows the images in another order."""
    first = dataclasses.replace(whole.select_units(np.arange(0, 4)), source="first")
    second = dataclasses.replace(whole.select_units(np.arange(4, whole.n_units)), source="second")
    return first, _images(second, np.random.default_rng(0).permutation(whole.n_images))


@pytest.mark.filterwarnings("ignore:Mean of empty slice")  # the NaN columns of units that never saw an image
def test_pooling_keeps_each_image_once_and_each_unit_on_its_own_sessions_images(whole):
    first = dataclasses.replace(_images(whole.select_units(np.arange(0, 3)), np.arange(0, 30)), source="a")
    second = dataclasses.replace(_images(whole.select_units(np.arange(3, 6)), np.arange(20, 40)[::-1]), source="b")
    pooled = pool_sessions([first, second])
    assert pooled.dataset.n_images == 40 and pooled.dataset.n_units == 6 and pooled.unit_offsets == [0, 3]
    assert np.array_equal(pooled.positions[0], np.arange(30))
    assert np.array_equal(pooled.dataset.images[pooled.positions[1]], second.images)
    means = pooled.dataset.mean_rates
    assert np.isnan(means[30:, :3]).all() and np.isfinite(means[:30, :3]).all()  # a never showed 30..39
    assert np.isnan(means[:20, 3:]).all() and np.isfinite(means[20:, 3:]).all()  # b never showed 0..19
    assert np.array_equal(means[pooled.positions[1], 3:], second.mean_rates)
    # A session showing one image twice keeps both showings.
    twice = dataclasses.replace(first, images=np.concatenate([first.images[:-1], first.images[:1]]))
    assert pool_sessions([twice]).dataset.n_images == 30
    other_size = dataclasses.replace(first, images=first.images[:, :-1, :-1])
    assert group_by_input_size([first, other_size, second]) == [[0, 2], [1]]
    with pytest.raises(ClosedLoopError, match="different sizes"):
        pool_sessions([first, other_size])


def test_sessions_of_one_image_set_give_the_fit_of_all_their_units(whole, two_sessions):
    results = fit_shared_core(list(two_sessions), CONFIG, seed=5, device="cpu")
    # Pooled, the two sessions are the whole recording: the joint fit is its fit.
    joint = fit_model(whole, CONFIG, seed=5, device="cpu")
    columns = {"first": np.arange(0, 4), "second": np.arange(4, whole.n_units)}
    for dataset, result in zip(two_sessions, results):
        alone = prepare_fit(dataset, CONFIG, seed=5, split=result.split)
        assert np.array_equal(result.unit_ids, dataset.unit_ids[alone.kept])
        held = dataset.images[result.split.held_out]
        assert np.array_equal(
            np.sort(held.reshape(len(held), -1), axis=0),
            np.sort(whole.images[joint.split.held_out].reshape(len(held), -1), axis=0),
        )
        expected = predict(joint.model, held)[:, columns[str(dataset.source)]]
        assert np.allclose(predict(result.model, held), expected, atol=1e-5)
        assert np.allclose(result.rate_statistics.mean, alone.rates[result.split.fit].mean(axis=0))
        assert np.array_equal(result.best_epoch, joint.best_epoch)
        for key, value in result.model.state_dict().items():
            if key.startswith("core."):
                assert np.array_equal(value.numpy(), joint.model.state_dict()[key].numpy()), key


def test_sessions_of_other_images_train_one_core_on_all_images(whole, two_sessions):
    first = dataclasses.replace(_images(two_sessions[0], np.arange(0, 24)), source="first")
    second = dataclasses.replace(
        _images(whole.select_units(np.arange(4, whole.n_units)), np.arange(16, 40)), source="second"
    )
    pooled = pool_sessions([first, second])
    joint = fit_model(pooled.dataset, CONFIG, seed=2, device="cpu", partial_units=True)
    results = fit_shared_core([first, second], CONFIG, seed=2, device="cpu")
    for dataset, positions, offset, result in zip((first, second), pooled.positions, (0, 4), results):
        # the session's parts are the pooled split's parts of its images: a shared image has one part
        for part in ("train", "stop", "held_out"):
            assert np.array_equal(
                positions[getattr(result.split, part)], np.intersect1d(positions, getattr(joint.split, part))
            )
        expected = predict(joint.model, dataset.images)[:, offset + np.arange(dataset.n_units)]
        assert np.allclose(predict(result.model, dataset.images), expected, atol=1e-5)
    # The loss counts only responses that exist: dropping the other session's units changes nothing
    # of a unit's fit but the core's data; a fully observed single session fits as fit_model alone.
    alone = fit_model(first, CONFIG, seed=2, device="cpu")
    solo = fit_shared_core([first], CONFIG, seed=2, device="cpu")[0]
    assert np.allclose(predict(solo.model, first.images), predict(alone.model, first.images), atol=1e-6)


def test_units_of_cuts_every_unit_axis_including_the_dense_readouts(whole):
    config = ModelConfig(core_filters=(4,), core_kernels=(5,), dense_units=8, max_epochs=3, output_knots=3)
    fitted = fit_model(whole, config, seed=1, device="cpu")
    positions = np.array([5, 0, 2])
    subset = units_of(fitted.model, positions)
    images = whole.images[:7]
    assert np.allclose(predict(subset, images), predict(fitted.model, images)[:, positions], atol=1e-6)


def test_a_linear_model_has_no_core_to_share(two_sessions):
    with pytest.raises(ClosedLoopError, match="no core to share"):
        fit_shared_core(list(two_sessions), ModelConfig(architecture="linear"), seed=1, device="cpu")


def test_the_loss_is_the_mean_over_the_responses_that_exist(whole):
    rates = whole.mean_rates.astype(np.float64)
    rates[:10, :2] = np.nan  # two units never saw the first ten images
    train, stop = np.arange(0, 30), np.arange(30, 40)
    data = DeviceData(whole.images, rates, [(train, stop)], torch.device("cpu"))
    config = CONFIG.replace(ensemble_size=1)
    network = build_network(config, whole.n_units, 1, whole.images.shape[1])
    network.set_output_statistics(data.mean_rate, data.std_rate)
    network.eval()
    loss = Trainer(network, data, config)._member_loss(data.train_images, data.train_rates, None, data.train_observed)
    with torch.no_grad():
        prediction = network.forward_members(data.train_images).numpy()[0]
    observed = np.isfinite(rates[train])
    terms = (prediction - rates[train]) ** 2 / np.nanvar(rates[train], axis=0)
    assert loss.item() == pytest.approx(terms[observed].mean(), rel=1e-5)
    assert np.allclose(data.mean_rate.numpy()[0], np.nanmean(rates[train], axis=0))
    # Without partial units such units are excluded, as before.
    with pytest.warns(UserWarning, match="missing responses"):
        holes = whole.trial_rates.copy()
        holes[:10, :, :2] = np.nan
        assert fit_model(dataclasses.replace(whole, trial_rates=holes), CONFIG, seed=4, device="cpu").model.n_units == 4
