"""The session engine: deterministic, shard-independent, never shows an item twice."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import SMALL, SessionKeys, Simulator, World
from simulator.describe import baseline_scores
from simulator.session import (
    PageOutcome,
    SessionBatch,
    SessionTotals,
    page_order,
    page_slots,
    run_pages,
    run_static,
)
from simulator.world import sigmoid

K = SMALL.page_size
R = SMALL.recall_size


def _assert_totals_equal(actual: SessionTotals, expected: SessionTotals) -> None:
    for field in dataclasses.fields(SessionTotals):
        np.testing.assert_array_equal(
            getattr(actual, field.name), getattr(expected, field.name), err_msg=field.name
        )


@pytest.mark.parametrize("policy", ["random", "popularity", "oracle"])
def test_run_static_is_reproducible(small_sim: Simulator, some_keys: SessionKeys, policy: str) -> None:
    score = baseline_scores(small_sim.world)[policy]
    _assert_totals_equal(run_static(small_sim, some_keys, score), run_static(small_sim, some_keys, score))


def test_separately_built_worlds_give_identical_sessions(
    small_sim: Simulator, some_keys: SessionKeys
) -> None:
    other = Simulator(World(SMALL))
    first = run_static(small_sim, some_keys, baseline_scores(small_sim.world)["random"])
    second = run_static(other, some_keys, baseline_scores(other.world)["random"])
    _assert_totals_equal(second, first)
    assert first.clicks.sum() > 0  # the comparison covers real outcomes


def test_another_world_seed_gives_other_sessions(small_sim: Simulator, some_keys: SessionKeys) -> None:
    other = Simulator(World(SMALL.replace(seed=1)))
    first = run_static(small_sim, some_keys, baseline_scores(small_sim.world)["random"])
    second = run_static(other, some_keys, baseline_scores(other.world)["random"])
    assert not np.array_equal(first.pages, second.pages)


SHARD_KEYS = SessionKeys.of(np.arange(0, 2_000, 50), day=np.arange(40) % 3, session=np.arange(40) % 2)


@pytest.fixture(scope="module")
def one_batch(small_sim: Simulator) -> dict[str, SessionTotals]:
    return {
        name: run_static(small_sim, SHARD_KEYS, score)
        for name, score in baseline_scores(small_sim.world).items()
        if name in ("random", "oracle")
    }


@settings(deadline=None, max_examples=20)
@given(st.integers(1, 6), st.permutations(range(len(SHARD_KEYS))), st.sampled_from(["random", "oracle"]))
def test_sharded_sessions_equal_one_batch(
    small_sim: Simulator, one_batch: dict[str, SessionTotals], k: int, perm: list, policy: str
) -> None:
    score = baseline_scores(small_sim.world)[policy]
    perm = np.array(perm)
    shards = np.array_split(perm, k)
    parts = [run_static(small_sim, SHARD_KEYS.take(shard), score) for shard in shards]
    order = np.argsort(np.concatenate(shards))
    fields = ("pages", "clicks", "purchases", "gmv", "impressions", "expected_clicks", "new_impressions")
    for field in (*fields, "new_clicks"):
        combined = np.concatenate([getattr(p, field) for p in parts])[order]
        np.testing.assert_array_equal(combined, getattr(one_batch[policy], field), err_msg=field)


def _fresh(sim: Simulator, n: int = 4):
    return sim.start(SessionKeys.of(np.arange(n) * 7, session=3))


def test_a_slot_repeated_on_a_page_is_shown_once(small_sim: Simulator) -> None:
    batch = _fresh(small_sim, 1)
    slots = np.array([[5, 5, 9, 5, 9, 1, 2, 3, 4, 0]])
    out = small_sim.show(batch, slots)
    expected = np.where([[1, 0, 1, 0, 0, 1, 1, 1, 1, 1]], batch.recall.items[0, slots[0]], -1)
    np.testing.assert_array_equal(out.items, expected)


def test_a_slot_shown_on_an_earlier_page_is_left_empty(small_sim: Simulator) -> None:
    batch = _fresh(small_sim, 1)
    batch.active[:] = True
    small_sim.show(batch, np.arange(K)[None, :])
    batch.active[:] = True  # keep the session going whatever the user chose
    out = small_sim.show(batch, np.arange(K // 2, K // 2 + K)[None, :])
    assert (out.items[0, : K - K // 2] == -1).all()
    np.testing.assert_array_equal(out.items[0, K - K // 2 :], batch.recall.items[0, K : K + K // 2])


@settings(deadline=None, max_examples=30)
@given(st.lists(st.lists(st.integers(-1, 14), min_size=K, max_size=K), min_size=1, max_size=6))
def test_show_never_shows_an_item_twice_in_a_session(small_sim: Simulator, pages: list) -> None:
    """Against a reference model: a position is filled iff the session is active and its
    slot is new to the session (earlier pages and earlier positions of this page)."""
    batch = _fresh(small_sim, 3)
    seen: list[set[int]] = [set() for _ in range(len(batch))]
    shown_items: list[list[int]] = [[] for _ in range(len(batch))]
    for page in pages:
        active = batch.active.copy()
        slots = np.array([page, page[::-1], np.roll(page, 3)])
        out = small_sim.show(batch, slots)
        for b in range(len(batch)):
            for pos, slot in enumerate(slots[b]):
                fresh = bool(active[b]) and slot >= 0 and slot not in seen[b]
                assert out.items[b, pos] == (batch.recall.items[b, slot] if fresh else -1)
                if fresh:
                    seen[b].add(int(slot))
                    shown_items[b].append(int(out.items[b, pos]))
            assert len(shown_items[b]) == len(set(shown_items[b]))
            assert set(np.flatnonzero(batch.shown[b]).tolist()) == seen[b]


@pytest.mark.parametrize(
    "slots",
    [
        pytest.param(np.full((2, K), R), id="slot==recall_size"),
        pytest.param(np.full((2, K), -2), id="slot<-1"),
        pytest.param(np.zeros((2, K + 1), dtype=int), id="too-many-positions"),
        pytest.param(np.zeros((3, K), dtype=int), id="too-many-sessions"),
        pytest.param(np.zeros(K, dtype=int), id="one-dimensional"),
    ],
)
def test_show_rejects_invalid_slots(small_sim: Simulator, slots: np.ndarray) -> None:
    batch = _fresh(small_sim, 2)
    with pytest.raises(ValueError, match="slots"):
        small_sim.show(batch, slots)
    assert (batch.pages == 0).all() and not batch.shown.any()  # nothing happened


def test_ended_sessions_see_nothing(small_sim: Simulator) -> None:
    batch = _fresh(small_sim, 2)
    batch.active[1] = False
    out = small_sim.show(batch, np.tile(np.arange(K), (2, 1)))
    assert (out.items[1] == -1).all() and not out.clicks[1].any() and out.gmv[1] == 0
    assert out.expected_clicks[1] == 0
    assert not out.viewed[1] and not out.terminated[1] and not out.truncated[1]
    assert batch.pages.tolist() == [1, 0]


def test_clicks_and_purchases_need_a_shown_item_and_gmv_prices_the_purchases(
    small_sim: Simulator, some_keys: SessionKeys
) -> None:
    batch = small_sim.start(some_keys)
    order = page_order(baseline_scores(small_sim.world)["oracle"](batch), 3 * K)
    slots = order.copy()
    slots[:, 1::3] = -1  # leave some positions empty
    purchases = 0
    for page in range(3):
        out = small_sim.show(batch, slots[:, page * K : (page + 1) * K])
        assert not (out.clicks & (out.items < 0)).any()
        assert not (out.purchases & ~out.clicks).any()
        prices = np.where(out.purchases, small_sim.world.item_price[np.maximum(out.items, 0)], 0.0)
        np.testing.assert_allclose(out.gmv, prices.sum(axis=1), rtol=1e-6)
        purchases += out.purchases.sum()
    assert purchases > 0


def test_clicks_match_their_probability(small_sim: Simulator) -> None:
    """Total clicks on a first page ~ Poisson-binomial with the page's expected clicks (5 sigma)."""
    keys = SessionKeys.of(np.arange(SMALL.n_users))
    batch = small_sim.start(keys)
    slots = page_order(baseline_scores(small_sim.world)["oracle"](batch), K)
    w = small_sim.world
    z = w.click_logits(keys.user, np.take_along_axis(batch.recall.items, slots, 1))
    p = small_sim.examination * sigmoid(z.astype(np.float64))
    out = small_sim.show(batch, slots)
    np.testing.assert_allclose(out.expected_clicks, p.sum(axis=1), rtol=1e-5)
    assert abs(out.clicks.sum() - p.sum()) < 5 * np.sqrt((p * (1 - p)).sum())


def test_purchases_given_clicks_match_their_probability(small_sim: Simulator) -> None:
    """Conditioned on the clicks drawn, purchases ~ Poisson-binomial (5 sigma)."""
    keys = SessionKeys.of(
        np.repeat(np.arange(SMALL.n_users), 3), session=np.tile(np.arange(3), SMALL.n_users)
    )
    batch = small_sim.start(keys)
    slots = page_order(baseline_scores(small_sim.world)["oracle"](batch), K)
    out = small_sim.show(batch, slots)
    w = small_sim.world
    rows, pos = np.nonzero(out.clicks)
    items = out.items[rows, pos][:, None]
    users = keys.user[rows]
    q = sigmoid(w.purchase_logits(users, items, w.click_logits(users, items)).astype(np.float64))[:, 0]
    assert len(q) > 1_000
    assert abs(out.purchases.sum() - q.sum()) < 5 * np.sqrt((q * (1 - q)).sum())


def test_same_item_same_position_gets_the_same_click_in_two_arms(small_sim: Simulator) -> None:
    """Common random numbers: A/B arms differing elsewhere on the page share the coin flip."""
    keys = SessionKeys.of(np.arange(SMALL.n_users))
    arm_a, arm_b = small_sim.start(keys), small_sim.start(keys)
    oracle = baseline_scores(small_sim.world)["oracle"]
    slots_a = page_order(oracle(arm_a), K)
    slots_b = slots_a.copy()
    slots_b[:, 1:] = slots_a[:, 1:][:, ::-1]  # same top item, the rest reversed
    out_a, out_b = small_sim.show(arm_a, slots_a), small_sim.show(arm_b, slots_b)
    np.testing.assert_array_equal(out_a.clicks[:, 0], out_b.clicks[:, 0])
    np.testing.assert_array_equal(out_a.purchases[:, 0], out_b.purchases[:, 0])
    assert out_a.clicks[:, 0].any() and not np.array_equal(out_a.clicks, out_b.clicks)


def test_sessions_end_within_max_pages() -> None:
    """Under the oracle many sessions are long; none exceeds max_pages."""
    world = World(SMALL.replace(max_pages=4))
    sim = Simulator(world)
    totals = run_static(sim, SessionKeys.of(np.arange(500)), baseline_scores(world)["oracle"])
    assert totals.pages.max() == 4 and totals.pages.min() >= 1


def test_truncation_and_termination_are_exclusive_and_final() -> None:
    world = World(SMALL.replace(max_pages=3, continue_intercept=3.0))
    sim = Simulator(world)
    batch = sim.start(SessionKeys.of(np.arange(300)))
    ended = np.zeros(300, dtype=bool)
    for page in range(3):
        out = sim.show(batch, np.tile(np.arange(page * K, (page + 1) * K), (300, 1)))
        assert not (out.terminated & out.truncated).any()
        assert not (out.viewed & ended).any()
        assert (out.truncated == (out.viewed & ~out.terminated & (page == 2))).all()
        ended |= out.terminated | out.truncated
    assert ended.all() and not batch.active.any()


@pytest.mark.parametrize("policy", ["random", "popularity", "oracle"])
def test_new_item_totals_count_the_new_items_on_the_pages_shown(small_sim: Simulator, policy: str) -> None:
    """new_impressions / new_clicks equal a count, slot by slot, of the pages ``observe`` saw."""
    world = small_sim.world
    score = baseline_scores(world)[policy]
    keys = SessionKeys.of(np.arange(0, world.config.n_users, 3), day=1)
    batch = small_sim.start(keys)
    order = page_order(score(batch), world.config.max_pages * world.config.page_size)
    counted = {"new_impressions": np.zeros(len(keys)), "new_clicks": np.zeros(len(keys))}

    def observe(rows: np.ndarray, out: PageOutcome) -> None:
        for j, row in enumerate(rows):
            for item, click in zip(out.items[j], out.clicks[j], strict=True):
                if item >= 0 and world.item_is_new[item]:
                    counted["new_impressions"][row] += 1
                    counted["new_clicks"][row] += click

    def choose(_: SessionBatch, page: int, rows: np.ndarray) -> np.ndarray:
        return page_slots(order[rows], page, world.config.page_size)

    totals = run_pages(small_sim, batch, choose, observe)
    for name, values in counted.items():
        np.testing.assert_array_equal(getattr(totals, name), values, err_msg=name)
    assert (totals.new_clicks <= totals.clicks).all() and (totals.new_impressions <= totals.impressions).all()
    if policy == "random":  # new items are shown at all: the count is not trivially zero
        assert totals.new_impressions.sum() > 0 and totals.new_clicks.sum() > 0
