"""The statistics of a finished experiment's user-day table (``abtest.stats`` does the maths).

- ``per_user_table``: one row per user and arm run (the user is the randomisation unit),
  counts summed over days: one row per user in a split design, one per user and arm in a
  paired one.
- ``usable_metrics``: the metrics that can be analysed, and why the others cannot.
- The design's statistics, dispatched in ``analyse_design`` (the one place): split - the SRM
  gate on users per arm, Welch / delta-method tests with CUPED (``stats.analyse``); paired -
  paired differences (``stats.analyse_paired``); interleave - per-user credit differences
  with the sign test (``stats.analyse_interleaved``, ``preference_table``); relative lifts,
  Holm or BH.
- ``truth_table``: the true effect per metric x treatment on the experiment's users (every
  user under every arm, expected values where the simulator has them) and whether each
  interval covers it; ``expected_table``: the variance an expected-value metric saves over
  its realised twin.
- ``segment_table``: per segment value (``abtest.segments``' labels) the design's statistics and
  the true effect recomputed on the segment's users, for a few metrics (exploratory).
- ``daily_table``: for days > 1 a cumulative analysis after each day with always-valid
  intervals; ``power_table``: MDE and users needed for +1 %; ``funnel_table``: loss per stage.
- ``ExperimentResult``: everything an experiment produced (``analyse_experiment``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from abtest.config import SEGMENT_METRICS, ExperimentConfig
from abtest.interleave import CREDIT_METRICS
from abtest.outcomes import EXACT_COLUMNS, EXACT_TWINS, EXPECTED_TWINS, SESSION_COLUMNS
from abtest.stats import (
    EffectRecord,
    Mean,
    Ratio,
    Results,
    SRMResult,
    always_valid_ci,
    analyse,
    analyse_interleaved,
    analyse_paired,
    effective_users,
    interleave_test,
    mde,
    metric_value,
    mixture_tau,
    paired_mde,
    paired_users_needed,
    per_user_std,
    srm_test,
    users_needed,
)
from abtest.traffic import FUNNEL_COLUMNS


def per_user_table(
    config: ExperimentConfig, user_days: pd.DataFrame, pre: pd.DataFrame | None
) -> pd.DataFrame:
    """One row per user and arm it ran under (by user, then arm): arm, days, the summed counts,
    clicked (clicks > 0), expected_clicked (1 - P(no click on any item shown)), the days with a
    click and their exact twin (``abtest.outcomes.USER_COLUMNS``), pre_* columns."""
    credits_only = "log_no_click" not in user_days.columns  # an interleaved table
    if not credits_only:
        user_days = user_days.assign(
            clicked_days=(user_days["clicks"] > 0).astype(np.float64),
            exact_clicked_days=-np.expm1(user_days["exact_log_no_click"]),
        )
    columns = (*SESSION_COLUMNS, *EXACT_COLUMNS, "clicked_days", "exact_clicked_days")
    grouped = user_days.groupby(["user", "arm"], sort=True)
    users = grouped[[c for c in columns if c in user_days.columns]].sum()
    users.insert(0, "days", grouped.size().astype(np.float64))
    if not credits_only:
        users["clicked"] = (users["clicks"] > 0).astype(np.float64)
        users["expected_clicked"] = -np.expm1(users["log_no_click"])
        users["exact_clicked"] = -np.expm1(users["exact_log_no_click"])
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
        if config.interleave:
            column = metric.column if isinstance(metric, Mean) else None
            if column not in users.columns:
                skipped[name] = "interleaving credits only per-user sums of " + ", ".join(CREDIT_METRICS)
                continue
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


def analyse_design(
    config: ExperimentConfig, users: pd.DataFrame, metrics: Mapping[str, Mean | Ratio]
) -> Results:
    """The records of the design's test on a per-user table (``per_user_table``)."""
    s = config.stats
    if not config.split:
        analyse_every_arm = analyse_paired if config.paired else analyse_interleaved
        return analyse_every_arm(
            users,
            "arm",
            "user",
            config.control,
            metrics,
            alpha=s.alpha,
            correction=str(s.correction),
            lift_ci=str(s.lift_ci),
        )
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


def power_table(
    config: ExperimentConfig, records: tuple[EffectRecord, ...], users: pd.DataFrame
) -> pd.DataFrame:
    """Per metric x treatment: the per-user std of the design's estimate (split: after CUPED if
    applied, from the effect's standard error; paired: of the per-user difference), minimum
    detectable effect at this size (``stats.mde`` / ``stats.paired_mde``), users this design
    needs for a +1 % relative lift, and ``split_users_for_lift``: the users a production split
    test (the designed shares, no CUPED in a paired run) needs to detect the measured lift
    (of the metric's exact twin where analysed, ``lift_from``: the least noisy estimate of the
    same effect), ``stats.users_needed`` with the split per-user std (a paired run's is estimated from its
    arms' per-user variances, ``split_std``)."""
    s = config.stats
    shares = dict(zip(config.arm_names, config.shares, strict=True))
    specs = config.metric_specs()
    exact_of = _exact_metrics(config)
    by_key = {(r.metric, r.treatment): r for r in records}
    rows = []
    for r in records:
        best = by_key.get((exact_of.get(r.metric), r.treatment), r)  # the lift, least noisy
        pair = (shares[r.control], shares[r.treatment])
        if not config.split:
            std = r.std_err * math.sqrt(r.n_control)
            mde_abs = paired_mde(std, r.n_control, s.alpha, s.power) if std > 0 else 0.0
            needed = _or_nan(paired_users_needed, 0.01 * r.control_value, std, s.alpha, s.power)
            arm_vars = [_arm_std(users, arm, specs[r.metric]) ** 2 for arm in (r.control, r.treatment)]
            split_std = math.sqrt(sum(arm_vars) / 2) if config.paired else math.nan  # credits: no A/B
        else:
            std = r.std_err / math.sqrt(1 / r.n_control + 1 / r.n_treatment)
            mde_abs = mde(std, (r.n_control, r.n_treatment), s.alpha, s.power) if std > 0 else 0.0
            needed = _or_nan(users_needed, r.control_value, std, 0.01, s.alpha, s.power, pair)
            split_std = std
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
                "split_std": split_std,
                "lift_from": best.metric,
                "split_users_for_lift": _or_nan(
                    users_needed, r.control_value, split_std, best.rel_effect, s.alpha, s.power, pair
                ),
            }
        )
    return pd.DataFrame(rows)


def _exact_metrics(config: ExperimentConfig) -> dict[str, str]:
    """Metric -> the metric on its exact twin columns (``EXACT_TWINS``), where both are in the
    config (e.g. clicks -> exact_clicks)."""
    by_spec = {spec: name for name, spec in config.metrics.items()}
    out = {}
    for name, spec in config.metrics.items():
        twin = _truth_columns(spec)
        if twin != spec and twin in by_spec:
            out[name] = by_spec[twin]
    return out


def _or_nan(needed: Callable[..., int], *args: Any) -> float:
    """A users-needed figure, nan where it is undefined (zero variance, zero or nan lift)."""
    try:
        return needed(*args)
    except (ValueError, OverflowError):
        return math.nan


def _arm_std(users: pd.DataFrame, arm: str, metric: Mean | Ratio) -> float:
    """The per-user std of a metric in one arm's rows (``stats.per_user_std``)."""
    mine = users[users["arm"] == arm]
    if isinstance(metric, Ratio):
        return per_user_std(mine[metric.numerator], mine[metric.denominator])
    return per_user_std(mine[metric.column])


def _truth_columns(spec: str | tuple[str, str]) -> str | tuple[str, str]:
    """The columns of a metric's truth: each realised or expected-given-the-pages column by its
    exact twin (``EXACT_TWINS``), if any."""
    realised = {v: k for k, v in EXPECTED_TWINS.items()}

    def exact(column: str) -> str:
        return EXACT_TWINS.get(realised.get(column, column), column)

    return exact(spec) if isinstance(spec, str) else tuple(exact(c) for c in spec)


def truth_table(
    config: ExperimentConfig, records: tuple[EffectRecord, ...], truth_users: pd.DataFrame
) -> pd.DataFrame:
    """Per record: the true effect on the truth users (every one under every arm, the same days
    and random numbers): the metric on its exact-expectation columns (``EXACT_TWINS``: over
    every click, purchase and continue/leave draw; the hitrates have none and use the realised
    counts) per arm, their difference and ratio, and
    whether the record's effect and lift intervals cover them (not for interleaving, whose
    estimates are credit differences, another quantity than the A/B effect: there only
    ``same_sign``, whether estimate and truth point the same way). Empty without truth users."""
    if truth_users is None or truth_users.empty:
        return pd.DataFrame()
    credits = config.interleave
    rows = []
    for r in records:
        spec = _truth_columns(config.metrics[r.metric])
        value = {}
        for arm in (r.control, r.treatment):
            mine = truth_users[truth_users["arm"] == arm]
            columns = [spec] if isinstance(spec, str) else list(spec)
            value[arm] = metric_value(*(mine[c] for c in columns))
        effect = value[r.treatment] - value[r.control]
        rel = value[r.treatment] / value[r.control] - 1 if value[r.control] else math.nan
        rows.append(
            {
                "metric": r.metric,
                "treatment": r.treatment,
                "truth_of": spec if isinstance(spec, str) else "/".join(spec),
                "true_control": value[r.control],
                "true_treatment": value[r.treatment],
                "true_effect": effect,
                "true_rel_effect": rel,
                "truth_users": int((truth_users["arm"] == r.control).sum()),
                "covered": None if credits else _covers(r.effect_ci_lower, r.effect_ci_upper, effect),
                "rel_covered": None if credits else _covers(r.rel_ci_lower, r.rel_ci_upper, rel),
                "same_sign": _same_sign(r.effect, effect),
            }
        )
    return pd.DataFrame(rows)


SEGMENTS_NOTE = (
    "exploratory: each segment's estimates are those of the main table on its users only, "
    "with no multiple-testing correction across segments or metrics (p is uncorrected)"
)


def segment_metric_names(config: ExperimentConfig) -> list[str]:
    """The metrics analysed per segment: ``[segments] metrics`` (default: those of
    ``SEGMENT_METRICS`` in [metrics]), each followed by its exact twin where [metrics] has it."""
    chosen = config.segments.metrics or tuple(m for m in SEGMENT_METRICS if m in config.metrics)
    exact_of = _exact_metrics(config)
    names = [n for m in chosen for n in (m, exact_of.get(m, m))]
    return list(dict.fromkeys(names))


def segment_table(
    config: ExperimentConfig,
    users: pd.DataFrame,
    truth_users: pd.DataFrame,
    labels: pd.DataFrame,
    metrics: Mapping[str, Mean | Ratio],
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Per segment value of every label column of ``labels`` (column ``user`` + one per
    dimension): the design's records (``analyse_design``, p uncorrected) and true effect
    (``truth_table``) on the segment's users, for ``segment_metric_names`` of the usable
    ``metrics``, with the segment's user count; and why a dimension, segment or metric was
    skipped (one value for every user, fewer than 2 users per arm, ``usable_metrics``)."""
    chosen = {n: metrics[n] for n in segment_metric_names(config) if n in metrics}
    frames, skipped = [], {}
    for dimension in (c for c in labels.columns if c != "user"):
        values = sorted(labels[dimension].unique())
        if len(values) < 2:
            skipped[dimension] = f"every user is {dimension} = {values[0] if values else '-'}: no breakdown"
            continue
        for value in values:
            segment = f"{dimension} = {value}"
            ids = labels.loc[labels[dimension] == value, "user"]
            mine = users[users["user"].isin(ids)]
            per_arm = mine["arm"].value_counts().reindex(list(config.arm_names), fill_value=0)
            if per_arm.min() < 2:
                skipped[segment] = f"fewer than 2 users in an arm ({dict(per_arm)})"
                continue
            usable, why = usable_metrics(config, mine, chosen)
            skipped |= {f"{segment}: {name}": reason for name, reason in why.items()}
            if not usable:
                continue
            records = analyse_design(config, mine, usable).records
            frame = Results(records).to_pandas().drop(columns=["pvalue_adjusted", "significant"])
            truth = truth_table(config, records, truth_users[truth_users["user"].isin(ids)])
            if len(truth):
                frame = frame.merge(truth.drop(columns="truth_of"), on=["metric", "treatment"], how="left")
            frame.insert(0, "dimension", dimension)
            frame.insert(1, "segment", str(value))
            frame.insert(2, "users", int(mine["user"].nunique()))
            frames.append(frame)
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), skipped


def _same_sign(estimate: float, truth: float) -> bool | None:
    """Estimate and true effect have the same sign; None when either is 0 or undefined."""
    if math.isnan(estimate) or math.isnan(truth) or estimate == 0 or truth == 0:
        return None
    return bool((estimate > 0) == (truth > 0))


def preference_table(
    config: ExperimentConfig, records: tuple[EffectRecord, ...], users: pd.DataFrame
) -> pd.DataFrame:
    """Interleaving: per credited metric x treatment, the sign test's users who prefer the
    treatment (wins), the control (losses) or neither (ties), the win share with its
    Clopper-Pearson interval and p-value (``stats.interleave_test``). Empty in other designs."""
    if not config.interleave:
        return pd.DataFrame()
    rows = []
    for r in records:
        column = config.metrics[r.metric]
        credit = {
            a: users.loc[users["arm"] == a].sort_values("user")[column].to_numpy()
            for a in (r.control, r.treatment)
        }
        p = interleave_test(credit[r.treatment], credit[r.control], config.stats.alpha)
        rows.append({"metric": r.metric, "treatment": r.treatment} | dataclasses.asdict(p))
    return pd.DataFrame(rows)


def _covers(lower: float, upper: float, value: float) -> bool | None:
    """lower <= value <= upper; None when the interval or the value is undefined."""
    if any(math.isnan(v) for v in (lower, upper, value)):
        return None
    return bool(lower <= value <= upper)


def expected_table(config: ExperimentConfig, records: tuple[EffectRecord, ...]) -> pd.DataFrame:
    """Per expected-value metric (given the pages shown, ``EXPECTED_TWINS``, or exact,
    ``EXACT_TWINS``) whose realised twin is analysed too (e.g. expected_clicks and exact_clicks
    of clicks): both standard errors and the variance reduction 1 - SE²(expected) /
    SE²(realised)."""
    twin_of = {}
    for name, spec in config.metrics.items():
        for other, other_spec in config.metrics.items():
            columns = [spec] if isinstance(spec, str) else list(spec)
            for twins in (EXPECTED_TWINS, EXACT_TWINS):
                replaced = [twins.get(c, c) for c in columns]
                twin = replaced[0] if isinstance(spec, str) else tuple(replaced)
                if other != name and twin == other_spec and spec != other_spec:
                    twin_of[other] = name
    by_key = {(r.metric, r.treatment): r for r in records}
    rows = []
    for r in records:
        realised = by_key.get((twin_of.get(r.metric), r.treatment))
        if realised is None:
            continue
        rows.append(
            {
                "metric": r.metric,
                "realised": realised.metric,
                "treatment": r.treatment,
                "std_err": r.std_err,
                "realised_std_err": realised.std_err,
                "variance_reduction": 1 - r.std_err**2 / realised.std_err**2
                if realised.std_err > 0
                else math.nan,
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
        records = analyse_design(config, users, usable).to_pandas()
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
    first page), with a user-level standard error; empty without funnel columns."""
    if not set(FUNNEL_COLUMNS) <= set(user_days.columns):
        return pd.DataFrame()
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


CALIBRATION_COLUMNS = ("pages", "impressions", "clicks", "purchases", "gmv")
"""The realised user-day columns the calibration table reads."""


def calibration_table(user_days: pd.DataFrame) -> pd.DataFrame:
    """Per day and arm, the figures a feed's ranges are stated in (docs/world.md
    "Calibration"): users (user-days), uCTR (share with >= 1 click), CTR per impression,
    clicks and pages per session, purchases per click and GMV per user-day, realised. Empty
    without the session columns (an interleaved run's credited table)."""
    if not set(CALIBRATION_COLUMNS) <= set(user_days.columns) or not len(user_days):
        return pd.DataFrame()
    frame = user_days.assign(clicked=(user_days["clicks"] > 0).astype(np.float64))
    sums = frame.groupby(["day", "arm"], sort=True)[[*CALIBRATION_COLUMNS, "clicked"]].agg(["sum", "count"])
    n = sums[("clicks", "count")]
    total = sums.xs("sum", axis=1, level=1)
    return pd.DataFrame(
        {
            "users": n,
            "uctr": total["clicked"] / n,
            "ctr_per_impression": total["clicks"] / total["impressions"],
            "clicks_per_session": total["clicks"] / n,
            "pages_per_session": total["pages"] / n,
            "purchases_per_click": total["purchases"] / total["clicks"],
            "gmv_per_user_day": total["gmv"] / n,
        }
    ).reset_index()


def arm_table(config: ExperimentConfig, users: pd.DataFrame) -> pd.DataFrame:
    """Per arm: users and the raw (unadjusted) value of every metric (interleave: of every
    credited one)."""
    rows = []
    for arm in config.arm_names:
        mine = users[users["arm"] == arm]
        row: dict[str, Any] = {"arm": arm, "users": len(mine)}
        for name, spec in config.metrics.items():
            needs = {spec} if isinstance(spec, str) else set(spec)
            if not needs <= set(users.columns):
                continue  # interleaving: not a credited column
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
    """One row per user and arm it ran under (split: one per user; paired: one per user and
    arm): user, arm, days, SESSION_COLUMNS, clicked, expected_clicked, pre_* columns."""
    user_days: pd.DataFrame
    """One row per user-day and arm (the experiment's logs): user, day, arm, SESSION_COLUMNS,
    FUNNEL_COLUMNS."""
    srm: SRMResult | None
    """The sample-ratio gate (split); None in a paired design, where nothing is split."""
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
    calibration: pd.DataFrame
    """Per day and arm: uCTR, CTR per impression, pages per session, ... (``calibration_table``)."""
    truth: pd.DataFrame
    """Per record: the true effect on the truth users and whether the intervals cover it."""
    truth_users: pd.DataFrame
    """The per-user rows the truth rests on: every truth user under every arm (paired: users)."""
    expected: pd.DataFrame
    """Expected-value metrics: the variance reduction against their realised twins."""
    preferences: pd.DataFrame
    """Interleaving: per credited metric x treatment, wins, losses, ties and the win share."""
    segment_labels: pd.DataFrame
    """One row per experiment user: user and its label in every available [segments] dimension."""
    segments: pd.DataFrame
    """Per dimension, segment value, metric and treatment: the design's record on the segment's
    users (p uncorrected: exploratory) and its true effect (``segment_table``)."""
    segments_skipped: dict[str, str]
    """Dimensions, segments and metrics without per-segment results, with the reason."""
    versions: dict[str, dict[str, str]]
    """Per arm: the coarse and fine ranker specs and model versions."""
    through: str
    workers: int
    timings: dict[str, float]
    """Wall seconds: models, world, setup, traffic, statistics (report: added by run_ab)."""

    @property
    def srm_passed(self) -> bool:
        """The SRM gate passed, or there is none (paired design)."""
        return self.srm is None or self.srm.passed

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

        records = self.to_pandas()
        if len(self.truth):
            truth = self.truth.drop(columns=["truth_users"])
            records = records.merge(truth, on=["metric", "treatment"], how="left")
        srm = None  # paired: no gate
        if self.srm is not None:
            srm = dataclasses.asdict(self.srm) | {"counts": self.arm_counts, "shares": self.config.shares}
        return {
            "name": self.config.name,
            "design": str(self.config.design.kind),
            "control": self.config.control,
            "arms": self.config.arm_names,
            "through": self.through,
            "workers": self.workers,
            "srm": srm,
            "records": plain(records),
            "truth_users": int(self.truth["truth_users"].max()) if len(self.truth) else 0,
            "expected_metrics": plain(self.expected),
            "preferences": plain(self.preferences),
            "segments": {
                "note": SEGMENTS_NOTE,
                "dimensions": [c for c in self.segment_labels.columns if c != "user"],
                "metrics": segment_metric_names(self.config),
                "records": plain(self.segments),
                "skipped": self.segments_skipped,
            },
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
    counterfactual: pd.DataFrame | None = None,
    segment_labels: pd.DataFrame | None = None,
    segments_unavailable: Mapping[str, str] | None = None,
    **extra: Any,
) -> ExperimentResult:
    """The statistics of a finished experiment's user-day table (and pre-period table).

    ``segment_labels``: one row per user, column ``user`` and one per dimension
    (``abtest.segments.experiment_segments``); ``segments_unavailable``: why configured
    dimensions have no labels. Without labels there is no per-segment table.

    ``counterfactual``: split design, the user-days of the truth users under the arms they
    were not assigned; with their assigned rows they give the true effect. A paired run's
    truth is its own table; interleave: the truth users' runs under every arm on its own.
    """
    if counterfactual is None:
        counterfactual = user_days.iloc[:0]
    users = per_user_table(config, user_days, pre)
    counts = users["arm"].value_counts().reindex(list(config.arm_names), fill_value=0)
    shares, threshold = config.shares, config.stats.srm_threshold
    srm = srm_test(counts.to_numpy(np.int64), shares, threshold) if config.split else None
    metrics, skipped = usable_metrics(config, users)
    results = analyse_design(config, users, metrics) if metrics else Results(())
    daily = (
        daily_table(config, cumulative_users(config, user_days, pre), metrics) if metrics else pd.DataFrame()
    )
    if config.paired:
        truth_users = users
    elif config.interleave and len(counterfactual):
        truth_users = per_user_table(config, counterfactual, None)  # every arm on its own
    elif len(counterfactual):
        sample = user_days[user_days["user"].isin(counterfactual["user"].unique())]
        truth_users = per_user_table(config, pd.concat([sample, counterfactual], ignore_index=True), None)
    else:
        truth_users = users.iloc[:0]
    if segment_labels is None:
        segment_labels = pd.DataFrame({"user": users["user"].unique()})
    segments, segments_skipped = segment_table(config, users, truth_users, segment_labels, metrics)
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
        power=power_table(config, results.records, users),
        funnel=funnel_table(config, counterfactual if config.interleave else user_days),
        calibration=calibration_table(counterfactual if config.interleave else user_days),
        preferences=preference_table(config, results.records, users),
        segment_labels=segment_labels,
        segments=segments,
        segments_skipped=dict(segments_unavailable or {}) | segments_skipped,
        truth=truth_table(config, results.records, truth_users),
        truth_users=truth_users,
        expected=expected_table(config, results.records),
        **extra,
    )
