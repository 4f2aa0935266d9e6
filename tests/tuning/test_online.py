"""The paired online A/B: precomputed score tables answer like the scorers they replace, a
cascade on them runs the same sessions, and the paired statistics are the textbook ones."""

from __future__ import annotations

import numpy as np
import pytest

from abtest.stats import paired_lift
from policies.cascade import Cascade, CascadeSizes, run_sessions, stage_scores
from policies.rankers import OracleScorer, PopularityScorer, RandomScorer
from simulator import SMALL, SessionKeys, World
from tuning.online import TableScorer, session_outcomes


@pytest.fixture(scope="module")
def keys() -> SessionKeys:
    return SessionKeys.of(np.arange(100, 160), day=1)


@pytest.fixture(scope="module")
def recall(small_sim, keys) -> np.ndarray:
    return small_sim.recall(keys).items


def test_table_returns_the_scorers_scores(small_world, keys, recall):
    scorer = RandomScorer(7)  # a hash of (user, item): the same whatever the batch shape
    table = TableScorer.precompute(scorer, keys.user, recall)
    np.testing.assert_array_equal(table.score(keys.user, recall), scorer.score(keys.user, recall))
    rows = np.array([5, 0, 5, 59])  # any users, any order, any subset of their candidates
    subset = recall[rows][:, 7:40:3]
    np.testing.assert_array_equal(table.score(keys.user[rows], subset), scorer.score(keys.user[rows], subset))
    oracle = OracleScorer(small_world)  # float32 inside: a subset may differ in the last bits
    table = TableScorer.precompute(oracle, keys.user, recall)
    np.testing.assert_allclose(
        table.score(keys.user[rows], subset), oracle.score(keys.user[rows], subset), rtol=1e-6
    )


def test_a_table_of_a_drifting_scorer_gives_its_scores_on_the_tables_day(keys, recall):
    """Under taste drift the oracle's scores move from day to day: a table of day 1 answers the
    cascade's day-1 requests with the oracle's day-1 scores and refuses the other days."""
    world = World(SMALL.replace(taste_drift=0.4))
    oracle, day1 = OracleScorer(world), np.ones(len(keys.user), np.int64)
    table = TableScorer.precompute(oracle, keys.user, recall, day=1)
    on_day1 = oracle.score_on_day(keys.user, recall, day1)
    assert not np.allclose(on_day1, oracle.score_on_day(keys.user, recall, 0 * day1), rtol=1e-3)
    np.testing.assert_array_equal(stage_scores(table, keys.user, recall, day1), on_day1)
    with pytest.raises(ValueError, match="precomputed for day 1"):
        stage_scores(table, keys.user, recall, None)  # day 0


def test_a_table_of_a_day_free_scorer_answers_on_any_day(keys, recall):
    table = TableScorer.precompute(RandomScorer(4), keys.user, recall, day=1)
    days = np.arange(len(keys.user))
    assert table.day is None
    np.testing.assert_array_equal(table.score_on_day(keys.user, recall, days), table.score(keys.user, recall))


def test_table_scores_outside_the_recall_set_are_minus_inf(small_world, keys, recall):
    table = TableScorer.precompute(RandomScorer(0), keys.user, recall)
    outside = np.setdiff1d(np.arange(small_world.config.n_items), recall[0])[:3]
    assert np.isneginf(table.score(keys.user[:1], outside[None, :])).all()
    with pytest.raises(KeyError):
        table.score(np.array([10**6]), recall[:1])


def test_table_result_can_be_written_by_the_coarse_stage(keys, recall):
    table = TableScorer.precompute(RandomScorer(1), keys.user, recall)
    table.score(keys.user, recall)[:] = -np.inf
    assert np.isfinite(table.score(keys.user, recall)).all()


def test_cascade_on_tables_runs_the_same_sessions(small_world, small_sim, keys, recall):
    coarse, fine = RandomScorer(2), PopularityScorer(small_world)
    sizes = CascadeSizes(100, small_world.config.page_size)
    direct = run_sessions(small_sim, Cascade(coarse, fine, sizes), keys).totals
    tables = [TableScorer.precompute(scorer, keys.user, recall) for scorer in (coarse, fine)]
    cached = run_sessions(small_sim, Cascade(*tables, sizes), keys).totals
    for name in ("pages", "clicks", "purchases", "gmv", "expected_clicks"):
        np.testing.assert_array_equal(getattr(cached, name), getattr(direct, name))


def test_same_cascade_twice_has_exactly_zero_lift(small_world, small_sim, keys):
    cascade = Cascade(
        RandomScorer(3), OracleScorer(small_world), CascadeSizes(100, small_world.config.page_size)
    )
    a, b = session_outcomes(small_sim, cascade, keys), session_outcomes(small_sim, cascade, keys)
    lift = paired_lift(a["clicks"], b["clicks"])
    assert (lift.lift, lift.lift_lo, lift.lift_hi) == (0.0, 0.0, 0.0)
