"""Every bad request gets an Error reply with a clear code, and the server keeps serving."""

from __future__ import annotations

import numpy as np
import zmq
from conftest import UNIT_IDS

from closedloop.messages import (
    Accepted,
    Error,
    FitRequest,
    Heartbeat,
    ModelUpdated,
    PredictRequest,
    Predictions,
    SynthesizeRequest,
    decode,
)


def _refused(running, message, code: str, fragment: str) -> None:
    reply = running.ask(message)
    assert isinstance(reply, Error), reply
    assert reply.code == code and fragment in reply.message, reply
    assert reply.in_reply_to == running.client.seq - 1


def test_bad_requests_are_refused_and_the_server_still_answers(run_server, recording) -> None:
    running = run_server()
    images, ids = recording.images, recording.ids
    _refused(running, PredictRequest(images=images[:2]), "no_model", "no model has been fitted yet")
    _refused(running, SynthesizeRequest(unit_ids=[10], targets=[5.0]), "no_model", "no model")
    _refused(running, Heartbeat(), "unexpected_request", "not Heartbeat")

    first = recording.request(block=1, index=slice(0, 40))
    assert isinstance(running.ask(first), Accepted)
    trials = running.server.store.n_trials
    assert isinstance(running.next_event((ModelUpdated, Error)), ModelUpdated)

    def fit(**changes) -> FitRequest:
        values = dict(
            block=2,
            stimulus_ids=ids[40:42],
            rates=np.full((2, len(UNIT_IDS)), 10.0),
            unit_ids=UNIT_IDS,
            image_ids=ids[40:42],
            images=images[40:42],
            refit=False,
        )
        values.update(changes)
        return FitRequest(**values)

    _refused(running, fit(image_ids=None, images=None), "unknown_stimulus", "no image for stimulus id(s) 1040, 1041")
    _refused(running, fit(images=images[40:42, :60, :60]), "bad_image_size", "must be (n, 66, 66)")
    _refused(running, fit(images=images[40:42] * 3), "bad_images", "[0, 1] range")
    _refused(running, fit(images=np.full((2, 66, 66), np.nan, np.float32)), "bad_images", "NaN")
    _refused(running, fit(rates=np.full((2, len(UNIT_IDS)), np.nan)), "bad_rates", "NaN or infinite on 2 trial(s)")
    _refused(running, fit(rates=np.full((2, len(UNIT_IDS)), -1.0)), "bad_rates", ">= 0 Hz")
    _refused(running, fit(unit_ids=UNIT_IDS + 1), "unit_mismatch", "unit ids differ")
    _refused(running, fit(image_ids=ids[[40, 40]]), "bad_request", "image_ids repeat: 1040")
    _refused(running, fit(image_ids=ids[[0, 41]], images=images[[1, 41]]), "image_conflict", "stimulus id 1000")
    assert running.server.store.n_trials == trials and running.server.store.part(ids[41]) is None

    _refused(running, PredictRequest(images=images[:2, :33, :33]), "bad_image_size", "(n, 66, 66)")
    _refused(running, SynthesizeRequest(unit_ids=[99], targets=[5.0]), "unknown_unit", "no unit 99")
    _refused(running, SynthesizeRequest(unit_ids=[10], targets=[-1.0]), "bad_target", "rates >= 0 Hz or NaN")
    _refused(running, SynthesizeRequest(unit_ids=[10], targets=[np.inf]), "bad_target", "rates >= 0 Hz")
    _refused(running, SynthesizeRequest(unit_ids=[], targets=[]), "bad_request", "nothing to synthesize")

    garbage = zmq.Context.instance().socket(zmq.DEALER)  # frames no codec accepts: counted and answered
    garbage.setsockopt(zmq.LINGER, 0)
    garbage.connect(running.server.request_endpoint)
    garbage.send_multipart([b"junk", b"\x00\x01"])
    assert garbage.poll(5000), "no Error for an undecodable request"
    assert isinstance(decode(garbage.recv_multipart()).message, Error)
    garbage.close()

    assert isinstance(running.ask(fit()), Accepted)
    answer = running.ask(PredictRequest(images=images[:3]))
    assert isinstance(answer, Predictions) and answer.model_version == 1
    counts = running.server.counts
    assert counts["error:bad_rates"] == 2 and counts["error:no_model"] == 2 and counts["error:bad_target"] == 2
    assert running.server.requests.stats.malformed == 1
