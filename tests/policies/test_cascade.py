"""The in-process cascade: stage invariants, batch independence, agreement with run_static,
session-scored pages equal to per-page rescoring."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.cascade import (
    Cascade,
    CascadeSizes,
    SessionCache,
    run_sessions,
    session_scores,
    stage_scores,
)
from policies.checkpoint import CheckpointError
from policies.features import FeatureStore, vocab_of
from policies.models import CoarseConfig, CoarseRanker, FineConfig, FineRanker
from policies.rankers import (
    CoarseModelScorer,
    FineModelScorer,
    OracleScorer,
    PopularityScorer,
    RandomScorer,
    Scorer,
    load_scorer,
)
from serving.stages import CoarseStage, FineStage
from simulator import SMALL, SessionKeys, Simulator, World
from simulator.config import WorldConfig
from simulator.oracle import expected_value, oracle_scores
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


# ---------------------------------------------------------------------------------------------
# Scoring once per session


@functools.cache
def _tiny(seed: int, n_items: int, recall: int, page: int) -> tuple[World, Simulator, Scorer, Scorer]:
    config = WorldConfig(
        seed=seed,
        n_items=n_items,
        n_users=60,
        n_categories=8,
        brands_per_category=4,
        recall_size=recall,
        logging_coarse_size=max(page, recall // 5),
        page_size=page,
        i2i_neighbors=10,
    )
    world = World(config)
    features = FeatureStore.from_world(world)
    torch.manual_seed(seed)
    coarse = CoarseModelScorer(CoarseRanker(CoarseConfig(dim=4, mlp_scorer=True), vocab_of(config)), features)
    fine = FineModelScorer(
        FineRanker(FineConfig(dim=4, attention_hidden=4, hidden=(8,)), vocab_of(config)), features
    )
    return world, Simulator(world), coarse, fine


worlds = st.tuples(
    st.integers(0, 3), st.sampled_from([800, 1500]), st.sampled_from([60, 150, 300]), st.sampled_from([3, 10])
)


@settings(max_examples=12, deadline=None)
@given(world=worlds, coarse_share=st.floats(0.05, 1.2), day=st.integers(0, 3))
def test_session_scored_pages_equal_per_page_rescoring(world, coarse_share, day):
    """``run_sessions`` (scores kept per session) shows, page for page, what ``Cascade.rank``
    computes afresh from the same batch."""
    world, sim, coarse, fine = _tiny(*world)
    c = world.config
    cascade = Cascade(
        coarse, fine, CascadeSizes(max(c.page_size, round(coarse_share * c.recall_size)), c.page_size)
    )
    checked = []

    def checking(batch):
        got = cascade(batch)
        expected = cascade.rank(batch.keys.user, batch.recall.items, batch.shown)
        for name in ("slots", "page", "page_scores", "coarse_items", "coarse_slots"):
            np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)
        checked.append(len(batch))
        return got

    run_sessions(sim, checking, SessionKeys.of(np.arange(c.n_users), day=day))
    assert len(checked) > 1  # later pages were compared too


@settings(max_examples=10, deadline=None)
@given(
    world=worlds, coarse_share=st.floats(0.05, 1.2), shares=st.lists(st.floats(0, 1), min_size=1, max_size=5)
)
def test_session_scores_with_arbitrary_exclusions(world, coarse_share, shares):
    """Growing random excluded sets (not only what was shown) give the reference pages."""
    world, sim, coarse, fine = _tiny(*world)
    c = world.config
    cascade = Cascade(
        coarse, fine, CascadeSizes(max(c.page_size, round(coarse_share * c.recall_size)), c.page_size)
    )
    batch = sim.start(SessionKeys.of(np.arange(20), day=1))
    rng = np.random.default_rng(len(shares))
    with session_scores():
        for share in shares:
            batch.shown |= rng.random(batch.shown.shape) < share * 0.5
            got = cascade(batch)
            expected = cascade.rank(batch.keys.user, batch.recall.items, batch.shown)
            np.testing.assert_array_equal(got.page, expected.page)
            np.testing.assert_array_equal(got.page_scores, expected.page_scores)
            np.testing.assert_array_equal(got.coarse_items, expected.coarse_items)


def test_session_scored_pages_do_not_depend_on_the_batch():
    """Sessions run together (their scoring stacked into shared calls) or alone: same pages."""
    _, sim, coarse, fine = _tiny(1, 1500, 150, 10)
    cascade = Cascade(coarse, fine, CascadeSizes(30, 10))
    keys = SessionKeys.of(np.arange(30), day=2)
    together = run_sessions(sim, cascade, keys)
    for b in (0, 11, 29):
        alone = run_sessions(sim, cascade, keys.take(np.array([b])))
        np.testing.assert_array_equal(alone.first_coarse_items[0], together.first_coarse_items[b])
        for name in ("pages", "clicks", "purchases", "gmv", "expected_clicks"):
            assert getattr(alone.totals, name)[0] == getattr(together.totals, name)[b], name


def test_a_score_can_depend_on_the_call_it_is_computed_in(small_world, features):
    """Why the fine stage scores canonical chunks: a float32 model's score of an item changes
    (by an ulp) with the other items of its call and its position there."""
    torch.manual_seed(0)
    fine = FineModelScorer(FineRanker(FineConfig(), vocab_of(small_world.config)), features)
    items = np.random.default_rng(0).permutation(small_world.config.n_items)[None, :2000]
    user = np.array([3])
    whole = fine.score(user, items)[0]
    parts = np.concatenate([fine.score(user, items[:, lo : lo + n])[0] for lo, n in PARTS])
    alone = np.concatenate([whole[lo : lo + n] for lo, n in PARTS])
    np.testing.assert_allclose(parts, alone, rtol=1e-6)  # the same scores up to rounding...
    np.testing.assert_array_equal(fine.score(user, items)[0], whole)  # the same call is
    if not (parts != alone).any():  # ...but not bit for bit, on most machines: the kernels torch
        # picks (and their summation order) are its choice, and on the machine of 2026-12-07
        # (AVX-512) every call summed alike, in CI and alone
        pytest.skip("this run's kernels scored every call bit for bit alike")


PARTS = [(lo, n) for n in (1, 7, 10, 33, 600, 610) for lo in (0, 5, 900)]
"""(offset, length) of the calls compared with one call over all items."""


def test_session_cache_is_bounded():
    cache = SessionCache(2)
    for key in "abc":
        cache.put(key, key)
    assert cache.get("a") is None and cache.get("c") == "c" and len(cache) == 2


# ---------------------------------------------------------------------------------------------
# Scores on the session's day (tastes drift)


@pytest.fixture(scope="module")
def drift_world() -> World:
    return World(SMALL.replace(taste_drift=1.0))


class _DayOracle:
    """The world's expected clicks on each request's day: a scorer with ``score_on_day``."""

    version = "day-oracle"

    def __init__(self, world: World) -> None:
        self.world = world

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        raise AssertionError("a scorer with score_on_day is called with the day")

    def score_on_day(self, users: np.ndarray, items: np.ndarray, days: np.ndarray) -> np.ndarray:
        return expected_value(self.world, users, items, day=days)


def test_a_day_scorer_ranks_each_session_on_its_day(drift_world):
    sim, scorer = Simulator(drift_world), _DayOracle(drift_world)
    cascade = Cascade(scorer, scorer, CascadeSizes(coarse=50, page=drift_world.config.page_size))
    keys = SessionKeys.of(np.arange(150), day=np.arange(150) % 3)
    sessions = run_sessions(sim, cascade, keys)
    static = run_static(sim, keys, lambda b: oracle_scores(drift_world, b.keys, b.recall.items))
    for name in ("pages", "impressions", "clicks", "purchases", "gmv"):
        np.testing.assert_array_equal(getattr(sessions.totals, name), getattr(static, name), err_msg=name)
    # the per-page reference and the served stages rank on the day too, and the day matters
    recall = sim.start(keys).recall.items
    page = cascade.rank(keys.user, recall, days=keys.day).page
    best = np.argsort(-drift_world.click_logits(keys.user, recall, keys.day), axis=1, kind="stable")
    np.testing.assert_array_equal(page, np.take_along_axis(recall, best[:, : page.shape[1]], axis=1))
    day0 = cascade.rank(keys.user, recall).page
    later = keys.day > 0
    assert (page[later] != day0[later]).any(axis=1).mean() > 0.5
    assert (page[~later] == day0[~later]).all()
    coarse = CoarseStage(scorer, 50).run(keys.user, recall, np.empty((len(keys), 0), np.int64), days=keys.day)
    served = FineStage(scorer, page.shape[1]).run(keys.user, coarse, days=keys.day)
    np.testing.assert_array_equal(served.items, page)


def test_the_oracle_ranks_by_the_requests_day_under_drift(drift_world):
    oracle = load_scorer("oracle", drift_world, FeatureStore.from_world(drift_world), "coarse")
    keys = SessionKeys.of(np.arange(100), day=1)
    recall = Simulator(drift_world).start(keys).recall.items
    order = np.argsort(-stage_scores(oracle, keys.user, recall, keys.day), axis=1, kind="stable")
    for day, same in ((0, False), (1, True)):
        logits = drift_world.click_logits(keys.user, recall, day)
        assert np.array_equal(order, np.argsort(-logits, axis=1, kind="stable")) is same, day
