"""A search's outputs in its run folder ``runs/tune/<name>/``:

- ``config.toml``: the search config (``--resume`` checks it);
- ``results.csv`` / ``results.parquet``: one row per trial (``tuning.search.results_table``);
- ``epochs.csv`` / ``epochs.parquet``: one row per trial and epoch (what ASHA saw);
- ``agreement.csv`` and ``agreement.txt``: Kendall τ of each offline metric with the online
  lift, its bootstrap interval and each metric's pick (``tuning.agreement``);
- ``objective.png`` (the objective per trial, with intervals), ``offline_vs_online.png`` (each
  offline metric against the online lift), ``agreement.png`` (τ per metric) and
  ``epochs.png`` (the ASHA metric per epoch);
- ``best.toml``: the best trial's full training config; its checkpoint is the trial's, so
  ``run_ab.py`` reuses it (``coarse = "runs/tune/<name>/best.toml"``);
- ``summary.json``: the best trial, the control's offline metrics, timings.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from abtest.stats import paired_lift
from common.config import dumps_toml
from policies.train import parse_config
from tuning.agreement import OFFLINE_METRICS, agreement_table, format_agreement
from tuning.config import SearchConfig, native


def offline_columns(config: SearchConfig) -> list[str]:
    c = config.control.coarse_size
    return [f"offline/{m.format(C=c)}" for m in OFFLINE_METRICS]


def best_trial(table: pd.DataFrame) -> pd.Series | None:
    finished = table[table["status"] == "finished"] if len(table) else table
    if not len(finished):
        return None
    return finished.loc[finished["objective"].astype(float).idxmax()]


def write_best_toml(config: SearchConfig, best: pd.Series, trials_dir: Path, path: Path) -> None:
    """The best trial's full training config (every setting explicit, exactly what it
    trained with) as TOML."""
    run = parse_config(json.loads((trials_dir / f"{best['trial_id']}.json").read_text()), str(path))
    settings = ", ".join(f"{d.key} = {native(best[d.key])!r}" for d in config.space if d.key in best)
    header = (
        f"# Best trial {best['trial_id']} of search {config.name!r}: {config.objective.metric} lift "
        f"{best['objective']:+.2%} [{best['objective_lo']:+.2%}, {best['objective_hi']:+.2%}] "
        "vs the control.\n"
        f"# Searched settings: {settings}.\n"
        "# Its checkpoint (out) is the trial's, so run_ab.py uses it as an arm without retraining:\n"
        f'#   coarse = "{path}"\n'
        "# To retrain it on other logs, change [data] logs and out.\n"
    )
    path.write_text(header + dumps_toml(run.to_dict()))


def _save(frame: pd.DataFrame, stem: Path) -> None:
    frame.to_csv(stem.with_suffix(".csv"), index=False)
    frame.to_parquet(stem.with_suffix(".parquet"), index=False)


def write_outputs(config: SearchConfig, outcome: Any, run_dir: Path) -> dict[str, Any]:
    """Write every output of a search (see the module doc); returns the summary."""
    run_dir = Path(run_dir)
    table = outcome.table
    _save(table, run_dir / "results")
    if len(outcome.epochs):
        _save(outcome.epochs, run_dir / "epochs")
    metrics = offline_columns(config)
    trials_dir = run_dir / "trials"

    def compare(winner: str, pick: str) -> tuple[float, float, float]:
        """The pick's lift over the winner: both ran the same users on the same day."""
        name = config.objective.metric
        won, picked = (np.load(trials_dir / f"{t}.online.npz")[name] for t in (winner, pick))
        lift = paired_lift(won, picked, config.objective.alpha)
        return lift.lift, lift.lift_lo, lift.lift_hi

    agreement = agreement_table(
        table[table["status"] == "finished"] if len(table) else table,
        metrics,
        n_boot=config.agreement.bootstrap,
        alpha=config.objective.alpha,
        seed=config.search.seed,
        compare=compare,
    )
    agreement["metric"] = agreement["metric"].str.removeprefix("offline/")
    agreement.to_csv(run_dir / "agreement.csv", index=False)
    text = format_agreement(agreement, config.objective.metric)
    (run_dir / "agreement.txt").write_text(text + "\n")

    best = best_trial(table)
    if best is not None:
        write_best_toml(config, best, trials_dir, run_dir / "best.toml")
    plot_objective(config, table, run_dir / "objective.png")
    plot_offline_vs_online(
        config, table, agreement, outcome.control_offline, run_dir / "offline_vs_online.png"
    )
    plot_agreement(config, agreement, run_dir / "agreement.png")
    if len(outcome.epochs):
        plot_epochs(config, table, outcome.epochs, run_dir / "epochs.png")

    counts = table["status"].value_counts().to_dict() if len(table) else {}
    summary = {
        "name": config.name,
        "trials": len(table),
        "status": {str(k): int(v) for k, v in counts.items()},
        "objective": config.objective.metric,
        "best": None if best is None else _best_summary(config, best),
        "control": {"checkpoint": outcome.control, "offline": outcome.control_offline},
        "fine": outcome.fine,
        "interrupted": outcome.interrupted,
        "timings": outcome.timings,
        "agreement": agreement.to_dict(orient="records"),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=_json_default) + "\n")
    return summary


def _best_summary(config: SearchConfig, best: pd.Series) -> dict[str, Any]:
    out = {"trial_id": best["trial_id"], "objective": best["objective"]}
    out |= {"objective_lo": best["objective_lo"], "objective_hi": best["objective_hi"]}
    out["settings"] = {d.key: native(best[d.key]) for d in config.space if d.key in best}
    return out


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def format_table(config: SearchConfig, table: pd.DataFrame, limit: int = 30) -> str:
    """The trials, best first: status, objective with interval, main offline metrics."""
    if not len(table):
        return "no trials"
    c = config.control.coarse_size
    cols = ["offline/gauc", "offline/ndcg@10", f"offline/hitrate_in@{c}", f"offline/hitrate_global@{c}"]
    ordered = table.assign(_o=table.get("objective", pd.Series(np.nan, index=table.index)).astype(float))
    ordered = ordered.sort_values("_o", ascending=False, na_position="last").head(limit)
    lines = [
        f"{'trial':<13}{'status':<10}{'ep':>3} {config.objective.metric + ' lift [CI]':<28}"
        + "".join(f"{col.removeprefix('offline/'):>22}" for col in cols)
    ]
    for _, row in ordered.iterrows():
        obj = row.get("objective", math.nan)
        if isinstance(obj, float) and math.isfinite(obj):
            cell = f"{obj:+.2%} [{row['objective_lo']:+.2%}, {row['objective_hi']:+.2%}]"
        else:
            cell = ""
        values = "".join(
            f"{row[col]:>22.4f}"
            if col in row and isinstance(row[col], float) and math.isfinite(row[col])
            else f"{'':>22}"
            for col in cols
        )
        lines.append(f"{row['trial_id']:<13}{row['status']:<10}{row['epochs']:>3} {cell:<28}{values}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Plots


def _pyplot():
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def plot_objective(config: SearchConfig, table: pd.DataFrame, path: Path) -> None:
    """The objective lift of every trial in start order, with its interval; trials without
    an online score are marked on the axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(table) + 2), 4))
    x = np.arange(len(table))
    if len(table):
        done = (table["status"] == "finished").to_numpy()
        y = table.get("objective", pd.Series(np.nan, index=table.index)).astype(float).to_numpy()
        lo = table.get("objective_lo", pd.Series(np.nan, index=table.index)).astype(float).to_numpy()
        hi = table.get("objective_hi", pd.Series(np.nan, index=table.index)).astype(float).to_numpy()
        ax.errorbar(
            x[done], 100 * y[done], yerr=100 * np.abs(np.stack([y - lo, hi - y])[:, done]), fmt="o", capsize=3
        )
        best = best_trial(table)
        if best is not None:
            i = int(np.flatnonzero(table["trial_id"].to_numpy() == best["trial_id"])[0])
            ax.plot([i], [100 * y[i]], marker="*", markersize=16, color="tab:red", label="best")
            ax.legend(loc="best")
        for status, marker in (("stopped", "v"), ("failed", "x"), ("running", ".")):
            mask = (table["status"] == status).to_numpy()
            if mask.any():
                ax.plot(x[mask], np.zeros(mask.sum()), marker, color="grey", label=status)
        ax.set_xticks(x, table["trial_id"].str.split("_").str[-1], rotation=90, fontsize=7)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("trial (start order); grey: no online score (v stopped, x failed)")
    ax.set_ylabel(f"{config.objective.metric} lift vs control (%)")
    ax.set_title(
        f"search {config.name}: online objective per trial ({100 * (1 - config.objective.alpha):.0f}% CI)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_offline_vs_online(
    config: SearchConfig, table: pd.DataFrame, agreement: pd.DataFrame, control: dict[str, float], path: Path
) -> None:
    """One panel per offline metric: metric vs online lift over the finished trials, the
    control as a reference (lift 0), τ and its interval in the title."""
    plt = _pyplot()
    metrics = offline_columns(config)
    ncols = 4
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.4 * nrows), squeeze=False)
    done = table[table["status"] == "finished"] if len(table) else table
    taus = agreement.set_index("metric") if len(agreement) else agreement
    for ax, metric in zip(axes.ravel(), metrics, strict=False):
        name = metric.removeprefix("offline/")
        if len(done) and metric in done:
            x = done[metric].astype(float).to_numpy()
            y = 100 * done["objective"].astype(float).to_numpy()
            err = 100 * np.abs(
                np.stack([done["objective"] - done["objective_lo"], done["objective_hi"] - done["objective"]])
            )
            ax.errorbar(x, y, yerr=err.astype(float), fmt="o", alpha=0.8, capsize=2)
            winner = int(np.nanargmax(y))
            ax.plot(x[winner], y[winner], "*", color="tab:red", markersize=14)
            if np.isfinite(x).any():
                pick = int(np.nanargmax(x))
                ax.plot(x[pick], y[pick], "s", mfc="none", color="tab:green", markersize=12)
        if name in control and math.isfinite(control[name]):
            ax.plot(control[name], 0, "D", color="black", markersize=6)
        ax.axhline(0, color="grey", linewidth=0.6)
        title = name
        if len(taus) and name in taus.index and math.isfinite(taus.loc[name, "tau"]):
            t = taus.loc[name]
            title += f"\ntau {t['tau']:+.2f} [{t['tau_lo']:+.2f}, {t['tau_hi']:+.2f}]"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(name, fontsize=8)
        ax.set_ylabel(f"{config.objective.metric} lift (%)", fontsize=8)
    for ax in axes.ravel()[len(metrics) :]:
        ax.axis("off")
    fig.suptitle(
        "offline metric vs online lift (red star: online winner; green square: the metric's pick; "
        "black diamond: control)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_agreement(config: SearchConfig, agreement: pd.DataFrame, path: Path) -> None:
    """Kendall τ of each offline metric with the online lift, with bootstrap intervals."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.45 * max(len(agreement), 1) + 1.5))
    if len(agreement):
        y = np.arange(len(agreement))
        tau = agreement["tau"].astype(float).to_numpy()
        lo = agreement["tau_lo"].astype(float).to_numpy()
        hi = agreement["tau_hi"].astype(float).to_numpy()
        colors = [
            "tab:red" if w else "tab:blue" for w in agreement["picks_winner"].fillna(False).astype(bool)
        ]
        ax.errorbar(tau, y, xerr=np.abs(np.stack([tau - lo, hi - tau])), fmt="none", ecolor="grey", capsize=3)
        ax.scatter(tau, y, c=colors, zorder=3)
        ax.set_yticks(y, agreement["metric"])
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel(f"Kendall tau with the {config.objective.metric} lift (red: picks the online winner)")
    ax.set_title(f"search {config.name}: offline-online agreement")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_epochs(config: SearchConfig, table: pd.DataFrame, epochs: pd.DataFrame, path: Path) -> None:
    """The scheduler's metric per epoch and trial (dashed: stopped before the last epoch)."""
    plt = _pyplot()
    metric = config.scheduler.metric
    fig, ax = plt.subplots(figsize=(6, 4))
    status = dict(zip(table["trial_id"], table["status"], strict=True)) if len(table) else {}
    if metric in epochs:
        for trial_id, frame in epochs.groupby("trial_id", sort=True):
            style = "-" if status.get(trial_id) == "finished" else "--"
            ax.plot(frame["epoch"], frame[metric], style, marker="o", alpha=0.7)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch ({config.scheduler.kind}; dashed: no online score)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
