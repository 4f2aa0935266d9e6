"""Power and time to decision per design: the minimum detectable effect (MDE) on clicks, uCTR
and GMV per user that each design reaches after a given wall time of traffic on this machine,
and the users and time it needs for a +1 % effect.

    .venv/bin/python benchmarks/bench_time_to_decision.py [--config configs/default.toml]
        [--sample-users 600] [--designs split,paired,interleave] [--workers 2] [--minutes 2,15]
        [--set traffic.days=1]

Method (printed with the figures): each design runs the config's experiment (its arms, days,
world) on ``--sample-users`` users in process on ``--workers`` Ray workers, without the truth
sample (it costs traffic and no power). From that run the engine's power table gives, per
metric, the per-user standard deviation of the design's estimate (split: after CUPED on the
logged pre-period; paired: of the per-user difference; interleave: of the per-user credit
difference) and the MDE at the sample's size (power 0.8, alpha 0.05). The MDE falls as
1 / sqrt(users), and users grow with traffic time at the measured users per second (traffic
wall time only; the one-off set-up, Ray workers loading the world and models, is printed
apart), so MDE(T) = MDE(sample) * sqrt(n_sample / (rate * T)). Users for +1 %: the power
table's ``users_needed_1pct``; their time: users / rate. Extrapolated, not run; the world is
built and the models trained before any timing. Interleaving's MDE is relative to the
control's *credit*, another scale than an A/B lift (its decision is the sign test).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import pandas as pd

from abtest.arms import resolve_arms
from abtest.config import load_config
from abtest.experiment import run_experiment
from common.config import add_set_argument, overrides
from simulator.config import load_world_config
from simulator.world import World

METRICS = {
    "split": ("clicks", "exact_clicks", "uctr", "exact_uctr", "gmv", "exact_gmv"),
    "paired": ("clicks", "exact_clicks", "uctr", "exact_uctr", "gmv", "exact_gmv"),
    "interleave": ("clicks", "expected_clicks", "exact_clicks", "exact_gmv"),
}
"""Per design, the metrics reported (interleaving credits sums only)."""


def measure(config, design: str, users: int, workers: int, world: World) -> tuple[pd.DataFrame, dict]:
    """Run one design on ``users`` users: the power rows of its metrics and its timings."""
    sample = config.replace(
        design={"kind": design, "truth_users": 0},
        traffic={"users": users, "shard_users": max(1, math.ceil(users / (4 * workers)))},
        stats={"funnel_users": 0},
    )
    result = run_experiment(sample, through="inprocess", workers=workers, world=world)
    power = result.power[result.power["metric"].isin(METRICS[design])].copy()
    return power, result.timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/default.toml", help="experiment (default: %(default)s)")
    parser.add_argument(
        "--sample-users", type=int, default=600, help="users per design (default: %(default)s)"
    )
    parser.add_argument(
        "--designs", default="split,paired,interleave", help="comma-separated (default: %(default)s)"
    )
    parser.add_argument("--workers", type=int, default=2, help="Ray workers (default: %(default)s)")
    parser.add_argument(
        "--minutes", default="2,15", help="traffic wall times to report the MDE at (default: %(default)s)"
    )
    add_set_argument(parser, "traffic.days=1")
    args = parser.parse_args(argv)
    designs = args.designs.split(",")
    if set(designs) - set(METRICS):
        parser.error(f"unknown design(s) {sorted(set(designs) - set(METRICS))}; choose from {list(METRICS)}")
    minutes = [float(m) for m in args.minutes.split(",")]

    config = load_config(args.config, overrides(args.set))
    config = resolve_arms(config, load_world_config(config.world), log=lambda m: print(m, file=sys.stderr))
    world = World(load_world_config(config.world))
    rows = []
    for design in designs:
        print(f"measuring {design} on {args.sample_users:,} users ...", file=sys.stderr, flush=True)
        power, timings = measure(config, design, args.sample_users, args.workers, world)
        rate = args.sample_users / timings["traffic"]
        for _, p in power.iterrows():
            row = {
                "design": design,
                "metric": p["metric"],
                "users/s": rate,
                "setup s": timings["setup"],
                f"MDE@{args.sample_users}": p["mde_rel"],
            }
            for m in minutes:
                row[f"MDE@{m:g}min"] = p["mde_rel"] * math.sqrt(args.sample_users / (rate * 60 * m))
            row["users +1%"] = p["users_needed_1pct"]
            row["minutes +1%"] = p["users_needed_1pct"] / rate / 60
            rows.append(row)
    table = pd.DataFrame(rows)
    pct = [c for c in table.columns if c.startswith("MDE")]
    shown = table.copy()
    for c in pct:
        shown[c] = shown[c].map(lambda v: f"{100 * v:.2f}%")
    print(f"\nconfig {args.config}: arms {list(config.arm_names)}, {config.traffic.days} day(s) per user")
    print(shown.to_string(index=False, float_format=lambda v: f"{v:,.1f}"))
    load = os.getloadavg()
    print(
        f"\n{args.workers} worker(s); MDE at power {config.stats.power:g}, alpha {config.stats.alpha:g}, "
        "extrapolated from each sample's traffic rate (set-up excluded); "
        f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} cores"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
