import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from policies.metrics import (
    auc,
    gauc,
    gauc_difference,
    hitrate_at_k,
    kendall_tau,
    ndcg_at_k,
    recall_at_k_at_m,
)

# Few distinct score values so that ties are common.
TIED_SCORE = st.integers(0, 4).map(float)


def pairwise_auc(labels, scores) -> float:
    """Brute force: mean over (positive, negative) pairs of 1[pos > neg] + 1/2 1[pos == neg]."""
    pos = [s for y, s in zip(labels, scores, strict=True) if y]
    neg = [s for y, s in zip(labels, scores, strict=True) if not y]
    if not pos or not neg:
        return math.nan
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@st.composite
def scored_rows(draw, max_users: int = 5):
    n = draw(st.integers(1, 40))
    users = draw(hnp.arrays(np.int64, n, elements=st.integers(0, max_users - 1)))
    labels = draw(hnp.arrays(np.bool_, n))
    scores = draw(hnp.arrays(np.float64, n, elements=TIED_SCORE))
    return users, labels, scores


@given(scored_rows())
def test_auc_equals_pairwise_count_with_ties(rows):
    _, labels, scores = rows
    np.testing.assert_allclose(auc(labels, scores), pairwise_auc(labels, scores), equal_nan=True)


@pytest.mark.parametrize("label", [0, 1])
def test_auc_of_a_single_class_is_nan(label):
    assert math.isnan(auc(np.full(5, label), np.arange(5.0)))


@given(scored_rows())
def test_gauc_equals_impression_weighted_per_user_pairwise_auc(rows):
    users, labels, scores = rows
    weighted, weights = 0.0, 0
    for user in set(users.tolist()):
        rows_of_user = users == user
        user_auc = pairwise_auc(labels[rows_of_user], scores[rows_of_user])
        if not math.isnan(user_auc):  # single-class users are skipped
            weighted += rows_of_user.sum() * user_auc
            weights += rows_of_user.sum()
    expected = weighted / weights if weights else math.nan
    np.testing.assert_allclose(gauc(users, labels, scores), expected, equal_nan=True)


@given(scored_rows(), hnp.arrays(np.float64, 40, elements=TIED_SCORE))
def test_the_gauc_difference_is_the_difference_of_gaucs(rows, other):
    users, labels, scores = rows
    reference = other[: len(labels)]
    difference, _ = gauc_difference(users, labels, scores, reference)
    expected = gauc(users, labels, scores) - gauc(users, labels, reference)
    np.testing.assert_allclose(difference, expected, equal_nan=True, atol=1e-12)


def _users_rows(rng, n_users: int, effect: float):
    """Users with 1-60 rows each (heavy users dominate GAUC), a per-user click propensity, and
    two scores: the reference and one ``effect`` better in signal, each with its own noise."""
    n_rows = rng.geometric(1 / 15, n_users).clip(1, 60)
    users = np.repeat(np.arange(n_users), n_rows)
    signal = rng.normal(size=len(users))
    base = rng.normal(-1.5, 1.0, n_users)[users]
    labels = rng.random(len(users)) < 1 / (1 + np.exp(-(base + signal)))
    reference = signal + rng.normal(0, 1.5, len(users))
    better = (1 + effect) * signal + rng.normal(0, 1.5, len(users))
    return users, labels, better, reference


def test_the_gauc_difference_interval_covers_at_its_nominal_rate():
    """Two scorers of equal skill: |difference| > 1.96 se in 5 % of 400 worlds of 300 users
    (binomial sd 1.1 pt, so 1.7-8.3 % at three sds); the error is the users' bootstrap error."""
    rng = np.random.default_rng(0)
    misses = 0
    for _ in range(400):
        difference, se = gauc_difference(*_users_rows(rng, 300, 0.0))
        misses += abs(difference) > 1.96 * se
    assert 0.017 <= misses / 400 <= 0.083, misses
    users, labels, better, reference = _users_rows(rng, 300, 1.0)
    difference, se = gauc_difference(users, labels, better, reference)
    boot = []
    for _ in range(1000):  # resample users, keeping each user's rows together
        picked = rng.integers(0, 300, 300)
        rows = np.concatenate([np.flatnonzero(users == u) for u in picked])
        ids = np.repeat(np.arange(300), [np.sum(users == u) for u in picked])
        boot.append(gauc_difference(ids, labels[rows], better[rows], reference[rows])[0])
    # a bootstrap sd from 1,000 draws is within ~2.2 % (1 / sqrt(2,000)) of its limit: 10 % is 4.5 sds
    assert difference > 3 * se and abs(np.std(boot) / se - 1) < 0.10, (np.std(boot), se)


@given(scored_rows())
def test_gauc_accepts_string_user_ids(rows):
    users, labels, scores = rows
    names = np.array([f"user-{u}" for u in users])
    np.testing.assert_allclose(gauc(names, labels, scores), gauc(users, labels, scores), equal_nan=True)


def test_non_binary_labels_raise():
    with pytest.raises(ValueError, match="0/1"):
        auc([0.0, 0.3, 1.0], [1.0, 2.0, 3.0])


@st.composite
def padded_score_lists(draw, unique: bool = False):
    """(reference, scores, mask) of shape (n_lists, L); every list has a real entry."""
    n_lists = draw(st.integers(1, 4))
    length = draw(st.integers(1, 7))
    elements = st.floats(0.0, 1.0) if unique else TIED_SCORE
    reference = draw(hnp.arrays(np.float64, (n_lists, length), elements=elements, unique=unique))
    scores = draw(hnp.arrays(np.float64, (n_lists, length), elements=elements, unique=unique))
    mask = draw(hnp.arrays(np.bool_, (n_lists, length)))
    mask[:, 0] |= ~mask.any(axis=1)
    reference[~mask] = np.nan  # padding must never matter
    scores[~mask] = np.nan
    return reference, scores, mask


@given(padded_score_lists(), st.integers(1, 8))
def test_ndcg_is_one_for_the_reference_order(lists, k):
    reference, _, mask = lists
    defined = (np.where(mask, reference, 0) > 0).any(axis=1)
    expected = 1.0 if defined.any() else math.nan
    np.testing.assert_allclose(ndcg_at_k(reference, reference, k, mask), expected, equal_nan=True)


@given(padded_score_lists(), st.integers(1, 8))
def test_ndcg_is_at_most_one(lists, k):
    reference, scores, mask = lists
    assert not ndcg_at_k(reference, scores, k, mask) > 1.0 + 1e-12


def brute_force_ndcg(reference, scores, k) -> float:
    """Mean over every order of the real entries consistent with ``scores`` (ties in any
    order) of sum_{r<k} rel / log2(r + 2), over the ideal DCG."""

    def dcg(relevances) -> float:
        return sum(rel / math.log2(r + 2) for r, rel in enumerate(relevances[:k]))

    tie_blocks = [[i for i, s in enumerate(scores) if s == v] for v in sorted(set(scores), reverse=True)]
    orders = [
        [i for block in blocks for i in block]
        for blocks in itertools.product(*(itertools.permutations(b) for b in tie_blocks))
    ]
    expected_dcg = sum(dcg([reference[i] for i in order]) for order in orders) / len(orders)
    return expected_dcg / dcg(sorted(reference, reverse=True))


@given(padded_score_lists(), st.integers(1, 8))
def test_ndcg_equals_brute_force_over_tie_orders(lists, k):
    reference, scores, mask = lists
    per_list = [
        brute_force_ndcg(ref[real].tolist(), s[real].tolist(), k)
        for ref, s, real in zip(reference, scores, mask, strict=True)
        if ref[real].max() > 0
    ]
    expected = np.mean(per_list) if per_list else math.nan
    np.testing.assert_allclose(ndcg_at_k(reference, scores, k, mask), expected, equal_nan=True)


@given(padded_score_lists(unique=True))
def test_kendall_tau_is_one_for_the_same_order(lists):
    reference, _, mask = lists
    has_pair = mask.sum(axis=1) >= 2
    expected = 1.0 if has_pair.any() else math.nan
    np.testing.assert_allclose(kendall_tau(reference, 2.0 * reference, mask), expected, equal_nan=True)


@given(padded_score_lists(unique=True))
def test_kendall_tau_is_minus_one_for_the_reversed_order(lists):
    reference, _, mask = lists
    has_pair = mask.sum(axis=1) >= 2
    expected = -1.0 if has_pair.any() else math.nan
    np.testing.assert_allclose(kendall_tau(reference, -reference, mask), expected, equal_nan=True)


@given(padded_score_lists())
def test_kendall_tau_equals_scipy_per_list_with_ties(lists):
    reference, scores, mask = lists
    taus = [
        stats.kendalltau(ref[real], s[real]).statistic if real.sum() >= 2 else math.nan
        for ref, s, real in zip(reference, scores, mask, strict=True)
    ]
    defined = [t for t in taus if not math.isnan(t)]
    expected = np.mean(defined) if defined else math.nan
    np.testing.assert_allclose(kendall_tau(reference, scores, mask), expected, equal_nan=True)


def test_kendall_tau_does_not_depend_on_the_chunk(monkeypatch):
    rng = np.random.default_rng(0)
    reference, scores = rng.integers(0, 5, (2, 300, 9)).astype(float)
    mask = rng.random((300, 9)) < 0.8
    whole = kendall_tau(reference, scores, mask)
    monkeypatch.setattr("policies.metrics.PAIR_BUDGET", 81 * 7)  # chunks of 7 lists
    assert kendall_tau(reference, scores, mask) == pytest.approx(whole, rel=1e-12)


@given(padded_score_lists(unique=True), st.integers(1, 8), st.integers(1, 8))
def test_recall_at_k_at_m_equals_set_computation(lists, k, m):
    reference, scores, mask = lists
    recalls = []
    for ref, s, real in zip(reference, scores, mask, strict=True):
        items = np.flatnonzero(real).tolist()
        ref_top = set(sorted(items, key=lambda i: -ref[i])[:k])
        student_top = set(sorted(items, key=lambda i: -s[i])[:m])
        recalls.append(len(ref_top & student_top) / len(ref_top))
    np.testing.assert_allclose(recall_at_k_at_m(reference, scores, k, m, mask), np.mean(recalls))


ITEM_LIST = hnp.arrays(np.int64, st.integers(0, 6), elements=st.integers(0, 9))


@given(st.lists(st.tuples(ITEM_LIST, ITEM_LIST), min_size=1, max_size=5), st.integers(1, 8))
def test_hitrate_equals_set_computation(requests, k):
    targets = [t for t, _ in requests]
    ranked = [r for _, r in requests]
    hits = sum(int(item) in set(r[:k].tolist()) for t, r in requests for item in t)
    n_targets = sum(len(t) for t in targets)
    expected = hits / n_targets if n_targets else math.nan
    np.testing.assert_allclose(hitrate_at_k(targets, ranked, k), expected, equal_nan=True)


def pad(lists, length: int) -> np.ndarray:
    out = np.full((len(lists), length), -1, dtype=np.int64)
    for row, items in enumerate(lists):
        out[row, : len(items)] = items
    return out


@given(st.lists(st.tuples(ITEM_LIST, ITEM_LIST), min_size=1, max_size=5), st.integers(1, 8))
def test_hitrate_of_padded_input_equals_that_of_lists(requests, k):
    targets = [t for t, _ in requests]
    ranked = [r for _, r in requests]
    expected = hitrate_at_k(targets, ranked, k)
    padded_targets, padded_ranked = pad(targets, 6), pad(ranked, 6)
    np.testing.assert_allclose(hitrate_at_k(padded_targets, padded_ranked, k), expected, equal_nan=True)
    np.testing.assert_allclose(
        hitrate_at_k(list(padded_targets), list(padded_ranked), k), expected, equal_nan=True
    )
