"""The dose-response command, ``python -m tuning.dose``.

Its arguments are parsed before ``tuning.dose`` (torch, pandas) is imported, so ``--help``
answers at once.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from common.config import ConfigError
from common.version import add_version_argument, command_name

TECHNIQUES = ("mlp", "nova", "senet_bilinear")  # tuning.dose.TECHNIQUE_NAMES (a test checks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=command_name("python -m tuning.dose"),
        description="Dose-response of the coarse ranker's techniques: for each technique's world knob "
        "at off / default / strong (and the other techniques' knobs at default), train the technique's "
        "rung and the rung before on that world's logs and print their offline gain (ΔGAUC ‰, Δ global "
        "hitrate) and online gain (paired Δ clicks / GMV per session with 95 % intervals). Logs, fine "
        "ranker and rungs of every world are cached under --out; the table and the figure are written to "
        "<out>/dose.{md,csv,png}.",
        epilog="Pairs (rung before -> technique rung, own knobs): mlp = +fm -> +fm+mlp (taste_saturation, "
        "budget_penalty); nova = +mlp -> +mlp+nova, reading the logged dwell where the world logs it "
        "(history_dwell_separation, history_noise_popular); senet_bilinear = +mlp -> +mlp+senet_bilinear "
        "(field_interaction_std); +fm is the ladder's DSSM + FM rung, +mlp its DSSM + FM + MLP rung. "
        "Levels: off = 0, default = the knob's strength in the "
        "feed world (configs/world_feed.toml), strong = twice that.",
    )
    parser.add_argument("--world", default="small", help='base world: "small", "default" or a TOML file')
    parser.add_argument("--world-seed", type=int, help="the base world's seed (default: its own)")
    parser.add_argument("--base", default="configs/models/coarse_dssm.toml", help="baseline DSSM config")
    parser.add_argument(
        "--fine",
        default="configs/models/fine_small.toml",
        help="fine ranker config (its data is replaced per world)",
    )
    parser.add_argument("--out", default="runs/dose", help="folder for every world's files and the table")
    parser.add_argument("--users", type=int, default=2000, help="users logged per world (1 day)")
    parser.add_argument(
        "--epochs", type=int, help="override every rung's epochs (default: the base config's)"
    )
    parser.add_argument("--coarse-size", type=int, help="coarse cut C (default: the world's logging one)")
    parser.add_argument("--eval-sessions", type=int, default=300, help="held-out sessions for the hitrate")
    parser.add_argument(
        "--online-users", type=int, default=100_000, help="held-out users simulated online (default: all)"
    )
    parser.add_argument(
        "--train-seeds",
        nargs="+",
        type=int,
        metavar="N",
        help="training seeds of the rungs: one row per seed on the same logs and bench, and a summary "
        "over them (mean, range, seeds resolving the gain); training variance is what separates "
        "replicates (default: the base config's seed, one row)",
    )
    parser.add_argument(
        "--techniques", nargs="+", choices=TECHNIQUES, default=list(TECHNIQUES), help="techniques to sweep"
    )
    add_version_argument(parser)
    args = parser.parse_args(argv)
    from tuning.dose import format_dose, plot_dose, run_dose  # noqa: PLC0415 (after parsing)

    args.progress = False  # progress bars would drown the per-world lines
    start = time.process_time()
    try:
        table = run_dose(args, log=lambda line: print(line, file=sys.stderr, flush=True))
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    table.to_csv(out / "dose.csv", index=False)
    text = (
        f"{table.attrs['caption']} Wall time {table.attrs['seconds'] / 60:.1f} min "
        f"({(time.process_time() - start) / 60:.1f} min CPU of this process).\n\n{format_dose(table)}"
    )
    (out / "dose.md").write_text(text + "\n")
    plot_dose(table, out / "dose.png")
    print(text)
    print(f"wrote {out / 'dose.md'}, dose.csv and dose.png")
    return 0
