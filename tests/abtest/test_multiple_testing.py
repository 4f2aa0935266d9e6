"""Holm and Benjamini–Hochberg adjusted p-values.

The reference runs each procedure as first defined — reject at level α, for every candidate
α — and reads off the smallest α that rejects each hypothesis, which is the definition of an
adjusted p-value. The adjusted values are all of the form min(1, c·p) with the procedure's
multipliers c, so these candidates are enough.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from abtest import benjamini_hochberg, holm

pvalue_lists = st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=12)


def holm_rejects(p: np.ndarray, alpha: float) -> np.ndarray:
    """Holm at level α: walk up the sorted p-values, reject while p₍ₖ₎·(m − k + 1) ≤ α."""
    m = len(p)
    rejected = np.zeros(m, dtype=bool)
    for k, i in enumerate(np.argsort(p, kind="stable")):
        if p[i] * (m - k) > alpha:
            break
        rejected[i] = True
    return rejected


def bh_rejects(p: np.ndarray, alpha: float) -> np.ndarray:
    """BH at level α: reject the k smallest, k the largest rank with p₍ₖ₎·(m/k) ≤ α.

    (m/k)·p is the same floating-point product as the candidate levels, so ties compare equal.
    """
    m = len(p)
    order = np.argsort(p, kind="stable")
    passing = [k for k in range(1, m + 1) if p[order[k - 1]] * (m / k) <= alpha]
    rejected = np.zeros(m, dtype=bool)
    rejected[order[: max(passing, default=0)]] = True
    return rejected


def brute_force(p: np.ndarray, rejects, multipliers: np.ndarray) -> np.ndarray:
    candidates = np.unique(np.minimum(1.0, np.outer(multipliers, p)).ravel())
    out = np.ones(len(p))
    for alpha in candidates[::-1]:  # from large to small: the last level that rejects wins
        out[rejects(p, alpha)] = alpha
    return out


@given(pvalue_lists)
def test_holm_matches_the_step_down_procedure(pvalues: list[float]) -> None:
    p = np.array(pvalues)
    m = len(p)
    expected = brute_force(p, holm_rejects, np.arange(1, m + 1, dtype=float))
    np.testing.assert_allclose(holm(p), expected, rtol=1e-12)


@given(pvalue_lists)
def test_bh_matches_the_step_up_procedure(pvalues: list[float]) -> None:
    p = np.array(pvalues)
    m = len(p)
    expected = brute_force(p, bh_rejects, m / np.arange(1, m + 1))
    np.testing.assert_allclose(benjamini_hochberg(p), expected, rtol=1e-12)


@pytest.mark.parametrize("adjust", [holm, benjamini_hochberg])
@given(pvalues=pvalue_lists)
def test_adjustment_keeps_the_order_and_never_lowers_a_pvalue(adjust, pvalues: list[float]) -> None:
    p = np.array(pvalues)
    adjusted = adjust(p)
    assert ((adjusted >= p) & (adjusted <= 1)).all()
    order = np.argsort(p, kind="stable")
    assert (np.diff(adjusted[order]) >= 0).all()


def test_known_values() -> None:
    # By hand (agrees with statsmodels' multipletests 'holm' / 'fdr_bh'):
    # p sorted = 0.01, 0.02, 0.03, 0.04, 0.05 with m = 5.
    # Holm: 5·0.01 = 0.05, 4·0.02 = 0.08, 3·0.03 = 0.09, 2·0.04 = 0.08 → 0.09, 1·0.05 → 0.09.
    # BH:   5·p/k = 0.05 for every k.
    p = np.array([0.04, 0.01, 0.05, 0.02, 0.03])
    np.testing.assert_allclose(holm(p), [0.09, 0.05, 0.09, 0.08, 0.09])
    np.testing.assert_allclose(benjamini_hochberg(p), [0.05] * 5)
    # p = 0.001, 0.04, 0.2 with m = 3. Holm: 0.003, 2·0.04 = 0.08, 0.2 → 0.2.
    # BH: 3·0.001 = 0.003, 3·0.04/2 = 0.06, 3·0.2/3 = 0.2.
    q = np.array([0.2, 0.001, 0.04])
    np.testing.assert_allclose(holm(q), [0.2, 0.003, 0.08])
    np.testing.assert_allclose(benjamini_hochberg(q), [0.2, 0.003, 0.06])


@pytest.mark.parametrize("adjust", [holm, benjamini_hochberg])
@pytest.mark.parametrize("bad", [[0.1, np.nan], [1.5], [[0.1, 0.2]]])
def test_invalid_pvalues_are_rejected(adjust, bad) -> None:
    with pytest.raises(ValueError, match="pvalues"):
        adjust(bad)
