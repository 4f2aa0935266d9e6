"""A bounded load test of the HTTP API: its capacity, then twice that offered for a minute.

Capacity is the rate of 200s of a closed loop (``--threads`` clients posting back to back).
The load is an open loop: request i is due at ``start + i / rate`` whatever the answers, sent
by a pool of ``--workers`` threads; its latency counts from when it was due (so a client that
falls behind shows as latency, not as a lower rate). Every request sent is answered (a status)
or counted as failed (no answer: connection error or timeout). The app admits
``max_ongoing_requests + max_queued_requests`` requests at once and answers the next with
Serve's 503 (``Retry-After``): the deliberate overload answer.

    .venv/bin/python benchmarks/bench_load.py [--layout fused] [--seconds 60] [--factor 2]

The app is the default world's cascade of seeded full-size models (``bench_serving``).
Measured figures: docs/ray_notes.md ("The served cascade's HTTP contract, layouts and load").
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

from policies.features import FeatureStore
from serving.app import init_ray, start
from serving.args import AppArgs
from simulator.config import WorldConfig
from simulator.world import World

TIMEOUT_S = 10.0
"""A request unanswered for this long is failed (counted, never lost)."""


@dataclasses.dataclass
class Load:
    """What a run of the load sent and got back."""

    seconds: float
    sent: int
    statuses: collections.Counter  # HTTP status -> count
    failed: collections.Counter  # exception name -> count (no answer)
    latency_ms: dict[int, np.ndarray]  # HTTP status -> latencies

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def lost(self) -> int:
        """Sent, neither answered nor counted as failed (0 unless the driver is wrong)."""
        return self.sent - self.answered - sum(self.failed.values())

    def rate(self, status: int | None = None) -> float:
        """Requests (of ``status``) per second."""
        return (self.sent if status is None else self.statuses[status]) / self.seconds

    def summary(self) -> str:
        lines = [
            f"sent {self.sent} in {self.seconds:.1f} s ({self.rate():.1f}/s);"
            f" statuses {dict(sorted(self.statuses.items()))}; failed {dict(self.failed)}; lost {self.lost}"
        ]
        for status, ms in sorted(self.latency_ms.items()):
            p50, p90, p99 = np.percentile(ms, [50, 90, 99])
            lines.append(
                f"  {status}: p50 {p50:7.1f} ms  p90 {p90:7.1f} ms  p99 {p99:7.1f} ms  (n={len(ms)})"
            )
        return "\n".join(lines)


class Client:
    """Posts page requests of random users (seeded) to ``url`` from any thread."""

    def __init__(self, url: str, n_users: int, seed: int = 0) -> None:
        self.url, self.n_users = url, n_users
        self._users = np.random.default_rng(seed).integers(0, n_users, 1 << 16)
        self._local = threading.local()

    def post(self, i: int) -> int:
        """The status of request ``i``; raises ``requests.RequestException`` without an answer."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        body = {"user_id": int(self._users[i % len(self._users)]), "session": i // len(self._users)}
        return session.post(self.url, json=body, timeout=TIMEOUT_S).status_code


def _collect(results: list[tuple[int | str, float]], seconds: float, sent: int) -> Load:
    statuses, failed, latency = collections.Counter(), collections.Counter(), collections.defaultdict(list)
    for outcome, ms in results:
        if isinstance(outcome, int):
            statuses[outcome] += 1
            latency[outcome].append(ms)
        else:
            failed[outcome] += 1
    return Load(seconds, sent, statuses, failed, {s: np.asarray(v) for s, v in latency.items()})


def _send(client: Client, i: int, due: float) -> tuple[int | str, float]:
    try:
        outcome: int | str = client.post(i)
    except requests.RequestException as err:
        outcome = type(err).__name__
    return outcome, 1e3 * (time.perf_counter() - due)


def closed_loop(client: Client, threads: int, seconds: float) -> Load:
    """``threads`` clients posting back to back for ``seconds``."""
    results: list[tuple[int | str, float]] = []
    counter = iter(range(1 << 62))
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def loop() -> None:
        while time.perf_counter() < stop:
            with lock:
                i = next(counter)
            outcome = _send(client, i, time.perf_counter())
            with lock:
                results.append(outcome)

    start = time.perf_counter()
    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return _collect(results, time.perf_counter() - start, len(results))


def open_loop(client: Client, rate: float, seconds: float, workers: int) -> Load:
    """Request i due at ``i / rate`` seconds for ``seconds``, sent by ``workers`` threads;
    waits for every answer (at most ``TIMEOUT_S`` after the last is sent)."""
    n = int(rate * seconds)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        start = time.perf_counter()
        futures = []
        for i in range(n):
            due = start + i / rate
            time.sleep(max(0.0, due - time.perf_counter()))
            futures.append(pool.submit(_send, client, i, due))
        results = [f.result() for f in futures]
    return _collect(results, seconds, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layout", choices=["split", "fused"], default="fused")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the load runs")
    parser.add_argument("--factor", type=float, default=2.0, help="offered rate / measured capacity")
    parser.add_argument("--capacity-seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=8, help="clients of the capacity loop")
    parser.add_argument("--workers", type=int, default=64, help="threads sending the load")
    parser.add_argument("--max-ongoing", type=int, default=8, help="the app's max_ongoing_requests")
    parser.add_argument("--max-queued", type=int, default=8, help="the ingress's max_queued_requests")
    args = parser.parse_args()

    from bench_serving import free_port, seeded_cascade  # noqa: PLC0415 (run as a script: this folder is on the path)

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    config = WorldConfig()
    world = World(config)
    with tempfile.TemporaryDirectory() as tmp:
        _, coarse, fine = seeded_cascade(world, FeatureStore.from_world(world), "dssm", Path(tmp))
        del world
        init_ray(object_store_memory=1024 * 2**20)
        app_args = AppArgs(
            world="default",
            arms={"control": {"coarse": str(coarse)}},
            fine=str(fine),
            port=free_port(),
            layout=args.layout,
            max_ongoing_requests=args.max_ongoing,
            max_queued_requests=args.max_queued,
        )
        served = start(app_args, name="bench-load")
        try:
            client = Client(f"{served.url}/rank", config.n_users)
            closed_loop(client, args.threads, 2.0)  # warm-up
            measured = closed_loop(client, args.threads, args.capacity_seconds)
            cap = measured.rate(200)
            print(f"layout {args.layout}, admits {args.max_ongoing} + {args.max_queued} queued")
            print(
                f"capacity (closed loop, {args.threads} clients): {cap:.1f} requests/s\n{measured.summary()}"
            )
            rate = args.factor * cap
            print(f"offered {rate:.1f} requests/s ({args.factor:g} x capacity) for {args.seconds:g} s ...")
            load = open_loop(client, rate, args.seconds, args.workers)
            print(load.summary())
            print(f"served {load.rate(200):.1f} requests/s = {load.rate(200) / cap:.2f} x capacity")
        finally:
            served.stop()


if __name__ == "__main__":
    main()
