"""One line per event a person running the loop wants to see: blocks and model versions.

`ProgressPrinter` is a read-only component, like the monitor: it subscribes to the
runner's stream (BlockStatus) and the model server's (ModelUpdated, Error) and turns
each into a short line.  It never talks back, so a slow terminal cannot slow the loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import zmq

from closedloop.messages import BlockStatus, Error, ModelUpdated
from closedloop.runtime.component import Component
from closedloop.transport import Subscriber

_POLL_MS = 50


def block_line(status: BlockStatus) -> str | None:
    """The line for a block's status, or ``None`` for states not worth a line."""
    if status.state == "started":
        return None
    where = f"iteration {status.iteration}, " if status.iteration else ""
    trials = f", {status.n_trials} trials" if status.n_trials else ""
    detail = f": {status.detail}" if status.detail and status.state != "finished" else ""
    return f"block {status.block} {status.kind} ({where}{status.state}{trials}){detail}"


def model_line(update: ModelUpdated) -> str:
    """The line for a finished refit: version, held-out r, r/rmax, data size and time."""
    metrics = update.metrics

    def number(name: str, digits: int = 2) -> str:
        value = metrics.get(name, math.nan)
        return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"

    return (
        f"model v{update.version}: held-out r mean {number('r_mean')} (median {number('r_median')}), "
        f"r/rmax {number('r_over_rmax_mean')}; {int(metrics.get('n_images', 0))} images, "
        f"{int(metrics.get('n_units', 0))} units; fitted in {number('fit_seconds', 1)} s"
    )


class ProgressPrinter(Component):
    """Prints block and model progress as it happens.

    Parameters
    ----------
    responses_endpoint, model_events_endpoint
        The runner's and the model server's PUB endpoints (``None`` to skip one).
    write
        Where lines go (default `print`); each line starts with the seconds since setup.
    """

    def __init__(
        self,
        responses_endpoint: str | None,
        model_events_endpoint: str | None,
        *,
        name: str = "progress",
        write: Callable[[str], None] = print,
    ):
        super().__init__(name)
        self.endpoints = {"runner": responses_endpoint, "model server": model_events_endpoint}
        self.write = write
        self.lines: list[str] = []
        self._subscribers: list[Subscriber] = []

    def setup(self) -> None:
        self._started = time.monotonic()
        self._subscribers = [
            Subscriber(endpoint, name=f"{self.name} <- {source}")
            for source, endpoint in self.endpoints.items()
            if endpoint
        ]
        self._poller = zmq.Poller()
        for subscriber in self._subscribers:
            self._poller.register(subscriber.socket, zmq.POLLIN)

    def step(self) -> None:
        self._poller.poll(_POLL_MS)  # wait for either stream, briefly (a stop request is seen promptly)
        for subscriber in self._subscribers:
            for decoded in subscriber.drain(100):
                self._show(decoded.message)

    def teardown(self) -> None:
        for subscriber in self._subscribers:
            subscriber.close()

    def _show(self, message) -> None:
        if isinstance(message, BlockStatus):
            line = block_line(message)
        elif isinstance(message, ModelUpdated):
            line = model_line(message)
        elif isinstance(message, Error):
            line = f"model server: {message.code}: {message.message}"
        else:
            line = None
        if line is not None:
            line = f"[{time.monotonic() - self._started:6.1f} s] {line}"
            self.lines.append(line)
            self.write(line)
