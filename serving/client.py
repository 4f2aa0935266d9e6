"""A ``PageRanker`` backed by the served cascade: ``run_sessions(sim, ServeRanker(handle), keys)``
gives the same sessions as ``run_sessions(sim, cascade, keys)`` in process.

It sends each page of running sessions to the ingress's batched entry point
(``rank_batch``) in chunks, several in flight at once, and maps the returned item ids back
to the slots of the simulator's recall sets.

Page requests are idempotent (the same keys give the same page, whichever replica ranks
them), so a call that failed because a replica, worker or node died (``transient``) is sent
again after a bounded back-off while Ray Serve replaces what died; each retry is one line
through ``log``. Any other error (a bad request) is raised at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from ray import exceptions as ray_errors
from ray import serve
from ray.serve import exceptions as serve_errors
from ray.serve.handle import DeploymentHandle

from policies.cascade import Ranked
from serving.pipeline import PageRequests, PageResults, recall_slots
from simulator.session import SessionBatch

RETRY_TIMEOUT_S = 180.0
"""How long a failed call is retried (a replica restart loads torch and the models: ~5-30 s)."""
BACKOFF_S = (0.25, 4.0)
"""First and longest wait between retries; the wait doubles."""

_TRANSIENT = (
    ray_errors.RayActorError,  # a replica died (ActorDiedError) or is unreachable
    ray_errors.WorkerCrashedError,
    ray_errors.NodeDiedError,
    ray_errors.ObjectLostError,  # a stage output held by a dead replica
    ray_errors.OwnerDiedError,
    serve_errors.BackPressureError,
    serve_errors.DeploymentUnavailableError,
    serve_errors.ReplicaUnavailableError,
)


UPSTREAM_DIED = "an upstream actor died"
"""What Serve's router (Ray 2.60) says when a stage's input came from a replica that died; the
ActorDiedError it wraps does not survive the trip back to the caller."""


def transient(err: BaseException) -> bool:
    """Whether ``err`` (or what it wraps) is a death Ray recovers from, so a retry can succeed."""
    while err is not None:
        if isinstance(err, _TRANSIENT):
            return True
        if isinstance(err, serve_errors.RayServeException) and UPSTREAM_DIED in str(err):
            return True
        err = getattr(err, "cause", None) or err.__cause__
    return False


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
    ``last`` holds the full results (arms, model versions, coarse lists). A call that failed
    on a death is retried for up to ``retry_timeout_s`` (each retry logged through ``log``).
    """

    def __init__(
        self,
        handle: DeploymentHandle,
        arm: str | None = None,
        chunk: int = 64,
        max_in_flight: int = 8,
        log: Callable[[str], None] = print,
        retry_timeout_s: float = RETRY_TIMEOUT_S,
    ) -> None:
        if chunk < 1 or max_in_flight < 1:
            raise ValueError(f"chunk and max_in_flight must be >= 1, got {chunk}, {max_in_flight}")
        self.handle, self.arm, self.chunk, self.max_in_flight = handle, arm, chunk, max_in_flight
        self.log, self.retry_timeout_s = log, retry_timeout_s
        self.last: PageResults | None = None
        self.retries = 0

    @classmethod
    def connect(cls, app_name: str = "cascade", **options) -> ServeRanker:
        """A ranker for the app ``app_name`` already running on Serve."""
        return cls(serve.get_app_handle(app_name), **options)

    def rank(self, requests: PageRequests) -> PageResults:
        """Results of any number of requests, in order (chunked and pipelined)."""
        n = len(requests)
        pending, results = [], []
        for lo in range(0, n, self.chunk):
            if len(pending) >= self.max_in_flight:
                results.append(self._result(*pending.pop(0)))
            chunk = requests.take(np.arange(lo, min(lo + self.chunk, n)))
            pending.append((chunk, self.handle.rank_batch.remote(chunk)))
        results.extend(self._result(*p) for p in pending)
        return _concat(results, n)

    def _result(self, chunk: PageRequests, response) -> PageResults:
        """The call's results; sent again after a transient failure, with a bounded back-off."""
        deadline = time.monotonic() + self.retry_timeout_s
        wait = BACKOFF_S[0]
        while True:
            try:
                return response.result()
            except Exception as err:
                if not transient(err) or time.monotonic() + wait > deadline:
                    raise
                self.retries += 1
                self.log(
                    f"serve: retrying {len(chunk)} page requests (users {chunk.users.min()}-"
                    f"{chunk.users.max()}) in {wait:.2f} s after {type(err).__name__}"
                )
                time.sleep(wait)
                wait = min(2 * wait, BACKOFF_S[1])
                response = self.handle.rank_batch.remote(chunk)

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
