"""Simulated online A/B experiments: ``run_experiment`` runs every arm's traffic and analyses it.

    from abtest.arms import resolve_arms
    from abtest.config import load_config
    from abtest.experiment import run_experiment
    from simulator.config import load_world_config

    config = load_config("configs/default.toml")
    config = resolve_arms(config, load_world_config(config.world))  # trains missing models
    result = run_experiment(config, through="inprocess")
    result.to_pandas()          # one flat record per metric x treatment
    result.users                # one row per user: arm, metric columns, pre-period columns

The experiment, top to bottom, one module per step:

1. Arms (``abtest.arms``): each arm is a cascade named by its config; the specs are resolved
   to checkpoints before the engine runs (``resolve_arms``), the engine never trains. In A/A
   mode every arm runs the control's cascade.
2. Pre-period for CUPED (``abtest.pre_period``): read from the logs before any traffic, or
   simulated as "pre" shards through the control's cascade.
3. Traffic (``abtest.traffic``): shards of users x days, each user's arm by
   ``common.assignment`` (design split; a sample of users also runs its other arms for the
   true effect), every arm for every user (design paired), or team-draft pages of all arms
   with each arm's credit (design interleave, ``abtest.interleave``), per-user outcomes by
   ``abtest.outcomes``; the shards run through an
   executor (``abtest.executors``: this process, Ray actors, or the cascade on Ray Serve), with
   identical results either way.
4. Statistics (``abtest.analysis`` over ``abtest.stats``): SRM gate, Welch / delta-method tests
   with CUPED (split), paired differences (paired) or sign tests of credits (interleave),
   lifts, Holm or BH, daily looks with
   always-valid intervals, power, funnel, and the true effect beside every estimate; the same
   per user segment (``abtest.segments``' labels, computed once before the traffic).

``run_experiment`` with ``run_dir`` checkpoints every finished shard (atomically) under
``run_dir/shards``; ``resume=True`` reuses them, so an interrupted run ends with the same
results as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from abtest import executors
from abtest.analysis import ExperimentResult, analyse_experiment
from abtest.arms import ArmSpec, arm_specs, check_coarse_sizes, versions
from abtest.config import ExperimentConfig, Through
from abtest.interleave import CREDIT_METRICS
from abtest.pre_period import pre_from_shards, pre_period_from_logs
from abtest.segments import experiment_segments
from abtest.store import ShardStore
from abtest.traffic import Shard, plan_shards
from simulator.config import WorldConfig, load_world_config
from simulator.world import World, user_arrival_days


def run_experiment(
    config: ExperimentConfig,
    through: str | Through | None = "inprocess",
    workers: int | None = 1,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    world: World | None = None,
    log: Callable[[str], None] = print,
    on_shard: Callable[[Shard], None] | None = None,
) -> ExperimentResult:
    """Run a whole experiment of resolved arms (``abtest.arms.resolve_arms``) and analyse it.

    ``through``: "inprocess" (default: no Serve, fine inside a Ray Tune trial) or "serve"
    (the cascade hosted on Ray Serve); None = the config's ``[traffic] through``.
    ``workers``: in-process Ray actors (1 = this process only, the default, right for a Tune
    trial that owns one CPU); None = the config's ``[traffic] workers``.
    ``run_dir``: checkpoint finished shards under ``run_dir/shards`` (``resume=True`` reuses
    them). ``world``: a prebuilt world of the config (saves its build time; built here only
    when this process simulates or labels segments). ``timings`` split the wall time: world,
    pre_period (reading the logs), segments (the users' labels), setup (cascades, Ray actors or
    the Serve app), traffic, statistics.
    ``on_shard`` is called after each shard is stored (tests inject interruptions there).
    """
    through = Through(through or config.traffic.through)
    workers = config.traffic.workers if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    world_config = load_world_config(config.world)
    check_coarse_sizes(config, world_config)
    arms = arm_specs(config)
    timings: dict[str, float] = {}
    the_world = _LazyWorld(world, world_config, timings)

    t0 = time.perf_counter()  # the logged pre-period first: a bad log folder fails before traffic
    pre = pre_period_from_logs(config, world_config, the_world, progress, log)
    timings["pre_period"] = time.perf_counter() - t0
    t0, built = time.perf_counter(), timings["world"]  # the users' segment labels, once per experiment
    labels, unavailable = experiment_segments(config, the_world, arms)
    timings["segments"] = time.perf_counter() - t0 - (timings["world"] - built)  # not the world's build

    shards = plan_shards(config)
    store = ShardStore(Path(run_dir) / "shards") if run_dir is not None else None
    frames = _stored_frames(store, shards) if store is not None and resume else {}
    arm_versions = versions(arms)
    if store is not None:
        store.check_versions(arm_versions)
    todo = [s for s in shards if s.key not in frames]
    with _progress_bar(_arrived_user_days(shards, world_config), progress) as shown:
        for frame in frames.values():
            shown(frame)
        t0 = time.perf_counter()
        with _executor(config, through, workers, todo, the_world, world_config, arms, log) as run:
            timings["setup"], t0 = time.perf_counter() - t0, time.perf_counter()
            for shard, frame in run(todo):
                frames[shard.key] = frame
                if store is not None:
                    store.save(shard.key, frame)
                shown(frame)
                if on_shard is not None:
                    on_shard(shard)
    timings["traffic"] = time.perf_counter() - t0

    runs = _concat([frames[s.key] for s in shards if s.period == "exp"])
    assigned = runs.pop("assigned").to_numpy(bool)
    user_days = runs[assigned].reset_index(drop=True)
    if config.interleave:  # an arm's credit: only the credited columns are defined
        user_days = user_days[["user", "day", "arm", *CREDIT_METRICS]]
    counterfactual = runs[~assigned].reset_index(drop=True)
    if config.pre_days:
        pre_days = pd.concat([frames[s.key] for s in shards if s.period == "pre"], ignore_index=True)
        pre = pre_from_shards(pre_days.drop(columns="assigned"), config.traffic.users)
    t0 = time.perf_counter()
    result = analyse_experiment(
        config,
        user_days,
        pre,
        counterfactual,
        segment_labels=labels,
        segments_unavailable=unavailable,
        versions=arm_versions,
        through=str(through),
        workers=workers,
        timings=timings,
    )
    timings["statistics"] = time.perf_counter() - t0
    return result


class _LazyWorld:
    """The world, built on first use (traffic on Ray actors needs none in this process);
    its build time goes to ``timings["world"]``."""

    def __init__(self, world: World | None, config: WorldConfig, timings: dict[str, float]) -> None:
        self.world = world if world is not None and world.config == config else None
        self.config, self.timings = config, timings
        timings["world"] = 0.0

    def __call__(self) -> World:
        if self.world is None:
            t = time.perf_counter()
            self.world = World(self.config)
            self.timings["world"] += time.perf_counter() - t
        return self.world


def _executor(
    config: ExperimentConfig,
    through: Through,
    workers: int,
    todo: list[Shard],
    world: Callable[[], World],
    world_config: WorldConfig,
    arms: Mapping[str, ArmSpec],
    log: Callable[[str], None],
) -> contextlib.AbstractContextManager[executors.Run]:
    """The way the shards left to do run: none needed, Serve, this process or Ray actors."""
    if not todo:
        return contextlib.nullcontext(lambda shards: iter(()))
    if through is Through.SERVE:
        return executors.served(config, world(), arms, log)
    if workers == 1 or len(todo) == 1:
        return executors.in_process(config, world(), arms)
    return executors.ray_actors(config, world_config, arms, workers, log)


def _stored_frames(store: ShardStore, shards: list[Shard]) -> dict[str, pd.DataFrame]:
    """The frames of the shards a previous run already finished, in shard order."""
    frames = {}
    for shard in shards:
        frame = store.load(shard.key)
        if frame is not None:
            frames[shard.key] = frame
    return frames


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """User-day frames as one table, by day, then user."""
    table = pd.concat(frames, ignore_index=True)
    return table.sort_values(["day", "user"], kind="stable").reset_index(drop=True)


def _arrived_user_days(shards: list[Shard], world: WorldConfig) -> int:
    """The user-days the shards run: their users who have arrived by the shard's day."""
    return sum(int((user_arrival_days(world, np.arange(s.lo, s.hi)) <= s.day).sum()) for s in shards)


@contextlib.contextmanager
def _progress_bar(total: int, enabled: bool) -> Iterator[Callable[[pd.DataFrame], None]]:
    """A tqdm bar over user-days with pages (silent when disabled); yields ``shown(frame)``."""
    bar = tqdm(total=total, unit="user-day", desc="traffic", disable=not enabled, dynamic_ncols=True)
    pages = 0

    def shown(frame: pd.DataFrame) -> None:
        nonlocal pages
        if "pages" in frame.columns:  # an interleaved shard without truth users has credits only
            pages += int(frame["pages"].sum())
            bar.set_postfix(pages=f"{pages:,}", refresh=False)
        bar.update(len(frame.drop_duplicates(["user", "day"])))

    try:
        yield shown
    finally:
        bar.close()
