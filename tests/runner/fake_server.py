"""A small model server that speaks the loop's contract, for testing the runner without torch.

FitRequest → Accepted (refit: version + 1, then, ``fit_seconds`` later, ModelUpdated with
per-unit held-out r on the PUB); SynthesizeRequest → SynthesizeResult with images drawn from (seed, k),
an ensemble spread of 1.5 + 0.25 k Hz and start ids k (-1 for "max"; neither with ``send_spread=False``;
Error "no_model" before the first refit); PredictRequest → Predictions of zeros;
anything else → Error.  Data are kept per block, so a block sent twice counts once; a FitRequest naming
stimuli whose images it never got is refused (Error "unknown_stimulus"), like a real server.
`ServerThread` runs it in a thread that can be stopped ("killed") and started again.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from closedloop.messages import (
    Accepted,
    Error,
    FitRequest,
    ModelUpdated,
    Predictions,
    PredictRequest,
    SynthesizeRequest,
    SynthesizeResult,
)
from closedloop.runtime.component import Component
from closedloop.transport import Publisher, RequestServer


class FakeModelServer(Component):
    """See module notes.  ``fitted_units`` limits how many units a model "fits"."""

    def __init__(
        self,
        model_endpoint: str,
        events_endpoint: str,
        *,
        name: str = "model-server",
        fitted_units: int | None = None,
        size_px: int = 66,
        fit_seconds: float = 0.2,
        send_spread: bool = True,
    ):
        super().__init__(name)
        self.model_endpoint, self.events_endpoint = model_endpoint, events_endpoint
        self.fitted_units, self.size_px = fitted_units, size_px
        self.version = 0
        self.blocks: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.images: dict[int, np.ndarray] = {}
        self.received: list[tuple[str, int, int]] = []  # (type, block, n_trials) accepted, in arrival order
        self.fit_requests: list[FitRequest] = []  # every FitRequest accepted, in arrival order
        self.refused: list[tuple[int, str]] = []  # (block, error code) of fit requests refused
        self.unit_ids: np.ndarray | None = None
        self.server = self.events = None
        self.fit_seconds = fit_seconds
        self.send_spread = send_spread
        self.synthesized: list[SynthesizeResult] = []  # every SynthesizeResult sent, in order
        self._pending: list[tuple[float, ModelUpdated]] = []  # refits "running" until their time

    def setup(self) -> None:
        self.server = RequestServer(self.model_endpoint, source=self.name)
        self.events = Publisher(self.events_endpoint, source=self.name)

    def step(self) -> None:
        while self._pending and self._pending[0][0] <= time.monotonic():
            self.events.send(self._pending.pop(0)[1])
        request = self.server.recv(20)
        if request is None:
            return
        message = request.decoded.message
        seq = request.decoded.envelope.seq
        if isinstance(message, FitRequest):
            self._fit(request, message, seq)
        elif isinstance(message, SynthesizeRequest):
            self._synthesize(request, message, seq)
        elif isinstance(message, PredictRequest):
            if self.version == 0:
                self.server.reply(request, Error(code="no_model", message="no model yet", in_reply_to=seq))
            else:
                rates = np.zeros((len(message.images), len(self.unit_ids)))
                self.server.reply(request, Predictions(rates=rates, unit_ids=self.unit_ids, model_version=self.version))
        else:
            self.server.reply(request, Error(code="unexpected_request", message=message.type_name(), in_reply_to=seq))

    def teardown(self) -> None:
        for part in (self.server, self.events):
            if part is not None:
                part.close()

    def _fit(self, request, message: FitRequest, seq: int) -> None:
        if message.image_ids is not None:
            self.images.update({int(i): im for i, im in zip(message.image_ids, message.images)})
        unknown = sorted({int(i) for i in message.stimulus_ids} - set(self.images))
        if unknown:
            self.server.reply(
                request, Error(code="unknown_stimulus", message=f"no images for {unknown[:5]}", in_reply_to=seq)
            )
            self.refused.append((message.block, "unknown_stimulus"))
            return
        self.received.append(("FitRequest", message.block, len(message.stimulus_ids)))
        self.fit_requests.append(message)
        if len(message.stimulus_ids):
            self.blocks[message.block] = (np.asarray(message.stimulus_ids), np.asarray(message.rates))
            self.unit_ids = np.asarray(message.unit_ids)
        if not message.refit:
            self.server.reply(request, Accepted(in_reply_to=seq, version=self.version))
            return
        self.version = max(self.version + 1, message.version_floor)
        self.server.reply(request, Accepted(in_reply_to=seq, version=self.version))
        units = self.unit_ids if self.unit_ids is not None else np.asarray(message.unit_ids)
        units = units[: self.fitted_units] if self.fitted_units is not None else units
        r = np.linspace(0.2, 0.8, len(units))[::-1] * min(1.0, 0.5 + 0.1 * self.version)
        update = ModelUpdated(
            version=self.version,
            unit_ids=units,
            heldout_r=r,
            metrics={
                "r_mean": float(r.mean()),
                "r_median": float(np.median(r)),
                "r_over_rmax_mean": float("nan"),
                "n_images": len(self.images),
                "n_trials": sum(len(s) for s, _ in self.blocks.values()),
                "n_units": len(units),
                "fit_seconds": 0.0,
                "block": float(message.block),
            },
        )
        self._pending.append((time.monotonic() + self.fit_seconds, update))

    def _synthesize(self, request, message: SynthesizeRequest, seq: int) -> None:
        self.received.append(("SynthesizeRequest", -1, len(message.unit_ids)))
        if self.version == 0:
            self.server.reply(request, Error(code="no_model", message="no model has been fitted", in_reply_to=seq))
            return
        n = len(message.unit_ids)
        images = np.stack([synthetic_image(message.seed, k, self.size_px) for k in range(n)])
        achieved = np.where(np.isnan(message.targets), 99.0, message.targets)
        result = SynthesizeResult(
            unit_ids=message.unit_ids,
            targets=message.targets,
            images=images,
            achieved=achieved,
            model_version=self.version,
            seed=message.seed,
            spread=1.5 + 0.25 * np.arange(n) if self.send_spread else None,
            # rate targets "started" from the first images it was sent, "max" from the blank screen
            start_ids=np.where(np.isnan(message.targets), -1, np.arange(n)) if self.send_spread else None,
        )
        self.synthesized.append(result)
        self.server.reply(request, result)
        self.events.send(result)


def synthetic_image(seed: int, k: int, size: int) -> np.ndarray:
    """A smooth pattern in [0, 1] from (seed, k): different for every k."""
    rng = np.random.default_rng([seed, k])
    y, x = np.mgrid[0:size, 0:size] / size
    theta, freq = rng.uniform(0, np.pi), rng.uniform(2, 6)
    return (0.5 + 0.4 * np.sin(2 * np.pi * freq * (x * np.cos(theta) + y * np.sin(theta)))).astype(np.float32)


class ServerThread:
    """Runs a `FakeModelServer` in a thread; `stop` kills it (sockets closed), as a crash would."""

    def __init__(self, server: FakeModelServer):
        self.server = server
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="fake-model-server", daemon=True)

    def start(self) -> ServerThread:
        deadline = time.monotonic() + 5.0
        while True:  # zmq closes sockets in the background: the old server's port may still be bound
            try:
                self.server.setup()
                break
            except OSError:
                self.server.teardown()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._thread.start()
        return self

    def _main(self) -> None:
        while not self._stop.is_set():
            self.server.step()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.server.teardown()
