"""Time to significance: users needed for a +1 % relative uCTR lift, and the wall time to
simulate them in process (one process, and sharded over Ray tasks) and through Ray Serve.

    .venv/bin/python benchmarks/bench_time_to_significance.py [--config configs/default.toml]
        [--sample-users 1000] [--lift 0.01] [--modes inprocess,ray,serve]

Method (printed with the figures):
1. A sample of ``--sample-users`` users of the config's experiment is simulated with each
   mode (models trained first if missing; not timed). uCTR's per-user variance comes from
   the control arm of the first sample; users needed = (z_{1-α/2} + z_power)² σ² (1/s_C +
   1/s_T) / (lift · uCTR)², without and with CUPED (σ of clicked − θ·pre_clicked, θ the
   pooled regression slope on the pre-period).
2. Each mode's throughput (pages/s) is measured on the sample, start-up excluded (Ray actors
   building the world and models, Serve deploying the app: reported separately), and the
   wall time for the users needed is extrapolated linearly: start-up + pages needed / pages/s.
   Extrapolated, not run: the point is the order of magnitude on this machine. The world is
   built once, outside the timings; training is not timed either.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from abtest.arms import resolve_arms
from abtest.config import load_config
from abtest.experiment import run_experiment
from abtest.stats import users_needed
from simulator.config import load_world_config
from simulator.world import World

MODES = {"inprocess": ("inprocess", 1), "ray": ("inprocess", 2), "serve": ("serve", 1)}
"""Mode -> (through, workers): one process, two Ray actors, the cascade on Ray Serve."""


def measure(config, mode: str, world: World) -> dict:
    """Simulate the sample in one mode: its result, start-up seconds and pages per second."""
    through, workers = MODES[mode]
    result = run_experiment(config, through=through, workers=workers, world=world)
    t = result.timings
    pages = float(result.user_days["pages"].sum())
    if config.pre_period.source == "simulate":  # simulated pre-period pages were traffic too
        pages += float(result.users["pre_pages"].sum())
    return {"result": result, "startup_s": t["setup"], "pages_per_s": pages / t["traffic"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", default="configs/default.toml", help="experiment config (default: %(default)s)"
    )
    parser.add_argument(
        "--sample-users", type=int, default=1000, help="users simulated per mode (default: %(default)s)"
    )
    parser.add_argument("--lift", type=float, default=0.01, help="relative uCTR lift (default: %(default)s)")
    parser.add_argument(
        "--modes",
        default="inprocess,ray,serve",
        help="comma-separated, of: inprocess, ray, serve (default: all)",
    )
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    if set(modes) - set(MODES):
        parser.error(f"unknown mode(s) {sorted(set(modes) - set(MODES))}; choose from {list(MODES)}")

    config = load_config(args.config)
    config = resolve_arms(config, load_world_config(config.world), log=lambda m: print(m, file=sys.stderr))
    n = min(args.sample_users, config.traffic.users)
    sample = config.replace(traffic={"users": n, "shard_users": max(1, n // 8)}, stats={"funnel_users": 0})
    alpha, power = config.stats.alpha, config.stats.power
    world = World(load_world_config(config.world))
    rows = {}
    for mode in modes:
        print(
            f"measuring {mode} on {n:,} users x {config.traffic.days} day(s) ...", file=sys.stderr, flush=True
        )
        rows[mode] = measure(sample, mode, world)

    first = rows[modes[0]]["result"]
    control = first.users[first.users["arm"] == config.control]
    p, sigma = float(control["clicked"].mean()), float(control["clicked"].std(ddof=1))
    treatment = next(a for a in config.arm_names if a != config.control)
    shares = dict(zip(config.arm_names, config.shares, strict=True))
    pair = (shares[config.control], shares[treatment])
    # users_needed counts the users of the two compared arms when shares sum to < 1; scale
    # to all arms' users
    needed_raw = users_needed(p, sigma, args.lift, alpha, power, pair) / sum(pair)
    cuped_sigma = sigma
    if "pre_clicked" in first.users and first.users["pre_clicked"].std() > 0:  # CUPED: y - θ x
        y, x = first.users["clicked"], first.users["pre_clicked"]
        theta = float(y.cov(x) / x.var())
        cuped_sigma = float((control["clicked"] - theta * control["pre_clicked"]).std(ddof=1))
    needed_cuped = users_needed(p, cuped_sigma, args.lift, alpha, power, pair) / sum(pair)
    pages_per_user = float(first.user_days["pages"].sum()) / len(first.users)

    print(f"\nconfig {args.config}: {config.traffic.days} day(s), arms {list(config.arm_names)}")
    print(f"uCTR of the control ({len(control):,} users): p = {p:.4f}, sigma = {sigma:.4f} per user")
    print(
        f"+{100 * args.lift:g} % relative = {args.lift * p:.5f} absolute; alpha {alpha}, power {power}; "
        f"CUPED sigma {cuped_sigma:.4f}"
    )
    print(
        f"users needed (all arms): {math.ceil(needed_raw):,} without CUPED, {math.ceil(needed_cuped):,} with"
    )
    print(f"pages per user over the experiment: {pages_per_user:.2f}\n")
    header = f"{'mode':<10} {'pages/s':>9} {'start-up s':>11} {'hours (raw)':>12} {'hours (CUPED)':>14}"
    print(header)
    print("-" * len(header))
    for mode, row in rows.items():
        hours = [
            (row["startup_s"] + needed * pages_per_user / row["pages_per_s"]) / 3600
            for needed in (needed_raw, needed_cuped)
        ]
        rate, startup = row["pages_per_s"], row["startup_s"]
        print(f"{mode:<10} {rate:>9.1f} {startup:>11.1f} {hours[0]:>12.2f} {hours[1]:>14.2f}")
    load = os.getloadavg()
    print(
        "\nwall times are extrapolated from the sample's throughput (pages/s, start-up excluded), "
        f"not simulated; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} cores"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
