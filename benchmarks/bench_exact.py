"""What the exact-expectation metrics buy and cost: per-user paired differences of realised,
expected-given-the-pages and exact clicks, uCTR and GMV, and the traffic time with and without
the exact totals, on two cascades of the default world that differ only in the coarse cut.

    .venv/bin/python benchmarks/bench_exact.py [--users 150] [--day 1] [--cuts 600,300]

Both arms use the trained DSSM coarse ranker and the fine ranker (runs/models, trained first
if missing) and run the same users on the same random numbers (one session each on ``--day``).
Printed per metric: the arms' means, the lift, and the std of the per-user difference divided
by the control's mean (the MDE of a paired test is (z_{1-a/2} + z_power) times this over
sqrt(users)); then seconds per arm without and with ``exact`` (same realised sessions, checked).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

from abtest.arms import ArmSpec, build_cascades
from policies.cascade import run_sessions
from policies.train import ensure_checkpoint
from simulator.config import load_world_config
from simulator.recall import SessionKeys
from simulator.session import Simulator
from simulator.world import World


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=150, help="users 0..users-1 (default: %(default)s)")
    parser.add_argument("--day", type=int, default=1, help="the sessions' day (default: %(default)s)")
    parser.add_argument(
        "--cuts", default="600,300", help="control,treatment coarse cut (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cuts = [int(c) for c in args.cuts.split(",")]
    coarse = ensure_checkpoint("configs/models/coarse_dssm.toml", "coarse")
    fine = ensure_checkpoint("configs/models/fine.toml", "fine")
    world = World(load_world_config("default"))
    sim = Simulator(world)
    arms = {name: ArmSpec(coarse, fine, cut, "default") for name, cut in zip(("c", "t"), cuts, strict=True)}
    cascades = build_cascades(world, arms)
    keys = SessionKeys.of(np.arange(args.users), day=args.day)
    seconds, totals = {}, {}
    for exact in (False, True):
        for arm, cascade in cascades.items():
            start = time.perf_counter()
            totals[arm, exact] = run_sessions(sim, cascade, keys, exact=exact).totals
            seconds[arm, exact] = time.perf_counter() - start
    same = all(
        np.array_equal(getattr(totals[a, False], f), getattr(totals[a, True], f))
        for a in cascades
        for f in ("pages", "clicks", "purchases", "gmv")
    )
    columns = {
        "clicks": lambda t: t.clicks,
        "expected_clicks": lambda t: t.expected_clicks,
        "exact_clicks": lambda t: t.exact.clicks,
        "uctr": lambda t: (t.clicks > 0).astype(float),
        "exact_uctr": lambda t: t.exact.clicked,
        "gmv": lambda t: t.gmv,
        "expected_gmv": lambda t: t.expected_gmv,
        "exact_gmv": lambda t: t.exact.gmv,
    }
    print(f"{args.users} users, day {args.day}, DSSM coarse cut {cuts[0]} (c) vs {cuts[1]} (t), fine ranker")
    print(f"{'metric':<16} {'mean c':>9} {'mean t':>9} {'lift':>8} {'std(diff)/mean c':>17}")
    for name, get in columns.items():
        c, t = get(totals["c", True]), get(totals["t", True])
        ratio = (t - c).std(ddof=1) / c.mean()
        print(f"{name:<16} {c.mean():>9.4f} {t.mean():>9.4f} {t.mean() / c.mean() - 1:>+8.2%} {ratio:>17.3f}")
    for arm in cascades:
        print(f"arm {arm}: {seconds[arm, False]:.1f} s plain, {seconds[arm, True]:.1f} s with exact totals")
    load = os.getloadavg()
    print(f"realised sessions identical with and without exact: {same}; load average {load[0]:.1f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
