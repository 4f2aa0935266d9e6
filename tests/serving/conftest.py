"""Serving fixtures: one Ray instance and one Serve instance (on a free 127.0.0.1 port) per
test session, tiny seeded checkpoints of the SMALL world, and one served app shared by the
tests that need Serve (starting an app costs ~10-15 s on 2 cores).

Ray is imported inside the fixtures, after ``pytest_configure`` has filtered the Pydantic
deprecation warnings Ray Serve raises when it is imported."""

from __future__ import annotations

import socket

import pytest
import torch

from policies.cascade import Cascade, CascadeSizes
from policies.checkpoint import save_checkpoint
from policies.features import FeatureStore, vocab_of
from policies.models import CoarseConfig, CoarseRanker, FineConfig, FineRanker
from policies.rankers import load_scorer
from serving.args import AppArgs
from simulator import SMALL, World

APP = "test-cascade"
SERVE_WARNINGS = "ignore::pydantic.warnings.PydanticDeprecatedSince20:ray"


def pytest_configure(config) -> None:
    config.addinivalue_line("filterwarnings", SERVE_WARNINGS)


@pytest.fixture(scope="session")
def small_features(small_world: World) -> FeatureStore:
    return FeatureStore.from_world(small_world)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    """Untrained but seeded models (their rankings are arbitrary but deterministic): two
    coarse models of different versions and a fine model."""
    out = tmp_path_factory.mktemp("serving-models")
    vocab = vocab_of(SMALL)
    paths = {}
    for name, seed in (("coarse_a", 1), ("coarse_b", 2)):
        torch.manual_seed(seed)
        paths[name] = str(out / f"{name}.pt")
        save_checkpoint(paths[name], CoarseRanker(CoarseConfig(dim=8, fm_cross=True), vocab))
    torch.manual_seed(3)
    paths["fine"] = str(out / "fine.pt")
    save_checkpoint(paths["fine"], FineRanker(FineConfig(dim=8, attention_hidden=4, hidden=(16,)), vocab))
    return paths


@pytest.fixture(scope="session")
def app_args(checkpoints) -> AppArgs:
    return AppArgs(
        world="small",
        arms={
            "control": {"coarse": checkpoints["coarse_a"]},  # the world's coarse size, 100
            "treatment": {"coarse": "popularity", "coarse_size": 40},
        },
        fine=checkpoints["fine"],
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
def ray_session():
    """A local Ray for the session (or the one another fixture already started)."""
    import ray  # noqa: PLC0415 (see the module docstring)

    from serving.app import init_ray  # noqa: PLC0415

    if ray.is_initialized():
        yield
        return
    init_ray(num_cpus=2, object_store_memory=256 * 2**20)
    yield
    ray.shutdown()


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
