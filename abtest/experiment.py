"""Simulated online A/B experiments: the traffic of every arm, per-user metrics, statistics.

    from abtest.config import load_config
    from abtest.experiment import run_experiment

    result = run_experiment(load_config("configs/default.toml"), through="inprocess")
    result.to_pandas()          # one flat record per metric x treatment
    result.users                # one row per user: arm, metric columns, pre-period columns

The experiment, top to bottom:

1. Arms. Each arm is a cascade (``policies.cascade.Cascade``) named by its config; model specs
   given as training configs are trained first if their checkpoint is missing. In A/A mode
   every arm runs the control's cascade.
2. Assignment. Users 0..N-1 are split by ``Assignment(salt, arms, shares, layer)``, a hash of
   (layer, salt, user id): the same on every day, shard and worker.
3. Traffic. Each user has one session per experiment day (days first_day.., after the logged
   days, so sessions are fresh draws). Work is cut into shards of users per day; a shard runs
   every arm's users through that arm's cascade with ``run_sessions``. All arms share the world
   and the simulator's counter-based random numbers (common random numbers): a user's
   recall set and its coin flips for an item do not depend on the arm. Shards run in this
   process, on Ray tasks (``workers``), or through the cascade hosted on Ray Serve; every
   draw is keyed by (user, day, session, item), so results are identical either way.
4. Per-user metrics, summed over days: pages (depth), impressions, clicks, clicked
   (uCTR = mean of clicks > 0), purchases, GMV, and the hitrates of seed 002: the share of the
   user-day's purchases contained in the coarse stage's output on the session's first page,
   for in-scene purchases (trivially high: a bought item was shown, hence passed the coarse
   stage on its page) and for all purchases including the out-of-scene ones of
   ``simulator.logs.out_of_scene_purchases`` (global hitrate, the real test of a coarse
   ranker). On the first day, users 0..funnel_users-1 also record where the k truly best
   items of the pool were lost (recall, coarse, fine; ``simulator.oracle``).
5. Pre-period for CUPED (``[pre_period] source``): by default the logged day(s) of
   samples.parquet (the logging cascade's clicks, pages, impressions, purchases and GMV per
   user): it costs nothing, is what a real team has, and the arms' models come from those
   logs anyway. "simulate" instead runs pre-period days through the control's cascade,
   which correlates better with the experiment (same cascade family, same metrics,
   hitrates included) at the price of one more day of traffic.
6. Statistics (``abtest.stats``): the SRM gate on users per arm; Welch / delta-method tests
   per metric x treatment with CUPED, relative lifts, Holm or BH; for days > 1 a cumulative
   analysis after each day with always-valid intervals; power (MDE, users needed for +1 %);
   funnel loss per stage and arm.

``run_experiment`` with ``run_dir`` checkpoints every finished shard (atomically) under
``run_dir/shards``; ``resume=True`` reuses them, so an interrupted run ends with the same
results as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from scipy import stats as sps
from tqdm.auto import tqdm

from abtest.assignment import Assignment
from abtest.config import BASELINES, USER_COLUMNS, ExperimentConfig, PreSource, Through, parse_config
from abtest.stats import EffectRecord, Mean, Ratio, Results, SRMResult, always_valid_ci, analyse, srm_test
from abtest.stats import mixture_tau as _mixture_tau
from abtest.stats import users_needed as _users_needed
from abtest.store import ShardStore
from policies.cascade import Cascade, CascadeSizes, PageRanker, Ranked, run_sessions
from policies.checkpoint import load_checkpoint
from policies.features import FeatureStore
from policies.rankers import load_scorer
from policies.train import ensure_checkpoint
from serving.ray_env import init_ray
from simulator.config import ConfigError, WorldConfig, load_world_config
from simulator.logs import out_of_scene_purchases, write_logs
from simulator.oracle import best_in_pool, funnel_loss
from simulator.recall import SessionKeys
from simulator.session import SessionBatch, Simulator
from simulator.world import World

SUM_COLUMNS = tuple(c for c in USER_COLUMNS if c not in ("days", "clicked"))
"""Per-session counts of the user-day table, summed per user over the experiment days."""

FUNNEL_COLUMNS = ("funnel_recall", "funnel_coarse", "funnel_fine", "funnel_kept")
"""Of the k truly best items of the pool: how many recall missed, the coarse stage cut, the
fine stage did not put on the first page, and how many were on it (NaN outside the sample)."""

PRE_COLUMNS = ("pages", "impressions", "clicks", "purchases", "gmv")
"""Pre-period counts (prefixed ``pre_``); ``pre_clicked`` and, when simulated, the hit counts
are added."""


# ---------------------------------------------------------------------------------------------
# Arms: specs -> checkpoints -> cascades


def resolve_ranker(spec: str, kind: str, progress: bool = False, log: Callable[[str], None] = print) -> str:
    """A baseline name unchanged, else the spec's checkpoint (``policies.train.ensure_checkpoint``:
    a checkpoint as an absolute path, a training config trained first if needed)."""
    return spec if spec in BASELINES else ensure_checkpoint(spec, kind, progress, log)


@dataclasses.dataclass(frozen=True)
class ArmSpec:
    """An arm's resolved rankers: baseline names or absolute checkpoint paths."""

    coarse: str
    fine: str
    coarse_size: int


def resolve_arms(
    config: ExperimentConfig, progress: bool = False, log: Callable[[str], None] = print
) -> dict[str, ArmSpec]:
    """Every arm's rankers resolved (models trained if needed); in A/A mode every arm gets
    the control's."""
    resolved: dict[str, str] = {}
    out = {}
    for name in config.arm_names:
        arm = config.arms[config.control if config.assignment.aa else name]
        for spec, kind in ((arm.coarse, "coarse"), (arm.fine, "fine")):
            if spec not in resolved:
                resolved[spec] = resolve_ranker(spec, kind, progress, log)
        out[name] = ArmSpec(resolved[arm.coarse], resolved[arm.fine], arm.coarse_size)
    return out


def build_cascades(world: World, arms: Mapping[str, ArmSpec]) -> dict[str, Cascade]:
    """One in-process cascade per arm; scorers are loaded once and shared between arms."""
    features = None
    scorers: dict[tuple[str, str], Any] = {}

    def scorer(spec: str, stage: str):
        nonlocal features
        if (spec, stage) not in scorers:
            if features is None and spec not in BASELINES:
                features = FeatureStore.from_world(world)
            scorers[spec, stage] = load_scorer(spec, world, features, stage)
        return scorers[spec, stage]

    cascades: dict[tuple, Cascade] = {}
    out = {}
    for name, arm in arms.items():
        key = (arm.coarse, arm.fine, arm.coarse_size)
        if key not in cascades:
            sizes = CascadeSizes(coarse=arm.coarse_size, page=world.config.page_size)
            cascades[key] = Cascade(scorer(arm.coarse, "coarse"), scorer(arm.fine, "fine"), sizes)
        out[name] = cascades[key]
    return out


def assign_arms(config: ExperimentConfig, users: np.ndarray) -> np.ndarray:
    """Arm index (into ``config.arm_names``) of each user, routed by the traffic shares."""
    assignment = Assignment(
        config.assignment.salt, config.arm_names, config.traffic_shares, config.assignment.layer
    )
    return assignment.assign(users)


# ---------------------------------------------------------------------------------------------
# Traffic: shards of users x days


@dataclasses.dataclass(frozen=True)
class Shard:
    """Users lo..hi-1 on one day, of the pre-period ("pre") or the experiment ("exp")."""

    period: str
    day: int
    index: int
    lo: int
    hi: int

    @property
    def key(self) -> str:
        return f"{self.period}-day{self.day:03d}-shard{self.index:04d}"

    @property
    def n_users(self) -> int:
        return self.hi - self.lo


def plan_shards(config: ExperimentConfig) -> list[Shard]:
    """Every shard of the experiment: the simulated pre-period days first, then day by day."""
    t = config.traffic
    bounds = [(lo, min(lo + t.shard_users, t.users)) for lo in range(0, t.users, t.shard_users)]
    days = [("pre", d) for d in config.pre_days] + [("exp", d) for d in config.experiment_days]
    return [Shard(period, day, i, lo, hi) for period, day in days for i, (lo, hi) in enumerate(bounds)]


class _FirstPage:
    """A PageRanker wrapper that keeps the first page it ranks (the sessions' first page)."""

    def __init__(self, ranker: PageRanker) -> None:
        self.ranker, self.page = ranker, None

    def __call__(self, batch: SessionBatch) -> Ranked:
        ranked = self.ranker(batch)
        if self.page is None:
            self.page = ranked.page
        return ranked


def _contains(sets: np.ndarray, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """out[p] = items[p] in sets[rows[p]], for sets (B, C) padded with -1."""
    if rows.size == 0 or sets.shape[1] == 0:
        return np.zeros(rows.shape, dtype=bool)
    return (sets[rows] == items[:, None]).any(axis=1)


class Traffic:
    """Simulates shards: the world's simulator and one page ranker per arm.

    ``rankers`` are in-process cascades or Serve clients; both return the same pages.
    """

    def __init__(self, config: ExperimentConfig, world: World, rankers: Mapping[str, PageRanker]) -> None:
        missing = set(config.arm_names) - set(rankers)
        if missing:
            raise ValueError(f"no ranker for arm(s) {sorted(missing)}")
        self.config, self.world, self.rankers = config, world, dict(rankers)
        self.sim = Simulator(world)

    def run(self, shard: Shard) -> pd.DataFrame:
        """One row per user-day of the shard (columns: user, day, arm, SUM_COLUMNS, FUNNEL_COLUMNS)."""
        config = self.config
        users = np.arange(shard.lo, shard.hi, dtype=np.int64)
        arm_index = assign_arms(config, users)
        parts = []
        for k, arm in enumerate(config.arm_names):
            mine = users[arm_index == k]
            if mine.size == 0:
                continue
            ranker = self.rankers[config.control if shard.period == "pre" else arm]
            part = self._sessions(ranker, mine, shard)
            part.insert(2, "arm", arm)
            parts.append(part)
        return pd.concat(parts, ignore_index=True).sort_values("user", kind="stable").reset_index(drop=True)

    def _sessions(self, ranker: PageRanker, users: np.ndarray, shard: Shard) -> pd.DataFrame:
        world, c = self.world, self.config
        recorder = _FirstPage(ranker)
        out = run_sessions(self.sim, recorder, SessionKeys.of(users, day=shard.day))
        t, coarse, b = out.totals, out.first_coarse_items, len(users)

        counts = np.array([len(p) for p in out.purchased], dtype=np.int64)
        ins_rows = np.repeat(np.arange(b), counts)
        ins_items = np.concatenate(out.purchased) if b else np.empty(0, np.int64)
        inscene_hits = np.bincount(ins_rows, _contains(coarse, ins_rows, ins_items), minlength=b)
        buyer, oos_items = out_of_scene_purchases(world, users, shard.day)
        oos_rows = np.searchsorted(users, buyer)  # users are sorted
        oos_hits = np.bincount(oos_rows, _contains(coarse, oos_rows, oos_items), minlength=b)
        oos_count = np.bincount(oos_rows, minlength=b)

        frame = {
            "user": users,
            "day": np.full(b, shard.day, dtype=np.int64),
            "pages": t.pages,
            "impressions": t.impressions,
            "clicks": t.clicks,
            "purchases": t.purchases,
            "gmv": t.gmv,
            "expected_clicks": t.expected_clicks,
            "inscene_hits": inscene_hits.astype(np.float64),
            "inscene_purchases": counts.astype(np.float64),
            "oos_purchases": oos_count.astype(np.float64),
            "global_hits": (inscene_hits + oos_hits).astype(np.float64),
            "global_purchases": (counts + oos_count).astype(np.float64),
        }
        funnel = np.full((b, len(FUNNEL_COLUMNS)), np.nan)
        sample = np.flatnonzero(users < c.stats.funnel_users)
        if shard.period == "exp" and shard.day == c.traffic.first_day and sample.size:
            k = c.stats.funnel_k
            best = best_in_pool(world, users[sample], k)
            stages = (out.recall_items[sample], coarse[sample], recorder.page[sample])
            for j, row in enumerate(sample):
                loss = funnel_loss(best[j : j + 1], [s[j : j + 1] for s in stages])
                funnel[row] = np.rint(np.array([loss[s] for s in ("recall", "coarse", "fine", "kept")]) * k)
        for j, name in enumerate(FUNNEL_COLUMNS):
            frame[name] = funnel[:, j]
        return pd.DataFrame(frame)


# ---------------------------------------------------------------------------------------------
# Pre-period


def logged_pre_period(
    logs: str | Path, world: World | WorldConfig, n_users: int, first_day: int
) -> pd.DataFrame:
    """Per-user pre-period counts of the logging cascade on the logged days before
    ``first_day``: pre_pages, pre_impressions, pre_clicks, pre_purchases (in scene), pre_gmv
    (priced from items.parquet)."""
    folder = Path(logs)
    config = world.config if isinstance(world, World) else world
    stored = json.loads((folder / "world.json").read_text())
    if stored != json.loads(json.dumps(config.to_dict())):
        raise ConfigError(f"logs {folder} come from another world than the experiment's")
    logged_users = pq.read_metadata(folder / "users.parquet").num_rows
    if logged_users < n_users:
        raise ConfigError(
            f"logs {folder} cover {logged_users} users but the experiment has {n_users}: "
            'lower [traffic] users or use [pre_period] source = "simulate"'
        )
    price = pq.read_table(folder / "items.parquet", columns=["price"])["price"].to_numpy()
    table = pq.read_table(
        folder / "samples.parquet",
        columns=["user_id", "day", "session", "page", "item_id", "click", "purchase"],
        filters=[("sample_type", "=", 0), ("day", "<", first_day), ("user_id", "<", n_users)],
    )
    df = table.to_pandas()
    df["gmv"] = np.where(df["purchase"] > 0, price[df["item_id"].to_numpy()], 0.0)
    grouped = df.groupby("user_id")
    pages = df[["user_id", "day", "session", "page"]].drop_duplicates().groupby("user_id").size()
    out = pd.DataFrame(
        {
            "pre_pages": pages,
            "pre_impressions": grouped.size(),
            "pre_clicks": grouped["click"].sum(),
            "pre_purchases": grouped["purchase"].sum(),
            "pre_gmv": grouped["gmv"].sum(),
        }
    )
    out = out.reindex(np.arange(n_users), fill_value=0).astype(np.float64)
    out.index.name = "user"
    return out.reset_index()


def _pre_from_shards(pre_days: pd.DataFrame, n_users: int) -> pd.DataFrame:
    cols = [*PRE_COLUMNS, "global_hits", "global_purchases", "inscene_hits", "inscene_purchases"]
    sums = pre_days.groupby("user")[cols].sum().reindex(np.arange(n_users), fill_value=0)
    sums.columns = [f"pre_{c}" for c in cols]
    sums.index.name = "user"
    return sums.reset_index()


# ---------------------------------------------------------------------------------------------
# Statistics


def per_user_table(
    config: ExperimentConfig, user_days: pd.DataFrame, pre: pd.DataFrame | None
) -> pd.DataFrame:
    """One row per user: arm, days, the summed counts, clicked (clicks > 0), pre_* columns."""
    grouped = user_days.groupby("user", sort=True)
    users = grouped[list(SUM_COLUMNS)].sum()
    users.insert(0, "days", grouped.size().astype(np.float64))
    users.insert(0, "arm", grouped["arm"].first())
    users["clicked"] = (users["clicks"] > 0).astype(np.float64)
    users = users.reset_index()
    if pre is not None:
        users = users.merge(pre, on="user", how="left").fillna({c: 0.0 for c in pre.columns})
        users["pre_clicked"] = (users["pre_clicks"] > 0).astype(np.float64)
    return users


def effective_users(
    values: np.ndarray, arm_index: np.ndarray, denominator: np.ndarray | None = None
) -> float:
    """How many users the variance of a metric rests on: Kish's ``(Σ l²)² / Σ l⁴`` of the
    users' influence values ``l`` (centred per arm; linearised for a ratio), inf if constant.

    n users contributing equally give n; one user carrying all the variance gives 1.
    """
    influence = np.empty(len(values))
    for k in np.unique(arm_index):
        rows = arm_index == k
        y = values[rows]
        if denominator is None:
            influence[rows] = y - y.mean()
        else:
            d = denominator[rows]
            ratio = y.mean() / d.mean()
            influence[rows] = (y - ratio * d) / d.mean()
    squares = influence**2
    total = squares.sum()
    return math.inf if total == 0 else float(total**2 / (squares**2).sum())


def usable_metrics(
    config: ExperimentConfig, users: pd.DataFrame, metrics: Mapping[str, Mean | Ratio] | None = None
) -> tuple[dict[str, Mean | Ratio], dict[str, str]]:
    """The metrics (default: the config's, with CUPED covariates) that can be analysed on
    ``users``, and why the others cannot.

    - A ratio whose denominator is 0 for every user of an arm is undefined.
    - A metric whose variance rests on fewer than ``[stats] min_effective_users`` users
      (``effective_users``, i.e. n / kurtosis) is skipped: Welch's t and the delta method are
      normal approximations, and when one or two users carry the variance (e.g. the in-scene
      hitrate when all but one purchase were hits) their p-values are far from uniform. The
      default, 5, lets heavy-tailed but well-spread metrics through (clicks of 400 users, with
      a kurtosis of ~40, rest on ~10).
    - A ratio covariate whose denominator is 0 in an arm is dropped (no CUPED there).
    """
    specs = dict(config.metric_specs(set(users.columns)) if metrics is None else metrics)
    need = config.stats.min_effective_users
    arm_index = pd.Categorical(users["arm"], categories=list(config.arm_names)).codes
    n_arms = len(config.arm_names)

    def nonzero_per_arm(column: str) -> np.ndarray:
        return np.bincount(arm_index, users[column].to_numpy() != 0, minlength=n_arms)

    usable, skipped = {}, {}
    for name, declared in specs.items():
        metric = declared
        if isinstance(metric, Ratio):
            empty = [
                a
                for a, n in zip(config.arm_names, nonzero_per_arm(metric.denominator), strict=True)
                if n == 0
            ]
            if empty:
                skipped[name] = f"{metric.denominator} is 0 for every user of arm(s) {empty}"
                continue
            if metric.covariate is not None and (nonzero_per_arm(metric.covariate[1]) == 0).any():
                metric = Ratio(metric.numerator, metric.denominator)
            values = users[metric.numerator].to_numpy(np.float64)
            n_eff = effective_users(values, arm_index, users[metric.denominator].to_numpy(np.float64))
        else:
            n_eff = effective_users(users[metric.column].to_numpy(np.float64), arm_index)
        if n_eff < need:
            skipped[name] = (
                f"its variance rests on {n_eff:.1f} users (< [stats] min_effective_users = {need}): "
                "the normal approximation would not be trustworthy"
            )
            continue
        usable[name] = metric
    return usable, skipped


def _analyse(config: ExperimentConfig, users: pd.DataFrame, metrics: Mapping[str, Mean | Ratio]) -> Results:
    s = config.stats
    return analyse(
        users,
        "arm",
        config.control,
        metrics,
        alpha=s.alpha,
        correction=str(s.correction),
        lift_ci=str(s.lift_ci),
        cuped=s.cuped,
    )


def power_table(config: ExperimentConfig, records: tuple[EffectRecord, ...]) -> pd.DataFrame:
    """Per metric x treatment: per-user std (after CUPED if applied, from the effect's standard
    error), minimum detectable effect at this size, users needed for a +1 % relative lift."""
    s = config.stats
    z = sps.norm.ppf(1 - s.alpha / 2) + sps.norm.ppf(s.power)
    shares = dict(zip(config.arm_names, config.shares, strict=True))
    rows = []
    for r in records:
        scale = math.sqrt(1 / r.n_control + 1 / r.n_treatment)
        std = r.std_err / scale
        mde_abs = z * r.std_err
        try:
            needed = _users_needed(
                r.control_value, std, 0.01, s.alpha, s.power, (shares[r.control], shares[r.treatment])
            )
        except ValueError:  # zero variance or zero baseline
            needed = math.nan
        rows.append(
            {
                "metric": r.metric,
                "treatment": r.treatment,
                "control_value": r.control_value,
                "std_per_user": std,
                "mde_abs": mde_abs,
                "mde_rel": mde_abs / abs(r.control_value) if r.control_value else math.nan,
                "users_needed_1pct": needed,
                "cuped": r.cuped,
            }
        )
    return pd.DataFrame(rows)


def cumulative_users(
    config: ExperimentConfig, user_days: pd.DataFrame, pre: pd.DataFrame | None
) -> dict[int, pd.DataFrame]:
    """The per-user table after each experiment day (the data of each daily look)."""
    return {
        day: per_user_table(config, user_days[user_days["day"] <= day], pre) for day in config.experiment_days
    }


def daily_table(
    config: ExperimentConfig, looks: Mapping[int, pd.DataFrame], metrics: Mapping
) -> pd.DataFrame:
    """Records of the analysis at each daily look (``cumulative_users``), with always-valid
    intervals when ``[stats] sequential``.

    Every user is active every day, so a look adds information per user rather than users.
    The mixture is fixed in absolute units before the first look, scaled to be tightest at
    the final look, and each look enters through its variance (information time): the
    effective sample size of look d is ``n_final · V_final / V_d``.
    """
    s = config.stats
    rows = []
    for day, users in looks.items():
        usable, _ = usable_metrics(config, users, metrics)  # an early look may have too few buyers
        if not usable:
            continue
        records = _analyse(config, users, usable).to_pandas()
        records.insert(0, "day", day)
        rows.append(records)
    if not rows:
        return pd.DataFrame()
    daily = pd.concat(rows, ignore_index=True)
    lower, upper = np.full(len(daily), np.nan), np.full(len(daily), np.nan)
    if s.sequential:
        effect, std_err = daily["effect"].to_numpy(), daily["std_err"].to_numpy()
        n = (daily["n_control"] + daily["n_treatment"]).to_numpy()
        for rows in daily.groupby(["metric", "treatment"], sort=False).indices.values():
            last = rows[-1]  # looks are in day order
            if not (std_err[rows] > 0).all():
                continue
            n_eff = n[last] * std_err[last] ** 2 / std_err[rows] ** 2
            tau = _mixture_tau(int(n[last]), s.alpha)
            lower[rows], upper[rows] = always_valid_ci(effect[rows], std_err[rows], n_eff, s.alpha, tau)
    daily["av_ci_lower"] = lower
    daily["av_ci_upper"] = upper
    return daily


def funnel_table(config: ExperimentConfig, user_days: pd.DataFrame) -> pd.DataFrame:
    """Per arm and stage: the share of the truly best items lost there (``kept`` = on the
    first page), with a user-level standard error."""
    sample = user_days.dropna(subset=list(FUNNEL_COLUMNS))
    k = config.stats.funnel_k
    rows = []
    for arm in config.arm_names:
        mine = sample[sample["arm"] == arm]
        for col in FUNNEL_COLUMNS:
            share = mine[col].to_numpy() / k
            n = len(share)
            rows.append(
                {
                    "arm": arm,
                    "stage": col.removeprefix("funnel_"),
                    "share": float(share.mean()) if n else math.nan,
                    "std_err": float(share.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan,
                    "users": n,
                }
            )
    return pd.DataFrame(rows)


def arm_table(config: ExperimentConfig, users: pd.DataFrame) -> pd.DataFrame:
    """Per arm: users and the raw (unadjusted) value of every metric."""
    rows = []
    for arm in config.arm_names:
        mine = users[users["arm"] == arm]
        row: dict[str, Any] = {"arm": arm, "users": len(mine)}
        for name, spec in config.metrics.items():
            if isinstance(spec, str):
                row[name] = float(mine[spec].mean()) if len(mine) else math.nan
            else:
                den = mine[spec[1]].sum()
                row[name] = float(mine[spec[0]].sum() / den) if den else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# The result


@dataclasses.dataclass
class ExperimentResult:
    """Everything an experiment produced; ``records`` / ``to_pandas()`` are the flat results."""

    config: ExperimentConfig
    users: pd.DataFrame
    """One row per user: user, arm, days, SUM_COLUMNS, clicked, pre_* columns."""
    user_days: pd.DataFrame
    """One row per user-day (the experiment's logs): user, day, arm, SUM_COLUMNS, FUNNEL_COLUMNS."""
    srm: SRMResult
    arm_counts: dict[str, int]
    results: Results
    skipped: dict[str, str]
    """Metrics that could not be analysed, with the reason (e.g. no purchases at all)."""
    arms: pd.DataFrame
    """Per arm: users and the raw value of every metric."""
    daily: pd.DataFrame
    """Cumulative records after each day (+ av_ci_lower/upper); one look when days = 1."""
    power: pd.DataFrame
    funnel: pd.DataFrame
    versions: dict[str, dict[str, str]]
    """Per arm: the coarse and fine ranker specs and model versions."""
    through: str
    workers: int
    timings: dict[str, float]
    """Wall seconds: models, world, setup, traffic, statistics (report: added by run_ab)."""

    @property
    def records(self) -> list[dict[str, Any]]:
        return [dataclasses.asdict(r) for r in self.results.records]

    def to_pandas(self) -> pd.DataFrame:
        return self.results.to_pandas()

    def record(self, metric: str, treatment: str | None = None) -> EffectRecord:
        """The record of ``metric`` for ``treatment`` (default: the only treatment)."""
        found = [r for r in self.results.records if r.metric == metric and treatment in (None, r.treatment)]
        if len(found) != 1:
            raise KeyError(f"{len(found)} records for metric {metric!r}, treatment {treatment!r}")
        return found[0]

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary (what results.json holds)."""

        def plain(frame: pd.DataFrame) -> list[dict]:
            return json.loads(frame.to_json(orient="records"))

        return {
            "name": self.config.name,
            "control": self.config.control,
            "arms": self.config.arm_names,
            "through": self.through,
            "workers": self.workers,
            "srm": dataclasses.asdict(self.srm) | {"counts": self.arm_counts, "shares": self.config.shares},
            "records": json.loads(self.to_pandas().to_json(orient="records")),
            "skipped_metrics": self.skipped,
            "arm_values": plain(self.arms),
            "power": plain(self.power),
            "funnel": plain(self.funnel),
            "daily": plain(self.daily),
            "versions": self.versions,
            "timings": self.timings,
        }


def analyse_experiment(
    config: ExperimentConfig,
    user_days: pd.DataFrame,
    pre: pd.DataFrame | None,
    **extra: Any,
) -> ExperimentResult:
    """The statistics of a finished experiment's user-day table (and pre-period table)."""
    users = per_user_table(config, user_days, pre)
    counts = users["arm"].value_counts().reindex(list(config.arm_names), fill_value=0)
    srm = srm_test(counts.to_numpy(np.int64), config.shares, config.stats.srm_threshold)
    metrics, skipped = usable_metrics(config, users)
    results = _analyse(config, users, metrics) if metrics else Results(())
    daily = (
        daily_table(config, cumulative_users(config, user_days, pre), metrics) if metrics else pd.DataFrame()
    )
    return ExperimentResult(
        config=config,
        users=users,
        user_days=user_days,
        srm=srm,
        arm_counts={k: int(v) for k, v in counts.items()},
        results=results,
        skipped=skipped,
        arms=arm_table(config, users),
        daily=daily,
        power=power_table(config, results.records),
        funnel=funnel_table(config, user_days),
        **extra,
    )


# ---------------------------------------------------------------------------------------------
# Running


class _Progress:
    """A tqdm bar over user-days with pages and elapsed time (silent when disabled)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = tqdm(total=total, unit="user-day", desc="traffic", disable=not enabled, dynamic_ncols=True)
        self.pages = 0

    def update(self, frame: pd.DataFrame) -> None:
        self.pages += int(frame["pages"].sum())
        self.bar.set_postfix(pages=f"{self.pages:,}", refresh=False)
        self.bar.update(len(frame))

    def close(self) -> None:
        self.bar.close()


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Scorers run one request at a time: tiny kernels that intra-op threads only slow down
    (several times over on a busy 2-core machine). Restores the setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _RayPool:
    """``workers`` Ray actors (1 CPU each) holding the world and every arm's cascade; the
    constructor returns once they are built, so start-up and throughput are timed apart."""

    def __init__(
        self, config: ExperimentConfig, world_config: WorldConfig, arms: Mapping[str, ArmSpec], workers: int
    ) -> None:
        import ray  # noqa: PLC0415

        @ray.remote(num_cpus=1)
        class ShardWorker:
            def __init__(self, raw_config: dict, world_config: WorldConfig, arms: dict) -> None:
                torch.set_num_threads(1)
                world = World(world_config)
                self.traffic = Traffic(parse_config(raw_config), world, build_cascades(world, arms))

            def ready(self) -> bool:
                return True

            def run(self, shard: Shard) -> tuple[Shard, pd.DataFrame]:
                return shard, self.traffic.run(shard)

        self.ray = ray
        self.actors = [ShardWorker.remote(config.to_dict(), world_config, dict(arms)) for _ in range(workers)]
        try:
            ray.get([actor.ready.remote() for actor in self.actors])
        except BaseException:
            self.close()
            raise

    def run(self, shards: list[Shard]) -> Iterator[tuple[Shard, pd.DataFrame]]:
        """Yield (shard, user-day frame) as shards finish; two in flight per actor."""
        ray, queue, pending = self.ray, list(shards), {}
        for actor in self.actors:
            for _ in range(2):
                if queue:
                    pending[actor.run.remote(queue.pop(0))] = actor
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            actor = pending.pop(done[0])
            if queue:
                pending[actor.run.remote(queue.pop(0))] = actor
            yield ray.get(done[0])

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)


def run_experiment(
    config: ExperimentConfig,
    through: str | Through | None = "inprocess",
    workers: int | None = 1,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    world: World | None = None,
    log: Callable[[str], None] = print,
    on_shard: Callable[[Shard], None] | None = None,
) -> ExperimentResult:
    """Run a whole experiment and analyse it.

    ``through``: "inprocess" (default: no Serve, fine inside a Ray Tune trial) or "serve"
    (the cascade hosted on Ray Serve); None = the config's ``[traffic] through``.
    ``workers``: in-process Ray tasks (1 = this process only, the default, right for a Tune
    trial that owns one CPU); None = the config's ``[traffic] workers``.
    ``run_dir``: checkpoint finished shards under ``run_dir/shards`` (``resume=True`` reuses
    them). ``world``: a prebuilt world of the config (saves its build time; built here only
    when this process simulates). ``timings`` split the wall time: models (training if
    needed), world, pre_period (reading the logs), setup (cascades, Ray actors or the Serve
    app), traffic, statistics.
    ``on_shard`` is called after each shard is stored (tests inject interruptions there).
    """
    timings: dict[str, float] = {}
    through = Through(through or config.traffic.through)
    workers = config.traffic.workers if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")

    world_config = load_world_config(config.world)
    for name, arm in config.arms.items():  # checked before any model is trained
        if arm.coarse_size > world_config.recall_size:
            raise ConfigError(
                f"[arms.{name}] coarse_size = {arm.coarse_size} exceeds the world's recall size "
                f"({world_config.recall_size})"
            )
    t0 = time.perf_counter()
    arms = resolve_arms(config, progress=progress, log=log)
    timings["models"] = time.perf_counter() - t0

    timings["world"] = 0.0

    def the_world() -> World:
        """The world, built on first use: traffic on Ray actors needs none in this process."""
        nonlocal world
        if world is None or world.config != world_config:
            t = time.perf_counter()
            world = World(world_config)
            timings["world"] += time.perf_counter() - t
        return world

    t0 = time.perf_counter()  # the logged pre-period first: a bad log folder fails before traffic
    n = config.traffic.users
    pre = None
    if config.pre_period.source is PreSource.LOGS:
        logs = Path(config.pre_period.logs)
        if not logs.is_dir():
            log(f"simulating the pre-period logs of {n:,} users into {logs}")
            write_logs(the_world(), logs, n_users=n, days=config.pre_period.days, progress=progress)
        pre = logged_pre_period(logs, world_config, n, config.traffic.first_day)
    timings["pre_period"] = time.perf_counter() - t0

    store = ShardStore(Path(run_dir) / "shards") if run_dir is not None else None
    shards = plan_shards(config)
    frames: dict[str, pd.DataFrame] = {}
    if store is not None and resume:
        for shard in shards:
            frame = store.load(shard.key)
            if frame is not None:
                frames[shard.key] = frame
    todo = [s for s in shards if s.key not in frames]
    versions = _versions(arms)
    if store is not None:
        store.check_versions(versions)
    bar = _Progress(sum(s.n_users for s in shards), progress)
    for shard in shards:
        if shard.key in frames:
            bar.update(frames[shard.key])

    def finished(shard: Shard, frame: pd.DataFrame) -> None:
        frames[shard.key] = frame
        if store is not None:
            store.save(shard.key, frame)
        bar.update(frame)
        if on_shard is not None:
            on_shard(shard)

    t0 = time.perf_counter()
    started_ray = False
    try:
        if not todo:
            timings["setup"] = time.perf_counter() - t0
            t0 = time.perf_counter()
        elif through is Through.SERVE:
            from abtest.serve_traffic import serve_rankers  # noqa: PLC0415 (imports serving, ray)

            with serve_rankers(config, arms) as rankers:
                traffic = Traffic(config, the_world(), rankers)
                timings["setup"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                for shard in todo:
                    finished(shard, traffic.run(shard))
        elif workers == 1 or len(todo) == 1:
            traffic = Traffic(config, the_world(), build_cascades(the_world(), arms))
            timings["setup"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            with _one_torch_thread():
                for shard in todo:
                    finished(shard, traffic.run(shard))
        else:
            started_ray = init_ray(object_store_memory=256 * 2**20)
            pool = _RayPool(config, world_config, arms, workers)
            try:
                timings["setup"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                for shard, frame in pool.run(todo):
                    finished(shard, frame)
            finally:
                pool.close()
    finally:
        bar.close()
        if started_ray:
            import ray  # noqa: PLC0415

            ray.shutdown()
    timings["traffic"] = time.perf_counter() - t0

    pre_frames = [frames[s.key] for s in shards if s.period == "pre"]
    exp_frames = [frames[s.key] for s in shards if s.period == "exp"]
    user_days = pd.concat(exp_frames, ignore_index=True).sort_values(["day", "user"], kind="stable")
    user_days = user_days.reset_index(drop=True)
    if config.pre_period.source is PreSource.SIMULATE:
        pre = _pre_from_shards(pd.concat(pre_frames, ignore_index=True), n)

    t0 = time.perf_counter()
    result = analyse_experiment(
        config, user_days, pre, versions=versions, through=str(through), workers=workers, timings=timings
    )
    timings["statistics"] = time.perf_counter() - t0
    return result


def _versions(arms: Mapping[str, ArmSpec]) -> dict[str, dict[str, Any]]:
    """Per arm: ranker specs and model versions (read from the checkpoints when not loaded)."""
    cache: dict[str, str] = {}

    def version(spec: str, stage: str) -> str:
        if spec in BASELINES:
            return spec
        if spec not in cache:
            cache[spec] = load_checkpoint(spec, kind=stage).version
        return cache[spec]

    out = {}
    for name, arm in arms.items():
        out[name] = {
            "coarse": arm.coarse,
            "coarse_version": version(arm.coarse, "coarse"),
            "fine": arm.fine,
            "fine_version": version(arm.fine, "fine"),
            "coarse_size": arm.coarse_size,
        }
    return out
