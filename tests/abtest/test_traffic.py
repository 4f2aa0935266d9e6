"""abtest.traffic: shards, assignment per user, one row per user-day, common random numbers, funnel."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tomli_w

from abtest.analysis import (
    ExperimentResult,
)
from abtest.arms import arm_specs
from abtest.config import ExperimentConfig
from abtest.executors import build_cascades
from abtest.experiment import run_experiment
from abtest.outcomes import SESSION_COLUMNS
from abtest.report import truth_line
from abtest.traffic import Shard, Traffic
from common.assignment import Assignment
from simulator import SMALL, World
from simulator.world import user_arrival_days

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


ARRIVALS = {"arrival_days": 3, "new_user_share_per_day": 0.3}
"""90 % of users arrive on days 1..3: a share of the tiny experiment's users (days 1, 2, the
simulated pre-period day 0) has no session on some days, and small shards have none at all."""


@pytest.fixture(scope="module")
def arrival_world(tmp_path_factory) -> tuple[str, World]:
    config = SMALL.replace(**ARRIVALS)
    path = tmp_path_factory.mktemp("arrivals") / "world.toml"
    path.write_text(tomli_w.dumps({"world": config.to_dict()}))
    return str(path), World(config)


def test_no_session_runs_before_its_users_arrival_day(make_config, arrival_world) -> None:
    path, world = arrival_world
    for design in ("split", "paired", "interleave"):
        result = run_experiment(make_config(world=path, design={"kind": design}), world=world)
        days = result.user_days
        assert (world.user_arrival_day[days["user"].to_numpy()] <= days["day"].to_numpy()).all(), design
        # every user-day after arrival does run (users 0..399 on days 1 and 2)
        user, day = np.meshgrid(np.arange(400), [1, 2], indexing="ij")
        due = world.user_arrival_day[user] <= day
        ran = result.user_days.drop_duplicates(["user", "day"])
        assert len(ran) == due.sum(), design
        assert 0 < due.sum() < due.size  # the knob leaves some user-days out


def test_the_truth_line_counts_the_users_with_a_session(make_config, arrival_world) -> None:
    path, world = arrival_world
    result = run_experiment(make_config(world=path, design={"kind": "paired"}), world=world)
    arrived = int((world.user_arrival_day[np.arange(400)] <= 2).sum())
    assert 0 < arrived < 400
    assert f"all {arrived:,} users with a session (of 400; the rest arrive later)" in truth_line(result)


class _Bar:
    """Stands in for tqdm: records the total and the count shown."""

    def __init__(self, total: int, **_) -> None:
        self.total, self.n = total, 0

    def update(self, n: int) -> None:
        self.n += n

    def set_postfix(self, **_) -> None:
        pass

    def close(self) -> None:
        pass


def test_the_progress_bar_counts_only_the_user_days_of_arrived_users(
    make_config, arrival_world, monkeypatch
) -> None:
    path, world = arrival_world
    bars = []
    monkeypatch.setattr("abtest.experiment.tqdm", lambda **kw: bars.append(_Bar(**kw)) or bars[-1])
    run_experiment(make_config(world=path), world=world, progress=True)
    (bar,) = bars
    due = sum(int((world.user_arrival_day[:400] <= day).sum()) for day in (0, 1, 2))  # pre, days 1, 2
    assert bar.n == bar.total == due < 3 * 400


def test_user_arrival_days_need_no_world(arrival_world) -> None:
    _, world = arrival_world
    users = np.array([7, 3, 1999, 0])
    np.testing.assert_array_equal(user_arrival_days(world.config, users), world.user_arrival_day[users])


def test_arrivals_are_shard_invariant_with_empty_shards(make_config, arrival_world, same_results) -> None:
    path, world = arrival_world
    arrival = world.user_arrival_day[:400]
    small_shards = arrival[: 400 // 7 * 7].reshape(-1, 7)
    assert (small_shards.min(axis=1) > 0).any()  # a 7-user shard has nobody on day 0
    whole, split = (
        run_experiment(make_config(world=path, traffic={"shard_users": n}), world=world) for n in (400, 7)
    )
    same_results(whole, split)


def test_a_shard_without_arrived_users_has_a_runs_columns_and_no_rows(make_config, arrival_world) -> None:
    path, world = arrival_world
    late = np.flatnonzero(world.user_arrival_day > 1)
    lo = int(late[np.flatnonzero(np.diff(late[:-1]) + np.diff(late[1:]) == 2)[0]])  # 3 in a row
    for design in ("split", "interleave"):
        config = make_config(world=path, design={"kind": design})
        traffic = Traffic(config, world, build_cascades(world, arm_specs(config)))
        empty = traffic.run(Shard("exp", 1, 0, lo, lo + 3))
        full = traffic.run(Shard("exp", 1, 0, 0, 50))
        assert len(empty) == 0 and len(full) > 0
        pd.testing.assert_series_equal(empty.dtypes, full.dtypes)
