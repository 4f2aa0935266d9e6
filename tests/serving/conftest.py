"""Serving fixtures: one Serve instance (on a free 127.0.0.1 port) on the session's Ray, and one
app of the seeded SMALL-world models shared by the tests that need Serve (starting an app costs
~10-15 s on 2 cores). Ray and Serve are imported inside the fixtures (see tests/conftest.py)."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from policies.cascade import Cascade, CascadeSizes
from policies.features import FeatureStore
from policies.rankers import load_scorer
from serving.args import AppArgs
from simulator import SMALL, World

APP = "test-cascade"


@pytest.fixture(scope="session")
def small_features(small_world: World) -> FeatureStore:
    return FeatureStore.from_world(small_world)


@pytest.fixture(scope="session")
def app_args(seeded_models) -> AppArgs:
    return AppArgs(
        world="small",
        arms={
            "control": {"coarse": seeded_models["coarse_a"]},  # the world's coarse size, 100
            "treatment": {"coarse": "popularity", "coarse_size": 40},
        },
        fine=seeded_models["fine"],
        assignment={"salt": "serving-tests", "shares": {"control": 0.5, "treatment": 0.5}},
        cpus_per_replica=0.05,
    )


@pytest.fixture(scope="session")
def reference(app_args, small_world, small_features) -> dict[str, Cascade]:
    """The in-process cascade of every arm, from the specs the app serves."""
    fine = load_scorer(app_args.fine, small_world, small_features, "fine")
    return {
        arm: Cascade(
            load_scorer(spec.coarse, small_world, small_features, "coarse"),
            fine,
            CascadeSizes(app_args.coarse_size(arm), SMALL.page_size),
        )
        for arm, spec in app_args.arms.items()
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def serve_port(ray_session) -> int:
    """Serve's HTTP port: a free 127.0.0.1 port (or that of a Serve already running)."""
    from ray import serve  # noqa: PLC0415
    from ray.serve.context import _get_global_client  # noqa: PLC0415

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is not None:
        yield client.get_serve_details()["http_options"]["port"]
        return
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()


@pytest.fixture(scope="session")
def served(serve_port, app_args):
    from serving.app import start  # noqa: PLC0415

    app = start(app_args, name=APP, route_prefix="/cascade")
    yield app
    app.stop()


FUSED_LIMITS = {"max_ongoing_requests": 4, "max_queued_requests": 4}
"""The fused app admits at most 8 requests at once and answers the next with a 503 (the load
test's overload answer)."""


@pytest.fixture(scope="session")
def fused(serve_port, app_args):
    """The same app in the fused layout (one deployment), beside ``served``."""
    from serving.app import start  # noqa: PLC0415

    app = start(
        dataclasses.replace(app_args, layout="fused", **FUSED_LIMITS),
        name=f"{APP}-fused",
        route_prefix="/fused",
    )
    yield app
    app.stop()
