"""Starting Ray the way this project measured it (docs/ray_notes.md): loopback only, no dashboard,
no token, no usage stats, the project's packages shipped to the workers through Ray's
``runtime_env`` (locally and on a cluster at ``RAY_ADDRESS``). Shared by serving, the A/B engine
and tuning; imports Ray only when it starts it."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

LOOPBACK = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""0: Ray binds and advertises 127.0.0.1 (``_node_ip_address`` alone is ignored)."""
RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",  # otherwise Ray 2.60 writes a token under ~/.ray/
    LOOPBACK: "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}
"""Environment of a local Ray instance; set before ``ray.init`` (workers inherit it)."""

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "simulator", "policies", "serving", "abtest", "tuning")
"""The project's packages, shipped to every worker (``runtime_env``)."""


def runtime_env() -> dict:
    """Ray's ``runtime_env`` of this project: its packages as ``py_modules`` (uploaded once per
    content hash; workers import them from there, and keep the caller's working directory)."""
    return {"py_modules": [str(ROOT / name) for name in PACKAGES], "excludes": ["__pycache__"]}


def ray_environment() -> None:
    """Set RAY_ENV (unless already set; not the loopback switch when joining the cluster at
    ``RAY_ADDRESS``, whose nodes have real addresses). Call before ``ray.init``."""
    joining = bool(os.environ.get("RAY_ADDRESS"))
    for key, value in RAY_ENV.items():
        if not (joining and key == LOOPBACK):
            os.environ.setdefault(key, value)
    if "ray" in sys.modules and LOOPBACK in os.environ:  # Ray read the switch on import: again
        from ray._private import ray_constants  # noqa: PLC0415

        ray_constants.ENABLE_RAY_CLUSTER = ray_constants.env_bool(LOOPBACK, True)


def init_ray(**options: Any) -> bool:
    """Start a local Ray (all CPUs, no dashboard, a 768 MiB object store that holds the
    default world), or join the cluster at ``RAY_ADDRESS``, unless Ray is already
    initialised; either way the project reaches the workers through ``runtime_env()``.
    ``options`` override the local settings. True if started here."""
    ray_environment()
    import ray  # noqa: PLC0415 (Ray costs ~1 s to import; most callers never start it)

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):  # a running cluster has its own resources: no local options
        ray.init(runtime_env=runtime_env(), log_to_driver=False)
        return True
    settings = {
        "num_cpus": os.cpu_count() or 2,
        "include_dashboard": False,
        "log_to_driver": False,
        "object_store_memory": 768 * 2**20,
        "runtime_env": runtime_env(),
    }
    ray.init(**(settings | options))
    return True
