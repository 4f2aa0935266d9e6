"""Shared fixtures: worlds are built once per test session (a SMALL world takes ~0.1 s), as
are the one local Ray (serving, the A/B engine and tuning share it) and the small seeded models.

Ray is imported inside the fixture, after ``pytest_configure`` has filtered the Pydantic
deprecation warnings Ray Serve raises when it is imported."""

from __future__ import annotations

import numpy as np
import pytest

from policies.checkpoint import save_checkpoint
from policies.features import vocab_of
from policies.models import CoarseConfig, CoarseRanker, FineConfig, FineRanker
from simulator import SMALL, SessionKeys, Simulator, World
from simulator.logs import write_logs


def pytest_configure(config) -> None:
    config.addinivalue_line("filterwarnings", "ignore::pydantic.warnings.PydanticDeprecatedSince20:ray")
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:ray")


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


@pytest.fixture(scope="session")
def ray_session():
    """One 2-CPU local Ray for the whole test session (loopback only, ``common.ray_env``)."""
    import ray  # noqa: PLC0415 (see the module docstring)

    from common.ray_env import init_ray  # noqa: PLC0415

    started = init_ray(num_cpus=2, object_store_memory=256 * 2**20)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def seeded_models(tmp_path_factory) -> dict[str, str]:
    """Untrained but seeded SMALL-world checkpoints (arbitrary but deterministic rankings, so
    the float32 scorers are exercised): two coarse models of different versions, one fine."""
    out = tmp_path_factory.mktemp("seeded-models")
    vocab = vocab_of(SMALL)
    paths = {}
    for name, seed in (("coarse_a", 1), ("coarse_b", 2)):
        paths[name] = str(out / f"{name}.pt")
        save_checkpoint(paths[name], CoarseRanker(CoarseConfig(dim=8, fm_cross=True), vocab, seed=seed))
    paths["fine"] = str(out / "fine.pt")
    fine = FineRanker(FineConfig(dim=8, attention_hidden=4, hidden=(16,)), vocab, seed=3)
    save_checkpoint(paths["fine"], fine)
    return paths


@pytest.fixture(scope="session")
def ray_worker_pids(ray_session):
    """``pids(title, parents=None)``: the pids of this test session's Ray workers whose process
    title starts with ``title`` (``ray::ShardWorker``, ``ray::ServeReplica:<app>:<deployment>``).
    Only children of this session's raylets (or of ``parents``) are candidates, never another
    Ray on the machine."""
    from pathlib import Path  # noqa: PLC0415

    import ray  # noqa: PLC0415

    def raylets() -> set[int]:
        node = ray._private.worker._global_node  # the only place Ray keeps the raylet pid
        return {p.process.pid for p in node.all_processes["raylet"]}

    def pids(title: str, parents: set[int] | None = None) -> list[int]:
        parents = raylets() if parents is None else parents
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")[0].decode()
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid in parents and cmdline.startswith(title):
                found.append(int(proc.name))
        return found

    return pids


@pytest.fixture(scope="session")
def kill_ray_worker(ray_worker_pids):
    """``kill(title, parents=None)``: SIGKILL the workers ``ray_worker_pids`` finds, as a crash
    would; returns their pids."""
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415

    def kill(title: str, parents: set[int] | None = None) -> list[int]:
        pids = ray_worker_pids(title, parents)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        return pids

    return kill
