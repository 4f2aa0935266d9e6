"""The ablation ladder command, ``python -m tuning.ladder`` (installed as ``cascade-ab-ladder``).

Its arguments are parsed before ``tuning.ladder`` (torch, pandas) is imported, so ``--help``
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
        prog=command_name("python -m tuning.ladder"),
        description="Train (or reuse) every rung of the coarse-ranker ablation ladder and print one "
        "table of offline metrics, inference cost and simulated online clicks / GMV.",
    )
    parser.add_argument("--base", default="configs/models/coarse_dssm.toml", help="baseline DSSM config")
    parser.add_argument("--fine", default="configs/models/fine.toml", help="fine ranker (teacher) config")
    parser.add_argument("--out", default="runs/ladder", help="folder for checkpoints and the table")
    parser.add_argument(
        "--online-fine",
        metavar="SPEC",
        help="the online cascade's fine stage instead of the teacher: a fine checkpoint, 'oracle' (the "
        "truth: what each coarse set is worth to a perfect fine ranker) or module:attribute",
    )
    parser.add_argument(
        "--epochs", type=int, help="override every rung's epochs (distillation stage 1 then gets at most N-1)"
    )
    parser.add_argument(
        "--train-seed",
        type=int,
        help="override every rung's training seed (a replicate of the ladder: give it its own --out)",
    )
    parser.add_argument("--logs", help="override the rungs' log folder (simulated if missing)")
    parser.add_argument("--users", type=int, help="users logged when --logs has to be simulated")
    parser.add_argument("--coarse-size", type=int, default=600, help="coarse cut C (default 600)")
    parser.add_argument("--eval-sessions", type=int, default=500, help="held-out sessions for hitrate/funnel")
    parser.add_argument("--online-users", type=int, default=2000, help="held-out users simulated online")
    parser.add_argument(
        "--leave-one-out",
        action="store_true",
        help="also train the full model without each architectural technique (FM, MLP, distillation, "
        "NOVA, SENET + bilinear; ~10 min more) and test the full model against each",
    )
    parser.add_argument(
        "--replicates",
        nargs="+",
        metavar="DIR",
        help="train nothing: compare finished ladders (folders with ladder.csv and ladder_tests.csv, "
        "e.g. runs/ladder runs/ladder_seed1) comparison by comparison, and print the table",
    )
    add_version_argument(parser)
    args = parser.parse_args(argv)
    if args.replicates:
        return _print_replicates([Path(d) for d in args.replicates])
    from tuning.ladder import format_table, plot_ladder, run_ladder  # noqa: PLC0415 (after parsing)

    args.progress = sys.stderr.isatty()
    try:
        table = run_ladder(args)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "ladder.csv", index=False)
    text = table.attrs["caption"] + "\n\n" + format_table(table)
    if "tests" in table.attrs:
        tests = table.attrs["tests"]
        tests.to_csv(out / "ladder_tests.csv", index=False)
        text += (
            "\n\nPaired tests of exact clicks per session (the same users and random numbers in every"
            " row; Holm within each family):\n\n" + format_table(tests)
        )
    if "agreement" in table.attrs:
        agreement = table.attrs["agreement"]
        agreement.to_csv(out / "ladder_agreement.csv", index=False)
        text += (
            "\n\nWhich offline metric ranks the rows like the online Δ exact clicks vs the DSSM? Kendall's"
            " τ-b with a bootstrap 95 % interval, over the trained rows and over every row:\n\n"
            + format_table(agreement)
        )
    (out / "ladder.md").write_text(text + "\n")
    plot_ladder(table, out / "ladder.png")
    print(text)
    print(f"wrote {out / 'ladder.md'}, ladder.csv, ladder_tests.csv, ladder_agreement.csv and ladder.png")
    return 0


def _print_replicates(folders: list[Path]) -> int:
    names = ("ladder.csv", "ladder_tests.csv")
    missing = [str(f / name) for f in folders for name in names if not (f / name).is_file()]
    if missing:
        print(f"error: missing {', '.join(missing)} (written by python -m tuning.ladder)", file=sys.stderr)
        return 2
    import pandas as pd  # noqa: PLC0415

    from tuning.ladder import format_table, replicate_table  # noqa: PLC0415

    tables = {f.name: (pd.read_csv(f / "ladder.csv"), pd.read_csv(f / "ladder_tests.csv")) for f in folders}
    if len(tables) < len(folders):
        print("error: give the ladder folders distinct names (they label the columns)", file=sys.stderr)
        return 2
    print(
        "Ladder replicates, comparison by comparison (ΔGAUC: the rung minus its reference, ±95 %: its"
        " paired interval where the ladder has one; lift: exact clicks; offline agrees = same sign and"
        " every interval clear of 0; online agrees = same sign and every Holm p < 0.05):\n"
    )
    print(format_table(replicate_table(tables)))
    return 0
