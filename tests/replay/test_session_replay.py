"""A small simulated session file replayed end to end at full speed, against the offline fit."""

from __future__ import annotations

import numpy as np

from closedloop.data.loader import load_dataset
from closedloop.data.session import SessionReader
from closedloop.messages import BlockStatus, Responses
from closedloop.replay import ReplayOptions, read_plan, replay_archive
from closedloop.transport import Endpoints, Subscriber


def test_session_replay_fits_after_every_block_and_matches_the_offline_fit(archives, cnn_protocol, rig):
    path = archives["session"]
    endpoints = Endpoints.inproc()
    # connected before the driver binds (inproc allows it): the test hears every block
    with Subscriber(endpoints.responses, name="test") as listener:
        outcome = replay_archive(path, cnn_protocol, rig, ReplayOptions(device="cpu", endpoints=endpoints))
        messages = [d.message for d in listener.drain()]

    natural, gratings = outcome.rows[:4], outcome.rows[4:]
    assert [row.state for row in natural] == ["fitted"] * 4
    assert [row.version for row in natural] == [1, 2, 3, 4]
    assert [row.trials_so_far for row in natural] == [40, 80, 120, 160]
    assert all(row.images_so_far == 40 for row in natural)
    assert [bool(row.metrics["warm_start"]) for row in natural] == [False, True, True, True]
    assert all(np.isfinite(row.metric("r_mean")) and row.metric("refit_seconds") > 0 for row in natural)
    assert [row.state for row in gratings] == ["no fit data"] * 4 and outcome.final_version == 4

    # the server's data are exactly the offline loader's
    assert outcome.inputs is not None and outcome.inputs.ok, outcome.inputs
    c = outcome.comparison
    assert c.n_heldout == 8 and c.n_common_units == 8
    assert abs(c.online.r_mean - c.offline.r_mean) < 0.35
    # the final model scored on the offline data gives the r the server published for it
    assert np.isclose(c.online.r_mean, outcome.models[4].metrics["r_mean"], atol=1e-6)

    # Responses equal the rates stored in the file, trial by trial
    responses = [m for m in messages if isinstance(m, Responses)]
    assert len(responses) == 8
    with SessionReader(path) as reader:
        stored = reader.responses
    for message in responses:
        assert np.array_equal(message.rates.astype(np.float32), stored[message.trial_ids])
    finished = [m for m in messages if isinstance(m, BlockStatus) and m.state == "finished"]
    assert [m.block for m in finished] == list(range(8))


def test_server_input_is_what_the_loader_gives(archives, cnn_protocol):
    """The preprocessing the server applies to the images the driver sends equals load_dataset's."""
    from closedloop.server.checks import network_input

    path = archives["session"]
    plan = read_plan(path)
    fit = cnn_protocol.fit
    loaded = load_dataset(path, preprocessing=fit.preprocessing)
    assert np.array_equal(plan.image_ids, loaded.image_ids)
    sent = plan.images_of(loaded.image_ids)
    assert np.array_equal(network_input(sent, plan.image_size, fit.preprocessing, "images"), loaded.images)


def test_first_blocks_without_enough_images_wait_for_the_first_fit(archives, linear_protocol, rig):
    outcome = replay_archive(
        archives["session"], linear_protocol, rig, ReplayOptions(device="cpu", block_trials=7, max_blocks=5)
    )
    first, second = outcome.rows[:2]
    assert first.state == "added" and first.version == 0
    assert "a fit needs at least 10" in first.detail and "block 1" in first.detail
    assert second.state == "fitted" and second.version == 1 and second.images_so_far == 14
    assert any("first refit comes after block 1" in note for note in outcome.notes)
    assert len(outcome.rows) == 5 and outcome.inputs.ok  # offline cut to the 5 blocks sent
