"""Experiment fixtures: a tiny experiment on the SMALL world with baseline rankers (no
training), run once per test session in process."""

from __future__ import annotations

import copy

import pandas as pd
import pytest

from abtest.analysis import ExperimentResult
from abtest.config import ExperimentConfig, parse_config
from abtest.experiment import run_experiment
from simulator import World

TINY = {
    "name": "tiny",
    "world": "small",
    "arms": {
        "control": {"coarse": "popularity", "fine": "oracle", "coarse_size": 100},
        "treatment": {"coarse": "oracle", "fine": "oracle", "coarse_size": 100},
    },
    "traffic": {"users": 400, "days": 2, "through": "inprocess", "workers": 1, "shard_users": 100},
    "pre_period": {"source": "simulate"},
    "stats": {"funnel_users": 60},
}
"""400 users x (1 simulated pre-period day + 2 days), shards of 100 users: 12 shards, ~1 s."""


def tiny_raw(**tables) -> dict:
    """A copy of TINY with some tables updated, e.g. ``tiny_raw(traffic={"users": 200})``."""
    raw = copy.deepcopy(TINY)
    for key, value in tables.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key].update(value)
        else:
            raw[key] = value
    return raw


@pytest.fixture(scope="session")
def make_config():
    """``make_config(**tables)``: the tiny experiment with some tables updated."""

    def make(**tables) -> ExperimentConfig:
        return parse_config(tiny_raw(**tables), "tiny")

    return make


@pytest.fixture(scope="session")
def tiny_config() -> ExperimentConfig:
    return parse_config(TINY, "TINY")


@pytest.fixture(scope="session")
def tiny_result(tiny_config: ExperimentConfig, small_world: World) -> ExperimentResult:
    return run_experiment(tiny_config, world=small_world)


def assert_same_results(a: ExperimentResult, b: ExperimentResult) -> None:
    pd.testing.assert_frame_equal(a.user_days, b.user_days)
    pd.testing.assert_frame_equal(a.users, b.users)
    pd.testing.assert_frame_equal(a.to_pandas(), b.to_pandas())
    pd.testing.assert_frame_equal(a.daily, b.daily)
    pd.testing.assert_frame_equal(a.funnel, b.funnel)


@pytest.fixture(scope="session")
def same_results():
    """``same_results(a, b)`` asserts two experiment results are identical, table by table."""
    return assert_same_results
