"""A tiny simulated rig, population and protocol for the runner tests, and helpers to watch the loop."""

from __future__ import annotations

import time
from pathlib import Path

from closedloop.config import load_protocol
from closedloop.messages import BlockRequest, BlockStatus, Responses
from closedloop.runner import RunnerSettings
from closedloop.transport import Subscriber

N_UNITS = 10

SCENARIO = """\
name: runner-test
description: a few mixed units, calibrated on few images so it builds fast
population:
  n_units: {n_units}
  seed: 4
  fractions: {{simple: 0.5, complex: 0.5}}
  size_px: 66
  pixels_per_degree: 48.0
  aperture_diameter_px: 60.0
  spontaneous_hz: [2.0, 6.0]
  peak_hz: [40.0, 80.0]
  calibration_images: 48
"""

RIG = """\
name: runner-test-rig
display:
  width_px: 1920
  height_px: 1080
  width_cm: 53.1
  height_cm: 29.9
  distance_cm: 57
  refresh_hz: 60
  gamma: null
  mean_luminance: 0.5
  fullscreen: false
  photodiode: {{enabled: true, corner: bottom_left, size_px: 40}}
stimulus:
  centre_deg: [-3.0, -2.0]
  aperture_diameter_deg: 1.25
  size_px: 66
acquisition:
  kind: sim
  scenario: {scenario}
  seed: 1
  speed: 0
"""

PROTOCOL = """\
name: runner-test
seed: 3
timing:
  stimulus_ms: 100
  blank_ms: 200
response:
  window_ms: [50, 100]
images:
  source: photographs
  n: 20
  seed: 1
fit:
  max_epochs: 10
  patience: 2
synthesis:
  units:
    top_k: {top_k}
    min_heldout_r: -1.0  # these tiny fits predict poorly; the tests are about the loop, not the threshold
  targets: [p50, max]
  steps: 5
  images_per_target: 1
  seed: 4
blocks:
  - kind: natural
    images: all
    repeats: 2
  - kind: fit
  - kind: loop
    iterations: {iterations}
    blocks:
      - kind: synthesize
      - kind: present_synthesized
        repeats: 2
      - kind: fit
"""

#: Short waits so failure paths finish quickly in tests.
FAST = RunnerSettings(
    request_timeout_s=0.5,
    fit_timeout_s=10.0,
    synth_timeout_s=5.0,
    presenter_timeout_s=5.0,
    settle_s=0.2,
    startup_timeout_s=10.0,
    ping_interval_s=1.0,
)


def write_protocol(tmp_path: Path, *, top_k: int = 2, iterations: int = 1, name: str = "protocol.yaml"):
    path = tmp_path / name
    path.write_text(PROTOCOL.format(top_k=top_k, iterations=iterations))
    return load_protocol(path)


class Watcher:
    """Subscribes to the runner's PUB and keeps what it published."""

    def __init__(self, endpoint: str):
        self.sub = Subscriber(endpoint, topics=[BlockStatus, Responses, BlockRequest], name="test watcher")
        self.statuses: list[BlockStatus] = []
        self.responses: list[Responses] = []
        self.requests: list[BlockRequest] = []

    def poll(self) -> None:
        for decoded in self.sub.drain():
            message = decoded.message
            {BlockStatus: self.statuses, Responses: self.responses, BlockRequest: self.requests}[type(message)].append(
                message
            )

    def close(self) -> None:
        self.sub.close()


def wait_for(condition, timeout_s: float, poll=None) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if poll is not None:
            poll()
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
