"""Memory stays bounded over a long session: every buffer stops at its cap."""

from __future__ import annotations

import numpy as np

from closedloop.messages import types as msg
from closedloop.monitor.state import Caps, MonitorState


def test_100k_trials_of_120_units_stay_within_the_caps():
    caps = Caps(unit_spikes=50_000)  # the chosen unit gets ~170k spikes: fill its ring halfway through
    state = MonitorState(caps, unit=5)
    rng = np.random.default_rng(1)
    units = np.arange(120)
    image = np.full((1, 16, 16), 0.5, dtype=np.float32)
    sizes_midway = bytes_midway = None
    for block in range(1000):  # 100 trials a block, each a new stimulus: the worst case
        ids = block * 100 + np.arange(100)
        rates = rng.gamma(2.0, 5.0, (100, 120))
        state.ingest(
            "responses",
            msg.BlockRequest(block=block, kind="natural", stimulus_ids=ids, image_ids=ids[:1], pixels=image),
        )
        state.ingest(
            "model_events", msg.Predictions(rates=rates + 1, unit_ids=units, model_version=1, stimulus_ids=ids)
        )
        state.ingest(
            "responses", msg.Responses(block=block, trial_ids=ids, stimulus_ids=ids, rates=rates, unit_ids=units)
        )
        onsets = block * 30.0 + np.arange(100) * 0.3
        state.ingest(
            "spikes",
            msg.SpikeBatch(
                unit_ids=rng.integers(0, 120, 20_000),
                times=np.sort(rng.uniform(block * 30.0, block * 30.0 + 30, 20_000)),
            ),
        )
        for onset in onsets[:10]:
            state.ingest("spikes", msg.SyncEvent(line=1, state=1, time=onset))
        state.ingest(
            "stimulus",
            msg.StimulusShown(stimulus_id=int(ids[0]), trial=int(ids[0]), block=block, flip_time=0.0, n_frames=6),
        )
        if block % 20 == 19:  # the window takes a view ~10 times a second
            state.view()
        if block == 499:
            sizes_midway, bytes_midway = state.sizes(), state.nbytes()
    sizes = state.sizes()
    assert state.view().counts["trials"] == 100_000
    assert sizes["stimuli"] == caps.stimuli and sizes["trials"] == caps.trials
    assert sizes["images"] == caps.images and sizes["window_spikes"] <= caps.window_spikes
    assert sizes["unit_spikes"] <= caps.unit_spikes and sizes["onsets"] == caps.onsets
    assert sizes["correlation_history"] == 50  # one point per view that saw new rates
    assert {k: v for k, v in sizes.items() if k != "correlation_history"} == {
        k: v for k, v in sizes_midway.items() if k != "correlation_history"
    }
    assert state.nbytes() == bytes_midway < 60e6
    view = state.view()
    assert view.population_points["measured"].size == caps.population_points
    assert np.isfinite(view.population_r) and view.trials["trial"][-1] == 99_999


def test_histories_stop_at_their_cap():
    state = MonitorState(Caps(history=5, statuses=3))
    for k in range(12):
        state.ingest(
            "responses",
            msg.Responses(
                block=k,
                trial_ids=np.arange(4) + 4 * k,
                stimulus_ids=np.arange(4),
                rates=np.arange(8.0).reshape(4, 2) * (k + 1),
                unit_ids=np.arange(2),
            ),
        )
        state.ingest(
            "model_events",
            msg.Predictions(
                rates=np.arange(8.0).reshape(4, 2) ** 1.5,
                unit_ids=np.arange(2),
                model_version=k,
                stimulus_ids=np.arange(4),
            ),
        )
        state.ingest("model_events", msg.ModelUpdated(version=k + 1, metrics={"r_mean": 0.5}))
        state.ingest("responses", msg.BlockStatus(block=k, kind="natural", state="finished"))
        state.view()
    sizes = state.sizes()
    assert sizes["correlation_history"] == 5 and sizes["model_history"] == 5 and sizes["statuses"] == 3
    assert state.view().model_history["version"].tolist() == [8, 9, 10, 11, 12]
