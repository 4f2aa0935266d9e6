"""``ServeRanker`` retries a call that failed on a dead replica, and only such a call: a run
through Serve survives the loss of any deployment's replica with the pages of an undisturbed
run."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from ray import exceptions as ray_errors
from ray.serve import exceptions as serve_errors

from policies.cascade import run_sessions
from serving.client import UPSTREAM_DIED, transient
from serving.pipeline import PageRequests, PageResults
from simulator import SMALL

from .conftest import APP


def test_deaths_are_transient_and_bad_requests_are_not() -> None:
    died = ray_errors.ActorDiedError()
    assert transient(died)
    assert transient(ray_errors.RayTaskError("rank_batch", "traceback", died))  # as a caller sees it
    assert not transient(ray_errors.RayTaskError("rank_batch", "traceback", ValueError("bad arm")))
    upstream = serve_errors.RayServeException(f"Request to deployment 'fine' failed because {UPSTREAM_DIED}")
    assert transient(ray_errors.RayTaskError("rank_batch", "traceback", upstream))  # a stage's input died
    assert not transient(serve_errors.RayServeException("Serve is not running"))
    assert not transient(ValueError("users must be a 1-d array"))


def _cpu_s(pid: int) -> float:
    """CPU time (user + system, all threads) of process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _with_ballast(requests: PageRequests, n: int) -> PageRequests:
    """``requests`` followed by ``n`` requests of sessions nobody else asks for (day 1000+), so
    that every stage works on the call for a while; pages are batch-independent."""
    users = np.arange(n) % SMALL.n_users
    exclude = np.full((n, requests.exclude.shape[1]), -1, dtype=np.int64)
    return PageRequests.of(
        np.concatenate([requests.users, users]),
        np.concatenate([requests.days, 1000 + np.arange(n) // SMALL.n_users]),
        np.concatenate([requests.sessions, np.zeros(n, np.int64)]),
        np.concatenate([requests.pages, np.zeros(n, np.int64)]),
        np.concatenate([requests.exclude, exclude]),
        requests.arm,
    )


class _Head:
    """The first ``n`` rows of a response's results."""

    def __init__(self, response, n: int) -> None:
        self.response, self.n = response, n

    def result(self) -> PageResults:
        res = self.response.result()
        return PageResults(
            *(getattr(res, f.name)[: self.n] for f in dataclasses.fields(PageResults) if f.name != "recall")
        )


class _KillInRequest:
    """A stand-in for the ingress handle whose ``at``-th call carries ``ballast`` extra requests;
    once the replica of ``busy`` has spent ``cpu_s`` seconds of CPU since that call was sent, it
    SIGKILLs the replica of ``victim``: the kill lands inside the call, which fails."""

    def __init__(self, handle, pids, kill, victim: str, busy: str, at: int = 2, ballast: int = 6000) -> None:
        self.handle, self.pids, self.kill = handle, pids, kill
        self.victim, self.busy, self.at = victim, busy, at
        self.ballast, self.cpu_s = ballast, 0.3
        self.calls, self.killed, self.users = 0, [], None
        self.rank_batch = self

    def remote(self, requests: PageRequests):
        self.calls += 1
        if self.calls != self.at:
            return self.handle.rank_batch.remote(requests)
        (busy,) = self.pids(f"ray::ServeReplica:{APP}:{self.busy}")
        before = _cpu_s(busy)
        response = self.handle.rank_batch.remote(_with_ballast(requests, self.ballast))
        deadline = time.monotonic() + 60
        while _cpu_s(busy) - before < self.cpu_s:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.busy} never worked on the call")
            time.sleep(0.01)
        self.killed = self.kill(f"ray::ServeReplica:{APP}:{self.victim}")
        self.users = (requests.users.min(), requests.users.max())
        return _Head(response, len(requests))


def _expire(*_) -> None:
    raise TimeoutError("the run did not recover in time")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("victim", "busy", "arm"),
    [
        ("ingress", "coarse-control", "control"),  # the ingress awaits its stages: watch one of them
        ("recall", "recall", "control"),
        ("coarse-control", "coarse-control", "control"),
        ("fine", "fine", "treatment"),
    ],
)
def test_a_replica_killed_inside_a_call_costs_a_logged_retry_and_no_page(
    served, reference, small_sim, some_keys, ray_worker_pids, kill_ray_worker, victim, busy, arm
) -> None:
    keys = some_keys.take(np.arange(60))
    lines: list[str] = []
    ranker = served.ranker(arm=arm, chunk=20, log=lines.append)
    ranker.handle = killer = _KillInRequest(ranker.handle, ray_worker_pids, kill_ray_worker, victim, busy)
    before = signal.signal(signal.SIGALRM, _expire)
    signal.alarm(240)
    try:
        remote = run_sessions(small_sim, ranker, keys)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)
    local = run_sessions(small_sim, reference[arm], keys)
    assert len(killer.killed) == 1, f"no single {victim} replica found"
    for name in ("pages", "impressions", "clicks", "purchases", "gmv"):
        np.testing.assert_array_equal(getattr(remote.totals, name), getattr(local.totals, name))
    np.testing.assert_array_equal(remote.first_coarse_items, local.first_coarse_items)
    lo, hi = killer.users
    retried = f"serve: retrying 20 page requests (users {lo}-{hi})"
    assert any(line.startswith(retried) for line in lines), lines
    assert all(line.startswith("serve: retrying") for line in lines), lines
    print(f"{victim} killed: {lines}")
