"""Multi-node Ray: on a local three-node cluster (``ray.cluster_utils.Cluster`` on loopback: a
head without CPUs, two 1-CPU worker nodes) the A/B engine over Ray actors, the A/B engine
through Serve and a Tune search give the results of one node, with their workers on both worker
nodes; a worker node removed mid-run costs a rerun, never a user-day. The project reaches the
workers through ``runtime_env`` (``common.ray_env``), and Ray advertises and binds 127.0.0.1.

A cluster needs its own Ray, so it runs in a subprocess (this file run as a script, without
PYTHONPATH, so workers can only import the project from the runtime_env), started once by a
module fixture; it writes what it ran to a folder and the tests compare that with one-node runs
in this process (in process, or on the session's Ray). The node loss runs last.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"

pytestmark = pytest.mark.slow


# --- what the subprocess runs -------------------------------------------------------------------


def _titles_by_node(raylets: dict[int, int]) -> set[tuple[str, int]]:
    """(process title, node index) of the children of each raylet (pid -> node index); an
    exiting process has no title."""
    found = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode()
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid in raylets and title:
            found.add((title, raylets[ppid]))
    return found


class _Watcher(threading.Thread):
    """Records, every 0.1 s, which worker node each Ray worker process runs on."""

    def __init__(self, nodes: list) -> None:
        super().__init__(daemon=True)
        self.raylets = {node.all_processes["raylet"][0].process.pid: i for i, node in enumerate(nodes)}
        self.seen: set[tuple[str, int]] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            self.seen |= _titles_by_node(self.raylets)

    def nodes_of(self, prefix: str) -> list[int]:
        """The worker nodes on which a process titled ``prefix...`` ran."""
        return sorted({node for title, node in self.seen if title.startswith(prefix)})


def _listening(pids: set[int]) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) on which processes ``pids`` listen."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    addresses = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                addresses.append(fields[1].rsplit(":", 1)[0])
    return addresses


def _is_loopback(hex_address: str) -> bool:
    if len(hex_address) == 8:  # IPv4, little-endian: 127.x.x.x
        return hex_address.endswith("7F")
    return hex_address in ("00000000000000000000000001000000", "0000000000000000FFFF00000100007F")


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(proc.name))
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        out.add(pid)
        todo.extend(children.get(pid, []))
    return out


def _save(result, out: Path, name: str) -> None:
    result.users.to_parquet(out / f"{name}_users.parquet")
    result.user_days.to_parquet(out / f"{name}_user_days.parquet")
    result.to_pandas().to_parquet(out / f"{name}_records.parquet")


def _on_cluster(spec: dict, out: Path) -> None:
    """Start the cluster, run every scenario on it, write the results and facts to ``out``."""
    from common.ray_env import init_ray, ray_environment  # noqa: PLC0415

    ray_environment()
    import ray  # noqa: PLC0415
    from ray.cluster_utils import Cluster  # noqa: PLC0415
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: PLC0415

    from abtest.config import parse_config  # noqa: PLC0415
    from abtest.experiment import run_experiment  # noqa: PLC0415
    from tuning.config import parse_config as parse_search  # noqa: PLC0415
    from tuning.search import run_search  # noqa: PLC0415

    store = 128 * 2**20
    t0 = time.perf_counter()
    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "object_store_memory": store},
    )
    workers = [cluster.add_node(num_cpus=1, object_store_memory=store) for _ in range(2)]
    cluster.wait_for_nodes()
    os.environ["RAY_ADDRESS"] = cluster.address  # init_ray joins it
    facts: dict = {"cluster_start_s": time.perf_counter() - t0}
    watcher = _Watcher(workers)
    watcher.start()
    try:
        init_ray()

        @ray.remote(num_cpus=1)
        def where() -> tuple[str, str]:
            import common  # noqa: PLC0415

            return common.__file__, ray.get_runtime_context().get_node_id()

        # one task pinned to each node with CPUs (unpinned, one node may run them all)
        nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
        on = [NodeAffinitySchedulingStrategy(node, soft=False) for node in nodes]
        facts["imports"] = ray.get([where.options(scheduling_strategy=s).remote() for s in on])
        facts["node_ips"] = [node["NodeManagerAddress"] for node in ray.nodes()]
        facts["listening"] = _listening(_descendants(os.getpid()))
        ray.shutdown()

        config = parse_config(spec["experiment"], "multi-node")
        _save(run_experiment(config, workers=2, log=lambda *_: None), out, "ab")
        facts["ab_nodes"] = watcher.nodes_of("ray::ShardWorker")

        _save(run_experiment(config, through="serve", log=lambda *_: None), out, "serve")
        facts["serve_nodes"] = watcher.nodes_of("ray::ServeReplica:")

        table = run_search(parse_search(spec["tune"]), out / "tune", log=lambda *_: None).table
        table.to_parquet(out / "tune_table.parquet")
        facts["tune_nodes"] = watcher.nodes_of("ray::ImplicitFunc")

        lines: list[str] = []
        stored = []

        def lose_a_node(shard) -> None:
            if not stored:  # one shard stored, the others in flight on both nodes
                # A lost machine takes its worker processes with it at once: kill them before the
                # raylet (left alone, a worker outlives its raylet by up to a second, in which an
                # idle machine's small shards all finish and the loss goes unseen).
                raylet = workers[0].all_processes["raylet"][0].process.pid
                for pid in _descendants(raylet) - {raylet}:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                cluster.remove_node(workers[0], allow_graceful=False)
            stored.append(shard.key)

        lossy = parse_config({**spec["experiment"], "name": "node-loss"}, "node loss")
        options = {"workers": 2, "run_dir": out / "lost", "on_shard": lose_a_node, "log": lines.append}
        result = run_experiment(lossy, **options)
        _save(result, out, "node_loss")
        facts["node_loss_log"] = lines
        facts["stored"] = [str(key) for key in stored]
    finally:
        watcher.stop.set()
        ray.shutdown()
        cluster.shutdown()
    (out / "facts.json").write_text(json.dumps(facts))


def _local_after_import(out: Path) -> None:
    """A local Ray started by ``init_ray`` after Ray was imported (Ray reads its loopback
    switch on import): where it advertises and listens."""
    import ray  # noqa: PLC0415

    from common.ray_env import init_ray  # noqa: PLC0415

    init_ray(num_cpus=1, object_store_memory=128 * 2**20)
    facts = {
        "node_ips": [node["NodeManagerAddress"] for node in ray.nodes()],
        "listening": _listening(_descendants(os.getpid())),
    }
    ray.shutdown()
    (out / "facts.json").write_text(json.dumps(facts))


# --- the tests ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def experiment_raw(seeded_models) -> dict:
    """120 users x 1 day in 8 shards, two seeded coarse models, one fine model."""
    paths = seeded_models
    return {
        "name": "multi-node",
        "world": "small",
        "arms": {
            "control": {"coarse": paths["coarse_a"], "fine": paths["fine"], "coarse_size": 100},
            "treatment": {"coarse": paths["coarse_b"], "fine": paths["fine"], "coarse_size": 40},
        },
        "traffic": {"users": 120, "days": 1, "shard_users": 15},
        "pre_period": {"source": "none"},
        "stats": {"funnel_users": 30},
    }


@pytest.fixture(scope="module")
def search_raw(tmp_path_factory, small_log_dir) -> dict:
    """configs/tune_small.toml shrunk to two 1-epoch trials at once, on the session's logs."""
    models = tmp_path_factory.mktemp("multinode-models")
    raw = tomllib.loads((ROOT / "configs" / "tune_small.toml").read_text())
    raw["name"] = "multi-node"
    for table, out in ((raw["trial"]["base"], "base.pt"), (raw["control"]["fine"], "fine.pt")):
        table["data"]["logs"], table["out"] = str(small_log_dir), str(models / out)
    raw["control"]["fine"]["train"]["epochs"] = raw["trial"]["epochs"] = 1
    raw["search"].update(searcher="random", num_samples=2, max_concurrent=2, seed=3, time_budget_s=150)
    raw["scheduler"] = {"kind": "fifo"}
    raw["objective"]["users"] = 60
    raw["offline"] = {"sessions": 30, "lists": 2000}
    raw["agreement"] = {"bootstrap": 50}
    raw["space"] = {"model.fm_cross": [False, True], "train.lr": [0.01, 0.02]}
    return raw


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory, experiment_raw, search_raw) -> tuple[Path, dict]:
    """Run every scenario on a three-node cluster in a subprocess; its output folder and facts."""
    out = tmp_path_factory.mktemp("multinode")
    (out / "spec.json").write_text(json.dumps({"experiment": experiment_raw, "tune": search_raw}))
    return out, _script("cluster", out, timeout=600)


def _script(scenario: str, out: Path, timeout: float) -> dict:
    """Run this file as a script (without PYTHONPATH or RAY_ADDRESS); the facts it wrote."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    command = [sys.executable, __file__, scenario, str(out)]
    done = subprocess.run(
        command, check=False, env=env, cwd=out, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "facts.json").read_text())


def test_local_ray_advertises_and_binds_loopback_even_when_ray_was_imported_first(tmp_path) -> None:
    facts = _script("local", tmp_path, timeout=180)
    assert set(facts["node_ips"]) == {LOOPBACK}
    assert facts["listening"] and all(_is_loopback(a) for a in facts["listening"]), facts["listening"]


@pytest.fixture(scope="module")
def one_node(experiment_raw, small_world):
    from abtest.config import parse_config  # noqa: PLC0415
    from abtest.experiment import run_experiment  # noqa: PLC0415

    return run_experiment(parse_config(experiment_raw, "one node"), world=small_world, workers=1)


def _assert_same(one_node, out: Path, name: str) -> None:
    pd.testing.assert_frame_equal(pd.read_parquet(out / f"{name}_user_days.parquet"), one_node.user_days)
    pd.testing.assert_frame_equal(pd.read_parquet(out / f"{name}_users.parquet"), one_node.users)
    pd.testing.assert_frame_equal(pd.read_parquet(out / f"{name}_records.parquet"), one_node.to_pandas())


def test_workers_import_the_project_from_the_runtime_env_and_ray_stays_on_loopback(cluster_run) -> None:
    _, facts = cluster_run
    for path, _ in facts["imports"]:  # not this checkout (no PYTHONPATH), not an installed copy
        assert "runtime_resources" in path and not path.startswith(str(ROOT)), path
    assert len({node for _, node in facts["imports"]}) == 2  # both worker nodes
    assert set(facts["node_ips"]) == {LOOPBACK}
    assert facts["listening"] and all(_is_loopback(a) for a in facts["listening"]), facts["listening"]


def test_ab_engine_over_ray_actors_on_two_nodes_equals_one_node(cluster_run, one_node) -> None:
    out, facts = cluster_run
    assert facts["ab_nodes"] == [0, 1]
    _assert_same(one_node, out, "ab")


def test_ab_engine_through_serve_with_replicas_on_two_nodes_equals_one_node(cluster_run, one_node) -> None:
    out, facts = cluster_run
    assert facts["serve_nodes"] == [0, 1]
    _assert_same(one_node, out, "serve")


SEARCH_RESULTS = ("model.fm_cross", "train.lr", "status", "objective", "objective_lo", "objective_hi")


def test_tune_search_with_trials_on_two_nodes_equals_one_node(
    cluster_run, search_raw, ray_session, tmp_path
) -> None:
    from tuning.config import parse_config  # noqa: PLC0415
    from tuning.search import run_search  # noqa: PLC0415

    out, facts = cluster_run
    assert facts["tune_nodes"] == [0, 1]
    one = run_search(parse_config(search_raw, "one node"), tmp_path / "tune", log=lambda *_: None).table
    many = pd.read_parquet(out / "tune_table.parquet")
    columns = [c for c in many.columns if c in SEARCH_RESULTS or c.startswith(("online/", "offline/"))]
    key = ["model.fm_cross", "train.lr"]
    assert len(many) == 2 and (many["status"] == "finished").all(), many
    pd.testing.assert_frame_equal(
        many[columns].sort_values(key).reset_index(drop=True),
        one[columns].sort_values(key).reset_index(drop=True),
    )


def test_a_removed_worker_node_costs_reruns_and_no_user_day(cluster_run, one_node) -> None:
    out, facts = cluster_run
    assert len(facts["stored"]) == len(set(facts["stored"])) == 8  # every shard stored once
    lines = facts["node_loss_log"]
    assert any("died" in line and "replaced it" in line for line in lines), lines
    assert any("rerunning shard" in line for line in lines), lines
    _assert_same(one_node, out, "node_loss")  # identical user-days: none lost, none twice
    print("\n".join(lines))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # this driver only: the workers get the runtime_env
    _scenario, _out = sys.argv[1], Path(sys.argv[2])
    if _scenario == "local":
        _local_after_import(_out)
    else:
        _on_cluster(json.loads((_out / "spec.json").read_text()), _out)
