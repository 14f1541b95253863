"""Hostile presenter reports and block requests, sent over TCP to a live simulated array and presenter.

Each case sends one bad input, then proves the component alive with a valid one:
``refused`` when a refusal counter moved and the component still works,
``silently_accepted`` when nothing counted it, ``crash`` when the component died and
``hang`` when it stopped answering.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import zmq

from closedloop.acquisition import BrainSpec, SimulatedArray
from closedloop.config import load_rig
from closedloop.config.protocol import FrameTiming
from closedloop.messages import BlockRequest, Error, Heartbeat, Message, StimulusShown, SyncEvent, encode
from closedloop.present import PresenterComponent
from closedloop.runtime import Supervisor
from closedloop.transport import RequestClient, Subscriber, random_tcp_endpoint

from .config_corpus import ROOT
from .outcomes import Case, Outcome

#: A live component that takes longer than this to show it still works is hanging.
PROBE_S = 10.0
SIZE = 66  # rigs/sim.yaml's stimulus.size_px
MAX_FRAMES = 6


def rss_bytes() -> int:
    """Resident memory of this process (components run here as threads)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def thread_alive(name: str) -> bool:
    """True while the supervisor's thread for component ``name`` runs."""
    return any(thread.name == f"component-{name}" and thread.is_alive() for thread in threading.enumerate())


def tamper(frames: list[Any], **body: Any) -> list[Any]:
    """``frames`` with body fields replaced in the msgpack header (values the constructors refuse)."""
    header = msgpack.unpackb(bytes(frames[1]))
    header["body"].update(body)
    return [frames[0], msgpack.packb(header), *frames[2:]]


class ArrayHarness:
    """A simulated array at full speed behind TCP: a PUB as the presenter, a PUB as the runner."""

    def __init__(self) -> None:
        context = zmq.Context.instance()
        self.presenter = context.socket(zmq.PUB)
        self.runner = context.socket(zmq.PUB)
        for sock in (self.presenter, self.runner):
            sock.setsockopt(zmq.LINGER, 0)
        stimulus = self.presenter.bind_to_random_port("tcp://127.0.0.1")
        blocks = self.runner.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = random_tcp_endpoint()
        brain = BrainSpec(scenario=str(ROOT / "sim" / "default.yaml"), n_units=5, seed=1, size_px=SIZE)
        self.array = SimulatedArray(
            self.endpoint,
            f"tcp://127.0.0.1:{stimulus}",
            brain,
            speed=0,
            seed=2,
            block_endpoint=f"tcp://127.0.0.1:{blocks}",
            max_frames=MAX_FRAMES,
        )
        self.supervisor = Supervisor([self.array], mode="thread", setup_timeout_s=60)
        self.onsets = 0
        self.seq = 0

    def __enter__(self) -> ArrayHarness:
        self.spikes = Subscriber(self.endpoint, name="faults")
        assert self.supervisor.start(), "the simulated array did not start"
        time.sleep(0.5)  # PUB/SUB joins late
        # The probes show stimulus 0: give the array its pixels, as the runner does.
        self.send_block(
            encode(
                BlockRequest(block=0, kind="natural", stimulus_ids=[0], image_ids=[0], pixels=_pixels(0.5)),
                source="runner",
                seq=0,
            )
        )
        assert self.probe(), "the simulated array does not answer a valid report"
        return self

    def __exit__(self, *exc: object) -> None:
        self.supervisor.shutdown()
        self.spikes.close()
        self.presenter.close()
        self.runner.close()

    @property
    def alive(self) -> bool:
        return thread_alive(self.array.name)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def shown(self, flip_time: float, **fields: Any) -> list[Any]:
        values = {"stimulus_id": 0, "trial": 0, "block": 0, "n_frames": 3, **fields}
        return encode(StimulusShown(flip_time=flip_time, **values), source="presenter", seq=self.next_seq())

    def next_flip(self, step: float = 0.5) -> float:
        last = self.array.guard.last_flip
        return (0.0 if last is None else last) + step

    def send_report(self, frames: list[Any]) -> None:
        self.presenter.send_multipart(frames)

    def send_block(self, frames: list[Any]) -> None:
        self.runner.send_multipart(frames)
        time.sleep(0.05)  # the array drains block requests before the next report

    def refusals(self) -> int:
        stats = self.array.input_stats()
        counted = (
            "bad_flip_times",
            "bad_frame_counts",
            "bad_images",
            "cache_full",
            "unknown_stimuli",
            "unexpected_messages",
            "stimulus_malformed",
            "stimulus_wrong_schema",
            "stimulus_oversized",
            "stimulus_unknown_type",
        )
        blocks = self.array.blocks.stats.as_dict() if self.array.blocks is not None else {}
        return sum(stats.get(key, 0) for key in counted) + sum(
            blocks.get(key, 0) for key in ("malformed", "wrong_schema", "oversized")
        )

    def probe(self) -> bool:
        """Send a valid report; wait until the array has taken it and a photodiode onset follows.

        Waiting for the array to take this very report (not only for one more onset) keeps the
        verdict in order: a hostile report the array showed publishes an onset of its own, which
        would otherwise answer this probe before the array had read the input sent before it.
        """
        wanted = self.onsets + 1
        flip = self.next_flip()
        self.send_report(self.shown(flip))
        deadline = time.monotonic() + PROBE_S
        while time.monotonic() < deadline and self.alive:
            decoded = self.spikes.recv(50)
            if decoded is not None and isinstance(decoded.message, SyncEvent) and decoded.message.state == 1:
                self.onsets += 1
            if self.onsets >= wanted and self.array.guard.last_flip == flip:
                return True
        return False


def run_case(
    refusals: Callable[[], int], send: Callable[[], None], probe: Callable[[], bool], alive: Callable[[], bool]
) -> Outcome:
    """Send one hostile input, prove the component alive, and classify."""
    before = refusals()
    started = time.monotonic()
    try:
        send()
    except Exception as error:
        return Outcome("refused", f"not sendable: {type(error).__name__}: {error}")
    ok = probe()
    seconds = time.monotonic() - started
    if not alive():
        return Outcome("crash", "the component died", seconds)
    if not ok:
        return Outcome("hang", f"no answer to a valid input within {PROBE_S:g} s", seconds)
    if refusals() > before:
        return Outcome("refused", "counted", seconds)
    return Outcome("silently_accepted", "nothing counted it", seconds)


def _pixels(value: float, size: int = SIZE, dtype: Any = np.float32) -> np.ndarray:
    return np.full((1, size, size), value, dtype=dtype)


def array_inputs(h: ArrayHarness) -> list[tuple[str, Callable[[], None]]]:
    """Hostile inputs for the simulated array (each a name and a sender)."""

    def block(pixels: np.ndarray, ids: tuple[int, ...] = (7,)) -> Callable[[], None]:
        request = BlockRequest(block=1, kind="synthesized", stimulus_ids=list(ids), image_ids=list(ids), pixels=pixels)
        return lambda: h.send_block(encode(request, source="runner", seq=1))

    nan = _pixels(0.5)
    nan[0, 3, 3] = np.nan
    return [
        ("report: flip_time -1e9", lambda: h.send_report(h.shown(-1e9))),
        ("report: flip_time jumps +1e12 s", lambda: h.send_report(h.shown(h.next_flip(1e12)))),
        ("report: flip_time repeats", lambda: h.send_report(h.shown(h.next_flip(0.0)))),
        ("report: n_frames 10**6", lambda: h.send_report(h.shown(h.next_flip(), n_frames=10**6))),
        ("report: n_frames 0", lambda: h.send_report(h.shown(h.next_flip(), n_frames=0))),
        ("report: flip_time NaN", lambda: h.send_report(tamper(h.shown(h.next_flip()), flip_time=float("nan")))),
        ("report: flip_time text", lambda: h.send_report(tamper(h.shown(h.next_flip()), flip_time="soon"))),
        ("report: stimulus_id -5", lambda: h.send_report(tamper(h.shown(h.next_flip()), stimulus_id=-5))),
        ("report: stimulus_id 2**64-1", lambda: h.send_report(tamper(h.shown(h.next_flip()), stimulus_id=2**64 - 1))),
        ("report: unknown stimulus 999999", lambda: h.send_report(h.shown(h.next_flip(), stimulus_id=999999))),
        ("report: junk bytes", lambda: h.send_report([b"StimulusShown", b"\x00\xffjunk"])),
        ("report: empty frame", lambda: h.send_report([b""])),
        (
            "report: a Heartbeat instead",
            lambda: h.send_report(encode(Heartbeat(state="running", steps=1), source="presenter", seq=h.next_seq())),
        ),
        (
            "block: a StimulusShown instead",
            lambda: h.send_block(
                encode(
                    StimulusShown(stimulus_id=0, trial=0, block=0, flip_time=1.0, n_frames=3), source="runner", seq=3
                )
            ),
        ),
        ("block: NaN pixels", block(nan)),
        ("block: 5x5 pixels", block(_pixels(0.5, 5))),
        ("block: pixels 1e30", block(_pixels(1e30))),
        ("block: pixels -1", block(_pixels(-1.0))),
        ("block: pixels inf", block(_pixels(np.inf, dtype=np.float64))),
        (
            "block: ids without pixels",
            lambda: h.send_block(
                tamper(
                    encode(
                        BlockRequest(block=1, kind="x", stimulus_ids=[1], image_ids=[1], pixels=_pixels(0.5)),
                        source="runner",
                        seq=2,
                    ),
                    repeats=-3,
                )
            ),
        ),
    ]


def array_cases() -> tuple[ArrayHarness, list[Case]]:
    """A harness (enter it first) and one `Case` per hostile array input."""
    h = ArrayHarness()
    cases = [
        Case("array messages", name, lambda send=send: run_case(h.refusals, send, h.probe, lambda: h.alive))
        for name, send in array_inputs(h)
    ]
    return h, cases


class PresenterHarness:
    """A headless presenter component behind TCP, with a runner's request client."""

    def __init__(self) -> None:
        rig = load_rig(ROOT / "rigs" / "sim.yaml")
        self.component = PresenterComponent(
            "presenter",
            rig=rig,
            timing=FrameTiming(2, 2, rig.display.refresh_hz),
            request_endpoint="tcp://127.0.0.1:*",
            shown_endpoint="tcp://127.0.0.1:*",
            images={0: np.full((SIZE, SIZE), 0.5, np.float32)},
        )
        self.supervisor = Supervisor([self.component], mode="thread", setup_timeout_s=60)
        self.block = 0

    def __enter__(self) -> PresenterHarness:
        assert self.supervisor.start(), "the presenter did not start"
        self.client = RequestClient(self.component.request_endpoint, source="runner")
        self.trials = Subscriber(self.component.shown_endpoint, topics=[StimulusShown])
        time.sleep(0.5)
        assert self.probe(), "the presenter does not show a valid block"
        return self

    def __exit__(self, *exc: object) -> None:
        self.supervisor.shutdown()
        self.client.close()
        self.trials.close()

    @property
    def alive(self) -> bool:
        return thread_alive(self.component.name)

    def request(self, message: Message | list[Any]) -> Any:
        """Send a request (a message or raw frames); the reply, or ``None`` (none is sent for a shown block)."""
        if isinstance(message, list):
            self.client.socket.send_multipart(message)
        else:
            self.client.send(message)
        decoded = self.client.recv(500)
        return None if decoded is None else decoded.message

    def refusals(self) -> int:
        receiver = self.component.requests.receiver.stats.as_dict() if self.component.requests else {}
        return self.component.blocks_rejected + sum(
            receiver.get(k, 0) for k in ("malformed", "wrong_schema", "oversized", "unknown_type")
        )

    def probe(self) -> bool:
        """A valid one-trial block must come back as a StimulusShown."""
        self.block += 1
        self.client.send(BlockRequest(block=self.block, kind="natural", stimulus_ids=[0]))
        deadline = time.monotonic() + PROBE_S
        while time.monotonic() < deadline and self.alive:
            decoded = self.trials.recv(50)
            if decoded is not None and decoded.message.block == self.block:
                return True
        return False


def presenter_inputs(h: PresenterHarness) -> list[tuple[str, Callable[[], None]]]:
    """Hostile block requests for the presenter."""

    def block(
        pixels: np.ndarray, ids: tuple[int, ...] = (9,), shown: tuple[int, ...] | None = None, repeats: int = 1
    ) -> Callable[[], None]:
        return lambda: _expect_error(
            h.request(
                BlockRequest(
                    block=50,
                    kind="synthesized",
                    stimulus_ids=list(ids if shown is None else shown),
                    repeats=repeats,
                    image_ids=list(ids),
                    pixels=pixels,
                )
            )
        )

    nan = _pixels(0.5)
    nan[0, 0, 0] = np.nan
    return [
        ("block: NaN pixels", block(nan)),
        ("block: 5x5 pixels", block(_pixels(0.5, 5))),
        ("block: pixels 1e30", block(_pixels(1e30))),
        ("block: pixels -0.5", block(_pixels(-0.5))),
        ("block: NaN image not shown in the block", block(nan, ids=(9,), shown=(0,))),
        ("block: 10**9 repeats", block(_pixels(0.5), repeats=10**9)),
        (
            "block: unknown stimulus 999999",
            lambda: _expect_error(h.request(BlockRequest(block=51, kind="natural", stimulus_ids=[999999]))),
        ),
        ("block: junk bytes", lambda: h.request([b"BlockRequest", b"\xc1\xc1"])),
        (
            "a StimulusShown instead of a block",
            lambda: _expect_error(h.request(StimulusShown(stimulus_id=0, trial=0, block=0, flip_time=1.0, n_frames=3))),
        ),
        (
            "block: repeats -3",
            lambda: h.request(
                tamper(
                    encode(BlockRequest(block=1, kind="natural", stimulus_ids=[0]), source="runner", seq=99), repeats=-3
                )
            ),
        ),
        (
            "block: stimulus text kind 1 MB",
            lambda: h.request(
                tamper(
                    encode(BlockRequest(block=1, kind="natural", stimulus_ids=[0]), source="runner", seq=98),
                    kind="k" * 2**20,
                )
            ),
        ),
    ]


def _expect_error(reply: Any) -> None:
    if reply is not None and not isinstance(reply, Error):
        raise AssertionError(f"expected an Error reply, got {reply!r}")


def presenter_cases() -> tuple[PresenterHarness, list[Case]]:
    """A harness (enter it first) and one `Case` per hostile block request."""
    h = PresenterHarness()
    cases = [
        Case("presenter messages", name, lambda send=send: run_case(h.refusals, send, h.probe, lambda: h.alive))
        for name, send in presenter_inputs(h)
    ]
    return h, cases
