"""Team-draft interleaving (two arms) and multileaving (more): one page built from several
arms' pages, every shown slot credited to the arm (team) that contributed it.

Team-draft (Radlinski, Kurup & Joachims 2008; multileaving: Schuth et al. 2014): each arm ranks
the page from the session's remaining candidates (what was shown, by any arm, is excluded for
all); then, round after round, the arms in a random order each add their best item not yet on
the page, until the page is full. An arm whose page has no item left skips its turn. While no
arm runs out, every round gives each arm exactly one slot, so the teams' sizes on a page differ
by at most one, and each team's items keep their arm's order.

The order of the arms in round r of page p of session (user, day, session) is the argsort of
``uniform(seed, Stream.INTERLEAVE, user, day, session, p, r, arm)``: a pure function of those
keys, so a page does not depend on its batch, the batch order or the worker (``common.rng``).
For two arms it is one fair coin per round. Exchanging the arms' labels is the same as
reversing each round's order, which has the same probability: the design is symmetric, the
property the preference test (``abtest.stats.interleave_test``) rests on.

Inside ``run_sessions`` (or any ``session_scores`` scope) each arm's ``Cascade`` keeps its own
session cache, so every arm scores a session once per stage, as when it runs alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from common.rng import Stream, uniform
from policies.cascade import PageRanker, Ranked
from simulator.session import SessionBatch


@dataclasses.dataclass(frozen=True)
class Interleaved(Ranked):
    """An interleaved page; ``coarse_*`` are the union of the arms' coarse outputs (each row's
    first arm's items first, duplicates dropped, -1 pads), ``page_scores`` the contributing
    arm's fine scores."""

    teams: np.ndarray  # (B, K) index of the arm that contributed each shown slot, -1 pads


def team_draft(
    lists: np.ndarray, priority: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Team-draft over ``lists`` (A, B, L) of the arms' ranked candidates (distinct per row and
    arm, -1 pads at the end) into pages of ``size``; ``priority`` (B, rounds, A): in each round
    the arms pick in ascending priority. Returns the page (B, size), the team of each slot and
    the slot's position in its team's list (-1 pads)."""
    b = lists.shape[1]
    page = np.full((b, size), -1, dtype=np.int64)
    teams = np.full((b, size), -1, dtype=np.int64)
    source = np.full((b, size), -1, dtype=np.int64)
    filled = np.zeros(b, dtype=np.int64)
    rows = np.arange(b)
    for r in range(priority.shape[1]):
        before = filled.copy()
        for arm in np.argsort(priority[:, r, :], axis=1, kind="stable").T:  # (B,) the j-th arm to pick
            candidates = lists[arm, rows]  # (B, L)
            free = (candidates >= 0) & ~(candidates[:, :, None] == page[:, None, :]).any(axis=2)
            picks = np.flatnonzero(free.any(axis=1) & (filled < size))
            first = free[picks].argmax(axis=1)
            page[picks, filled[picks]] = candidates[picks, first]
            teams[picks, filled[picks]] = arm[picks]
            source[picks, filled[picks]] = first
            filled[picks] += 1
        if np.array_equal(filled, before):  # every page full or every arm out of items
            break
    return page, teams, source


def _union(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Per row, the distinct non-negative entries of ``parts`` (B, C_i) in first-seen order, -1 pads."""
    joined = np.concatenate(parts, axis=1)
    order = np.argsort(joined, axis=1, kind="stable")
    ranked = np.take_along_axis(joined, order, axis=1)
    repeat = np.zeros_like(joined, dtype=bool)
    np.put_along_axis(repeat, order[:, 1:], ranked[:, 1:] == ranked[:, :-1], axis=1)
    kept = np.where(repeat, -1, joined)
    compact = np.take_along_axis(kept, np.argsort(kept < 0, axis=1, kind="stable"), axis=1)
    return compact[:, : int((compact >= 0).sum(axis=1).max(initial=0))]


class TeamDraft:
    """A ``PageRanker`` interleaving the pages of ``arms`` by team-draft (multileaving for more
    than two); ``seed`` draws the picking order, independently of the simulator's streams."""

    def __init__(self, arms: Sequence[PageRanker], seed: int) -> None:
        if len(arms) < 2:
            raise ValueError(f"interleaving needs at least 2 arms, got {len(arms)}")
        self.arms, self.seed = tuple(arms), int(seed)

    def __call__(self, batch: SessionBatch) -> Interleaved:
        ranked = [arm(batch) for arm in self.arms]
        size = ranked[0].slots.shape[1]
        if any(r.slots.shape != (len(batch), size) for r in ranked):
            raise ValueError(f"the arms' pages differ in shape: {[r.slots.shape for r in ranked]}")
        keys = batch.keys
        rounds, arms = np.arange(size)[None, :, None], np.arange(len(self.arms))[None, None, :]
        user, day, session, page_no = (
            x[:, None, None] for x in (keys.user, keys.day, keys.session, batch.pages)
        )
        priority = uniform(self.seed, Stream.INTERLEAVE, user, day, session, page_no, rounds, arms)
        lists = np.stack([r.slots for r in ranked])  # (A, B, K) recall slots
        slots, teams, source = team_draft(lists, priority, size)
        rows, shown = np.arange(len(batch))[:, None], slots >= 0
        all_scores = np.stack([r.page_scores for r in ranked])  # (A, B, K)
        scores = all_scores[np.maximum(teams, 0), rows, np.maximum(source, 0)]
        coarse_slots = _union([r.coarse_slots for r in ranked])
        items = batch.recall.items
        return Interleaved(
            slots=slots,
            page=np.where(shown, items[rows, np.maximum(slots, 0)], -1),
            page_scores=np.where(shown, scores, np.nan),
            coarse_slots=coarse_slots,
            coarse_items=np.where(coarse_slots >= 0, items[rows, np.maximum(coarse_slots, 0)], -1),
            teams=teams,
        )
