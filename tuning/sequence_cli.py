"""The sequence-worth command, ``python -m tuning.sequence`` (installed as ``cascade-ab-sequence``).

Its arguments are parsed before ``tuning.sequence`` (torch, pandas) is imported, so ``--help``
and ``--version`` answer at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.config import ConfigError
from common.version import add_version_argument, command_name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=command_name("python -m tuning.sequence"),
        description="What the behaviour sequence is worth to a coarse ranker: ladder rungs trained and "
        "scored on logged histories against the same rungs on denoised (the accidental behaviours "
        "replaced: NOVA's ceiling) and shuffled (another user's) histories, on the same held-out rows.",
    )
    parser.add_argument("--base", default="configs/models/coarse_dssm.toml", help="baseline DSSM config")
    parser.add_argument("--fine", default="configs/models/fine.toml", help="fine ranker (teacher) config")
    parser.add_argument(
        "--out",
        default="runs/sequence",
        help="folder for checkpoints and the table (runs/ladder: reuse the ladder's rungs)",
    )
    parser.add_argument(
        "--rungs",
        nargs="+",
        default=["+fm"],
        metavar="RUNG",
        help="ladder rungs, e.g. +fm +nova (default +fm)",
    )
    parser.add_argument(
        "--histories",
        nargs="+",
        default=["denoised", "shuffled"],
        choices=["denoised", "shuffled"],
        help="alterations of the histories (default both)",
    )
    parser.add_argument("--epochs", type=int, help="override every rung's epochs")
    parser.add_argument("--train-seed", type=int, help="override every rung's training seed")
    parser.add_argument("--coarse-size", type=int, default=600, help="coarse cut C (default 600)")
    parser.add_argument("--eval-sessions", type=int, default=500, help="held-out sessions of the bench")
    add_version_argument(parser)
    args = parser.parse_args(argv)
    from tuning.ladder import format_table  # noqa: PLC0415 (after parsing)
    from tuning.sequence import run_sequence  # noqa: PLC0415

    args.progress = sys.stderr.isatty()
    try:
        table = run_sequence(args, log=lambda *parts: print(*parts, file=sys.stderr))
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "sequence.csv", index=False)
    text = table.attrs["caption"] + "\n\n" + format_table(table)
    (out / "sequence.md").write_text(text + "\n")
    print(text)
    print(f"wrote {out / 'sequence.md'} and sequence.csv")
    return 0
