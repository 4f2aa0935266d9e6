"""abtest.pre_period: the logged and the simulated pre-period of CUPED."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from abtest.analysis import (
    ExperimentResult,
)
from abtest.experiment import run_experiment
from abtest.pre_period import logged_pre_period
from simulator import World
from simulator.config import ConfigError, WorldConfig


def test_cuped_with_a_simulated_pre_period_reduces_variance(tiny_result: ExperimentResult) -> None:
    clicks = tiny_result.record("clicks")
    # the pre-period runs the control's cascade for every user; its clicks predict the
    # experiment's (user taste persists), so CUPED removes variance
    assert clicks.cuped
    assert clicks.variance_reduction > 0.05
    assert tiny_result.users["pre_pages"].min() >= 1  # every user had a pre-period session


def test_logged_pre_period_counts_the_logs(small_log_dir: Path, small_world: World) -> None:
    pre = logged_pre_period(small_log_dir, small_world, 300, 1)
    samples = pd.read_parquet(small_log_dir / "samples.parquet")
    exposed = samples[(samples["sample_type"] == 0) & (samples["user_id"] < 300)]
    assert pre["user"].tolist() == list(range(300))
    by_user = exposed.groupby("user_id")
    assert (pre["pre_clicks"].to_numpy() == by_user["click"].sum().reindex(range(300), fill_value=0)).all()
    assert (pre["pre_impressions"].to_numpy() == by_user.size().reindex(range(300), fill_value=0)).all()
    pages = exposed.groupby("user_id")["page"].nunique().reindex(range(300), fill_value=0)  # one session
    assert (pre["pre_pages"].to_numpy() == pages.to_numpy()).all()
    bought = exposed[exposed["purchase"] == 1]
    gmv = pd.Series(small_world.item_price[bought["item_id"]], index=bought["user_id"]).groupby(level=0).sum()
    assert pre["pre_gmv"].to_numpy() == pytest.approx(gmv.reindex(range(300), fill_value=0).to_numpy())


def test_logged_pre_period_rejects_logs_of_another_world_or_too_few_users(small_log_dir, small_world) -> None:
    with pytest.raises(ConfigError, match="another world"):
        logged_pre_period(small_log_dir, WorldConfig(), 300, 1)
    with pytest.raises(ConfigError, match=r"cover 2000 users but the experiment has 2001"):
        logged_pre_period(small_log_dir, small_world, 2001, 1)


def test_an_experiment_uses_the_logged_pre_period(make_config, small_world, small_log_dir) -> None:
    config = make_config(
        pre_period={"source": "logs", "logs": str(small_log_dir)},
        traffic={"users": 200, "days": 1},
        stats={"funnel_users": 0},
    )
    result = run_experiment(config, world=small_world)
    assert result.record("clicks").cuped and result.record("pctr").cuped
    assert result.users["pre_impressions"].sum() > 0
    specs = config.metric_specs(set(result.users.columns))
    assert specs["global_hitrate"].covariate is None  # the logs hold no coarse outputs
