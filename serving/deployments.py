"""Ray Serve deployments of the cascade without models: recall and the ingress.

    split:  HTTP / handle -> Ingress -> Recall -> Coarse[arm] -> Fine -> Ingress
    fused:  HTTP / handle -> Ingress (recall, coarse[arm] and fine in its process)

- ``RecallServer`` is the home of the world: it builds ``World(config)`` once, puts it in the
  object store and keeps only that copy; the model stages (``serving.model_servers``) map the
  same shared-memory copy (zero-copy, read-only) instead of building their own (the default
  world is ~256 MiB of arrays).
- The ingress (``ingress_deployment``) assigns arms with ``common.assignment.Assignment``,
  has its backend compute the pages and serves HTTP and the batched handle method
  ``rank_batch``. The split backend (``SplitBackend``) runs one recall -> coarse -> fine chain
  of deployments per arm; the fused one (``serving.fused``) runs the same stages in the
  ingress's process, one hop instead of four.

Neither the recall nor the split ingress imports torch, so their replicas start fast and
small. Not importing ``annotations`` from ``__future__`` here is deliberate: FastAPI reads the
handlers' annotations when they are defined.
"""

import asyncio
import contextlib
import ctypes
import dataclasses

import numpy as np
import ray
from fastapi import FastAPI, HTTPException
from fastapi.openapi.utils import get_openapi
from ray import serve
from ray.serve.handle import DeploymentHandle

from serving.pipeline import PageRequests, PageResults, RecallStage, assign_arms, gather_results
from serving.schemas import (
    BAD_BODY,
    NOT_ROUTED,
    OVERLOAD,
    ArmInfo,
    Health,
    RankResponse,
    StageInfo,
    Trace,
    VersionInfo,
    Versions,
    request_model,
)
from simulator.config import WorldConfig
from simulator.world import World


def release_freed_memory() -> None:
    """Return freed heap pages to the OS (glibc keeps them otherwise, and the replica's RSS
    would count a second, dead copy of the world)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


HEALTH_TIMEOUT_S = 2.0
"""How long /healthz waits for every stage to answer."""


@dataclasses.dataclass(frozen=True)
class Batching:
    max_batch_size: int = 32
    batch_wait_timeout_s: float = 0.0


def configure_batching(method, batching: Batching) -> None:
    method.set_max_batch_size(batching.max_batch_size)
    method.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)


@serve.deployment
class RecallServer:
    """Recall sets, and the world the model stages share."""

    def __init__(self, config: WorldConfig, batching: Batching) -> None:
        self._world_ref = ray.put(World(config))
        release_freed_memory()  # the world built here is garbage now: give its pages back
        self.world = ray.get(self._world_ref)  # a read-only view of the object-store copy
        self.stage = RecallStage(self.world)
        configure_batching(self.recall, batching)

    def status(self) -> dict:
        return {"world_seed": self.world.config.seed, "recall_size": self.world.config.recall_size}

    def world_ref(self) -> list[ray.ObjectRef]:
        """The world's object reference (in a list, so it is passed on, not resolved)."""
        return [self._world_ref]

    @serve.batch
    async def recall(self, users: list, days: list, sessions: list) -> list[np.ndarray]:
        return await asyncio.to_thread(self.stage.run_many, users, days, sessions)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """What the ingress needs to know about the arms."""

    arms: tuple[str, ...]
    shares: tuple[float, ...]
    sizes: tuple[int, ...]  # coarse size per arm
    assignment: "Assignment | None"  # noqa: F821 (common.assignment; None: a single arm takes everyone)


class SplitBackend:
    """The split layout: the ingress calls the recall, per-arm coarse and fine deployments (one
    recall -> coarse -> fine chain per arm; responses are passed on unawaited, so stage outputs
    travel from stage to stage through the object store)."""

    def __init__(self, recall: DeploymentHandle, coarse: dict, fine: DeploymentHandle) -> None:
        self.recall, self.coarse, self.fine = recall, coarse, fine

    async def pages(self, requests: PageRequests, arm_of: np.ndarray, arms: tuple[str, ...]) -> PageResults:
        groups, recalls, outs = [], [], []
        for a in np.unique(arm_of):
            rows = np.flatnonzero(arm_of == a)
            sub = requests.take(rows)
            recall = self.recall.recall.remote(sub.users, sub.days, sub.sessions)
            keys = (sub.users, sub.days, sub.sessions)
            coarse = self.coarse[arms[a]].coarse.remote(*keys, recall, sub.exclude)
            outs.append(self.fine.fine.remote(*keys, coarse))
            groups.append((rows, arms[a]))
            recalls.append(recall)
        done = await asyncio.gather(*outs)
        sets = await asyncio.gather(*recalls) if requests.trace else None
        return gather_results(
            len(requests), [(r, a, o) for (r, a), o in zip(groups, done, strict=True)], sets
        )

    async def statuses(self, arms: tuple[str, ...]) -> tuple[list[dict], dict]:
        """Every arm's coarse stage status and the fine stage's (once the recall answers too)."""
        *coarse, fine, _ = await asyncio.gather(
            *(self.coarse[a].status.remote() for a in arms),
            self.fine.status.remote(),
            self.recall.status.remote(),
        )
        return coarse, fine


def ingress_deployment(config: WorldConfig, experiment: Experiment, backend: type):
    """The ingress deployment of one world and set of arms; ``backend`` computes the pages
    (``SplitBackend``, or ``serving.fused.FusedBackend``), built from the deployment's bound
    arguments. (The FastAPI app is built here, per app: a module-level app bound twice in one
    process fails to pickle.)"""
    api = FastAPI(
        title="cascade-ab: the served ranking cascade",
        description="recall -> coarse (per A/B arm) -> fine -> page, with optional stage traces."
        " A path that does not exist is a 404 and a method a path does not take a 405, both with"
        " a `Message` body (`components.responses`).",
        version="1",
    )
    Request = request_model(config, experiment.arms)
    arms = experiment.arms

    def openapi() -> dict:
        """FastAPI's schema and the answers outside the operations (``@serve.ingress`` copies
        the app: set before it)."""
        if api.openapi_schema is None:
            schema = get_openapi(
                title=api.title, version=api.version, description=api.description, routes=api.routes
            )
            schema["components"]["responses"] = NOT_ROUTED
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi

    @serve.deployment
    @serve.ingress(api)
    class Ingress:
        def __init__(self, *parts) -> None:
            self.backend = backend(*parts)

        async def reconfigure(self, user_config: dict) -> None:
            """The fused layout's models (``serving.fused``); the split ingress has no user_config."""
            await self.backend.reconfigure(user_config)

        async def rank_batch(self, requests: PageRequests) -> PageResults:
            """Pages for many requests in one call (the traffic drivers' entry point)."""
            requests.validate(config, arms)
            return await self.backend.pages(
                requests, assign_arms(requests, arms, experiment.assignment), arms
            )

        @api.post("/rank", responses=BAD_BODY | OVERLOAD)
        async def rank(self, request: Request) -> RankResponse:
            """The next page for one user's session."""
            res = await self.rank_batch(
                PageRequests.of(
                    [request.user_id],
                    request.day,
                    request.session,
                    request.page,
                    [request.exclude],
                    request.arm,
                    request.trace,
                )
            )
            shown = res.items[0] >= 0
            items = res.items[0][shown].tolist()
            trace = None
            if request.trace:
                coarse = res.coarse_items[0]
                trace = Trace(recall=res.recall[0].tolist(), coarse=coarse[coarse >= 0].tolist(), fine=items)
            return RankResponse(
                user_id=request.user_id,
                day=request.day,
                session=request.session,
                page=request.page,
                arm=str(res.arms[0]),
                items=items,
                scores=res.scores[0][shown].tolist(),
                versions=Versions(coarse=str(res.coarse_versions[0]), fine=str(res.fine_versions[0])),
                trace=trace,
            )

        @api.get("/healthz", responses=OVERLOAD)
        async def healthz(self) -> Health:
            """OK once every stage answers (model stages load after the ingress is up)."""
            try:
                await asyncio.wait_for(self.backend.statuses(arms), HEALTH_TIMEOUT_S)
            except TimeoutError:
                raise HTTPException(503, "stages are still starting") from None
            return Health()

        @api.get("/version", responses=OVERLOAD)
        async def version(self) -> VersionInfo:
            """The models being served (they change when a scorer is swapped)."""
            statuses, fine = await self.backend.statuses(arms)
            return VersionInfo(
                arms={
                    a: ArmInfo(coarse=s["version"], spec=s["spec"], coarse_size=size, share=share)
                    for a, s, size, share in zip(
                        experiment.arms, statuses, experiment.sizes, experiment.shares, strict=True
                    )
                },
                fine=StageInfo(version=fine["version"], spec=fine["spec"]),
                page_size=config.page_size,
                world={
                    "seed": config.seed,
                    "n_users": config.n_users,
                    "n_items": config.n_items,
                    "recall_size": config.recall_size,
                },
                assignment=(
                    {"salt": experiment.assignment.salt, "layer": experiment.assignment.layer}
                    if experiment.assignment
                    else {}
                ),
            )

    return Ingress
