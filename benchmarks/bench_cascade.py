"""Pages per second of the cascade: per-page rescoring against scoring each session once per
stage, in process and through Ray Serve, measured in one run (default world sizes, freshly
initialised seeded full-size models as in ``bench_serving.py``: a DSSM coarse ranker, or every
switch on with ``--coarse full``, and the DIN fine ranker; their cost does not depend on their
weights). Every path runs the same sessions (``run_sessions``) and must show the same pages.

    .venv/bin/python benchmarks/bench_cascade.py [--sessions 300] [--exact-sessions 40]
        [--serve-sessions 300]

Two workloads: the realised sessions (pages until the user leaves, ~2.5 a session: what a
production cascade serves), and the A/B traffic's (``run_sessions(exact=True)``, what every
experiment runs: each session is also ranked beyond where the user left, while the chance of
reaching a page is above ``EXACT_TOLERANCE``, for the exact metrics). Scoring once saves the
more the more pages a session has.

Targets (issue 12): session-scored >= 10 x per-page in process; Serve >= 0.5 x in process.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_serving import COARSE, free_port, seeded_cascade

from policies.cascade import run_sessions
from policies.features import FeatureStore
from serving.app import init_ray, start
from serving.args import AppArgs
from simulator.config import WorldConfig
from simulator.recall import SessionKeys
from simulator.session import Simulator
from simulator.world import World


def timed(
    sim: Simulator, ranker, keys: SessionKeys, exact: bool = False
) -> tuple[float, list[np.ndarray], float]:
    """(pages/s, the pages shown, total pages) of ``keys`` run through ``ranker``; the pages
    are those viewed, or with ``exact`` every page ranked (also beyond where users left)."""
    pages = []

    def recording(batch):
        ranked = ranker(batch)
        pages.append(ranked.page)
        return ranked

    t = time.perf_counter()
    out = run_sessions(sim, recording, keys, exact=exact)
    n = float(sum((p >= 0).any(axis=1).sum() for p in pages) if exact else out.totals.pages.sum())
    return n / (time.perf_counter() - t), pages, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=300, help="sessions of each in-process figure")
    parser.add_argument("--exact-sessions", type=int, default=40, help="sessions of the A/B-traffic figures")
    parser.add_argument("--serve-sessions", type=int, default=300, help="sessions through Serve")
    parser.add_argument("--chunk", type=int, default=64, help="requests per batched Serve call")
    parser.add_argument("--in-flight", type=int, default=4, help="batched calls in flight")
    parser.add_argument("--coarse", choices=sorted(COARSE), default="dssm")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in process (replicas: 1 each)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = WorldConfig()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; torch threads {args.threads}")
    world = World(config)
    features = FeatureStore.from_world(world)
    sim = Simulator(world)
    with tempfile.TemporaryDirectory() as tmp:
        cascade, coarse_path, fine_path = seeded_cascade(world, features, args.coarse, Path(tmp))
        keys = SessionKeys.of(np.arange(args.sessions), day=0)
        per_page, ref_pages, n = timed(
            sim, lambda b: cascade.rank(b.keys.user, b.recall.items, b.shown), keys
        )
        print(
            f"in process, per-page rescoring: {per_page:8.1f} pages/s ({n:.0f} pages,"
            f" {n / len(keys):.2f} per session: about the most scoring once per session can gain)"
        )
        scored, pages, _ = timed(sim, cascade, keys)
        assert all(np.array_equal(a, b) for a, b in zip(pages, ref_pages, strict=True)), "pages differ"
        print(
            f"in process, session-scored:     {scored:8.1f} pages/s = {scored / per_page:.1f} x per-page"
            " (pages identical)"
        )
        exact_keys = SessionKeys.of(np.arange(args.exact_sessions), day=1)
        exact_per_page, ref_pages, n = timed(
            sim, lambda b: cascade.rank(b.keys.user, b.recall.items, b.shown, b.keys.day), exact_keys, True
        )
        print(
            f"A/B traffic (exact=True), per-page rescoring: {exact_per_page:8.1f} pages/s ({n:.0f} pages"
            f" ranked, {n / len(exact_keys):.1f} per session)"
        )
        exact_scored, pages, _ = timed(sim, cascade, exact_keys, True)
        assert all(np.array_equal(a, b) for a, b in zip(pages, ref_pages, strict=True)), "pages differ"
        print(
            f"A/B traffic (exact=True), session-scored:     {exact_scored:8.1f} pages/s"
            f" = {exact_scored / exact_per_page:.1f} x per-page (pages identical)"
        )

        init_ray(object_store_memory=1024 * 2**20)
        app_args = AppArgs(
            world="default",
            arms={"control": {"coarse": str(coarse_path)}},
            fine=str(fine_path),
            port=free_port(),
        )
        served = start(app_args, name="bench-cascade")
        try:
            ranker = served.ranker(arm="control", chunk=args.chunk, max_in_flight=args.in_flight)
            serve_keys = SessionKeys.of(np.arange(args.sessions, args.sessions + args.serve_sessions), day=0)
            timed(
                sim, ranker, SessionKeys.of(np.arange(config.n_users - args.chunk, config.n_users), day=9)
            )  # warm-up
            remote, remote_pages, n = timed(sim, ranker, serve_keys)
            _, local_pages, _ = timed(sim, cascade, serve_keys)
            assert all(np.array_equal(a, b) for a, b in zip(remote_pages, local_pages, strict=True))
            print(
                f"Serve, session-scored ({args.chunk} per call, {args.in_flight} in flight):"
                f" {remote:8.1f} pages/s = {remote / scored:.2f} x in process ({n:.0f} pages, identical)"
            )
        finally:
            served.stop()
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
