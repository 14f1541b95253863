"""The model server as a component (docs/architecture.md, the message contract).

Requests arrive on a ROUTER socket: `FitRequest` → `Accepted`, `PredictRequest` →
`Predictions`, `SynthesizeRequest` → `SynthesizeResult`, anything else or anything
wrong → `Error`, and the server keeps serving.  Events go out on a PUB socket:
`ModelUpdated` after each refit, `Error(code="fit_failed")` when a refit fails, and a
copy of every `Predictions` and `SynthesizeResult` for the monitor.

Refits, predictions and syntheses run in one background thread each; only this
component's thread touches the sockets, collecting finished work at the start of every
step, so a liveness Predict (no images) is answered within a step (tens of ms) however
long the work is.  Predictions use the newest finished model.  Only the runner that
opened the session may send `FitRequest` s (`closedloop.server.ownership`); syntheses
of several clients take turns (`closedloop.server.scheduling`).  A refit asked for while one runs is
coalesced: one more refit, on everything received by then, runs after the current one.
Versions are reserved when a refit is accepted (so `Accepted.version` is exact); a
refit that fails leaves its number unused and the previous model in service.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import zmq

from closedloop.errors import ClosedLoopError, DataFileError
from closedloop.messages.base import Message
from closedloop.messages.types import (
    Accepted,
    Error,
    FitRequest,
    ModelUpdated,
    PredictRequest,
    Predictions,
    SynthesizeRequest,
)
from closedloop.model.device import resolve_device
from closedloop.model.checkpoint import load_core
from closedloop.model.networks import CoreReadoutNetwork
from closedloop.model.predict import predict
from closedloop.runtime.component import Component
from closedloop.server.checks import RequestError, network_input
from closedloop.server.ownership import SessionOwner
from closedloop.server.refit import Cancelled, RefitJob, ServedModel, run_refit
from closedloop.server.scheduling import JobCancel, Running, SynthesisQueue, Waiting
from closedloop.server.settings import ServerSettings
from closedloop.server.store import ResponseStore
from closedloop.server.synthesis import run_synthesis, synthesis_jobs
from closedloop.synth.canvas import Canvas
from closedloop.transport.receiver import RateLimitedLog
from closedloop.transport.sockets import Publisher, Request, RequestServer

logger = logging.getLogger(__name__)

# How long an idle step waits for a request: short, so finished work and stop requests are seen promptly.
_POLL_MS = 20

_T = TypeVar("_T")


@dataclass
class _Pending:
    """A coalesced refit waiting for the running one: its reserved version and who asked last."""

    version: int
    block: int
    requested_by: int


class ModelServer(Component):
    """Holds the session's data and newest model; fits in the background, answers at once.

    Parameters
    ----------
    name
        Component name (also the message source).
    settings
        Endpoints, model, preprocessing, device, seed (`ServerSettings`).
    heartbeat_interval_s
        How often the runtime reports this component alive.

    Attributes
    ----------
    model
        The newest finished `ServedModel`, or ``None`` before the first refit.
    counts
        Requests served, refits, and refusals by error code.
    """

    def __init__(self, name: str, settings: ServerSettings, *, heartbeat_interval_s: float = 1.0):
        super().__init__(name, heartbeat_interval_s=heartbeat_interval_s)
        self.settings = settings
        self.request_endpoint, self.events_endpoint = settings.request_endpoint, settings.events_endpoint
        self.model: ServedModel | None = None
        self.core: CoreReadoutNetwork | None = None  # ServerSettings.core_from, read at setup
        self.counts: Counter[str] = Counter()
        self.store: ResponseStore | None = None
        self.requests: RequestServer | None = None
        self.events: Publisher | None = None
        self._reserved = settings.first_version - 1  # versions handed out so far
        self._running: tuple[RefitJob, Future] | None = None
        self._pending: _Pending | None = None
        self.owner = SessionOwner(settings.session)
        self.syntheses = SynthesisQueue(per_client=settings.max_queued_syntheses)
        self._predictions: list[tuple[Request, Future]] = []
        self._cancel: threading.Event | None = None  # made in setup: the component must pickle until then
        self._fit_thread: ThreadPoolExecutor | None = None
        self._save_thread: ThreadPoolExecutor | None = None
        self._synth_thread: ThreadPoolExecutor | None = None
        self._predict_thread: ThreadPoolExecutor | None = None
        self._log = RateLimitedLog(logger)

    @property
    def version(self) -> int:
        """Version of the newest finished model (0 = none yet)."""
        return 0 if self.model is None else self.model.version

    @property
    def refitting(self) -> bool:
        """Whether a refit is running now."""
        return self._running is not None

    # --- lifecycle -------------------------------------------------------------------

    def setup(self) -> None:
        s = self.settings
        if s.aperture_px is None:  # ServerSettings fills it in
            raise RuntimeError(f"{self.name}: the server settings have no aperture")
        self.device = resolve_device(s.device)
        # Read and checked now: a missing or mismatched core is an error at start, not at the first refit.
        self.core = None if s.core_from is None else load_core(s.core_from, s.model, s.preprocessing.crop)
        if s.out_dir is not None:
            try:
                Path(s.out_dir).mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise DataFileError(s.out_dir, f"cannot create the model folder ({error.strerror or error})") from None
        self.canvas = Canvas(
            model_size=s.preprocessing.crop,
            downsample=s.preprocessing.downsample,
            display_size=s.stimulus_size_px,
            aperture_diameter_px=s.aperture_px,
            mean_luminance=s.mean_luminance,
        )
        self.store = ResponseStore(
            stimulus_size_px=s.stimulus_size_px,
            preprocessing=s.preprocessing,
            holdout_fraction=s.holdout_fraction,
            stop_fraction=s.stop_fraction,
            seed=s.seed,
            window_s=s.window_s,
            source=f"{self.name} (session {s.session or '-'})",
        )
        self.requests = RequestServer(
            s.request_endpoint, source=self.name, session=s.session, hwm=s.request_hwm, max_bytes=s.max_request_bytes
        )
        self.events = Publisher(s.events_endpoint, source=self.name, session=s.session)
        self.request_endpoint, self.events_endpoint = self.requests.endpoint, self.events.endpoint
        self._cancel = threading.Event()
        self._fit_thread = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-refit")
        self._synth_thread = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-synthesis")
        self._predict_thread = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-predict")
        self._save_thread = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-save")
        # Finished background work writes a byte here, so the loop wakes at once instead of at
        # its next poll: a refit or synthesis is answered the moment it ends (the loop's turnaround).
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        self._poller = zmq.Poller()
        self._poller.register(self.requests.socket, zmq.POLLIN)
        self._poller.register(self._wake_read, zmq.POLLIN)
        logger.info(
            "%s: serving on %s, events on %s; %s on %s, seed %d",
            self.name,
            self.request_endpoint,
            self.events_endpoint,
            _describe(s),
            self.device,
            s.seed,
        )

    def step(self) -> bool | None:
        self._poller.poll(_POLL_MS)
        self._drain_wake()
        self._collect_finished_work()
        requests = self._made(self.requests, "the request socket")
        request = requests.recv(timeout_ms=0)
        while request is not None:
            self._serve(request)
            request = requests.recv(timeout_ms=0)
        return None

    def _made(self, made: _T | None, what: str) -> _T:
        """``made`` (one of the things `setup` makes), checked that setup has run."""
        if made is None:
            raise RuntimeError(f"{self.name}: {what} is used before setup made it")
        return made

    def _wake(self, _future: Future | None = None) -> None:
        try:
            os.write(self._wake_write, b"w")
        except OSError:  # closed at teardown, or the pipe is full (the loop is awake anyway)
            pass

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_read, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def teardown(self) -> None:
        if self._cancel is not None:
            self._cancel.set()  # running work stops at its next check (a few epochs or steps)
        for pool in (self._fit_thread, self._synth_thread, self._predict_thread):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        if self._save_thread is not None:
            self._save_thread.shutdown(wait=True)  # every announced version is on disk before we go
        for socket in (self.events, self.requests):
            if socket is not None:
                refused = socket.refused
                if refused:  # shown in `serve model`'s summary
                    self.counts["connections_refused"] += refused
                socket.close()
        for fd in (getattr(self, "_wake_read", None), getattr(self, "_wake_write", None)):
            if fd is not None:
                os.close(fd)

    # --- requests --------------------------------------------------------------------

    def _serve(self, request: Request) -> None:
        message = request.decoded.message
        try:
            if type(message) is FitRequest:
                self._fit(request, message)
            elif type(message) is PredictRequest:
                self._predict(request, message)
            elif type(message) is SynthesizeRequest:
                self._synthesize(request, message)
            else:
                raise RequestError(
                    "unexpected_request",
                    f"{self.name} answers FitRequest, PredictRequest and SynthesizeRequest, not {message.type_name()}",
                )
        except RequestError as error:
            self._refuse(request, error.code, error.message)
        except ClosedLoopError as error:
            self._refuse(request, "failed", str(error))
        except Exception as error:  # noqa: BLE001 - one odd request must not stop the server
            logger.exception("%s: %s request failed", self.name, message.type_name())
            self._refuse(request, "internal_error", f"{type(error).__name__}: {error}")

    def _fit(self, request: Request, message: FitRequest) -> None:
        self.owner.check(request)
        if message.version_floor > self._reserved + 1:  # a resumed session: its recorded versions are taken
            self._reserved = message.version_floor - 1
        store = self._made(self.store, "the response store")
        added = store.add(message)
        self.counts["fit_requests"] += 1
        detail = f"{added} trials added; {store.n_images} images, {store.n_trials} trials in all"
        version = self.version
        if message.refit:
            version, queued = self._request_refit(message.block, request.decoded.envelope.seq)
            detail += "; refit queued after the running one" if queued else "; refit started"
        self._reply(request, Accepted(in_reply_to=request.decoded.envelope.seq, version=version, detail=detail))

    def _predict(self, request: Request, message: PredictRequest) -> None:
        if len(message.images) == 0:  # a liveness check (the runner pings while a refit runs)
            self.counts["pings"] += 1
            self._reply(
                request, Accepted(in_reply_to=request.decoded.envelope.seq, version=self.version, detail="alive")
            )
            return
        served = self._require_model()
        if len(self._predictions) >= self.settings.max_queued_predictions:
            raise RequestError(
                "busy", f"{len(self._predictions)} predictions are being computed; ask again when one has been answered"
            )
        # In the background: a large request must not hold up liveness checks and other clients.
        pool = self._made(self._predict_thread, "the prediction thread")
        future = pool.submit(_predictions, served, message, self.settings)
        future.add_done_callback(self._wake)
        self._predictions.append((request, future))

    def _synthesize(self, request: Request, message: SynthesizeRequest) -> None:
        served = self._require_model()
        jobs = synthesis_jobs(served, message, self.settings.max_synthesize)
        client = f"{request.user}/{request.peer.hex()}"
        self.syntheses.add(Waiting(client, self.owner.owns(request), (request, message, served, jobs)))
        self._start_synthesis()

    def _start_synthesis(self) -> None:
        if self.syntheses.running is not None:
            return
        waiting = self.syntheses.take()
        if waiting is None:
            return
        request, message, served, jobs = waiting.item  # the model the jobs' unit columns refer to
        steps = message.steps or self.settings.synthesis_steps
        stop = self._made(self._cancel, "the cancel event")
        pool = self._made(self._synth_thread, "the synthesis thread")
        cancel = JobCancel(stop, None if waiting.owner else self.settings.synthesis_budget_s)
        future = pool.submit(
            run_synthesis,
            served,
            message,
            jobs,
            self.canvas,
            steps,
            cancel,
            self.settings.synthesis_heldout_members,
            self.settings.synthesis_start,
        )
        future.add_done_callback(self._wake)
        self.syntheses.running = Running(waiting, future, cancel)

    def _require_model(self) -> ServedModel:
        if self.model is None:
            detail = "a refit is running" if self._running is not None else "send a FitRequest with refit=true"
            raise RequestError("no_model", f"no model has been fitted yet ({detail})")
        return self.model

    # --- refits ----------------------------------------------------------------------

    def _request_refit(self, block: int, requested_by: int) -> tuple[int, bool]:
        """Start a refit or coalesce into the queued one; (version it will produce, queued)."""
        if self._running is None:
            return self._start_refit(self._reserve(), block, requested_by), False
        if self._pending is None:
            self._pending = _Pending(self._reserve(), block, requested_by)
        else:
            self._pending.block, self._pending.requested_by = block, requested_by
        self.counts["refits_coalesced"] += 1
        return self._pending.version, True

    def _reserve(self) -> int:
        self._reserved += 1
        return self._reserved

    def _start_refit(self, version: int, block: int, requested_by: int | None) -> int:
        store = self._made(self.store, "the response store")
        pool = self._made(self._fit_thread, "the refit thread")
        cancel = self._made(self._cancel, "the cancel event")
        try:
            dataset, split = store.snapshot()
        except ClosedLoopError as error:
            self._fit_failed(version, requested_by, str(error))
            return version
        job = RefitJob(
            version, block, requested_by, dataset, split, self.model, activity=self._note_activity, core=self.core
        )
        self._running = (job, pool.submit(run_refit, job, self.settings, self.device, cancel))
        self.activity = f"fitting model v{version} on {dataset.n_images} images"
        self._running[1].add_done_callback(self._wake)
        self.counts["refits_started"] += 1
        logger.info(
            "%s: refit to version %d on %d images (%d held out), block %d",
            self.name,
            version,
            dataset.n_images,
            len(split.held_out),
            block,
        )
        return version

    def _note_activity(self, text: str) -> None:
        self.activity = text  # one str assignment: safe from the fit thread

    def _collect_finished_work(self) -> None:
        if self._running is not None and self._running[1].done():
            job, future = self._running
            self._running = None
            self.activity = ""
            self._finish_refit(job, future)
            if self._pending is not None:
                pending, self._pending = self._pending, None
                self._start_refit(pending.version, pending.block, pending.requested_by)
        self._collect_predictions()
        running = self.syntheses.running
        if running is not None and running.future.done():
            self.syntheses.running = None
            request = running.waiting.item[0]
            try:
                reply = running.future.result()
            except Cancelled:
                if running.cancel.reason is not None:
                    self._refuse(request, *running.cancel.reason)
            except Exception as error:  # noqa: BLE001 - reported to the client
                self._refuse(request, "synthesis_failed", f"{type(error).__name__}: {error}")
            else:
                self.counts["syntheses"] += 1
                self._reply(request, reply, publish=True)
        self._start_synthesis()

    def _collect_predictions(self) -> None:
        still_running = []
        for request, future in self._predictions:
            if not future.done():
                still_running.append((request, future))
                continue
            try:
                reply = future.result()
            except RequestError as error:
                self._refuse(request, error.code, error.message)
            except Exception as error:  # noqa: BLE001 - reported to the client
                logger.exception("%s: a prediction failed", self.name)
                self._refuse(request, "internal_error", f"{type(error).__name__}: {error}")
            else:
                self.counts["predictions"] += 1
                self._reply(request, reply, publish=True)
        self._predictions = still_running

    def _finish_refit(self, job: RefitJob, future: Future) -> None:
        try:
            served, save = future.result()
        except Cancelled:
            return
        except ClosedLoopError as error:
            self._fit_failed(job.version, job.requested_by, str(error))
            return
        except Exception as error:  # noqa: BLE001 - a failed refit keeps the old model serving
            logger.exception("%s: refit to version %d raised", self.name, job.version)
            self._fit_failed(job.version, job.requested_by, f"{type(error).__name__}: {error}")
            return
        self.model = served
        self.counts["refits_done"] += 1
        m = served.metrics
        logger.info(
            "%s: model version %d: held-out r mean %.3f, r/rmax %.3f, %d units, %d images, %.1f s%s",
            self.name,
            served.version,
            m["r_mean"],
            m["r_over_rmax_mean"],
            m["n_units"],
            m["n_images"],
            m["refit_seconds"],
            " (warm start)" if m["warm_start"] else "",
        )
        self._made(self.events, "the event socket").send(
            ModelUpdated(
                version=served.version,
                metrics=dict(m),
                unit_ids=served.unit_ids.copy(),
                heldout_r=served.heldout_r.copy(),
            )
        )
        if save is not None:
            self._made(self._save_thread, "the save thread").submit(save)

    def _fit_failed(self, version: int, requested_by: int | None, text: str) -> None:
        self.counts["refits_failed"] += 1
        message = f"refit to version {version} failed: {text}; version {self.version} stays in service"
        logger.error("%s: %s", self.name, message)
        self._made(self.events, "the event socket").send(
            Error(code="fit_failed", message=message, in_reply_to=requested_by)
        )

    # --- replies ---------------------------------------------------------------------

    def _reply(self, request: Request, message: Message, *, publish: bool = False) -> None:
        self._made(self.requests, "the request socket").reply(request, message)
        if publish:
            self._made(self.events, "the event socket").send(message)

    def _refuse(self, request: Request, code: str, text: str) -> None:
        self.counts[f"error:{code}"] += 1
        self._log.warning(
            code,
            "%s: refused a %s from %r (%s): %s; %d %s so far",
            self.name,
            request.decoded.message.type_name(),
            request.decoded.envelope.source,
            code,
            text,
            self.counts[f"error:{code}"],
            code,
        )
        self._made(self.requests, "the request socket").reply(
            request, Error(code=code, message=text, in_reply_to=request.decoded.envelope.seq)
        )


def _predictions(served: ServedModel, message: PredictRequest, settings: ServerSettings) -> Predictions:
    """Check the images and predict (the prediction thread)."""
    inputs = network_input(message.images, settings.stimulus_size_px, settings.preprocessing, "images")
    return Predictions(
        rates=predict(served.result.model, inputs),
        unit_ids=served.unit_ids.copy(),
        model_version=served.version,
        stimulus_ids=message.stimulus_ids,
    )


def _describe(settings: ServerSettings) -> str:
    model = settings.model
    return f"{model.describe_members()}{model.architecture} model"
