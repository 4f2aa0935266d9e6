"""Offline–online agreement across the trials of a search.

For each offline metric m (held-out GAUC, NDCG@10 against the fine ranker, in-scene and global
hitrate@C, ...) and the online objective y (the lift over the control), over the trials with
both: Kendall's τ-b between m and y, a percentile bootstrap interval (trials resampled with
replacement), and what the metric would have decided — the trial it ranks first, that trial's
online lift and rank, and whether it is the online winner. A metric with a high τ ranks
settings the way users do; seed 002 spent a month on exactly this question.

τ-b (ties corrected) is ``policies.metrics.kendall_tau`` (scipy) over the one list of trials:
nan when either side is constant or fewer than 2 trials have both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from policies.metrics import kendall_tau

OFFLINE_METRICS = (
    "auc",
    "gauc",
    "ndcg@10",
    "kendall_tau",
    "recall@10@{C}",
    "hitrate_in@{C}",
    "hitrate_out@{C}",
    "hitrate_global@{C}",
)
"""Offline metrics of ``policies.evaluate`` compared with the online lift (higher is better
for all); ``{C}`` is the coarse cut."""


def bootstrap_tau_ci(
    x: Sequence[float], y: Sequence[float], n_boot: int, alpha: float, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile bootstrap interval of Kendall's τ-b of x and y, resampling pairs; resamples
    where τ is undefined (a constant resample) are skipped."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(a)
    if n < 3:
        return math.nan, math.nan
    taus = np.array([kendall_tau(a[None, idx], b[None, idx]) for idx in rng.integers(0, n, size=(n_boot, n))])
    taus = taus[np.isfinite(taus)]
    if len(taus) == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(taus, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def agreement_table(
    trials: pd.DataFrame,
    metrics: Sequence[str],
    objective: str = "objective",
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    compare: Callable[[str, str], tuple[float, float, float]] | None = None,
) -> pd.DataFrame:
    """One row per offline metric (a column of ``trials``): τ with the objective and its
    bootstrap interval over the trials that have both, and the trial the metric picks.
    ``compare(winner, pick)`` (trial ids), if given, is the pick's lift over the online winner
    with its interval (a paired comparison on the same users): a pick whose interval holds 0
    is as good as the winner as far as the A/B can tell."""
    rng = np.random.default_rng(seed)
    rows = []
    for metric in metrics:
        if metric not in trials.columns:
            continue
        finite = np.isfinite(trials[metric].astype(float)) & np.isfinite(trials[objective].astype(float))
        both = trials[finite]
        x, y = both[metric].to_numpy(np.float64), both[objective].to_numpy(np.float64)
        row: dict = {"metric": metric, "trials": len(both)}
        row["tau"] = kendall_tau(x[None], y[None]) if len(both) else math.nan
        row["tau_lo"], row["tau_hi"] = bootstrap_tau_ci(x, y, n_boot, alpha, rng)
        if len(both):
            ids = both["trial_id"].astype(str).to_numpy() if "trial_id" in both else both.index.astype(str)
            online_rank = (-y).argsort(kind="stable").argsort(kind="stable") + 1
            pick, winner = int(np.argmax(x)), int(np.argmax(y))
            row["pick"] = ids[pick]
            row["pick_objective"] = float(y[pick])
            row["pick_online_rank"] = int(online_rank[pick])
            row["picks_winner"] = pick == winner
            row["regret"] = float(y[winner] - y[pick])
            if compare is not None:
                versus = (0.0, 0.0, 0.0) if pick == winner else compare(ids[winner], ids[pick])
                row["vs_winner"], row["vs_winner_lo"], row["vs_winner_hi"] = versus
        rows.append(row)
    columns = ["metric", "trials", "tau", "tau_lo", "tau_hi", "pick", "pick_objective", "pick_online_rank"]
    columns += ["picks_winner", "regret", "vs_winner", "vs_winner_lo", "vs_winner_hi"]
    return pd.DataFrame(rows, columns=columns)


def _cell(value: float, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, int | float) and math.isfinite(value) else ""


def format_agreement(table: pd.DataFrame, objective: str) -> str:
    """The agreement table as text, with the verdicts: which metric picks the online winner
    (or a trial the A/B cannot tell from it) and which ranks trials most like the A/B."""
    lines = [f"offline-online agreement: Kendall tau of each offline metric with the {objective} lift"]
    lines.append(
        f"{'metric':<20}{'n':>4}{'tau':>7}  {'bootstrap CI':<16}{'its pick':>13}{'lift':>9}{'rank':>5}"
        "  pick vs online winner (paired)"
    )
    for row in table.itertuples(index=False):
        ci = f"[{row.tau_lo:+.2f}, {row.tau_hi:+.2f}]" if math.isfinite(row.tau_lo) else "[n/a]"
        pick = "" if pd.isna(row.pick) else str(row.pick)
        rank = "" if pd.isna(row.pick_online_rank) else str(int(row.pick_online_rank))
        versus = ""
        if isinstance(row.vs_winner, float) and math.isfinite(row.vs_winner):
            versus = f"{row.vs_winner:+.2%} [{row.vs_winner_lo:+.2%}, {row.vs_winner_hi:+.2%}]"
        lines.append(
            f"{row.metric:<20}{row.trials:>4}{_cell(row.tau, '+7.2f'):>7}  {ci:<16}{pick:>13}"
            f"{_cell(row.pick_objective, '+.2%'):>9}{rank:>5}  {versus}"
        )
    winners = table.loc[table["picks_winner"].astype("boolean").fillna(False).astype(bool), "metric"].tolist()
    ties = table.loc[(table["vs_winner_lo"] <= 0) & (table["vs_winner_hi"] >= 0), "metric"].tolist()
    ties = [m for m in ties if m not in winners]
    best = table.dropna(subset=["tau"]).sort_values("tau", ascending=False).head(1)["metric"].tolist()
    if winners:
        lines.append(f"would have picked the online winner: {', '.join(winners)}")
    else:
        lines.append("no offline metric would have picked the online winner")
    if ties:
        lines.append(f"would have picked a trial the A/B cannot tell from the winner: {', '.join(ties)}")
    if best:
        lines.append(f"best rank agreement with the online lift: {best[0]}")
    return "\n".join(lines)
