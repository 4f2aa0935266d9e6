"""What only a simulator can know: true expected value of every candidate, the oracle
ranking, and where in the funnel the truly best items were lost."""

from __future__ import annotations

import enum

import numpy as np

from simulator.recall import SessionKeys
from simulator.world import World, sigmoid


class Objective(enum.StrEnum):
    CLICKS = "clicks"
    PURCHASES = "purchases"
    GMV = "gmv"


def expected_value(
    world: World,
    users: np.ndarray,
    items: np.ndarray,
    objective: Objective | str = Objective.CLICKS,
    day: np.ndarray | int = 0,
) -> np.ndarray:
    """Expected clicks / purchases / GMV of showing each item at the top position: (B, R).

    ``items`` is (B, R) per user or (R,) shared by all users; ``day`` (scalar or (B,)) matters
    only when tastes drift.

    Under the position-based model the value at position k is rho_k times this, so sorting
    by it descending is the optimal page for any position bias (rearrangement inequality).
    """
    objective = Objective(objective)
    z = world.click_logits(users, items, day)
    value = sigmoid(z.astype(np.float64))
    if objective is Objective.CLICKS:
        return value
    value = value * sigmoid(world.purchase_logits(users, items, z).astype(np.float64))
    if objective is Objective.PURCHASES:
        return value
    return value * world.item_price[items]


def oracle_scores(
    world: World, keys: SessionKeys, items: np.ndarray, objective: Objective | str = Objective.CLICKS
) -> np.ndarray:
    """Scores of the oracle ranking for candidate ``items`` (B, R) of sessions ``keys``."""
    return expected_value(world, keys.user, items, objective, keys.day)


def best_in_pool(
    world: World,
    users: np.ndarray,
    k: int,
    objective: Objective | str = Objective.CLICKS,
    chunk: int = 20_000,
    day: np.ndarray | int = 0,
) -> np.ndarray:
    """The k truly best items of the whole pool for each user on ``day``, best first: (B, k);
    items that arrive after ``day`` cannot be shown yet and are left out."""
    n = world.config.n_items
    best_items = np.empty((len(users), 0), dtype=np.int64)
    best_values = np.empty((len(users), 0))
    days = np.broadcast_to(np.asarray(day), (len(users),))[:, None]  # (B, 1)
    for lo in range(0, n, chunk):
        items = np.arange(lo, min(lo + chunk, n))
        values = expected_value(world, users, items, objective, day)  # (B, chunk)
        if world.items_arrive:
            values = np.where(world.item_arrival_day[items] <= days, values, -np.inf)
        best_items = np.concatenate([best_items, np.broadcast_to(items, values.shape)], axis=1)
        best_values = np.concatenate([best_values, values], axis=1)
        top = np.argpartition(-best_values, k - 1, axis=1)[:, :k]
        best_items = np.take_along_axis(best_items, top, axis=1)
        best_values = np.take_along_axis(best_values, top, axis=1)
    order = np.argsort(-best_values, axis=1, kind="stable")
    return np.take_along_axis(best_items, order, axis=1)


FUNNEL_STAGES = ("recall", "coarse", "fine", "kept")


def funnel_loss(best: np.ndarray, stages: list[np.ndarray]) -> dict[str, float]:
    """Share of the truly best items lost at each stage.

    ``best`` (B, k) are the truly best items (e.g. from `best_in_pool`); ``stages`` are the
    item sets each stage passed on, e.g. [recall (B, R), coarse top (B, C), fine top (B, F)],
    each a subset of the one before. Returns {"recall": share missing from recall,
    "coarse": share in recall but cut by coarse, ..., "kept": share surviving all stages};
    the shares sum to 1.
    """
    present = [_isin_rows(best, stage) for stage in stages]
    names = FUNNEL_STAGES[: len(stages)] if len(stages) <= 3 else [f"stage{i}" for i in range(len(stages))]
    result, before = {}, np.ones(best.shape, dtype=bool)
    for name, inside in zip(names, present, strict=True):
        result[name] = float((before & ~inside).mean())
        before = before & inside
    result["kept"] = float(before.mean())
    return result


def _isin_rows(values: np.ndarray, sets: np.ndarray) -> np.ndarray:
    """Row-wise membership: out[b, j] = values[b, j] in sets[b]."""
    if sets.shape[1] == 0:
        return np.zeros(values.shape, dtype=bool)
    sorted_sets = np.sort(sets, axis=1)
    offset = (np.arange(len(values)) * (int(max(sets.max(initial=0), values.max(initial=0))) + 2))[:, None]
    flat = (sorted_sets + offset).ravel()
    query = values + offset
    idx = np.minimum(np.searchsorted(flat, query), flat.size - 1)
    return flat[idx] == query
