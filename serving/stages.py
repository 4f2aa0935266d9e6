"""The model stages of the served cascade as plain code: ``Cascade``'s two halves
(``policies.cascade.coarse_window`` / ``fine_page``) around the same ``Scorer`` objects, so a
served page is the page the in-process cascade computes.

Each stage keeps a bounded per-session cache (``SessionCache``, least recently used dropped):
the coarse stage the session's coarse scores and order, keyed by (user, day, session); the fine
stage the fine scores of the order's chunks, keyed by (coarse version, user, day, session) and
checked against the order each request carries. A request that lands on a replica without the
session's entry (another replica, an evicted entry, a swapped model) recomputes it: the same
calls, the same page. A swap replaces the scorer and its caches in one reference assignment.
"""

from __future__ import annotations

import numpy as np

from policies.cascade import SessionCache, coarse_window, fine_page
from policies.rankers import Scorer
from serving.pipeline import CoarseOut, FineOut, RecallStage, bounds, exclusion_mask, pad_rows

SESSION_CACHE = 2048
"""Sessions each stage's replica keeps scores for (coarse: ~80 KB each at recall 5,000)."""


def _keys(prefix: tuple, users: np.ndarray, days, sessions) -> list[tuple] | None:
    if days is None or sessions is None:
        return None
    return [(*prefix, int(u), int(d), int(s)) for u, d, s in zip(users, days, sessions, strict=True)]


class CoarseStage:
    """One arm's coarse ranker and cut-off size. ``swap`` replaces the scorer and its cache
    atomically: a call reads them once, so one scorer (one version) ranks every row of the call."""

    def __init__(self, scorer: Scorer, size: int, capacity: int = SESSION_CACHE) -> None:
        self.size, self.capacity = size, capacity
        self._state = (scorer, SessionCache(capacity))

    @property
    def scorer(self) -> Scorer:
        return self._state[0]

    def swap(self, scorer: Scorer) -> None:
        self._state = (scorer, SessionCache(self.capacity))  # one reference assignment: atomic

    def run(
        self, users: np.ndarray, recall: np.ndarray, exclude: np.ndarray, days=None, sessions=None
    ) -> CoarseOut:
        """Windows of B requests on ``days`` (None: day 0); with ``days`` and ``sessions`` the
        session cache is used."""
        return self._run(self._state, users, recall, exclude, days, sessions)

    def run_many(
        self, users: list, days: list, sessions: list, recall: list, exclude: list
    ) -> list[CoarseOut]:
        out = self._run(
            self._state,
            np.concatenate(users),
            np.concatenate(recall),
            pad_rows(exclude),
            np.concatenate(days),
            np.concatenate(sessions),
        )
        return [
            CoarseOut(out.slots[lo:hi], out.items[lo:hi], out.positions[lo:hi], out.order[lo:hi], out.version)
            for lo, hi in bounds([len(u) for u in users])
        ]

    def _run(self, state, users, recall, exclude, days, sessions) -> CoarseOut:
        scorer, cache = state
        users, recall = np.asarray(users, dtype=np.int64), np.asarray(recall, dtype=np.int64)
        keys = _keys((), users, days, sessions)
        days = None if days is None else np.asarray(days, dtype=np.int64)
        excluded = exclusion_mask(recall, exclude)
        w = coarse_window(scorer, users, recall, self.size, excluded, keys, cache if keys else None, days)
        return CoarseOut(w.slots, w.items, w.positions, w.order, scorer.version)


class FineStage:
    """The fine ranker (shared by every arm) and the page size; ``swap`` as ``CoarseStage``."""

    def __init__(self, scorer: Scorer, page_size: int, capacity: int = SESSION_CACHE) -> None:
        self.page_size, self.capacity = page_size, capacity
        self._state = (scorer, SessionCache(capacity))

    @property
    def scorer(self) -> Scorer:
        return self._state[0]

    def swap(self, scorer: Scorer) -> None:
        self._state = (scorer, SessionCache(self.capacity))

    def run(self, users: np.ndarray, coarse: CoarseOut, days=None, sessions=None) -> FineOut:
        days, sessions = (None if x is None else [x] for x in (days, sessions))
        return self._run_many([users], [coarse], days, sessions)[0]

    def run_many(self, users: list, days: list, sessions: list, coarse: list[CoarseOut]) -> list[FineOut]:
        return self._run_many(users, coarse, days, sessions)

    def _run_many(self, users: list, coarse: list[CoarseOut], days, sessions) -> list[FineOut]:
        """Calls with the same coarse width (arms may cut at different sizes) are ranked
        together; padding a narrower list could change how ties are broken."""
        scorer, cache = self._state
        out: list[FineOut | None] = [None] * len(users)
        for width in sorted({c.items.shape[1] for c in coarse}):
            calls = [i for i, c in enumerate(coarse) if c.items.shape[1] == width]
            rows = np.concatenate([np.asarray(users[i], dtype=np.int64) for i in calls])
            keys, on = None, None
            if days is not None:
                on = np.concatenate([np.asarray(days[i], dtype=np.int64) for i in calls])
            if days is not None and sessions is not None:
                keys = [
                    k
                    for i in calls
                    for k in _keys((coarse[i].version,), np.asarray(users[i]), days[i], sessions[i])
                ]
            window = CoarseOut(
                np.concatenate([coarse[i].slots for i in calls]),
                np.concatenate([coarse[i].items for i in calls]),
                np.concatenate([coarse[i].positions for i in calls]),
                pad_rows([coarse[i].order for i in calls]),
                "",
            ).window
            ranked = fine_page(scorer, rows, window, self.page_size, keys, cache if keys else None, on)
            for i, (lo, hi) in zip(calls, bounds([len(users[i]) for i in calls]), strict=True):
                out[i] = FineOut(
                    ranked.page[lo:hi],
                    ranked.page_scores[lo:hi],
                    ranked.slots[lo:hi],
                    ranked.coarse_items[lo:hi],
                    coarse[i].version,
                    scorer.version,
                )
        return out  # type: ignore[return-value]


class FusedCascade:
    """Recall, each arm's coarse stage and the fine stage called in one process (the fused
    layout): the calls the split layout's deployments make, so the same pages."""

    def __init__(self, recall: RecallStage, coarse: dict[str, CoarseStage], fine: FineStage) -> None:
        self.recall, self.coarse, self.fine = recall, coarse, fine

    def run_many(
        self, arms: list[str], users: list, days: list, sessions: list, exclude: list
    ) -> list[tuple[np.ndarray, FineOut]]:
        """(recall set, fine output) of each call; call ``i`` is ranked by arm ``arms[i]``."""
        recall = self.recall.run_many(users, days, sessions)
        coarse: list[CoarseOut | None] = [None] * len(arms)
        for arm in dict.fromkeys(arms):
            calls = [i for i, a in enumerate(arms) if a == arm]
            parts = ([column[i] for i in calls] for column in (users, days, sessions, recall, exclude))
            for i, out in zip(calls, self.coarse[arm].run_many(*parts), strict=True):
                coarse[i] = out
        return list(zip(recall, self.fine.run_many(users, days, sessions, coarse), strict=True))
