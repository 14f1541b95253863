"""Where offline tasks (session fits, search trials) run: local processes or Ray.

Both executors have the same small interface: `submit` a module-level function with
its arguments, `wait` for some to finish, take each `result`, `close`.  A task
declares its resources (`TaskResources`): local processes split the CPU cores
between workers; Ray schedules each task on a node with that many CPUs and that
fraction of a GPU free, so ``gpus=0.25`` packs four fits on one card.

``local`` with one worker runs tasks in this process when submitted (no start-up
cost).  ``ray`` without an address starts a Ray instance on this machine bound to
127.0.0.1 and stops it on `close`; with an address (``auto`` or ``HOST:PORT``) it
joins a running cluster (``ray start --head``) and only disconnects on `close`.
Every task sets torch's thread count to its CPUs, so the same seed gives the same
numbers on either executor.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

from closedloop.errors import ClosedLoopError
from closedloop.fitting.options import EXECUTORS

RAY_PIN = "ray==2.60.0"


class WorkerLost(Exception):
    """The process or node that ran a task died (out of memory, killed, node lost)."""


@dataclass(frozen=True)
class TaskResources:
    """What one task needs: CPU cores (its torch threads) and a fraction of a GPU."""

    cpus: int = 1
    gpus: float = 0.0


def run_with_threads(threads: int, fn: Callable, *args: Any) -> Any:
    """Call ``fn(*args)`` with torch limited to ``threads`` threads (runs inside a worker)."""
    import torch

    torch.set_num_threads(max(1, int(threads)))
    return fn(*args)


class LocalExecutor:
    """Worker processes on this machine (``spawn``: no forked torch/CUDA state).

    Parameters
    ----------
    workers
        Processes; with 1, tasks run in this process when submitted.
    resources
        Per task; ``cpus`` is each worker's torch thread count.
    initializer, initargs
        Run once in each worker process (e.g. to hand it a progress queue).
    """

    name = "local"

    def __init__(
        self, workers: int, resources: TaskResources, initializer: Callable | None = None, initargs: tuple = ()
    ):
        self.workers = max(1, int(workers))
        self.resources = resources
        self._pool = None
        if self.workers > 1:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=initializer, initargs=initargs
            )

    def submit(self, fn: Callable, *args: Any) -> Future:
        if self._pool is not None:
            return self._pool.submit(run_with_threads, self.resources.cpus, fn, *args)
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as error:  # delivered by result(), as from a worker
            future.set_exception(error)
        return future

    def share(self, value: Any) -> Any:
        """Data many tasks use; processes get their own pickled copy."""
        return value

    def wait(self, handles: list, timeout: float | None = None) -> list:
        """The handles that have finished (waits up to ``timeout`` s for at least one)."""
        done, _ = wait_futures(handles, timeout=timeout, return_when="FIRST_COMPLETED")
        return [handle for handle in handles if handle in done]

    def result(self, handle: Future) -> Any:
        try:
            return handle.result()
        except BrokenProcessPool:
            raise WorkerLost("a worker process died (out of memory or killed); try fewer --workers") from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """Tasks on a Ray cluster: joined at ``address``, or started here when it is ``None``.

    Parameters
    ----------
    address
        ``None`` (start a local instance on 127.0.0.1), ``"auto"`` (the cluster this
        machine belongs to) or ``"HOST:PORT"`` of a head node.
    resources
        Declared by every task.
    cpus
        CPUs of a locally started instance (``None``: all of this machine's).
    """

    name = "ray"

    def __init__(self, address: str | None, resources: TaskResources, cpus: int | None = None):
        # Ray reads these settings when imported: check and set them first.
        if address not in (None, "auto"):
            _check_reachable(address)
            _token_if_present()
        if address is None or address.rpartition(":")[0] in ("127.0.0.1", "localhost"):
            loopback_only()  # a cluster on 127.0.0.1 (ray start with the same setting) is found there
        self.ray = import_ray()
        self.resources = resources
        self.started_here = address is None
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        try:
            if self.started_here:
                self.ray.init(address="local", num_cpus=cpus, **options)
            else:
                self.ray.init(address=address, **options)
        except (ConnectionError, RuntimeError, ValueError) as error:
            where = "a local Ray instance" if self.started_here else f"the Ray cluster at {address}"
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ClosedLoopError(
                f"cannot connect to {where} ({first_line}); start one with 'ray start --head' "
                "(a cluster with token authentication needs its token here: ~/.ray/auth_token or RAY_AUTH_TOKEN) "
                "or use --executor local"
            ) from None
        self._remote = self.ray.remote(run_with_threads).options(
            num_cpus=resources.cpus, num_gpus=resources.gpus, max_retries=0
        )

    def submit(self, fn: Callable, *args: Any):
        return self._remote.remote(self.resources.cpus, fn, *args)

    def share(self, value: Any):
        """Put data many tasks use into the object store once; tasks receive the value."""
        return self.ray.put(value)

    def wait(self, handles: list, timeout: float | None = None) -> list:
        done, _ = self.ray.wait(handles, num_returns=1, timeout=timeout)
        if done:  # collect every other finished one too, without waiting
            done, _ = self.ray.wait(handles, num_returns=len(handles), timeout=0)
        return done

    def result(self, handle) -> Any:
        exceptions = self.ray.exceptions
        try:
            return self.ray.get(handle)
        except exceptions.RayTaskError as error:  # the task's own exception, as a local task raises it
            cause = getattr(error, "cause", None)
            raise (cause if isinstance(cause, Exception) else error) from None
        except (exceptions.WorkerCrashedError, exceptions.NodeDiedError, exceptions.ObjectLostError) as error:
            raise WorkerLost(f"a Ray worker died ({type(error).__name__}); out of memory or node lost") from None

    def close(self) -> None:
        self.ray.shutdown()


def loopback_only() -> None:
    """Make a Ray instance started by this process listen on 127.0.0.1 only.

    On Linux Ray takes the machine's network address as the node address and its
    servers listen there, open to the network (token authentication is their only
    guard); Ray's single-machine mode (its default on macOS and Windows, chosen with
    this variable) uses 127.0.0.1 instead.  It must be set before Ray starts its
    processes, which inherit it.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # Ray already imported here: it read the variable at import
        setattr(constants, "ENABLE_RAY_CLUSTER", False)  # noqa: B010 - a module attribute mypy cannot see


def _token_if_present() -> None:
    """Send this machine's Ray token to a cluster given by address.

    Ray 2.60 heads require a token by default, but a driver connecting to an explicit
    address only sends one when RAY_AUTH_MODE=token; ``auto`` sends it when a token
    exists.  Do as ``auto`` does, unless the user chose a mode.
    """
    from pathlib import Path

    if "RAY_AUTH_MODE" in os.environ:
        return
    if (
        os.environ.get("RAY_AUTH_TOKEN")
        or os.environ.get("RAY_AUTH_TOKEN_PATH")
        or (Path.home() / ".ray" / "auth_token").exists()
    ):
        os.environ["RAY_AUTH_MODE"] = "token"


def import_ray():
    """The ``ray`` module, or a `ClosedLoopError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ClosedLoopError(
            f"--executor ray needs Ray, which is not installed: pip install '{RAY_PIN}' (or use --executor local)"
        ) from None
    return ray


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast with one line when nothing listens at HOST:PORT (Ray itself retries for a minute)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClosedLoopError(f"--address {address!r}: expected HOST:PORT of a Ray head node (or 'auto')")
    started = time.monotonic()
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return
    except OSError as error:
        waited = time.monotonic() - started
        raise ClosedLoopError(
            f"no Ray cluster reachable at {address} ({error.strerror or error}, after {waited:.1f} s); "
            f"start one there with 'ray start --head --port={port}' or use --executor local"
        ) from None


def make_executor(
    kind: str,
    *,
    workers: int,
    resources: TaskResources,
    address: str | None = None,
    initializer: Callable | None = None,
    initargs: tuple = (),
):
    """A `LocalExecutor` or `RayExecutor` (``workers`` = CPUs of a Ray instance started here)."""
    if kind == "local":
        if address is not None:
            raise ClosedLoopError("--address only makes sense with --executor ray")
        return LocalExecutor(workers, resources, initializer, initargs)
    if kind == "ray":
        return RayExecutor(address, resources, cpus=max(workers * resources.cpus, 1) if address is None else None)
    raise ClosedLoopError(f"--executor {kind!r}: choose one of {', '.join(EXECUTORS)}")
