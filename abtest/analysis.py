"""The statistics of a finished experiment's user-day table (``abtest.stats`` does the maths).

- ``per_user_table``: one row per user (the randomisation unit), counts summed over days.
- ``usable_metrics``: the metrics that can be analysed, and why the others cannot.
- The SRM gate on users per arm; Welch / delta-method tests per metric x treatment with CUPED,
  relative lifts, Holm or BH (``stats.analyse``).
- ``daily_table``: for days > 1 a cumulative analysis after each day with always-valid
  intervals; ``power_table``: MDE and users needed for +1 %; ``funnel_table``: loss per stage.
- ``ExperimentResult``: everything an experiment produced (``analyse_experiment``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from abtest.config import ExperimentConfig
from abtest.outcomes import SESSION_COLUMNS
from abtest.stats import (
    EffectRecord,
    Mean,
    Ratio,
    Results,
    SRMResult,
    always_valid_ci,
    analyse,
    effective_users,
    mde,
    mixture_tau,
    srm_test,
    users_needed,
)
from abtest.traffic import FUNNEL_COLUMNS


def per_user_table(
    config: ExperimentConfig, user_days: pd.DataFrame, pre: pd.DataFrame | None
) -> pd.DataFrame:
    """One row per user: arm, days, the summed counts, clicked (clicks > 0), pre_* columns."""
    grouped = user_days.groupby("user", sort=True)
    users = grouped[list(SESSION_COLUMNS)].sum()
    users.insert(0, "days", grouped.size().astype(np.float64))
    users.insert(0, "arm", grouped["arm"].first())
    users["clicked"] = (users["clicks"] > 0).astype(np.float64)
    users = users.reset_index()
    if pre is not None:
        users = users.merge(pre, on="user", how="left").fillna({c: 0.0 for c in pre.columns})
        users["pre_clicked"] = (users["pre_clicks"] > 0).astype(np.float64)
    return users


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
    error), minimum detectable effect at this size (``stats.mde``), users needed for a +1 %
    relative lift (``stats.users_needed``)."""
    s = config.stats
    shares = dict(zip(config.arm_names, config.shares, strict=True))
    rows = []
    for r in records:
        std = r.std_err / math.sqrt(1 / r.n_control + 1 / r.n_treatment)
        mde_abs = mde(std, (r.n_control, r.n_treatment), s.alpha, s.power) if std > 0 else 0.0
        try:
            needed = users_needed(
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
            tau = mixture_tau(int(n[last]), s.alpha)
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


@dataclasses.dataclass
class ExperimentResult:
    """Everything an experiment produced; ``records`` / ``to_pandas()`` are the flat results."""

    config: ExperimentConfig
    users: pd.DataFrame
    """One row per user: user, arm, days, SESSION_COLUMNS, clicked, pre_* columns."""
    user_days: pd.DataFrame
    """One row per user-day (the experiment's logs): user, day, arm, SESSION_COLUMNS, FUNNEL_COLUMNS."""
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
