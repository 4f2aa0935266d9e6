"""abtest.stats.paired_lift: the paired t-test (scipy.stats.ttest_rel) for the absolute effect,
the delta method for the relative lift, intervals that cover at their level."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from abtest.stats import paired_lift

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
