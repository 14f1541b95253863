"""The simulated multielectrode array: it sees what the presenter shows and spikes like V1.

It subscribes to the presenter's `StimulusShown` reports.  Each report becomes a trial
on the array's own acquisition clock (0 at setup; the runner aligns by photodiode,
never by wall clock):

- a photodiode `SyncEvent` (``photodiode_line``, state 1) at the onset, which is the
  flip plus ``photodiode_lag_s``, and state 0 at the offset (``n_frames / refresh_hz``
  later);
- the brain's response to the image, from the onset until it has died away or the next
  onset (a trial ends where the next begins, as in `SimulatedV1.sample_spike_times`);
- spontaneous Poisson activity everywhere else, continuously.

Flip times are on the presenter's clock.  The first report anchors it to ours (its
onset is "now"); later onsets keep the presenter's intervals exactly.  An onset that
would fall in the already-published past (a late report) is moved to the present and
the anchor with it (counted as ``late_onsets``).

Reports and images are checked first (`StimulusGuard`): a flip time that goes
backwards or jumps ahead by more than an hour, a frame count outside
``1..max_frames``, and images of the wrong size, not finite or outside [0, 1] are
refused and counted (``input_stats``); the array keeps running.

Pixels: `StimulusShown` carries only the stimulus id.  Images come from ``images``
(a library indexed by stimulus id) and from the pixels of `BlockRequest` messages on
``block_endpoint`` (synthesized images), cached by id; an id found in neither is shown
as mean grey (counted as ``unknown_stimuli``, logged).

Time: with ``speed > 0`` the acquisition clock runs at ``speed`` × wall time and spikes
are published once the clock has passed them by ``emit_delay_s`` (room for the report's
transport jitter).  With ``speed == 0`` (as fast as possible) the clock is advanced by
the reports: each one releases everything up to its offset plus ``hold_s``.

Brains (`BrainSpec`): a ground-truth population from a scenario YAML, any
``module:callable`` brain (recorded as the plugin family does, `closedloop.sim.plugin`) or
a digital twin (`closedloop.acquisition.twin`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np

from closedloop.acquisition.base import AcquisitionAdapter, Acquired, PlaybackClock
from closedloop.acquisition.openephys_broadcast import EventBroadcaster, gui_layout
from closedloop.acquisition.stimulus_guard import StimulusGuard
from closedloop.acquisition.spike_sources import GroundTruthSource, SpikeSource, spontaneous_spikes
from closedloop.acquisition.twin import DigitalTwin
from closedloop.config.rig import PHOTODIODE_LINE
from closedloop.errors import ClosedLoopError
from closedloop.messages import BlockRequest, BlockStatus, Heartbeat, Responses, StimulusShown
from closedloop.paths import shipped_file
from closedloop.sim.archive_spec import PHOTODIODE_LAG_S
from closedloop.sim.brain import check_brain, load_brain
from closedloop.sim.population import SimulatedV1
from closedloop.sim.spec import PopulationSpec
from closedloop.sim.scenario import load_scenario
from closedloop.transport import Subscriber
from closedloop.transport.receiver import RateLimitedLog

logger = logging.getLogger(__name__)

#: Spontaneous activity is drawn this far ahead of the publication horizon, in one go.
FILL_AHEAD_S = 0.05
#: Longest stimulus a protocol may ask for (its timing.stimulus_ms is at most 60 000).
MAX_STIMULUS_S = 60.0
#: At full speed, a long pause between reports is simulated and published in pieces this long.
GAP_CHUNK_S = 10.0


@dataclass(frozen=True)
class BrainSpec:
    """Which brain the array simulates (plain data, so the array pickles into a process).

    Attributes
    ----------
    kind
        ``"population"``: a `SimulatedV1` from ``scenario`` (``n_units``/``seed`` override
        it); ``"callable"``: ``target`` = ``"module:callable"``, its time courses and noise
        drawn with ``seed``; ``"twin"``: a digital twin of ``archive`` fitted as ``checkpoint``.
    import_path
        Folders searched first when importing a callable brain's module.
    size_px
        Side of the presented images (a callable brain is shown them at this size).
    """

    kind: Literal["population", "callable", "twin"] = "population"
    scenario: str | None = None
    n_units: int | None = None
    seed: int | None = None
    target: str | None = None
    checkpoint: str | None = None
    archive: str | None = None
    import_path: tuple[str, ...] = ()
    size_px: int = 66

    def build(self) -> SpikeSource:
        """The spike source this spec names (imports and loads what it needs)."""
        if self.kind == "population":
            spec = load_scenario(shipped_file(self.scenario)) if self.scenario else None
            return GroundTruthSource(SimulatedV1(spec, n_units=self.n_units, seed=self.seed))
        if self.kind == "callable":
            if not self.target:
                raise ClosedLoopError("brain kind 'callable' needs target: 'package.module:callable'")
            return GroundTruthSource(self._callable_population())
        if self.kind == "twin":
            if not (self.checkpoint and self.archive):
                raise ClosedLoopError("brain kind 'twin' needs checkpoint: MODEL.pt and archive: RECORDING")
            return DigitalTwin.from_files(self.checkpoint, self.archive).source()
        raise ClosedLoopError(f"brain kind must be population, callable or twin, got {self.kind!r}")

    def _callable_population(self) -> SimulatedV1:
        """A ``module:callable`` brain as the plugin family records it in an archive.

        So a lab's brain spikes alike in a live session and in a recording: the default
        scenario's time courses and trial-to-trial noise around its own window rates.
        Without a rig seed, seed 0 draws those, so every build is the same brain.
        """
        assert self.target is not None  # checked by build
        # imports it (from import_path first) and checks it; the population then finds it imported
        brain = load_brain(self.target, probe_size_px=self.size_px, import_path=self.import_path)
        n_units = check_brain(brain, name=self.target, probe_size_px=self.size_px)
        # the brain sees the whole image; the aperture only has to fit a small one
        aperture = min(PopulationSpec.aperture_diameter_px, float(self.size_px))
        spec = PopulationSpec(
            family="plugin", brain=self.target, n_units=n_units, size_px=self.size_px, aperture_diameter_px=aperture
        )
        return SimulatedV1(spec, seed=0 if self.seed is None else self.seed)


#: What else the runner publishes on the stream its block requests come on: read and passed over.
_RUNNER_NEWS = (Responses, BlockStatus, Heartbeat)


class SimulatedArray(AcquisitionAdapter):
    """A simulated array driven by `StimulusShown` reports (see module notes).

    Parameters
    ----------
    endpoint
        Where the spike stream (SpikeBatch, SyncEvent, Heartbeat) is published.
    stimulus_endpoint
        The presenter's PUB endpoint (connected to).
    brain
        Which brain to simulate.
    speed
        1 = real time, N = N× faster, 0 = as fast as possible.
    refresh_hz
        Display refresh rate: a stimulus lasts ``n_frames / refresh_hz``.
    images
        Optional (n, H, W) stimulus library in [0, 1], indexed by stimulus id.
    block_endpoint
        Optional runner PUB endpoint whose `BlockRequest` pixels are cached by id.
    openephys_endpoint
        Optional endpoint where everything is *also* broadcast in the Open Ephys Event
        Broadcaster format, with ``sample_rate_hz``; ``openephys_layout`` ``"gui"`` sends
        two streams as a GUI does (`closedloop.acquisition.openephys_broadcast.gui_layout`).
    seed
        Seeds the spikes (the population has its own seed in ``brain``).
    max_frames
        Most frames a report may say a stimulus was shown for (default: 60 s of frames);
        reports beyond it are refused.
    """

    def __init__(
        self,
        endpoint: str,
        stimulus_endpoint: str,
        brain: BrainSpec,
        *,
        name: str = "sim-array",
        speed: float = 1.0,
        refresh_hz: float = 60.0,
        photodiode_line: int = PHOTODIODE_LINE,
        photodiode_lag_s: float = PHOTODIODE_LAG_S,
        emit_delay_s: float = 0.02,
        hold_s: float = 0.15,
        images: np.ndarray | None = None,
        block_endpoint: str | None = None,
        openephys_endpoint: str | None = None,
        sample_rate_hz: float = 30000.0,
        openephys_layout: str = "plain",
        seed: int | None = None,
        max_frames: int | None = None,
        **adapter_options,
    ):
        adapter_options.setdefault("lossless", speed == 0)
        super().__init__(name, endpoint, **adapter_options)
        self.clock = PlaybackClock(speed)
        if refresh_hz <= 0 or photodiode_lag_s < 0 or emit_delay_s < 0 or hold_s < 0:
            raise ValueError("refresh_hz must be > 0 and photodiode_lag_s, emit_delay_s, hold_s >= 0")
        self.stimulus_endpoint = stimulus_endpoint
        self.brain = brain
        self.refresh_hz = float(refresh_hz)
        self.photodiode_line = int(photodiode_line)
        self.photodiode_lag_s = float(photodiode_lag_s)
        self.emit_delay_s = float(emit_delay_s)
        self.hold_s = float(hold_s)
        self.images = None if images is None else np.asarray(images)
        self.block_endpoint = block_endpoint
        self.openephys_endpoint = openephys_endpoint
        self.sample_rate_hz = float(sample_rate_hz)
        self.openephys_layout = openephys_layout
        if seed is None:
            entropy = np.random.SeedSequence().entropy
            assert isinstance(entropy, int)  # a fresh SeedSequence draws one int from the OS
            seed = int(entropy % 2**32)
        self.seed = int(seed)
        self.max_frames = int(MAX_STIMULUS_S * self.refresh_hz) if max_frames is None else int(max_frames)
        self.counts = {
            "stimuli": 0,
            "late_onsets": 0,
            "unknown_stimuli": 0,
            "cached_images": 0,
            "unexpected_messages": 0,
        }

    # --- lifecycle -------------------------------------------------------------

    def open(self) -> None:
        self.source: SpikeSource = self.brain.build()
        self.rng = np.random.default_rng(self.seed)
        self._pixels: dict[int, np.ndarray] = {}
        self._offset: float | None = None  # acquisition time − flip time
        self._released = 0.0  # everything before this has been published
        self._filled = 0.0  # every spike before this has been drawn
        self._target = 0.0  # speed 0: how far the reports so far let the clock run
        self._units = np.zeros(0, dtype=np.int32)
        self._times = np.zeros(0, dtype=np.float64)
        self._sync: list[tuple[int, int, float]] = []
        self._warn = RateLimitedLog(logger, 2.0)
        size = self.brain.size_px if self.images is None else self.images.shape[-1]
        self.guard = StimulusGuard(size, self.max_frames)
        self.stimuli = Subscriber(self.stimulus_endpoint, name=f"{self.name} stimuli")
        self.blocks = Subscriber(self.block_endpoint, name=f"{self.name} blocks") if self.block_endpoint else None
        layout = gui_layout(self.source.channels) if self.openephys_layout == "gui" else None
        self.broadcaster = (
            EventBroadcaster(self.openephys_endpoint, self.sample_rate_hz, self.source.channels, layout=layout)
            if self.openephys_endpoint
            else None
        )
        self.clock.start()

    def close(self) -> None:
        for name in ("stimuli", "blocks", "broadcaster"):
            part = getattr(self, name, None)
            if part is not None:
                part.close()

    def input_stats(self) -> dict[str, int]:
        stats = dict(self.counts)
        stimuli = getattr(self, "stimuli", None)
        if stimuli is not None:
            stats.update({f"stimulus_{k}": v for k, v in stimuli.stats.as_dict().items()})
        guard = getattr(self, "guard", None)
        if guard is not None:
            stats.update(guard.counts.as_dict())
        return stats

    # --- one step --------------------------------------------------------------

    def acquire(self) -> Acquired:
        if self.blocks is not None:
            for decoded in self.blocks.drain(100):
                if isinstance(decoded.message, BlockRequest):
                    self._cache_block(decoded.message)
                elif not isinstance(decoded.message, _RUNNER_NEWS):
                    self._unexpected(decoded.message, "BlockRequest")
        got = self.stimuli.recv(2)
        while got is not None:
            if isinstance(got.message, StimulusShown):
                self._report(got.message)
            else:
                self._unexpected(got.message, "StimulusShown")
            got = self.stimuli.recv(0)
        if self.clock.speed > 0:
            horizon = self.clock.now_s() - self.emit_delay_s
            if horizon > self._released:
                self._fill_spontaneous(horizon + FILL_AHEAD_S)
        else:  # as fast as possible: the reports move the clock
            horizon = self._target
            self._fill_spontaneous(horizon)
        return self._release(horizon)

    def _cache_block(self, request: BlockRequest) -> None:
        refused = self.guard.counts.bad_images + self.guard.counts.cache_full
        for stimulus_id, image in self.guard.block_images(request):
            if stimulus_id in self._pixels:
                self.guard.forget(self._pixels[stimulus_id])
            self._pixels[stimulus_id] = image
        self.counts["cached_images"] = len(self._pixels)
        refused = self.guard.counts.bad_images + self.guard.counts.cache_full - refused
        if refused:
            self._warn.warning(
                "images",
                "%s: block %d: refused %d image(s) (wrong size, not finite, outside [0, 1] or cache full); %s",
                self.name,
                request.block,
                refused,
                self.guard.counts.as_dict(),
            )

    def _unexpected(self, message: object, expected: str) -> None:
        self.counts["unexpected_messages"] += 1
        self._warn.warning(
            "unexpected",
            "%s: ignored a %s where %s messages come; %d so far",
            self.name,
            type(message).__name__,
            expected,
            self.counts["unexpected_messages"],
        )

    def _report(self, shown: StimulusShown) -> None:
        verdict = self.guard.check_shown(shown)
        if not verdict.accepted:
            self._warn.warning(
                "report",
                "%s: refused a report of stimulus %d (trial %d, block %d): %s; %s",
                self.name,
                shown.stimulus_id,
                shown.trial,
                shown.block,
                verdict.reason,
                self.guard.counts.as_dict(),
            )
            return
        if verdict.reanchor:
            logger.warning("%s: the presenter's clock restarted; trials are placed from now on", self.name)
            self._offset = None
        self._start_trial(shown)

    def _image(self, stimulus_id: int) -> np.ndarray:
        if stimulus_id in self._pixels:
            return self._pixels[stimulus_id]
        if self.images is not None and 0 <= stimulus_id < len(self.images):
            return self.images[stimulus_id]
        self.counts["unknown_stimuli"] += 1
        self._warn.warning(
            "unknown",
            "%s: no pixels for stimulus %d (not in the library nor in a BlockRequest); showing mean grey; %d so far",
            self.name,
            stimulus_id,
            self.counts["unknown_stimuli"],
        )
        size = self.brain.size_px if self.images is None else self.images.shape[-1]
        return np.full((size, size), 0.5, dtype=np.float32)

    def _start_trial(self, shown: StimulusShown) -> None:
        self.counts["stimuli"] += 1
        present = self._released if self.clock.speed == 0 else max(self._released, self.clock.now_s())
        if self._offset is None:
            self._offset = present - shown.flip_time
        onset = shown.flip_time + self._offset + self.photodiode_lag_s
        if onset < self._released:
            self.counts["late_onsets"] += 1
            self._warn.warning(
                "late",
                "%s: stimulus %d reported %.1f ms after its onset was published; moved to now (%d late so far)",
                self.name,
                shown.stimulus_id,
                1000 * (self._released - onset),
                self.counts["late_onsets"],
            )
            self._offset += self._released - onset
            onset = self._released
        duration = max(shown.n_frames, 1) / self.refresh_hz
        # The previous trial ends here: drop what was drawn for after this onset.
        keep = self._times < onset
        self._units, self._times = self._units[keep], self._times[keep]
        self._sync = [(line, state, min(t, onset)) for line, state, t in self._sync]
        if self.clock.speed == 0:
            self._publish_gap(onset)
        if self._filled < onset:
            self._fill_spontaneous(onset)
        units, times, span = self.source.trial(self._image(shown.stimulus_id), duration, self.rng)
        self._add(units, onset + times)
        self._filled = onset + span
        self._sync += [(self.photodiode_line, 1, onset), (self.photodiode_line, 0, onset + duration)]
        self._target = max(self._target, onset + duration + self.hold_s)

    def _publish_gap(self, until: float) -> None:
        """Publish a long pause before ``until`` piece by piece: memory stays bounded however long it is."""
        while until - self._filled > GAP_CHUNK_S:
            self._fill_spontaneous(self._filled + GAP_CHUNK_S)
            self.publish(self._release(self._filled))

    def _fill_spontaneous(self, until: float) -> None:
        if until <= self._filled:
            return
        units, times = spontaneous_spikes(self.source.spontaneous_hz, self._filled, until, self.rng)
        self._add(units, times)
        self._filled = until

    def _add(self, units: np.ndarray, times: np.ndarray) -> None:
        self._units = np.concatenate([self._units, units.astype(np.int32)])
        self._times = np.concatenate([self._times, times])
        order = np.argsort(self._times, kind="stable")
        self._units, self._times = self._units[order], self._times[order]

    def _release(self, until: float) -> Acquired:
        if until <= self._released:
            return Acquired()
        n = int(np.searchsorted(self._times, until, side="left"))
        units, times = self._units[:n], self._times[:n]
        self._units, self._times = self._units[n:], self._times[n:]
        due = sorted((e for e in self._sync if e[2] < until), key=lambda e: (e[2], e[1]))
        self._sync = [e for e in self._sync if e[2] >= until]
        self._released = until
        if self.broadcaster is not None:
            self.broadcaster.send(units, times, due)
        return Acquired(
            unit_ids=self.source.unit_ids[units], times=times, channels=self.source.channels[units], sync=due
        )
