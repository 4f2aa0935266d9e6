"""The model stages of the served cascade as plain code: ``Cascade.rank``'s two halves
(``policies.cascade.coarse_stage`` / ``fine_stage``) around the same ``Scorer`` objects, so a
served page is the page the in-process cascade computes."""

from __future__ import annotations

import numpy as np

from policies.cascade import coarse_stage, fine_stage
from policies.rankers import Scorer
from serving.pipeline import CoarseOut, FineOut, bounds, exclusion_mask, pad_rows


class CoarseStage:
    """One arm's coarse ranker and cut-off size. ``swap`` replaces the scorer atomically: a
    call reads ``self.scorer`` once, so its user tower and item embeddings (one object, one
    version) rank every row of the call."""

    def __init__(self, scorer: Scorer, size: int) -> None:
        self.scorer, self.size = scorer, size

    def swap(self, scorer: Scorer) -> None:
        self.scorer = scorer  # one reference assignment: atomic

    def run(self, users: np.ndarray, recall: np.ndarray, exclude: np.ndarray) -> CoarseOut:
        return self._run(self.scorer, users, recall, exclude)

    def run_many(self, users: list, recall: list, exclude: list) -> list[CoarseOut]:
        scorer = self.scorer
        out = self._run(scorer, np.concatenate(users), np.concatenate(recall), pad_rows(exclude))
        return [
            CoarseOut(out.slots[lo:hi], out.items[lo:hi], out.version)
            for lo, hi in bounds([len(u) for u in users])
        ]

    def _run(self, scorer: Scorer, users: np.ndarray, recall: np.ndarray, exclude: np.ndarray) -> CoarseOut:
        users, recall = np.asarray(users, dtype=np.int64), np.asarray(recall, dtype=np.int64)
        slots, items = coarse_stage(scorer, users, recall, self.size, exclusion_mask(recall, exclude))
        return CoarseOut(slots, items, scorer.version)


class FineStage:
    """The fine ranker (shared by every arm) and the page size; ``swap`` as ``CoarseStage``."""

    def __init__(self, scorer: Scorer, page_size: int) -> None:
        self.scorer, self.page_size = scorer, page_size

    def swap(self, scorer: Scorer) -> None:
        self.scorer = scorer

    def run(self, users: np.ndarray, coarse: CoarseOut) -> FineOut:
        return self.run_many([users], [coarse])[0]

    def run_many(self, users: list[np.ndarray], coarse: list[CoarseOut]) -> list[FineOut]:
        """Calls with the same coarse width (arms may cut at different sizes) are ranked
        together; padding a narrower list could change how ties are broken."""
        scorer = self.scorer
        out: list[FineOut | None] = [None] * len(users)
        for width in sorted({c.items.shape[1] for c in coarse}):
            calls = [i for i, c in enumerate(coarse) if c.items.shape[1] == width]
            ranked = fine_stage(
                scorer,
                np.concatenate([np.asarray(users[i], dtype=np.int64) for i in calls]),
                np.concatenate([coarse[i].slots for i in calls]),
                np.concatenate([coarse[i].items for i in calls]),
                self.page_size,
            )
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
