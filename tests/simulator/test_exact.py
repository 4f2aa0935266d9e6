"""Exact session totals (``simulator.session.ExactTotals``): the continue probability is the
Poisson-binomial average, the realised sessions are untouched by computing them, they do not
depend on the batch, and they are Rao-Blackwellised - the same means as the realised totals
with less variance."""

from __future__ import annotations

import itertools
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import SMALL, SessionKeys, World
from simulator.session import Simulator, run_static, stay_probability
from simulator.world import sigmoid


def _popularity(batch) -> np.ndarray:
    return -batch.recall.items.astype(np.float64)  # a fixed ranking: by item id


def _random(batch) -> np.ndarray:
    return np.random.default_rng(0).random(batch.recall.items.shape)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=7))
def test_stay_probability_is_the_average_over_every_click_pattern(small_world, p) -> None:
    c = small_world.config
    p_click = np.array([p])
    stay, none = stay_probability(small_world, p_click)
    brute_stay = brute_none = 0.0
    for pattern in itertools.product((0, 1), repeat=len(p)):
        prob = math.prod(q if hit else 1 - q for q, hit in zip(p, pattern, strict=True))
        logit = c.continue_intercept + c.continue_slope * sum(p) + c.continue_click_bonus * sum(pattern)
        brute_stay += prob * float(sigmoid(np.array(logit)))
        brute_none += prob * (sum(pattern) == 0)
    assert stay[0] == pytest.approx(brute_stay, abs=1e-12)
    assert none[0] == pytest.approx(brute_none, abs=1e-12)


@pytest.mark.parametrize("score", [_popularity, _random])
def test_computing_the_exact_totals_leaves_the_realised_sessions_alone(small_sim, some_keys, score) -> None:
    plain = run_static(small_sim, some_keys, score)
    exact = run_static(small_sim, some_keys, score, exact=True)
    assert plain.exact is None and exact.exact is not None
    names = ("pages", "impressions", "clicks", "purchases", "gmv", "expected_clicks", "log_no_click")
    for name in (*names, "new_impressions", "new_clicks"):
        np.testing.assert_array_equal(getattr(plain, name), getattr(exact, name), err_msg=name)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 40))
def test_exact_totals_do_not_depend_on_the_batch(small_sim, seed, n) -> None:
    users = np.random.default_rng(seed).choice(small_sim.world.config.n_users, n, replace=False)
    keys = SessionKeys.of(users, day=2)
    together = run_static(small_sim, keys, _popularity, exact=True).exact
    half = n // 2
    parts = [
        run_static(small_sim, keys.take(np.arange(lo, hi)), _popularity, exact=True).exact
        for lo, hi in ((0, half), (half, n))
        if hi > lo
    ]
    for name in ("pages", "clicks", "purchases", "gmv", "clicked", "new_impressions", "new_clicks"):
        joined = np.concatenate([getattr(p, name) for p in parts])
        np.testing.assert_allclose(joined, getattr(together, name), rtol=1e-12, err_msg=name)


def test_exact_totals_are_the_realised_totals_in_expectation(small_sim) -> None:
    """Over 4,000 sessions (200 users x 20 sessions), E[realised - exact] = 0 for every total
    (Rao-Blackwell: exact = E[realised | user, recall set]); the mean difference must lie within
    4 of its standard errors (a correct implementation fails with probability ~6e-5 per total),
    and the exact totals vary less than the realised ones."""
    users = np.repeat(np.arange(200), 20)
    keys = SessionKeys(users, np.full(len(users), 3), np.tile(np.arange(20), 200))
    t = run_static(small_sim, keys, _random, exact=True)  # random: shows new items, unlike popularity
    assert t.new_clicks.sum() > 0
    realised = {
        "pages": t.pages,
        "impressions": t.impressions,
        "clicks": t.clicks,
        "purchases": t.purchases,
        "clicked": (t.clicks > 0).astype(float),
        "new_impressions": t.new_impressions,
        "new_clicks": t.new_clicks,
    }
    for name, values in realised.items():
        exact = getattr(t.exact, name)
        diff = values - exact
        se = diff.std(ddof=1) / math.sqrt(len(diff))
        assert abs(diff.mean()) <= 4 * se, name
        assert exact.var() < values.var(), name
    assert (t.exact.pages >= 1).all() and (t.exact.pages <= small_sim.world.config.max_pages).all()
    assert ((t.exact.clicked >= 0) & (t.exact.clicked <= 1)).all()


def test_exact_totals_stay_unbiased_with_every_phenomenon_on_under_a_strong_ranking() -> None:
    """The feed world's phenomena (drift, arrivals, dwell, conversion, saturation, budgets) at
    the small world's sizes, ranked by the true click logit of the session's day (many clicks
    per page, so the click-dependent continue term matters): over 8,000 sessions on a day after
    every arrival, E[realised - exact] = 0 within 4 standard errors for every total."""
    feed = tomllib.loads((Path(__file__).parents[2] / "configs" / "world_feed.toml").read_text())["world"]
    # The phenomena of the feed world, with a click intercept of its own so that the test keeps
    # its many clicks per session whatever intercept the feed's calibration settles on.
    world = World(SMALL.replace(**(feed | {"click_intercept": -5.0})))
    sim = Simulator(world)

    def oracle(batch) -> np.ndarray:
        return world.click_logits(batch.keys.user, batch.recall.items, batch.keys.day)

    users = np.repeat(np.arange(200), 40)
    keys = SessionKeys(users, np.full(len(users), 9), np.tile(np.arange(40), 200))
    t = run_static(sim, keys, oracle, exact=True)
    assert t.clicks.mean() > 1.5  # a strong ranking: the continue term sees clicks
    realised = {
        "pages": t.pages,
        "clicks": t.clicks,
        "purchases": t.purchases,
        "clicked": (t.clicks > 0) * 1.0,
    }
    for name, values in realised.items():
        diff = values - getattr(t.exact, name)
        assert abs(diff.mean()) <= 4 * diff.std(ddof=1) / math.sqrt(len(diff)), name
