"""The ablation ladder of the seeds' coarse-ranking techniques, trained and evaluated in one go.

    python -m tuning.ladder               # default world, ~20k logged users (or cascade-ab-ladder)
    python -m tuning.ladder --help

Rungs are cumulative, starting from the baseline DSSM config: + FM cross, + MLP scorer,
+ distillation from the fine ranker (label-smoothed soft labels, two stages), + NOVA,
+ SENET/bilinear, and "full" (+ out-of-scene positives and seed 002's multi-positive
softmax), which equals ``configs/models/coarse_full.toml``; then seed 002's ablations of the
full model (``ABLATIONS``: without unexposed and random negatives, without label smoothing,
without out-of-scene positives). Each is trained once and cached (``ensure_trained``);
baselines (random, popularity, oracle) are evaluated beside them.

The table has every offline metric of ``policies.evaluate`` (held-out users), the inference
cost (ms per 1,000 candidates, one request, the recall set of the default world) and the
simulated online outcome of a cascade with that coarse ranker and the fine ranker: clicks
and GMV per session on fresh days for the same users and random numbers in every row, with
the paired difference to the DSSM row and its 95 % interval. Written to
``<out>/ladder.{md,csv,png}``.
"""

from __future__ import annotations

if __name__ == "__main__":  # the command parses its arguments before torch and pandas are imported
    from tuning.ladder_cli import main

    raise SystemExit(main())

import argparse
import copy
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from abtest.report import markdown_table
from abtest.stats import holm, paired_lift
from policies.baselines import BASELINES
from policies.cascade import Cascade, CascadeSizes
from policies.checkpoint import load_checkpoint
from policies.config import RunConfig, dwell_buckets, read_raw
from policies.data import LogSplit, load_logs
from policies.evaluate import ClickRows, EvalSet, inference_ms_per_1000
from policies.features import FeatureStore
from policies.rankers import Scorer, load_scorer
from policies.train import ensure_logs, ensure_trained, parse_config, split_logs
from simulator.config import load_world_config
from simulator.recall import SessionKeys
from simulator.session import Simulator
from simulator.world import World
from tuning.agreement import OFFLINE_METRICS, agreement_table
from tuning.online import session_outcomes

STEPS: list[tuple[str, dict[str, dict[str, Any]]]] = [
    ("dssm", {}),
    ("+fm", {"model": {"fm_cross": True}}),
    ("+mlp", {"model": {"mlp_scorer": True}}),
    ("+distill", {"distill": {"teacher": "FINE"}}),
    ("+nova", {"model": {"nova": True}}),
    ("+senet_bilinear", {"model": {"senet_bilinear": True}}),
    ("full", {"data": {"out_of_scene": True}, "train": {"loss": "multi_positive_softmax"}}),
]
"""Cumulative changes to the baseline config; "FINE" stands for the fine ranker's config."""

ABLATIONS: list[tuple[str, dict[str, dict[str, Any]]]] = [
    ("full-unexposed-random", {"data": {"unexposed": False, "random": False}}),
    ("full-label_smoothing", {"distill": {"label_smoothing_scale": 0.0}}),
    ("full-out_of_scene", {"data": {"out_of_scene": False}}),
]
"""Seed 002's sample-space studies: the full model with one technique taken away (no unexposed
coarse survivors nor random negatives among the negatives; unexposed items' soft labels 0, the
teacher's pCTR times their exposure probability, instead of pCTR x a small scale; no
out-of-scene purchases as positives)."""

LEAVE_ONE_OUT: list[tuple[str, dict[str, dict[str, Any]]]] = [
    ("full-fm", {"model": {"fm_cross": False}}),
    ("full-mlp", {"model": {"mlp_scorer": False}}),
    ("full-distill", {"distill": {"teacher": ""}}),
    ("full-nova", {"model": {"nova": False, "dwell_buckets": None}}),
    ("full-senet_bilinear", {"model": {"senet_bilinear": False}}),
]
"""With ``--leave-one-out``: the full model without one of the architectural techniques, which
asks what each is worth beside all the others (a rung's step asks it beside the rungs before)."""


def with_changes(raw: dict[str, Any], changes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A copy of the raw config ``raw`` with the settings of ``changes`` (per table) set; a
    setting changed to ``None`` is removed (back to its default)."""
    raw = copy.deepcopy(raw)
    for table, values in changes.items():
        settings = raw.setdefault(table, {})
        settings.update(values)
        for key in [k for k, v in values.items() if v is None]:
            del settings[key]
    return raw


def ladder_configs(
    base: dict[str, Any], fine: str, out_dir: Path, dwell: int | None = None
) -> dict[str, dict[str, Any]]:
    """The raw training config of every rung (cumulative ``STEPS`` over ``base``); from the
    NOVA rung on, NOVA reads the logged dwell in ``dwell`` buckets if given."""
    configs, current = {}, base
    for name, changes in STEPS:
        named = {
            t: {k: fine if v == "FINE" else v for k, v in values.items()} for t, values in changes.items()
        }
        current = with_changes(current, named)
        if dwell is not None and current.get("model", {}).get("nova"):
            current["model"]["dwell_buckets"] = dwell
        if "teacher" in current.get("distill", {}):
            current["distill"] = {"soft_only_epochs": 1, "label_smoothing_scale": 0.1, **current["distill"]}
        configs[name] = {**copy.deepcopy(current), "out": str(out_dir / f"{name.lstrip('+')}.pt")}
    return configs


def ablation_configs(
    full: dict[str, Any], out_dir: Path, ablations: Sequence[tuple[str, dict]] = tuple(ABLATIONS)
) -> dict[str, dict[str, Any]]:
    """The raw training config of every row of ``ablations`` (``ABLATIONS``, or with
    ``LEAVE_ONE_OUT``): the full rung's ``full`` with its change."""
    return {
        name: {**with_changes(full, changes), "out": str(out_dir / f"{name}.pt")}
        for name, changes in ablations
    }


def paired_vs_reference(
    outcomes: dict[str, dict[str, np.ndarray]], reference: str, metrics: tuple[str, ...]
) -> dict[str, dict[str, float]]:
    """Per row and metric: the paired mean difference to the ``reference`` row over the same
    users and the half-width of its 95 % interval (``abtest.stats.paired_lift``)."""
    out = {}
    for name, outcome in outcomes.items():
        row = {}
        for metric in metrics:
            paired = paired_lift(outcomes[reference][metric], outcome[metric])
            row[f"Δ{metric} vs {reference}"] = paired.effect
            row[f"Δ{metric} ±95%"] = paired.effect_hi - paired.effect
        out[name] = row
    return out


@dataclass
class Bench:
    """What every rung is measured on: the world of the first rung's logs, its held-out users'
    evaluation set (``policies.evaluate.EvalSet``) and their sessions on the fresh day after the
    logs (the same users and random numbers for every rung), with the fine ranker after the
    coarse one."""

    world: World
    features: FeatureStore
    fine: Scorer
    sizes: CascadeSizes
    split: LogSplit
    eval_set: EvalSet
    sim: Simulator
    keys: SessionKeys
    day: int
    """The online sessions' day (the first after the logs)."""

    @classmethod
    def build(
        cls,
        first: RunConfig,
        fine_config: str | Path | RunConfig,
        coarse_size: int,
        eval_sessions: int,
        online_users: int,
        progress: bool,
        log=print,
    ) -> Bench:
        """The bench of ``first``'s logs (simulated if missing) and the fine ranker of
        ``fine_config`` (trained if needed)."""
        world = World(load_world_config(first.data.world))
        data = load_logs(ensure_logs(first.data, progress=progress))
        split = split_logs(data, first.data.split, first.data.held_out_share, first.data.split_seed)
        features = FeatureStore.from_world(world)
        sizes = CascadeSizes(coarse=coarse_size, page=world.config.page_size)
        fine_path = ensure_trained(fine_config, progress=progress, log=log)
        fine = load_scorer(str(fine_path), world, features, "fine")
        log(f"building the evaluation set ({eval_sessions} held-out sessions)...")
        eval_set = EvalSet.build(
            world, data, split.eval_users, fine, sizes, n_sessions=eval_sessions, day=split.eval_day
        )
        day = int(data.samples["day"].max()) + 1
        keys = SessionKeys.of(split.eval_users[:online_users], day=day)  # the same for every rung
        return cls(world, features, fine, sizes, split, eval_set, Simulator(world), keys, day)


def rung_tests(
    outcomes: dict[str, dict[str, np.ndarray]],
    rungs: list[str],
    metric: str,
    ablations: Sequence[str] = (),
    offline: ClickRows | None = None,
) -> pd.DataFrame:
    """Paired tests of ``metric`` per trained rung against the first rung (the DSSM) and against
    the rung before it (do neighbouring rungs separate?), of the full model (the last rung)
    against each of its ``ablations``, and of the oracle against the DSSM: the mean difference
    with its 95 % interval, the relative lift, the paired t-test's p and Holm's adjustment over
    each family of comparisons (the rungs vs the DSSM; neighbours; the technique taken away).
    Given ``offline``, each comparison also gets its paired GAUC difference (‰) with a 95 %
    interval over the held-out users."""
    pairs = [(name, rungs[0], "vs dssm") for name in rungs[1:]]
    pairs += [(name, before, "vs the rung before") for before, name in itertools.pairwise(rungs)]
    pairs += [(rungs[-1], name, "full vs ablation") for name in ablations]
    if "oracle" in outcomes:
        pairs.append(("oracle", rungs[0], "oracle vs dssm"))
    rows = []
    for name, reference, family in pairs:
        paired = paired_lift(outcomes[reference][metric], outcomes[name][metric])
        row = {"family": family, "rung": name, "reference": reference}
        if offline is not None:
            row["ΔGAUC ‰"], row["ΔGAUC ±95% ‰"] = offline.gauc_difference(name, reference)
        row |= {
            f"Δ{metric}": paired.effect,
            "±95%": paired.effect_hi - paired.effect,
            "lift %": 100 * paired.lift,
            "p": paired.pvalue,
        }
        rows.append(row)
    tests = pd.DataFrame(rows)
    tests["p Holm"] = np.nan
    for family in ("vs dssm", "vs the rung before", "full vs ablation"):
        rows = tests["family"] == family
        if rows.any():
            tests.loc[rows, "p Holm"] = holm(tests.loc[rows, "p"].to_numpy())
    return tests


def offline_online_agreement(table: pd.DataFrame, coarse_size: int, online: str) -> pd.DataFrame:
    """Kendall's τ-b of each offline metric with the online column ``online`` over the rows of
    the ladder table: the trained rows (rungs and ablations), then every row (with the
    random, popularity and oracle baselines, where the metric exists: the hitrates); with a
    bootstrap interval and the row each metric would have picked (``tuning.agreement``)."""
    metrics = [m.format(C=coarse_size) for m in OFFLINE_METRICS]
    rows = table.rename(columns={"model": "trial_id", online: "objective"})
    parts = []
    for label, chosen in (("trained", rows[rows["train_s"].notna()]), ("all", rows)):
        part = agreement_table(chosen, metrics, n_boot=1000)
        parts.append(part.assign(rows=label)[["rows", "metric", "trials", "tau", "tau_lo", "tau_hi", "pick"]])
    return pd.concat(parts, ignore_index=True)


def override_training(configs: dict[str, dict], epochs: int | None, seed: int | None) -> None:
    """Set every rung's ``[train] epochs`` and ``seed`` in place where given; distillation's
    stage 1 (soft labels only) then gets at most ``epochs - 1``, leaving one for stage 2."""
    for raw in configs.values():
        train = raw.setdefault("train", {})
        if seed is not None:
            train["seed"] = seed
        if epochs is not None:
            train["epochs"] = epochs
            if "distill" in raw:
                raw["distill"]["soft_only_epochs"] = min(raw["distill"]["soft_only_epochs"], epochs - 1)


def run_ladder(args: argparse.Namespace, log=print) -> pd.DataFrame:
    out_dir = Path(args.out)
    base = read_raw(args.base)
    world_config = load_world_config(parse_config(base, "the base config").data.world)
    configs = ladder_configs(base, args.fine, out_dir, dwell_buckets(world_config))
    ablation_rows = ABLATIONS + (LEAVE_ONE_OUT if args.leave_one_out else [])
    configs |= ablation_configs(configs["full"], out_dir, ablation_rows)
    override_training(configs, args.epochs, args.train_seed)
    for raw in configs.values():
        data = raw.setdefault("data", {})
        data.update({k: v for k, v in (("logs", args.logs), ("users", args.users)) if v is not None})
    runs = {name: parse_config(raw, f"ladder rung {name}") for name, raw in configs.items()}
    bench = Bench.build(
        next(iter(runs.values())),
        args.fine,
        args.coarse_size,
        args.eval_sessions,
        args.online_users,
        args.progress,
        log,
    )
    world, features, fine, sizes = bench.world, bench.features, bench.fine, bench.sizes
    online_fine = load_scorer(args.online_fine, world, features, "fine") if args.online_fine else fine
    eval_set, sim, keys, split, days = bench.eval_set, bench.sim, bench.keys, bench.split, bench.day
    held_out = split.eval_users
    probe_user, probe_items = int(eval_set.keys.user[0]), eval_set.recall[0]

    rows, outcomes = [], {}
    offline = ClickRows(eval_set)
    scorers = {name: name for name in BASELINES} | {name: "" for name in runs}
    for name in scorers:
        start = time.perf_counter()
        row: dict[str, Any] = {"model": name}
        if name in runs:
            path = ensure_trained(runs[name], progress=args.progress, log=log)
            loaded = load_checkpoint(path)
            scorer = load_scorer(str(path), world, features, "coarse")
            row["version"] = loaded.version
            row["train_s"] = loaded.metadata["train_seconds"]
        else:
            scorer = load_scorer(name, world, features, "coarse")
        row |= offline.evaluate(name, scorer)
        row["ms/1k cand"] = inference_ms_per_1000(scorer, probe_user, probe_items)
        outcomes[name] = session_outcomes(sim, Cascade(scorer, online_fine, sizes), keys)
        row["clicks/session"] = outcomes[name]["clicks"].mean()
        row["gmv/session"] = outcomes[name]["gmv"].mean()
        row["pages/session"] = outcomes[name]["pages"].mean()
        log(f"{name}: evaluated in {time.perf_counter() - start:.1f} s")
        rows.append(row)
    if "dssm" in outcomes:
        paired = paired_vs_reference(outcomes, "dssm", ("clicks", "exact_clicks", "gmv", "exact_gmv"))
        for row in rows:
            row["ΔGAUC ‰ vs dssm"], row["ΔGAUC ±95% ‰"] = offline.gauc_difference(row["model"], "dssm")
            row.update(paired[row["model"]])
    table = pd.DataFrame(rows, columns=list(max(rows, key=len)))  # a trained rung's column order
    ablations = [name for name, _ in ablation_rows]
    trained = [name for name in runs if name in outcomes and name not in ablations]
    if len(trained) >= 2 and trained[0] == "dssm":
        done = [name for name in ablations if name in outcomes]
        table.attrs["tests"] = rung_tests(outcomes, trained, "exact_clicks", done, offline)
        table.attrs["agreement"] = offline_online_agreement(table, sizes.coarse, "Δexact_clicks vs dssm")
    n_in, n_out = (sum(map(len, bought)) for bought in (eval_set.in_scene, eval_set.out_of_scene))
    who, who_offline = ("held-out", "held-out users")  # split "user"
    if split.eval_day is not None:
        who, who_offline = ("logged", f"logged users (time split: their day {split.eval_day})")
    table.attrs["caption"] = (
        f"Offline: {len(held_out)} {who_offline}; hitrate and funnel over {len(eval_set.keys)} of "
        f"their sessions ({n_in} in-scene and {n_out} out-of-scene purchases: a hitrate's standard "
        f"error is up to {0.5 / np.sqrt(max(n_in, 1)):.3f} / {0.5 / np.sqrt(max(n_out, 1)):.3f}), "
        f"coarse cut C = {sizes.coarse}. Online: {len(keys)} {who} users, one session each on "
        f"day {days} with {f'the fine stage {args.online_fine}' if args.online_fine else 'the fine ranker'}"
        " after the coarse one; Δ = paired mean difference ± 95 %."
    )
    return table


def replicate_table(replicates: dict[str, tuple[pd.DataFrame, pd.DataFrame]]) -> pd.DataFrame:
    """Ladders with other training seeds side by side: per paired comparison of the rung tests
    (a rung against the DSSM, against the rung before; the full model against an ablation),
    each replicate's ΔGAUC (‰, the rung minus its reference; with its 95 % interval when the
    tests have one) and online lift (%), and whether the replicates agree: offline on the sign
    (and, with intervals, with every interval clear of 0), online on the sign with every Holm
    p < 0.05.
    ``replicates``: label -> (ladder table, its rung tests), as in ``ladder.csv`` and
    ``ladder_tests.csv``."""
    if not replicates:
        raise ValueError("no replicates given")
    keys = ["family", "rung", "reference"]
    merged = None
    for label, (table, tests) in replicates.items():
        gauc = table.set_index("model")["gauc"]
        part = tests[tests["family"] != "oracle vs dssm"].copy()
        part[f"ΔGAUC ‰ {label}"] = 1000 * (part["rung"].map(gauc) - part["reference"].map(gauc)).to_numpy()
        part[f"±95% {label}"] = part.get("ΔGAUC ±95% ‰", np.nan)
        part = part[[*keys, "lift %", "p Holm", f"ΔGAUC ‰ {label}", f"±95% {label}"]]
        part = part.rename(columns={"lift %": f"lift % {label}", "p Holm": f"p Holm {label}"})
        merged = part if merged is None else merged.merge(part, on=keys, how="inner", sort=False)
    labels = list(replicates)
    offline = np.sign(merged[[f"ΔGAUC ‰ {label}" for label in labels]].to_numpy())
    online = np.sign(merged[[f"lift % {label}" for label in labels]].to_numpy())
    significant = (merged[[f"p Holm {label}" for label in labels]].to_numpy() < 0.05).all(axis=1)
    merged["offline sign agrees"] = (offline == offline[:, :1]).all(axis=1) & (offline[:, 0] != 0)
    merged["online agrees"] = (online == online[:, :1]).all(axis=1) & significant
    columns = [f"{kind} {label}" for kind in ("ΔGAUC ‰", "lift %") for label in labels]
    width = merged[[f"±95% {label}" for label in labels]].to_numpy()
    if np.isnan(width).all():  # ladders from before the offline intervals
        return merged[[*keys, *columns, "offline sign agrees", "online agrees"]]
    separated = (np.abs(merged[[f"ΔGAUC ‰ {label}" for label in labels]].to_numpy()) > width).all(axis=1)
    merged["offline agrees"] = merged["offline sign agrees"] & separated
    columns = [f"{kind} {label}" for label in labels for kind in ("ΔGAUC ‰", "±95%")]
    columns += [f"lift % {label}" for label in labels]
    return merged[[*keys, *columns, "offline sign agrees", "offline agrees", "online agrees"]]


def format_table(table: pd.DataFrame) -> str:
    """A Markdown table without the checkpoint versions, numbers to 4 significant digits."""
    return markdown_table(table.drop(columns=["version"], errors="ignore"), digits=4, missing="")


def plot_ladder(table: pd.DataFrame, path: Path) -> None:
    """Two panels: offline, the trained rungs' paired Δ GAUC vs the DSSM with 95 % intervals
    (held-out AUC / GAUC levels for a table without them), and online Δ exact and realised
    clicks per session vs the DSSM with 95 % intervals (the oracle's as the ceiling; random /
    popularity left out)."""
    import matplotlib  # noqa: PLC0415 (only when plotting)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    trained = table.dropna(subset=["gauc"])
    fig, (offline, online) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    online_rows = trained[trained["model"] != "dssm"]  # the reference
    y = np.arange(len(online_rows))
    if "ΔGAUC ‰ vs dssm" in table.columns:  # the paired difference with its interval
        offline.errorbar(
            online_rows["ΔGAUC ‰ vs dssm"], y, xerr=online_rows["ΔGAUC ±95% ‰"], fmt="s", capsize=3
        )
        offline.axvline(0, color="grey", lw=1)
        offline.set(yticks=y, xlabel="Δ GAUC ‰ vs DSSM (95 % CI)", title="offline (held-out clicks, paired)")
        offline.set_yticklabels(online_rows["model"])
        offline.invert_yaxis()
        offline.grid(alpha=0.3, axis="x")
    else:  # a table from before the offline intervals: the levels
        x = np.arange(len(trained))
        for metric, marker in (("auc", "o"), ("gauc", "s")):
            offline.plot(x, trained[metric], marker=marker, label=f"held-out {metric.upper()}")
        offline.set(xticks=x, title="offline (held-out clicks)")
        offline.set_xticklabels(trained["model"], rotation=30, ha="right")
        offline.legend()
        offline.grid(alpha=0.3)
    # The exact twin (expected clicks given the pages shown) where the table has it, beside the
    # realised clicks: the same effect, without the click coin flips' noise.
    series = [("Δexact_clicks", "exact clicks", "o", 0.0), ("Δclicks", "realised clicks", "x", 0.2)]
    series = [s for s in series if f"{s[0]} vs dssm" in table.columns]
    shift = len(series) > 1
    for column, label, marker, dy in series:
        online.errorbar(
            online_rows[f"{column} vs dssm"],
            y + dy * shift,
            xerr=online_rows[f"{column} ±95%"],
            fmt=marker,
            capsize=3,
            label=label,
        )
    if "oracle" in set(table["model"]):
        oracle = table.set_index("model").loc["oracle"]
        column = series[0][0]
        online.axvspan(
            oracle[f"{column} vs dssm"] - oracle[f"{column} ±95%"],
            oracle[f"{column} vs dssm"] + oracle[f"{column} ±95%"],
            color="tab:green",
            alpha=0.2,
            label=f"oracle coarse ranker ({series[0][1]})",
        )
    online.axvline(0, color="grey", lw=1)
    online.set(yticks=y, xlabel="Δ clicks per session vs DSSM (95 % CI)", title="online (paired)")
    online.set_yticklabels(online_rows["model"])
    online.invert_yaxis()
    # Below the axes: inside, the legend hides a row whichever corner it takes.
    online.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3, fontsize="small")
    online.grid(alpha=0.3, axis="x")
    fig.savefig(path, dpi=110)
    plt.close(fig)
