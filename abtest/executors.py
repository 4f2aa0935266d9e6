"""The three ways of running shards, behind one interface.

An executor is a context manager: entering it sets up (cascades, Ray actors or the Serve
app), and it yields ``run(shards) -> iterator of (shard, user-day frame)``, in any order;
leaving it tears down what it started. Every way gives the same frames
(``abtest.traffic``: every draw is keyed by (user, day, session, item)).

- ``in_process``: this process, one torch thread.
- ``ray_actors``: ``workers`` Ray actors (1 CPU each), each holding the world and every arm's
  cascade, two shards in flight per actor. An actor that dies (its process killed, its node
  lost) is replaced and its unfinished shards go back to the queue, for any live actor or the
  replacement once it is up (a lost node's replacement may never find a CPU): a shard is atomic
  (its frame comes back whole or not at all) and keyed, so no user-day is lost or counted twice.
- ``served``: the cascade hosted on Ray Serve (``abtest.serve_traffic``), this process
  simulating; a page call that failed on a dead replica is retried (``serving.client``).

Every recovery is one line through ``log``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping

import pandas as pd
import torch

from abtest.arms import ArmSpec, build_cascades
from abtest.config import ExperimentConfig, parse_config
from abtest.traffic import Shard, Traffic
from common.ray_env import init_ray
from simulator.config import WorldConfig
from simulator.world import World

START_TIMEOUT_S = 300
"""How long the Ray shard workers may take to start (world and models loaded) before the run
fails with a message instead of waiting for CPUs that never come free."""

Log = Callable[[str], None]

Run = Callable[[Iterable[Shard]], Iterator[tuple[Shard, pd.DataFrame]]]
"""What an executor yields: run these shards, yield (shard, user-day frame) as they finish."""


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Scorers run one request at a time: tiny kernels that intra-op threads only slow down
    (several times over on a busy 2-core machine). Restores the setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _serially(traffic: Traffic) -> Run:
    def run(shards: Iterable[Shard]) -> Iterator[tuple[Shard, pd.DataFrame]]:
        with _one_torch_thread():
            for shard in shards:
                yield shard, traffic.run(shard)

    return run


@contextlib.contextmanager
def in_process(config: ExperimentConfig, world: World, arms: Mapping[str, ArmSpec]) -> Iterator[Run]:
    """Shards run one after the other in this process."""
    yield _serially(Traffic(config, world, build_cascades(world, arms)))


@contextlib.contextmanager
def served(
    config: ExperimentConfig, world: World, arms: Mapping[str, ArmSpec], log: Log = print
) -> Iterator[Run]:
    """Pages ranked by the cascade on Ray Serve; sessions simulated in this process."""
    from abtest.serve_traffic import serve_rankers  # noqa: PLC0415 (imports serving, ray)

    with serve_rankers(config, arms, log) as rankers:
        yield _serially(Traffic(config, world, rankers))


@contextlib.contextmanager
def ray_actors(
    config: ExperimentConfig,
    world_config: WorldConfig,
    arms: Mapping[str, ArmSpec],
    workers: int,
    log: Log = print,
    max_restarts: int | None = None,
) -> Iterator[Run]:
    """``workers`` Ray actors; entering returns once they are built, so start-up and
    throughput are timed apart. A dead actor is replaced, at most ``max_restarts`` times in
    all (default: ``2 * workers``), then the error is raised. Shuts Ray down after if this
    started it."""
    import ray  # noqa: PLC0415

    @ray.remote(num_cpus=1)
    class ShardWorker:
        def __init__(self, raw_config: dict, world_config: WorldConfig, arms: dict) -> None:
            torch.set_num_threads(1)
            world = World(world_config)
            self.traffic = Traffic(parse_config(raw_config), world, build_cascades(world, arms))

        def ready(self) -> bool:
            return True

        def run(self, shard: Shard) -> tuple[Shard, pd.DataFrame]:
            return shard, self.traffic.run(shard)

    def start() -> ray.actor.ActorHandle:
        return ShardWorker.remote(config.to_dict(), world_config, dict(arms))

    restarts = 2 * workers if max_restarts is None else max_restarts

    def run(shards: Iterable[Shard]) -> Iterator[tuple[Shard, pd.DataFrame]]:
        nonlocal restarts
        queue = list(shards)
        pending = {}  # ref -> (slot, actor, shard); shard None: a new actor's ``ready``
        starting: set[int] = set()  # slots whose new actor is not up yet

        def feed(slot: int) -> None:
            """Keep two shards in flight on the actor of ``slot``."""
            busy = sum(s == slot and shard is not None for s, _, shard in pending.values())
            for _ in range(2 - busy):
                if queue:
                    shard = queue.pop(0)
                    pending[actors[slot].run.remote(shard)] = (slot, actors[slot], shard)

        for slot in range(len(actors)):
            feed(slot)
        while queue or any(shard is not None for *_, shard in pending.values()):
            done, _ = ray.wait(list(pending), num_returns=1)
            slot, actor, shard = pending.pop(done[0])
            try:
                result = ray.get(done[0])
            except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as err:
                if actors[slot] is actor:  # the first of its calls to fail: replace it
                    if restarts == 0:
                        raise
                    restarts -= 1
                    actors[slot] = start()
                    starting.add(slot)
                    pending[actors[slot].ready.remote()] = (slot, actors[slot], None)
                    log(f"ray: shard worker {slot} died ({type(err).__name__}); replaced it")
                if shard is not None:  # any live actor reruns it, the replacement once it is up
                    log(f"ray: rerunning shard {shard.key} of dead shard worker {slot}")
                    queue.insert(0, shard)
                for live in set(range(len(actors))) - starting:
                    feed(live)
                continue
            if actors[slot] is actor:
                starting.discard(slot)
                feed(slot)
            if shard is not None:
                yield result

    started_ray = init_ray(object_store_memory=256 * 2**20)
    free = int(ray.available_resources().get("CPU", 0.0))
    if 1 <= free < workers:  # results do not depend on the number of workers: use what is free
        log(f"ray: {workers} shard workers asked, {free} CPU(s) free: running {free}")
        workers = free
    actors = []
    try:
        actors = [start() for _ in range(workers)]
        try:
            ray.get([actor.ready.remote() for actor in actors], timeout=START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            free = ray.available_resources().get("CPU", 0.0)
            raise RuntimeError(
                f"ray: {workers} shard worker(s) (1 CPU each) did not start within {START_TIMEOUT_S} s; "
                f"the cluster has {free:g} CPU(s) free: use fewer workers or free the CPUs"
            ) from None
        yield run
    finally:
        for actor in actors:
            ray.kill(actor)
        if started_ray:
            ray.shutdown()
