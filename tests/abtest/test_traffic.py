"""abtest.traffic: shards, assignment per user, one row per user-day, common random numbers, funnel."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from abtest.analysis import (
    ExperimentResult,
)
from abtest.config import ExperimentConfig
from abtest.experiment import run_experiment
from abtest.outcomes import SESSION_COLUMNS
from common.assignment import Assignment

FRAME_COLUMNS = ["user", "day", "arm", *SESSION_COLUMNS]


def test_one_row_per_user_day_and_per_user(
    tiny_result: ExperimentResult, tiny_config: ExperimentConfig
) -> None:
    t = tiny_config.traffic
    days = tiny_result.user_days
    assert len(days) == t.users * t.days
    assert not days.duplicated(["user", "day"]).any()
    assert sorted(days["day"].unique()) == tiny_config.experiment_days
    users = tiny_result.users
    assert users["user"].tolist() == list(range(t.users))
    assert (users["days"] == t.days).all()


def test_users_keep_the_arm_of_their_hash(
    tiny_result: ExperimentResult, tiny_config: ExperimentConfig
) -> None:
    a = tiny_config.assignment
    expected = Assignment(a.salt, tiny_config.arm_names, tiny_config.shares, a.layer).assign(
        tiny_result.users["user"].to_numpy()
    )
    assert (tiny_result.users["arm"] == np.array(tiny_config.arm_names)[expected]).all()
    assert tiny_result.user_days.groupby("user")["arm"].nunique().eq(1).all()


def test_funnel_shares_add_up_and_the_oracle_loses_nothing_after_recall(
    tiny_result: ExperimentResult,
) -> None:
    funnel = tiny_result.funnel.set_index(["arm", "stage"])["share"]
    for arm in ("control", "treatment"):
        assert funnel[arm].sum() == pytest.approx(1.0)
    # oracle coarse and oracle fine rank by the very value best_in_pool ranks by
    assert funnel["treatment", "coarse"] == 0 and funnel["treatment", "fine"] == 0
    assert funnel["control", "coarse"] > 0.05  # popularity cuts truly good items
    sample = tiny_result.user_days.dropna(subset=["funnel_recall"])
    assert set(sample["user"]) == set(range(60)) and set(sample["day"]) == {1}


def test_a_users_sessions_do_not_depend_on_the_arm_they_are_in(make_config, small_world) -> None:
    # In A/A mode both arms run the same cascade: a new salt moves users between arms but,
    # with common random numbers keyed by (user, day, session, item), changes no outcome.
    runs = [
        run_experiment(
            make_config(
                assignment={"aa": True, "salt": salt}, traffic={"days": 1}, stats={"funnel_users": 0}
            ),
            world=small_world,
        ).user_days
        for salt in ("one", "two")
    ]
    assert (runs[0]["arm"] != runs[1]["arm"]).mean() > 0.3
    metrics = [c for c in runs[0].columns if c != "arm"]
    pd.testing.assert_frame_equal(runs[0][metrics], runs[1][metrics])
