"""Dose-response of the seeds' techniques to the world's phenomena (issue 13 item 4).

    python -m tuning.dose                 # the small world's sizes (see docs/dose_response.md)
    python -m tuning.dose --help

Each technique exists for a phenomenon of the world (docs/world.md), a ``[world]`` knob. The
sweep builds worlds from a base world (all knobs off) with one knob at a time at ``LEVELS``:
off (0), default (the knob's strength in the feed world, ``configs/world_feed.toml``) and
strong (twice that). On every world it trains the technique's rung and the rung before (ladder
configs, ``tuning.ladder.ladder_configs``, on that world's logs) and measures both on the same
bench (``tuning.ladder.Bench``): the offline gain (ΔGAUC in ‰, Δ global hitrate at the coarse
cut) and the online gain, paired differences of clicks and GMV per session over the same
held-out users and random numbers. A technique is also measured on the worlds of the other
techniques' knobs at their default level: its gain should rise with its own knob, not theirs.

Pairs without distillation (no teacher outputs to compute, 2-4x cheaper): MLP scorer = DSSM + FM
-> DSSM + FM + MLP (the ladder's "+fm" and "+mlp" rungs); NOVA and SENET + bilinear each on top of
DSSM + FM + MLP (the ladder's "+mlp" rung).
NOVA reads the logged dwell (``[model] dwell_buckets``) on worlds that log it. Every world's
logs, fine ranker and rungs are cached under ``<out>/<world>/`` (a rerun reuses them); the table
and the figure are ``<out>/dose.{md,csv,png}``.
"""

from __future__ import annotations

if __name__ == "__main__":  # the command parses its arguments before torch and pandas are imported
    from tuning.dose_cli import main

    raise SystemExit(main())

import argparse
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from abtest.stats import paired_lift
from common.config import dumps_toml
from policies.cascade import Cascade
from policies.config import dwell_buckets, read_raw
from policies.evaluate import ClickRows
from policies.rankers import load_scorer
from policies.train import ensure_trained, parse_config
from simulator.config import PHENOMENON_KNOBS, WorldConfig, load_world_config
from tuning.ladder import Bench, format_table, ladder_configs, with_changes
from tuning.online import session_outcomes

FEED_WORLD_TOML = Path(__file__).parents[1] / "configs" / "world_feed.toml"

LEVELS = {"off": 0.0, "default": 1.0, "strong": 2.0}
"""A knob's levels as multiples of its proposed strength."""


@dataclass(frozen=True)
class Technique:
    """A technique, the knobs of the phenomena it exists for, the ladder rung it is added to
    and what it changes in that rung's config."""

    name: str
    knobs: tuple[str, ...]
    before: str
    changes: dict[str, dict[str, Any]]
    reads_dwell: bool = False

    def rung_configs(
        self, rungs: dict[str, dict[str, Any]], world: WorldConfig
    ) -> tuple[str, dict[str, Any]]:
        """The name and raw config of the technique's rung over ``rungs[self.before]``."""
        name = f"{self.before.lstrip('+')}+{self.name}"
        raw = with_changes(rungs[self.before], self.changes)
        if self.reads_dwell and (buckets := dwell_buckets(world)) is not None:
            raw["model"]["dwell_buckets"] = buckets
        raw["out"] = str(Path(raw["out"]).with_name(f"{name}.pt"))
        return name, raw


TECHNIQUES = (
    Technique("mlp", ("taste_saturation", "budget_penalty"), "+fm", {"model": {"mlp_scorer": True}}),
    Technique(
        "nova",
        ("history_dwell_separation", "history_noise_popular"),
        "+mlp",
        {"model": {"nova": True}},
        reads_dwell=True,
    ),
    Technique("senet_bilinear", ("field_interaction_std",), "+mlp", {"model": {"senet_bilinear": True}}),
)
TECHNIQUE_NAMES = tuple(t.name for t in TECHNIQUES)


def proposed_strengths(path: Path = FEED_WORLD_TOML) -> dict[str, float]:
    """The phenomenon knobs of the feed world (``path``'s [world] table)."""
    world = tomllib.loads(path.read_text())["world"]
    return {knob: world[knob] for knob in PHENOMENON_KNOBS if knob in world}


def level_world(base: WorldConfig, knob: str, level: str, proposed: dict[str, float]) -> WorldConfig:
    """``base`` with ``knob`` at ``level`` (a multiple of its proposed strength)."""
    return base.replace(**{knob: LEVELS[level] * proposed[knob]})


@dataclass(frozen=True)
class SweepWorld:
    """One world of the sweep and the techniques measured on it."""

    name: str
    knob: str  # "" for the base world (every knob off)
    level: str
    techniques: tuple[Technique, ...]


def sweep_worlds(techniques: tuple[Technique, ...]) -> list[SweepWorld]:
    """The base world (every technique), each knob at default (every technique: its own or
    another's knob) and at strong (the techniques it is for)."""
    worlds = [SweepWorld("off", "", "off", techniques)]
    for knob in dict.fromkeys(k for t in techniques for k in t.knobs):
        own = tuple(t for t in techniques if knob in t.knobs)
        worlds.append(SweepWorld(f"{knob}-default", knob, "default", techniques))
        worlds.append(SweepWorld(f"{knob}-strong", knob, "strong", own))
    return worlds


def world_runs(
    args: argparse.Namespace,
    world: WorldConfig,
    folder: Path,
    techniques: tuple[Technique, ...],
    train_seed: int | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The fine ranker's raw config and the raw configs of the rungs ``techniques`` need, all on
    the logs of ``world`` in ``folder`` (its world.toml written here); with ``train_seed`` the
    rungs train with that seed, their checkpoints in ``folder/train-seed<N>``."""
    folder.mkdir(parents=True, exist_ok=True)
    world_file = folder / "world.toml"
    world_file.write_text(dumps_toml({"world": world.to_dict()}))
    data = {"logs": str(folder / "logs"), "world": str(world_file), "users": args.users, "days": 1}
    fine = read_raw(args.fine)
    fine["data"] = {**fine.get("data", {}), **data}
    for key in ("dwell_buckets", "fine_signal"):  # the same fine ranker on every world
        fine.get("model", {}).pop(key, None)
    fine["out"] = str(folder / "fine.pt")
    base = read_raw(args.base)
    base["data"] = {**base.get("data", {}), **data}
    if args.epochs is not None:
        base.setdefault("train", {})["epochs"] = args.epochs
    rung_folder = folder
    if train_seed is not None:
        base.setdefault("train", {})["seed"] = train_seed
        rung_folder = folder / f"train-seed{train_seed}"
    ladder = ladder_configs(base, fine["out"], rung_folder)
    rungs = {}
    for technique in techniques:
        rungs[technique.before] = ladder[technique.before]
        name, raw = technique.rung_configs(ladder, world)
        rungs[name] = raw
    return fine, rungs


ONLINE = ("exact_clicks", "clicks", "exact_gmv")
"""Online outcomes whose paired differences the table shows."""


def measure_world(
    args: argparse.Namespace, sweep: SweepWorld, base: WorldConfig, proposed: dict[str, float], log=print
) -> list[dict[str, Any]]:
    """The rows of the techniques measured on one world of the sweep, one per training seed of
    ``args.train_seeds`` (None: the base config's seed); every seed on the same bench."""
    world = level_world(base, sweep.knob, sweep.level, proposed) if sweep.knob else base
    coarse_size = args.coarse_size or world.logging_coarse_size
    rows, bench = [], None
    for train_seed in args.train_seeds or [None]:
        fine_raw, raws = world_runs(args, world, Path(args.out) / sweep.name, sweep.techniques, train_seed)
        runs = {name: parse_config(raw, f"dose rung {name}") for name, raw in raws.items()}
        if bench is None:
            fine = parse_config(fine_raw, "dose fine ranker")
            first = next(iter(runs.values()))
            bench = Bench.build(
                first, fine, coarse_size, args.eval_sessions, args.online_users, args.progress, log
            )
        rows += seed_rows(args, sweep, world, bench, runs, raws, coarse_size, log)
    return rows


def seed_rows(
    args: argparse.Namespace,
    sweep: SweepWorld,
    world: WorldConfig,
    bench: Bench,
    runs: dict[str, Any],
    raws: dict[str, dict[str, Any]],
    coarse_size: int,
    log=print,
) -> list[dict[str, Any]]:
    """The rows of one training seed's rungs on ``bench``."""
    offline, online = {}, {}
    rows_scored = ClickRows(bench.eval_set)
    for name, run in runs.items():
        scorer = load_scorer(
            str(ensure_trained(run, progress=args.progress, log=log)), bench.world, bench.features, "coarse"
        )
        offline[name] = rows_scored.evaluate(name, scorer)
        online[name] = session_outcomes(bench.sim, Cascade(scorer, bench.fine, bench.sizes), bench.keys)
    hitrate = f"hitrate_global@{coarse_size}"
    rows = []
    for technique in sweep.techniques:
        after, _ = technique.rung_configs(raws, world)
        own = not sweep.knob or sweep.knob in technique.knobs
        row = {
            "technique": technique.name,
            "knob": sweep.knob or "none",
            "level": sweep.level,
            "strength": getattr(world, sweep.knob) if sweep.knob else 0.0,
            "own": own,
            "train_seed": runs[after].train.seed,
            "gauc_before": offline[technique.before]["gauc"],
            "ΔGAUC ‰": 1000 * (offline[after]["gauc"] - offline[technique.before]["gauc"]),
            "ΔGAUC ±95% ‰": rows_scored.gauc_difference(after, technique.before)[1],
            "Δhitrate_global": offline[after][hitrate] - offline[technique.before][hitrate],
        }
        for metric in ONLINE:
            paired = paired_lift(online[technique.before][metric], online[after][metric])
            row[f"Δ{metric}"] = paired.effect
            row[f"Δ{metric} ±95%"] = paired.effect_hi - paired.effect
        row[f"{ONLINE[0]} before"] = online[technique.before][ONLINE[0]].mean()
        row["online_users"] = len(bench.keys)
        rows.append(row)
    return rows


def run_dose(args: argparse.Namespace, log=print) -> pd.DataFrame:
    """Every world of the sweep, measured in turn: one row per (technique, world), a technique's
    own knob's rows first."""
    base = load_world_config(args.world)
    if args.world_seed is not None:
        base = base.replace(seed=args.world_seed)
    proposed = proposed_strengths()
    techniques = tuple(t for t in TECHNIQUES if t.name in args.techniques)
    worlds = sweep_worlds(techniques)
    rows, start = [], time.perf_counter()
    for i, sweep in enumerate(worlds, 1):
        world_start = time.perf_counter()
        log(f"[{i}/{len(worlds)}] world {sweep.name}: {', '.join(t.name for t in sweep.techniques)}")
        rows += measure_world(args, sweep, base, proposed, log)
        log(f"[{i}/{len(worlds)}] world {sweep.name} done in {time.perf_counter() - world_start:.0f} s")
    order = {name: i for i, name in enumerate(TECHNIQUE_NAMES)}
    table = pd.DataFrame(rows)  # in world order: off, then each knob at default and strong
    table = table.sort_values(
        ["technique", "own"],
        key=lambda column: column.map(order) if column.name == "technique" else ~column,
        kind="stable",
    ).reset_index(drop=True)
    table.attrs["seconds"] = time.perf_counter() - start
    epochs = args.epochs or parse_config(read_raw(args.base)).train.epochs
    online = f"{table['online_users'].min()}-{table['online_users'].max()}"
    seeds = (
        f"training seeds {', '.join(map(str, args.train_seeds))} (one row each, the same logs and bench)"
        if args.train_seeds
        else f"the training seed of {args.base}"
    )
    table.attrs["caption"] = (
        f"Base world {args.world!r} (seed {base.seed}) with one knob at a time; per world "
        f"{args.users} logged users x 1 day, every rung {epochs} epoch(s), {seeds}. "
        f"Offline: held-out users' logged lists (GAUC) and {args.eval_sessions} of their sessions "
        f"(global hitrate at the coarse cut). Online: {online} held-out users, one session each on "
        "the day after the logs, the same random numbers for both rungs; Δ = technique rung minus "
        "the rung before, paired, ± the 95 % half-width."
    )
    return table


SWEEP_POINT = ["technique", "knob", "level", "own"]
"""The columns that name one point of the sweep (a technique on one world)."""


def seed_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per sweep point, over its training seeds: the mean, lowest and highest ΔGAUC ‰ and
    Δ exact clicks, and how many seeds resolve the exact-click gain above / below 0."""
    clicks, half = table[f"Δ{ONLINE[0]}"], table[f"Δ{ONLINE[0]} ±95%"]
    resolved = table.assign(up=clicks - half > 0, down=clicks + half < 0)
    groups = resolved.groupby(SWEEP_POINT, sort=False)
    summary = groups.agg(
        strength=("strength", "first"),
        seeds=("train_seed", "nunique"),
        seeds_up=("up", "sum"),
        seeds_down=("down", "sum"),
    )
    for column, short in (("ΔGAUC ‰", "gauc"), (f"Δ{ONLINE[0]}", "clicks")):
        summary[f"{short}_mean"] = groups[column].mean()
        summary[f"{short}_min"] = groups[column].min()
        summary[f"{short}_max"] = groups[column].max()
    return summary.reset_index()


def point_columns(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """The table columns that name a sweep point: technique, knob, level (marked when the knob
    is another technique's) and the knob's strength."""
    return {
        "technique": frame["technique"],
        "knob": frame["knob"],
        "level": frame["level"] + np.where(frame["own"], "", " (other)"),
        "strength": frame["strength"],
    }


def format_seed_summary(summary: pd.DataFrame) -> str:
    """The Markdown table of ``seed_summary``: mean [lowest, highest] over the seeds."""

    def spread(short: str, digits: int) -> list[str]:
        values = zip(summary[f"{short}_mean"], summary[f"{short}_min"], summary[f"{short}_max"], strict=True)
        return [f"{m:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]" for m, lo, hi in values]

    shown = pd.DataFrame(
        point_columns(summary)
        | {
            "seeds": summary["seeds"],
            "ΔGAUC ‰ mean [min, max]": spread("gauc", 2),
            f"Δ{ONLINE[0]} mean [min, max]": spread("clicks", 3),
            "seeds resolving it up / down": [
                f"{u} / {d}" for u, d in zip(summary["seeds_up"], summary["seeds_down"], strict=True)
            ],
        }
    )
    return format_table(shown)


def format_dose(table: pd.DataFrame) -> str:
    """The Markdown table: the pair's gains with their 95 % half-widths in one cell (one row
    per training seed, after a summary over the seeds when there are several)."""
    shown = pd.DataFrame(
        point_columns(table)
        | {
            "train seed": table["train_seed"],
            "GAUC before": table["gauc_before"],
            "ΔGAUC ‰ ± 95 %": _with_interval(table["ΔGAUC ‰"], table.get("ΔGAUC ±95% ‰"), 2),
            "Δhitrate_global": table["Δhitrate_global"],
        }
    )
    for metric in ONLINE:
        shown[f"Δ{metric} ± 95 %"] = _with_interval(table[f"Δ{metric}"], table[f"Δ{metric} ±95%"], 3)
    shown[f"{ONLINE[0]} before"] = table[f"{ONLINE[0]} before"]
    if table["train_seed"].nunique() == 1:
        return format_table(shown)
    return f"{format_seed_summary(seed_summary(table))}\n\nPer training seed:\n\n{format_table(shown)}"


def _with_interval(values: pd.Series, half: pd.Series | None, digits: int) -> list[str]:
    """ "+d ± h" per row (no interval: the difference alone, as in tables from before them)."""
    half = half if half is not None else pd.Series(np.nan, index=values.index)
    return [
        f"{d:+.{digits}f}" + ("" if np.isnan(h) else f" ± {h:.{digits}f}")
        for d, h in zip(values, half, strict=True)
    ]


def plot_points(table: pd.DataFrame) -> pd.DataFrame:
    """One point per sweep point and panel: ΔGAUC ‰ (``gauc``) and Δ exact clicks (``clicks``)
    with their error bars below / above (``_lo`` / ``_hi``): with one training seed their paired
    95 % intervals (none on GAUC for tables from before its interval), with several the mean and
    the seeds' range."""
    if table["train_seed"].nunique() == 1:
        half = table[f"Δ{ONLINE[0]} ±95%"]
        gauc_half = table.get("ΔGAUC ±95% ‰", 0.0)
        return table[SWEEP_POINT].assign(
            gauc=table["ΔGAUC ‰"],
            gauc_lo=gauc_half,
            gauc_hi=gauc_half,
            clicks=table[f"Δ{ONLINE[0]}"],
            clicks_lo=half,
            clicks_hi=half,
        )
    summary = seed_summary(table)
    points = summary[SWEEP_POINT].copy()
    for short in ("gauc", "clicks"):
        points[short] = summary[f"{short}_mean"]
        points[f"{short}_lo"] = summary[f"{short}_mean"] - summary[f"{short}_min"]
        points[f"{short}_hi"] = summary[f"{short}_max"] - summary[f"{short}_mean"]
    return points


def plot_dose(table: pd.DataFrame, path: Path) -> None:
    """Per technique (columns): ΔGAUC ‰ (top) and Δ exact clicks per session (bottom) against
    its own knobs' level, the other knobs' default points beside; error bars as in
    ``plot_points``."""
    import matplotlib  # noqa: PLC0415 (only when plotting)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    several = table["train_seed"].nunique() > 1
    table = plot_points(table)
    techniques = list(dict.fromkeys(table["technique"]))
    fig, axes = plt.subplots(2, len(techniques), figsize=(4 * len(techniques), 6.5), squeeze=False)
    multiple = table["level"].map(LEVELS)
    colour = {knob: f"C{i}" for i, knob in enumerate(k for k in dict.fromkeys(table["knob"]) if k != "none")}
    for col, name in enumerate(techniques):
        rows = table[table["technique"] == name]
        off = rows[rows["knob"] == "none"]
        own_knobs = [k for k in dict.fromkeys(rows.loc[rows["own"], "knob"]) if k != "none"]
        others = rows[~rows["own"]]
        for ax, metric in ((axes[0, col], "gauc"), (axes[1, col], "clicks")):
            for i, knob in enumerate(own_knobs):
                points = pd.concat([off, rows[rows["knob"] == knob]])
                ax.errorbar(
                    multiple[points.index] + 0.04 * i,
                    points[metric],
                    yerr=[points[f"{metric}_lo"], points[f"{metric}_hi"]],
                    fmt="-o",
                    capsize=3,
                    color=colour[knob],
                    label=f"own: {knob}",
                )
            for i, (_, other) in enumerate(others.iterrows()):
                ax.errorbar(
                    1.15 + 0.08 * i,
                    other[metric],
                    yerr=[[other[f"{metric}_lo"]], [other[f"{metric}_hi"]]],
                    fmt="s",
                    capsize=3,
                    alpha=0.7,
                    color=colour[other["knob"]],
                    label=f"other: {other['knob']}",
                )
            ax.axhline(0, color="grey", lw=1)
            ax.set(xticks=list(LEVELS.values()), xticklabels=list(LEVELS), xlim=(-0.3, 2.3))
            ax.grid(alpha=0.3)
        if col == 0:
            bars = "mean, range over seeds" if several else "95 % CI"
            axes[0, 0].set(ylabel="offline ΔGAUC (‰)" + (f" ({bars})" if several else ""))
            axes[1, 0].set(ylabel=f"online Δ exact clicks / session ({bars})")
        axes[0, col].set(title=name)
        axes[1, col].set_xlabel("knob level")
        axes[1, col].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
