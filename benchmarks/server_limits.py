"""Benchmark: the model server under hostile load — liveness, fairness, memory (CURVE on).

A `ModelServer` runs as a thread component on tcp loopback with CURVE (certificates made
in a temporary folder); clients in this process present the rig's role keys.  A small
model is fitted first on smooth random images, then:

1. Liveness: one client asks for a Predict of ``--predict`` images (about ``--predict`` ×
   17 kB on the wire) while the runner pings (a Predict with no images) every 20 ms;
   prints the ping latency p50 / max while the prediction runs, and its duration.
2. Fairness: a visitor asks for a huge synthesis (``--huge`` images × 10,000 steps);
   half a second later the runner asks for a small one (preempts the visitor), then a
   second visitor asks for a small one (waits its turn: at most the visitor's budget,
   ``--budget`` s); prints when each was answered and what.
3. Memory: ``--flooders`` clients without keys and one monitor-key client flood the
   server with maximum-size junk for ``--flood`` s; prints the refused connections,
   Error replies and the process's RSS growth next to the bound
   (`ServerSettings.memory_bound_bytes`).

Usage::

    python benchmarks/server_limits.py                   # 2 CPU threads
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time

import numpy as np
import zmq


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predict", type=int, default=3000, help="images of the big Predict (default 3000)")
    parser.add_argument("--huge", type=int, default=1000, help="images of the visitor's synthesis (default 1000)")
    parser.add_argument("--budget", type=float, default=10.0, help="visitors' synthesis budget, s (default 10)")
    parser.add_argument("--flood", type=float, default=3.0, help="seconds of flood (default 3)")
    parser.add_argument("--flooders", type=int, default=4, help="flooding clients without keys (default 4)")
    parser.add_argument(
        "--max-request-mib",
        type=int,
        default=64,
        help="the server's request cap (default 64 MiB, the server's default)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    return parser.parse_args(argv)


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def main(argv: list[str] | None = None) -> int:
    import torch
    from scipy.ndimage import gaussian_filter

    from closedloop.messages import FitRequest, ModelUpdated, PredictRequest, SynthesizeRequest
    from closedloop.model.model_config import ModelConfig
    from closedloop.runtime import Supervisor
    from closedloop.server import ModelServer, ServerSettings
    from closedloop.transport import PLAIN, RequestClient, SocketSecurity, Subscriber, tcp_endpoint, use_security
    from closedloop.transport.keys import create_keys, load_keys

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    keys = tempfile.mkdtemp(prefix="closedloop-bench-keys-")
    create_keys(keys)
    use_security(SocketSecurity(load_keys(keys, "runner")))  # this process is the rig's runner
    config = ModelConfig(
        core_filters=(4,), core_kernels=(5,), pool_kernel=2, pool_stride=2, dense_units=16, max_epochs=30, patience=10
    )
    settings = ServerSettings(
        request_endpoint=tcp_endpoint(),
        events_endpoint=tcp_endpoint(),
        model=config,
        device="cpu",
        seed=1,
        session="bench",
        synthesis_budget_s=args.budget,
        max_request_bytes=args.max_request_mib << 20,
    )
    server = ModelServer("model", settings)
    supervisor = Supervisor([server], mode="thread")
    assert supervisor.start()
    figures: dict[str, float] = {}
    runner = RequestClient(server.request_endpoint, source="runner", session="bench")
    events = Subscriber(server.events_endpoint, topics=[ModelUpdated])
    visitors = [
        RequestClient(
            server.request_endpoint, source=f"visitor{i}", security=SocketSecurity(load_keys(keys, "monitor"))
        )
        for i in range(2)
    ]
    try:
        rng = np.random.default_rng(0)
        images = np.stack([gaussian_filter(x, 3) for x in rng.standard_normal((60, 66, 66))])
        images = ((images - images.min()) / (images.max() - images.min())).astype(np.float32)
        ids = np.arange(60, dtype=np.int64)
        units = np.arange(8, dtype=np.int64)
        rates = rng.gamma(2, 5, (60, 8)) + images.reshape(60, -1)[:, :8] * 20
        time.sleep(0.5)
        assert (
            runner.request(
                FitRequest(block=1, stimulus_ids=ids, rates=rates, unit_ids=units, image_ids=ids, images=images), 10_000
            )
            is not None
        )
        assert events.recv(120_000) is not None, "no model"

        # 1. liveness beside a big prediction
        big = PredictRequest(images=np.resize(images, (args.predict, 66, 66)))
        started = time.perf_counter()
        assert visitors[0].send(big) is not None
        pings = []
        while visitors[0].recv(0) is None:
            assert time.perf_counter() - started < 300, "no answer to the big Predict"
            t0 = time.perf_counter()
            assert runner.request(PredictRequest(images=np.zeros((0, 1, 1), np.float32)), 5000) is not None
            pings.append(time.perf_counter() - t0)
            time.sleep(0.02)
        figures.update(
            predict_images=args.predict,
            predict_mib=big.images.nbytes / 2**20,
            predict_s=time.perf_counter() - started,
            pings=len(pings),
            ping_p50_ms=1e3 * float(np.median(pings)),
            ping_max_ms=1e3 * max(pings),
        )

        # 2. fairness: a visitor's huge synthesis, the runner's and another visitor's small ones
        huge = SynthesizeRequest(unit_ids=np.resize(units, args.huge), targets=np.full(args.huge, np.nan), steps=10_000)
        small = SynthesizeRequest(unit_ids=units[:4], targets=np.full(4, np.nan), steps=20)
        started = time.perf_counter()
        visitors[0].send(huge)
        time.sleep(0.5)
        answers: dict[str, tuple[float, str]] = {}

        def wait(name: str, client: RequestClient) -> None:
            reply = client.recv(120_000)
            text = "none" if reply is None else getattr(reply.message, "code", reply.message.type_name())
            answers[name] = (time.perf_counter() - started, text)

        waiter = threading.Thread(target=wait, args=("huge visitor", visitors[0]))
        waiter.start()
        reply = runner.request(small, 60_000)
        answers["runner"] = (time.perf_counter() - started, reply.message.type_name() if reply else "none")
        visitors[0].send(huge)  # again, then the second visitor's small one waits its turn
        time.sleep(0.5)
        visitors[1].send(small)
        wait("small visitor", visitors[1])
        waiter.join()
        for name, (seconds, what) in answers.items():
            figures[f"{name} answered_s"] = seconds
            figures[f"{name} answer"] = what  # type: ignore[assignment]
        while visitors[0].recv(100) is not None:
            pass

        # 3. flood of maximum-size junk: keyless clients and an allowed-key client
        junk = rng.integers(0, 256, (args.max_request_mib << 20) - 4096, dtype=np.uint8).tobytes()
        context = zmq.Context.instance()
        flooders = []
        for _ in range(args.flooders):
            rogue = context.socket(zmq.DEALER)
            rogue.linger = 0
            PLAIN.apply(rogue, server.request_endpoint, bind=False)
            rogue.connect(server.request_endpoint)
            flooders.append(rogue)
        before, peak, offered, allowed = rss_bytes(), 0, 0, 0
        deadline = time.monotonic() + args.flood
        while time.monotonic() < deadline:
            for rogue in [*flooders, visitors[1].socket]:
                try:
                    # zero-copy: the senders live in this process, and copies queued on their side would
                    # count in the RSS measured for the server
                    rogue.send_multipart([b"PredictRequest", junk], zmq.NOBLOCK, copy=False)
                    offered += 1
                    allowed += rogue is visitors[1].socket
                except zmq.Again:
                    pass
            peak = max(peak, rss_bytes())
            time.sleep(0.005)
        t0 = time.perf_counter()
        assert runner.request(PredictRequest(images=np.zeros((0, 1, 1), np.float32)), 5000) is not None
        ping_after_ms = 1e3 * (time.perf_counter() - t0)
        drained = time.monotonic() + 30
        while server.requests.error_replies < allowed and time.monotonic() < drained:
            peak = max(peak, rss_bytes())
            time.sleep(0.05)
        figures.update(
            flood_offered_mib=offered * len(junk) / 2**20,
            flood_refused=server.requests.refused,
            flood_error_replies=server.requests.error_replies,
            rss_growth_mib=(peak - before) / 2**20,
            bound_mib=settings.memory_bound_bytes(1 + args.flooders) / 2**20,
            allowed_key_junk=allowed,
            ping_after_flood_ms=ping_after_ms,
        )
        for rogue in flooders:
            rogue.close(0)
    finally:
        for client in (runner, events, *visitors):
            client.close()
        supervisor.shutdown()
    print(
        f"liveness: Predict of {figures['predict_images']} images ({figures['predict_mib']:.0f} MiB) took "
        f"{figures['predict_s']:.2f} s; {figures['pings']} pings meanwhile, p50 {figures['ping_p50_ms']:.1f} ms, "
        f"max {figures['ping_max_ms']:.1f} ms"
    )
    for name in ("runner", "huge visitor", "small visitor"):
        print(f"fairness: {name}: {figures[f'{name} answer']} after {figures[f'{name} answered_s']:.2f} s")
    print(
        f"flood: {figures['flood_offered_mib']:.0f} MiB offered; {figures['flood_refused']} connections refused, "
        f"{figures['flood_error_replies']} Error replies (to {figures['allowed_key_junk']} junk requests from "
        f"the allowed key); RSS grew {figures['rss_growth_mib']:.0f} MiB "
        f"(bound {figures['bound_mib']:.0f} MiB); a ping afterwards {figures['ping_after_flood_ms']:.1f} ms"
    )
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
