"""The ground-truth world: deterministic construction, the documented click model."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from simulator import SMALL, World
from simulator.world import AliasTable, sigmoid

users_st = st.lists(st.integers(0, SMALL.n_users - 1), min_size=1, max_size=8)
items_st = st.lists(st.integers(0, SMALL.n_items - 1), min_size=1, max_size=12)


def test_same_config_builds_an_identical_world(small_world: World) -> None:
    again = World(SMALL)
    for name in ("item_vec", "item_quality", "item_price", "item_popularity", "user_vec", "history", "i2i"):
        np.testing.assert_array_equal(getattr(again, name), getattr(small_world, name), err_msg=name)


def test_another_seed_builds_another_world(small_world: World) -> None:
    other = World(SMALL.replace(seed=1))
    assert not np.array_equal(other.history, small_world.history)
    assert not np.array_equal(other.item_price, small_world.item_price)


def test_items_are_stored_contiguously_by_category(small_world: World) -> None:
    w = small_world
    for k in range(SMALL.n_categories):
        assert (w.item_category[w.cat_start[k] : w.cat_end[k]] == k).all()
    assert w.cat_start[0] == 0 and w.cat_end[-1] == SMALL.n_items


def test_every_brand_owns_an_item_of_its_category(small_world: World) -> None:
    w = small_world
    n_brands = SMALL.n_categories * SMALL.brands_per_category
    assert (np.bincount(w.item_brand, minlength=n_brands) > 0).all()
    assert (w.item_brand // SMALL.brands_per_category == w.item_category).all()


def test_new_items_have_the_configured_share_and_rank_last_in_popularity(small_world: World) -> None:
    w = small_world
    n_new = round(SMALL.new_item_share * SMALL.n_items)
    assert w.item_is_new.sum() == n_new
    assert (w.popularity_rank[w.item_is_new] >= SMALL.n_items - n_new).all()


def test_popularity_is_zipf_over_its_rank(small_world: World) -> None:
    w = small_world
    assert np.isclose(w.item_popularity.sum(), 1.0)
    ratio = w.item_popularity[w.popularity_rank == 0][0] / w.item_popularity
    np.testing.assert_allclose(ratio, (w.popularity_rank + 1.0) ** SMALL.popularity_exponent, rtol=1e-9)


def test_accidental_history_share_matches_history_noise(small_world: World) -> None:
    """Each behaviour is accidental with probability history_noise (binomial, 5 sigma)."""
    n = small_world.history_clean.size
    eps = SMALL.history_noise
    assert abs((1 - small_world.history_clean.mean()) - eps) < 5 * np.sqrt(eps * (1 - eps) / n)


def test_recent_clean_holds_the_last_clean_behaviours(small_world: World) -> None:
    w = small_world
    for u in range(0, SMALL.n_users, 97):
        clean = w.history[u][w.history_clean[u]][-SMALL.seq_window :]
        recent = w.recent_clean[u][w.recent_clean[u] >= 0]
        np.testing.assert_array_equal(recent, clean)


@given(users_st, items_st)
def test_click_logits_match_the_documented_formula(small_world: World, users: list, items: list) -> None:
    """z_ui = a + <w_u, v_i> + gamma*seqsim + q_i - beta_u*(log p_i - ref) + nu_u*new_i, pair by pair."""
    w, c = small_world, SMALL
    users_a, items_a = np.array(users), np.array(items)
    z = w.click_logits(users_a, items_a)
    for b, u in enumerate(users):
        recent = w.recent_clean[u][w.recent_clean[u] >= 0]
        for r, i in enumerate(items):
            v = w.item_vec[i].astype(np.float64)
            cos = [v @ w.item_vec[j] / np.linalg.norm(v) / np.linalg.norm(w.item_vec[j]) for j in recent]
            expected = (
                c.click_intercept
                + w.user_vec[u].astype(np.float64) @ v
                + c.seq_gamma * max(0.0, max(cos, default=0.0))
                + w.item_quality[i]
                - w.user_price_sensitivity[u] * (w.item_log_price[i] - w.log_price_ref)
                + w.user_new_affinity[u] * w.item_is_new[i]
            )
            assert np.isclose(z[b, r], expected, rtol=1e-4, atol=1e-4)


@given(users_st, items_st)
def test_shared_and_per_user_item_forms_give_the_same_logits(
    small_world: World, users: list, items: list
) -> None:
    users_a, items_a = np.array(users), np.array(items)
    shared = small_world.click_logits(users_a, items_a)
    per_user = small_world.click_logits(users_a, np.broadcast_to(items_a, (len(users), len(items))))
    np.testing.assert_allclose(per_user, shared, rtol=1e-5, atol=1e-5)


@settings(deadline=None, max_examples=20)
@given(
    st.sampled_from([0.8, 5.0, 50.0]),
    st.sampled_from([-5.0, 0.0, 30.0]),
    st.integers(0, 1000),
)
def test_click_and_purchase_probabilities_lie_in_unit_interval(
    taste_scale: float, intercept: float, seed: int
) -> None:
    """Even with extreme logits (large taste scale, extreme intercepts)."""
    world = World(
        SMALL.replace(n_items=600, n_users=50, recall_size=100, taste_scale=taste_scale, seed=seed).replace(
            click_intercept=intercept
        )
    )
    users = np.arange(50)
    items = np.arange(600)
    z = world.click_logits(users, items)
    with np.errstate(over="ignore"):
        p_click = sigmoid(z)
        p_buy = sigmoid(world.purchase_logits(users, items, z))
    for p in (p_click, p_buy):
        assert not np.isnan(p).any()
        assert ((p >= 0) & (p <= 1)).all()


@given(st.lists(st.integers(0, 200), min_size=1, max_size=30))
def test_examination_is_one_at_the_top_and_decays_within_unit_interval(
    small_world: World, positions: list
) -> None:
    pos = np.sort(np.array(positions))
    rho = small_world.examination(pos)
    assert ((rho > 0) & (rho <= 1)).all()
    assert (np.diff(rho) <= 0).all()
    assert small_world.examination(np.array([0]))[0] == 1.0


@given(st.lists(st.integers(0, SMALL.n_categories - 1), min_size=1, max_size=20), st.data())
def test_sample_in_category_stays_in_its_category(small_world: World, cats: list, data) -> None:
    u = np.array(
        data.draw(st.lists(st.floats(0, 1, exclude_max=True), min_size=len(cats), max_size=len(cats)))
    )
    items = small_world.sample_in_category(np.array(cats), u)
    np.testing.assert_array_equal(small_world.item_category[items], cats)


def test_sample_in_category_follows_popularity(small_world: World) -> None:
    w = small_world
    k = int(np.argmax(w.cat_end - w.cat_start))
    lo, hi = w.cat_start[k], w.cat_end[k]
    u = np.random.default_rng(0).random(200_000)
    counts = np.bincount(w.sample_in_category(np.full(len(u), k), u) - lo, minlength=hi - lo)
    p = w.item_popularity[lo:hi] / w.item_popularity[lo:hi].sum()
    top = np.argsort(-p)[:20]  # the well-populated cells; the rest pooled
    observed = np.append(counts[top], counts.sum() - counts[top].sum())
    expected = len(u) * np.append(p[top], 1 - p[top].sum())
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_sample_categories_follow_user_preference(small_world: World) -> None:
    w = small_world
    user = 17
    u = np.random.default_rng(0).random((1, 100_000))
    counts = np.bincount(w.sample_categories(np.array([user]), u)[0], minlength=SMALL.n_categories)
    p = np.diff(np.concatenate([[0.0], w.user_category_cdf[user]]))
    assert counts[p == 0].sum() == 0
    keep = p * u.size >= 5  # chi-square cells need >= 5 expected draws; the rest are pooled
    observed = np.append(counts[keep], counts[~keep].sum())
    expected = u.size * np.append(p[keep], p[~keep].sum())
    nonempty = expected > 0
    assert stats.chisquare(observed[nonempty], expected[nonempty]).pvalue > 1e-3


def test_alias_table_samples_its_distribution() -> None:
    p = np.random.default_rng(3).dirichlet(np.ones(12))
    table = AliasTable(p)
    g = np.random.default_rng(4)
    n = 200_000
    counts = np.bincount(table.sample(g.random(n), g.random(n)), minlength=len(p))
    assert stats.chisquare(counts, n * p / p.sum()).pvalue > 1e-3


def test_item_table_exposes_no_latent_truth(small_world: World) -> None:
    table = small_world.item_table()
    assert set(table) == {"item_id", "category", "brand", "price", "price_bucket", "is_new"}
    assert all(len(v) == SMALL.n_items for v in table.values())
    np.testing.assert_array_equal(np.bincount(table["price_bucket"]), np.full(10, SMALL.n_items // 10))
