"""Scorers: what a cascade stage calls to score candidates.

Every scorer maps users (B,) and candidate items (B, R) to scores (B, R), float64, higher is
better, and carries a ``version`` naming the model behind it. A score depends only on the
(user, item) pair, never on the batch it was computed in, so a page is the same whether a
request is ranked alone or with others (``tests/policies/test_rankers.py`` checks this).

- ``CoarseModelScorer``: a ``CoarseRanker`` with its item tower precomputed for the whole
  pool (``ItemEmbeddings``); it refuses embeddings of another model version. It ranks by one
  task's logit, or (task gmv) by expected GMV from the purchase head and the item's price.
- ``FineModelScorer``: a ``FineRanker``'s pCTR (task click) or pCTCVR (task purchase).
- Baselines: ``RandomScorer``, ``PopularityScorer`` and ``OracleScorer`` (the simulator's
  true expected value; an upper bound no model can see).
"""

from __future__ import annotations

import functools
from typing import Protocol

import numpy as np
import torch

from common.rng import Stream, uniform
from policies.baselines import BASELINES
from policies.batch import take_rows
from policies.checkpoint import (
    CheckpointError,
    ItemEmbeddings,
    export_item_embeddings,
    load_checkpoint,
    model_version,
)
from policies.custom import is_custom_spec, load_custom
from policies.features import FeatureStore, vocab_of
from policies.models import CoarseRanker, FineRanker, FineUser
from policies.tasks import Task
from simulator.oracle import Objective, expected_value
from simulator.world import World


class Scorer(Protocol):
    """What a cascade stage calls: scores (B, R) float64 of items (B, R) for users (B,), higher
    is better, each depending only on its (user, item) pair; ``version`` names the model.
    Any object of this shape can rank an arm (``policies.custom``)."""

    version: str

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores (B, R) of items (B, R) for users (B,)."""
        ...


def _per_request(score_one, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Score each request on its own: float32 kernels round differently for different batch
    shapes, so scoring requests one by one is what makes a score independent of its batch."""
    users, items = np.asarray(users), np.asarray(items)
    out = np.empty(items.shape, dtype=np.float64)
    for b in range(len(users)):
        out[b] = score_one(users[b : b + 1], items[b : b + 1]).numpy()[0]
    return out


class CoarseModelScorer:
    """Scores with one task logit of a coarse model, user tower online, item tower cached.

    Task gmv ranks by expected GMV, pCTCVR x price, as its log: log sigmoid(purchase logit) +
    log price (the purchase head's logit read as the log-odds of a purchase, which its
    distillation targets, the teacher's pCTCVR, make it; the item prices come from
    ``features.item_price``)."""

    def __init__(
        self,
        model: CoarseRanker,
        features: FeatureStore,
        task: Task = Task.CLICK,
        embeddings: ItemEmbeddings | None = None,
    ) -> None:
        model.eval()
        self.model, self.features, self.task = model, features, Task(task)
        self.version = model_version(model)
        if embeddings is None:
            embeddings = export_item_embeddings(model, features.items)
        if embeddings.version != self.version:
            raise CheckpointError(
                f"item embeddings of model version {embeddings.version} cannot be used with "
                f"user tower version {self.version}"
            )
        if embeddings.vectors.shape != (features.n_items, model.item_dim):
            raise ValueError(
                f"item embeddings have shape {tuple(embeddings.vectors.shape)}, "
                f"expected {(features.n_items, model.item_dim)}"
            )
        self.embeddings = embeddings
        self.log_price = None
        if self.task is Task.GMV:
            if features.item_price is None:
                raise ValueError("task gmv needs the item prices (FeatureStore.item_price)")
            self.log_price = torch.log(torch.as_tensor(features.item_price, dtype=torch.float64))

    def task_score(self, logits: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The ranking score of this scorer's task from the model's logits (..., n_tasks) of
        items (...): the one place a model output becomes a score."""
        logit = logits[..., self.task.index]
        if self.log_price is None:
            return logit
        return torch.nn.functional.logsigmoid(logit.double()) + self.log_price[items]

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return _per_request(self._score_one, users, items)

    @torch.no_grad()
    def _score_one(self, user: np.ndarray, items: np.ndarray) -> torch.Tensor:
        user_vec = self.model.encode_user(self.features.users(user))  # (1, D_u)
        ids = torch.as_tensor(items, dtype=torch.long)
        item_vecs = take_rows(self.embeddings.vectors, ids)  # (1, R, D_i)
        return self.task_score(self.model.score(user_vec, item_vecs), ids)  # (1, R)


FINE_TASKS = (Task.CLICK, Task.PURCHASE)
"""The tasks a fine ranker can serve: click ranks by pCTR, purchase by pCTCVR."""


class FineModelScorer:
    """Scores with a fine model's pCTR (task click, the default) or pCTCVR (task purchase).

    A user's side of the model (``FineRanker.encode_user``: history embeddings, mask, means)
    is kept for the ``USER_CACHE`` users asked most recently: a session asks for its user's
    scores several times (its coarse order chunk by chunk, then the next day or arm), and the
    kept tensors are those a fresh call computes, so scores do not change."""

    USER_CACHE = 2048

    def __init__(self, model: FineRanker, features: FeatureStore, task: Task = Task.CLICK) -> None:
        if Task(task) not in FINE_TASKS:
            raise ValueError(f"a fine ranker serves {[str(t) for t in FINE_TASKS]}, not {str(task)!r}")
        model.eval()
        self.model, self.features, self.task = model, features, Task(task)
        self.version = model_version(model)
        self._user = functools.lru_cache(maxsize=self.USER_CACHE)(self._encode_user)

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return _per_request(self._score_one, users, items)

    @torch.no_grad()
    def _encode_user(self, user: int) -> FineUser:
        return self.model.encode_user(self.features.users(np.array([user])))

    @torch.no_grad()
    def _score_one(self, user: np.ndarray, items: np.ndarray) -> torch.Tensor:
        signal = self.features.fine_signal(user, items) if self.model.config.fine_signal else None
        out = self.model.score_items(self._user(int(user[0])), self.features.item_features(items), signal)
        return out.pctr if self.task is Task.CLICK else out.pctcvr  # (1, R)


class RandomScorer:
    """Uniform scores from a hash of (seed, user, item): a fixed random order per user."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.version = f"random-{seed}"

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return uniform(self.seed, Stream.POLICY, np.asarray(users)[:, None], items)


class PopularityScorer:
    """The world's item popularity (what the logging cascade's coarse stage uses)."""

    version = "popularity"

    def __init__(self, world: World) -> None:
        self.popularity = world.item_popularity

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.asarray(self.popularity[items], dtype=np.float64)


class OracleScorer:
    """The true expected clicks / purchases / GMV at the top position (simulator only)."""

    def __init__(self, world: World, objective: Objective = Objective.CLICKS) -> None:
        self.world, self.objective = world, Objective(objective)
        self.version = f"oracle-{self.objective}"

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return expected_value(self.world, np.asarray(users), items, self.objective)

    def score_on_day(self, users: np.ndarray, items: np.ndarray, days: np.ndarray) -> np.ndarray:
        """The scores on each request's day (tastes drift)."""
        return expected_value(self.world, np.asarray(users), items, self.objective, np.asarray(days))


def load_scorer(spec: str, world: World, features: FeatureStore, stage: str, task: Task | str = "") -> Scorer:
    """A scorer for cascade ``stage`` ("coarse" or "fine") from ``spec``: a baseline name
    ("random", "popularity", "oracle"), "module:attribute" naming a scorer or a factory
    ``f(world, features)`` of one (``policies.custom``, checked by a probe call), or the path of a
    checkpoint of that stage. A checkpoint ranks by the task of its training config (``[train]
    score_task``, recorded in its metadata; click when absent) unless ``task`` names another (a
    ranker setting, e.g. an arm's ``coarse_score``: the same checkpoint scored for GMV); a coarse
    model's item tower is computed here, once."""
    if stage not in ("coarse", "fine"):
        raise ValueError(f'stage must be "coarse" or "fine", got {stage!r}')
    if task and (is_custom_spec(spec) or spec in BASELINES):
        raise ValueError(f"a score task ({str(task)!r}) applies to checkpoints, not to {spec!r}")
    if is_custom_spec(spec):
        return load_custom(spec, world, features)
    match spec:
        case "random":
            return RandomScorer(world.config.seed)
        case "popularity":
            return PopularityScorer(world)
        case "oracle":
            return OracleScorer(world)
    loaded = load_checkpoint(spec, kind=stage)
    if loaded.model.vocab != vocab_of(world.config):
        raise CheckpointError(f"{spec} was trained on another world: vocab {loaded.model.vocab}")
    task = Task(task or loaded.metadata.get("score_task", Task.CLICK))
    if stage == "fine":
        return FineModelScorer(loaded.model, features, task)
    return CoarseModelScorer(loaded.model, features, task)
