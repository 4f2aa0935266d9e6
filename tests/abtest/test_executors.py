"""The same experiment in one process, sharded over Ray tasks, inside a Ray task (as in a Tune
trial) and through the cascade on Ray Serve gives identical results.

The arms use small seeded (untrained) models, so the float32 scorers are exercised: a page
must not depend on the batch, the process or the replica that ranked it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import warnings
from collections.abc import Iterator

import pandas as pd
import pytest
import ray
import torch

from abtest import executors
from abtest.analysis import ExperimentResult
from abtest.arms import arm_specs, build_cascades
from abtest.config import ExperimentConfig, parse_config
from abtest.experiment import run_experiment
from abtest.traffic import Traffic, plan_shards
from simulator import World


@pytest.fixture(scope="module")
def model_config(make_config, seeded_models) -> ExperimentConfig:
    """120 users x 1 day, two seeded coarse models of different sizes, one fine model."""
    paths = seeded_models
    return make_config(
        name="models",
        arms={
            "control": {"coarse": paths["coarse_a"], "fine": paths["fine"], "coarse_size": 100},
            "treatment": {"coarse": paths["coarse_b"], "fine": paths["fine"], "coarse_size": 40},
        },
        traffic={"users": 120, "days": 1, "shard_users": 30},
        pre_period={"source": "none"},
        stats={"funnel_users": 30},
    )


@pytest.fixture(scope="module")
def in_process(model_config: ExperimentConfig, small_world: World) -> ExperimentResult:
    return run_experiment(model_config, world=small_world, workers=1)


@pytest.mark.slow
def test_sharded_over_ray_tasks_equals_one_process(
    in_process, model_config, ray_session, same_results
) -> None:
    sharded = run_experiment(model_config, workers=2)
    assert sharded.workers == 2
    same_results(in_process, sharded)


@ray.remote(num_cpus=1)
def _trial(raw: dict) -> list[dict]:
    """What a Ray Tune trial does: a short in-process A/B without Serve, in a Ray worker."""
    from abtest.config import parse_config  # noqa: PLC0415 (imported in the worker)

    return run_experiment(parse_config(raw), through="inprocess", workers=1).records


@pytest.mark.slow
def test_an_experiment_runs_inside_a_ray_task(in_process, model_config, ray_session) -> None:
    records = pd.DataFrame(ray.get(_trial.remote(model_config.to_dict())))
    pd.testing.assert_frame_equal(records, in_process.to_pandas())


@pytest.mark.slow
def test_through_serve_equals_in_process(in_process, model_config, ray_session, same_results) -> None:
    os.environ.setdefault("RAY_SERVE_LOG_TO_STDERR", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        served = run_experiment(model_config, through="serve")
    assert served.through == "serve"
    same_results(in_process, served)
    assert served.versions == in_process.versions


@pytest.mark.slow
def test_an_arm_scored_for_gmv_is_the_same_through_serve(
    make_config, seeded_models, small_world, ray_session, same_results
) -> None:
    """An arm's coarse_score reaches the served coarse stage: one checkpoint ranked by its
    task (control) and by expected GMV (treatment), the same tables as in process."""
    coarse, fine = seeded_models["coarse_a"], seeded_models["fine"]
    config = make_config(
        name="models-gmv",
        arms={
            "control": {"coarse": coarse, "fine": fine, "coarse_size": 40},
            "treatment": {"coarse": coarse, "fine": fine, "coarse_size": 40, "coarse_score": "gmv"},
        },
        traffic={"users": 60, "days": 1, "shard_users": 30},
        pre_period={"source": "none"},
        stats={"funnel_users": 20},
    )
    local = run_experiment(config, world=small_world, workers=1)
    os.environ.setdefault("RAY_SERVE_LOG_TO_STDERR", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        served = run_experiment(config, through="serve")
    same_results(local, served)
    assert served.versions == local.versions


@pytest.mark.slow
@pytest.mark.parametrize("design", ["paired", "interleave"])
def test_the_paired_and_interleaved_designs_are_the_same_on_ray_tasks_and_through_serve(
    design, make_config, seeded_models, small_world, ray_session, same_results
) -> None:
    """Both designs rank every user's pages with every arm (interleave: merged team-draft
    pages): the same tables in one process, over two Ray actors and through Serve."""
    config = make_config(
        name=f"models-{design}",
        design={"kind": design, "truth_users": 20} if design == "interleave" else {"kind": design},
        arms={
            "control": {
                "coarse": seeded_models["coarse_a"],
                "fine": seeded_models["fine"],
                "coarse_size": 100,
            },
            "treatment": {
                "coarse": seeded_models["coarse_b"],
                "fine": seeded_models["fine"],
                "coarse_size": 40,
            },
        },
        traffic={"users": 60, "days": 1, "shard_users": 30},
        pre_period={"source": "none"},
        stats={"funnel_users": 20},
    )
    local = run_experiment(config, world=small_world, workers=1)
    same_results(local, run_experiment(config, workers=2))
    os.environ.setdefault("RAY_SERVE_LOG_TO_STDERR", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        same_results(local, run_experiment(config, through="serve"))


def test_in_process_runs_every_shard_on_one_torch_thread_and_restores_it(tiny_config, small_world) -> None:
    arms = arm_specs(tiny_config)
    shards = plan_shards(tiny_config)[:3]
    threads = torch.get_num_threads()
    with executors.in_process(tiny_config, small_world, arms) as run:
        seen = []
        for shard, frame in run(shards):
            seen.append(torch.get_num_threads())
            expected = Traffic(tiny_config, small_world, build_cascades(small_world, arms)).run(shard)
            pd.testing.assert_frame_equal(frame, expected)
    assert seen == [1, 1, 1] and torch.get_num_threads() == threads


@contextlib.contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    """Fail the test (TimeoutError) instead of hanging past ``seconds``."""

    def expire(*_) -> None:
        raise TimeoutError(f"not done within {seconds} s")

    before = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)


@pytest.mark.slow
def test_a_killed_shard_worker_is_replaced_and_its_shards_rerun(
    model_config, small_world, ray_session, kill_ray_worker
) -> None:
    raw = model_config.to_dict()
    raw["traffic"]["shard_users"] = 15  # 8 shards: both workers busy when they are killed
    config = parse_config(raw, "killed")
    arms = arm_specs(config)
    shards = plan_shards(config)
    expected = Traffic(config, small_world, build_cascades(small_world, arms))
    lines: list[str] = []
    with (
        _time_limit(240),
        executors.ray_actors(config, small_world.config, arms, workers=2, log=lines.append) as run,
    ):
        frames = {}
        for shard, frame in run(shards):
            if not frames:  # one shard done, others in flight: kill every worker
                assert len(kill_ray_worker("ray::ShardWorker")) == 2
            assert shard.key not in frames  # no shard counted twice
            frames[shard.key] = frame
    assert sorted(frames) == sorted(s.key for s in shards)  # none lost
    for shard in shards:
        pd.testing.assert_frame_equal(frames[shard.key], expected.run(shard))
    assert sum("replaced it" in line for line in lines) == 2, lines
    assert any("rerunning shard" in line for line in lines), lines
