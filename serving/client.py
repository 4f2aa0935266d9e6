"""A ``PageRanker`` backed by the served cascade: ``run_sessions(sim, ServeRanker(handle), keys)``
gives the same sessions as ``run_sessions(sim, cascade, keys)`` in process.

It sends each page of running sessions to the ingress's batched entry point
(``rank_batch``) in chunks, several in flight at once, and maps the returned item ids back
to the slots of the simulator's recall sets.
"""

from __future__ import annotations

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from policies.cascade import Ranked
from serving.pipeline import PageRequests, PageResults, recall_slots
from simulator.session import SessionBatch


def shown_items(batch: SessionBatch) -> np.ndarray:
    """Item ids each session already showed (B, E), -1 pads: the requests' ``exclude``."""
    shown = batch.shown
    counts = shown.sum(1)
    width = int(counts.max(initial=0))
    first = np.argsort(~shown, axis=1, kind="stable")[:, :width]  # shown slots first
    items = np.take_along_axis(batch.recall.items, first, axis=1)
    return np.where(np.arange(width) < counts[:, None], items, -1)


class ServeRanker:
    """Ranks pages through a running app's ingress handle (a ``PageRanker``).

    ``arm`` forces every request into one arm (per-arm traffic of an A/B engine); None lets
    the ingress assign arms. ``chunk`` requests go in one call, at most ``max_in_flight``
    calls at once (keep it below the ingress's ``max_ongoing_requests``). After a call,
    ``last`` holds the full results (arms, model versions, coarse lists).
    """

    def __init__(
        self, handle: DeploymentHandle, arm: str | None = None, chunk: int = 64, max_in_flight: int = 8
    ) -> None:
        if chunk < 1 or max_in_flight < 1:
            raise ValueError(f"chunk and max_in_flight must be >= 1, got {chunk}, {max_in_flight}")
        self.handle, self.arm, self.chunk, self.max_in_flight = handle, arm, chunk, max_in_flight
        self.last: PageResults | None = None

    @classmethod
    def connect(cls, app_name: str = "cascade", **options) -> ServeRanker:
        """A ranker for the app ``app_name`` already running on Serve."""
        return cls(serve.get_app_handle(app_name), **options)

    def rank(self, requests: PageRequests) -> PageResults:
        """Results of any number of requests, in order (chunked and pipelined)."""
        n = len(requests)
        starts = list(range(0, n, self.chunk))
        pending, results = [], []
        for lo in starts:
            if len(pending) >= self.max_in_flight:
                results.append(pending.pop(0).result())
            rows = np.arange(lo, min(lo + self.chunk, n))
            pending.append(self.handle.rank_batch.remote(requests.take(rows)))
        results.extend(p.result() for p in pending)
        return _concat(results, n)

    def __call__(self, batch: SessionBatch) -> Ranked:
        """The next page of running sessions (the ``PageRanker`` protocol)."""
        keys = batch.keys
        requests = PageRequests.of(
            keys.user, keys.day, keys.session, batch.pages, shown_items(batch), self.arm
        )
        res = self.rank(requests)
        self.last = res
        recall = batch.recall.items
        return Ranked(
            slots=recall_slots(recall, res.items),
            page=res.items,
            page_scores=res.scores,
            coarse_slots=recall_slots(recall, res.coarse_items),
            coarse_items=res.coarse_items,
        )


def _concat(parts: list[PageResults], n: int) -> PageResults:
    if not parts:
        empty = np.empty(0, dtype=str)
        return PageResults(
            empty, np.empty((0, 0), np.int64), np.empty((0, 0)), np.empty((0, 0), np.int64), empty, empty
        )

    def stack(name: str, fill) -> np.ndarray:
        arrays = [getattr(p, name) for p in parts]
        width = max(a.shape[1] for a in arrays)
        out = np.full((n, width), fill, dtype=arrays[0].dtype)
        at = 0
        for a in arrays:
            out[at : at + len(a), : a.shape[1]] = a
            at += len(a)
        return out

    return PageResults(
        arms=np.concatenate([p.arms for p in parts]),
        items=stack("items", -1),
        scores=stack("scores", np.nan),
        coarse_items=stack("coarse_items", -1),
        coarse_versions=np.concatenate([p.coarse_versions for p in parts]),
        fine_versions=np.concatenate([p.fine_versions for p in parts]),
        recall=stack("recall", -1) if all(p.recall is not None for p in parts) else None,
    )
