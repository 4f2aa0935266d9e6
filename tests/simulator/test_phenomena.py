"""Issue 13's phenomena: each knob, when on, changes what it documents and nothing else;
determinism and shard invariance hold with all of them on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from policies.data import load_logs
from policies.features import FeatureStore
from simulator import SMALL, SessionKeys, Simulator, World
from simulator.describe import baseline_scores, logit_parts, logit_variance_shares, phenomena_figures
from simulator.logs import out_of_scene_purchases, write_logs
from simulator.oracle import Objective, expected_value
from simulator.segments import SHORT_DWELL_S, accidental_looking_share, user_segments
from simulator.session import run_static
from simulator.world import fine_signal

ALL_ON = SMALL.replace(
    field_interaction_std=0.8,
    taste_saturation=0.5,
    budget_penalty=1.0,
    history_dwell_separation=2.0,
    history_noise_popular=0.5,
    history_noise_spread=0.15,
    conversion_std=1.0,
    conversion_price_lift=0.8,
    taste_drift=0.4,
    arrival_days=3,
    new_user_share_per_day=0.05,
    new_item_share_per_day=0.2,
    fine_signal_std=1.0,
)
USERS = np.arange(0, SMALL.n_users, 5)
ITEMS = np.arange(0, SMALL.n_items, 4)


@pytest.fixture(scope="module")
def world_on() -> World:
    return World(ALL_ON)


def _one_knob(**knob) -> World:
    return World(SMALL.replace(**knob))


def _additive_fit_residual_share(y: np.ndarray, *factors: np.ndarray) -> float:
    """Share of y's variance an additive model in the factors' dummies leaves unexplained."""
    columns = [np.ones((len(y), 1))] + [np.eye(f.max() + 1)[f][:, 1:] for f in factors]
    x = np.concatenate(columns, axis=1)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return float(np.var(y - x @ coef) / np.var(y))


def test_field_interaction_is_a_cross_of_fields_that_no_additive_field_model_explains(small_world) -> None:
    w = _one_knob(field_interaction_std=0.8)
    shift = (w.item_quality - small_world.item_quality).astype(np.float64)
    assert 0.6 < shift.std() < 1.0  # ~0.8 from 200 + 2,000 table cells
    cell = w.item_brand.astype(np.int64) * 10 + w.item_price_bucket
    _, inverse = np.unique(cell, return_inverse=True)
    spread_in_cell = (
        np.bincount(inverse, shift**2) / np.bincount(inverse)
        - (np.bincount(inverse, shift) / np.bincount(inverse)) ** 2
    )
    assert spread_in_cell.max() < 1e-8  # a function of (brand, price level) only
    fields = (
        w.item_category.astype(np.int64),
        w.item_brand.astype(np.int64),
        w.item_price_bucket.astype(np.int64),
    )
    assert _additive_fit_residual_share(shift, *fields) > 0.5
    # the click logit moves by the field part (histories follow the new appeal, so the sequence
    # term is held at the off world's to isolate it); items and popularity are unchanged
    w.recent_clean_unit = small_world.recent_clean_unit
    z_on, z_off = w.click_logits(USERS, ITEMS), small_world.click_logits(USERS, ITEMS)
    np.testing.assert_allclose(z_on - z_off, np.broadcast_to(shift[ITEMS], z_on.shape), atol=1e-5)
    np.testing.assert_array_equal(w.item_vec, small_world.item_vec)
    np.testing.assert_array_equal(w.item_popularity, small_world.item_popularity)


def test_taste_saturation_and_budget_penalty_follow_their_formulas(small_world) -> None:
    taste = small_world.user_vec[USERS] @ small_world.item_vec[ITEMS].T
    z_off = small_world.click_logits(USERS, ITEMS).astype(np.float64)
    sat = _one_knob(taste_saturation=0.5).click_logits(USERS, ITEMS)
    np.testing.assert_allclose(sat - z_off, taste / (1 + 0.5 * np.abs(taste)) - taste, atol=1e-5)
    w = _one_knob(budget_penalty=1.0)
    over = np.maximum(w.item_log_price[ITEMS][None, :] - w.user_log_budget[USERS][:, None], 0.0)
    np.testing.assert_allclose(w.click_logits(USERS, ITEMS) - z_off, -over, atol=1e-5)
    assert (over > 0).mean() > 0.1  # a real threshold, hit by many pairs
    assert np.corrcoef(w.user_log_budget, w.user_price_sensitivity)[0, 1] < -0.3


def test_fine_signal_adds_a_unit_variance_pair_term_keyed_by_user_and_item_only(small_world) -> None:
    w = _one_knob(fine_signal_std=0.7)
    f = fine_signal(SMALL.seed, USERS, ITEMS).astype(np.float64)  # (400, 1250) independent pairs
    np.testing.assert_allclose(
        w.click_logits(USERS, ITEMS) - small_world.click_logits(USERS, ITEMS), 0.7 * f, atol=1e-5
    )
    # mean 0 and variance 1: 5 standard errors (the logistic's kurtosis is 4.2: var's se sqrt(3.2 / n))
    assert abs(f.mean()) < 5 / np.sqrt(f.size)
    assert abs(f.var() - 1) < 5 * np.sqrt(3.2 / f.size)
    # independent of users' tastes and the day, and the same for a pair in any batch or form
    taste = small_world.user_vec[USERS] @ small_world.item_vec[ITEMS].T
    assert abs(np.corrcoef(f.ravel(), taste.ravel())[0, 1]) < 5 / np.sqrt(f.size)
    per_user = np.broadcast_to(ITEMS[::7], (len(USERS), len(ITEMS[::7])))
    np.testing.assert_array_equal(fine_signal(SMALL.seed, USERS, per_user), f[:, ::7].astype(np.float32))
    np.testing.assert_array_equal(fine_signal(SMALL.seed, USERS[3:4], ITEMS), f[3:4].astype(np.float32))
    np.testing.assert_array_equal(
        w.click_logits(USERS, per_user, day=2) - w.click_logits(USERS, per_user, day=0),
        small_world.click_logits(USERS, per_user, day=2) - small_world.click_logits(USERS, per_user, day=0),
    )
    assert not np.array_equal(fine_signal(SMALL.seed + 1, USERS[:5], ITEMS), f[:5].astype(np.float32))


def test_describe_measures_the_within_user_order_a_dot_product_stand_in_misses() -> None:
    budget = {
        k: phenomena_figures(_one_knob(budget_penalty=k))["budget_best_linear_price_within_user_tau"]
        for k in (1, 4)
    }
    assert 0 < budget[4] < budget[1] < 1  # a sharper threshold: more order no linear price term keeps
    saturation = phenomena_figures(_one_knob(taste_saturation=2.0))
    assert "budget_best_linear_price_within_user_tau" not in saturation
    assert 0 < saturation["saturation_best_dot_within_user_tau"] < 1


def test_describe_gives_the_fine_signal_its_share_of_the_within_user_logit_variance(small_world) -> None:
    # f has unit variance and is independent of the rest, so its share is s^2 / (s^2 + v), v the
    # within-user variance without it; v estimated on other pairs (200 users x 500 items: its
    # relative standard error is a few %, which moves the share by < 0.02; 0.03 allowed)
    rng = np.random.default_rng(1)
    users = rng.choice(SMALL.n_users, 200, replace=False)
    items = rng.choice(SMALL.n_items, 500, replace=False)
    v = small_world.click_logits(users, items).astype(np.float64).var(axis=1).mean()
    assert "fine_signal_within_user_variance_share" not in phenomena_figures(_one_knob(taste_saturation=1.0))
    for s in (0.5, 1.5):
        share = phenomena_figures(_one_knob(fine_signal_std=s))["fine_signal_within_user_variance_share"]
        assert abs(share - s**2 / (s**2 + v)) < 0.03


@pytest.mark.parametrize("on", [False, True], ids=["knobs off", "all on"])
def test_the_logit_parts_sum_to_the_click_logit(small_world, world_on, on) -> None:
    world = world_on if on else small_world
    keys = SessionKeys.of(USERS[:40])
    recall = Simulator(world).recall(keys).items
    parts = logit_parts(world, keys.user, recall)
    z = world.click_logits(keys.user, recall, 0).astype(np.float64)
    np.testing.assert_allclose(sum(parts.values()) + world.config.click_intercept, z, atol=1e-4)
    assert (parts["fine_signal"] == 0).all() != on and (parts["taste"] != 0).any()
    shares = logit_variance_shares(world, keys.user, recall)
    assert set(shares) == {f"{name}_share" for name in parts}
    assert (shares["fine_signal_share"] == 0) != on and shares["taste_share"] > 0


def test_taste_drift_moves_the_taste_term_by_the_stated_std_per_day(small_world) -> None:
    drift = 0.4
    w = _one_knob(taste_drift=drift)
    items = np.random.default_rng(0).integers(0, SMALL.n_items, 200)
    users = np.arange(SMALL.n_users)
    t0 = w.taste_vectors(users, 0) @ w.item_vec[items].T
    np.testing.assert_array_equal(w.taste_vectors(users, 0), small_world.user_vec)
    for day, steps in ((1, 1), (2, 2)):
        change = w.taste_vectors(users, day) @ w.item_vec[items].T - t0
        per_user = (change**2).mean(axis=1)  # users are independent: 5 standard errors
        tolerance = 5 * per_user.std() / np.sqrt(len(users)) / per_user.mean()
        assert abs(per_user.mean() / (steps * drift**2) - 1) < tolerance, day
    # a user's day-1 logits (the per-user form sessions use) are the same alone or in a batch
    per_user = np.broadcast_to(items, (50, len(items)))
    z1 = w.click_logits(users[:50], per_user, day=1)
    alone = np.concatenate([w.click_logits(users[i : i + 1], per_user[i : i + 1], day=1) for i in range(50)])
    np.testing.assert_array_equal(z1, alone)
    # sessions: day 0 is the off world's, day 1 is not
    oracle_off, oracle_on = baseline_scores(small_world)["oracle"], baseline_scores(w)["oracle"]
    for day, same in ((0, True), (1, False)):
        keys = SessionKeys.of(users[:100], day=day)
        off = run_static(Simulator(small_world), keys, oracle_off).expected_clicks
        on = run_static(Simulator(w), keys, oracle_on).expected_clicks
        assert np.array_equal(on, off) == same, day
    mixed = w.taste_vectors(users[:4], np.array([0, 1, 2, 1]))
    np.testing.assert_array_equal(mixed[2], w.taste_vectors(users[2:3], 2)[0])


def test_dwell_times_identify_accidental_behaviours(small_world) -> None:
    sep = 2.0
    w = _one_knob(history_dwell_separation=sep)
    np.testing.assert_array_equal(w.history, small_world.history)  # same sequences, new side information
    assert small_world.history_dwell is None
    log_dwell = np.log(w.history_dwell)
    clean, noise = log_dwell[w.history_clean], log_dwell[~w.history_clean]
    gap = clean.mean() - noise.mean()
    assert abs(gap - sep) < 5 * np.sqrt(1 / clean.size + 1 / noise.size)
    short = w.history_dwell < SHORT_DWELL_S
    assert short[~w.history_clean].mean() > 3 * short[w.history_clean].mean()


def test_popular_noise_moves_a_share_of_the_accidental_behaviours_onto_popular_items() -> None:
    base = _one_knob(history_dwell_separation=2.0)
    w = _one_knob(history_dwell_separation=2.0, history_noise_popular=0.5)
    clean = base.history_clean
    np.testing.assert_array_equal(w.history_clean, clean)  # the same slips, the same dwell
    np.testing.assert_array_equal(w.history_dwell, base.history_dwell)
    np.testing.assert_array_equal(w.history[clean], base.history[clean])
    moved = w.history[~clean] != base.history[~clean]
    n = moved.size
    # half the slips are redrawn by popularity; a redraw hits the old item with chance < 1e-3
    assert abs(moved.mean() - 0.5) < 5 * np.sqrt(0.25 / n) + 1e-3
    top = base.popularity_rank < SMALL.n_items // 100  # the top 1 % of items
    assert abs(top[base.history[~clean]].mean() - 0.01) < 5 * np.sqrt(0.01 / n)  # uniform slips
    expected = base.item_popularity[top].sum()  # the popularity mass of the top 1 %
    popular_share = top[w.history[~clean][moved]].mean()
    assert abs(popular_share - expected) < 5 * np.sqrt(expected * (1 - expected) / moved.sum())
    described = phenomena_figures(w)["accidental_share_on_top1pct_items"]  # half uniform, half popular
    mixed = 0.5 * 0.01 + 0.5 * expected
    assert abs(described - mixed) < 5 * np.sqrt(mixed * (1 - mixed) / n)
    assert "accidental_share_on_top1pct_items" not in phenomena_figures(base)


def test_noise_spread_gives_users_their_own_accidental_share(small_world) -> None:
    w = _one_knob(history_noise_spread=0.15)
    share = w.user_noise_share
    n = len(share)
    assert abs(share.mean() - SMALL.history_noise) < 5 * 0.15 / np.sqrt(n)
    assert abs(share.std() / 0.15 - 1) < 0.1
    realised = 1 - w.history_clean.mean(axis=1)
    # binomial noise of 50 behaviours (var ~0.16/50) against the shares' var 0.0225: corr ~0.94
    assert np.corrcoef(realised, share)[0, 1] > 0.7
    np.testing.assert_array_equal(small_world.user_noise_share, SMALL.history_noise)


def test_conversion_knobs_make_a_gmv_aware_page_trade_clicks_for_gmv(small_world) -> None:
    def trade(world: World) -> tuple[float, float]:
        """GMV gain and click loss of the top 10 by expected GMV against the top 10 by clicks."""
        keys = SessionKeys.of(USERS)
        recall = Simulator(world).recall(keys).items
        clicks = expected_value(world, keys.user, recall)
        gmv = expected_value(world, keys.user, recall, Objective.GMV)
        by_clicks = np.argsort(-clicks, axis=1)[:, :10]
        by_gmv = np.argsort(-gmv, axis=1)[:, :10]
        page = lambda v, top: np.take_along_axis(v, top, 1).sum()  # noqa: E731
        return page(gmv, by_gmv) / page(gmv, by_clicks) - 1, 1 - page(clicks, by_gmv) / page(
            clicks, by_clicks
        )

    w = _one_knob(conversion_std=1.0, conversion_price_lift=0.8)
    y_off = small_world.purchase_logits(USERS, ITEMS, small_world.click_logits(USERS, ITEMS))
    y_on = w.purchase_logits(USERS, ITEMS, w.click_logits(USERS, ITEMS))
    lift = 0.8 * (w.item_log_price[ITEMS] - w.log_price_ref) + w.item_conversion[ITEMS]
    np.testing.assert_allclose(y_on - y_off, np.broadcast_to(lift, y_on.shape), atol=1e-5)
    gain_off, loss_off = trade(small_world)
    gain_on, loss_on = trade(w)
    assert gain_on > 2 * gain_off and loss_on > loss_off


def test_arrivals_follow_their_shares_and_nothing_arrives_early(world_on: World) -> None:
    w, c = world_on, ALL_ON
    for day in range(1, c.arrival_days + 1):
        share = (w.user_arrival_day == day).mean()
        p = c.new_user_share_per_day
        assert abs(share - p) < 5 * np.sqrt(p * (1 - p) / c.n_users), day
    assert (w.item_arrival_day[~w.item_is_new] == 0).all()
    late = w.item_arrival_day > 0
    p = c.new_item_share_per_day * c.arrival_days
    assert abs(late[w.item_is_new].mean() - p) < 5 * np.sqrt(p * (1 - p) / w.item_is_new.sum())
    sim = Simulator(w)
    for day in range(c.arrival_days + 1):
        items = sim.recall(SessionKeys.of(USERS, day=day)).items
        assert (w.item_arrival_day[items] <= day).all(), day
        assert (np.sort(items, axis=1)[:, 1:] != np.sort(items, axis=1)[:, :-1]).all()
        _, bought = out_of_scene_purchases(w, np.arange(c.n_users), day)
        assert (w.item_arrival_day[bought] <= day).all(), day
    day3 = sim.recall(SessionKeys.of(USERS, day=3)).items
    assert (w.item_arrival_day[day3] == 3).any()  # late items do get recalled once they arrive


def test_logs_start_on_each_users_arrival_day_and_carry_dwell(world_on: World, tmp_path) -> None:
    out = write_logs(world_on, tmp_path / "logs", n_users=400, days=3, progress=False)
    data = load_logs(out)
    first_day = data.samples.groupby("user_id")["day"].min()
    arrival = world_on.user_arrival_day[first_day.index.to_numpy()]
    assert (first_day.to_numpy() >= arrival).all()
    assert (arrival > 0).any() and (first_day.to_numpy() == arrival).all()
    np.testing.assert_array_equal(data.history_dwell.numpy(), world_on.history_dwell[:400])
    store = FeatureStore.from_world(world_on)
    np.testing.assert_array_equal(store.history_dwell.numpy(), world_on.history_dwell)


def test_all_knobs_on_world_is_deterministic_and_shard_invariant(world_on: World) -> None:
    again = World(ALL_ON)
    for name in (
        "item_quality",
        "item_conversion",
        "user_log_budget",
        "history",
        "history_dwell",
        "item_arrival_day",
    ):
        np.testing.assert_array_equal(getattr(again, name), getattr(world_on, name), err_msg=name)
    keys = SessionKeys.of(USERS[:60], day=np.arange(60) % 4)
    sim = Simulator(world_on)
    for name, score in baseline_scores(world_on).items():
        whole = run_static(sim, keys, score)
        parts = [run_static(sim, keys.take(slice(lo, lo + 17)), score) for lo in range(0, 60, 17)]
        for field, value in vars(whole).items():
            if field == "exact":  # not computed here
                continue
            np.testing.assert_array_equal(
                value, np.concatenate([getattr(p, field) for p in parts]), f"{name} {field}"
            )


def test_segments_from_logs_and_sequences(world_on: World, small_log_dir) -> None:
    samples = pd.read_parquet(small_log_dir / "samples.parquet")
    logged = samples[samples.user_id < 1_500]
    seg = user_segments(world_on, np.arange(SMALL.n_users), logged)
    assert (seg.activity[seg.user_id >= 1_500] == "unlogged").all()
    heavy = seg.activity == "heavy"
    assert 0.3 < heavy[seg.user_id < 1_500].mean() < 0.7
    pages = logged[logged.page >= 0].groupby("user_id")["page"].nunique()
    assert pages[seg.user_id[heavy]].min() >= pages[seg.user_id[seg.activity == "light"]].max()
    # mindful users have truly fewer accidental behaviours (dwell identifies them)
    true_share = 1 - world_on.history_clean.mean(axis=1)
    assert true_share[seg.mindful].mean() < 0.6 * true_share[~seg.mindful].mean()
    # a user's labels do not depend on who else is asked
    some = np.array([5, 1_600, 77, 3])
    np.testing.assert_array_equal(
        user_segments(world_on, some, logged).to_numpy(),
        seg.set_index("user_id").loc[some].reset_index().to_numpy(),
    )
    np.testing.assert_array_equal(seg.arrival_day, world_on.user_arrival_day)


def test_mindful_falls_back_to_off_category_behaviours_without_dwell(small_world) -> None:
    w = _one_knob(history_noise_spread=0.15)
    share = accidental_looking_share(w)
    true_share = 1 - w.history_clean.mean(axis=1)
    assert np.corrcoef(share, true_share)[0, 1] > 5 / np.sqrt(len(share))  # 5 sigma above no relation
    with pytest.raises(ValueError, match="user ids"):
        user_segments(small_world, np.array([SMALL.n_users]))
