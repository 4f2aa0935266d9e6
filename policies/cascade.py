"""The cascade: recall set -> coarse scorer -> top C -> fine scorer -> page of K.

Plain numpy/torch, no Ray: tests, tuning trials and the in-process A/B path call it directly
and ``serving/`` hosts the same code on Ray Serve. A request is one page of a session; items
already shown (or explicitly excluded) are removed before the coarse stage, so every page is
recomputed from the remaining candidates.

Ties are broken deterministically (``simulator.session.page_order``), and scorers are
per-(user, item), so a page never depends on which other requests share its batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from policies.rankers import Scorer
from simulator.recall import SessionKeys
from simulator.session import PageOutcome, SessionBatch, SessionTotals, Simulator, page_order, run_pages


@dataclasses.dataclass(frozen=True)
class CascadeSizes:
    coarse: int = 600  # candidates the coarse stage passes to the fine stage
    page: int = 10  # items shown per page

    def __post_init__(self) -> None:
        for name in ("coarse", "page"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CascadeSizes.{name} must be an integer >= 1, got {value!r}")
        if self.page > self.coarse:
            raise ValueError(f"page size ({self.page}) cannot exceed the coarse cut ({self.coarse})")


@dataclasses.dataclass(frozen=True)
class Ranked:
    """One page for each of B requests, with the trace of every stage (-1 pads)."""

    slots: np.ndarray  # (B, K) index into the recall set of each shown item
    page: np.ndarray  # (B, K) item ids, best first
    page_scores: np.ndarray  # (B, K) fine scores of the page
    coarse_slots: np.ndarray  # (B, C) recall-set indices the coarse stage kept, best first
    coarse_items: np.ndarray  # (B, C) their item ids


class Cascade:
    """Coarse and fine scorers with their cut-off sizes."""

    def __init__(self, coarse: Scorer, fine: Scorer, sizes: CascadeSizes = CascadeSizes()) -> None:
        self.coarse, self.fine, self.sizes = coarse, fine, sizes

    @property
    def versions(self) -> dict[str, str]:
        return {"coarse": self.coarse.version, "fine": self.fine.version}

    def __call__(self, batch: SessionBatch) -> Ranked:
        """The next page of running sessions (a ``PageRanker``)."""
        return self.rank(batch.keys.user, batch.recall.items, batch.shown)

    def rank(self, users: np.ndarray, recall: np.ndarray, excluded: np.ndarray | None = None) -> Ranked:
        """Rank one page for users (B,) from recall sets (B, R) without ``excluded`` (B, R)
        candidates."""
        users, recall = np.asarray(users, dtype=np.int64), np.asarray(recall, dtype=np.int64)
        if recall.ndim != 2 or users.shape != recall.shape[:1]:
            raise ValueError(f"need users (B,) and recall (B, R), got {users.shape} and {recall.shape}")
        coarse_slots, coarse_items = coarse_stage(self.coarse, users, recall, self.sizes.coarse, excluded)
        return fine_stage(self.fine, users, coarse_slots, coarse_items, self.sizes.page)


def coarse_stage(
    scorer: Scorer, users: np.ndarray, recall: np.ndarray, size: int, excluded: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The coarse stage of ``Cascade.rank``: the best ``size`` recall-set slots (B, C) and their
    item ids (B, C), best first, -1 padding rows with fewer candidates than ``size``.
    ``serving`` runs the stages in separate deployments."""
    coarse_scores = scorer.score(users, recall)  # (B, R)
    if excluded is not None:
        coarse_scores[excluded] = -np.inf
    coarse_slots = page_order(coarse_scores, size)  # (B, C)
    kept = np.isfinite(np.take_along_axis(coarse_scores, coarse_slots, axis=1))
    coarse_slots = np.where(kept, coarse_slots, -1)
    coarse_items = np.where(kept, np.take_along_axis(recall, np.maximum(coarse_slots, 0), axis=1), -1)
    return coarse_slots, coarse_items


def fine_stage(
    scorer: Scorer, users: np.ndarray, coarse_slots: np.ndarray, coarse_items: np.ndarray, size: int
) -> Ranked:
    """The fine stage of ``Cascade.rank``: the page of ``size`` among the coarse survivors."""
    kept = coarse_slots >= 0
    fine_scores = scorer.score(users, np.maximum(coarse_items, 0))  # (B, C)
    fine_scores = np.where(kept, fine_scores, -np.inf)
    top = page_order(fine_scores, size)  # (B, K) index into the coarse list
    shown = np.isfinite(np.take_along_axis(fine_scores, top, axis=1))
    slots = np.where(shown, np.take_along_axis(coarse_slots, top, axis=1), -1)
    return Ranked(
        slots=slots,
        page=np.where(shown, np.take_along_axis(coarse_items, top, axis=1), -1),
        page_scores=np.where(shown, np.take_along_axis(fine_scores, top, axis=1), np.nan),
        coarse_slots=coarse_slots,
        coarse_items=coarse_items,
    )


@dataclasses.dataclass(frozen=True)
class CascadeSessions:
    """Per-session outcomes of sessions run through a cascade."""

    totals: SessionTotals
    first_coarse_items: np.ndarray  # (B, C) the coarse stage's output on the first page
    recall_items: np.ndarray  # (B, R) each session's recall set
    purchased: list[np.ndarray]  # in-scene purchased item ids per session


PageRanker = Callable[[SessionBatch], Ranked]
"""Ranks the next page of running sessions: a ``Cascade`` in process, or a client of the
cascade served on Ray Serve (``serving``); both must return the same pages."""


def run_sessions(sim: Simulator, rank_page: PageRanker, keys: SessionKeys) -> CascadeSessions:
    """Run sessions ``keys`` to their end, each page ranked by ``rank_page``."""
    batch = sim.start(keys)
    recall = batch.recall.items.copy()
    first_coarse = np.empty((0, 0), dtype=np.int64)
    bought_rows, bought_items = [np.empty(0, np.int64)], [np.empty(0, np.int64)]

    def choose(batch: SessionBatch, page: int, rows: np.ndarray) -> np.ndarray:
        nonlocal first_coarse
        ranked = rank_page(batch)
        if page == 0:  # every session is still running: rows are in key order
            first_coarse = ranked.coarse_items
        return ranked.slots

    def observe(rows: np.ndarray, out: PageOutcome) -> None:
        r, k = np.nonzero(out.purchases)
        bought_rows.append(rows[r])
        bought_items.append(out.items[r, k])

    totals = run_pages(sim, batch, choose, observe)
    bought_rows, bought_items = np.concatenate(bought_rows), np.concatenate(bought_items)
    order = np.argsort(bought_rows, kind="stable")
    purchased = np.split(bought_items[order], np.searchsorted(bought_rows[order], np.arange(1, len(keys))))
    return CascadeSessions(totals, first_coarse, recall, purchased)
