"""The seeds' reported figures beside this world's on the same comparisons.

    python -m tuning.seeds --ladder runs/ladder --ab runs/ab/default   # prints a Markdown table
    python -m tuning.seeds --ladder runs/ladder runs/ladder_seed1 --ab runs/ab/default-train-seeds

Reads what two committed commands wrote: the ablation ladder (``python -m tuning.ladder``,
``ladder.csv``: offline metrics per rung, and the paired exact-click tests in
``ladder_tests.csv``) and an A/B run of the DSSM against the full model (``run_ab.py``,
``results.json``: the true lift of every metric on every user, and per segment). The seeds'
figures are the ones their write-ups report (``SEED_FIGURES``); nothing here is fitted to them.
Replicates of either (other training seeds) give each value as their mean.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from common.version import add_version_argument, command_name


@dataclass(frozen=True)
class Figure:
    """One comparison: what a seed reports and where this world's value comes from.

    ``source`` is ``("gauc", rung, reference)`` (held-out GAUC difference in per mille),
    ``("hitrate_out@600", rung, reference)`` and the like (a ladder metric's difference in
    points), ``("ab", metric, segment)`` (the A/B's true lift in %, on every user or on a
    segment "dimension=value") or ``("ladder_online", rung, reference)`` (the ladder's paired
    exact-click lift in %)."""

    seed: str
    comparison: str
    reported: str
    source: tuple[str, str, str]


SEED_FIGURES: tuple[Figure, ...] = (
    Figure(
        "000",
        "offline GAUC, + MLP + FM + distillation over the DSSM (‰)",
        "+30",
        ("gauc", "+distill", "dssm"),
    ),
    Figure(
        "000",
        "offline GAUC, + NOVA + SENET/bilinear on top (‰)",
        "+10 to +13",
        ("gauc", "+senet_bilinear", "+distill"),
    ),
    Figure("000", "offline GAUC, + FM cross (‰)", "", ("gauc", "+fm", "dssm")),
    Figure("000", "offline GAUC, + MLP scorer (‰)", "", ("gauc", "+mlp", "+fm")),
    Figure("000", "offline GAUC, + distillation (‰)", "", ("gauc", "+distill", "+mlp")),
    Figure("000", "offline GAUC, + NOVA (‰)", "", ("gauc", "+nova", "+distill")),
    Figure("000", "offline GAUC, + SENET/bilinear (‰)", "", ("gauc", "+senet_bilinear", "+nova")),
    Figure("000", "online uCTR, full vs DSSM (%)", "+1.86", ("ab", "uctr", "")),
    Figure("000", "online uCTR per day, full vs DSSM (%)", "+1.86 (if per day)", ("ab", "daily_uctr", "")),
    Figure("000", "online pCTR, full vs DSSM (%)", "+1.68", ("ab", "pctr", "")),
    Figure("000", "online depth, full vs DSSM (%)", "+1.83", ("ab", "depth", "")),
    Figure("000", "online clicks, full vs DSSM (%)", "+3.48", ("ab", "clicks", "")),
    Figure(
        "000", "online uCTR, warm (trained-on) users (%)", "(production: +1.86)", ("ab", "uctr", "warm=warm")
    ),
    Figure(
        "000",
        "online uCTR per day, warm users (%)",
        "(production, if per day: +1.86)",
        ("ab", "daily_uctr", "warm=warm"),
    ),
    Figure("000", "online pCTR, warm users (%)", "(production: +1.68)", ("ab", "pctr", "warm=warm")),
    Figure("000", "online depth, warm users (%)", "(production: +1.83)", ("ab", "depth", "warm=warm")),
    Figure("000", "online clicks, warm users (%)", "(production: +3.48)", ("ab", "clicks", "warm=warm")),
    Figure("000", "online uCTR, mindful users (%)", "+1.52", ("ab", "uctr", "mindful=True")),
    Figure("000", "online pCTR, mindful users (%)", "+2.19", ("ab", "pctr", "mindful=True")),
    Figure("000", "online depth, mindful users (%)", "+3.11", ("ab", "depth", "mindful=True")),
    Figure("000", "online clicks, mindful users (%)", "+5.33", ("ab", "clicks", "mindful=True")),
    Figure(
        "000",
        "ladder online exact clicks, full vs DSSM, held-out users (%)",
        "",
        ("ladder_online", "full", "dssm"),
    ),
    Figure(
        "002",
        "out-of-scene hitrate, + unexposed and random negatives (pt)",
        "+5.5",
        ("hitrate_out@600", "full", "full-unexposed-random"),
    ),
    Figure(
        "002",
        "online exact clicks, + unexposed and random negatives (%)",
        "",
        ("ladder_online", "full", "full-unexposed-random"),
    ),
    Figure(
        "002",
        "out-of-scene hitrate, + out-of-scene positives (pt)",
        "+0.6",
        ("hitrate_out@600", "full", "full-out_of_scene"),
    ),
    Figure(
        "002",
        "online exact clicks, + out-of-scene positives (%)",
        "",
        ("ladder_online", "full", "full-out_of_scene"),
    ),
    Figure(
        "002",
        "in-scene hitrate, + label smoothing for unexposed items (pt)",
        "+0.65",
        ("hitrate_in@600", "full", "full-label_smoothing"),
    ),
    Figure(
        "002",
        "out-of-scene hitrate, + label smoothing for unexposed items (pt)",
        "+0.3",
        ("hitrate_out@600", "full", "full-label_smoothing"),
    ),
    Figure("002", "global hitrate, full vs DSSM (pt)", "", ("hitrate_global@600", "full", "dssm")),
    Figure(
        "002",
        "fine-stage loss of the truly best items, full vs DSSM (pt)",
        "rises",
        ("funnel_fine", "full", "dssm"),
    ),
    Figure("002", "online GMV, full vs DSSM (%)", "about +1.0", ("ab", "gmv", "")),
    Figure("002", "online GMV, warm users (%)", "(production: about +1.0)", ("ab", "gmv", "warm=warm")),
)
"""Seed 000 (Taobao new-product coarse ranking) and seed 002 (Taobao main-search coarse ranking)."""

EXACT_TWINS = {
    "uctr": "exact_uctr",
    "daily_uctr": "exact_daily_uctr",
    "clicks": "exact_clicks",
    "gmv": "exact_gmv",
    "purchases": "exact_purchases",
}
"""A metric whose exact twin's interval is shown beside its true lift (the twin estimates it)."""


def _ladder_value(ladder: pd.DataFrame, metric: str, rung: str, reference: str) -> tuple[float, str]:
    table = ladder.set_index("model")
    if rung not in table.index or reference not in table.index:
        return float("nan"), "rung missing from the ladder"
    scale = 1000.0 if metric == "gauc" else 100.0
    return scale * float(table.loc[rung, metric] - table.loc[reference, metric]), "ladder, held-out users"


def _ladder_online(tests: pd.DataFrame, rung: str, reference: str) -> tuple[float, str]:
    row = tests[(tests["rung"] == rung) & (tests["reference"] == reference)]
    if row.empty:
        return float("nan"), "pair missing from ladder_tests.csv"
    lift, delta = float(row["lift %"].iloc[0]), float(row["Δexact_clicks"].iloc[0])
    half = float(row["±95%"].iloc[0]) * lift / delta  # the interval in % of the reference
    return lift, f"ladder, held-out users; ±{abs(half):.2f}, Holm p {float(row['p Holm'].iloc[0]):.2g}"


def _ab_value(results: dict[str, Any], metric: str, segment: str) -> tuple[float, str]:
    if segment:
        dimension, value = segment.split("=")
        records = [
            r
            for r in results.get("segments", {}).get("records", [])
            if r["dimension"] == dimension and str(r["segment"]) == value
        ]
        where = f"A/B, {segment} ({records[0]['users']:,} users)" if records else ""
    else:
        records = results["records"]
        where = f"A/B, all {records[0]['n_control']:,} users" if records else ""
    by_metric = {r["metric"]: r for r in records}
    if metric not in by_metric:
        return float("nan"), f"{metric} not in the A/B's {'segment ' if segment else ''}results"
    truth = by_metric[metric].get("true_rel_effect")
    if truth is None:
        return float("nan"), "the A/B has no true effect"
    estimate = by_metric.get(EXACT_TWINS.get(metric, ""), by_metric[metric])
    low, high = 100 * estimate["rel_ci_lower"], 100 * estimate["rel_ci_upper"]
    interval = f"[{low:+.2f}, {high:+.2f}] ({estimate['metric']})"
    return 100.0 * truth, f"{where}; estimate's 95 % CI {interval}"


def _mean_of_replicates(measured: list[tuple[float, str]], missing: str) -> tuple[float, str]:
    """One replicate's value and source as they are; several: their mean, each seed's value
    and the first replicate's source (the intervals are one replicate's)."""
    if not measured:
        return float("nan"), missing
    if len(measured) == 1:
        return measured[0]
    values = [value for value, _ in measured]
    each = " / ".join("n/a" if np.isnan(v) else f"{v:+.2f}" for v in values)
    first = measured[0][1].split(";")[0]
    return float(np.mean(values)), f"{first}; mean of {len(values)} training seeds: {each}"


def seeds_table(
    ladders: Sequence[pd.DataFrame], tests: Sequence[pd.DataFrame], results: Sequence[dict[str, Any]]
) -> pd.DataFrame:
    """One row per ``SEED_FIGURES`` entry: the seed's figure, this world's value and its source.
    Each source is a list of replicates (ladders, their tests and A/B results of other training
    seeds): a value is their mean (rows of a missing source are n/a)."""
    rows = []
    for figure in SEED_FIGURES:
        kind, a, b = figure.source
        if kind == "ab":
            value, how = _mean_of_replicates([_ab_value(r, a, b) for r in results], "no A/B results")
        elif kind == "ladder_online":
            value, how = _mean_of_replicates([_ladder_online(t, a, b) for t in tests], "no ladder_tests.csv")
        else:
            value, how = _mean_of_replicates(
                [_ladder_value(ld, kind, a, b) for ld in ladders], "no ladder.csv"
            )
        rows.append(
            {"seed": figure.seed, "comparison": figure.comparison, "seed reports": figure.reported or "—"}
            | {"this world": value, "how measured": how}
        )
    return pd.DataFrame(rows)


def format_seeds(table: pd.DataFrame) -> str:
    lines = ["| seed | comparison | seed reports | this world | how measured |", "|---|---|---|---|---|"]
    for row in table.itertuples(index=False):
        value = "n/a" if pd.isna(row[3]) else f"{row[3]:+.2f}"
        lines.append(f"| {row[0]} | {row[1]} | {row[2]} | {value} | {row[4]} |")
    return "\n".join(lines)


def reported_value(reported: str) -> float:
    """The number in a seed's reported figure ("+1.86", "(production: +1.86)", "about +1.0");
    NaN for a range or a word."""
    numbers = re.findall(r"[+-]?\d+(?:\.\d+)?", reported)
    return float(numbers[0]) if len(numbers) == 1 else float("nan")


def plot_seeds(table: pd.DataFrame, path: Path) -> None:
    """The online comparisons the seeds report a number for: the seed's lift beside this world's
    true lift, one pair of bars per comparison."""
    import matplotlib  # noqa: PLC0415 (only when plotting)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = table[table["comparison"].str.startswith("online")].copy()
    rows["seed value"] = rows["seed reports"].map(reported_value)
    rows = rows.dropna(subset=["seed value", "this world"])
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.2), constrained_layout=True)
    ax.barh(y - 0.2, rows["seed value"], height=0.4, label="seed reports")
    ax.barh(
        y + 0.2,
        rows["this world"],
        height=0.4,
        label="this world (true lift; mean over training seeds when several)",
    )
    ax.set(yticks=y, xlabel="lift, full model vs DSSM (%)", title="The seeds' online lifts and this world's")
    ax.set_yticklabels(
        [
            f"{c.removeprefix('online ').removesuffix(' (%)')} [seed {s}]"
            for c, s in zip(rows["comparison"], rows["seed"], strict=True)
        ]
    )
    ax.invert_yaxis()
    ax.axvline(0, color="grey", lw=1)
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3, axis="x")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ab_results(folder: Path) -> list[dict[str, Any]]:
    """The results of an A/B run folder (its results.json), or of each training seed of a
    ``run_ab.py --train-seeds`` folder (its ``seed<N>/results.json``, in seed order)."""
    if (folder / "results.json").is_file():
        return [json.loads((folder / "results.json").read_text())]
    seeds = sorted(folder.glob("seed*/results.json"), key=lambda p: int(p.parent.name.removeprefix("seed")))
    return [json.loads(path.read_text()) for path in seeds]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=command_name("python -m tuning.seeds"),
        description="The seeds' reported figures beside this world's (from ladder folders and A/B run "
        "folders of the DSSM against the full model), as a Markdown table. Several ladders (other "
        "training seeds) or a --train-seeds A/B folder give each value as the mean over the seeds.",
    )
    parser.add_argument(
        "--ladder",
        nargs="+",
        default=["runs/ladder"],
        help="folders with ladder.csv (python -m tuning.ladder; several: one per training seed)",
    )
    parser.add_argument(
        "--ab",
        default="runs/ab/default",
        help="A/B run folder with results.json (run_ab.py), or a run_ab.py --train-seeds folder "
        "(runs/ab/default-train-seeds: the mean over its seeds)",
    )
    parser.add_argument("--plot", help="also draw the online comparisons into this PNG file")
    add_version_argument(parser)
    args = parser.parse_args(argv)
    results = ab_results(Path(args.ab))
    if not results:
        print(
            f"error: {Path(args.ab) / 'results.json'} is missing (written by python run_ab.py)",
            file=sys.stderr,
        )
        return 2
    ladders, tests = [], []
    for folder in map(Path, args.ladder):
        ladder_csv, tests_csv = folder / "ladder.csv", folder / "ladder_tests.csv"
        if not ladder_csv.is_file():
            print(
                f"note: {ladder_csv} is missing (python -m tuning.ladder): its rows are n/a", file=sys.stderr
            )
            continue
        ladders.append(pd.read_csv(ladder_csv))
        if tests_csv.is_file():
            tests.append(pd.read_csv(tests_csv))
    table = seeds_table(ladders, tests, results)
    print(format_seeds(table))
    if args.plot:
        plot_seeds(table, Path(args.plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
