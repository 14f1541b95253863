"""Benchmark: Open Ephys Event Broadcaster events per second translated with none lost, and latency.

A sender process speaks the plugin's JSON format (one message per event, pretty-printed as
JUCE writes it) to `OpenEphysAdapter`, which runs as a thread component here and
publishes our stream; a `Subscriber` (what the runner uses) receives it.

- Throughput: the sender paces spike events at a target rate for ``--duration`` seconds;
  rates climb a ladder and stop at the first that loses an event (spikes received by the
  subscriber < spikes sent), that leaves the translator more than 0.5 s behind when the
  sender stops (queues would grow without bound), or that the sender cannot keep up.  Also: decode-only speed
  of `closedloop.acquisition.openephys_format.decode` in one thread.
- Latency: at ``--latency-rate`` events/s each spike's sample number is the sender's
  ``time.monotonic()`` × rate (one clock for the machine on Linux), so receive time − the
  spike's time is the delay from the spike's sample number to the runner having it
  (the adapter's ``batch_ms`` batching included; the GUI's own buffering is not).

Usage::

    python benchmarks/openephys.py                # ladder 2k..64k events/s, 3 s each, latency at 1000/s
    python benchmarks/openephys.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import zmq

from closedloop.acquisition import OpenEphysAdapter
from closedloop.acquisition.openephys_format import decode, encode_spike
from closedloop.messages import SpikeBatch
from closedloop.runtime import Supervisor
from closedloop.transport import Subscriber, random_tcp_endpoint

RATE = 30000.0


def _sender(endpoint: str, rate: float, duration: float, stamp: bool, ready, go, done) -> None:
    socket = zmq.Context.instance().socket(zmq.PUB)
    socket.setsockopt(zmq.SNDHWM, 0)
    socket.setsockopt(zmq.LINGER, 5000)
    socket.bind(endpoint)
    ready.set()
    go.wait()
    n = int(rate * duration)
    start = time.monotonic()
    frames = encode_spike(0, RATE, "Electrode 7", 1, stream="Rhythm Data")
    for i in range(n):
        due = start + i / rate
        while time.monotonic() < due:
            pass
        if stamp or i % 256 == 0:
            frames = encode_spike(
                int(time.monotonic() * RATE), RATE, f"Electrode {i % 96 + 1}", 1 + i % 3, stream="Rhythm Data"
            )
        socket.send_multipart(frames)
    done.put((n, time.monotonic() - start))
    time.sleep(1.0)
    socket.close()


def run_once(rate: float, duration: float, stamp: bool) -> dict:
    """Send ``rate`` events/s for ``duration`` s; what arrived, and each spike's delay."""
    ctx = multiprocessing.get_context("spawn")
    ready, go, done = ctx.Event(), ctx.Event(), ctx.Queue()
    event_endpoint, endpoint = random_tcp_endpoint(), random_tcp_endpoint()
    sender = ctx.Process(target=_sender, args=(event_endpoint, rate, duration, stamp, ready, go, done))
    sender.start()
    ready.wait(30)
    adapter = OpenEphysAdapter(endpoint, event_endpoint, photodiode_line=1, clock_stream="Rhythm Data")
    supervisor = Supervisor([adapter], mode="thread")
    received, delays = 0, []
    try:
        with Subscriber(endpoint, name="bench") as sub:
            supervisor.start()
            time.sleep(1.0)  # SUB connections settle before the first event
            go.set()
            sent, took, finished = None, 0.0, None
            while sent is None or (received < sent and time.monotonic() < finished + 5):
                if sent is None and not done.empty():
                    sent, took = done.get()
                    finished = time.monotonic()
                decoded = sub.recv(20)
                if decoded is not None and isinstance(decoded.message, SpikeBatch):
                    batch = decoded.message
                    received += batch.times.size
                    if stamp:
                        delays.extend((time.monotonic() - batch.times).tolist())
            # none lost *and* kept up: everything in within 0.5 s of the last send
            behind = time.monotonic() - finished
    finally:
        supervisor.shutdown()
        sender.join(10)
    return {
        "rate": rate,
        "sent": sent,
        "received": received,
        "lost": sent - received,
        "kept_pace": took <= duration * 1.05,
        "behind_s": behind,
        "counts": adapter.counts,
        "delays_ms": 1000 * np.asarray(delays),
    }


def decode_speed(n: int = 50_000) -> float:
    frames = encode_spike(123_456, RATE, "Tetrode 12", 2, amplitudes=(1.0, 2.0, 3.0, 4.0), stream="Rhythm Data")
    start = time.perf_counter()
    for _ in range(n):
        decode(frames)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="2000,4000,8000,16000,32000,64000", help="events/s ladder")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per rate")
    parser.add_argument("--latency-rate", type=float, default=1000.0, help="events/s while measuring latency")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    figures: dict = {"decode_events_per_s": decode_speed()}
    print(f"decode only: {figures['decode_events_per_s']:,.0f} events/s (one thread)")
    best = 0.0
    figures["ladder"] = []
    for rate in (float(r) for r in args.rates.split(",")):
        result = run_once(rate, args.duration, stamp=False)
        ok = result["lost"] == 0 and result["kept_pace"] and result["behind_s"] < 0.5
        figures["ladder"].append({k: result[k] for k in ("rate", "sent", "received", "lost", "kept_pace", "behind_s")})
        print(
            f"{rate:>8,.0f} events/s: sent {result['sent']}, received {result['received']}, lost "
            f"{result['lost']}, last one {result['behind_s']:.2f} s after the sender finished"
            f"{'' if result['kept_pace'] else ', sender could not keep pace'}"
        )
        if not ok:
            break
        best = rate
    figures["events_per_s_none_lost"] = best
    print(f"sustained with none lost: {best:,.0f} events/s")
    latency = run_once(args.latency_rate, args.duration, stamp=True)
    delays = latency["delays_ms"]
    figures["latency_ms"] = {
        "p50": float(np.percentile(delays, 50)),
        "p99": float(np.percentile(delays, 99)),
        "max": float(delays.max()),
        "n": int(delays.size),
    }
    print(
        f"spike sample number -> runner has it, at {args.latency_rate:g} events/s: p50 "
        f"{figures['latency_ms']['p50']:.2f} ms, p99 {figures['latency_ms']['p99']:.2f} ms, max "
        f"{figures['latency_ms']['max']:.2f} ms ({delays.size} spikes)"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
