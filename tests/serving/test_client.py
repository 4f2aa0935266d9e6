"""``ServeRanker`` retries a call that failed on a dead replica, and only such a call: a run
through Serve survives the loss of any deployment's replica with the pages of an undisturbed
run."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
from ray import exceptions as ray_errors

from policies.cascade import run_sessions
from serving.client import transient

from .conftest import APP


def test_deaths_are_transient_and_bad_requests_are_not() -> None:
    died = ray_errors.ActorDiedError()
    assert transient(died)
    assert transient(ray_errors.RayTaskError("rank_batch", "traceback", died))  # as a caller sees it
    assert not transient(ray_errors.RayTaskError("rank_batch", "traceback", ValueError("bad arm")))
    assert not transient(ValueError("users must be a 1-d array"))


class _KillInFlight:
    """A stand-in for the ingress handle that kills the replicas of ``deployment`` just after
    sending the ``at``-th call, while that call is in flight."""

    def __init__(self, handle, kill, deployment: str, at: int = 3) -> None:
        self.handle, self.kill, self.deployment, self.at = handle, kill, deployment, at
        self.calls, self.killed = 0, []
        self.rank_batch = self

    def remote(self, requests):
        response = self.handle.rank_batch.remote(requests)
        self.calls += 1
        if self.calls == self.at:
            time.sleep(0.05)  # reaching the replicas
            self.killed = self.kill(f"ray::ServeReplica:{APP}:{self.deployment}")
        return response


def _expire(*_) -> None:
    raise TimeoutError("the run did not recover in time")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("deployment", "arm"),
    [("ingress", "control"), ("recall", "control"), ("coarse-treatment", "treatment"), ("fine", "control")],
)
def test_a_run_survives_a_killed_replica_of_each_deployment(
    served, reference, small_sim, some_keys, kill_ray_worker, deployment, arm
) -> None:
    keys = some_keys.take(np.arange(60))
    lines: list[str] = []
    ranker = served.ranker(arm=arm, chunk=20, log=lines.append)
    ranker.handle = killer = _KillInFlight(ranker.handle, kill_ray_worker, deployment)
    before = signal.signal(signal.SIGALRM, _expire)
    signal.alarm(240)
    try:
        remote = run_sessions(small_sim, ranker, keys)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)
    local = run_sessions(small_sim, reference[arm], keys)
    assert len(killer.killed) == 1, f"no single {deployment} replica found"
    for name in ("pages", "impressions", "clicks", "purchases", "gmv"):
        np.testing.assert_array_equal(getattr(remote.totals, name), getattr(local.totals, name))
    np.testing.assert_array_equal(remote.first_coarse_items, local.first_coarse_items)
    # the handle itself resends a call a dead ingress never started; the other calls are ours
    assert all(line.startswith("serve: retrying") for line in lines), lines
    print(f"{deployment}: {len(lines)} retries")
