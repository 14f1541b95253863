"""The model server over sockets: fit → ModelUpdated → predict → synthesize, refits in the
background (a request mid-refit, coalescing, failures), the stable split, checkpoints."""

from __future__ import annotations

import pickle
import threading
import time

import numpy as np
import pytest
from conftest import N_UNITS, UNIT_IDS, settings

import closedloop.server.component as component_module
from closedloop.data.preprocess import preprocess
from closedloop.errors import ClosedLoopError
from closedloop.messages import (
    Accepted,
    Error,
    ModelUpdated,
    PredictRequest,
    Predictions,
    SynthesizeRequest,
    SynthesizeResult,
)
from closedloop.model.checkpoint import load_checkpoint
from closedloop.model.predict import predict
from closedloop.server import ModelServer
from closedloop.server.refit import Cancelled, run_refit
from closedloop.synth.plan import heldout_r

CONTRACT_KEYS = {"r_mean", "r_median", "r_over_rmax_mean", "n_images", "n_trials", "n_units", "fit_seconds", "block"}


class Gate:
    """Wraps run_refit: records each version it is called for and holds chosen versions until released."""

    def __init__(self, hold: tuple[int, ...] = (), fail: tuple[int, ...] = ()):
        self.calls: list[int] = []
        self.held = {version: threading.Event() for version in hold}
        self.fail = fail

    def __call__(self, job, settings, device, cancel):
        self.calls.append(job.version)
        if job.version in self.fail:
            raise ClosedLoopError(f"forced failure of version {job.version}")
        event = self.held.get(job.version)
        while event is not None and not event.wait(0.02):
            if cancel.is_set():
                raise Cancelled("stopping")
        return run_refit(job, settings, device, cancel)

    def release(self, version: int) -> None:
        self.held[version].set()


@pytest.fixture
def gate(monkeypatch):
    def install(**options) -> Gate:
        installed = Gate(**options)
        monkeypatch.setattr(component_module, "run_refit", installed)
        return installed

    return install


def _fit(running, request) -> ModelUpdated:
    accepted = running.ask(request)
    assert isinstance(accepted, Accepted), accepted
    update = running.next_event((ModelUpdated, Error))
    assert isinstance(update, ModelUpdated), update
    assert update.version == accepted.version
    return update


def test_fit_then_predict_and_synthesize_over_sockets(run_server, recording) -> None:
    running = run_server()
    refused = running.ask(PredictRequest(images=recording.images[:2]))
    assert isinstance(refused, Error) and refused.code == "no_model"

    update = _fit(running, recording.request(block=1, index=slice(0, 60)))
    assert update.version == 1
    assert CONTRACT_KEYS <= set(update.metrics)
    assert (update.metrics["n_images"], update.metrics["n_trials"], update.metrics["n_units"]) == (60, 180, N_UNITS)
    assert update.metrics["block"] == 1 and update.metrics["warm_start"] == 0
    assert update.metrics["n_heldout"] == 12  # 20 % of 60, decided as the images arrived
    np.testing.assert_array_equal(update.unit_ids, UNIT_IDS)
    assert update.heldout_r.shape == (N_UNITS,) and np.nanmean(update.heldout_r) > 0.2

    unseen = slice(60, 80)  # never sent to the server
    predictions = running.ask(PredictRequest(images=recording.images[unseen], stimulus_ids=recording.ids[unseen]))
    assert isinstance(predictions, Predictions) and predictions.model_version == 1
    assert predictions.rates.shape == (20, N_UNITS)
    np.testing.assert_array_equal(predictions.stimulus_ids, recording.ids[unseen])
    r = [np.corrcoef(predictions.rates[:, u], recording.rates[unseen, u])[0, 1] for u in range(N_UNITS)]
    assert np.mean(r) > 0.3
    copy = running.next_event((Predictions,), timeout_s=5)
    np.testing.assert_allclose(copy.rates, predictions.rates)

    ask = SynthesizeRequest(unit_ids=[10, 12, 12], targets=[np.nan, 20.0, 20.0], seed=4)
    result = running.ask(ask)
    assert isinstance(result, SynthesizeResult) and result.model_version == 1
    assert result.images.shape == (3, 66, 66) and 0 <= result.images.min() and result.images.max() <= 1
    assert result.images[:, 0, 0].tolist() == [0.5, 0.5, 0.5]  # grey outside the aperture
    assert not np.allclose(result.images[1], result.images[2])  # same pair, different starting noise
    check = running.ask(PredictRequest(images=result.images))
    np.testing.assert_allclose(check.rates[[0, 1, 2], [0, 2, 2]], result.achieved, rtol=1e-3, atol=1e-3)
    assert running.next_event((SynthesizeResult,), timeout_s=5).model_version == 1


def test_a_predict_during_a_refit_is_answered_at_once_by_the_old_model(run_server, recording, gate) -> None:
    refits = gate(hold=(2,))
    running = run_server()
    _fit(running, recording.request(block=1, index=slice(0, 40)))
    accepted = running.ask(recording.request(block=2, index=slice(40, 60)))
    assert accepted.version == 2 and running.server.refitting

    answer = running.ask(PredictRequest(images=recording.images[:3]), timeout_s=5)
    assert isinstance(answer, Predictions) and answer.model_version == 1
    assert running.server.refitting  # the refit is still held: the answer did not wait for it

    refits.release(2)
    update = running.next_event((ModelUpdated, Error))
    assert isinstance(update, ModelUpdated) and update.version == 2
    assert update.metrics["warm_start"] == 1 and update.metrics["n_images"] == 60
    assert running.ask(PredictRequest(images=recording.images[:3])).model_version == 2


def test_refits_asked_for_during_a_refit_are_coalesced_into_one(run_server, recording, gate) -> None:
    refits = gate(hold=(2,))
    running = run_server()
    _fit(running, recording.request(block=1, index=slice(0, 40)))
    assert running.ask(recording.request(block=2, index=slice(40, 50))).version == 2
    queued = [
        running.ask(recording.request(block=block, index=slice(40 + 10 * (block - 2), 50 + 10 * (block - 2))))
        for block in (3, 4)
    ]
    assert [a.version for a in queued] == [3, 3] and all("queued" in a.detail for a in queued)

    refits.release(2)
    second, third = (running.next_event((ModelUpdated, Error)) for _ in range(2))
    assert (second.version, second.metrics["n_images"]) == (2, 50)
    assert (third.version, third.metrics["n_images"], third.metrics["block"]) == (3, 70, 4)
    time.sleep(0.5)
    assert refits.calls == [1, 2, 3] and not running.server.refitting
    assert running.server.counts["refits_coalesced"] == 2


def test_held_out_images_never_train_a_later_refit(run_server, recording) -> None:
    running = run_server()
    held_before: set[int] = set()
    for block, index in enumerate((slice(0, 30), slice(30, 55), slice(55, 80)), start=1):
        _fit(running, recording.request(block=block, index=index))
        result = running.server.model.result
        held = set(result.image_ids[result.split.held_out].tolist())
        fitted = set(result.image_ids[result.split.fit].tolist())
        assert held_before <= held and not held_before & fitted
        assert {running.server.store.part(i) for i in held} == {"held_out"}
        held_before = held
    assert len(held_before) == 16  # 20 % of 80


def test_a_failed_refit_is_published_and_the_old_model_keeps_serving(run_server, recording, gate) -> None:
    running = run_server()
    too_few = running.ask(recording.request(block=1, index=slice(0, 5)))
    failed = running.next_event((ModelUpdated, Error))
    assert isinstance(failed, Error) and failed.code == "fit_failed" and "at least 10" in failed.message
    assert failed.in_reply_to == running.client.seq - 1 and too_few.version == 1

    assert _fit(running, recording.request(block=2, index=slice(5, 40))).version == 2
    assert running.ask(recording.request(block=3, index=slice(40, 50))).version == 3
    assert running.next_event((ModelUpdated, Error)).version == 3
    gate(fail=(4,))
    running.ask(recording.request(block=4, index=slice(50, 60)))
    failed = running.next_event((ModelUpdated, Error))
    assert failed.code == "fit_failed" and "version 3 stays in service" in failed.message
    assert running.ask(PredictRequest(images=recording.images[:2])).model_version == 3


def test_every_model_version_is_saved_with_out_dir(run_server, recording, tmp_path) -> None:
    running = run_server(out_dir=str(tmp_path / "models"))
    update = _fit(running, recording.request(block=1, index=slice(0, 40)))
    saved = tmp_path / "models" / "model_v001.pt"  # written (atomically) just after ModelUpdated is sent
    deadline = time.monotonic() + 10
    while not saved.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    checkpoint = load_checkpoint(saved, device="cpu")
    assert checkpoint.model_version == 1 and checkpoint.metrics["block"] == 1
    np.testing.assert_array_equal(checkpoint.unit_ids, update.unit_ids)
    np.testing.assert_allclose(heldout_r(checkpoint.metrics, N_UNITS), update.heldout_r)
    expected = running.ask(PredictRequest(images=recording.images[:4])).rates
    np.testing.assert_allclose(predict(checkpoint, preprocess(recording.images[:4])), expected, rtol=1e-5)


def test_the_server_pickles_before_setup_for_process_mode() -> None:
    server = ModelServer("model", settings(out_dir="models"))
    copy = pickle.loads(pickle.dumps(server))
    assert copy.settings == server.settings and copy.version == 0
