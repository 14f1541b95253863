"""Benchmark: spikes per second with none lost, and latency, between two processes (benchmarks/README.md).

A publisher process sends `SpikeBatch` messages through `closedloop.transport.Publisher`
to a subscriber process (`Subscriber`: codec, sequence checks and all), over tcp
loopback and ipc, with plain sockets and with CURVE (authenticated and encrypted, ZAP
checking the publisher's key: certificates made by `closedloop.transport.keys` in a
temporary folder, as ``closedloop keys init`` makes them).

- Throughput: the publisher paces batches at a target spike rate for ``--duration``
  seconds; rates climb a ladder (default 1M, 4M, 16M spikes/s, then as fast as it can)
  and stop climbing at the first rate that loses a message or cannot be kept up.
  "Lost" means a sequence gap, a rejected message, or fewer batches received than sent.
- Latency: small batches at ``--latency-rate`` messages/s; each carries the sender's
  ``time.monotonic_ns()`` (one clock for the whole machine on Linux) and the
  subscriber records receive − send; p50/p99/max are printed.

Usage::

    python benchmarks/transport.py                     # tcp and ipc, plain and CURVE, 5 s per run
    python benchmarks/transport.py --repeats 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from closedloop.messages import Heartbeat, SpikeBatch
from closedloop.runtime.clocks import Pacer
from closedloop.transport import PLAIN, Publisher, SocketSecurity, Subscriber, ipc_endpoint, random_tcp_endpoint
from closedloop.transport.keys import create_keys, load_keys

GOAL_SPIKES_PER_S = 1_000_000
GOAL_P99_MS = 1.0


def security(keys: str | None, role: str) -> SocketSecurity:
    """CURVE with ``role``'s certificate from ``keys``, or plain sockets when ``keys`` is None."""
    return PLAIN if keys is None else SocketSecurity(load_keys(keys, role))


def subscriber_main(
    endpoint: str, ready: Any, go: Any, pub_done: Any, results: Any, latency: bool, keys: str | None
) -> None:
    with Subscriber(endpoint, bind=True, name="bench", security=security(keys, "runner")) as sub:
        ready.set()
        batches = spikes = 0
        first_ns = last_ns = 0
        delays: list[int] = []
        while True:
            got = sub.recv(100)
            if got is None:
                if pub_done.is_set():
                    break
                continue
            now = time.monotonic_ns()
            message = got.message
            if isinstance(message, Heartbeat):
                go.set()
                continue
            if batches == 0:
                first_ns = now
            last_ns = now
            batches += 1
            spikes += len(message.times)
            if latency:
                delays.append(now - got.envelope.t_ns)
        stats = sub.stats
        results.put(
            {
                "batches": batches,
                "spikes": spikes,
                "seconds": (last_ns - first_ns) / 1e9,
                "gaps": stats.gaps,
                "missing": stats.missing,
                "rejected": stats.rejected,
                "delays_ns": delays,
            }
        )


def publisher_main(
    endpoint: str, go: Any, results: Any, spikes_per_s: float | None, batch: int, duration_s: float, keys: str | None
) -> None:
    rng = np.random.default_rng(0)
    message = SpikeBatch(unit_ids=rng.integers(0, 96, batch).astype(np.int32), times=np.sort(rng.random(batch)) * 1e-3)
    with Publisher(endpoint, source="bench", bind=False, linger_ms=5000, security=security(keys, "acquisition")) as pub:
        while not go.is_set():  # PUB/SUB joins late: wait until a heartbeat got through
            pub.send(Heartbeat(state="warmup"))
            time.sleep(0.002)
        sent = 0
        start = time.monotonic()
        end = start + duration_s
        if spikes_per_s is None:
            while time.monotonic() < end:
                for _ in range(100):
                    pub.send(message)
                sent += 100
        else:
            pacer = Pacer(spikes_per_s / batch)
            while time.monotonic() < end:
                due = pacer.due()
                if due <= 0:
                    pacer.sleep_until_due()
                    continue
                for _ in range(due):
                    pub.send(message)
                pacer.take(due)
                sent += due
        seconds = time.monotonic() - start
    results.put({"sent": sent, "send_seconds": seconds})


def run_once(
    endpoint: str, spikes_per_s: float | None, batch: int, duration_s: float, latency: bool, keys: str | None = None
) -> dict:
    ctx = multiprocessing.get_context("spawn")
    ready, go, pub_done = ctx.Event(), ctx.Event(), ctx.Event()
    sub_results, pub_results = ctx.Queue(), ctx.Queue()
    sub = ctx.Process(target=subscriber_main, args=(endpoint, ready, go, pub_done, sub_results, latency, keys))
    sub.start()
    if not ready.wait(30):
        sub.kill()
        raise RuntimeError("subscriber process did not start")
    pub = ctx.Process(target=publisher_main, args=(endpoint, go, pub_results, spikes_per_s, batch, duration_s, keys))
    pub.start()
    sent = pub_results.get(timeout=duration_s + 60)
    pub.join(30)
    pub_done.set()
    received = sub_results.get(timeout=60)
    sub.join(30)
    # Rejected or skipped batches are all missing from "received": count each loss once.
    lost = sent["sent"] - received["batches"]
    row = {
        "target_spikes_per_s": spikes_per_s,
        "batch": batch,
        "sent_batches": sent["sent"],
        "received_batches": received["batches"],
        "gaps": received["gaps"],
        "lost": lost,
        "rejected": received["rejected"],
        "sent_spikes_per_s": sent["sent"] * batch / sent["send_seconds"],
        "received_spikes_per_s": received["spikes"] / received["seconds"] if received["seconds"] > 0 else 0.0,
    }
    if latency:
        delays = np.asarray(received["delays_ns"], dtype=np.float64) / 1e6
        row.update(
            n=len(delays),
            p50_ms=float(np.percentile(delays, 50)),
            p99_ms=float(np.percentile(delays, 99)),
            max_ms=float(delays.max()),
        )
    return row


def endpoint_for(transport: str) -> str:
    return random_tcp_endpoint() if transport.startswith("tcp") else ipc_endpoint("bench")


def throughput_ladder(
    transport: str, rates: list[float | None], batch: int, duration_s: float, keys: str | None
) -> list[dict]:
    rows = []
    for rate in rates:
        row = run_once(endpoint_for(transport), rate, batch, duration_s, latency=False, keys=keys)
        kept_pace = rate is None or row["sent_spikes_per_s"] >= 0.95 * rate
        row.update(
            transport=transport,
            kept_pace=kept_pace,
            zero_loss=row["lost"] == 0 and row["gaps"] == 0 and row["rejected"] == 0,
        )
        rows.append(row)
        print(
            f"  {transport} target {fmt_rate(rate):>8}: received {fmt_rate(row['received_spikes_per_s'])} "
            f"spikes/s, lost {row['lost']}",
            file=sys.stderr,
            flush=True,
        )
        if not (row["zero_loss"] and kept_pace):
            break
    return rows


def fmt_rate(rate: float | None) -> str:
    return "max" if rate is None else f"{rate / 1e6:.1f}M"


def parse_rates(text: str) -> list[float | None]:
    return [None if part.strip() == "max" else float(part) for part in text.split(",")]


def best_sustained(rows: list[dict]) -> float:
    good = [r["received_spikes_per_s"] for r in rows if r["zero_loss"] and r["kept_pace"]]
    return max(good, default=0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transports", default="tcp,ipc", help="comma-separated: tcp, ipc (default both)")
    parser.add_argument(
        "--security",
        default="none,curve",
        help="comma-separated: none (plain sockets), curve (CURVE + ZAP); default both",
    )
    parser.add_argument("--rates", default="1e6,4e6,16e6,max", help="spike-rate ladder; 'max' = unpaced")
    parser.add_argument("--batch", type=int, default=2000, help="spikes per message for throughput (default 2000)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    parser.add_argument("--latency-rate", type=float, default=1000.0, help="messages/s for latency (default 1000)")
    parser.add_argument("--latency-batch", type=int, default=10, help="spikes per latency message (default 10)")
    parser.add_argument("--repeats", type=int, default=1, help="repeat everything, report the best (default 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write every run as JSON")
    args = parser.parse_args(argv)
    bases = [t.strip() for t in args.transports.split(",")]
    modes = [m.strip() for m in args.security.split(",")]
    if (
        any(t not in ("tcp", "ipc") for t in bases)
        or any(m not in ("none", "curve") for m in modes)
        or args.batch < 1
        or args.duration <= 0
        or args.repeats < 1
    ):
        parser.error(
            "--transports takes tcp,ipc; --security none,curve; --batch, --duration and --repeats must be positive"
        )
    rates = parse_rates(args.rates)
    key_folder = tempfile.mkdtemp(prefix="closedloop-bench-keys-")
    create_keys(key_folder)
    keys_of = {
        f"{t}+curve" if m == "curve" else t: (key_folder if m == "curve" else None) for t in bases for m in modes
    }
    transports = list(keys_of)

    runs: dict[str, dict[str, list]] = {t: {"throughput": [], "latency": []} for t in transports}
    for repeat in range(args.repeats):
        for transport in transports:
            print(f"repeat {repeat + 1}/{args.repeats}, {transport}", file=sys.stderr, flush=True)
            runs[transport]["throughput"].append(
                throughput_ladder(transport, rates, args.batch, args.duration, keys_of[transport])
            )
            row = run_once(
                endpoint_for(transport),
                args.latency_rate * args.latency_batch,
                args.latency_batch,
                args.duration,
                latency=True,
                keys=keys_of[transport],
            )
            row["transport"] = transport
            runs[transport]["latency"].append(row)

    summary = []
    print(
        f"\nTransport benchmark: best of {args.repeats}; {args.duration:g} s per run; throughput batches of "
        f"{args.batch} spikes; latency {args.latency_rate:g} msg/s of {args.latency_batch} spikes"
    )
    print(
        f"{'transport':<12}{'sustained spikes/s (0 lost)':>29}{'unpaced recv spikes/s':>23}{'unpaced lost':>14}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    )
    for transport in transports:
        ladders = runs[transport]["throughput"]
        sustained = max(best_sustained(ladder) for ladder in ladders)
        unpaced = [r for ladder in ladders for r in ladder if r["target_spikes_per_s"] is None]
        best_unpaced = max(unpaced, key=lambda r: r["received_spikes_per_s"], default=None)
        lat = min(runs[transport]["latency"], key=lambda r: r["p99_ms"])
        summary.append(
            {
                "transport": transport,
                "sustained_spikes_per_s": sustained,
                "unpaced_received_spikes_per_s": best_unpaced and best_unpaced["received_spikes_per_s"],
                "unpaced_lost": best_unpaced and best_unpaced["lost"],
                "latency_lost": lat["lost"],
                "p50_ms": lat["p50_ms"],
                "p99_ms": lat["p99_ms"],
                "max_ms": lat["max_ms"],
            }
        )
        unpaced_text = "-" if best_unpaced is None else f"{best_unpaced['received_spikes_per_s'] / 1e6:.1f}M"
        lost_text = "-" if best_unpaced is None else str(best_unpaced["lost"])
        print(
            f"{transport:<12}{sustained / 1e6:>28.1f}M{unpaced_text:>23}{lost_text:>14}"
            f"{lat['p50_ms']:>9.3f}{lat['p99_ms']:>9.3f}{lat['max_ms']:>9.3f}"
        )
    ok = all(s["sustained_spikes_per_s"] >= GOAL_SPIKES_PER_S and s["p99_ms"] <= GOAL_P99_MS for s in summary)
    print(
        f"goals: >= {GOAL_SPIKES_PER_S / 1e6:g}M spikes/s with none lost, p99 <= {GOAL_P99_MS:g} ms: "
        f"{'met' if ok else 'NOT met'}"
    )
    if args.json:
        for transport in transports:  # keep the JSON small: no raw delays
            for row in runs[transport]["latency"]:
                row.pop("delays_ns", None)
        args.json.write_text(
            json.dumps({"summary": summary, "runs": runs, "args": vars(args) | {"json": str(args.json)}}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
