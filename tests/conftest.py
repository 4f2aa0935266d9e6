"""Shared fixtures: worlds are built once per test session (a SMALL world takes ~0.1 s)."""

from __future__ import annotations

import numpy as np
import pytest

from simulator import SMALL, SessionKeys, Simulator, World
from simulator.logs import write_logs


@pytest.fixture(scope="session")
def small_world() -> World:
    return World(SMALL)


@pytest.fixture(scope="session")
def small_sim(small_world: World) -> Simulator:
    return Simulator(small_world)


@pytest.fixture(scope="session")
def some_keys() -> SessionKeys:
    """300 distinct users of the SMALL world, one session each on day 0."""
    users = np.random.default_rng(1).choice(SMALL.n_users, 300, replace=False)
    return SessionKeys.of(users)


@pytest.fixture(scope="session")
def small_log_dir(tmp_path_factory, small_world: World):
    """One day of logs of every user of the SMALL world."""
    return write_logs(small_world, tmp_path_factory.mktemp("small") / "logs", progress=False)
