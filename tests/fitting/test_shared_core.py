"""One core for sessions that showed the same images: the joint fit, and each session's share of it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from closedloop.data.loader import load_dataset
from closedloop.errors import ClosedLoopError
from closedloop.model.model_config import ModelConfig
from closedloop.model.predict import predict
from closedloop.model.shared_core import fit_shared_core, group_by_images, units_of
from closedloop.model.train import fit_model, prepare_fit

# The recommended preset's ingredients, tiny (as tests/fitting/test_multi_session.py).
CONFIG = ModelConfig(
    architecture="factorised",
    core_filters=(4, 4),
    core_kernels=(5, 5),
    pool_layers=(1,),
    batch_norm=True,
    output_knots=4,
    l1_readout=0.01,
    learning_rate=3e-3,
    max_epochs=12,
    patience=4,
    stop_check_every=3,
    stop_sets="rotating",
    ensemble_size=2,
)


def _shuffled(dataset, order):
    return dataclasses.replace(
        dataset,
        images=dataset.images[order],
        trial_rates=dataset.trial_rates[order],
        image_ids=dataset.image_ids[order],
    )


@pytest.fixture(scope="module")
def two_sessions(archives):
    """One recording's units cut into two sessions; the second shows the images in another order."""
    whole = load_dataset(archives["session"])
    first = dataclasses.replace(whole.select_units(np.arange(0, 4)), source="first")
    second = dataclasses.replace(whole.select_units(np.arange(4, whole.n_units)), source="second")
    order = np.random.default_rng(0).permutation(whole.n_images)
    return whole, first, _shuffled(second, order)


def test_sessions_of_one_image_set_are_grouped_and_aligned(two_sessions, archives):
    whole, first, second = two_sessions
    other = load_dataset(archives["pvc8"])  # other images
    groups = group_by_images([first, other, second])
    assert [group.members for group in groups] == [[0, 2], [1]]
    aligned = groups[0].datasets[1]
    assert np.array_equal(aligned.images, first.images)
    assert np.array_equal(aligned.image_ids, first.image_ids)
    assert np.array_equal(aligned.trial_rates, whole.trial_rates[:, :, 4:], equal_nan=True)
    # A session showing one image twice cannot be aligned image by image: it stays alone.
    repeated = dataclasses.replace(first, images=np.concatenate([first.images[:-1], first.images[:1]]))
    assert [group.members for group in group_by_images([first, repeated])] == [[0], [1]]


def test_each_session_gets_the_joint_fits_core_and_its_own_units(two_sessions):
    whole, first, second = two_sessions
    group = group_by_images([first, second])[0]
    results = fit_shared_core(group.datasets, CONFIG, seed=5, device="cpu")
    # The joint fit is the fit of every unit of both sessions: here, the whole recording.
    joint = fit_model(whole, CONFIG, seed=5, device="cpu")
    images = whole.images[joint.split.held_out]
    joint_prediction = predict(joint.model, images)
    columns = {"first": slice(0, 4), "second": slice(4, None)}
    for dataset, result in zip(group.datasets, results):
        alone = prepare_fit(dataset, CONFIG, seed=5)
        assert np.array_equal(result.unit_ids, dataset.unit_ids[alone.kept])
        assert np.array_equal(result.split.held_out, joint.split.held_out)
        assert result.model.n_units == len(result.unit_ids)
        assert np.allclose(predict(result.model, images), joint_prediction[:, columns[dataset.source]], atol=1e-5)
        assert np.allclose(result.rate_statistics.mean, alone.rates[alone.split.fit].mean(axis=0))
        assert np.array_equal(result.best_epoch, joint.best_epoch)
        core = {k: v for k, v in result.model.state_dict().items() if k.startswith("core.")}
        for key, value in core.items():
            assert np.array_equal(value.numpy(), joint.model.state_dict()[key].numpy()), key


def test_units_of_cuts_every_unit_axis_including_the_dense_readouts(two_sessions):
    whole = two_sessions[0]
    config = ModelConfig(core_filters=(4,), core_kernels=(5,), dense_units=8, max_epochs=3, output_knots=3)
    fitted = fit_model(whole, config, seed=1, device="cpu")
    positions = np.array([5, 0, 2])
    subset = units_of(fitted.model, positions)
    images = whole.images[:7]
    assert np.allclose(predict(subset, images), predict(fitted.model, images)[:, positions], atol=1e-6)


def test_sessions_that_showed_other_images_or_a_linear_model_are_refused(two_sessions, archives):
    _, first, second = two_sessions
    with pytest.raises(ClosedLoopError, match="did not show the same images"):
        fit_shared_core([first, second], CONFIG, seed=1, device="cpu")  # second is not aligned
    with pytest.raises(ClosedLoopError, match="no core to share"):
        fit_shared_core([first, first], ModelConfig(architecture="linear"), seed=1, device="cpu")
