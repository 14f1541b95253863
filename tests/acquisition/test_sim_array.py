"""The simulated array in its own process, over loopback TCP: photodiode edges and V1-like spikes."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from closedloop.acquisition import BrainSpec, SimulatedArray
from closedloop.messages import StimulusShown
from closedloop.runtime import Supervisor
from closedloop.sim import SimulatedV1, load_scenario, natural_images
from closedloop.sim.archive_spec import PHOTODIODE_LAG_S
from closedloop.transport import Publisher, Subscriber, free_tcp_port, random_tcp_endpoint, tcp_endpoint

from .helpers import Collected, collect, wait_for_heartbeat

BRAIN = BrainSpec(scenario="sim/default.yaml", n_units=20, seed=3)
LINE = 1


@pytest.fixture(scope="module")
def images():
    return natural_images(6, size_px=66, aperture_diameter_px=60.0, seed=1)


@pytest.fixture(scope="module")
def population():
    return SimulatedV1(load_scenario("sim/default.yaml"), n_units=20, seed=3)


def start_array(stimulus_endpoint: str, images: np.ndarray, **options):
    endpoint = random_tcp_endpoint()
    sub = Subscriber(endpoint, name="test spikes")
    array = SimulatedArray(endpoint, stimulus_endpoint, BRAIN, images=images, refresh_hz=60.0, seed=5, **options)
    supervisor = Supervisor([array], mode="process", setup_timeout_s=60)
    assert supervisor.start(), supervisor.states
    wait_for_heartbeat(sub)
    time.sleep(0.3)  # the array's SUB has connected to our stimulus PUB by now
    return supervisor, sub


def test_accelerated_trials_give_exact_onsets_and_rates_that_track_the_population(images, population):
    n_trials, period, frames = 60, 0.3, 6
    with Publisher(tcp_endpoint(), source="presenter") as presenter:
        supervisor, sub = start_array(presenter.endpoint, images, speed=0)
        try:
            for k in range(n_trials):
                presenter.send(
                    StimulusShown(stimulus_id=k % 6, trial=k, block=0, flip_time=100.0 + period * k, n_frames=frames)
                )
            got = collect(sub, lambda c: len(c.onsets(LINE, 0)) == n_trials, timeout_s=30)
        finally:
            report = supervisor.shutdown()
            sub.close()
    assert report.ok
    onsets, offsets = got.onsets(LINE, 1), got.onsets(LINE, 0)
    assert onsets[0] == pytest.approx(PHOTODIODE_LAG_S)  # the first report anchors our clock at 0
    assert np.allclose(np.diff(onsets), period, atol=1e-9)  # the presenter's intervals, exactly
    assert np.allclose(offsets - onsets, frames / 60.0, atol=1e-9)
    assert np.all(np.diff(got.stream_times) >= 0)  # one time-ordered stream
    assert (sub.stats.gaps, sub.stats.rejected) == (0, 0)

    units, times = got.unit_ids, got.times
    counts = np.zeros((n_trials, 20))
    for k, onset in enumerate(onsets):
        inside = (times >= onset + 0.05) & (times < onset + 0.10)
        counts[k] = np.bincount(units[inside] - 1, minlength=20)
    measured = np.stack([counts[np.arange(n_trials) % 6 == i].mean(axis=0) for i in range(6)]) / 0.05
    expected = population.expected_rates(images, (0.05, 0.10), frames / 60.0)
    assert np.corrcoef(measured.ravel(), expected.ravel())[0, 1] > 0.8
    assert measured.mean() == pytest.approx(expected.mean(), rel=0.2)
    # spontaneous activity between trials, at the population's spontaneous rates
    between = np.zeros(20)
    for onset in onsets[:-1]:
        inside = (times >= onset + 0.25) & (times < onset + 0.3)
        between += np.bincount(units[inside] - 1, minlength=20)
    assert between.sum() > 0


@pytest.mark.realtime
def test_real_time_stream_keeps_pace_and_also_speaks_open_ephys(images):
    """Our spikes and photodiode TTLs reach open-ephys-python-tools' EventListener."""
    streaming = pytest.importorskip("open_ephys.streaming")
    port = free_tcp_port()
    with Publisher(tcp_endpoint(), source="presenter") as presenter:
        supervisor, sub = start_array(
            presenter.endpoint, images, speed=1.0, openephys_endpoint=tcp_endpoint(port), sample_rate_hz=30000.0
        )
        listener = streaming.EventListener(ip_address="127.0.0.1", port=port)
        spikes, ttls = [], []
        thread = threading.Thread(target=listener.start, args=(ttls.append, spikes.append), daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while not spikes:  # spontaneous spikes flow all the time: wait until connected
                assert time.monotonic() < deadline, "EventListener received nothing"
                time.sleep(0.05)
            wall_start = time.monotonic()
            got = Collected()
            for k in range(3):
                presenter.send(StimulusShown(stimulus_id=k, trial=k, block=0, flip_time=time.monotonic(), n_frames=6))
                collect(sub, lambda c, k=k: len(c.onsets(LINE, 0)) == k + 1, timeout_s=10, into=got)
                time.sleep(0.25)
            last = got.onsets(LINE, 0)[-1]
            collect(sub, lambda c: len(c.times) and c.times[-1] > last + 0.3, timeout_s=10, into=got)
            wall = time.monotonic() - wall_start
            time.sleep(0.2)
        finally:
            listener.stop()
            thread.join(5)
            report = supervisor.shutdown()
            sub.close()
    assert report.ok
    onsets = got.onsets(LINE, 1)
    span = got.times[-1] - got.times[0]
    assert 0.5 * wall < span < 1.5 * wall + 0.1  # real time: acquisition seconds track wall seconds
    assert np.all(np.diff(onsets) > 0.25)
    # Open Ephys side: documented fields, our times and channels
    spike = spikes[-1]
    assert spike["event_type"] == "spike" and spike["sample_rate"] == 30000.0
    assert spike["electrode"].startswith("Electrode ") and spike["sorted_id"] >= 1
    by_sample: dict[int, set[int]] = {}  # two units can spike in the same 1/30 ms sample
    for t, c in zip(got.times, np.concatenate([b.channels for b in got.batches])):
        by_sample.setdefault(int(round(t * 30000)), set()).add(int(c) + 1)
    matched = [s for s in spikes if s["sample_number"] in by_sample]
    assert len(matched) > 0.5 * len(spikes)
    assert all(int(s["electrode"].split()[-1]) in by_sample[s["sample_number"]] for s in matched)
    rising = [t for t in ttls if t["state"] is True]  # a JSON bool, as the plugin sends it
    assert [t["line"] for t in rising] == [LINE - 1] * len(rising) and len(rising) == 3  # 0-based on the wire
    assert np.allclose([t["sample_number"] / 30000.0 for t in rising], onsets, atol=1 / 30000.0)


def test_unknown_stimulus_is_shown_grey_and_counted(images):
    with Publisher(tcp_endpoint(), source="presenter") as presenter:
        endpoint = random_tcp_endpoint()
        array = SimulatedArray(endpoint, presenter.endpoint, BRAIN, images=images, speed=0, seed=1)
        supervisor = Supervisor([array], mode="thread", setup_timeout_s=60)
        with Subscriber(endpoint, name="test") as sub:
            assert supervisor.start()
            wait_for_heartbeat(sub)
            time.sleep(0.2)
            presenter.send(StimulusShown(stimulus_id=999, trial=0, block=0, flip_time=1.0, n_frames=6))
            collect(sub, lambda c: len(c.onsets(LINE, 0)) == 1)
            supervisor.shutdown()
    assert array.counts["unknown_stimuli"] == 1 and array.counts["stimuli"] == 1
