"""Interleaved traffic and its preference test: credit adds up to the sessions' totals, rows do
not depend on the batch, an A/A interleave is calibrated, the oracle beats popularity, and the
sample sizes reach their power."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from abtest.interleave import CREDIT_METRICS, preferences, run_interleaved, user_credit
from abtest.stats import interleave_test, paired_users_needed, sign_test_users
from policies.cascade import Cascade, CascadeSizes
from policies.rankers import OracleScorer, PopularityScorer, RandomScorer
from simulator import SessionKeys

ALPHA = 0.05


@pytest.fixture(scope="module")
def cascades(small_world) -> dict[str, Cascade]:
    sizes = CascadeSizes(coarse=50, page=small_world.config.page_size)
    oracle = OracleScorer(small_world)
    return {
        "popularity": Cascade(PopularityScorer(small_world), oracle, sizes),
        "oracle": Cascade(oracle, oracle, sizes),
        "random": Cascade(RandomScorer(1), oracle, sizes),
    }


def _arms(cascades, *names):
    return {name: cascades[name] for name in names}


def test_credit_adds_up_to_the_sessions_totals(small_sim, cascades):
    keys = SessionKeys.of(np.arange(300), day=1)
    arms = _arms(cascades, "popularity", "oracle", "random")
    sessions = run_interleaved(small_sim, arms, keys, seed=4, exact=True)
    assert sessions["purchases"].sum() > 0
    for metric in CREDIT_METRICS:
        credited = sessions[[f"{metric}_{arm}" for arm in ("popularity", "oracle", "random")]].sum(axis=1)
        np.testing.assert_allclose(credited, sessions[metric], rtol=1e-6)


def test_rows_do_not_depend_on_the_batch(small_sim, cascades):
    users = np.arange(120)
    keys = SessionKeys(np.concatenate([users, users]), np.repeat([0, 1], 120), np.zeros(240, np.int64))
    arms = _arms(cascades, "popularity", "oracle")
    whole = run_interleaved(small_sim, arms, keys, seed=9)
    parts = [
        run_interleaved(small_sim, arms, keys.take(rows), seed=9)
        for rows in (np.arange(239, 100, -1), np.arange(101))
    ]
    together = pd.concat(parts).sort_values(["day", "user"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(together, whole.sort_values(["day", "user"]).reset_index(drop=True))
    per_user = user_credit(whole)
    assert per_user["days"].eq(2).all() and len(per_user) == 120
    np.testing.assert_allclose(per_user["clicks_oracle"].sum(), whole["clicks_oracle"].sum())


def test_the_oracle_coarse_ranker_beats_popularity(small_sim, cascades):
    users = user_credit(
        run_interleaved(
            small_sim, _arms(cascades, "popularity", "oracle"), SessionKeys.of(np.arange(300)), seed=1
        )
    )
    pref = preferences(users, "popularity", "oracle")
    result = interleave_test(users["clicks_oracle"], users["clicks_popularity"])
    assert result.wins == (pref["preference"] > 0).sum() and result.share_lo > 0.5
    assert result.sign_pvalue < 1e-3 and result.difference_lo > 0
    three = user_credit(
        run_interleaved(small_sim, cascades, SessionKeys.of(np.arange(300)), seed=1)  # multileaving
    )
    clicks = three[[f"clicks_{arm}" for arm in cascades]].sum()
    assert clicks.idxmax() == "clicks_oracle"


@pytest.mark.parametrize(
    ("runs", "n_users"),
    [(60, 100), pytest.param(400, 200, marks=pytest.mark.slow)],
)
def test_an_aa_interleave_is_calibrated(small_sim, cascades, runs, n_users):
    """One ranking under two labels, ``runs`` independent runs (another seed and day each).
    A test of size alpha rejects a Binomial(runs, alpha) number of times, so the false-positive
    rate has standard deviation sigma = sqrt(alpha (1 - alpha) / runs); it must lie within
    alpha +- 3 sigma (a correct test fails this check with probability ~0.3 %). The exact sign
    test has size <= alpha (discreteness), still inside the band at these sizes."""
    arm = cascades["random"]
    sign, t = [], []
    for run in range(runs):
        keys = SessionKeys.of(np.arange(n_users), day=run)
        users = user_credit(run_interleaved(small_sim, {"a": arm, "b": arm}, keys, seed=1000 + run))
        result = interleave_test(users["clicks_b"], users["clicks_a"], ALPHA)
        sign.append(result.sign_pvalue < ALPHA)
        t.append(result.t_pvalue < ALPHA)
    sigma = math.sqrt(ALPHA * (1 - ALPHA) / runs)
    for rejected in (sign, t):
        assert ALPHA - 3 * sigma <= np.mean(rejected) <= ALPHA + 3 * sigma


def test_interleave_test_statistics():
    rng = np.random.default_rng(3)
    control, treatment = rng.poisson(1.0, 500).astype(float), rng.poisson(1.2, 500).astype(float)
    result = interleave_test(treatment, control)
    diff = treatment - control
    assert result.t_pvalue == pytest.approx(stats.ttest_1samp(diff, 0.0).pvalue, rel=1e-9)
    assert result.difference_lo < diff.mean() < result.difference_hi
    assert result.share_lo < result.share < result.share_hi
    swapped = interleave_test(control, treatment)
    assert swapped.share == pytest.approx(1 - result.share) and swapped.sign_pvalue == pytest.approx(
        result.sign_pvalue
    )
    ties = np.ones(200)  # tied users leave the sign test unchanged
    padded = interleave_test(np.concatenate([treatment, ties]), np.concatenate([control, ties]))
    assert padded.sign_pvalue == result.sign_pvalue and padded.ties == result.ties + 200
    all_tied = interleave_test(ties, ties)
    assert all_tied.sign_pvalue == 1.0 and math.isnan(all_tied.share) and math.isnan(all_tied.t_pvalue)
    with pytest.raises(ValueError):
        interleave_test(treatment, control[:-1])


def _sign_test_power(n: int, win_share: float, tie_share: float) -> float:
    """Exact power of the two-sided exact binomial test at level ALPHA with n users."""
    power = 0.0
    for m in range(1, n + 1):
        w = np.arange(m + 1)
        pvalue = np.minimum(1.0, 2 * np.minimum(stats.binom.cdf(w, m, 0.5), stats.binom.sf(w - 1, m, 0.5)))
        power += (
            stats.binom.pmf(m, n, 1 - tie_share) * stats.binom.pmf(w, m, win_share)[pvalue <= ALPHA].sum()
        )
    return power


@pytest.mark.parametrize(("win_share", "tie_share"), [(0.6, 0.4), (0.45, 0.2), (0.56, 0.5)])
def test_sign_test_users_reach_their_power(win_share, tie_share):
    """At >= ~150 non-tied users, where the normal approximation holds (at fewer, the exact
    test's discreteness and the spread of the non-tied count cost a few points of power)."""
    n = sign_test_users(win_share, tie_share, ALPHA, 0.8)
    assert _sign_test_power(n, win_share, tie_share) == pytest.approx(0.8, abs=0.03)


@pytest.mark.parametrize(("mean", "std"), [(0.1, 1.0), (-0.3, 2.0)])
def test_paired_users_needed_reach_their_power(mean, std):
    n = paired_users_needed(mean, std, ALPHA, 0.8)
    q = stats.t.ppf(1 - ALPHA / 2, n - 1)
    power = stats.nct.sf(q, n - 1, abs(mean) * math.sqrt(n) / std) + stats.nct.cdf(
        -q, n - 1, abs(mean) * math.sqrt(n) / std
    )
    assert power == pytest.approx(0.8, abs=0.01)
