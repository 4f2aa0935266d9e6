"""Training-seed replicates of an experiment (``run_ab.py --train-seeds``).

An experiment's intervals cover its users' and their clicks' randomness, not the training
run's: one pair of trained models is one draw of each technique (on the feed world the full
model's click lift over the DSSM moved from +0.3 % to +2.0 % with the coarse rankers' training
seed). ``reseeded`` gives the same experiment with every arm's coarse training config trained
under another ``[train] seed``; ``replicate_table`` lines the runs' lifts up per comparison,
with their mean and a t interval over the seeds (k - 1 degrees of freedom: each seed's estimate
carries both its users' noise and its training run's, so the spread of the estimates is what
the interval needs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from abtest.config import ExperimentConfig
from abtest.report import interval_bars, markdown_table, save_png
from abtest.store import write_text_atomic
from common.config import ConfigError, dumps_toml
from policies.config import load_config as load_training_config
from policies.config import read_raw


def reseeded(config: ExperimentConfig, seed: int, folder: Path) -> ExperimentConfig:
    """``config`` with every coarse training config (.toml) of its arms trained with ``[train]
    seed = seed``: a copy of the config in ``folder/seed<seed>/`` with its checkpoint beside it
    (arms sharing a config share the copy). A config that already has this seed is kept as it
    is, so it reuses its own checkpoint. Checkpoints, baselines and custom rankers have no
    training seed and stay; fine rankers are shared by every seed (and teach with the same
    checkpoint)."""
    specs = {arm.coarse for arm in config.arms.values() if arm.coarse.endswith(".toml")}
    if not specs:
        raise ConfigError("--train-seeds needs an arm whose coarse ranker is a training config (.toml)")
    copies = {}
    for spec in sorted(specs):
        if load_training_config(spec).train.seed == seed:
            copies[spec] = spec
            continue
        raw = read_raw(spec)
        copy = folder / f"seed{seed}" / Path(spec).name
        raw["out"] = str(copy.with_suffix(".pt").resolve())
        raw.setdefault("train", {})["seed"] = seed
        write_text_atomic(copy, dumps_toml(raw))
        copies[spec] = str(copy.resolve())
    arms = {
        name: dataclasses.replace(arm, coarse=copies.get(arm.coarse, arm.coarse))
        for name, arm in config.arms.items()
    }
    return config.replace(arms=arms)


def replicate_table(
    runs: Mapping[int, Sequence[Mapping[str, Any]]], confidence: float = 0.95
) -> pd.DataFrame:
    """One row per (metric, treatment) present in every run: each training seed's estimated
    relative lift (``lift seed<k>``) and true lift where the run measured one (``true seed<k>``),
    their means, the t interval of the mean estimate over the seeds (``ci_lower`` /
    ``ci_upper``; none for a single seed), and how many seeds' estimates are significant upwards
    and downwards (after the run's own multiple-testing correction). ``runs`` maps a training
    seed to its ``results.json`` records."""
    if not runs:
        raise ValueError("no replicates to compare")
    seeds = list(runs)
    frames = []
    for seed in seeds:
        frame = pd.DataFrame(list(runs[seed]))
        if "true_rel_effect" not in frame:
            frame["true_rel_effect"] = np.nan
        frames.append(
            frame.assign(seed=seed)[
                ["metric", "treatment", "seed", "rel_effect", "true_rel_effect", "significant"]
            ]
        )
    long = pd.concat(frames, ignore_index=True)
    keys = ["metric", "treatment"]
    present = long.groupby(keys, sort=False)["seed"].nunique()
    long = long.set_index(keys).loc[present[present == len(seeds)].index].reset_index()
    rows = []
    for (metric, treatment), rows_of_seeds in long.groupby(keys, sort=False):
        group = rows_of_seeds.set_index("seed").loc[seeds]
        lifts = group["rel_effect"].to_numpy(float)
        row: dict[str, Any] = {"metric": metric, "treatment": treatment}
        row |= {f"lift seed{s}": v for s, v in zip(seeds, lifts, strict=True)}
        row |= {f"true seed{s}": v for s, v in zip(seeds, group["true_rel_effect"], strict=True)}
        row["mean lift"] = lifts.mean()
        row["ci_lower"] = row["ci_upper"] = np.nan
        if len(seeds) > 1:
            half = stats.t.ppf(0.5 + confidence / 2, len(seeds) - 1) * lifts.std(ddof=1) / np.sqrt(len(seeds))
            row["ci_lower"], row["ci_upper"] = row["mean lift"] - half, row["mean lift"] + half
        row["mean true lift"] = group["true_rel_effect"].astype(float).mean()
        significant = group["significant"].astype(bool).to_numpy()
        row["seeds up"] = int((significant & (lifts > 0)).sum())
        row["seeds down"] = int((significant & (lifts < 0)).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def replicate_markdown(table: pd.DataFrame, confidence: float = 0.95) -> str:
    """The replicate table as Markdown, lifts in %."""
    shown = table.copy()
    percent = [c for c in shown if c.startswith(("lift ", "true ", "mean ")) or c.startswith("ci_")]
    for column in percent:
        shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{100 * v:+.2f}%")
    shown = shown.rename(
        columns={"ci_lower": f"{confidence:.0%} CI low", "ci_upper": f"{confidence:.0%} CI high"}
    )
    return (
        "Training-seed replicates: each seed's estimated lift (and true lift, where the run "
        f"measured it); the mean estimate's {confidence:.0%} t interval over the seeds; seeds "
        "up / down = seeds whose estimate is significant that way.\n\n" + markdown_table(shown) + "\n"
    )


def plot_replicates(table: pd.DataFrame, path: Path) -> None:
    """Per comparison: each seed's estimated lift (dots), their mean with its t interval over
    the seeds (bar) and the mean true lift (cross), in %."""
    import matplotlib  # noqa: PLC0415 (only when plotting)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    lifts = [c for c in table if c.startswith("lift seed")]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(table) + 1.4))
    y = np.arange(len(table))[::-1]
    for column in lifts:
        ax.scatter(100 * table[column], y, color="gray", s=14, zorder=2)
    mean = 100 * table["mean lift"].to_numpy(float)
    lo, hi = 100 * table["ci_lower"].to_numpy(float), 100 * table["ci_upper"].to_numpy(float)
    interval_bars(ax, mean, y, lo, hi, "black")
    ax.scatter(mean, y, color="black", zorder=3, label="mean estimate (t interval over seeds)")
    ax.scatter(
        100 * table["mean true lift"], y, color="tab:orange", marker="x", zorder=4, label="mean true lift"
    )
    ax.scatter([], [], color="gray", s=14, label="one training seed's estimate")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, [f"{m} ({t})" for m, t in zip(table["metric"], table["treatment"], strict=True)])
    ax.set_xlabel("relative lift, %")
    ax.set_title(f"Lifts over {len(lifts)} training seeds")
    ax.legend(loc="best", fontsize=8)
    save_png(fig, path)
