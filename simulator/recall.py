"""Multi-channel recall: behaviour i2i, noisy taste, popularity and new products, merged.

Recall belongs to the world (it is the same for every A/B arm) and is deliberately
imperfect: its quotas, noise and channel mix decide how often the truly best items are
missed, which `simulator.oracle.funnel_loss` measures.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from common.rng import Stream, gumbel, uniform
from simulator.world import World

CHANNELS = ("i2i", "taste", "popular", "new", "explore")
"""Channel names; `RecallSet.channels` holds indices into this tuple. `explore` is a
random-but-distinct filler that tops the set up to its configured size."""

I2I_SEEDS = 20
"""The most recent behaviours whose neighbours feed the i2i channel."""


@dataclasses.dataclass(frozen=True)
class SessionKeys:
    """Identity of a batch of sessions; every random draw of a session is keyed by it."""

    user: np.ndarray  # (B,) int64
    day: np.ndarray  # (B,) int64
    session: np.ndarray  # (B,) int64

    @classmethod
    def of(cls, user, day=0, session=0) -> SessionKeys:
        user = np.atleast_1d(np.asarray(user, dtype=np.int64))
        day = np.broadcast_to(np.asarray(day, dtype=np.int64), user.shape).copy()
        session = np.broadcast_to(np.asarray(session, dtype=np.int64), user.shape).copy()
        return cls(user, day, session)

    def __len__(self) -> int:
        return len(self.user)

    def take(self, index) -> SessionKeys:
        return SessionKeys(self.user[index], self.day[index], self.session[index])

    def column(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Keys shaped (B, 1) to broadcast against per-candidate counters."""
        return self.user[:, None], self.day[:, None], self.session[:, None]


@dataclasses.dataclass(frozen=True)
class RecallSet:
    items: np.ndarray  # (B, R) int64, distinct per row
    channels: np.ndarray  # (B, R) int8, index into CHANNELS of the first channel that found it


class Recall:
    """Builds recall sets for batches of sessions; quotas are fixed at construction."""

    def __init__(self, world: World) -> None:
        c = world.config
        self.world = world
        size = c.recall_size
        self.i2i_seeds = min(I2I_SEEDS, c.history_len)
        self.i2i_per_seed = min(c.i2i_neighbors, math.ceil(c.recall_share_i2i * size / self.i2i_seeds))
        self.taste_quota = round(c.recall_share_taste * size)
        self.taste_categories = min(c.recall_taste_categories, c.n_categories)
        self.popular_quota = round(c.recall_share_popular * size)
        self.new_quota = round(c.recall_share_new * size) if len(world.new_items) else 0
        # explore walks the pool with a step coprime to its size, so its R items are distinct
        n = c.n_items
        self._explore_steps = np.array(
            [s for s in range(max(1, n // 3), n) if math.gcd(s, n) == 1][:64], dtype=np.int64
        )
        # with late items masked out, a longer walk still holds recall_size available items
        late = int((world.item_arrival_day > 0).sum())
        self._explore_length = min(n, size + late)
        # the short filler makes up for duplicates and, where items arrive later, for the slots
        # masked out (at most the new-item quota, and the late share of everything else): with
        # too short a filler a third of the rows are redone with the full walk
        allowance = self.new_quota + math.ceil(late / n * size) if late else 0
        self.short_filler = min(self._explore_length, max(64, size // 4) + allowance)
        counts = [
            self.i2i_seeds * self.i2i_per_seed,
            self.taste_quota,
            self.popular_quota,
            self.new_quota,
            self._explore_length,
        ]
        self._slot_channel = np.repeat(np.arange(len(CHANNELS), dtype=np.int8), counts)

    def __call__(self, keys: SessionKeys) -> RecallSet:
        w, c = self.world, self.world.config
        seed = c.seed
        user, day, session = keys.column()
        parts = [
            w.i2i[w.history[keys.user, -self.i2i_seeds :], : self.i2i_per_seed].reshape(len(keys), -1),
            self._taste(keys),
            w.popularity_alias.sample(
                *uniform(seed, Stream.RECALL_POPULAR, user, day, session, np.arange(2 * self.popular_quota))
                .reshape(len(keys), 2, -1)
                .transpose(1, 0, 2)
            ),
        ]
        if self.new_quota:
            u = uniform(seed, Stream.RECALL_NEW, user, day, session, np.arange(self.new_quota))
            parts.append(w.new_items[(u * len(w.new_items)).astype(np.int64)])
        candidates = np.concatenate(parts, axis=1)  # (B, S) in channel priority order
        if w.items_arrive:  # items that arrive on a later day cannot be recalled yet
            candidates = np.where(w.available(candidates, keys.day), candidates, -1)
        # the explore filler tops rows up to R; a short filler almost always suffices, and
        # rows it does not fill are redone with the full one. Because the short filler is a
        # prefix of the full one, both give the same first R distinct items.
        short = self._first_distinct(np.concatenate([candidates, self._explore(keys, self.short_filler)], 1))
        if short.complete.all():
            return RecallSet(short.items, short.channels)
        redo = ~short.complete
        explore = self._explore(keys.take(redo), self._explore_length)
        full = self._first_distinct(np.concatenate([candidates[redo], explore], 1))
        short.items[redo], short.channels[redo] = full.items, full.channels
        return RecallSet(short.items, short.channels)

    def _taste(self, keys: SessionKeys) -> np.ndarray:
        """Top items by noisy true taste among draws from the user's noisy top categories."""
        w, c = self.world, self.world.config
        user, day, session = keys.column()
        noise = c.recall_taste_noise
        cat_scores = w.user_category_logits[keys.user] + noise * gumbel(
            c.seed, Stream.RECALL_TASTE, user, day, session, np.arange(c.n_categories)
        )
        top_cats = np.argpartition(-cat_scores, self.taste_categories - 1, axis=1)[:, : self.taste_categories]
        # a random window of each top category: items of a category are exchangeable, so a
        # window is a uniform sample, and contiguous ids make the vector gather cache-friendly
        window = math.ceil(2 * self.taste_quota / self.taste_categories)
        u_start = uniform(
            c.seed, Stream.RECALL_TASTE, user, day, session, c.n_categories + np.arange(self.taste_categories)
        )
        size = w.cat_end[top_cats] - w.cat_start[top_cats]  # (B, T)
        offset = (u_start * size).astype(np.int64)[..., None] + np.arange(window)  # (B, T, w)
        draws = (w.cat_start[top_cats][..., None] + offset % size[..., None]).reshape(len(keys), -1)
        slot = np.arange(draws.shape[1])
        score = np.einsum("bnd,bd->bn", w.item_vec[draws], w.taste_vectors(keys.user, keys.day))
        score = score + noise * gumbel(
            c.seed, Stream.RECALL_TASTE, user, day, session, slot + 2 * c.n_categories
        )
        best = np.argpartition(-score, self.taste_quota - 1, axis=1)[:, : self.taste_quota]
        return np.take_along_axis(draws, best, axis=1)

    def _explore(self, keys: SessionKeys, length: int) -> np.ndarray:
        """The first ``length`` items of each session's walk through the pool (-1 where an item
        has not arrived yet)."""
        w, c = self.world, self.world.config
        user, day, session = keys.column()
        u = uniform(c.seed, Stream.RECALL_EXPLORE, user, day, session, np.arange(2))
        start = (u[:, 0] * c.n_items).astype(np.int64)
        step = self._explore_steps[(u[:, 1] * len(self._explore_steps)).astype(np.int64)]
        walk = (start[:, None] + step[:, None] * np.arange(length)) % c.n_items
        if w.items_arrive:
            walk = np.where(w.available(walk, keys.day), walk, -1)
        return walk

    def _first_distinct(self, candidates: np.ndarray) -> _Distinct:
        """Keep each item's first occurrence (-1 = none), then the first R per row."""
        b, s = candidates.shape
        r = self.world.config.recall_size
        n = self.world.config.n_items
        # sort (item, slot) pairs encoded in one int64; invalid slots sort last
        item = np.where(candidates >= 0, candidates, n)
        code = np.sort(item * s + np.arange(s), axis=1)
        first = np.ones_like(code, dtype=bool)
        first[:, 1:] = code[:, 1:] // s != code[:, :-1] // s
        first &= code < n * s
        keep = np.zeros((b, s), dtype=bool)
        rows = np.broadcast_to(np.arange(b)[:, None], code.shape)
        keep[rows[first], code[first] % s] = True
        count = np.cumsum(keep, axis=1)
        complete = count[:, -1] >= r
        keep &= (count <= r) & complete[:, None]
        items = np.zeros((b, r), dtype=np.int64)
        channels = np.zeros((b, r), dtype=np.int8)
        items[complete] = candidates[keep].reshape(-1, r)
        channels[complete] = np.broadcast_to(self._slot_channel[:s], (b, s))[keep].reshape(-1, r)
        return _Distinct(items, channels, complete)


@dataclasses.dataclass(frozen=True)
class _Distinct:
    items: np.ndarray  # (B, R), rows valid where complete
    channels: np.ndarray  # (B, R)
    complete: np.ndarray  # (B,) bool: the row had at least R distinct candidates
