"""The served cascade's requests, results and plain helpers (no Ray, no torch).

A request is one page of a session: ``(user, day, session, page, exclude)``. Its recall set
is ``Recall(world)`` of ``(user, day, session)``; the ``exclude`` item ids (what the session
already showed) are removed before the coarse stage; the page is the fine top-K of the
coarse top-C. ``page`` is validated and echoed: the client says what was shown via
``exclude``.

Every stage has ``run`` (one call of B requests) and ``run_many`` (the calls one
``@serve.batch`` invocation received, concatenated into one batch and split back); rows never
interact, so a page does not depend on what it was batched with. The model stages are in
``serving.stages`` (they keep per-session score caches); this module stays free of torch so the
recall and ingress replicas start fast and small.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from policies.cascade import Window
from simulator.config import WorldConfig
from simulator.recall import Recall, SessionKeys
from simulator.world import World

if TYPE_CHECKING:  # importing abtest loads scipy: not in every replica
    from common.assignment import Assignment


@dataclasses.dataclass(frozen=True)
class PageRequests:
    """B page requests: the batched entry point of the served cascade (``Ingress.rank_batch``)."""

    users: np.ndarray  # (B,) int64 user ids
    days: np.ndarray  # (B,) int64
    sessions: np.ndarray  # (B,) int64
    pages: np.ndarray  # (B,) int64 page number within the session (validated and echoed)
    exclude: np.ndarray  # (B, E) int64 item ids not to show (already shown), -1 pads
    arm: str | None = None  # force every row into this arm; None = the experiment's assignment
    trace: bool = False  # also return each row's recall set

    @classmethod
    def of(
        cls,
        users,
        days=0,
        sessions=0,
        pages=0,
        exclude: np.ndarray | Sequence[Sequence[int]] | None = None,
        arm: str | None = None,
        trace: bool = False,
    ) -> PageRequests:
        """Requests from user ids (B,) and scalars or (B,) arrays; ``exclude`` is a padded
        (B, E) array or one sequence of item ids per row."""
        users = np.atleast_1d(np.asarray(users))
        if users.ndim != 1 or not (users.size == 0 or np.issubdtype(users.dtype, np.integer)):
            raise ValueError(f"users must be a 1-d array of integer ids, got {users.dtype} {users.shape}")
        users = users.astype(np.int64)

        def column(values, name: str) -> np.ndarray:
            values = np.asarray(values)
            if values.size and not np.issubdtype(values.dtype, np.integer):
                raise ValueError(f"{name} must be integers, got {values.dtype}")
            return np.broadcast_to(values.astype(np.int64), users.shape).copy()

        if exclude is None:
            exclude = np.full((len(users), 0), -1, dtype=np.int64)
        elif isinstance(exclude, np.ndarray) and exclude.ndim == 2:
            exclude = exclude.astype(np.int64)
        else:
            exclude = pad_rows([np.asarray(row, dtype=np.int64).reshape(-1) for row in exclude])
        if exclude.shape[0] != len(users):
            raise ValueError(f"exclude has {exclude.shape[0]} rows for {len(users)} users")
        return cls(
            users,
            column(days, "days"),
            column(sessions, "sessions"),
            column(pages, "pages"),
            exclude,
            arm,
            trace,
        )

    def __len__(self) -> int:
        return len(self.users)

    @property
    def keys(self) -> SessionKeys:
        return SessionKeys(self.users, self.days, self.sessions)

    def take(self, rows: np.ndarray) -> PageRequests:
        return dataclasses.replace(
            self,
            users=self.users[rows],
            days=self.days[rows],
            sessions=self.sessions[rows],
            pages=self.pages[rows],
            exclude=self.exclude[rows],
        )

    def validate(self, config: WorldConfig, arms: Sequence[str]) -> None:
        """Raise ValueError unless every request is valid in the world ``config``."""
        n = len(self)
        for name in ("users", "days", "sessions", "pages", "exclude"):
            value = getattr(self, name)
            if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.integer):
                raise ValueError(
                    f"{name} must be an integer array, got {getattr(value, 'dtype', type(value))}"
                )
            if value.shape[:1] != (n,):
                raise ValueError(f"{name} has {value.shape[0]} rows for {n} users")
        if n and (self.users.min() < 0 or self.users.max() >= config.n_users):
            raise ValueError(
                f"user ids must be in [0, {config.n_users}), got {self.users.min()}..{self.users.max()}"
            )
        for name in ("days", "sessions", "pages"):
            if n and getattr(self, name).min() < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name).min()}")
        if self.exclude.ndim != 2:
            raise ValueError(f"exclude must be (B, E), got shape {self.exclude.shape}")
        if self.exclude.size and (self.exclude.min() < -1 or self.exclude.max() >= config.n_items):
            raise ValueError(f"excluded item ids must be in [0, {config.n_items}) (-1 pads)")
        if self.exclude.shape[1] > config.recall_size:
            raise ValueError(
                f"at most {config.recall_size} excluded items (the recall size), got {self.exclude.shape[1]}"
            )
        if self.arm is not None and self.arm not in arms:
            raise ValueError(f"unknown arm {self.arm!r}; arms: {list(arms)}")


@dataclasses.dataclass(frozen=True)
class PageResults:
    """The pages of B requests, row for row, with the arm and model versions that made each."""

    arms: np.ndarray  # (B,) str
    items: np.ndarray  # (B, K) int64 page item ids, best first, -1 pads
    scores: np.ndarray  # (B, K) float64 fine scores of the page, NaN pads
    coarse_items: np.ndarray  # (B, C) int64 the coarse top-C (fine input), best first, -1 pads
    coarse_versions: np.ndarray  # (B,) str
    fine_versions: np.ndarray  # (B,) str
    recall: np.ndarray | None = None  # (B, R) int64 recall sets, with ``trace``

    def __len__(self) -> int:
        return len(self.arms)


@dataclasses.dataclass(frozen=True)
class CoarseOut:
    """The coarse stage's output for B requests (the fine stage's input): the window and the
    canonical coarse order whose chunks the fine stage scores (``policies.cascade.Window``)."""

    slots: np.ndarray  # (B, C) recall-set slots kept, best first, -1 pads
    items: np.ndarray  # (B, C) their item ids
    positions: np.ndarray  # (B, C) their positions in ``order``, -1 pads
    order: np.ndarray  # (B, P) item ids of the coarse order's first P, -1 pads
    version: str  # the version of the one scorer that ranked every row

    @property
    def window(self) -> Window:
        return Window(self.slots, self.items, self.positions, self.order)


@dataclasses.dataclass(frozen=True)
class FineOut:
    """The fine stage's output for B requests: their pages (plain arrays, so the ingress
    does not import the model code to read them)."""

    items: np.ndarray  # (B, K) page item ids, best first, -1 pads
    scores: np.ndarray  # (B, K) fine scores, NaN pads
    slots: np.ndarray  # (B, K) recall-set slots of the page, -1 pads
    coarse_items: np.ndarray  # (B, C) the fine stage's input
    coarse_version: str
    fine_version: str


def pad_rows(rows: Sequence[np.ndarray], fill: int = -1, width: int | None = None) -> np.ndarray:
    """Stack 1-d or 2-d arrays of different widths into one, padded on the right."""
    rows = [np.atleast_2d(r) if r.ndim == 1 else r for r in rows]
    width = max((r.shape[1] for r in rows), default=0) if width is None else width
    out = np.full((sum(len(r) for r in rows), width), fill, dtype=np.int64)
    at = 0
    for r in rows:
        out[at : at + len(r), : r.shape[1]] = r
        at += len(r)
    return out


def bounds(sizes: Sequence[int]) -> list[tuple[int, int]]:
    ends = np.cumsum(sizes)
    return [(int(e - s), int(e)) for s, e in zip(sizes, ends, strict=True)]


def exclusion_mask(recall: np.ndarray, exclude: np.ndarray) -> np.ndarray:
    """(B, R) True where a recall-set item is among the row's excluded ids (B, E)."""
    mask = np.zeros(recall.shape, dtype=bool)
    if exclude.shape[1]:
        for b in range(len(recall)):
            mask[b] = np.isin(recall[b], exclude[b])  # -1 pads never match an item id
    return mask


def recall_slots(recall: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The slot of each item id (B, K) in its row's recall set (B, R); -1 stays -1.
    Raises ValueError for an id that is not in the row's recall set."""
    slots = np.full(items.shape, -1, dtype=np.int64)
    if not items.size:
        return slots
    where = np.full(int(max(recall.max(initial=0), items.max())) + 1, -1, dtype=np.int64)
    arange = np.arange(recall.shape[1])
    for b in range(len(items)):
        where[recall[b]] = arange
        shown = items[b] >= 0
        slots[b, shown] = where[items[b, shown]]
        where[recall[b]] = -1
    if np.any(slots[items >= 0] < 0):
        raise ValueError("returned items are not in the recall set: the server runs another world")
    return slots


def assign_arms(requests: PageRequests, arms: Sequence[str], assignment: Assignment | None) -> np.ndarray:
    """The arm index (B,) of every request: the forced arm, else the experiment's assignment
    (``common.assignment``, the code the A/B engine uses); a single arm takes everyone."""
    if requests.arm is not None:
        return np.full(len(requests), list(arms).index(requests.arm), dtype=np.int64)
    if assignment is None:
        return np.zeros(len(requests), dtype=np.int64)
    if tuple(assignment.arms) != tuple(arms):
        raise ValueError(f"assignment arms {assignment.arms} differ from the served arms {tuple(arms)}")
    return assignment.assign(requests.users)


class RecallStage:
    """Recall sets of (user, day, session), from the world (the same for every arm)."""

    def __init__(self, world: World) -> None:
        self.recall = Recall(world)

    def run(self, users: np.ndarray, days: np.ndarray, sessions: np.ndarray) -> np.ndarray:
        """Recall item ids (B, R)."""
        return self.recall(SessionKeys(users, days, sessions)).items

    def run_many(self, users: list[np.ndarray], days: list[np.ndarray], sessions: list[np.ndarray]) -> list:
        sizes = [len(u) for u in users]
        items = self.run(np.concatenate(users), np.concatenate(days), np.concatenate(sessions))
        return [items[lo:hi] for lo, hi in bounds(sizes)]


def gather_results(
    n: int,
    groups: Sequence[tuple[np.ndarray, str, FineOut]],
    recall: Sequence[np.ndarray] | None = None,
) -> PageResults:
    """Put the per-arm groups (rows, arm, output) back in request order; recall sets
    (one per group) with ``trace``."""
    width = max((g[2].coarse_items.shape[1] for g in groups), default=0)
    k = max((g[2].items.shape[1] for g in groups), default=0)
    arms = np.empty(n, dtype=object)
    coarse_v, fine_v = np.empty(n, dtype=object), np.empty(n, dtype=object)
    items, scores = np.full((n, k), -1, dtype=np.int64), np.full((n, k), np.nan)
    coarse_items = np.full((n, width), -1, dtype=np.int64)
    recall_out = None
    for g, (rows, arm, out) in enumerate(groups):
        arms[rows], coarse_v[rows], fine_v[rows] = arm, out.coarse_version, out.fine_version
        items[rows], scores[rows] = out.items, out.scores
        coarse_items[rows, : out.coarse_items.shape[1]] = out.coarse_items
        if recall is not None:
            if recall_out is None:
                recall_out = np.full((n, recall[g].shape[1]), -1, dtype=np.int64)
            recall_out[rows] = recall[g]
    return PageResults(
        arms.astype(str), items, scores, coarse_items, coarse_v.astype(str), fine_v.astype(str), recall_out
    )
