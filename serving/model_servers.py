"""Ray Serve deployments of the model stages (they load torch models; recall and the ingress
are in ``serving.deployments``).

- ``CoarseServer``: one deployment per arm (``coarse-<arm>``). Its scorer (user tower + item
  embeddings computed once at load, one version) comes from ``user_config={"coarse": spec}``,
  ranking by the arm's ``coarse_score`` (bound with the deployment, kept across swaps);
  a new ``user_config`` (``serve deploy``, ``ServedCascade.swap``) builds the new scorer off
  the request path, in a thread, then swaps the reference atomically: a request never mixes
  versions, and requests in flight finish with the scorer they started with.
- ``FineServer``: shared by every arm; ``user_config={"fine": spec}``, swapped the same way.

Both batch with ``@serve.batch`` and compute in a worker thread, so requests keep queueing
(forming the next batch) while a batch runs; the logic is ``serving.stages``, including each
replica's bounded per-session score cache (a request for a session the replica has not seen
recomputes its scores, so routing never changes a page). ``@serve.batch`` runs one batch at a
time per replica, so the caches see no concurrent calls.
"""

import asyncio
import warnings

import ray
import torch
from ray import serve
from ray.serve.handle import DeploymentHandle

from policies.features import FeatureStore
from policies.rankers import load_scorer
from serving.deployments import Batching, configure_batching
from serving.stages import CoarseStage, FineStage
from simulator.world import World


async def _shared_world(recall: DeploymentHandle) -> tuple[World, FeatureStore, ray.ObjectRef]:
    """The recall deployment's world (a zero-copy view of its object-store copy) and the
    feature store built from it."""
    (ref,) = await recall.world_ref.remote()
    world = await ref
    with warnings.catch_warnings():  # arrays from the object store are read-only; nothing writes them
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        features = FeatureStore.from_world(world)
    return world, features, ref


def _spec_of(user_config: dict, key: str) -> str:
    if not isinstance(user_config, dict) or set(user_config) != {key}:
        raise ValueError(f'user_config must be {{"{key}": <spec>}}, got {user_config!r}')
    return user_config[key]


@serve.deployment
class CoarseServer:
    """One arm's coarse stage; its scorer comes from ``user_config={"coarse": spec}`` and ranks
    by ``score`` ("" = the checkpoint's task)."""

    async def __init__(
        self,
        recall: DeploymentHandle,
        arm: str,
        size: int,
        score: str,
        batching: Batching,
        torch_threads: int,
    ) -> None:
        torch.set_num_threads(torch_threads)
        self.world, self.features, self._world_ref = await _shared_world(recall)
        self.arm, self.size, self.score, self.spec = arm, size, score, ""
        self.stage: CoarseStage | None = None
        configure_batching(self.coarse, batching)

    async def reconfigure(self, user_config: dict) -> None:
        """Load the scorer ``{"coarse": spec}`` (item embeddings included) off the request
        path, then swap it in; requests in flight finish with the scorer they started with."""
        spec = _spec_of(user_config, "coarse")
        scorer = await asyncio.to_thread(load_scorer, spec, self.world, self.features, "coarse", self.score)
        if self.stage is None:
            self.stage = CoarseStage(scorer, self.size)
        else:
            self.stage.swap(scorer)
        self.spec = spec

    def status(self) -> dict:
        """What this replica serves (``replica`` shows that a swap happened in place)."""
        return {
            "arm": self.arm,
            "spec": self.spec,
            "version": self.stage.scorer.version,
            "size": self.size,
            "replica": serve.get_replica_context().replica_id.unique_id,
        }

    @serve.batch
    async def coarse(self, users: list, days: list, sessions: list, recall: list, exclude: list) -> list:
        return await asyncio.to_thread(self.stage.run_many, users, days, sessions, recall, exclude)


@serve.deployment
class FineServer:
    """The fine stage shared by every arm; its scorer comes from ``user_config={"fine": spec}``."""

    async def __init__(self, recall: DeploymentHandle, batching: Batching, torch_threads: int) -> None:
        torch.set_num_threads(torch_threads)
        self.world, self.features, self._world_ref = await _shared_world(recall)
        self.spec = ""
        self.stage: FineStage | None = None
        configure_batching(self.fine, batching)

    async def reconfigure(self, user_config: dict) -> None:
        spec = _spec_of(user_config, "fine")
        scorer = await asyncio.to_thread(load_scorer, spec, self.world, self.features, "fine")
        if self.stage is None:
            self.stage = FineStage(scorer, self.world.config.page_size)
        else:
            self.stage.swap(scorer)
        self.spec = spec

    def status(self) -> dict:
        return {
            "spec": self.spec,
            "version": self.stage.scorer.version,
            "replica": serve.get_replica_context().replica_id.unique_id,
        }

    @serve.batch
    async def fine(self, users: list, days: list, sessions: list, coarse: list) -> list:
        return await asyncio.to_thread(self.stage.run_many, users, days, sessions, coarse)
