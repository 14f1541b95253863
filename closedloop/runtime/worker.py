"""The loop that runs one component, identical in a thread and in a process.

It reports to the supervisor through a queue of `Event` tuples: ``ready`` after setup,
``heartbeat`` every interval, ``failed`` with the traceback text when setup, step or
teardown raises, and ``finished`` (with the reason) after teardown.  Exceptions never
leave this function: the supervisor decides what happens next.
"""

from __future__ import annotations

import signal
import threading
import time
import traceback
from typing import Any, NamedTuple

from closedloop.runtime.component import Component


class Event(NamedTuple):
    """One report from a worker to the supervisor."""

    kind: str  # "ready" | "heartbeat" | "failed" | "finished"
    name: str
    t_ns: int
    data: Any = None


def run_component(component: Component, stop: Any, events: Any) -> None:
    """Set up, step until done/stopped/failed, tear down; report each stage on ``events``.

    ``stop`` is a threading or multiprocessing Event; ``events`` any queue with ``put``.
    """
    name = component.name
    steps = 0
    reason = "stopped"

    def report(kind: str, data: Any = None) -> None:
        events.put(Event(kind, name, time.monotonic_ns(), data))

    def failed(phase: str, error: BaseException) -> None:
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        report("failed", {"phase": phase, "error": f"{type(error).__name__}: {error}", "traceback": text})

    try:
        component.setup()
    except BaseException as error:  # noqa: BLE001 - reported, never propagated
        failed("setup", error)
        reason = "failed"
    else:
        report("ready")
        interval_ns = int(component.heartbeat_interval_s * 1e9)
        last_beat = time.monotonic_ns()
        report("heartbeat", {"steps": 0})
        try:
            while not stop.is_set():
                result = component.step()
                steps += 1
                if result is False:
                    reason = "done"
                    break
                now = time.monotonic_ns()
                if now - last_beat >= interval_ns:
                    report("heartbeat", {"steps": steps})
                    last_beat = now
        except BaseException as error:  # noqa: BLE001
            failed("step", error)
            reason = "failed"
    try:
        component.teardown()
    except BaseException as error:  # noqa: BLE001
        failed("teardown", error)
        reason = "failed"
    report("finished", {"reason": reason, "steps": steps})


def process_main(component: Component, stop: Any, events: Any) -> None:
    """Entry point of a component process (multiprocessing, spawn).

    Ctrl-C reaches every process of the terminal's group; children ignore it so the
    supervisor alone decides the shutdown order.  SIGTERM asks for a clean stop.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    run_component(component, stop, events)
    if hasattr(events, "close"):
        events.close()
        events.join_thread()  # make sure "finished" is flushed before the process exits


def thread_main(component: Component, stop: threading.Event, events: Any) -> None:
    run_component(component, stop, events)
