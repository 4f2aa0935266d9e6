"""Traffic: the experiment's shards of users x days, and the simulation of one shard.

Each user has one session per experiment day (days first_day.., after the logged days, so
sessions are fresh draws) from its arrival day on (``world.user_arrival_day``: new users arrive
on later days; a shard with no arrived user has no rows). Work is cut into shards of users per
day; a shard runs every arm's users (``common.assignment``: a hash of (layer, salt, user id),
the same on every day, shard and worker) through that arm's page ranker with ``run_sessions``.
Which arms a user runs through depends on the design: split - the assigned arm (column
``assigned`` true), and for the users of ``truth_sample`` also every other arm (``assigned``
false: the counterfactual runs that give the true effect); paired - every arm (all
``assigned``); interleave - the team-draft pages of all arms (``abtest.interleave``; one
``assigned`` row per user and arm holding that arm's credit), and the users of ``truth_sample``
also through every arm on its own (not ``assigned``: the true effect). Pre-period shards run
every user once, through the control's cascade. All arms share the world and the simulator's
counter-based random numbers (common random numbers): a user's recall set and its coin flips
for an item do not depend on the arm, and every draw is keyed by (user, day, session, item), so
a shard gives the same rows wherever it runs. On the first day, users 0..funnel_users-1 also
record where the k truly best items of the pool were lost (recall, coarse, fine;
``simulator.oracle``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import pandas as pd

from abtest.config import ExperimentConfig
from abtest.interleave import CREDIT_METRICS, credit_by_arm, run_interleaved
from abtest.outcomes import EXACT_COLUMNS, SESSION_COLUMNS, session_outcomes
from common.assignment import Assignment, user_buckets
from policies.cascade import PageRanker, Ranked, run_sessions
from simulator.oracle import best_in_pool, funnel_loss
from simulator.recall import SessionKeys
from simulator.session import SessionBatch, Simulator
from simulator.world import World

FUNNEL_COLUMNS = ("funnel_recall", "funnel_coarse", "funnel_fine", "funnel_kept")
"""Of the k truly best items of the pool: how many recall missed, the coarse stage cut, the
fine stage did not put on the first page, and how many were on it (NaN outside the sample)."""


@dataclasses.dataclass(frozen=True)
class Shard:
    """Users lo..hi-1 on one day, of the pre-period ("pre") or the experiment ("exp")."""

    period: str
    day: int
    index: int
    lo: int
    hi: int

    @property
    def key(self) -> str:
        return f"{self.period}-day{self.day:03d}-shard{self.index:04d}"

    @property
    def n_users(self) -> int:
        return self.hi - self.lo


def plan_shards(config: ExperimentConfig) -> list[Shard]:
    """Every shard of the experiment: the simulated pre-period days first, then day by day."""
    t = config.traffic
    bounds = [(lo, min(lo + t.shard_users, t.users)) for lo in range(0, t.users, t.shard_users)]
    days = [("pre", d) for d in config.pre_days] + [("exp", d) for d in config.experiment_days]
    return [Shard(period, day, i, lo, hi) for period, day in days for i, (lo, hi) in enumerate(bounds)]


def interleave_seed(config: ExperimentConfig) -> int:
    """The team-draft picking order's seed: a hash of the experiment's salt (and layer), so
    two experiments' coins are independent and a rerun's are the same."""
    key = f"interleave:{config.assignment.layer}:{config.assignment.salt}"
    return int(user_buckets(key, np.zeros(1, dtype=np.int64), 2**62)[0])


def assign_arms(config: ExperimentConfig, users: np.ndarray) -> np.ndarray:
    """Arm index (into ``config.arm_names``) of each user, routed by the traffic shares."""
    assignment = Assignment(
        config.assignment.salt, config.arm_names, config.traffic_shares, config.assignment.layer
    )
    return assignment.assign(users)


def truth_sample(config: ExperimentConfig) -> np.ndarray:
    """The truth users of a split or interleaved design, sorted: the ``[design] truth_users``
    of 0..users-1 with the smallest hash of (salt, user), a uniform random sample independent
    of the arm assignment (a different salt); every user when there are fewer. Empty for
    paired (every user is in the truth there)."""
    users, n = config.traffic.users, config.design.truth_users
    if config.paired:
        return np.empty(0, dtype=np.int64)
    ids = np.arange(users, dtype=np.int64)
    if n >= users:
        return ids
    h = user_buckets(f"truth:{config.assignment.salt}", ids, 2**62)
    return np.sort(ids[np.lexsort((ids, h))[:n]])


class _FirstPage:
    """A PageRanker wrapper that keeps the first page it ranks (the sessions' first page)."""

    def __init__(self, ranker: PageRanker) -> None:
        self.ranker, self.page = ranker, None

    def __call__(self, batch: SessionBatch) -> Ranked:
        ranked = self.ranker(batch)
        if self.page is None:
            self.page = ranked.page
        return ranked


class Traffic:
    """Simulates shards: the world's simulator and one page ranker per arm.

    ``rankers`` are in-process cascades or Serve clients; both return the same pages.
    """

    def __init__(self, config: ExperimentConfig, world: World, rankers: Mapping[str, PageRanker]) -> None:
        missing = set(config.arm_names) - set(rankers)
        if missing:
            raise ValueError(f"no ranker for arm(s) {sorted(missing)}")
        self.config, self.world, self.rankers = config, world, dict(rankers)
        self.sim = Simulator(world)
        self.truth = truth_sample(config)
        self.seed = interleave_seed(config)

    def run(self, shard: Shard) -> pd.DataFrame:
        """One row per user-day and arm run of the shard, by user then arm (columns: user, day,
        arm, SESSION_COLUMNS, FUNNEL_COLUMNS, assigned; an interleaved row: user, day, arm,
        ``CREDIT_METRICS``, assigned)."""
        config = self.config
        users = np.arange(shard.lo, shard.hi, dtype=np.int64)
        users = users[self.world.user_arrival_day[users] <= shard.day]  # no session before arrival
        if users.size == 0:
            return self._no_rows()
        arm_index = assign_arms(config, users)
        experiment = shard.period == "exp"
        interleaved, everyone = experiment and config.interleave, experiment and config.paired
        counterfactual = np.isin(users, self.truth) if experiment else np.zeros(len(users), bool)
        parts = [self._interleaved(users, shard)] if interleaved else []
        best = self._funnel_best(users, shard)
        for k, arm in enumerate(config.arm_names):
            assigned = np.zeros(len(users), bool) if interleaved else everyone | (arm_index == k)
            runs = assigned | counterfactual
            mine = users[runs]
            if mine.size == 0:
                continue
            ranker = self.rankers[config.control if shard.period == "pre" else arm]
            part = self._sessions(ranker, mine, shard, best)
            part.insert(2, "arm", arm)
            part["assigned"] = assigned[runs]
            parts.append(part)
        return pd.concat(parts, ignore_index=True).sort_values("user", kind="stable").reset_index(drop=True)

    def _no_rows(self) -> pd.DataFrame:
        """The frame of a shard none of whose users has arrived yet: a run's columns, no rows."""
        metrics = [*SESSION_COLUMNS, *EXACT_COLUMNS, *FUNNEL_COLUMNS]
        if self.config.interleave:
            metrics = [*CREDIT_METRICS, "assigned", *(m for m in metrics if m not in CREDIT_METRICS)]
        else:
            metrics.append("assigned")
        none = np.empty(0, np.int64)
        frame = {"user": none, "day": none, "arm": pd.Series([], dtype="str")}
        frame |= {m: np.empty(0, bool if m == "assigned" else np.float64) for m in metrics}
        return pd.DataFrame(frame)

    def _interleaved(self, users: np.ndarray, shard: Shard) -> pd.DataFrame:
        """The shard's users on team-draft pages of every arm: per user and arm, its credit."""
        arms = self.config.arm_names
        keys = SessionKeys.of(users, day=shard.day)
        sessions = run_interleaved(self.sim, {a: self.rankers[a] for a in arms}, keys, self.seed, exact=True)
        part = credit_by_arm(sessions, arms)
        part["assigned"] = True
        return part

    def _funnel_best(self, users: np.ndarray, shard: Shard) -> dict[int, np.ndarray]:
        """The truly best items of the pool (``funnel_k``) of the shard's funnel users, by user:
        computed once per shard, whichever arms a user runs."""
        c = self.config
        funnel = users[users < c.stats.funnel_users]
        if shard.period != "exp" or shard.day != c.traffic.first_day or funnel.size == 0:
            return {}
        best = best_in_pool(self.world, funnel, c.stats.funnel_k, day=shard.day)
        return dict(zip(funnel.tolist(), best, strict=True))

    def _sessions(
        self, ranker: PageRanker, users: np.ndarray, shard: Shard, best: dict[int, np.ndarray]
    ) -> pd.DataFrame:
        recorder = _FirstPage(ranker)
        out = run_sessions(self.sim, recorder, SessionKeys.of(users, day=shard.day), exact=True)
        b = len(users)
        frame = {"user": users, "day": np.full(b, shard.day, dtype=np.int64)}
        frame |= session_outcomes(self.world, out, users, shard.day)
        funnel = np.full((b, len(FUNNEL_COLUMNS)), np.nan)
        k = self.config.stats.funnel_k
        stages = (out.recall_items, out.first_coarse_items, recorder.page)
        for row, user in enumerate(users.tolist()):
            if user in best:
                loss = funnel_loss(best[user][None], [s[row : row + 1] for s in stages])
                funnel[row] = np.rint(np.array([loss[s] for s in ("recall", "coarse", "fine", "kept")]) * k)
        for j, name in enumerate(FUNNEL_COLUMNS):
            frame[name] = funnel[:, j]
        return pd.DataFrame(frame)
