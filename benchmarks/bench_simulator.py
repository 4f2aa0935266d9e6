"""Simulator throughput: pages/s and impressions/s, and the default world's memory.

(a) recall 1,000, page 10, random ranking; (b) the default world (recall 5,000) with the
oracle ranking; or, with --world, that world against itself with phenomenon knobs off (issue
13's constraint: a phenomenon costs at most 10 % of the throughput, measured in the same run).
With --world the ranking is random by default, so the figures time the simulator (recall,
responses) rather than a policy: the oracle scores the whole recall set at session start, which
costs per session, not per page. Sessions run to the end under a ranking fixed at session start;
each scenario's figure is the best of --repeats runs, the scenarios interleaved, so a load that
comes and goes does not favour one of them. Batches
are spread over forked worker processes (the world is built once, before the fork, and
shared copy-on-write); results are the same for any worker count because every draw is
keyed by the session, not by the batch.

    .venv/bin/python benchmarks/bench_simulator.py [--sessions N] [--workers W]
    .venv/bin/python benchmarks/bench_simulator.py --world configs/world_feed.toml [--off KNOB] [--policy P]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one BLAS thread per worker process

import argparse
import multiprocessing
import resource
import time

import numpy as np

from simulator.config import PHENOMENON_KNOBS, WorldConfig, load_world_config
from simulator.describe import baseline_scores
from simulator.recall import SessionKeys
from simulator.session import Simulator, run_static
from simulator.world import World

_WORLD: World | None = None  # set before forking; workers inherit it


def _run(args: tuple[str, SessionKeys]) -> tuple[float, float]:
    policy, keys = args
    totals = run_static(Simulator(_WORLD), keys, baseline_scores(_WORLD)[policy])
    return totals.pages.sum(), totals.impressions.sum()


def throughput(world: World, policy: str, n_sessions: int, batch_size: int, workers: int) -> dict:
    global _WORLD  # noqa: PLW0603  (fork-shared read-only world)
    _WORLD = world
    keys = SessionKeys.of(np.arange(n_sessions) % world.config.n_users, session=np.arange(n_sessions))
    batches = [(policy, keys.take(slice(lo, lo + batch_size))) for lo in range(0, n_sessions, batch_size)]
    _run(batches[0])  # warm-up
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pool.map(_run, batches[:workers])  # start the workers before timing
        start = time.perf_counter()
        results = pool.map(_run, batches, chunksize=1)
        seconds = time.perf_counter() - start
    pages = sum(r[0] for r in results)
    impressions = sum(r[1] for r in results)
    return {
        "pages_per_s": pages / seconds,
        "impressions_per_s": impressions / seconds,
        "pages_per_session": pages / n_sessions,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=20_000, help="sessions per scenario")
    parser.add_argument("--batch-size", type=int, default=256, help="sessions per simulator call")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2 cores here)")
    parser.add_argument(
        "--world",
        metavar="SPEC",
        help="instead: this world (a TOML file, 'default' or 'small') against itself with --off knobs at 0",
    )
    parser.add_argument(
        "--off",
        nargs="+",
        choices=PHENOMENON_KNOBS,
        default=list(PHENOMENON_KNOBS),
        metavar="KNOB",
        help="the knobs --world's reference turns off (default: every phenomenon)",
    )
    parser.add_argument(
        "--policy",
        choices=("random", "popularity", "oracle"),
        default="random",
        help="--world's ranking (default random: the simulator's own cost)",
    )
    parser.add_argument(
        "--repeats", type=int, help="runs per scenario, the best kept (default: 3 with --world, else 1)"
    )
    args = parser.parse_args()

    if args.world:
        world = load_world_config(args.world)
        scenarios = [
            (f"(c) {args.world}, {args.policy}", world, args.policy, None),
            ("(d) the same, knobs off", world.replace(**dict.fromkeys(args.off, 0)), args.policy, None),
        ]
    else:
        scenarios = [
            (
                "(a) recall 1,000, random",
                WorldConfig(recall_size=1_000, logging_coarse_size=600),
                "random",
                50_000,
            ),
            ("(b) default world, oracle", WorldConfig(), "oracle", 5_000),
        ]
    repeats = args.repeats or (3 if args.world else 1)
    if repeats < 1 or args.sessions < 1 or args.batch_size < 1 or args.workers < 1:
        parser.error("--repeats, --sessions, --batch-size and --workers must be at least 1")
    built = []
    for name, config, policy, target in scenarios:
        start = time.perf_counter()
        built.append((name, World(config), policy, target, time.perf_counter() - start))
    best: list[dict] = [{"pages_per_s": 0.0} for _ in built]
    for _ in range(repeats):  # interleaved: scenario a, b, a, b, ...
        for i, (_, world, policy, _, _) in enumerate(built):
            r = throughput(world, policy, args.sessions, args.batch_size, args.workers)
            best[i] = max(best[i], r, key=lambda x: x["pages_per_s"])
    name_width = max(28, *(len(name) + 2 for name, *_ in scenarios))
    columns = f"{'build s':>9}{'pages/s':>11}{'impr./s':>12}{'pages/sess':>12}{'target':>14}"
    print(f"{'scenario':<{name_width}}{columns}  (best of {repeats})")
    rates = [r["pages_per_s"] for r in best]
    for (name, _, _, target, build), r in zip(built, best, strict=True):
        verdict = ""
        if target is not None:
            verdict = f"{target:,} " + ("ok" if r["pages_per_s"] >= target else "MISSED")
        print(
            f"{name:<{name_width}}{build:>9.1f}{r['pages_per_s']:>11,.0f}{r['impressions_per_s']:>12,.0f}"
            f"{r['pages_per_session']:>12.2f}{verdict:>14}"
        )
    if args.world:
        ratio = rates[0] / rates[1]
        verdict = "ok" if ratio >= 0.9 else "MISSED"
        off = ", ".join(args.off)
        print(f"pages/s with the knobs on / off: {ratio:.3f} (target >= 0.90: {verdict}; off: {off})")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak resident memory of this process (both worlds built): {peak:.2f} GiB (target < 2 GiB)")


if __name__ == "__main__":
    main()
