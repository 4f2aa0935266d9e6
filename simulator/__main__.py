"""Command line: ``python -m simulator describe`` and ``python -m simulator logs`` (installed as
``cascade-ab-sim``)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from common.config import ConfigError, add_set_argument, apply_overrides, from_mapping, overrides, to_plain
from common.version import add_version_argument, command_name
from simulator.config import SMALL, WorldConfig


def _world_config(args: argparse.Namespace) -> WorldConfig:
    """The world of --config / --small / the defaults, with --seed and --set applied."""
    changes = overrides(args.set, {"seed": args.seed})
    base = WorldConfig.from_toml(args.config) if args.config else (SMALL if args.small else WorldConfig())
    return from_mapping(WorldConfig, apply_overrides(to_plain(base), changes)) if changes else base


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=command_name("python -m simulator"),
        description="The ground-truth e-commerce world of the cascade A/B testbed.",
    )
    add_version_argument(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML file with a [world] table (default: built-in defaults)")
    common.add_argument("--small", action="store_true", help="use the small test world")
    common.add_argument("--seed", type=int, help="override the world seed (same as --set seed=N)")
    add_set_argument(common, example="taste_drift=0.2")

    d = sub.add_parser(
        "describe",
        parents=[common],
        help="print the world's calibration (CTR, purchases, depth, GMV, recall misses)",
    )
    d.add_argument("--sessions", type=int, default=2_000, help="sessions sampled per policy")
    d.add_argument(
        "--oracle-users",
        type=int,
        default=300,
        help="users whose best items in the whole pool are computed (recall misses)",
    )
    d.add_argument("--days", type=int, default=2, help="days of sessions per user (per-day uCTR)")
    d.add_argument("--json", action="store_true", help="print JSON instead of a table")

    g = sub.add_parser("logs", parents=[common], help="simulate logging-cascade logs as Parquet")
    g.add_argument("out", help="output folder (written atomically)")
    g.add_argument("--users", type=int, help="log the first N users (default: all)")
    g.add_argument("--days", type=int, default=1, help="days of logs (default 1)")
    g.add_argument("--force", action="store_true", help="overwrite an existing output folder")
    args = parser.parse_args(argv)

    try:
        config = _world_config(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from simulator.world import World  # noqa: PLC0415  (keep --help fast)

    start = time.perf_counter()
    world = World(config)
    print(f"built world (seed {config.seed}) in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    if args.command == "describe":
        from simulator.describe import describe, format_report  # noqa: PLC0415

        figures = describe(world, n_sessions=args.sessions, n_oracle_users=args.oracle_users, days=args.days)
        print(json.dumps(figures, indent=2) if args.json else format_report(figures))
    else:
        from simulator.logs import write_logs  # noqa: PLC0415

        try:
            out = write_logs(world, args.out, n_users=args.users, days=args.days, force=args.force)
        except (FileExistsError, ValueError) as err:
            parser.error(str(err))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
