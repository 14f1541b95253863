"""Acquisition from Lab Streaming Layer: a sorted-spike stream and a photodiode/TTL marker stream.

``acquisition.kind: lsl`` reads two LSL streams, found on the network by name:

- ``spike_stream``: one sample per spike, channel 0 = the unit id (an integer), the
  sample's LSL timestamp = the spike's time (irregular rate, numeric channel format);
- ``marker_stream``: one sample per photodiode/TTL edge, either one channel (the state,
  1/0, on the rig's ``photodiode_line``) or two (line, state); numeric or string
  (``"1"``/``"0"``) channels.

LSL stamps each sample with its sender's ``local_clock``; the inlets apply pylsl's clock
offsets (``proc_clocksync``: liblsl measures the offset to this machine continually), so
both streams arrive on this machine's LSL clock, which is the session clock.  A sample
that is not a valid spike or edge is counted and logged (rate-limited), never fatal.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from closedloop.acquisition.base import Acquired, AcquisitionAdapter
from closedloop.errors import ClosedLoopError
from closedloop.transport.receiver import RateLimitedLog

logger = logging.getLogger(__name__)

#: Unit ids must survive a float64 channel format exactly.
MAX_UNIT_ID = 2**53
SAMPLES_PER_PULL = 20_000
COUNTERS = ("spikes", "edges", "bad_spike", "bad_marker", "late")


def load_pylsl():
    """The pylsl module, or a `ClosedLoopError` saying how to get it."""
    try:
        import pylsl

        pylsl.local_clock()  # loads liblsl
    except (ImportError, RuntimeError, OSError) as error:
        raise ClosedLoopError(
            f"acquisition.kind lsl needs pylsl with its liblsl ({type(error).__name__}: {error}); "
            "install it with: pip install 'closedloop[lsl]'"
        ) from None
    return pylsl


class LslAdapter(AcquisitionAdapter):
    """Translate an LSL spike stream and marker stream into SpikeBatch / SyncEvent.

    Parameters
    ----------
    endpoint
        Where our spike stream is published.
    spike_stream, marker_stream
        LSL stream names (see module notes).
    photodiode_line
        The line one-channel markers are on.
    resolve_timeout_s
        How long `open` looks for each stream before failing with what to check.
    """

    def __init__(
        self,
        endpoint: str,
        spike_stream: str,
        marker_stream: str,
        *,
        photodiode_line: int = 1,
        resolve_timeout_s: float = 10.0,
        name: str = "lsl",
        **adapter_options,
    ):
        super().__init__(name, endpoint, **adapter_options)
        self.spike_stream, self.marker_stream = spike_stream, marker_stream
        self.photodiode_line = int(photodiode_line)
        self.resolve_timeout_s = float(resolve_timeout_s)
        self.counts = dict.fromkeys(COUNTERS, 0)
        self._warn = RateLimitedLog(logger, 2.0)
        # pylsl.StreamInlet each, once open (pylsl has no type information).
        self.spikes: Any | None = None
        self.markers: Any | None = None

    @classmethod
    def from_rig(cls, rig, endpoint: str, **options) -> LslAdapter:
        """The adapter an ``lsl`` rig file describes, publishing on ``endpoint``."""
        acquisition = rig.acquisition
        return cls(
            endpoint,
            acquisition.spike_stream,
            acquisition.marker_stream,
            photodiode_line=acquisition.photodiode_line,
            resolve_timeout_s=acquisition.resolve_timeout_s,
            **options,
        )

    def open(self) -> None:
        pylsl = load_pylsl()
        self.spikes = self._inlet(pylsl, self.spike_stream, "spike_stream")
        self.markers = self._inlet(pylsl, self.marker_stream, "marker_stream")

    def _inlet(self, pylsl, stream: str, key: str):
        found = pylsl.resolve_byprop("name", stream, minimum=1, timeout=self.resolve_timeout_s)
        if not found:
            raise ClosedLoopError(
                f"no LSL stream named {stream!r} on the network within {self.resolve_timeout_s:g} s: "
                f"start its outlet, or check the rig's acquisition.{key}"
            )
        info = found[0]
        logger.info(
            "%s: %s = LSL stream %r (%s, %d channel(s), from %s)",
            self.name,
            key,
            stream,
            info.type(),
            info.channel_count(),
            info.hostname(),
        )
        inlet = pylsl.StreamInlet(info, max_buflen=60, processing_flags=pylsl.proc_clocksync)
        inlet.open_stream(timeout=self.resolve_timeout_s)
        return inlet

    def close(self) -> None:
        for inlet in (self.spikes, self.markers):
            if inlet is not None:
                inlet.close_stream()

    def input_stats(self) -> dict[str, int]:
        return dict(self.counts)

    def acquire(self) -> Acquired:
        spikes, markers = self.spikes, self.markers
        if spikes is None or markers is None:
            raise ClosedLoopError(f"{self.name}: not open (no LSL inlets)")
        units, times = self.spike_samples(*spikes.pull_chunk(timeout=0.0, max_samples=SAMPLES_PER_PULL))
        sync = self.marker_samples(*markers.pull_chunk(timeout=0.0, max_samples=SAMPLES_PER_PULL))
        if not len(times) and not sync:
            time.sleep(0.002)
        order = np.argsort(times, kind="stable")
        return Acquired(unit_ids=units[order], times=times[order], sync=sync)

    def spike_samples(self, samples: Sequence, stamps: Sequence) -> tuple[np.ndarray, np.ndarray]:
        """(unit ids, times) of the valid spike samples; the rest counted."""
        units, times = [], []
        for sample, stamp in zip(samples, stamps):
            unit = _number(sample[0] if len(sample) else None)
            if unit is None or not unit.is_integer() or not 0 <= unit < MAX_UNIT_ID or not math.isfinite(stamp):
                self._bad("bad_spike", f"spike sample {list(sample)[:2]!r} at {stamp!r} is not [unit id >= 0]")
                continue
            units.append(int(unit))
            times.append(float(stamp))
        self.counts["spikes"] += len(units)
        return np.asarray(units, dtype=np.int64), np.asarray(times, dtype=np.float64)

    def marker_samples(self, samples: Sequence, stamps: Sequence) -> list[tuple[int, int, float]]:
        """(line, state, time) of the valid marker samples; the rest counted."""
        sync = []
        for sample, stamp in zip(samples, stamps):
            values = [_number(v) for v in sample[:2]]
            if len(values) == 1:
                values = [float(self.photodiode_line), values[0]]
            line, state = values if len(values) == 2 else (None, None)
            if (
                line is None
                or state is None
                or not math.isfinite(stamp)
                or state not in (0.0, 1.0)
                or not line.is_integer()
                or not 0 <= line <= 255
            ):
                self._bad(
                    "bad_marker",
                    f"marker sample {list(sample)[:2]!r} at {stamp!r} is not [state] or [line, state] with state 1/0",
                )
                continue
            sync.append((int(line), int(state), float(stamp)))
        self.counts["edges"] += len(sync)
        return sync

    def _bad(self, kind: str, text: str) -> None:
        self.counts[kind] += 1
        self._warn.warning(kind, "%s: %s; %d %s so far", self.name, text[:160], self.counts[kind], kind)


def _number(value) -> float | None:
    """A float from a numeric or string channel value, else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return None
