"""The oracle: true expected values, the best ranking, and funnel loss."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import SMALL, SessionKeys, Simulator, World
from simulator.describe import baseline_scores
from simulator.oracle import best_in_pool, expected_value, funnel_loss
from simulator.session import page_order, run_static

K = SMALL.page_size


def _first_page_expected_clicks(sim: Simulator, keys: SessionKeys, policy: str) -> np.ndarray:
    batch = sim.start(keys)
    return sim.show(batch, page_order(baseline_scores(sim.world)[policy](batch), K)).expected_clicks


@pytest.mark.parametrize("other", ["random", "popularity"])
def test_oracle_first_page_has_the_most_expected_clicks_in_every_session(
    small_sim: Simulator, some_keys: SessionKeys, other: str
) -> None:
    """Sorting by sigma(z) maximises sum_k rho_k sigma(z_k) over K-subsets of the recall set."""
    oracle = _first_page_expected_clicks(small_sim, some_keys, "oracle")
    baseline = _first_page_expected_clicks(small_sim, some_keys, other)
    assert (oracle >= baseline - 1e-6).all()
    assert (oracle > baseline).mean() > 0.99  # and strictly better almost always


def test_oracle_first_page_beats_any_reordering_of_its_items(
    small_sim: Simulator, some_keys: SessionKeys
) -> None:
    """Rearrangement inequality: the best items best-first beat them shuffled."""
    batch = small_sim.start(some_keys)
    slots = page_order(baseline_scores(small_sim.world)["oracle"](batch), K)
    shuffled = np.random.default_rng(0).permuted(slots, axis=1)
    best = small_sim.show(batch, slots).expected_clicks
    again = small_sim.start(some_keys)
    assert (best >= small_sim.show(again, shuffled).expected_clicks - 1e-6).all()


def test_oracle_expected_clicks_per_page_do_not_increase(
    small_sim: Simulator, some_keys: SessionKeys
) -> None:
    """Static oracle order: page p holds ranks pK..pK+K-1, so each page is worth at most the last."""
    batch = small_sim.start(some_keys)
    order = page_order(baseline_scores(small_sim.world)["oracle"](batch), 5 * K)
    previous = np.full(len(some_keys), np.inf)
    for page in range(5):
        batch.active[:] = True
        out = small_sim.show(batch, order[:, page * K : (page + 1) * K])
        assert (out.expected_clicks <= previous + 1e-6).all()
        previous = out.expected_clicks


def test_oracle_total_expected_clicks_per_page_beat_random(
    small_sim: Simulator, some_keys: SessionKeys
) -> None:
    totals = {
        name: run_static(small_sim, some_keys, score)
        for name, score in baseline_scores(small_sim.world).items()
    }
    per_page = {name: t.expected_clicks.sum() / t.pages.sum() for name, t in totals.items()}
    assert per_page["oracle"] > per_page["popularity"] and per_page["oracle"] > per_page["random"]


users_st = st.lists(st.integers(0, SMALL.n_users - 1), min_size=1, max_size=6)
items_st = st.lists(st.integers(0, SMALL.n_items - 1), min_size=1, max_size=20)


@given(users_st, items_st)
def test_expected_clicks_lie_in_unit_interval(small_world: World, users: list, items: list) -> None:
    value = expected_value(small_world, np.array(users), np.array(items), "clicks")
    assert ((value >= 0) & (value <= 1)).all()


@given(users_st, items_st)
def test_expected_purchases_are_at_most_expected_clicks(small_world: World, users: list, items: list) -> None:
    u, i = np.array(users), np.array(items)
    clicks = expected_value(small_world, u, i, "clicks")
    purchases = expected_value(small_world, u, i, "purchases")
    assert ((purchases >= 0) & (purchases <= clicks)).all()


@given(users_st, items_st)
def test_expected_gmv_prices_expected_purchases(small_world: World, users: list, items: list) -> None:
    u, i = np.array(users), np.array(items)
    gmv = expected_value(small_world, u, i, "gmv")
    np.testing.assert_allclose(
        gmv, expected_value(small_world, u, i, "purchases") * small_world.item_price[i]
    )
    assert (gmv >= 0).all()


@pytest.mark.parametrize("objective", ["clicks", "purchases", "gmv"])
def test_best_in_pool_finds_the_top_values_of_the_whole_pool(small_world: World, objective: str) -> None:
    users = np.arange(0, SMALL.n_users, 200)
    everything = expected_value(small_world, users, np.arange(SMALL.n_items), objective)
    top_values = -np.sort(-everything, axis=1)[:, :10]
    best = best_in_pool(small_world, users, 10, objective, chunk=777)  # chunks that straddle the top
    np.testing.assert_allclose(np.take_along_axis(everything, best, axis=1), top_values, rtol=1e-12)
    assert all(len(set(row)) == 10 for row in best.tolist())


def test_best_in_pool_leaves_out_items_that_have_not_arrived() -> None:
    world = World(SMALL.replace(arrival_days=3, new_item_share_per_day=0.3, new_item_effect_std=3.0))
    users = np.arange(0, SMALL.n_users, 50)
    late = world.item_arrival_day > 0
    assert late.any()
    for day in range(4):
        best = best_in_pool(world, users, 20, day=np.full(len(users), day))
        assert (world.item_arrival_day[best] <= day).all()
    everything = expected_value(world, users, np.arange(SMALL.n_items))
    assert late[np.argsort(-everything, axis=1)[:, :20]].any()  # late items would be chosen otherwise


@st.composite
def funnels(draw):
    """Random best items and nested stage sets (each stage a subset of the one before)."""
    n_items = draw(st.integers(5, 60))
    rows = draw(st.integers(1, 6))
    k = draw(st.integers(1, min(5, n_items)))
    n_stages = draw(st.integers(1, 3))
    widths = sorted(
        draw(st.lists(st.integers(1, n_items), min_size=n_stages, max_size=n_stages)), reverse=True
    )
    best, stages = [], [[] for _ in range(n_stages)]
    for _ in range(rows):
        best.append(draw(st.permutations(range(n_items)))[:k])
        current = draw(st.permutations(range(n_items)))
        for s, width in enumerate(widths):
            current = current[:width]
            stages[s].append(draw(st.permutations(current)))
    return np.array(best), [np.array(stage) for stage in stages]


def _brute_force_loss(best: np.ndarray, stages: list[np.ndarray]) -> list[float]:
    """Share of best items first missing at each stage, then the share kept by all."""
    lost = [0] * (len(stages) + 1)
    for b, row in enumerate(best.tolist()):
        for item in row:
            missing_at = [s for s, stage in enumerate(stages) if item not in set(stage[b].tolist())]
            lost[missing_at[0] if missing_at else len(stages)] += 1
    return [n / best.size for n in lost]


@settings(max_examples=100)
@given(funnels())
def test_funnel_loss_matches_brute_force_sets(funnel) -> None:
    best, stages = funnel
    loss = funnel_loss(best, stages)
    assert list(loss) == [*["recall", "coarse", "fine"][: len(stages)], "kept"]
    np.testing.assert_allclose(list(loss.values()), _brute_force_loss(best, stages), atol=1e-12)


@settings(max_examples=100)
@given(funnels())
def test_funnel_loss_shares_sum_to_one(funnel) -> None:
    assert np.isclose(sum(funnel_loss(*funnel).values()), 1.0)


def test_funnel_loss_of_a_stage_that_passes_nothing_is_total() -> None:
    best = np.array([[1, 2], [3, 4]])
    assert funnel_loss(best, [np.empty((2, 0), dtype=np.int64)]) == {"recall": 1.0, "kept": 0.0}
