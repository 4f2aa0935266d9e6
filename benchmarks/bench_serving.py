"""The served cascade at the default world's sizes (recall 5,000 -> coarse 600 -> page 10).

Prints single-request latency p50 / p99 in process, then for each app layout (``split``: a
deployment per stage, ``fused``: the ingress runs every stage) over HTTP and by handle with the
ratio of the HTTP p50 to the in-process p50, the throughput of the batched handle path next to
the in-process cascade measured in the same run (and their ratio), and the memory of the Ray
processes. The models are freshly initialised (seeded, untrained) at
full size: a DSSM coarse ranker (``--coarse full``: every switch on) and the DIN fine ranker;
their cost does not depend on their weights.

    .venv/bin/python benchmarks/bench_serving.py [--requests 2048] [--latency-requests 300] \
        [--layouts split fused]

Targets: HTTP p50 <= 2 x in-process (fused), p99 <= 50 ms; batched throughput >= 0.5 x in-process.
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
import torch

from policies.cascade import Cascade, CascadeSizes
from policies.checkpoint import save_checkpoint
from policies.features import FeatureStore, vocab_of
from policies.models import CoarseConfig, CoarseRanker, FineConfig, FineRanker
from policies.rankers import load_scorer
from serving.app import init_ray, start
from serving.args import AppArgs
from serving.client import ServeRanker
from serving.pipeline import PageRequests
from simulator.config import WorldConfig
from simulator.recall import Recall, SessionKeys
from simulator.world import World

COARSE = {
    "dssm": CoarseConfig(),
    "full": CoarseConfig(mlp_scorer=True, fm_cross=True, nova=True, senet_bilinear=True),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seeded_cascade(
    world: World, features: FeatureStore, coarse: str, folder: Path
) -> tuple[Cascade, Path, Path]:
    """The cascade of freshly initialised full-size ``COARSE[coarse]`` and DIN fine models
    (seeded; timing needs real shapes, not training), and their checkpoints in ``folder``."""
    vocab = vocab_of(world.config)
    coarse_path, fine_path = folder / "coarse.pt", folder / "fine.pt"
    save_checkpoint(coarse_path, CoarseRanker(COARSE[coarse], vocab, seed=0))
    save_checkpoint(fine_path, FineRanker(FineConfig(), vocab, seed=1))
    cascade = Cascade(
        load_scorer(str(coarse_path), world, features, "coarse"),
        load_scorer(str(fine_path), world, features, "fine"),
        CascadeSizes(world.config.logging_coarse_size, world.config.page_size),
    )
    return cascade, coarse_path, fine_path


def _mib(kib: int) -> float:
    return kib / 1024


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(pid))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def ray_memory() -> list[tuple[str, float, float]]:
    """(name, RSS MiB, PSS MiB) of the Ray processes this driver started (PSS splits shared
    pages, e.g. the object-store copy of the world, between the processes that map them)."""
    rows = []
    for pid in _descendants(os.getpid()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().split("\n")
        except OSError:
            continue
        if not cmd:
            continue
        fields = {line.split(":")[0]: int(line.split()[1]) for line in rollup[1:] if line.strip()}
        if cmd.startswith("ray::"):
            name = cmd.split()[0]
        else:
            name = next((Path(p).name for p in cmd.split() if p.endswith(".py")), Path(cmd.split()[0]).name)
        rows.append((name, _mib(fields.get("Rss", 0)), _mib(fields.get("Pss", 0))))
    return sorted(rows, key=lambda r: -r[1])


def in_process_throughput(world: World, cascade: Cascade, users: np.ndarray, chunk: int) -> float:
    """Requests per second of recall + Cascade.rank in this process, ``chunk`` per call."""
    recall = Recall(world)
    cascade.rank(users[:chunk], recall(SessionKeys.of(users[:chunk])).items)  # warm-up
    start_ = time.perf_counter()
    for lo in range(0, len(users), chunk):
        part = users[lo : lo + chunk]
        cascade.rank(part, recall(SessionKeys.of(part)).items)
    return len(users) / (time.perf_counter() - start_)


def percentiles(ms: list[float]) -> str:
    a = np.asarray(ms)
    return f"p50 {np.percentile(a, 50):6.1f} ms   p99 {np.percentile(a, 99):6.1f} ms   (n={len(a)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2048, help="requests for each throughput figure")
    parser.add_argument("--latency-requests", type=int, default=300)
    parser.add_argument("--chunk", type=int, default=64, help="requests per batched call")
    parser.add_argument("--in-flight", type=int, default=4, help="batched calls in flight")
    parser.add_argument("--coarse", choices=sorted(COARSE), default="dssm")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in process (replicas: 1 each)")
    parser.add_argument(
        "--layouts",
        nargs="+",
        choices=["split", "fused"],
        default=["split", "fused"],
        help="app layouts to serve",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = WorldConfig()
    rng = np.random.default_rng(0)
    print(
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores;"
        f" in-process torch threads {torch.get_num_threads()}"
    )

    t = time.perf_counter()
    world = World(config)
    features = FeatureStore.from_world(world)
    print(f"world built in {time.perf_counter() - t:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        cascade, coarse_path, fine_path = seeded_cascade(world, features, args.coarse, Path(tmp))
        users = rng.integers(0, config.n_users, args.requests)
        local = in_process_throughput(world, cascade, users, args.chunk)
        print(f"in-process cascade ({args.coarse} coarse + DIN fine): {local:7.1f} requests/s")
        print(f"single request, in process: {percentiles(in_process_latency(world, cascade, users))}")

        init_ray(object_store_memory=1024 * 2**20)
        for layout in args.layouts:
            app_args = AppArgs(
                world="default",
                arms={"control": {"coarse": str(coarse_path)}},
                fine=str(fine_path),
                port=free_port(),
                layout=layout,
            )
            serve_layout(app_args, world, cascade, users, local, args, rng)


def in_process_latency(world: World, cascade: Cascade, users: np.ndarray) -> list[float]:
    """Milliseconds of recall + ``Cascade.rank`` of one user, for each of ``users``."""
    recall, ms = Recall(world), []
    for user in users:
        t = time.perf_counter()
        cascade.rank([user], recall(SessionKeys.of([user])).items)
        ms.append(1e3 * (time.perf_counter() - t))
    return ms


def serve_layout(app_args: AppArgs, world: World, cascade: Cascade, users, local, args, rng) -> None:
    """Start the app in ``app_args.layout`` and print its latencies with the ratio of the HTTP
    p50 to the in-process p50 measured right after it (the machine's load varies), its batched
    throughput and the memory of the Ray processes."""
    config = world.config
    t = time.perf_counter()
    served = start(app_args, name="bench")
    print(
        f"\n[{app_args.layout}] Ray + Serve + app started in {time.perf_counter() - t:.1f} s at {served.url}"
    )
    try:
        url = f"{served.url}/rank"
        session = requests.Session()
        for user in rng.integers(0, config.n_users, 20):  # warm-up
            session.post(url, json={"user_id": int(user)}, timeout=30).raise_for_status()
        http_ms, handle_ms = [], []
        for user in rng.integers(0, config.n_users, args.latency_requests):
            t = time.perf_counter()
            session.post(url, json={"user_id": int(user)}, timeout=30).raise_for_status()
            http_ms.append(1e3 * (time.perf_counter() - t))
        for user in rng.integers(0, config.n_users, args.latency_requests):
            t = time.perf_counter()
            served.rank(PageRequests.of([user]))
            handle_ms.append(1e3 * (time.perf_counter() - t))
        local_ms = in_process_latency(world, cascade, users[: args.latency_requests])
        print(f"single request, HTTP:       {percentiles(http_ms)}")
        print(f"single request, handle:     {percentiles(handle_ms)}")
        print(f"single request, in process: {percentiles(local_ms)}")
        ratio = np.percentile(http_ms, 50) / np.percentile(local_ms, 50)
        print(f"[{app_args.layout}] HTTP p50 / in-process p50 = {ratio:.2f} (target <= 2)")

        ranker = ServeRanker(served.handle, chunk=args.chunk, max_in_flight=args.in_flight)
        ranker.rank(PageRequests.of(users[: args.chunk]))  # warm-up
        t = time.perf_counter()
        res = ranker.rank(PageRequests.of(users))
        remote = len(users) / (time.perf_counter() - t)
        expected = cascade.rank(users[:64], Recall(world)(SessionKeys.of(users[:64])).items)
        assert np.array_equal(res.items[:64], expected.page), "served pages differ from in-process"
        print(
            f"batched handle ({args.chunk} per call, {args.in_flight} in flight):"
            f" {remote:7.1f} requests/s = {remote / local:.2f} x in-process (pages identical)"
        )
        memory = ray_memory()
        print(f"\n{'Ray process':<42}{'RSS MiB':>9}{'PSS MiB':>9}")
        for name, rss, pss in memory:
            print(f"{name[:41]:<42}{rss:9.0f}{pss:9.0f}")
        replicas = [m for m in memory if m[0].startswith("ray::ServeReplica")]
        print(
            f"{'total':<42}{sum(m[1] for m in memory):9.0f}{sum(m[2] for m in memory):9.0f}\n"
            f"{'of which the app replicas':<42}{sum(m[1] for m in replicas):9.0f}"
            f"{sum(m[2] for m in replicas):9.0f}"
        )
    finally:
        served.stop()


if __name__ == "__main__":
    main()
