"""The unrolled protocol, seeded trial orders, loop stop rules, and the journal's crash rules."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.errors import DataFileError
from closedloop.runner import BlockRecord, Journal, Plan, trial_order

from .helpers import write_protocol


def test_loops_are_unrolled_into_numbered_steps(tmp_path):
    plan = Plan(write_protocol(tmp_path, iterations=2))
    assert [(s.index, s.kind, s.iteration) for s in plan.steps] == [
        (0, "natural", 0),
        (1, "fit", 0),
        (2, "synthesize", 1),
        (3, "present_synthesized", 1),
        (4, "fit", 1),
        (5, "synthesize", 2),
        (6, "present_synthesized", 2),
        (7, "fit", 2),
    ]
    assert plan.steps[5].where == "blocks[2].blocks[0]" and plan.steps[5].first_in_iteration
    assert plan.next_present_repeats(2) == 2
    assert plan.next_present_repeats(0) == 1


def test_a_loop_stops_before_its_next_iteration_once_r_is_above_the_threshold(tmp_path):
    text = tmp_path / "p.yaml"
    write_protocol(tmp_path, iterations=3, name="p.yaml")
    text.write_text(text.read_text().replace("iterations: 3", "iterations: 3\n    stop_when_r_above: 0.5"))
    from closedloop.config import load_protocol

    plan = Plan(load_protocol(text))
    step, skipped = plan.next_step(4, r_median=0.4)
    assert step.index == 5 and not skipped
    step, skipped = plan.next_step(4, r_median=0.6)
    assert step is None and [s.index for s in skipped] == [5, 6, 7, 8, 9, 10]
    step, _ = plan.next_step(1, r_median=0.9)  # the first iteration always runs
    assert step.index == 2


def test_trial_orders_repeat_every_stimulus_and_depend_only_on_seed_and_step():
    ids = np.arange(10, 20)
    order = trial_order(ids, 3, seed=5, step_index=2)
    assert np.array_equal(np.sort(order), np.repeat(ids, 3))
    assert np.array_equal(order, trial_order(ids, 3, seed=5, step_index=2))
    assert not np.array_equal(order, trial_order(ids, 3, seed=5, step_index=3))


def test_the_journal_drops_records_of_blocks_never_committed(tmp_path):
    journal = Journal(tmp_path / "s.runner.jsonl")
    for block in range(3):
        journal.append(
            BlockRecord(block, block, f"blocks[{block}]", "natural", "finished", metrics={"r_median": float("nan")})
        )
    with open(journal.path, "a") as file:
        file.write('{"session_block": 3, "step"')  # cut short by a crash
    records = journal.load(n_blocks=2)  # the session committed only blocks 0 and 1
    assert [r.session_block for r in records] == [0, 1]
    assert np.isnan(records[0].metrics["r_median"])
    assert len(journal.path.read_text().splitlines()) == 2
    with pytest.raises(DataFileError, match=r"no record of session block\(s\) \[2, 3\]"):
        journal.load(n_blocks=4)


def test_a_missing_journal_for_a_session_with_blocks_is_an_error(tmp_path):
    with pytest.raises(DataFileError, match="cannot tell where in the protocol"):
        Journal(tmp_path / "none.jsonl").load(n_blocks=1)
    assert Journal(tmp_path / "none.jsonl").load(n_blocks=0) == []
