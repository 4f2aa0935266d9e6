"""Benchmark of a search: wall time, trials per hour, and where the time goes.

    .venv/bin/python benchmarks/bench_tuning.py                       # the default search
    .venv/bin/python benchmarks/bench_tuning.py --config configs/tune_small.toml --num-samples 6

Runs the search of ``--config`` from scratch into runs/tune/<--name> (deleting an earlier
benchmark run; the logs, the fine ranker and a "base" control's checkpoint are reused when
they exist, as a real search would) and writes its usual outputs.

Time accounting. Setup (before the search, in this process): Ray start, models, world and
logs, the held-out evaluation set, the fine scores of the online users' recall sets, the
control's online and offline scores, the object-store put. The search: its wall time W times
the trial slots S (trials that fit at once) is the time available to trials; each trial
times itself (``time/*`` of its last result): training (incl. the per-epoch held-out
metrics), offline evaluation, online simulation, and Ray inside the trial (fetching the shared
inputs, waiting in ``tune.report``). The rest of W x S is Ray overhead outside trials
(actor start, scheduling, result handling) plus idle slots, e.g. at the end when fewer trials
than slots remain.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

from tuning.config import load_config
from tuning.report import format_table, write_outputs
from tuning.search import run_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/tune_default.toml")
    parser.add_argument("--name", default="bench", help="run folder runs/tune/<name> (replaced)")
    parser.add_argument("--num-samples", type=int, help="override [search] num_samples")
    parser.add_argument("--time-budget", type=float, help="override [search] time_budget_s")
    args = parser.parse_args()

    import dataclasses  # noqa: PLC0415

    config = load_config(args.config)
    search = config.search
    if args.num_samples is not None:
        search = dataclasses.replace(search, num_samples=args.num_samples)
    if args.time_budget is not None:
        search = dataclasses.replace(search, time_budget_s=args.time_budget)
    config = dataclasses.replace(config, name=args.name, search=search)
    run_dir = Path("runs/tune") / config.name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)

    start = time.perf_counter()
    outcome = run_search(config, run_dir)
    write_outputs(config, outcome, run_dir)
    wall = time.perf_counter() - start
    table, t = outcome.table, outcome.timings

    print()
    print(format_table(config, table))
    print()
    print((run_dir / "agreement.txt").read_text().rstrip())
    print()
    slots = config.search.max_concurrent
    search_wall = t["search"]
    setup = t["total"] - t["search"]
    counts = table["status"].value_counts().to_dict() if len(table) else {}
    print(f"search {config.name!r} ({args.config}): {len(table)} trials {counts}")
    outputs = wall - t["total"]
    print(
        f"wall time {wall:.0f} s = setup {setup:.0f} s + search {search_wall:.0f} s + outputs {outputs:.0f} s"
    )
    setup_steps = ("ray_init", "models", "world_and_logs", "teacher_labels", "eval_set", "fine_table")
    setup_steps += ("control_online", "control_offline", "object_store_put")
    print("setup: " + ", ".join(f"{k} {t[k]:.1f} s" for k in setup_steps if k in t))
    done = len(table)
    scored = counts.get("finished", 0)
    print(
        f"trials per hour: {3600 * done / search_wall:.0f} over the search "
        f"({3600 * scored / search_wall:.0f} scored online), "
        f"{3600 * done / wall:.0f} over the whole wall time"
    )

    def total(column: str) -> float:
        return float(np.nansum(table[column].to_numpy(np.float64))) if column in table else 0.0

    available = slots * search_wall
    parts = {
        "training": total("time/train_s"),
        "offline evaluation": total("time/eval_s"),
        "online simulation": total("time/online_s"),
        "Ray in trials (fetch + report)": total("time/fetch_s") + total("time/report_s"),
    }
    parts["Ray overhead outside trials + idle slots"] = max(0.0, available - sum(parts.values()))
    print(f"where the {slots} trial slots x {search_wall:.0f} s = {available:.0f} slot-seconds went:")
    for name, seconds in parts.items():
        print(f"  {name:<42}{seconds:8.0f} s  {100 * seconds / available:5.1f} %")
    with_setup = available + slots * setup
    setup_sim = t.get("control_online", 0) + t.get("fine_table", 0)
    sim = parts["online simulation"] + slots * setup_sim
    print(
        f"counting setup too ({slots} slots x {setup:.0f} s): "
        f"training {100 * parts['training'] / with_setup:.1f} %, "
        f"simulation (trials + control + fine scores) {100 * sim / with_setup:.1f} %, "
        f"other setup {100 * slots * (setup - setup_sim) / with_setup:.1f} %"
    )


if __name__ == "__main__":
    main()
