"""The sample-ratio-mismatch gate."""

from __future__ import annotations

import numpy as np
import pytest

from abtest import Assignment, srm_test

USERS = np.arange(100_000)


def test_a_correct_split_passes() -> None:
    counts = np.bincount(Assignment("srm", ("A", "B"), (0.5, 0.5)).assign(USERS))
    result = srm_test(counts, (0.5, 0.5))
    # A correct split fails the 0.001 gate with probability 0.001; these salts are fixed.
    assert result.passed and result.pvalue >= result.threshold == 0.001


def test_a_51_49_split_trips_the_gate() -> None:
    arms = Assignment("srm", ("A", "B"), (0.5, 0.5)).assign(USERS)
    # A logging bug loses 4 % of treatment users: ≈ 50,000 vs 48,000, i.e. 51/49.
    lost = (arms == 1) & (np.random.default_rng(0).random(len(USERS)) < 0.04)
    counts = np.bincount(arms[~lost])
    result = srm_test(counts, (0.5, 0.5))
    # χ² ≈ 2000² / 98,000 ≈ 41 on 1 df, p ≈ 1e-10: far below the threshold.
    assert not result.passed and result.chi2 > 30


def test_unequal_designed_shares_are_respected() -> None:
    counts = np.bincount(Assignment("srm", ("A", "B", "C"), (0.2, 0.3, 0.5)).assign(USERS))
    assert srm_test(counts, (0.2, 0.3, 0.5)).passed
    assert not srm_test(counts, (1 / 3, 1 / 3, 1 / 3)).passed


@pytest.mark.parametrize(
    ("counts", "shares"),
    [
        ([10], [1.0]),
        ([10, 10], [0.5, 0.3, 0.2]),
        ([-1, 10], [0.5, 0.5]),
        ([0, 0], [0.5, 0.5]),
        ([5, 5], [0.6, 0.6]),
    ],
)
def test_invalid_input_is_rejected(counts: list[int], shares: list[float]) -> None:
    with pytest.raises(ValueError):
        srm_test(counts, shares)
