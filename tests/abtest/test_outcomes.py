"""abtest.outcomes: per-session outcome columns from finished sessions."""

from __future__ import annotations

import dataclasses

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


def test_new_item_hit_counts_of_known_purchases(small_world, small_sim, monkeypatch) -> None:
    """Two users with known purchases, in and out of the scene, and known first coarse outputs:
    the global and new-item hit counts are those counted by hand."""
    new, old = np.flatnonzero(small_world.item_is_new)[:3], np.flatnonzero(~small_world.item_is_new)[:2]
    users = np.array([5, 3])
    sessions = run_sessions(
        small_sim,
        Cascade(PopularityScorer(small_world), OracleScorer(small_world), CascadeSizes(100, 10)),
        SessionKeys.of(users, 1),
        exact=True,
    )
    sessions = dataclasses.replace(
        sessions,
        first_coarse_items=np.array([[new[0], old[0], new[2]], [old[0], new[0], -1]]),
        purchased=[np.array([new[0], old[0]]), np.array([new[1]])],  # user 5: hit, hit; user 3: miss
    )
    oos = (np.array([3, 5, 5]), np.array([new[0], new[1], old[1]]))  # user 3: hit; user 5: miss, miss
    monkeypatch.setattr("simulator.logs.out_of_scene_purchases", lambda world, users, day: oos)
    out = session_outcomes(small_world, sessions, users, 1)
    np.testing.assert_array_equal(out["global_purchases"], [4, 2])
    np.testing.assert_array_equal(out["global_hits"], [2, 1])
    np.testing.assert_array_equal(out["new_global_purchases"], [2, 2])  # 5: new[0], new[1]; 3: new[1], new[0]
    np.testing.assert_array_equal(out["new_global_hits"], [1, 1])  # 5: new[0]; 3: new[0]
    np.testing.assert_array_equal(out["inscene_hits"], [2, 0])
