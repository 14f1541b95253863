"""The runner's collaborators on their own: the session recorder, model steps, block presentation."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from closedloop.acquisition.buffer import StreamData
from closedloop.data.session_format import BlockKind
from closedloop.data.session_reader import SessionReader
from closedloop.runner.collect import StreamCollector
from closedloop.runner.journal import BlockRecord, read_records
from closedloop.runner.model_steps import UNAVAILABLE, ModelSteps
from closedloop.runner.plan import Plan
from closedloop.runner.presentation import BlockPresentation, pause
from closedloop.runner.recorder import SessionRecorder
from closedloop.runner.trials import TrialData
from closedloop.server.client import ModelLink
from closedloop.transport import Endpoints, Publisher, RequestClient, random_tcp_endpoint

from .helpers import FAST

UNITS = np.arange(1, 11, dtype=np.int64)
NOTHING = StreamData(np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0, np.int32), np.zeros(0, np.int8))


def _recorder(tmp_path, protocol, statuses, *, new: bool = True) -> SessionRecorder:
    return SessionRecorder(
        tmp_path / "s.h5",
        protocol,
        unit_ids=UNITS if new else None,
        channels=UNITS - 1 if new else None,
        window_s=protocol.response.window_s,
        announce=statuses.append,
    )


def _finish(generator, timeout_s: float = 20.0):
    """Run a step generator to its end; its return value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            next(generator)
        except StopIteration as stop:
            return stop.value
    raise AssertionError("the generator never finished")


def test_recorder_commits_journal_then_block_then_status_and_resumes_from_its_own_record(tmp_path, rig, protocol):
    statuses = []
    recorder = _recorder(tmp_path, protocol, statuses)
    recorder.create(rig, protocol.frames(rig), photodiode_line=1, plan_steps=2)
    assert recorder.library.natural_ids.size == protocol.images.n and set(recorder.seeds) >= {"protocol", "images"}
    recorder.mark("step_started")
    recorder.clock_offset = None
    recorder.commit(BlockRecord(0, 0, "blocks[0]", "natural", "finished"), BlockKind.OTHER, data=NOTHING)
    recorder.commit(
        BlockRecord(
            0,
            1,
            "blocks[1]",
            "fit",
            "finished",
            model_version=2,
            metrics={"r_median": 0.4},
            unit_ids=[1, 2],
            heldout_r=[0.5, None],
        ),
        BlockKind.OTHER,
        data=NOTHING,
    )
    recorder.close()
    records = read_records(recorder.journal.path)
    assert [r.session_block for r in records] == [0, 1] and "step_started" in records[0].times
    assert "step_started" not in records[1].times  # marks go with the next record only
    assert [(s.block, s.kind, s.state) for s in statuses] == [(0, "natural", "finished"), (1, "fit", "finished")]
    assert recorder.position == 1
    with SessionReader(tmp_path / "s.h5") as reader:
        assert reader.n_blocks == 2 and np.array_equal(reader.unit_ids, UNITS)

    again = _recorder(tmp_path, protocol, [], new=False)
    again.resume()
    try:
        assert again.position == 1 and again.refit_wanted and np.array_equal(again.unit_ids, UNITS)
        assert again.seeds == recorder.seeds and again.library.cursor == recorder.library.cursor
        assert again.newest_model.version == 2 and np.isnan(again.newest_model.heldout_r[1])
        assert again.history == []  # no presentation block with responses
    finally:
        again.close()


def test_recorder_skips_steps_without_a_block(tmp_path, protocol):
    recorder = _recorder(tmp_path, protocol, [])
    recorder.skipped(4)
    assert recorder.position == 4 and recorder.writer is None


@pytest.fixture
def parts(tmp_path, rig, protocol):
    statuses = []
    recorder = _recorder(tmp_path, protocol, statuses)
    recorder.create(rig, protocol.frames(rig), photodiode_line=1, plan_steps=2)
    endpoints = Endpoints.inproc()  # nothing serves them: no presenter, no model server
    link = ModelLink(endpoints.model, endpoints.model_events, request_timeout_s=0.2)
    collector = StreamCollector(endpoints.spikes, endpoints.stimulus)
    yield recorder, link, collector, endpoints, statuses
    for part in (link, collector, recorder):
        part.close()


def test_model_steps_queue_what_the_server_lacks_and_fall_back_when_it_is_down(parts, rig, protocol):
    recorder, link, collector, _, _ = parts
    recorder.history += [
        TrialData(0, np.array([0, 1]), np.ones((2, UNITS.size))),
        TrialData(1, np.array([2]), np.ones((1, UNITS.size))),
    ]
    recorder.refit_wanted = True
    steps = ModelSteps(link, recorder, collector, rig=rig, protocol=protocol, plan=Plan(protocol), settings=FAST)
    assert link.on_restart == steps.server_lost_data
    steps.server_blocks.add(0)
    steps.queue_everything()
    assert len(link.backlog) == 2  # block 1's responses and the refit; block 0 is on the server
    steps.server_has.add(5)
    steps.server_lost_data()
    assert not steps.server_has and not steps.server_blocks
    link.up = False  # the server did not answer before
    synthesize = next(s for s in Plan(protocol).steps if s.kind == "synthesize")
    assert _finish(steps.synthesize(synthesize)) == UNAVAILABLE
    assert recorder.writer.n_blocks == 0  # the runner shows natural images instead: no block here


def test_the_link_takes_the_resumed_sessions_newest_model_and_next_version(parts):
    _, link, _, _, _ = parts
    from closedloop.messages import ModelUpdated

    link.resume_session(ModelUpdated(version=3, metrics={"r_median": 0.7}), next_version=5)
    assert link.version == 3 and link.known_version == 3 and link.version_floor == 5


def test_block_presentation_without_a_presenter_fails_the_block_and_stops_the_run(parts, rig, protocol):
    recorder, link, collector, endpoints, statuses = parts
    endpoints = dataclasses.replace(endpoints, blocks=random_tcp_endpoint())  # nobody listens there
    settings = dataclasses.replace(FAST, presenter_timeout_s=0.2)
    plan = Plan(protocol)
    steps = ModelSteps(link, recorder, collector, rig=rig, protocol=protocol, plan=plan, settings=settings)
    stopped = []
    with Publisher(endpoints.responses, source="runner") as publisher:
        presenter = RequestClient(endpoints.blocks, source="runner")
        presentation = BlockPresentation(
            recorder,
            collector,
            presenter,
            publisher,
            steps,
            rig=rig,
            protocol=protocol,
            plan=plan,
            settings=settings,
            endpoints=endpoints,
            frames=protocol.frames(rig),
            photodiode_line=1,
            stop=stopped.append,
        )
        try:
            first = plan.steps[0]
            _finish(presentation.present(first, recorder.library.next_natural(3), 1, "natural"))
        finally:
            presenter.close()
    assert stopped == ["presenter unreachable"] and presentation.active is None
    assert statuses[-1].state == "failed" and "no presenter took the block" in statuses[-1].detail
    assert recorder.writer.n_blocks == 1 and recorder.position is None  # it runs again on resume


def test_pause_yields_until_the_time_is_up():
    assert list(pause(0)) == []
    assert len(list(pause(0.02))) >= 1
