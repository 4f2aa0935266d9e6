"""The fused layout: every stage of the cascade in the ingress's process.

    HTTP / handle -> Ingress (recall -> coarse[arm] -> fine, ``serving.stages.FusedCascade``)

One Serve hop per page instead of the split layout's four (``serving.deployments.SplitBackend``):
lower latency, but the stages scale together (one deployment) and every replica holds its own
world and every arm's models. The models come from the ingress's
``user_config={"coarse": {arm: spec, ...}, "fine": spec}``; a new one (``ServedCascade.swap``)
loads the changed scorers off the request path, in a thread, and swaps them in as the split
stages do: requests in flight finish with the scorers they started with.
"""

import asyncio

import numpy as np
import torch
from ray import serve

from policies.features import FeatureStore
from policies.rankers import load_scorer
from serving.deployments import Batching, configure_batching
from serving.pipeline import PageRequests, PageResults, RecallStage, gather_results
from serving.stages import CoarseStage, FineStage, FusedCascade
from simulator.config import WorldConfig
from simulator.world import World


def fused_specs(user_config: dict, arms: tuple[str, ...]) -> dict:
    """The checked ``{"coarse": {arm: spec}, "fine": spec}`` user_config of a fused ingress."""
    if (
        not isinstance(user_config, dict)
        or set(user_config) != {"coarse", "fine"}
        or not isinstance(user_config["coarse"], dict)
        or set(user_config["coarse"]) != set(arms)
    ):
        raise ValueError(
            f'user_config must be {{"coarse": {{<arm>: <spec>}} for {list(arms)}, "fine": <spec>}}'
        )
    return user_config


class FusedBackend:
    """The fused ingress's pages: one worker thread runs a whole ``@serve.batch`` of calls."""

    def __init__(
        self,
        config: WorldConfig,
        sizes: dict[str, int],
        scores: dict[str, str],
        batching: Batching,
        torch_threads: int,
    ) -> None:
        """``sizes``, ``scores``: each arm's coarse size and coarse score ("" = the checkpoint's)."""
        torch.set_num_threads(torch_threads)
        self.world = World(config)
        self.features = FeatureStore.from_world(self.world)
        self.sizes, self.scores = sizes, scores
        self.specs: dict = {"coarse": {}, "fine": None}
        self.cascade: FusedCascade | None = None
        configure_batching(self._run, batching)

    async def reconfigure(self, user_config: dict) -> None:
        """Load the scorers whose spec changed, then swap them in (all at once on start-up)."""
        specs = fused_specs(user_config, tuple(self.sizes))

        def load(kind: str, spec: str, score: str = ""):
            return load_scorer(spec, self.world, self.features, kind, score)

        coarse = {
            arm: await asyncio.to_thread(load, "coarse", spec, self.scores[arm])
            for arm, spec in specs["coarse"].items()
            if self.specs["coarse"].get(arm) != spec
        }
        fine = (
            await asyncio.to_thread(load, "fine", specs["fine"])
            if self.specs["fine"] != specs["fine"]
            else None
        )
        if self.cascade is None:
            stages = {arm: CoarseStage(coarse[arm], size) for arm, size in self.sizes.items()}
            self.cascade = FusedCascade(
                RecallStage(self.world), stages, FineStage(fine, self.world.config.page_size)
            )
        else:
            for arm, scorer in coarse.items():
                self.cascade.coarse[arm].swap(scorer)
            if fine is not None:
                self.cascade.fine.swap(fine)
        self.specs = {"coarse": dict(specs["coarse"]), "fine": specs["fine"]}

    async def pages(self, requests: PageRequests, arm_of: np.ndarray, arms: tuple[str, ...]) -> PageResults:
        groups = [(np.flatnonzero(arm_of == a), arms[a]) for a in np.unique(arm_of)]
        outs = await asyncio.gather(
            *(
                self._run(
                    arm,
                    requests.users[rows],
                    requests.days[rows],
                    requests.sessions[rows],
                    requests.exclude[rows],
                )
                for rows, arm in groups
            )
        )
        sets = [recall for recall, _ in outs] if requests.trace else None
        results = [(rows, arm, fine) for (rows, arm), (_, fine) in zip(groups, outs, strict=True)]
        return gather_results(len(requests), results, sets)

    async def statuses(self, arms: tuple[str, ...]) -> tuple[list[dict], dict]:
        coarse = [
            {"spec": self.specs["coarse"][a], "version": self.cascade.coarse[a].scorer.version} for a in arms
        ]
        return coarse, {"spec": self.specs["fine"], "version": self.cascade.fine.scorer.version}

    @serve.batch
    async def _run(self, arms: list, users: list, days: list, sessions: list, exclude: list) -> list:
        return await asyncio.to_thread(self.cascade.run_many, arms, users, days, sessions, exclude)
