"""The in-process cascade: stage invariants, batch independence, agreement with run_static."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.cascade import Cascade, CascadeSizes, run_sessions
from policies.checkpoint import CheckpointError
from policies.features import FeatureStore
from policies.rankers import OracleScorer, PopularityScorer, RandomScorer, load_scorer
from simulator import SessionKeys
from simulator.oracle import oracle_scores
from simulator.session import run_static


@pytest.fixture(scope="module")
def features(small_world) -> FeatureStore:
    return FeatureStore.from_world(small_world)


@pytest.fixture(scope="module")
def model_cascade(small_world, features, small_fine, small_coarse) -> Cascade:
    coarse = load_scorer(str(small_coarse.path), small_world, features, "coarse")
    fine = load_scorer(str(small_fine.path), small_world, features, "fine")
    return Cascade(coarse, fine, CascadeSizes(coarse=60, page=10))


@pytest.fixture(scope="module")
def recall(small_sim):
    keys = SessionKeys.of(np.arange(40), day=3)
    return keys.user, small_sim.start(keys).recall.items


@settings(max_examples=25, deadline=None)
@given(
    rows=st.lists(st.integers(0, 39), min_size=1, max_size=6, unique=True),
    exclude_share=st.floats(0.0, 0.99),
    seed=st.integers(0, 2**16),
)
def test_page_within_fine_input_within_coarse_output_within_recall(
    model_cascade, recall, rows, exclude_share, seed
):
    users, items = recall[0][rows], recall[1][rows]
    excluded = np.random.default_rng(seed).random(items.shape) < exclude_share
    ranked = model_cascade.rank(users, items, excluded)
    sizes = model_cascade.sizes
    for b in range(len(rows)):
        allowed = set(items[b][~excluded[b]])
        coarse = ranked.coarse_items[b][ranked.coarse_items[b] >= 0]
        page = ranked.page[b][ranked.page[b] >= 0]
        assert len(coarse) == min(sizes.coarse, len(allowed)) == len(set(coarse))
        assert set(coarse) <= allowed
        assert len(page) == min(sizes.page, len(coarse)) == len(set(page))
        assert set(page) <= set(coarse)
        slots = ranked.slots[b][ranked.slots[b] >= 0]
        np.testing.assert_array_equal(items[b][slots], page)
        assert np.all(np.diff(ranked.page_scores[b][: len(page)]) <= 0)  # best first


def test_pages_do_not_depend_on_the_batch(model_cascade, recall):
    users, items = recall
    together = model_cascade.rank(users, items)
    for b in (0, 7, 39):
        alone = model_cascade.rank(users[b : b + 1], items[b : b + 1])
        np.testing.assert_array_equal(alone.page[0], together.page[b])
        np.testing.assert_array_equal(alone.coarse_items[0], together.coarse_items[b])
        np.testing.assert_array_equal(alone.page_scores[0], together.page_scores[b])


def test_oracle_cascade_equals_the_static_oracle_feed(small_world, small_sim):
    # with the same scores in both stages, each page is the next K of one fixed order
    oracle = OracleScorer(small_world)
    cascade = Cascade(oracle, oracle, CascadeSizes(coarse=50, page=small_world.config.page_size))
    keys = SessionKeys.of(np.arange(150), day=2)
    sessions = run_sessions(small_sim, cascade, keys)
    static = run_static(small_sim, keys, lambda b: oracle_scores(small_world, b.keys, b.recall.items))
    for name in ("pages", "impressions", "clicks", "purchases", "gmv"):
        np.testing.assert_array_equal(getattr(sessions.totals, name), getattr(static, name), err_msg=name)


def test_run_sessions_reports_first_coarse_output_and_purchases(small_world, small_sim):
    cascade = Cascade(
        PopularityScorer(small_world), OracleScorer(small_world), CascadeSizes(coarse=40, page=10)
    )
    keys = SessionKeys.of(np.arange(200), day=1)
    out = run_sessions(small_sim, cascade, keys)
    assert out.first_coarse_items.shape == (200, 40)
    assert [len(p) for p in out.purchased] == out.totals.purchases.astype(int).tolist()
    for b in range(200):
        assert set(out.purchased[b]) <= set(out.recall_items[b])
        top = np.argsort(-small_world.item_popularity[out.recall_items[b]], kind="stable")[:40]
        assert set(out.first_coarse_items[b]) == set(out.recall_items[b][top])


def test_better_coarse_stage_gives_more_clicks(small_world, small_sim):
    keys = SessionKeys.of(np.arange(400), day=5)
    fine = OracleScorer(small_world)
    clicks = {
        name: run_sessions(small_sim, Cascade(coarse, fine, CascadeSizes(20, 10)), keys).totals.clicks.sum()
        for name, coarse in (("random", RandomScorer(0)), ("oracle", OracleScorer(small_world)))
    }
    assert clicks["oracle"] > 1.5 * clicks["random"], clicks


def test_sizes_are_validated():
    with pytest.raises(ValueError, match="cannot exceed"):
        CascadeSizes(coarse=5, page=10)
    with pytest.raises(ValueError, match="coarse must be an integer"):
        CascadeSizes(coarse=0)


def test_load_scorer_rejects_a_checkpoint_of_another_stage(small_world, features, small_fine):
    with pytest.raises(CheckpointError, match="expected a coarse model"):
        load_scorer(str(small_fine.path), small_world, features, "coarse")
