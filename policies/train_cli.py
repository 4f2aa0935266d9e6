"""The training command, ``python -m policies.train`` (installed as ``cascade-ab-train``).

Its arguments are parsed before ``policies.train`` (torch) is imported, so ``--help`` and
``--version`` answer at once.
"""

from __future__ import annotations

import argparse
import sys

from common.config import ConfigError, add_set_argument, overrides
from common.version import add_version_argument, command_name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=command_name("python -m policies.train"),
        description="Train a fine ranker (teacher) or a coarse ranker from simulator logs and write "
        "its checkpoint (config + version id + per-epoch held-out metrics).",
    )
    parser.add_argument("--config", required=True, help="training config TOML (see configs/models/*.toml)")
    add_set_argument(parser, example="train.epochs=1")
    parser.add_argument("--logs", help="override [data] logs: the log folder (same as --set data.logs=...)")
    parser.add_argument("--out", help="override out: the checkpoint path (same as --set out=...)")
    parser.add_argument("--epochs", type=int, help="override [train] epochs (same as --set train.epochs=N)")
    add_version_argument(parser)
    args = parser.parse_args(argv)
    from policies.config import check_model_spec, load_config  # noqa: PLC0415 (after parsing)
    from policies.data import load_logs  # noqa: PLC0415
    from policies.train import ensure_logs, train  # noqa: PLC0415

    try:
        flags = {"data.logs": args.logs, "out": args.out, "train.epochs": args.epochs}
        run = load_config(args.config, overrides(args.set, flags))
        check_model_spec(run.distill.teacher, "fine")  # before the logs are simulated
        progress = sys.stderr.isatty()
        result = train(run, data=load_logs(ensure_logs(run.data, progress)), progress=progress)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rate = result.samples / max(result.seconds, 1e-9)
    print(
        f"wrote {run.out} (version {result.version}): {result.seconds:.1f} s, "
        f"{result.samples:,} samples, {rate:,.0f} samples/s"
    )
    return 0
