"""Starting Ray the way this project measured it (docs/ray_notes.md): loopback only, no dashboard,
no token, no usage stats, the project on the workers' PYTHONPATH. Shared by serving, the A/B
engine and tuning; imports Ray only when it starts it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",  # otherwise Ray 2.60 writes a token under ~/.ray/
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # bind and advertise 127.0.0.1
    "RAY_USAGE_STATS_ENABLED": "0",
}
"""Environment of a local Ray instance; set before ``ray.init`` (workers inherit it)."""


def ray_environment() -> None:
    """Set RAY_ENV (unless already set) and put the project on PYTHONPATH so that workers
    import it. Call before ``ray.init``."""
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    root = str(Path(__file__).resolve().parents[1])
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *paths])


def init_ray(**options: Any) -> bool:
    """Start a local Ray (all CPUs, no dashboard, a 768 MiB object store that holds the
    default world), or join the cluster at ``RAY_ADDRESS``, unless Ray is already
    initialised; ``options`` override the local settings. True if started here."""
    ray_environment()
    import ray  # noqa: PLC0415 (Ray costs ~1 s to import; most callers never start it)

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):  # a running cluster has its own resources: no local options
        ray.init(log_to_driver=False)
        return True
    settings = {
        "num_cpus": os.cpu_count() or 2,
        "include_dashboard": False,
        "log_to_driver": False,
        "object_store_memory": 768 * 2**20,
    }
    ray.init(**(settings | options))
    return True
