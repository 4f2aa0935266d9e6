"""The paired online A/B: precomputed score tables answer like the scorers they replace, a
cascade on them runs the same sessions, and the paired statistics are the textbook ones."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from abtest.stats import paired_lift
from policies.cascade import Cascade, CascadeSizes, run_sessions
from policies.rankers import OracleScorer, PopularityScorer, RandomScorer
from simulator import SessionKeys
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


outcome = st.integers(0, 30).map(float) | st.floats(min_value=0.01, max_value=50)  # counts, money


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(outcome, outcome), min_size=3, max_size=40))
def test_paired_effect_is_the_paired_t_test(pairs):
    c, t = np.array(pairs).T
    lift = paired_lift(c, t)
    assert lift.effect == pytest.approx(t.mean() - c.mean(), abs=1e-9)
    if (t - c).std() > 1e-6:
        expected = stats.ttest_rel(t, c)
        assert lift.pvalue == pytest.approx(expected.pvalue, rel=1e-6, abs=1e-12)
        low, high = expected.confidence_interval(0.95)
        assert (lift.effect_lo, lift.effect_hi) == pytest.approx((low, high), rel=1e-6, abs=1e-9)


def test_relative_lift_is_the_ratio_of_means_with_a_delta_method_interval():
    rng = np.random.default_rng(0)
    c = rng.poisson(3.0, 4000).astype(float)
    t = c * 1.1 + rng.normal(0, 1, 4000)
    lift = paired_lift(c, t)
    assert lift.lift == pytest.approx(t.mean() / c.mean() - 1)
    assert lift.lift_lo < 0.1 < lift.lift_hi
    exact = paired_lift(c, 1.25 * c)  # a constant ratio has no uncertainty
    assert (exact.lift, exact.lift_lo, exact.lift_hi) == pytest.approx((0.25, 0.25, 0.25))


def test_paired_interval_covers_at_its_level():
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(400):
        user = rng.gamma(2.0, 1.5, 300)  # users differ a lot; arms share each user's level
        c, t = rng.poisson(user), rng.poisson(user * 1.05)
        lift = paired_lift(c.astype(float), t.astype(float))
        covered += lift.lift_lo <= 0.05 <= lift.lift_hi
    assert 0.92 <= covered / 400 <= 0.98
