"""Offline metrics of the coarse ranker (numpy): AUC, GAUC, consistency with the fine ranker
(NDCG@k, Kendall tau, recall@k@m) and seed 002's in-scene / out-of-scene / global hitrate@k.

The consistency metrics take lists as 2-D arrays (n_lists, L): ``reference_scores`` are the
fine ranker's (teacher's) scores, ``scores`` the coarse ranker's (student's), and an optional
bool ``mask`` (n_lists, L) marks the real entries of padded lists (default: all real). Scores
of real entries must be finite; padding may hold anything. Each returns the mean over the
lists on which the metric is defined, NaN if there is none.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray


def _binary(labels: ArrayLike) -> NDArray[np.bool_]:
    y = np.asarray(labels)
    if y.dtype != np.bool_ and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1 or bool")
    return y.astype(bool)


def _finite_1d(scores: ArrayLike, n: int) -> NDArray[np.float64]:
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (n,):
        raise ValueError(f"scores must have shape ({n},), got {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return s


def _grouped_auc(
    groups: NDArray, labels: NDArray[np.bool_], scores: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """AUC and row count of every group, by average ranks within (group, score) tie blocks.

    One lexsort by (group, score), no loop over groups: a row's rank within its group is the
    mean sorted position of its tie block minus the group's first position, and
    AUC_g = (sum of positives' ranks - P(P+1)/2) / (P N). NaN for single-class groups.
    """
    n = len(scores)
    order = np.lexsort((scores, groups))
    g, s, y = groups[order], scores[order], labels[order]
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = g[1:] != g[:-1]
    new_block = new_group.copy()
    new_block[1:] |= s[1:] != s[:-1]
    code = np.cumsum(new_group) - 1  # (n,) group index in sorted order
    block_starts = np.flatnonzero(new_block)
    block_ends = np.append(block_starts[1:], n)  # exclusive
    block = np.cumsum(new_block) - 1  # (n,)
    mean_position = (block_starts + block_ends - 1) / 2.0  # 0-based, per block
    group_starts = np.flatnonzero(new_group)
    rank = mean_position[block] - group_starts[code] + 1.0  # (n,) 1-based rank in group
    n_rows = np.diff(np.append(group_starts, n))
    n_pos = np.bincount(code, weights=y, minlength=len(group_starts))
    rank_sum = np.bincount(code, weights=rank * y, minlength=len(group_starts))
    n_neg = n_rows - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        result = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), result, np.nan), n_rows


def auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """ROC AUC: the probability that a random positive scores above a random negative, a tie
    counting 1/2. Rank based, O(n log n). NaN when only one class is present."""
    y = _binary(labels).ravel()
    s = _finite_1d(scores, len(y))
    if len(y) == 0:
        return float("nan")
    per_group, _ = _grouped_auc(np.zeros(len(y), dtype=np.int64), y, s)
    return float(per_group[0])


def gauc(users: ArrayLike, labels: ArrayLike, scores: ArrayLike) -> float:
    """Grouped AUC: sum_u n_u AUC_u / sum_u n_u over the users u with both a positive and a
    negative row, where AUC_u is ``auc`` on u's rows and n_u is u's number of rows
    (impressions). Users whose labels are all 0 or all 1 are skipped. NaN if none is left.

    Vectorised (one lexsort, no loop over users): ~0.35 s for 1M rows with integer user ids
    (10k to 500k users), ~0.7 s with string ids, on one CPU core.
    """
    u = np.asarray(users).ravel()
    y = _binary(labels).ravel()
    if len(u) != len(y):
        raise ValueError("users and labels must have the same length")
    s = _finite_1d(scores, len(y))
    if len(y) == 0:
        return float("nan")
    per_user, n_rows = _grouped_auc(u, y, s)
    valid = ~np.isnan(per_user)
    if not valid.any():
        return float("nan")
    return float(np.average(per_user[valid], weights=n_rows[valid]))


def gauc_difference(
    users: ArrayLike, labels: ArrayLike, scores: ArrayLike, reference_scores: ArrayLike
) -> tuple[float, float]:
    """(GAUC(scores) - GAUC(reference_scores), its standard error) on the same rows, users the
    independent units: with d_u = AUC_u(scores) - AUC_u(reference) and n_u u's rows, the
    difference is sum_u n_u d_u / sum_u n_u and its variance the ratio's linearisation
    U / (U - 1) sum_u n_u^2 (d_u - difference)^2 / (sum_u n_u)^2 over the U users with both
    classes. (NaN, NaN) if there is none; the error is NaN for a single user."""
    u = np.asarray(users).ravel()
    y = _binary(labels).ravel()
    if len(u) != len(y):
        raise ValueError("users and labels must have the same length")
    a, b = _finite_1d(scores, len(y)), _finite_1d(reference_scores, len(y))
    if len(y) == 0:
        return float("nan"), float("nan")
    auc_a, n_rows = _grouped_auc(u, y, a)
    auc_b, _ = _grouped_auc(u, y, b)
    valid = ~np.isnan(auc_a)
    d, w = auc_a[valid] - auc_b[valid], n_rows[valid].astype(np.float64)
    if len(d) == 0:
        return float("nan"), float("nan")
    difference = float(np.average(d, weights=w))
    if len(d) == 1:
        return difference, float("nan")
    variance = len(d) / (len(d) - 1) * np.sum((w * (d - difference)) ** 2) / w.sum() ** 2
    return difference, float(np.sqrt(variance))


def _lists(
    reference_scores: ArrayLike, scores: ArrayLike, mask: ArrayLike | None
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    ref = np.asarray(reference_scores, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if ref.ndim != 2 or ref.shape != s.shape:
        raise ValueError(f"expected two (n_lists, L) arrays, got {ref.shape} and {s.shape}")
    m = np.ones(ref.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if m.shape != ref.shape:
        raise ValueError(f"mask must have shape {ref.shape}, got {m.shape}")
    if not (np.isfinite(ref[m]).all() and np.isfinite(s[m]).all()):
        raise ValueError("scores of real entries must be finite")
    return ref, s, m


def _mean_defined(values: NDArray[np.float64]) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if len(defined) else float("nan")


def _check_cutoff(name: str, value: int) -> None:
    if not (isinstance(value, int | np.integer) and value >= 1):
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def ndcg_at_k(reference_scores: ArrayLike, scores: ArrayLike, k: int, mask: ArrayLike | None = None) -> float:
    """NDCG@k of the student's order, with the reference scores as graded relevance.

    Per list: relevance rel_i = reference_scores[i] (must be >= 0, e.g. the teacher's pCTR);
    DCG@k = sum over the student's top-k positions r = 0..k-1 of rel / log2(r + 2);
    NDCG@k = DCG@k / IDCG@k, IDCG@k being the DCG@k of the reference order. Ties in the
    student's scores are averaged (every order of a tie block equally likely), so a constant
    scorer gets the expected NDCG of a random order, not that of the input order. Lists
    whose IDCG@k is 0 are skipped. Returns the mean over lists.
    """
    _check_cutoff("k", k)
    ref, s, m = _lists(reference_scores, scores, mask)
    if (ref[m] < 0).any():
        raise ValueError("reference_scores are relevances and must be >= 0")
    n_lists, length = ref.shape
    if n_lists == 0 or length == 0:
        return float("nan")
    rel = np.where(m, ref, 0.0)
    s = np.where(m, s, -np.inf)  # padding last; it ties only with padding (relevance 0)
    order = np.argsort(-s, axis=1, kind="stable")
    s_sorted = np.take_along_axis(s, order, axis=1)  # (n_lists, L)
    rel_sorted = np.take_along_axis(rel, order, axis=1)  # (n_lists, L)
    positions = np.arange(length)
    discount = np.where(positions < k, 1.0 / np.log2(positions + 2.0), 0.0)  # (L,)
    new_block = np.ones(s_sorted.shape, dtype=bool)
    new_block[:, 1:] = s_sorted[:, 1:] != s_sorted[:, :-1]
    block = np.cumsum(new_block.ravel()) - 1  # (n_lists * L,)
    flat_discount = np.tile(discount, n_lists)
    block_discount = np.bincount(block, weights=flat_discount) / np.bincount(block)
    expected_discount = block_discount[block].reshape(n_lists, length)
    dcg = (rel_sorted * expected_discount).sum(axis=1)
    idcg = (-np.sort(-rel, axis=1) * discount).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ndcg = np.where(idcg > 0, dcg / idcg, np.nan)
    return _mean_defined(ndcg)


def kendall_tau(reference_scores: ArrayLike, scores: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Kendall's tau-b between the reference and the student scores of each list, averaged over
    lists: per list, over the pairs of real entries, (concordant - discordant) /
    sqrt((pairs - ties in reference) (pairs - ties in scores)). Lists with fewer than two real
    entries or with constant scores (tau undefined) are skipped. Vectorised over lists, in
    chunks of about ``PAIR_BUDGET`` pairs (scipy's ``kendalltau`` per list gives the same)."""
    ref, s, m = _lists(reference_scores, scores, mask)
    n_lists, length = ref.shape
    taus = np.full(n_lists, np.nan)
    upper = np.triu(np.ones((length, length), dtype=bool), k=1)  # each pair once
    step = max(1, PAIR_BUDGET // max(1, length * length))
    for lo in range(0, n_lists, step):
        r, x, keep = ref[lo : lo + step], s[lo : lo + step], m[lo : lo + step]
        pairs = keep[:, :, None] & keep[:, None, :] & upper  # (n, L, L)
        d_ref = np.sign(r[:, :, None] - r[:, None, :])
        d_s = np.sign(x[:, :, None] - x[:, None, :])
        n0 = pairs.sum(axis=(1, 2))
        untied_ref = n0 - (pairs & (d_ref == 0)).sum(axis=(1, 2))
        untied_s = n0 - (pairs & (d_s == 0)).sum(axis=(1, 2))
        score = np.where(pairs, d_ref * d_s, 0.0).sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            denominator = np.sqrt(untied_ref.astype(np.float64) * untied_s)
            taus[lo : lo + step] = np.where(denominator > 0, score / denominator, np.nan)
    return _mean_defined(taus)


PAIR_BUDGET = 2**22
"""Pairs of list entries that ``kendall_tau`` compares at once (~100 MB of temporaries)."""


def _top_sets(scores: NDArray[np.float64], mask: NDArray[np.bool_], size: int) -> NDArray[np.bool_]:
    """Which real entries are in each list's top-``size`` (ties broken by lower index)."""
    s = np.where(mask, scores, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(s.shape[1])[None, :], axis=1)
    return mask & (rank < size)


def recall_at_k_at_m(
    reference_scores: ArrayLike, scores: ArrayLike, k: int, m: int, mask: ArrayLike | None = None
) -> float:
    """recall@k@m (COLD; "Rethinking the role of pre-ranking"): per list, the share of the
    reference ranker's top-k real entries that are in the student's top-m,
    |top_k(reference) ∩ top_m(scores)| / |top_k(reference)|, averaged over lists with at
    least one real entry. A list shorter than k uses all its entries. Ties at a cut-off are
    broken by list position (lower index first); with continuous scores there are none.
    """
    _check_cutoff("k", k)
    _check_cutoff("m", m)
    ref, s, real = _lists(reference_scores, scores, mask)
    ref_top = _top_sets(ref, real, k)
    student_top = _top_sets(s, real, m)
    n_ref = ref_top.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(n_ref > 0, (ref_top & student_top).sum(axis=1) / n_ref, np.nan)
    return _mean_defined(recall)


ItemLists = Sequence[ArrayLike] | NDArray[np.integer]
"""Per-request item ids: a sequence of 1-D arrays, or a 2-D array padded with -1 (faster)."""


def _flatten(items: ItemLists, name: str) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(request index, item id) of every real (not -1) entry."""
    if isinstance(items, np.ndarray) and items.ndim == 2:
        real = items != -1
        request = np.broadcast_to(np.arange(len(items))[:, None], items.shape)[real]
        ids = items[real].astype(np.int64, copy=False)
    else:
        rows = [np.asarray(r, dtype=np.int64).ravel() for r in items]
        ids = np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)
        request = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
        real = ids != -1
        request, ids = request[real], ids[real]
    if (ids < 0).any():
        raise ValueError(f"{name}: item ids must be >= 0 (-1 marks padding)")
    return request, ids


def _first_columns(items: ItemLists, k: int) -> NDArray[np.integer]:
    """(n_requests, <= k) the first k entries of every row, padded with -1."""
    if isinstance(items, np.ndarray) and items.ndim == 2:
        return items[:, :k]
    rows = [np.asarray(r, dtype=np.int64).ravel()[:k] for r in items]
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    table = np.full((len(rows), int(lengths.max(initial=0))), -1, dtype=np.int64)
    if table.size:
        request = np.repeat(np.arange(len(rows)), lengths)
        column = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        table[request, column] = np.concatenate(rows)
    return table


_TARGET_CHUNK = 4096
"""Targets compared per step in hitrate_at_k; bounds memory to chunk x k ids."""


def hitrate_at_k(target_items: ItemLists, ranked_items: ItemLists, k: int) -> float:
    """Share of all target items that appear in their request's top-k ranked items.

    ``ranked_items[r]`` is request r's candidates in ranked order, best first (the top-k are
    its first k entries); ``target_items[r]`` are the items that count as hits for r (every
    entry counts once, so an item bought twice counts twice). hitrate@k = (number of targets
    found in their request's top-k) / (number of targets), pooled over requests; NaN if there
    are no targets. Seed 002's variants differ only in the targets the caller passes::

        in_scene = hitrate_at_k(in_scene_purchases, ranked, k)       # bought in search
        out_of_scene = hitrate_at_k(out_of_scene_purchases, ranked, k)  # bought elsewhere
        global_ = hitrate_at_k(
            [np.concatenate(pair) for pair in zip(in_scene_purchases, out_of_scene_purchases)],
            ranked, k)                                               # both
    """
    _check_cutoff("k", k)
    if len(target_items) != len(ranked_items):
        raise ValueError(f"{len(target_items)} target lists for {len(ranked_items)} ranked lists")
    target_request, target_id = _flatten(target_items, "target_items")
    if len(target_id) == 0:
        return float("nan")
    # Only the requests with a target matter (purchases are rare).
    needed, target_row = np.unique(target_request, return_inverse=True)
    if isinstance(ranked_items, np.ndarray) and ranked_items.ndim == 2:
        top = _first_columns(ranked_items[needed], k)  # (n_needed, <= k)
    else:
        top = _first_columns([ranked_items[r] for r in needed], k)  # (n_needed, <= k)
    if (top < -1).any():
        raise ValueError("ranked_items: item ids must be >= 0 (-1 marks padding)")
    hit = np.zeros(len(target_id), dtype=bool)
    for start in range(0, len(target_id), _TARGET_CHUNK):
        chunk = slice(start, start + _TARGET_CHUNK)
        hit[chunk] = (top[target_row[chunk]] == target_id[chunk, None]).any(axis=1)
    return float(hit.mean())
