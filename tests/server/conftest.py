"""Fixtures for the model server tests: seeded synthetic stimuli and responses, a tiny
model, and a server run by the Supervisor as a thread with a client and a subscriber."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from closedloop.data.dataset import Preprocessing
from closedloop.data.preprocess import preprocess
from closedloop.messages import FitRequest
from closedloop.model.model_config import ModelConfig
from closedloop.runtime import Supervisor
from closedloop.server import ModelServer, ServerSettings
from closedloop.transport import RequestClient, Subscriber, inproc_endpoint

SIZE_PX = 66
N_UNITS = 6
# Long counting window: trials are noisy enough to need averaging, clean enough for a tiny model.
COUNT_WINDOW_S = 0.3
UNIT_IDS = np.arange(10, 10 + N_UNITS, dtype=np.int64)
# One 5×5 conv layer, 2×2 pooling, a 16-unit dense readout: a fit of 40 images takes about a
# second on 2 idle cores and recovers the units' patches well enough to predict new images.
TINY = ModelConfig(
    core_filters=(4,),
    core_kernels=(5,),
    pool_kernel=2,
    pool_stride=2,
    dense_units=16,
    dropout_keep=1.0,
    learning_rate=1e-2,
    max_epochs=60,
    patience=30,
    stop_check_every=5,
)


@dataclass
class Recording:
    """Display images, the units' expected rates for them, and seeded Poisson trials."""

    images: np.ndarray  # (n, 66, 66) in [0, 1]
    rates: np.ndarray  # (n, units) Hz, noise free
    ids: np.ndarray

    def request(
        self,
        block: int,
        index: slice | np.ndarray,
        *,
        repeats: int = 3,
        refit: bool = True,
        with_images: bool = True,
        seed: int = 0,
    ) -> FitRequest:
        """A FitRequest for the images at ``index``, ``repeats`` Poisson trials each."""
        ids = self.ids[index]
        rows = np.repeat(np.arange(len(self.ids))[index], repeats)
        counts = np.random.default_rng([seed, block]).poisson(self.rates[rows] * COUNT_WINDOW_S)
        return FitRequest(
            block=block,
            stimulus_ids=self.ids[rows],
            rates=counts / COUNT_WINDOW_S,
            unit_ids=UNIT_IDS,
            image_ids=ids if with_images else None,
            images=self.images[index] if with_images else None,
            refit=refit,
        )


def make_recording(n: int = 80, seed: int = 0) -> Recording:
    rng = np.random.default_rng(seed)
    noise = np.stack([gaussian_filter(image, 3.0) for image in rng.standard_normal((n, SIZE_PX, SIZE_PX))])
    low, high = noise.min(axis=(1, 2), keepdims=True), noise.max(axis=(1, 2), keepdims=True)
    images = ((noise - low) / (high - low)).astype(np.float32)
    # Each unit sums the light in a Gaussian patch of the input (ON or OFF), then rectifies.
    y, x = np.mgrid[:33, :33] - 16.0
    centres = rng.uniform(-8, 8, (N_UNITS, 2))
    filters = np.stack(
        [
            sign * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 4.0**2)).ravel()
            for (cx, cy), sign in zip(centres, rng.choice([-1.0, 1.0], N_UNITS))
        ]
    )
    drive = preprocess(images, Preprocessing()).reshape(n, -1) @ filters.T
    drive = (drive - drive.mean(axis=0)) / drive.std(axis=0)
    rates = 5.0 + 20.0 * np.maximum(drive + 0.5, 0.0)
    return Recording(images, rates, np.arange(1000, 1000 + n, dtype=np.int64))


@pytest.fixture(scope="session")
def recording() -> Recording:
    return make_recording()


def settings(**changes) -> ServerSettings:
    values = dict(
        request_endpoint=inproc_endpoint("model"),
        events_endpoint=inproc_endpoint("events"),
        model=TINY,
        device="cpu",
        seed=5,
        synthesis_steps=20,
        stimulus_size_px=SIZE_PX,
    )
    values.update(changes)
    return ServerSettings(**values)


@dataclass
class Running:
    server: ModelServer
    client: RequestClient
    events: Subscriber

    def ask(self, message, timeout_s: float = 20.0):
        reply = self.client.request(message, int(timeout_s * 1000))
        assert reply is not None, f"no reply to {type(message).__name__} within {timeout_s} s"
        return reply.message

    def next_event(self, kinds: tuple[type, ...], timeout_s: float = 60.0):
        """The next event of one of ``kinds`` (others, e.g. copies of replies, are skipped)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            decoded = self.events.recv(100)
            if decoded is not None and isinstance(decoded.message, kinds):
                return decoded.message
        raise AssertionError(f"no {[k.__name__ for k in kinds]} event within {timeout_s} s")


@pytest.fixture
def run_server():
    """Start a ModelServer under a thread Supervisor; yields a factory taking settings changes."""
    started: list[tuple[Supervisor, Running]] = []

    def start(**changes) -> Running:
        server = ModelServer("model", settings(**changes))
        supervisor = Supervisor([server], mode="thread")
        assert supervisor.start(), "model server did not start"
        running = Running(
            server, RequestClient(server.request_endpoint, source="runner"), Subscriber(server.events_endpoint)
        )
        time.sleep(0.2)  # PUB/SUB joins late
        started.append((supervisor, running))
        return running

    yield start
    for supervisor, running in started:
        report = supervisor.shutdown()
        running.client.close()
        running.events.close()
        assert report.ok, report.components
