"""Assignment: deterministic, order-free, shares respected, layers orthogonal.

Statistical checks use p > 1e-4 on fixed salts: each is one deterministic draw of a p-value
that is Uniform(0, 1) if hashing is sound, so a correct implementation fails a check with
probability 1e-4 (once, for these salts) while a biased one fails it every time.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from common.assignment import Assignment, user_buckets

USERS = np.arange(100_000)


def test_buckets_lie_in_range_and_are_uniform() -> None:
    buckets = user_buckets("exp", USERS, n_buckets=100)
    assert buckets.dtype == np.int64
    assert buckets.min() >= 0 and buckets.max() < 100
    assert stats.chisquare(np.bincount(buckets, minlength=100)).pvalue > 1e-4


def test_assignment_is_deterministic() -> None:
    a = Assignment("exp", ("control", "treatment"), (0.5, 0.5))
    b = Assignment("exp", ("control", "treatment"), (0.5, 0.5))
    assert np.array_equal(a.assign(USERS), b.assign(USERS))


@given(hnp.arrays(np.int64, st.integers(1, 200), elements=st.integers(0, 2**62)), st.randoms())
def test_assignment_is_independent_of_order_and_batch(users: np.ndarray, random) -> None:
    a = Assignment("exp", ("a", "b", "c"), (0.2, 0.3, 0.5))
    whole = a.assign(users)
    perm = np.array(random.sample(range(len(users)), len(users)), dtype=np.int64)
    assert np.array_equal(a.assign(users[perm]), whole[perm])
    cut = random.randint(0, len(users))
    assert np.array_equal(np.concatenate([a.assign(users[:cut]), a.assign(users[cut:])]), whole)
    assert a.arm_of(int(users[0])) == a.arms[whole[0]]


def test_shares_are_respected() -> None:
    shares = (0.5, 0.3, 0.2)
    counts = np.bincount(Assignment("exp", ("a", "b", "c"), shares).assign(USERS), minlength=3)
    assert stats.chisquare(counts, f_exp=np.array(shares) * len(USERS)).pvalue > 1e-4


def test_layers_are_independent() -> None:
    # Same salt in two layers: the arm in one layer must carry no information about the other.
    first = Assignment("exp", ("a", "b"), (0.5, 0.5), layer="ranking").assign(USERS)
    second = Assignment("exp", ("a", "b", "c"), (0.4, 0.4, 0.2), layer="ui").assign(USERS)
    table = np.zeros((2, 3))
    np.add.at(table, (first, second), 1)
    assert stats.chi2_contingency(table).pvalue > 1e-4


def test_a_new_salt_reassigns_users() -> None:
    old = Assignment("exp-1", ("a", "b"), (0.5, 0.5)).assign(USERS)
    new = Assignment("exp-2", ("a", "b"), (0.5, 0.5)).assign(USERS)
    # Independent 50/50 splits agree for half the users: 50,000 ± 3.9·158 (sd √(n/4)).
    assert abs((old == new).sum() - 50_000) < 3.9 * np.sqrt(len(USERS) / 4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"salt": "", "arms": ("a", "b"), "shares": (0.5, 0.5)}, "salt"),
        ({"salt": "s", "arms": ("a",), "shares": (1.0,)}, "at least 2 arms"),
        ({"salt": "s", "arms": ("a", "a"), "shares": (0.5, 0.5)}, "distinct"),
        ({"salt": "s", "arms": ("a", "b"), "shares": (0.5,)}, "shares"),
        ({"salt": "s", "arms": ("a", "b"), "shares": (1.2, -0.2)}, "> 0"),
        ({"salt": "s", "arms": ("a", "b"), "shares": (0.5, 0.49)}, "sum to 1"),
        ({"salt": "s", "arms": ("a", "b"), "shares": (0.99999, 0.00001)}, "no bucket"),
    ],
)
def test_invalid_assignment_is_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Assignment(**kwargs)


def test_user_ids_must_be_integers() -> None:
    with pytest.raises(ValueError, match="integers"):
        user_buckets("exp", np.array([0.5, 1.5]))
