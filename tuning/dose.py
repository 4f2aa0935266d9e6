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

Pairs without distillation (no teacher outputs to compute, 2-4x cheaper): MLP scorer = DSSM ->
DSSM + MLP; NOVA and SENET + bilinear each on top of DSSM + MLP + FM (the ladder's "+fm" rung).
NOVA reads the logged dwell (``[model] dwell_buckets``) on worlds that log it. Every world's
logs, fine ranker and rungs are cached under ``<out>/<world>/`` (a rerun reuses them); the table
and the figure are ``<out>/dose.{md,csv,png}``.
"""

from __future__ import annotations

if __name__ == "__main__":  # the command parses its arguments before torch and pandas are imported
    from tuning.dose_cli import main

    raise SystemExit(main())

import argparse
import copy
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
from policies.evaluate import evaluate_coarse
from policies.rankers import load_scorer
from policies.train import ensure_trained, parse_config
from simulator.config import PHENOMENON_KNOBS, WorldConfig, load_world_config
from tuning.ladder import Bench, format_table, ladder_configs
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
        raw = copy.deepcopy(rungs[self.before])
        for table, values in self.changes.items():
            raw.setdefault(table, {}).update(values)
        if self.reads_dwell and (buckets := dwell_buckets(world)) is not None:
            raw["model"]["dwell_buckets"] = buckets
        raw["out"] = str(Path(raw["out"]).with_name(f"{name}.pt"))
        return name, raw


TECHNIQUES = (
    Technique("mlp", ("taste_saturation", "budget_penalty"), "dssm", {"model": {"mlp_scorer": True}}),
    Technique("nova", ("history_dwell_separation",), "+fm", {"model": {"nova": True}}, reads_dwell=True),
    Technique("senet_bilinear", ("field_interaction_std",), "+fm", {"model": {"senet_bilinear": True}}),
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
    args: argparse.Namespace, world: WorldConfig, folder: Path, techniques: tuple[Technique, ...]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The fine ranker's raw config and the raw configs of the rungs ``techniques`` need, all on
    the logs of ``world`` in ``folder`` (its world.toml written here)."""
    folder.mkdir(parents=True, exist_ok=True)
    world_file = folder / "world.toml"
    world_file.write_text(dumps_toml({"world": world.to_dict()}))
    data = {"logs": str(folder / "logs"), "world": str(world_file), "users": args.users, "days": 1}
    fine = read_raw(args.fine)
    fine["data"] = {**fine.get("data", {}), **data}
    fine.get("model", {}).pop("dwell_buckets", None)  # the same fine ranker on every world
    fine["out"] = str(folder / "fine.pt")
    base = read_raw(args.base)
    base["data"] = {**base.get("data", {}), **data}
    if args.epochs is not None:
        base.setdefault("train", {})["epochs"] = args.epochs
    ladder = ladder_configs(base, fine["out"], folder)
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
    """The rows of the techniques measured on one world of the sweep."""
    world = level_world(base, sweep.knob, sweep.level, proposed) if sweep.knob else base
    fine_raw, raws = world_runs(args, world, Path(args.out) / sweep.name, sweep.techniques)
    runs = {name: parse_config(raw, f"dose rung {name}") for name, raw in raws.items()}
    fine = parse_config(fine_raw, "dose fine ranker")
    coarse_size = args.coarse_size or world.logging_coarse_size
    first = next(iter(runs.values()))
    bench = Bench.build(first, fine, coarse_size, args.eval_sessions, args.online_users, args.progress, log)
    offline, online = {}, {}
    for name, run in runs.items():
        scorer = load_scorer(
            str(ensure_trained(run, progress=args.progress, log=log)), bench.world, bench.features, "coarse"
        )
        offline[name] = evaluate_coarse(scorer, bench.eval_set)
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
            "gauc_before": offline[technique.before]["gauc"],
            "ΔGAUC ‰": 1000 * (offline[after]["gauc"] - offline[technique.before]["gauc"]),
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
    table.attrs["caption"] = (
        f"Base world {args.world!r} (seed {base.seed}) with one knob at a time; per world "
        f"{args.users} logged users x 1 day, every rung {epochs} epoch(s), seed of {args.base}. "
        f"Offline: held-out users' logged lists (GAUC) and {args.eval_sessions} of their sessions "
        f"(global hitrate at the coarse cut). Online: {online} held-out users, one session each on "
        "the day after the logs, the same random numbers for both rungs; Δ = technique rung minus "
        "the rung before, paired, ± the 95 % half-width."
    )
    return table


def format_dose(table: pd.DataFrame) -> str:
    """The Markdown table: the pair's gains with their 95 % half-widths in one cell."""
    shown = pd.DataFrame(
        {
            "technique": table["technique"],
            "knob": table["knob"],
            "level": table["level"] + np.where(table["own"], "", " (other)"),
            "strength": table["strength"],
            "GAUC before": table["gauc_before"],
            "ΔGAUC ‰": table["ΔGAUC ‰"],
            "Δhitrate_global": table["Δhitrate_global"],
        }
    )
    for metric in ONLINE:
        shown[f"Δ{metric} ± 95 %"] = [
            f"{d:+.3f} ± {h:.3f}" for d, h in zip(table[f"Δ{metric}"], table[f"Δ{metric} ±95%"], strict=True)
        ]
    shown[f"{ONLINE[0]} before"] = table[f"{ONLINE[0]} before"]
    return format_table(shown)


def plot_dose(table: pd.DataFrame, path: Path) -> None:
    """Per technique (columns): ΔGAUC ‰ (top) and Δ exact clicks per session with 95 %
    intervals (bottom) against its own knobs' level, the other knobs' default points beside."""
    import matplotlib  # noqa: PLC0415 (only when plotting)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    techniques = list(dict.fromkeys(table["technique"]))
    fig, axes = plt.subplots(2, len(techniques), figsize=(4 * len(techniques), 6.5), squeeze=False)
    multiple = table["level"].map(LEVELS)
    colour = {knob: f"C{i}" for i, knob in enumerate(k for k in dict.fromkeys(table["knob"]) if k != "none")}
    for col, name in enumerate(techniques):
        rows = table[table["technique"] == name]
        off = rows[rows["knob"] == "none"]
        own_knobs = [k for k in dict.fromkeys(rows.loc[rows["own"], "knob"]) if k != "none"]
        others = rows[~rows["own"]]
        for ax, metric, half in (
            (axes[0, col], "ΔGAUC ‰", None),
            (axes[1, col], f"Δ{ONLINE[0]}", f"Δ{ONLINE[0]} ±95%"),
        ):
            for i, knob in enumerate(own_knobs):
                points = pd.concat([off, rows[rows["knob"] == knob]])
                x = multiple[points.index] + 0.04 * i
                err = points[half] if half else None
                ax.errorbar(
                    x, points[metric], yerr=err, fmt="-o", capsize=3, color=colour[knob], label=f"own: {knob}"
                )
            for i, (_, other) in enumerate(others.iterrows()):
                ax.errorbar(
                    1.15 + 0.08 * i,
                    other[metric],
                    yerr=other[half] if half else None,
                    fmt="s",
                    capsize=3,
                    alpha=0.7,
                    color=colour[other["knob"]],
                    label=f"other: {other['knob']}",
                )
            ax.axhline(0, color="grey", lw=1)
            ax.set(xticks=list(LEVELS.values()), xticklabels=list(LEVELS), xlim=(-0.3, 2.3))
            ax.grid(alpha=0.3)
        axes[0, col].set(title=name, ylabel="offline ΔGAUC (‰)" if col == 0 else None)
        axes[1, col].set(ylabel="online Δ exact clicks / session (95 % CI)" if col == 0 else None)
        axes[1, col].set_xlabel("knob level")
        axes[1, col].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
