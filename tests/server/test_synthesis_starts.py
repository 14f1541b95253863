"""The model server's syntheses start rate targets from the images it was fitted on (or grey when told)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import N_UNITS, UNIT_IDS, settings

from closedloop.data.dataset import Preprocessing
from closedloop.data.preprocess import preprocess
from closedloop.errors import ClosedLoopError
from closedloop.messages import Accepted, FitRequest, ModelUpdated, SynthesizeRequest, SynthesizeResult
from closedloop.synth.starts import StartImages, choose_starts
from closedloop.synth.targets import SynthesisJob, Target


def _fitted(running, recording):
    accepted = running.ask(recording.request(block=1, index=slice(0, 50), repeats=3))
    assert isinstance(accepted, Accepted)
    assert isinstance(running.next_event((ModelUpdated,)), ModelUpdated)
    return running.server.model


def _expected_starts(served, recording) -> StartImages:
    """The fit images and their mean rates, from the recording and the seeded trials the server was sent."""
    fit = served.result.split.fit
    trials = recording.request(block=1, index=slice(0, 50), repeats=3)
    rows = np.searchsorted(recording.ids, trials.stimulus_ids)
    measured = np.stack([trials.rates[rows == image].mean(axis=0) for image in fit])
    images = preprocess(recording.images[:50][fit], Preprocessing())
    return StartImages(images, measured, recording.ids[:50][fit])


def test_a_served_model_keeps_its_fit_images_and_their_measured_means(run_server, recording) -> None:
    assert _fitted(run_server(), recording).starts is None  # grey starts (the default) need none
    served = _fitted(run_server(synthesis_start="natural"), recording)
    expected = _expected_starts(served, recording)
    assert served.starts.measured_hz.shape == (len(served.result.split.fit), N_UNITS)
    np.testing.assert_array_equal(served.starts.image_ids, expected.image_ids)
    np.testing.assert_allclose(served.starts.images, expected.images)
    np.testing.assert_allclose(served.starts.measured_hz, expected.measured_hz, rtol=1e-5)
    np.testing.assert_array_equal(served.unit_ids, UNIT_IDS)


@pytest.mark.parametrize("start", ["natural", "blank"])
def test_synthesize_starts_where_the_server_is_told(run_server, recording, start) -> None:
    running = run_server(synthesis_start=start, synthesis_steps=1)
    served = _fitted(running, recording)
    starts = _expected_starts(served, recording)
    target = float(np.median(starts.measured_hz[:, 2]))
    reply = running.ask(SynthesizeRequest(unit_ids=[int(UNIT_IDS[2])], targets=[target], seed=1, steps=1))
    assert isinstance(reply, SynthesizeResult)
    canvas = running.server.canvas
    job = SynthesisJob(2, Target("rate", target), target)
    first, ids = choose_starts(served.result.model, [job], starts, canvas, served.scale_hz, torch.device("cpu"))
    image = preprocess(reply.images, Preprocessing())[0]
    inside = canvas.aperture_mask()
    assert ids[0] >= 0  # some fitted image was measured near a median rate
    assert reply.start_ids.tolist() == (ids.tolist() if start == "natural" else [-1])  # and the reply says so
    alike = np.corrcoef(image[inside], first[0][inside])[0, 1]
    if start == "natural":
        assert alike > 0.9  # one step from that image
    else:
        assert alike < 0.5  # one step from grey: the model's gradient, not that image


def test_an_unknown_start_is_refused() -> None:
    with pytest.raises(ClosedLoopError, match="synthesis_start must be one of blank, natural"):
        settings(synthesis_start="photo")


def test_a_live_server_keeps_each_edit_in_its_originals_part(run_server, recording) -> None:
    running = run_server(synthesis_start="natural")
    _fitted(running, recording)
    edit_ids = recording.ids[:50] + 10_000
    edits = np.clip(recording.images[:50] + 0.02, 0.0, 1.0)
    sent = FitRequest(
        block=2,
        stimulus_ids=edit_ids,
        rates=np.full((50, N_UNITS), 5.0),
        unit_ids=UNIT_IDS,
        image_ids=edit_ids,
        images=edits,
        parent_ids=recording.ids[:50],
        refit=False,
    )
    assert isinstance(running.ask(sent), Accepted)
    store = running.server.store
    assert [store.part(i) for i in edit_ids] == [store.part(i) for i in recording.ids[:50]]
