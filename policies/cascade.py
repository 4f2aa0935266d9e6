"""The cascade: recall set -> coarse scorer -> top C -> fine scorer -> page of K.

Plain numpy/torch, no Ray: tests, tuning trials and the in-process A/B path call it directly
and ``serving/`` hosts the same code on Ray Serve. A request is one page of a session; items
already shown (or explicitly excluded) are not candidates.

Scoring once per session. Scores depend only on (user, item) and a session's recall set is
fixed, so a session needs each stage's scores once:

- coarse: the recall set is scored in one call; its *order* is canonical: score descending,
  ties by recall slot (``order_prefix``). A page's coarse output (the fine stage's input, the
  "window") is the first C candidates of that order that are neither excluded nor -inf.
- fine: float32 kernels round an item's score differently depending on the other items in
  its call and its position there (measured: ~0.1 % of scores move by an ulp), so a score is
  defined by a canonical call: the fine scorer sees the session's coarse order in fixed
  chunks, positions [0, C), then [C, C + E) with E = ``FINE_CHUNK``, then [C + E + 4jE,
  C + E + 4(j + 1)E). Each page's window lies in the first C + (excluded) positions, so later
  pages need at most a chunk more: a session that ends after a few pages one chunk of E, the
  A/B traffic's exact sessions (ranked to their 30th page, ~290 positions more) two calls.

``Cascade.rank`` is the per-page reference: it computes everything afresh for each call.
``Cascade.__call__`` (the ``PageRanker``) keeps each session's coarse scores, order and fine
chunk scores in a ``SessionCache`` keyed by the session keys (user, day, session) while
``run_sessions`` runs (``session_scores``, a context variable: wrappers of the ranker keep it
working, signatures stay), and drops them when ``run_sessions`` returns; outside it every page
is rescored. Both
give identical pages, since they evaluate the same calls. The served stages keep bounded caches
of the same kind on their replicas (``serving.stages``).

The day: a scorer whose scores depend on the session's day (the oracle under taste drift) has
``score_on_day(users, items, days)``, and the stages call it with each request's day (0 when a
caller gives none); other scorers are called as ``score(users, items)``. A session's day is
fixed, so its cached scores stay valid.

Batch independence: a page never depends on which other requests share its batch. Rows of one
call are stacked only into ``Scorer.score`` calls whose per-row inputs are the canonical
chunks, and scorers score each request on its own (``policies.rankers``).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from simulator.recall import SessionKeys
from simulator.session import PageOutcome, SessionBatch, SessionTotals, Simulator, page_order, run_pages

if TYPE_CHECKING:  # the scorers load torch: not needed to rank with given scorers (serving's ingress)
    from policies.rankers import Scorer

FINE_CHUNK = 64
"""Width E of the fine scorer's second call (the first covers the C best of the coarse order);
later calls are 4E wide: the positions a session's later pages add."""


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


class SessionCache:
    """Per-session arrays by key, least recently used dropped beyond ``capacity`` (None:
    unbounded). A dropped entry is recomputed when needed: the cache never changes a page."""

    def __init__(self, capacity: int | None = None) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError(f"capacity must be >= 1 or None, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, object] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable):
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: Hashable, entry: object) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        if self.capacity is not None and len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


@dataclasses.dataclass
class _CoarseEntry:
    scores: np.ndarray  # (R,) coarse scores of the recall set
    order: np.ndarray  # (P,) recall slots: the first P of the canonical coarse order
    asked: int = 0  # the P asked for (the order is shorter when fewer scores are finite)


@dataclasses.dataclass
class _FineEntry:
    order: np.ndarray  # (F,) item ids of the coarse order that have been fine-scored
    scores: np.ndarray  # (F,) their fine scores


@dataclasses.dataclass(frozen=True)
class Window:
    """The coarse stage's output for B requests: the fine stage's input."""

    slots: np.ndarray  # (B, C) recall-set slots kept, best first, -1 pads
    items: np.ndarray  # (B, C) their item ids, -1 pads
    positions: np.ndarray  # (B, C) their positions in ``order``, -1 pads
    order: np.ndarray  # (B, P) item ids of the canonical coarse order's first P, -1 pads


@dataclasses.dataclass(frozen=True)
class Ranked:
    """One page for each of B requests, with the trace of every stage (-1 pads)."""

    slots: np.ndarray  # (B, K) index into the recall set of each shown item
    page: np.ndarray  # (B, K) item ids, best first
    page_scores: np.ndarray  # (B, K) fine scores of the page
    coarse_slots: np.ndarray  # (B, C) recall-set slots the coarse stage kept, best first
    coarse_items: np.ndarray  # (B, C) their item ids


Keys = Sequence[Hashable] | None
"""One cache key per request row (None: no cache)."""


def session_keys(keys: SessionKeys) -> list[tuple[int, int, int]]:
    """The cache key (user, day, session) of each session."""
    return list(zip(keys.user.tolist(), keys.day.tolist(), keys.session.tolist(), strict=True))


def order_prefix(scores: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` recall slots of the canonical coarse order of ``scores`` (R,): score
    descending, ties by slot, candidates without a finite score left out (they are never
    shown). Selects by threshold, so only the prefix is sorted."""
    finite = np.flatnonzero(np.isfinite(scores))
    n = min(n, len(finite))
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    neg = -scores[finite]
    if n < len(finite):
        chosen = np.flatnonzero(neg <= np.partition(neg, n - 1)[n - 1])  # ties at the cut included
    else:
        chosen = np.arange(len(finite))
    return finite[chosen[np.argsort(neg[chosen], kind="stable")][:n]]


def stage_scores(scorer: Scorer, users: np.ndarray, items: np.ndarray, days: np.ndarray | None) -> np.ndarray:
    """The scores (B, R) of ``scorer`` for items (B, R) of users (B,) on days (B,; None: day 0),
    through ``score_on_day`` where the scorer has it."""
    on_day = getattr(scorer, "score_on_day", None)
    if on_day is None:
        return scorer.score(users, items)
    return on_day(users, items, np.zeros(len(users), np.int64) if days is None else days)


def fine_chunk_end(position: np.ndarray, size: int) -> np.ndarray:
    """End (exclusive) of the fine chunk holding each order position, for coarse size ``size``."""
    later = size + FINE_CHUNK + ((position - size - FINE_CHUNK) // (4 * FINE_CHUNK) + 1) * 4 * FINE_CHUNK
    return np.where(position < size, size, np.where(position < size + FINE_CHUNK, size + FINE_CHUNK, later))


def coarse_window(
    scorer: Scorer,
    users: np.ndarray,
    recall: np.ndarray,
    size: int,
    excluded: np.ndarray | None = None,
    keys: Keys = None,
    cache: SessionCache | None = None,
    days: np.ndarray | None = None,
) -> Window:
    """The coarse stage: the first ``size`` non-excluded candidates of each row's coarse order,
    scored on each row's day (``days``, None: day 0). Coarse scores of the rows missing from
    ``cache`` are computed in one call."""
    b, r = recall.shape
    excluded = np.zeros((b, r), dtype=bool) if excluded is None else excluded
    entries: list[_CoarseEntry | None] = [None] * b
    if cache is not None:
        entries = [cache.get(k) for k in keys]
        entries = [e if e is not None and e.scores.shape == (r,) else None for e in entries]
    missing = [i for i, e in enumerate(entries) if e is None]
    if missing:
        on = None if days is None else days[missing]
        fresh = stage_scores(scorer, users[missing], recall[missing], on)  # (M, R)
        for j, i in enumerate(missing):
            entries[i] = _CoarseEntry(fresh[j], np.empty(0, dtype=np.int64))
            if cache is not None:
                cache.put(keys[i], entries[i])
    # the window lies in the first size + (excluded) positions; the order covers whole fine chunks
    n_excluded = excluded.sum(axis=1)
    wanted = np.minimum(fine_chunk_end(size + n_excluded - 1, size), r)
    for e, n in zip(entries, wanted.tolist(), strict=True):
        if e.asked < n:
            e.order, e.asked = order_prefix(e.scores, n), n
    prefixes = [e.order[:n] for e, n in zip(entries, wanted.tolist(), strict=True)]
    order = np.full((b, max((len(p) for p in prefixes), default=0)), -1, dtype=np.int64)  # recall slots
    for i, prefix in enumerate(prefixes):
        order[i, : len(prefix)] = prefix
    rows = np.arange(b)[:, None]
    safe = np.maximum(order, 0)
    ok = (order >= 0) & ~excluded[rows, safe]
    chosen = ok & (np.cumsum(ok, axis=1) <= size)
    width = min(size, order.shape[1])
    positions = np.argsort(~chosen, axis=1, kind="stable")[:, :width]  # chosen positions, in order
    positions = np.where(np.arange(width) < chosen.sum(axis=1, keepdims=True), positions, -1)
    slots = np.where(positions >= 0, np.take_along_axis(order, np.maximum(positions, 0), axis=1), -1)
    items = np.where(slots >= 0, np.take_along_axis(recall, np.maximum(slots, 0), axis=1), -1)
    order_items = np.where(order >= 0, recall[rows, safe], -1)
    return Window(slots, items, positions, order_items)


def fine_page(
    scorer: Scorer,
    users: np.ndarray,
    window: Window,
    size: int,
    keys: Keys = None,
    cache: SessionCache | None = None,
    days: np.ndarray | None = None,
) -> Ranked:
    """The fine stage: the page of ``size`` among the window, from fine scores (on each row's
    day, ``days``; None: day 0) of the canonical chunks of each row's coarse order (the chunks
    missing from ``cache`` are scored, rows needing the same chunk stacked in one call)."""
    b, c = window.positions.shape
    order = window.order
    entries: list[_FineEntry | None] = [None] * b
    if cache is not None:
        for i, k in enumerate(keys):
            e = cache.get(k)
            n = len(e.order) if e is not None else 0
            if e is not None and n <= order.shape[1] and np.array_equal(e.order, order[i, :n]):
                entries[i] = e
    entries = [e or _FineEntry(np.empty(0, np.int64), np.empty(0)) for e in entries]
    last = window.positions.max(axis=1, initial=-1)
    length = (order >= 0).sum(axis=1)
    need = np.where(last >= 0, np.minimum(fine_chunk_end(last, c), length), 0)
    chunks: dict[tuple[int, int], list[int]] = {}  # (lo, hi) -> rows needing that chunk
    for i, e in enumerate(entries):
        lo = len(e.order)
        while lo < need[i]:
            hi = int(min(fine_chunk_end(np.int64(lo), c), length[i]))
            chunks.setdefault((lo, hi), []).append(i)
            lo = hi
    for (lo, hi), rows in sorted(chunks.items()):
        on = None if days is None else days[rows]
        scored = stage_scores(scorer, users[rows], order[rows, lo:hi], on)  # (M, hi - lo)
        for j, i in enumerate(rows):
            e = entries[i]
            e.order = np.concatenate([e.order, order[i, lo:hi]])
            e.scores = np.concatenate([e.scores, scored[j]])
    if cache is not None:
        for k, e in zip(keys, entries, strict=True):
            cache.put(k, e)
    fine_scores = np.full((b, c), -np.inf)
    for i, e in enumerate(entries):
        kept = window.positions[i] >= 0
        fine_scores[i, kept] = e.scores[window.positions[i, kept]]
    top = page_order(fine_scores, size)  # (B, K) index into the window
    shown = np.isfinite(np.take_along_axis(fine_scores, top, axis=1))
    return Ranked(
        slots=np.where(shown, np.take_along_axis(window.slots, top, axis=1), -1),
        page=np.where(shown, np.take_along_axis(window.items, top, axis=1), -1),
        page_scores=np.where(shown, np.take_along_axis(fine_scores, top, axis=1), np.nan),
        coarse_slots=window.slots,
        coarse_items=window.items,
    )


@dataclasses.dataclass
class _Caches:
    coarse: SessionCache = dataclasses.field(default_factory=SessionCache)
    fine: SessionCache = dataclasses.field(default_factory=SessionCache)


_SESSIONS: contextvars.ContextVar[dict[Cascade, _Caches] | None] = contextvars.ContextVar(
    "cascade_sessions", default=None
)
"""Per cascade, the session caches of the ``run_sessions`` call in progress (a cascade's
scorers are fixed while it runs)."""


@contextlib.contextmanager
def session_scores() -> Iterator[None]:
    """While open (``run_sessions`` opens it), every ``Cascade`` called as a ``PageRanker`` in
    this thread keeps its sessions' scores; they are dropped on exit."""
    token = _SESSIONS.set({})
    try:
        yield
    finally:
        _SESSIONS.reset(token)


class Cascade:
    """Coarse and fine scorers with their cut-off sizes."""

    def __init__(self, coarse: Scorer, fine: Scorer, sizes: CascadeSizes = CascadeSizes()) -> None:
        self.coarse, self.fine, self.sizes = coarse, fine, sizes

    @property
    def versions(self) -> dict[str, str]:
        return {"coarse": self.coarse.version, "fine": self.fine.version}

    def __call__(self, batch: SessionBatch) -> Ranked:
        """The next page of running sessions (a ``PageRanker``); inside ``run_sessions`` each
        session is scored once per stage, else every page is rescored."""
        scope = _SESSIONS.get()
        users, days, recall = batch.keys.user, batch.keys.day, batch.recall.items
        if scope is None:
            return self.rank(users, recall, batch.shown, days)
        caches = scope.setdefault(self, _Caches())
        keys = session_keys(batch.keys)
        size = self.sizes.coarse
        window = coarse_window(self.coarse, users, recall, size, batch.shown, keys, caches.coarse, days)
        return fine_page(self.fine, users, window, self.sizes.page, keys, caches.fine, days)

    def rank(
        self,
        users: np.ndarray,
        recall: np.ndarray,
        excluded: np.ndarray | None = None,
        days: np.ndarray | None = None,
    ) -> Ranked:
        """Rank one page for users (B,) from recall sets (B, R) without ``excluded`` (B, R)
        candidates on ``days`` (B,; None: day 0), every score computed afresh (the per-page
        reference)."""
        users, recall = np.asarray(users, dtype=np.int64), np.asarray(recall, dtype=np.int64)
        if recall.ndim != 2 or users.shape != recall.shape[:1]:
            raise ValueError(f"need users (B,) and recall (B, R), got {users.shape} and {recall.shape}")
        days = None if days is None else np.broadcast_to(np.asarray(days, dtype=np.int64), users.shape)
        window = coarse_window(self.coarse, users, recall, self.sizes.coarse, excluded, days=days)
        return fine_page(self.fine, users, window, self.sizes.page, days=days)


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


def run_sessions(
    sim: Simulator, rank_page: PageRanker, keys: SessionKeys, exact: bool = False
) -> CascadeSessions:
    """Run sessions ``keys`` to their end, each page ranked by ``rank_page``; a ``Cascade``
    (also wrapped) scores each session once per stage meanwhile. ``exact``: also the sessions'
    totals in expectation over every draw (``simulator.session.ExactTotals``; ranks the pages
    beyond where each user left too)."""
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

    with session_scores():
        totals = run_pages(sim, batch, choose, observe, exact)
    bought_rows, bought_items = np.concatenate(bought_rows), np.concatenate(bought_items)
    order = np.argsort(bought_rows, kind="stable")
    purchased = np.split(bought_items[order], np.searchsorted(bought_rows[order], np.arange(1, len(keys))))
    return CascadeSessions(totals, first_coarse, recall, purchased)
