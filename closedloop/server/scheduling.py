"""Syntheses from several clients: one runs at a time, each client waits its turn.

The session's owner (its runner) goes first: its requests jump the queue, and a
synthesis of another client that is running when the owner asks is cancelled
(``Error("preempted")``) so the loop never waits for a visitor.  Other clients are
served in turn, one request each, and each of their syntheses may run for at most
the server's time budget (``Error("synthesis_timeout")``): one client's huge request
cannot hold the server for minutes.  A client may have only a few requests waiting
(``Error("busy")`` beyond), and the queue as a whole is bounded.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from closedloop.server.checks import RequestError

#: Most syntheses waiting from all clients together.
MAX_WAITING = 64


class JobCancel:
    """What a running synthesis checks each step: shutdown, preemption, its time budget."""

    def __init__(self, shutdown: threading.Event, budget_s: float | None):
        self.shutdown = shutdown
        self.deadline = None if budget_s is None else time.monotonic() + budget_s
        self.budget_s = budget_s
        self.reason: tuple[str, str] | None = None  # (error code, text) when cut short

    def cancel(self, code: str, text: str) -> None:
        if self.reason is None:
            self.reason = (code, text)

    def is_set(self) -> bool:
        if self.shutdown.is_set() or self.reason is not None:
            return True
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.cancel(
                "synthesis_timeout",
                f"stopped after the server's budget of {self.budget_s:g} s per "
                "synthesis; ask for fewer images or steps at a time",
            )
            return True
        return False


@dataclass(eq=False)
class Waiting:
    """A checked synthesis waiting for its turn: who asked and how to run it."""

    client: str
    owner: bool
    item: Any  # what the server needs to start it (its request and jobs)


@dataclass(eq=False)
class Running:
    waiting: Waiting
    future: Future
    cancel: JobCancel


@dataclass
class SynthesisQueue:
    """Waiting syntheses by client, taken owner first, then one per client in turn."""

    per_client: int = 4
    owner_queue: deque[Waiting] = field(default_factory=deque)
    clients: OrderedDict[str, deque[Waiting]] = field(default_factory=OrderedDict)
    running: Running | None = None

    @property
    def n_waiting(self) -> int:
        return len(self.owner_queue) + sum(len(q) for q in self.clients.values())

    def add(self, waiting: Waiting) -> None:
        """Queue a synthesis; preempts a visitor's running one when the owner asks.

        Raises
        ------
        RequestError
            ``busy``: the client (or everyone together) has too many waiting.
        """
        if waiting.owner:
            self.owner_queue.append(waiting)
            if self.running is not None and not self.running.waiting.owner:
                self.running.cancel.cancel(
                    "preempted", "cancelled: the session's runner needs the server; ask again later"
                )
            return
        queue = self.clients.get(waiting.client, ())
        if len(queue) >= self.per_client or self.n_waiting >= MAX_WAITING:
            raise RequestError(
                "busy",
                f"{len(queue)} of your syntheses wait already ({self.n_waiting} in all); "
                "ask again when one has been answered",
            )
        self.clients.setdefault(waiting.client, deque()).append(waiting)

    def take(self) -> Waiting | None:
        """The next synthesis to run (owner first, then the client whose turn it is), or ``None``."""
        if self.owner_queue:
            return self.owner_queue.popleft()
        if not self.clients:
            return None
        client, queue = next(iter(self.clients.items()))
        waiting = queue.popleft()
        del self.clients[client]
        if queue:  # back of the line: every other client goes first
            self.clients[client] = queue
        return waiting
