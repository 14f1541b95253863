"""The server's data store: checked additions, unit ids fixed once, parts decided once."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SIZE_PX, UNIT_IDS

from closedloop.data.dataset import Preprocessing
from closedloop.errors import ClosedLoopError
from closedloop.messages import FitRequest
from closedloop.server.checks import RequestError
from closedloop.server.store import ResponseStore


def _store(seed: int = 7) -> ResponseStore:
    return ResponseStore(
        stimulus_size_px=SIZE_PX, preprocessing=Preprocessing(), holdout_fraction=0.2, stop_fraction=0.14, seed=seed
    )


def test_trials_accumulate_by_stimulus_id(recording) -> None:
    store = _store()
    store.add(recording.request(block=1, index=slice(0, 20), repeats=2))
    store.add(recording.request(block=2, index=slice(20, 30), repeats=1))
    store.add(recording.request(block=3, index=slice(0, 10), repeats=3, with_images=False))
    dataset, split = store.snapshot()
    assert (dataset.n_images, store.n_trials) == (30, 40 + 10 + 30)
    counts = dataset.repeat_counts[:, 0]
    assert counts[:10].tolist() == [5] * 10 and counts[10:20].tolist() == [2] * 10 and counts[20:].tolist() == [1] * 10
    assert np.isnan(dataset.trial_rates[20:, 1:]).all()
    np.testing.assert_array_equal(dataset.unit_ids, UNIT_IDS)
    assert dataset.images.shape == (30, 33, 33)
    assert sorted(np.concatenate([split.train, split.stop, split.held_out]).tolist()) == list(range(30))


def test_a_block_sent_again_replaces_its_first_copy(recording) -> None:
    # A runner that resumes re-sends every recorded block; a server that kept running
    # must not count those trials twice.
    store = _store()
    store.add(recording.request(block=1, index=slice(0, 20), repeats=2))
    store.add(recording.request(block=2, index=slice(0, 20), repeats=1, with_images=False))
    once, _ = store.snapshot()
    store.add(recording.request(block=1, index=slice(0, 20), repeats=2))
    again, _ = store.snapshot()
    assert store.n_trials == 60
    np.testing.assert_array_equal(again.repeat_counts, once.repeat_counts)
    np.testing.assert_array_equal(again.trial_rates, once.trial_rates)


def test_parts_are_decided_once_and_keep_their_shares(recording) -> None:
    store = _store()
    parts_so_far: dict[int, str] = {}
    for block, index in enumerate((slice(0, 7), slice(7, 31), slice(31, 80)), start=1):
        store.add(recording.request(block=block, index=index, repeats=1))
        for stimulus_id, part in parts_so_far.items():
            assert store.part(stimulus_id) == part  # never moves
        parts_so_far = {int(i): store.part(i) for i in recording.ids[: index.stop]}
    dataset, split = store.snapshot()
    assert (len(split.held_out), len(split.stop)) == (16, 11)  # 20 % and 14 % of 80
    held = {int(i) for i in dataset.image_ids[split.held_out]}
    assert held == {i for i, part in parts_so_far.items() if part == "held_out"}


def test_parts_do_not_depend_on_arrival_order_within_a_block(recording) -> None:
    forward, backward = _store(), _store()
    order = np.arange(40)
    forward.add(recording.request(block=1, index=order))
    backward.add(recording.request(block=1, index=order[::-1]))
    assert [forward.part(i) for i in recording.ids[:40]] == [backward.part(i) for i in recording.ids[:40]]
    other_seed = _store(seed=8)
    other_seed.add(recording.request(block=1, index=order))
    assert [forward.part(i) for i in recording.ids[:40]] != [other_seed.part(i) for i in recording.ids[:40]]


def test_a_refused_request_adds_nothing(recording) -> None:
    store = _store()
    store.add(recording.request(block=1, index=slice(0, 10)))
    bad = recording.request(block=2, index=slice(10, 20))
    object.__setattr__(bad, "unit_ids", UNIT_IDS[::-1].copy())  # same units, other order
    with pytest.raises(RequestError) as caught:
        store.add(bad)
    assert caught.value.code == "unit_mismatch"
    assert store.n_trials == 30 and store.part(recording.ids[15]) is None


def test_an_empty_refit_request_adds_nothing_and_needs_no_units(recording) -> None:
    store = _store()
    empty = recording.request(block=1, index=slice(0, 0), with_images=False)
    assert store.add(empty) == 0 and store.unit_ids is None
    with pytest.raises(ClosedLoopError, match="only 0 images with responses"):
        store.snapshot()


def test_an_edited_image_joins_its_originals_part(recording) -> None:
    store = _store()
    store.add(recording.request(block=1, index=slice(0, 40), repeats=1))
    parents = recording.ids[:40]
    edits = np.clip(recording.images[:40] + 0.01, 0, 1)  # "edits" of the first 40 images, new ids
    edit_ids = np.arange(5000, 5040)

    def edits_sent(parent_ids: np.ndarray | None) -> FitRequest:
        ones = np.ones((40, len(UNIT_IDS)))
        return FitRequest(
            block=2,
            stimulus_ids=edit_ids,
            rates=ones,
            unit_ids=UNIT_IDS,
            image_ids=edit_ids,
            images=edits,
            parent_ids=parent_ids,
        )

    store.add(edits_sent(np.where(np.arange(40) % 2 == 0, parents, -1)))  # every other one an edit
    for k, (child, parent) in enumerate(zip(edit_ids, parents)):
        if k % 2 == 0:
            assert store.part(child) == store.part(parent)
    # without parents, held-out images that are edits of trained ones would appear
    plain = _store()
    plain.add(recording.request(block=1, index=slice(0, 40), repeats=1))
    plain.add(edits_sent(None))
    assert any(plain.part(c) != plain.part(p) for c, p in zip(edit_ids, parents))
    # the other images take the usual rule, and the shares hold over them: 20 % of the 60 without a parent
    # (edits are left out of the count, or the next images would all be pushed to the held-out set)
    free = [int(i) for i in recording.ids[:40]] + [int(c) for k, c in enumerate(edit_ids) if k % 2]
    assert sum(store.part(i) == "held_out" for i in free) == 12
    assert sum(store.part(i) == "stop" for i in free) == round(0.14 * 60)
