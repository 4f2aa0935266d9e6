"""abtest.outcomes: per-session outcome columns from finished sessions."""

from __future__ import annotations

import numpy as np

from abtest.analysis import (
    ExperimentResult,
)
from abtest.experiment import run_experiment
from abtest.outcomes import EXACT_COLUMNS, SESSION_COLUMNS, session_outcomes
from policies.cascade import Cascade, CascadeSizes, run_sessions
from policies.rankers import OracleScorer, PopularityScorer
from simulator import SMALL, World
from simulator.logs import out_of_scene_purchases
from simulator.recall import SessionKeys


def test_out_of_scene_purchases_are_the_simulators(tiny_result: ExperimentResult, small_world: World) -> None:
    for day, rows in tiny_result.user_days.groupby("day"):
        buyers, _ = out_of_scene_purchases(small_world, rows["user"].to_numpy(), int(day))
        expected = np.bincount(buyers, minlength=len(rows))[rows["user"].to_numpy()]
        assert (rows["oos_purchases"].to_numpy() == expected).all()
    assert tiny_result.users["oos_purchases"].sum() > 0  # the check above is not vacuous


def test_inscene_hitrate_is_one_when_the_coarse_stage_keeps_the_whole_recall_set(
    make_config, small_world
) -> None:
    config = make_config(
        arms={
            "control": {"coarse": "random", "fine": "oracle", "coarse_size": SMALL.recall_size},
            "treatment": {"coarse": "popularity", "fine": "oracle", "coarse_size": SMALL.recall_size},
        },
        traffic={"users": 200, "days": 1},
        pre_period={"source": "none"},
        stats={"funnel_users": 0},
    )
    users = run_experiment(config, world=small_world).users
    assert users["inscene_purchases"].sum() > 0
    assert (users["inscene_hits"] == users["inscene_purchases"]).all()


def test_outcomes_follow_the_users_in_any_order(small_world, small_sim) -> None:
    cascade = Cascade(PopularityScorer(small_world), OracleScorer(small_world), CascadeSizes(100, 10))
    users = np.random.default_rng(0).permutation(200).astype(np.int64)
    order = np.argsort(users)
    shuffled = session_outcomes(
        small_world, run_sessions(small_sim, cascade, SessionKeys.of(users, 1), exact=True), users, 1
    )
    ranked = session_outcomes(
        small_world,
        run_sessions(small_sim, cascade, SessionKeys.of(users[order], 1), exact=True),
        users[order],
        1,
    )
    assert tuple(shuffled) == (*SESSION_COLUMNS, *EXACT_COLUMNS)
    for name in shuffled:
        np.testing.assert_array_equal(shuffled[name][order], ranked[name], err_msg=name)
    buyers, _ = out_of_scene_purchases(small_world, users, 1)
    assert shuffled["oos_purchases"].sum() == len(buyers) > 0
