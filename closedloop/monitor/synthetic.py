"""A realistic synthetic closed-loop stream, for the monitor's demo, screenshot and tests.

A seeded `SimulatedV1` population plays the brain: natural-image blocks, refits whose
predictions are the population's true expected rates blurred by noise that shrinks
with every model version, synthesis that picks, from a pool of candidate images, the
one the model predicts closest to each target, and the presentation of those images.
Every message is one the runner, model server, presenter or acquisition would publish
on its stream, in the order they would.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np

from closedloop.config.rig import PHOTODIODE_LINE
from closedloop.data.responses import counts_to_rates, window_counts_from_spike_times
from closedloop.messages import types as msg
from closedloop.messages.base import Message
from closedloop.model.metrics import heldout_interval_sds
from closedloop.sim.archive_spec import RESPONSE_WINDOW_S
from closedloop.sim.photographs import natural_images
from closedloop.sim.population import SimulatedV1
from closedloop.sim.spec import PopulationSpec
from closedloop.transport import Publisher

STIMULUS_S, TRIAL_S = 0.1, 0.3
PERCENTILES = (20, 35, 50, 65, 80)


class SyntheticSession:
    """Messages of a simulated closed-loop session, as (stream name, message) pairs.

    Parameters
    ----------
    n_units, n_images, repeats, iterations, synth_units, seed
        Population size, natural images per block, repeats per block, loop
        iterations, units driven per synthesis, and the seed of everything.
    n_candidates
        Images synthesis picks from.
    """

    def __init__(
        self,
        *,
        n_units: int = 60,
        n_images: int = 40,
        repeats: int = 2,
        iterations: int = 3,
        synth_units: int = 4,
        seed: int = 0,
        n_candidates: int = 150,
    ):
        self.population = SimulatedV1(PopulationSpec(), n_units=n_units, seed=seed)
        self.rng = np.random.default_rng(seed)
        self.n_images, self.repeats, self.iterations, self.synth_units = n_images, repeats, iterations, synth_units
        size = self.population.size_px
        self.n_candidates = n_candidates
        self.pool = natural_images(
            n_images * (iterations + 1) + n_candidates, size_px=size, aperture_diameter_px=size - 6, seed=seed
        )
        self.truth = self.population.expected_rates(self.pool)
        self.images: dict[int, np.ndarray] = {}
        self.measured: dict[int, list[np.ndarray]] = {}
        self.clock, self.trial, self.block, self.version = 1.0, 0, 0, 0

    def messages(self) -> Iterator[tuple[str, Message]]:
        """Every message of the session, in order."""
        yield from self._present("natural", self._new_stimuli(range(self.n_images)))
        yield from self._fit()
        for iteration in range(1, self.iterations + 1):
            first = iteration * self.n_images
            naturals = self._new_stimuli(range(first, first + self.n_images))
            yield "model_events", self._predictions(naturals)
            yield from self._present("natural", naturals, iteration)
            yield from self._synthesize(self._synthesis_units(), iteration)
            yield from self._fit(iteration)

    # ----------------------------------------------------------------- pieces
    def _new_stimuli(self, pool_indices) -> np.ndarray:
        ids = []
        for index in pool_indices:
            stimulus_id = len(self.images)
            self.images[stimulus_id] = np.asarray(index)
            ids.append(stimulus_id)
        return np.array(ids, dtype=np.int64)

    def _pixels(self, ids: np.ndarray) -> np.ndarray:
        return self.pool[[int(self.images[i]) for i in ids]]

    def _noise(self, version: int) -> np.ndarray:
        """Per unit: the sd of model ``version``'s error (sent as the ensemble's spread too)."""
        return self.truth.std(axis=0) * 1.5 / version

    def _model(self, ids: np.ndarray, version: int) -> np.ndarray:
        truth = self.truth[[int(self.images[i]) for i in ids]]
        noise = self._noise(version)
        rng = np.random.default_rng([version, *ids[:1].tolist()])
        return np.maximum(0.0, 0.9 * truth + 1.0 + noise * rng.standard_normal(truth.shape))

    def _predictions(self, ids: np.ndarray) -> msg.Predictions:
        return msg.Predictions(
            rates=self._model(ids, max(self.version, 1)),
            unit_ids=self.population.unit_ids,
            model_version=self.version,
            stimulus_ids=ids,
        )

    def _heldout(self) -> np.ndarray:
        ids = np.array(sorted(self.measured))
        measured = np.array([np.mean(self.measured[i], axis=0) for i in ids])
        predicted = self._model(ids, self.version)
        return np.array([np.corrcoef(measured[:, u], predicted[:, u])[0, 1] for u in range(measured.shape[1])])

    def _interval_sds(self) -> float:
        """The 95 % interval factor of the current model on the images measured so far (a real fit
        uses the images it held out)."""
        ids = np.array(sorted(self.measured))
        trials = np.full((ids.size, max(len(self.measured[i]) for i in ids), self.population.n_units), np.nan)
        for row, stimulus in enumerate(ids.tolist()):
            trials[row, : len(self.measured[stimulus])] = self.measured[stimulus]
        predicted = self._model(ids, self.version)
        spread = np.broadcast_to(self._noise(self.version), predicted.shape)
        return heldout_interval_sds(predicted, spread, trials)

    def _synthesis_units(self) -> np.ndarray:
        """The best-fitted units among the more active half (low rates make coarse targets)."""
        means = np.mean([np.mean(v, axis=0) for v in self.measured.values()], axis=0)
        active = means >= np.median(means)
        score = np.where(active, np.nan_to_num(self._heldout(), nan=-1.0), -2.0)
        return self.population.unit_ids[np.argsort(-score)[: self.synth_units]]

    def _present(self, kind: str, ids: np.ndarray, iteration: int = 0) -> Iterator[tuple[str, Message]]:
        population, block = self.population, self.block
        yield (
            "responses",
            msg.BlockRequest(
                block=block, kind=kind, stimulus_ids=ids, repeats=self.repeats, image_ids=ids, pixels=self._pixels(ids)
            ),
        )
        yield "responses", msg.BlockStatus(block=block, kind=kind, state="started", iteration=iteration)
        order = np.concatenate([self.rng.permutation(ids) for _ in range(self.repeats)])
        onsets = self.clock + np.arange(order.size) * TRIAL_S
        t_stop = onsets[-1] + TRIAL_S
        units, times = population.sample_spike_times(
            self._pixels(order), onsets - self.clock, duration_s=STIMULUS_S, t_stop_s=t_stop - self.clock, rng=self.rng
        )
        times = times + self.clock
        spike_units = population.unit_ids[units]
        for k, (stimulus, onset) in enumerate(zip(order, onsets)):
            dropped = int(self.rng.random() < 0.02)
            yield (
                "stimulus",
                msg.StimulusShown(
                    stimulus_id=int(stimulus),
                    trial=self.trial + k,
                    block=block,
                    flip_time=float(onset) - 0.012,
                    n_frames=6,
                    dropped_frames=dropped,
                ),
            )
            yield "spikes", msg.SyncEvent(line=PHOTODIODE_LINE, state=1, time=float(onset))
            yield "spikes", msg.SyncEvent(line=PHOTODIODE_LINE, state=0, time=float(onset) + STIMULUS_S)
            inside = (times >= onset) & (times < onset + TRIAL_S)
            yield "spikes", msg.SpikeBatch(unit_ids=spike_units[inside], times=times[inside])
        counts = window_counts_from_spike_times(spike_units, times, onsets, RESPONSE_WINDOW_S, population.unit_ids)
        rates = counts_to_rates(counts, RESPONSE_WINDOW_S).astype(np.float64)
        for stimulus, row in zip(order.tolist(), rates):
            self.measured.setdefault(stimulus, []).append(row)
        yield (
            "responses",
            msg.Responses(
                block=block,
                trial_ids=self.trial + np.arange(order.size),
                stimulus_ids=order,
                rates=rates,
                unit_ids=population.unit_ids,
            ),
        )
        yield (
            "responses",
            msg.BlockStatus(block=block, kind=kind, state="finished", iteration=iteration, n_trials=order.size),
        )
        self.trial += order.size
        self.block += 1
        self.clock = t_stop + 0.5

    def _fit(self, iteration: int = 0) -> Iterator[tuple[str, Message]]:
        yield "responses", msg.BlockStatus(block=self.block, kind="fit", state="started", iteration=iteration)
        self.version += 1
        r = self._heldout()
        yield (
            "model_events",
            msg.ModelUpdated(
                version=self.version,
                unit_ids=self.population.unit_ids,
                heldout_r=r,
                metrics={
                    "r_mean": float(np.nanmean(r)),
                    "r_median": float(np.nanmedian(r)),
                    "r_over_rmax_mean": float("nan"),
                    "n_images": len(self.measured),
                    "n_trials": self.trial,
                    "n_units": self.population.n_units,
                    "fit_seconds": 1.0,
                    "block": self.block,
                    "heldout_interval_sds": self._interval_sds(),
                },
            ),
        )
        yield "model_events", self._predictions(np.array(sorted(self.measured), dtype=np.int64))
        yield "responses", msg.BlockStatus(block=self.block, kind="fit", state="finished", iteration=iteration)
        self.block += 1

    def _synthesize(self, units: np.ndarray, iteration: int) -> Iterator[tuple[str, Message]]:
        yield "responses", msg.BlockStatus(block=self.block, kind="synthesize", state="started", iteration=iteration)
        self.block += 1
        candidates = np.arange(len(self.pool) - self.n_candidates, len(self.pool))
        candidate_ids = self._new_stimuli(candidates)
        predicted = self._model(candidate_ids, self.version)
        means = np.array([np.mean(v, axis=0) for v in self.measured.values()])
        unit_of, targets, picks = [], [], []
        for unit in units:
            column = int(np.flatnonzero(self.population.unit_ids == unit)[0])
            for target in np.percentile(means[:, column], PERCENTILES):
                unit_of.append(unit)
                targets.append(target)
                picks.append(int(np.argmin(np.abs(predicted[:, column] - target))))
        for stimulus in candidate_ids:  # only the picked candidates become stimuli
            del self.images[int(stimulus)]
        picked = self._new_stimuli(candidates[picks])
        columns = [int(np.flatnonzero(self.population.unit_ids == u)[0]) for u in unit_of]
        achieved = predicted[picks, columns]
        yield (
            "model_events",
            msg.SynthesizeResult(
                unit_ids=np.array(unit_of),
                targets=np.array(targets),
                images=self._pixels(picked),
                achieved=achieved,
                model_version=self.version,
                seed=iteration,
                spread=self._noise(self.version)[columns],
            ),
        )
        yield "model_events", self._predictions(picked)
        yield from self._present("present_synthesized", picked, iteration)


class SyntheticPublisher:
    """Publish a `SyntheticSession` on four PUB sockets from a thread.

    Parameters
    ----------
    endpoints
        Stream name → endpoint to bind (``tcp://127.0.0.1:*`` picks a port; see
        ``self.endpoints`` after construction for the ones bound).
    session
        What to publish.
    trials_per_s
        Pace (0 = as fast as the subscriber can take it without the publisher dropping).
    """

    def __init__(
        self, endpoints: dict[str, str], session: SyntheticSession, *, trials_per_s: float = 0.0, context=None
    ):
        sources = {
            "responses": "runner",
            "model_events": "model-server",
            "stimulus": "presenter",
            "spikes": "acquisition",
        }
        self.publishers = {
            name: Publisher(endpoint, source=sources[name], session="synthetic", context=context)
            for name, endpoint in endpoints.items()
        }
        self.endpoints = {name: p.endpoint for name, p in self.publishers.items()}
        self.session = session
        self.trials_per_s = float(trials_per_s)
        self.sent = 0
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="synthetic-publisher", daemon=True)

    def start(self, delay_s: float = 0.3) -> SyntheticPublisher:
        """Start publishing after ``delay_s`` (subscribers need a moment to connect)."""
        self._delay_s = delay_s
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        for publisher in self.publishers.values():
            publisher.close()

    def _run(self) -> None:
        self._stop.wait(self._delay_s)
        pause = 1.0 / self.trials_per_s if self.trials_per_s > 0 else 0.0
        for stream, message in self.session.messages():
            if self._stop.is_set():
                break
            self.publishers[stream].send(message)
            self.sent += 1
            if isinstance(message, msg.StimulusShown):
                # even "as fast as possible" yields now and then, so a subscriber keeps up
                self._stop.wait(pause if pause else (0.001 if self.sent % 20 == 0 else 0))
        self.done.set()
