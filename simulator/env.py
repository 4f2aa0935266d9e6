"""The world as gymnasium environments: one session per episode, one page per step."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from simulator.config import WorldConfig
from simulator.oracle import Objective
from simulator.recall import CHANNELS, SessionKeys
from simulator.session import PageOutcome, SessionBatch, Simulator
from simulator.world import World


def _observation_space(config: WorldConfig) -> spaces.Dict:
    n, r = config.n_items, config.recall_size
    return spaces.Dict(
        {
            "user_id": spaces.Box(0, config.n_users - 1, shape=(), dtype=np.int64),
            "history": spaces.Box(0, n - 1, shape=(config.history_len,), dtype=np.int64),
            "page": spaces.Box(0, config.max_pages, shape=(), dtype=np.int64),
            "candidates": spaces.Box(0, n - 1, shape=(r,), dtype=np.int64),
            "channels": spaces.Box(0, len(CHANNELS) - 1, shape=(r,), dtype=np.int8),
            "shown": spaces.MultiBinary(r),
        }
    )


def _observations(world: World, batch: SessionBatch) -> dict[str, np.ndarray]:
    """Batched observations (leading axis B) of a session batch."""
    return {
        "user_id": batch.keys.user.copy(),
        "history": world.history[batch.keys.user],
        "page": batch.pages.copy(),
        "candidates": batch.recall.items.copy(),
        "channels": batch.recall.channels.copy(),
        "shown": batch.shown.astype(np.int8),
    }


def _rewards(outcome: PageOutcome, reward: Objective) -> np.ndarray:
    if reward is Objective.CLICKS:
        return outcome.clicks.sum(axis=1).astype(np.float64)
    if reward is Objective.PURCHASES:
        return outcome.purchases.sum(axis=1).astype(np.float64)
    return outcome.gmv


def _infos(outcome: PageOutcome, keys: SessionKeys) -> dict[str, np.ndarray]:
    """Per-step details; ``keys`` identify the session the page belonged to."""
    return {
        "user_id": keys.user.copy(),
        "day": keys.day.copy(),
        "session": keys.session.copy(),
        "items": outcome.items,
        "clicks": outcome.clicks.sum(axis=1),
        "purchases": outcome.purchases.sum(axis=1),
        "gmv": outcome.gmv,
    }


class CascadeSessionEnv(gym.Env):
    """One user session of the simulated e-commerce feed.

    ## Observation
    A dict: ``user_id``; ``history`` (the user's logged behaviour sequence, accidental
    clicks included); ``page`` (pages already shown); ``candidates`` (the recall set,
    ``recall_size`` distinct item ids); ``channels`` (recall channel of each candidate,
    index into `simulator.recall.CHANNELS`); ``shown`` (1 where a candidate was shown).

    ## Action
    The ordered page: ``page_size`` indices into ``candidates``, best position first.
    Indices already shown in the session, or repeated on the page, leave their position
    empty (an item is never shown twice in a session).

    ## Reward
    Clicks on the page (``reward="clicks"``), or purchases or GMV.

    ## Episode End
    Terminates when the user leaves after a page (the continue probability rises with the
    page's expected clicks and actual clicks); truncates after ``max_pages`` pages.

    ``reset(options={"user_id": u, "day": d, "session": s})`` pins the session; otherwise
    the user and session index are drawn from the environment's ``np_random``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self, world: World | None = None, config: WorldConfig | None = None, reward: str = "clicks"
    ) -> None:
        self.world = world if world is not None else World(config or WorldConfig())
        self.simulator = Simulator(self.world)
        self.reward = Objective(reward)
        c = self.world.config
        self.observation_space = _observation_space(c)
        self.action_space = spaces.MultiDiscrete(np.full(c.page_size, c.recall_size))
        self._batch: SessionBatch | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = options or {}
        user = options.get("user_id", self.np_random.integers(self.world.config.n_users))
        session = options.get("session", self.np_random.integers(2**31))
        self._batch = self.simulator.start(SessionKeys.of(user, options.get("day", 0), session))
        return self._observation(), {}

    def step(self, action):
        if self._batch is None or not self._batch.active[0]:
            raise RuntimeError("call reset() before step() and after an episode ends")
        outcome = self.simulator.show(self._batch, np.asarray(action, dtype=np.int64)[None, :])
        info = {k: v[0] for k, v in _infos(outcome, self._batch.keys).items()}
        return (
            self._observation(),
            float(_rewards(outcome, self.reward)[0]),
            bool(outcome.terminated[0]),
            bool(outcome.truncated[0]),
            info,
        )

    def _observation(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v[0]) for k, v in _observations(self.world, self._batch).items()}


class CascadeSessionVectorEnv(VectorEnv):
    """``num_envs`` sessions advanced together by one vectorised simulator call per step.

    Same observation, action and reward as `CascadeSessionEnv`, batched on a leading axis.
    Uses gymnasium's next-step autoreset: the step after an episode ends starts a new
    session in that slot (its action is ignored, its reward is 0). ``infos`` follow
    Gymnasium's vector format: each key's array (leading axis ``num_envs``) with a boolean mask
    ``_key``, False in the slots that restarted (no page was shown there); the keys are those
    of `CascadeSessionEnv`'s ``info`` (``user_id``, ``day``, ``session`` of each page, its items,
    clicks, purchases and GMV).
    """

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int,
        world: World | None = None,
        config: WorldConfig | None = None,
        reward: str = "clicks",
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.world = world if world is not None else World(config or WorldConfig())
        self.simulator = Simulator(self.world)
        self.reward = Objective(reward)
        c = self.world.config
        self.num_envs = num_envs
        self.single_observation_space = _observation_space(c)
        self.single_action_space = spaces.MultiDiscrete(np.full(c.page_size, c.recall_size))
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._batch: SessionBatch | None = None
        self._needs_reset = np.zeros(num_envs, dtype=bool)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._np_random, self._np_random_seed = gym.utils.seeding.np_random(seed)
        self._batch = self.simulator.start(self._new_keys(self.num_envs))
        self._needs_reset[:] = False
        return _observations(self.world, self._batch), {}

    def step(self, actions):
        if self._batch is None:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions, dtype=np.int64).copy()
        restart = np.flatnonzero(self._needs_reset)
        actions[restart] = -1
        outcome = self.simulator.show(self._batch, actions)
        rewards = _rewards(outcome, self.reward)
        terminated, truncated = outcome.terminated.copy(), outcome.truncated.copy()
        shown = ~self._needs_reset
        infos = _infos(outcome, self._batch.keys)
        infos |= {f"_{key}": shown.copy() for key in list(infos)}
        if restart.size:
            fresh = self.simulator.start(self._new_keys(restart.size))
            for name in ("shown", "pages", "active"):
                getattr(self._batch, name)[restart] = getattr(fresh, name)
            for name in ("user", "day", "session"):
                getattr(self._batch.keys, name)[restart] = getattr(fresh.keys, name)
            self._batch.recall.items[restart] = fresh.recall.items
            self._batch.recall.channels[restart] = fresh.recall.channels
        self._needs_reset = terminated | truncated
        return (_observations(self.world, self._batch), rewards, terminated, truncated, infos)

    def _new_keys(self, n: int) -> SessionKeys:
        c = self.world.config
        return SessionKeys.of(
            self.np_random.integers(c.n_users, size=n), 0, self.np_random.integers(2**31, size=n)
        )
