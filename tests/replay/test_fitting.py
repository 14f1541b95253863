"""The replay driver's model-server collaborator on its own: sending blocks, refits, events."""

from __future__ import annotations

import time

import numpy as np
import pytest

from closedloop.errors import ClosedLoopError
from closedloop.messages import Error, ModelUpdated
from closedloop.model.split import MIN_IMAGES
from closedloop.replay.driver import DriverSettings
from closedloop.replay.fitting import ReplayFitting
from closedloop.replay.plan import read_plan
from closedloop.replay.rows import BlockRow
from closedloop.server.client import ModelLink
from closedloop.transport import Endpoints, Publisher


def _finish(generator, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            next(generator)
        except StopIteration as stop:
            return stop.value
    raise AssertionError("the generator never finished")


@pytest.fixture
def fitting(archives):
    plan = read_plan(archives["session"])
    endpoints = Endpoints.inproc()
    events = Publisher(endpoints.model_events, source="model-server")
    link = ModelLink(endpoints.model, endpoints.model_events, request_timeout_s=0.2)
    rows, models, emitted, updates = [], {}, [], []
    part = ReplayFitting(
        link,
        plan,
        DriverSettings(request_timeout_s=0.2),
        rows,
        models,
        {},
        emit=emitted.append,
        on_model=updates.append,
    )
    yield part, events, emitted, updates
    link.close()
    events.close()


def test_nothing_sent_and_the_first_fittable_block_is_known(fitting):
    part, _, emitted, _ = fitting
    counts = part.plan.fit_images_through(part.plan.blocks)
    assert part.first_fittable_block == int(np.flatnonzero(counts >= MIN_IMAGES)[0])
    assert part.newest_version == 0 and part.trials_sent == 0
    _finish(part.final_refit(0))  # no data sent: no final refit, nothing to wait for
    assert emitted == []


def test_a_server_that_never_answers_stops_the_replay(fitting):
    part, _, _, _ = fitting
    block = part.plan.blocks[0]
    ids = part.plan.stimulus_ids[block.trial_start : block.trial_stop]
    row = BlockRow(block.number, block.label, "flagged", block.n_trials)
    with pytest.raises(ClosedLoopError, match="did not answer"):
        _finish(part.send_block(block, row, ids, np.ones((ids.size, part.plan.unit_ids.size))))
    assert part.trials_sent == 0 and part.sent_repeats == {}


def test_model_events_fill_the_rows_waiting_for_them(fitting):
    part, events, _, updates = fitting
    pending = BlockRow(0, "block 0", "refit pending", 8, version=2)
    part.rows.append(pending)
    part.version_of_seq[7] = 3
    for _ in range(200):  # PUB/SUB joins late: publish until the link has it
        events.send(ModelUpdated(version=2, metrics={"r_median": 0.3}))
        events.send(Error(code="fit_failed", message="too few images", in_reply_to=7))
        time.sleep(0.005)
        if part.poll_model_events() and 2 in part.models and 3 in part.failed_versions:
            break
    assert pending.state == "fitted" and pending.metrics == {"r_median": 0.3}
    assert part.newest_version == 2 and updates and updates[0].version == 2
    assert part.failed_versions[3] == "too few images"
