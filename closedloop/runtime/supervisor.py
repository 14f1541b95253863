"""Runs components as threads or processes, watches them, and shuts them down in order.

Components start one after another, each only once the previous one's setup finished,
and stop in the reverse order (a consumer stops before the producer it listens to; the
producer's last messages are not sent into the void).  The supervisor stops everything
when a component fails (its exception is logged with its name), on Ctrl-C or SIGTERM,
when all components are done, or when `Supervisor.run`'s timeout passes.  It does not
restart anything: a failure is reported, not hidden.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from closedloop.runtime.clocks import Deadline
from closedloop.runtime.component import Component
from closedloop.runtime.worker import Event, process_main, thread_main

logger = logging.getLogger(__name__)

Mode = Literal["thread", "process"]
_FINAL = ("done", "stopped", "failed")


@dataclass
class ComponentState:
    """What the supervisor knows about one component.

    ``state`` goes pending → starting → running → done | stopped | failed.
    """

    name: str
    state: str = "pending"
    steps: int = 0
    heartbeats: int = 0
    last_heartbeat_ns: int | None = None
    errors: list[str] = field(default_factory=list)
    stale: bool = False


@dataclass
class SupervisorReport:
    """Why the supervisor stopped and how each component ended."""

    reason: str  # "all_done" | "failed" | "signal" | "timeout" | "stopped" | "setup_failed"
    components: dict[str, ComponentState]
    start_order: list[str]
    finish_order: list[str]

    @property
    def ok(self) -> bool:
        return all(c.state != "failed" for c in self.components.values())


class _Handle:
    """A component's thread or process and its stop flag."""

    def __init__(self, component: Component, mode: Mode, events: Any, mp: Any):
        self.component = component
        if mode == "thread":
            self.stop = threading.Event()
            self.worker: Any = threading.Thread(
                target=thread_main, args=(component, self.stop, events), name=f"component-{component.name}", daemon=True
            )
        else:
            self.stop = mp.Event()
            self.worker = mp.Process(
                target=process_main,
                args=(component, self.stop, events),
                name=f"component-{component.name}",
                daemon=True,
            )
        self.mode = mode

    def exit_text(self) -> str | None:
        """Why a process ended without reporting, or None while it is alive / a thread."""
        if self.mode == "process" and not self.worker.is_alive() and self.worker.exitcode is not None:
            return f"process exited with code {self.worker.exitcode} without finishing"
        return None


class Supervisor:
    """Run `Component` s, collect heartbeats, shut down in reverse start order.

    Parameters
    ----------
    components
        In start order; names must be unique.
    mode
        ``"thread"`` (tests, demo; share one zmq context for ``inproc://``) or
        ``"process"`` (multiprocessing with the spawn method: components must pickle).
    setup_timeout_s
        Longest wait for one component's setup.
    stop_timeout_s
        Longest wait for one component to tear down after being asked to stop; a
        process that takes longer is terminated.
    heartbeat_timeout_s
        Silence after which a running component is reported stale (default: five
        heartbeat intervals, at least 1 s).
    """

    def __init__(
        self,
        components: Sequence[Component],
        *,
        mode: Mode = "thread",
        setup_timeout_s: float = 30.0,
        stop_timeout_s: float = 10.0,
        heartbeat_timeout_s: float | None = None,
    ):
        names = [c.name for c in components]
        if len(set(names)) != len(names):
            raise ValueError(f"component names must be unique, got {names}")
        if mode not in ("thread", "process"):
            raise ValueError(f"mode must be 'thread' or 'process', got {mode!r}")
        self.components = list(components)
        self.mode: Mode = mode
        self.setup_timeout_s = setup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._mp = multiprocessing.get_context("spawn") if mode == "process" else None
        self._events: Any = self._mp.Queue() if self._mp else queue.Queue()
        self.states = {c.name: ComponentState(c.name) for c in self.components}
        self._handles: list[_Handle] = []
        self._finish_order: list[str] = []
        self._stop_reason: str | None = None
        self._failed = False
        self._report: SupervisorReport | None = None

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> bool:
        """Start components in order, each after the previous one's setup; False on failure."""
        for component in self.components:
            handle = _Handle(component, self.mode, self._events, self._mp)
            state = self.states[component.name]
            state.state = "starting"
            handle.worker.start()
            self._handles.append(handle)
            deadline = Deadline.after_s(self.setup_timeout_s)
            while state.state == "starting" and not deadline.expired():
                self._pump(0.05)
                self._check_processes()
            if state.state == "starting":
                self._fail(component.name, f"setup took longer than {self.setup_timeout_s} s")
            if self._failed or self._stop_reason:
                return False
        return True

    def run(self, timeout_s: float | None = None) -> SupervisorReport:
        """Start (if needed), supervise until done/failure/signal/timeout, then shut down."""
        previous = self._install_signal_handlers()
        try:
            if not self._handles and not self.start():
                return self.shutdown(self._failure_reason() if self._failed else (self._stop_reason or "stopped"))
            deadline = Deadline.after_s(timeout_s)
            while True:
                if self._failed:
                    return self.shutdown("failed")
                if self._stop_reason:
                    return self.shutdown(self._stop_reason)
                if all(s.state == "done" for s in self.states.values()):
                    return self.shutdown("all_done")
                if deadline.expired():
                    return self.shutdown("timeout")
                self._pump(0.1)
                self._check_processes()
                self._check_heartbeats()
        finally:
            self._restore_signal_handlers(previous)

    def request_stop(self, reason: str = "stopped") -> None:
        """Ask `run` to shut everything down (safe from signal handlers and other threads)."""
        self._stop_reason = self._stop_reason or reason

    def shutdown(self, reason: str = "stopped") -> SupervisorReport:
        """Stop running components and return the report.

        Components that reported a failure finish their own teardown first, then the rest
        stop in reverse start order.
        """
        if self._report is not None:
            return self._report
        # a component that reported a failure is tearing itself down already: let it finish
        # before its neighbours are asked to stop, so their teardown never races its own
        failing = [h for h in self._handles if self.states[h.component.name].errors]
        for handle in failing + [h for h in reversed(self._handles) if h not in failing]:
            state = self.states[handle.component.name]
            if state.state not in _FINAL:
                handle.stop.set()
                deadline = Deadline.after_s(self.stop_timeout_s)
                while state.state not in _FINAL and not deadline.expired():
                    self._pump(0.05)
                    self._check_processes()
                if state.state not in _FINAL:
                    self._fail(handle.component.name, f"did not stop within {self.stop_timeout_s} s")
            self._join(handle)
        self._pump(0)
        if self._mp:
            self._events.close()
            self._events.join_thread()
        self._report = SupervisorReport(
            reason, self.states, [h.component.name for h in self._handles], list(self._finish_order)
        )
        logger.info(
            "supervisor stopped (%s): %s", reason, ", ".join(f"{s.name}={s.state}" for s in self.states.values())
        )
        return self._report

    # --- internals -------------------------------------------------------------------

    def _failure_reason(self) -> str:
        in_setup = any(e.startswith("setup") for s in self.states.values() for e in s.errors)
        return "setup_failed" if in_setup else "failed"

    def _join(self, handle: _Handle) -> None:
        handle.worker.join(self.stop_timeout_s)
        if handle.mode == "process" and handle.worker.is_alive():
            logger.error("component %r: process still alive after teardown; terminating it", handle.component.name)
            handle.worker.terminate()
            handle.worker.join(2.0)
            if handle.worker.is_alive():
                handle.worker.kill()
                handle.worker.join(2.0)

    def _pump(self, timeout_s: float) -> None:
        """Apply every queued event, waiting up to ``timeout_s`` for the first."""
        block = timeout_s > 0
        while True:
            try:
                event: Event = self._events.get(block, timeout_s) if block else self._events.get_nowait()
            except (queue.Empty, EOFError, OSError):
                return
            block = False
            self._apply(event)

    def _apply(self, event: Event) -> None:
        state = self.states.get(event.name)
        if state is None:
            return
        if event.kind == "ready":
            state.state = "running"
        elif event.kind == "heartbeat":
            state.heartbeats += 1
            state.last_heartbeat_ns = event.t_ns
            state.steps = event.data["steps"]
            if state.stale:
                logger.warning("component %r: heartbeats resumed", event.name)
                state.stale = False
        elif event.kind == "failed":
            data = event.data
            logger.error(
                "component %r failed in %s: %s\n%s", event.name, data["phase"], data["error"], data["traceback"]
            )
            state.errors.append(f"{data['phase']}: {data['error']}")
            self._failed = True
        elif event.kind == "finished":
            state.steps = event.data["steps"]
            state.state = "failed" if state.errors else event.data["reason"]
            self._finish_order.append(event.name)

    def _fail(self, name: str, text: str) -> None:
        logger.error("component %r failed: %s", name, text)
        state = self.states[name]
        state.errors.append(text)
        state.state = "failed"
        self._failed = True

    def _check_processes(self) -> None:
        for handle in self._handles:
            state = self.states[handle.component.name]
            text = handle.exit_text()
            if text and state.state not in _FINAL:
                self._pump(0.2)  # its last events may still be in the queue
                if state.state not in _FINAL:
                    self._fail(handle.component.name, text)

    def _check_heartbeats(self) -> None:
        now = time.monotonic_ns()
        for handle in self._handles:
            component = handle.component
            state = self.states[component.name]
            if state.state != "running" or state.last_heartbeat_ns is None or state.stale:
                continue
            limit = self.heartbeat_timeout_s or max(1.0, 5 * component.heartbeat_interval_s)
            silent = (now - state.last_heartbeat_ns) / 1e9
            if silent > limit:
                state.stale = True
                logger.warning(
                    "component %r: no heartbeat for %.1f s %s", component.name, silent, self._busy_with(component)
                )

    def _busy_with(self, late: Component) -> str:
        """Why a heartbeat may be late, from what the components say they are doing (thread mode)."""
        own = getattr(late, "activity", "")
        if own:
            return f"(busy: {own})"
        others = [
            f"{handle.component.name} is {handle.component.activity}"
            for handle in self._handles
            if handle.component is not late and str(getattr(handle.component, "activity", ""))
        ]
        if others:
            return f"while {'; '.join(others)} (they share this machine's CPU; it catches up afterwards)"
        return "(one step has run that long; if this repeats, the component may be blocked)"

    def _install_signal_handlers(self) -> dict[int, Any] | None:
        if threading.current_thread() is not threading.main_thread():
            return None

        def on_signal(signum: int, _frame: Any) -> None:
            logger.warning("supervisor: %s received, shutting down in order", signal.Signals(signum).name)
            self.request_stop("signal")

        return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    @staticmethod
    def _restore_signal_handlers(previous: dict[int, Any] | None) -> None:
        for sig, handler in (previous or {}).items():
            signal.signal(sig, handler)
