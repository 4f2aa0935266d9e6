"""Experiment traffic through the cascade hosted on Ray Serve (``serving``).

``serve_rankers`` deploys one app with every arm of the experiment (the same specs the
in-process path loads) and yields one ``serving.ServeRanker`` per arm, each forcing its arm:
the engine keeps the assignment (``common.assignment``) and the simulator, and the served
cascade only ranks pages, in batched calls. Scorers are per (user, item) and batch-independent,
so the pages, hence every metric, are the ones of the in-process cascade.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator, Mapping

from abtest.config import ExperimentConfig
from policies.cascade import PageRanker
from simulator.config import ConfigError

CHUNK = 64
"""Requests per batched call (``ServeRanker``)."""
MAX_IN_FLIGHT = 8
"""Calls in flight per client; below the app's ``max_ongoing_requests``."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_args(config: ExperimentConfig, arms: Mapping) -> dict:
    """The served app's arguments (``serving.AppArgs``) for resolved arms (``ArmSpec``)."""
    fines = sorted({arm.fine for arm in arms.values()})
    if len(fines) != 1:
        raise ConfigError(
            f"through serve every arm must use one fine ranker (the served cascade has one fine "
            f"stage), got {fines}; run with --through inprocess"
        )
    return {
        "world": config.world,
        "arms": {
            name: {"coarse": arm.coarse, "coarse_size": arm.coarse_size, "coarse_score": arm.coarse_score}
            for name, arm in arms.items()
        },
        "fine": fines[0],
        "assignment": {
            "salt": config.assignment.salt,
            "layer": config.assignment.layer,
            "shares": dict(zip(config.arm_names, config.traffic_shares, strict=True)),
        },
        "port": _free_port(),  # used only if Serve is not running yet
        "max_ongoing_requests": 4 * MAX_IN_FLIGHT * len(arms),
    }


@contextlib.contextmanager
def serve_rankers(
    config: ExperimentConfig, arms: Mapping, log: Callable[[str], None] = print
) -> Iterator[dict[str, PageRanker]]:
    """Deploy the experiment's app, yield a forced-arm ranker per arm (calls that failed on a
    dead replica are retried, each retry logged through ``log``), delete the app after (and
    shut down Serve and Ray if this started them)."""
    from serving.app import start  # noqa: PLC0415 (ray and serve only when serving)

    app = start(app_args(config, arms), name=f"ab-{config.name}")
    try:
        yield {
            arm: app.ranker(arm=arm, chunk=CHUNK, max_in_flight=MAX_IN_FLIGHT, log=log)
            for arm in config.arm_names
        }
    finally:
        app.stop()
