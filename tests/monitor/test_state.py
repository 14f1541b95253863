"""The monitor's state: what it shows, checked against numpy on hand-made messages."""

from __future__ import annotations

import warnings

import numpy as np

from closedloop.messages import types as msg
from closedloop.monitor.state import MonitorState
from closedloop.monitor.synthesis import fingerprint

UNITS = np.array([7, 3, 11])


def responses(block, trial0, stimulus_ids, rates, units=UNITS):
    n = len(stimulus_ids)
    return msg.Responses(
        block=block,
        trial_ids=trial0 + np.arange(n),
        stimulus_ids=np.asarray(stimulus_ids),
        rates=np.asarray(rates, dtype=float),
        unit_ids=units,
    )


def test_predicted_vs_measured_matched_by_stimulus_id(rng):
    state = MonitorState(unit=3)
    ids = np.array([0, 1, 2, 3, 4, 5])
    rates1, rates2 = rng.gamma(2, 5, (6, 3)), rng.gamma(2, 5, (6, 3))
    state.ingest("responses", responses(0, 0, ids, rates1))
    state.ingest("responses", responses(1, 6, ids[::-1], rates2))  # same stimuli, other order
    predicted = rng.gamma(2, 5, (6, 3))
    # predictions name units in another order than the responses
    state.ingest(
        "model_events",
        msg.Predictions(rates=predicted[:, ::-1], unit_ids=UNITS[::-1], model_version=1, stimulus_ids=ids),
    )
    view = state.view()
    measured = (rates1 + rates2[::-1]) / 2
    order = np.argsort(view.unit_points["stimulus_id"])
    np.testing.assert_allclose(view.unit_points["measured"][order], measured[:, 1])
    np.testing.assert_allclose(view.unit_points["predicted"][order], predicted[:, 1])
    assert view.unit_r == np.corrcoef(measured[:, 1], predicted[:, 1])[0, 1]
    np.testing.assert_allclose(view.population_r, np.corrcoef(measured.ravel(), predicted.ravel())[0, 1])
    per_unit = [np.corrcoef(measured[:, k], predicted[:, k])[0, 1] for k in range(3)]
    np.testing.assert_allclose(view.per_unit_r, per_unit)
    np.testing.assert_allclose(view.median_unit_r, np.median(per_unit))
    assert view.correlation_history["pooled"][-1] == view.population_r
    # per trial: the chosen unit's measured rate and its stimulus's prediction
    np.testing.assert_allclose(view.trials["measured"], np.r_[rates1[:, 1], rates2[:, 1]])
    np.testing.assert_allclose(view.trials["predicted"], np.r_[predicted[:, 1], predicted[::-1, 1]])


def test_psth_and_raster_match_numpy(rng):
    state = MonitorState(unit=7, photodiode_line=2)
    onsets = 1.0 + np.arange(30) * 0.5
    times = np.sort(rng.uniform(0.5, 16.0, 3000))
    units = rng.choice(UNITS, times.size)
    for onset in onsets:
        state.ingest("spikes", msg.SyncEvent(line=2, state=1, time=onset))
        state.ingest("spikes", msg.SyncEvent(line=2, state=0, time=onset + 0.1))
        state.ingest("spikes", msg.SyncEvent(line=5, state=1, time=onset + 0.2))  # another line: not an onset
    for chunk in np.array_split(np.arange(times.size), 40):
        state.ingest("spikes", msg.SpikeBatch(unit_ids=units[chunk], times=times[chunk]))
    view = state.view().spikes
    mine = times[units == 7]
    complete = onsets[(onsets - 0.1 >= times[0]) & (onsets + 0.3 <= times[-1])]
    relative = np.concatenate([mine[(mine >= o - 0.1) & (mine < o + 0.3)] - o for o in complete])
    expected = np.histogram(relative, bins=view.edges)[0]
    assert view.n_onsets == complete.size == 30
    np.testing.assert_array_equal(view.counts, expected)
    np.testing.assert_allclose(view.rate_hz, expected / (complete.size * 0.01))
    assert view.raster_rows.max() < 30 and view.raster_times.size == relative.size


def test_psth_ignores_onsets_whose_spikes_have_not_all_arrived():
    state = MonitorState(unit=1)
    state.ingest("spikes", msg.SpikeBatch(unit_ids=np.array([1, 1]), times=np.array([0.0, 1.05])))
    state.ingest("spikes", msg.SyncEvent(line=1, state=1, time=1.0))
    assert state.view().spikes.n_onsets == 0  # 1.0 + 0.3 s not reached yet
    state.ingest("spikes", msg.SpikeBatch(unit_ids=np.array([2]), times=np.array([1.4])))
    view = state.view().spikes
    assert view.n_onsets == 1 and view.counts.sum() == 1


def test_switching_unit_keeps_its_recent_spikes():
    state = MonitorState(unit=1)
    state.ingest("spikes", msg.SpikeBatch(unit_ids=np.array([1, 2, 2, 1]), times=np.array([0.1, 0.2, 0.3, 0.4])))
    state.choose_unit(2)
    np.testing.assert_array_equal(state.spikes.unit_spikes.values(), [0.2, 0.3])


def test_synthesized_images_matched_by_pixels_then_measured(rng):
    state = MonitorState()
    images = rng.uniform(0, 1, (3, 8, 8)).astype(np.float32)
    state.ingest("responses", msg.BlockStatus(block=4, kind="synthesize", state="finished", iteration=2))
    state.ingest(
        "model_events",
        msg.SynthesizeResult(
            unit_ids=np.array([7, 7, 3]),
            targets=np.array([5.0, 10.0, np.nan]),
            images=images,
            achieved=np.array([6.0, 9.0, 30.0]),
            model_version=2,
        ),
    )
    # the runner sends them as uint8, in another order, with a natural image in between
    pixels = np.round(np.stack([images[2], rng.uniform(0, 1, (8, 8)), images[0], images[1]]) * 255).astype(np.uint8)
    state.ingest(
        "responses",
        msg.BlockRequest(
            block=5,
            kind="mixed",
            stimulus_ids=np.array([40, 41, 42, 43]),
            image_ids=np.array([40, 41, 42, 43]),
            pixels=pixels,
        ),
    )
    state.ingest("responses", responses(5, 0, [42, 43, 40, 42], [[4, 0, 0], [12, 0, 0], [0, 35, 0], [6, 0, 0]]))
    s = state.view().synthesized
    np.testing.assert_array_equal(s["stimulus_id"], [42, 43, 40])
    np.testing.assert_allclose(s["measured_hz"], [5.0, 12.0, 35.0])
    np.testing.assert_array_equal(s["iteration"], [2, 2, 2])
    assert state.view().image is None  # nothing shown yet
    state.ingest(
        "stimulus", msg.StimulusShown(stimulus_id=41, trial=0, block=5, flip_time=0.0, n_frames=6, dropped_frames=2)
    )
    view = state.view()
    np.testing.assert_allclose(view.image, pixels[1] / 255)
    assert view.dropped_frames == 2 and view.dropped_last_block == 2


def test_synthesized_images_matched_by_order_when_pixels_differ(rng):
    state = MonitorState()
    images = rng.uniform(0, 1, (2, 8, 8))
    state.ingest(
        "model_events",
        msg.SynthesizeResult(
            unit_ids=np.array([7, 3]),
            targets=np.array([5.0, 10.0]),
            images=images,
            achieved=np.array([6.0, 9.0]),
            model_version=1,
        ),
    )
    # a runner that gamma-corrected the images: no fingerprint matches, the block kind says synthesized
    state.ingest(
        "responses",
        msg.BlockRequest(
            block=1,
            kind="present_synthesized",
            stimulus_ids=np.array([8, 9]),
            image_ids=np.array([8, 9]),
            pixels=images**2.2,
        ),
    )
    assert list(state.view().synthesized["stimulus_id"]) == [8, 9]
    assert state.view().counts["synth_by_order"] == 2


def test_synthesized_records_carry_the_ensemble_spread(rng):
    state = MonitorState()
    for spread in (np.array([1.5, np.nan, 4.0]), None):  # a server that sends no spread: NaN
        state.ingest(
            "model_events",
            msg.SynthesizeResult(
                unit_ids=np.array([7, 7, 3]),
                targets=np.array([5.0, 10.0, np.nan]),
                images=rng.uniform(0, 1, (3, 8, 8)),
                achieved=np.array([6.0, 9.0, 30.0]),
                model_version=1,
                spread=spread,
            ),
        )
    records = list(state.synth.records)
    assert [r.spread_hz for r in records[:3:2]] == [1.5, 4.0] and np.isnan(records[1].spread_hz)
    spread = state.view().synthesized["spread_hz"]
    np.testing.assert_array_equal(spread, [1.5, np.nan, 4.0, np.nan, np.nan, np.nan])


def test_fingerprint_is_the_same_for_float_and_uint8(rng):
    image = rng.uniform(0, 1, (5, 5))
    assert fingerprint(image) == fingerprint(np.round(image * 255).astype(np.uint8))
    assert fingerprint(image) != fingerprint(1 - image)


def test_model_and_loop(synthetic_messages):
    state = MonitorState()
    for stream, message in synthetic_messages:
        state.ingest(stream, message)
    view = state.view()
    updates = [m for _, m in synthetic_messages if isinstance(m, msg.ModelUpdated)]
    assert view.model_version == updates[-1].version == 2
    np.testing.assert_allclose(view.heldout_r, updates[-1].heldout_r)  # same unit order
    np.testing.assert_array_equal(view.model_history["version"], [1, 2])
    assert view.iteration == 1
    assert view.synthesized["unit_id"].size == 10 and np.isfinite(view.synthesized["measured_hz"]).all()
    assert view.counts["synth_by_pixels"] == 10
    assert view.unit == 1 and view.spikes.n_onsets > 0


def test_unusable_and_unknown_messages_are_counted_not_raised():
    state = MonitorState()
    state.ingest("spikes", msg.Heartbeat())
    state.ingest("model_events", msg.Predictions(rates=np.ones((2, 3)), unit_ids=UNITS, model_version=1))
    state.ingest("model_events", msg.Error(code="refit_failed", message="out of memory"))
    view = state.view()
    assert view.health["spikes"].ignored["Heartbeat"] == 1
    assert view.counts["unusable: Predictions without stimulus ids"] == 1
    assert view.last_error == "refit_failed: out of memory"
    assert "1 ignored" in view.health["spikes"].line()


def test_too_many_units_are_refused_and_counted(rng):
    from closedloop.monitor.state import Caps

    state = MonitorState(Caps(units=2))
    state.ingest("responses", responses(0, 0, [1, 2], rng.uniform(0, 9, (2, 3))))
    view = state.view()
    assert view.unit_ids.tolist() == [7, 3] and view.counts["units_refused"] == 1


def test_a_synthesize_result_that_arrives_after_its_block_request_still_matches(rng):
    # the runner's and the model server's streams are separate connections: no order between them
    state = MonitorState()
    images = rng.uniform(0, 1, (2, 8, 8))
    state.ingest(
        "responses",
        msg.BlockRequest(
            block=3,
            kind="present_synthesized",
            stimulus_ids=np.array([20, 21]),
            image_ids=np.array([20, 21]),
            pixels=images[::-1],
        ),
    )
    state.ingest(
        "model_events",
        msg.SynthesizeResult(
            unit_ids=np.array([7, 3]),
            targets=np.array([5.0, 10.0]),
            images=images,
            achieved=np.array([6.0, 9.0]),
            model_version=1,
        ),
    )
    assert list(state.view().synthesized["stimulus_id"]) == [21, 20]


def test_raster_rows_are_numbered_by_onset_and_bars_by_unit_id():
    from closedloop.monitor.panels.loop import unit_ticks
    from closedloop.monitor.panels.spikes import row_ticks
    from closedloop.monitor.spikes import PsthSettings, SpikeWindow

    window = SpikeWindow(settings=PsthSettings(raster_rows=3))
    window.add_spikes(np.array([7] * 50), np.linspace(0.0, 10.0, 50))
    for onset in (1.0, 2.0, 3.0, 4.0, 5.0):
        window.add_sync(1, 1, onset)
    window.choose(7)
    view = window.view()
    np.testing.assert_array_equal(view.row_onsets, [3, 4, 5])  # the newest three of five onsets
    assert row_ticks(view.row_onsets) == [(2, "5"), (1, "4"), (0, "3")]
    assert unit_ticks(np.array([1001, 1002, 2001])) == [(0, "1001"), (1, "1002"), (2, "2001")]
    assert len(unit_ticks(np.arange(96) + 1)) == 16


def _synthesize_and_show(state, rng, stimulus_ids, achieved, spread, version, iteration, block, targets=10.0):
    """A synthesis of ``version`` for unit 7 (``targets``: one for all, or one each), presented as
    ``stimulus_ids``."""
    images = rng.uniform(0, 1, (len(achieved), 8, 8))
    state.ingest("responses", msg.BlockStatus(block=block, kind="synthesize", state="finished", iteration=iteration))
    state.ingest(
        "model_events",
        msg.SynthesizeResult(
            unit_ids=np.full(len(achieved), 7),
            targets=np.broadcast_to(np.asarray(targets, dtype=float), (len(achieved),)).copy(),
            images=images,
            achieved=np.asarray(achieved, dtype=float),
            model_version=version,
            spread=np.asarray(spread, dtype=float),
        ),
    )
    ids = np.asarray(stimulus_ids)
    state.ingest(
        "responses",
        msg.BlockRequest(block=block + 1, kind="present_synthesized", stimulus_ids=ids, image_ids=ids, pixels=images),
    )


TWO = np.array([7, 3])


def test_synthesized_images_get_the_loop_reports_95_percent_interval_once_shown(rng):
    state = MonitorState()
    state.ingest("model_events", msg.ModelUpdated(version=1, metrics={"heldout_interval_sds": 3.0}))
    # photographs: unit 7's trials vary by 2 Hz² per Hz of their mean (unit 3's by 8)
    natural = np.repeat(np.arange(4), 2)
    rates = np.array([[10, 10], [14, 10], [20, 20], [24, 20], [30, 30], [34, 30], [40, 40], [44, 40]], float)
    state.ingest("responses", responses(0, 0, natural, rates + [[0, 0], [0, 4], [0, 0], [0, 4]] * 2, TWO))
    _synthesize_and_show(state, rng, [10, 11, 12], [20.0, 30.0, 5.0], [1.0, 2.0, 0.5], 1, 1, 1)
    state.ingest("responses", responses(2, 8, [10, 10, 11], np.array([[18, 0], [24, 0], [12, 0]], float), TWO))
    # the noise over every stimulus shown twice: Σ variance / Σ mean (one dof each), image 10's too
    noise_7 = (4 * 8.0 + 18.0) / (12.0 + 22.0 + 32.0 + 42.0 + 21.0)
    s = state.view().synthesized
    # shown twice: its own se √(18 / 2) = 3; once: the unit's noise at (promise + measured) / 2; never: none
    se = [3.0, np.sqrt(noise_7 * (30 + 12) / 2)]
    np.testing.assert_allclose(s["measured_se_hz"][:2], se)
    assert np.isnan(s["measured_se_hz"][2]) and np.all(s["interval_sds"] == 3.0)
    np.testing.assert_allclose(s["interval_hz"][:2], 3.0 * np.hypot([1.0, 2.0], se))
    assert np.isnan(s["interval_hz"][2])
    # a model that recorded no factor, and 3 earlier images (fewer than 19): no k for its images
    for hostile in (float("inf"), float("nan"), -2.0, 0.0):  # not a factor: ignored
        state.ingest("model_events", msg.ModelUpdated(version=2, metrics={"heldout_interval_sds": hostile}))
    assert list(state.synth.photographs_k) == [1]
    _synthesize_and_show(state, rng, [20], [15.0], [1.0], 2, 2, 3)
    state.ingest("responses", responses(4, 11, [20, 20], np.array([[14, 0], [18, 0]], float), TWO))
    assert np.isnan(state.view().synthesized["interval_hz"][3])
    # 21 more images, measured twice: with the 3 measured before, k is the ⌈25 · 0.95⌉ = 24th smallest
    # of 24 scaled misses, the largest: 21 Hz over √(1² + 1²)
    many = np.arange(30, 51)
    _synthesize_and_show(state, rng, many, np.full(21, 20.0), np.full(21, 1.0), 2, 3, 5)
    measured = 20.0 + np.arange(1.0, 22.0)  # misses 1…21 Hz; trials ± 1 Hz: each mean's se 1 Hz
    trials = np.repeat(measured, 2)[:, None] + np.tile([-1.0, 1.0], 21)[:, None] * np.array([[1.0, 0.0]])
    state.ingest("responses", responses(6, 13, np.repeat(many, 2), trials, TWO))
    _synthesize_and_show(state, rng, [60], [25.0], [3.0], 2, 4, 7)
    s = state.view().synthesized
    later = s["interval_sds"][s["iteration"] == 4]
    np.testing.assert_allclose(later, 21.0 / np.sqrt(2))


def test_max_images_are_promised_their_prediction_times_their_models_top_ratio(rng):
    state = MonitorState()
    state.ingest("model_events", msg.ModelUpdated(version=1, metrics={"heldout_top_ratio": 0.5}))
    for hostile in (float("inf"), float("nan"), -2.0, 0.0):  # not a ratio: ignored
        state.ingest("model_events", msg.ModelUpdated(version=2, metrics={"heldout_top_ratio": hostile}))
    assert list(state.synth.top_ratios) == [1]
    # version 1: three "max" images and a rate image, promised before and after they are shown
    _synthesize_and_show(
        state, rng, np.arange(10, 14), [10.0, 20.0, 30.0, 12.0], np.ones(4), 1, 1, 1, [np.nan] * 3 + [12.0]
    )
    np.testing.assert_allclose(state.view().synthesized["promised_hz"], [5.0, 10.0, 15.0, 12.0])
    state.ingest("responses", responses(2, 0, np.arange(10, 14), np.full((4, 2), 40.0), TWO))
    np.testing.assert_allclose(state.view().synthesized["promised_hz"], [5.0, 10.0, 15.0, 12.0])
    # version 2 recorded no usable ratio: its "max" image is promised its prediction
    _synthesize_and_show(state, rng, [20, 21], [100.0, 30.0], [1.0, 1.0], 2, 2, 3, [np.nan, 30.0])
    np.testing.assert_allclose(state.view().synthesized["promised_hz"][4:], [100.0, 30.0])


def test_hostile_rates_and_spreads_give_no_bar_and_no_warning(rng):
    state = MonitorState()
    state.ingest("model_events", msg.ModelUpdated(version=1, metrics={"heldout_interval_sds": 1e308}))
    _synthesize_and_show(state, rng, [0, 1], [1e300, 5.0], [1e300, np.inf], 1, 1, 0)
    rates = np.array([[1e200, 0.0], [1e300, 0.0], [np.inf, 0.0], [-1e308, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the sums of squares, variances and half-widths stay quiet
        warnings.filterwarnings("ignore", "overflow encountered in cast")  # the per-trial plot's float32 copy
        state.ingest("responses", responses(1, 0, [0, 0, 1, 1], rates, TWO))
        s = state.view().synthesized
    assert not np.isfinite(s["interval_hz"]).any()  # an infinite or unknown half-width is never drawn
