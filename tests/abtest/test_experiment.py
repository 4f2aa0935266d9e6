"""abtest.experiment: whole runs - shard-size independence, resume, A/A calibration, power."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from abtest.analysis import (
    ExperimentResult,
    cumulative_users,
    daily_table,
)
from abtest.config import load_config
from abtest.experiment import run_experiment
from abtest.store import ShardStore
from abtest.traffic import plan_shards
from common.assignment import Assignment
from simulator import SMALL
from simulator.config import ConfigError


def test_results_do_not_depend_on_the_shard_size(tiny_result, make_config, small_world, same_results) -> None:
    one_shard = make_config(traffic={"shard_users": 400})
    assert len(plan_shards(one_shard)) == 3
    same_results(tiny_result, run_experiment(one_shard, world=small_world))


class Interrupt(Exception):
    pass


def test_a_resumed_run_equals_an_uninterrupted_one(
    tiny_result, tiny_config, small_world, tmp_path, same_results
) -> None:
    seen: list[str] = []

    def crash_after_four(shard) -> None:
        seen.append(shard.key)
        if len(seen) == 4:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_experiment(tiny_config, world=small_world, run_dir=tmp_path, on_shard=crash_after_four)
    assert len(list((tmp_path / "shards").glob("*.parquet"))) == 4

    redone: list[str] = []
    resumed = run_experiment(
        tiny_config, world=small_world, run_dir=tmp_path, resume=True, on_shard=lambda s: redone.append(s.key)
    )
    assert len(redone) == len(plan_shards(tiny_config)) - 4 and not set(redone) & set(seen)
    same_results(tiny_result, resumed)


def test_resume_refuses_shards_of_other_models(tmp_path: Path) -> None:
    store = ShardStore(tmp_path)
    store.check_versions({"control": {"coarse_version": "abc"}})
    store.check_versions({"control": {"coarse_version": "abc"}})  # same models: fine
    with pytest.raises(ConfigError, match="other models"):
        store.check_versions({"control": {"coarse_version": "def"}})


def test_a_coarse_size_above_the_recall_size_is_rejected(make_config, small_world) -> None:
    too_many = {"coarse": "random", "fine": "oracle", "coarse_size": SMALL.recall_size + 1}
    config = make_config(arms={"control": too_many})
    with pytest.raises(ConfigError, match=r"\[arms.control\] coarse_size = 501 exceeds the world's recall"):
        run_experiment(config, world=small_world)


def test_without_resume_finished_shards_are_recomputed(tiny_config, small_world, tmp_path) -> None:
    config = tiny_config.replace(traffic={"users": 100, "days": 1}, stats={"funnel_users": 0})
    run_experiment(config, world=small_world, run_dir=tmp_path)
    count: list[str] = []
    run_experiment(config, world=small_world, run_dir=tmp_path, on_shard=lambda s: count.append(s.key))
    assert len(count) == len(plan_shards(config))


# ---------------------------------------------------------------------------------------------
# A/A at the engine level (the statistics' own A/A calibration is test_aa_calibration.py)

R = 500
ALPHA = 0.05
# Binomial(R, α)/R lies within α ± 3.29·√(α(1−α)/R) = 0.05 ± 0.032 with probability 99.9 %.
FPR_TOLERANCE = 3.29 * math.sqrt(ALPHA * (1 - ALPHA) / R)


@pytest.fixture(scope="module")
def aa_run(make_config, small_world) -> ExperimentResult:
    """Every SMALL-world user, 2 days, both arms the popularity-only cascade (A/A mode); its
    uCTR (~0.6) is far from 0 and 1, so p-values are not lumpy."""
    config = make_config(
        arms={
            "control": {"coarse": "popularity", "fine": "popularity", "coarse_size": 100},
            "treatment": {"coarse": "oracle", "fine": "oracle", "coarse_size": 100},
        },
        assignment={"aa": True},
        traffic={"users": SMALL.n_users, "days": 2, "shard_users": 1000},
        stats={"funnel_users": 0},
    )
    return run_experiment(config, world=small_world)


def test_an_aa_run_finds_nothing(aa_run: ExperimentResult) -> None:
    assert aa_run.srm.passed
    assert not aa_run.to_pandas()["significant"].any()
    versions = aa_run.versions
    assert versions["control"] == versions["treatment"]
    assert 0.3 < aa_run.users["clicked"].mean() < 0.9


AA_METRICS = ["uctr", "pctr", "depth", "clicks", "global_hitrate"]


def test_an_aa_run_skips_a_metric_carried_by_one_user(aa_run: ExperimentResult) -> None:
    # ~35 of 2,000 users buy in scene in 2 days and all but one purchase are hits: the
    # hitrate's variance is that one user's. Re-randomised, its delta-method p-values
    # rejected at 10 % for α = 5 % (measured before the guard), so the engine skips it.
    assert "rests on 1." in aa_run.skipped["inscene_hitrate"]


@pytest.fixture(scope="module")
def aa_rerandomised(aa_run: ExperimentResult) -> pd.DataFrame:
    """R re-randomisations of the A/A run's users: per salt, each metric's final p-value and
    whether any daily always-valid interval excluded 0 (the engine's daily_table)."""
    config = aa_run.config
    metrics = {m: s for m, s in config.metric_specs(set(aa_run.users.columns)).items() if m in AA_METRICS}
    pre = aa_run.users[
        ["user", *[c for c in aa_run.users.columns if c.startswith("pre_") and c != "pre_clicked"]]
    ]
    looks = cumulative_users(config, aa_run.user_days, pre)
    user_ids = aa_run.users["user"].to_numpy()
    rows = []
    for r in range(R):
        split = Assignment(f"aa-engine-{r}", config.arm_names, config.shares).assign(user_ids)
        arms = np.array(config.arm_names)[split]
        for users in looks.values():
            users["arm"] = arms  # rows are users 0..N-1 in order
        daily = daily_table(config, looks, metrics)
        final = daily[daily["day"] == config.experiment_days[-1]]
        row = {f"p/{m}": p for m, p in zip(final["metric"], final["pvalue"], strict=True)}
        crossed = (daily["av_ci_lower"] > 0) | (daily["av_ci_upper"] < 0)
        row |= {f"av/{m}": bool(c.any()) for m, c in crossed.groupby(daily["metric"])}
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.mark.slow
@pytest.mark.parametrize("metric", AA_METRICS)
def test_engine_aa_false_positive_rate_is_nominal_and_pvalues_uniform(aa_rerandomised, metric: str) -> None:
    p = aa_rerandomised[f"p/{metric}"]
    assert abs((p < ALPHA).mean() - ALPHA) < FPR_TOLERANCE
    assert stats.kstest(p, "uniform").pvalue > 0.001


@pytest.mark.slow
@pytest.mark.parametrize("metric", AA_METRICS)
def test_daily_always_valid_intervals_rarely_exclude_zero_in_aa(aa_rerandomised, metric: str) -> None:
    # P(some look's always-valid interval excludes 0) <= α under A/A, whatever the looks
    assert aa_rerandomised[f"av/{metric}"].mean() < ALPHA + FPR_TOLERANCE


# ---------------------------------------------------------------------------------------------
# Power: the engine detects a real difference

ORACLE_USERS = 400


@pytest.mark.slow
def test_an_oracle_coarse_ranker_beats_a_random_one_on_clicks() -> None:
    # configs/oracle_vs_random.toml on the built-in default world (random vs oracle coarse,
    # popularity fine ranker; on the feed world a few long oracle sessions carry 400 users'
    # realised clicks, too few for the normal approximation, so the metric is skipped). The
    # oracle re-scores all 5,000 recall candidates of every page with the true click model
    # (~10 ms a page here), so the default experiment's size is out of reach for a test; 400
    # users already give p < 0.001, and the last assertion checks that at the default size (the
    # standard error shrinks as 1/√n) a test at p < 0.001 would detect this effect with power
    # > 0.999.
    root = Path(__file__).resolve().parents[2]
    config = load_config(root / "configs" / "oracle_vs_random.toml").replace(
        world="default",
        traffic={"users": ORACLE_USERS, "workers": 1},
        pre_period={"source": "none"},
        stats={"funnel_users": 0},
    )
    result = run_experiment(config)
    clicks = result.record("clicks")
    assert clicks.control == "random" and clicks.treatment == "oracle"
    assert clicks.treatment_value > clicks.control_value
    assert clicks.pvalue < 0.001
    default_users = load_config(root / "configs" / "default.toml").traffic.users
    z_default = clicks.effect / (clicks.std_err * math.sqrt(ORACLE_USERS / default_users))
    assert stats.norm.sf(stats.norm.isf(0.0005) - z_default) > 0.999
