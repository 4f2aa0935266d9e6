"""Building, starting, updating and stopping the served cascade.

``build_app`` is Serve's typed app builder (``import_path: serving.app:build_app`` in
``configs/serve.yaml``). ``start`` deploys the same builder declaratively, as ``serve deploy``
does, so that a new ``user_config`` of one stage is applied in place by ``reconfigure``
(``ServedCascade.swap``) rather than by restarting replicas::

    import serving
    app = serving.start(serving.AppArgs(arms={"control": {}, "treatment": {"coarse": "ckpt.pt"}}))
    ranker = app.ranker(arm="treatment")  # a PageRanker: run_sessions(sim, ranker, keys)
    app.swap("treatment", "other.pt")     # in place, requests in flight finish
    app.stop()                            # or: with serving.start(...) as app: ...

``AppArgs.layout`` chooses the deployments: "split" (recall, ``coarse-<arm>`` and fine behind the
ingress, each scaled and swapped on its own) or "fused" (the ingress runs every stage: one hop
per page instead of four; a swap reconfigures the ingress).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import ray
from ray import serve
from ray.serve.context import _get_global_client
from ray.serve.handle import DeploymentHandle
from ray.serve.schema import DeploymentSchema, ServeApplicationSchema, ServeDeploySchema

from common.config import to_plain
from common.ray_env import init_ray
from policies.baselines import BASELINES
from policies.checkpoint import CheckpointError, load_checkpoint
from policies.custom import is_ranker_name
from policies.features import vocab_of
from serving.args import AppArgs, app_args, scorer_spec
from serving.client import ServeRanker
from serving.deployments import Batching, Experiment, RecallServer, SplitBackend, ingress_deployment
from serving.fused import FusedBackend
from serving.model_servers import CoarseServer, FineServer
from serving.pipeline import PageRequests, PageResults

IMPORT_PATH = "serving.app:build_app"
HEALTH_CHECK_PERIOD_S = 2.0
"""How often Serve checks a replica (default 10 s): a dead one is replaced that much sooner."""


def coarse_name(arm: str) -> str:
    """The deployment name of an arm's coarse stage (``deployments:`` in a Serve config)."""
    return f"coarse-{arm}"


def user_configs(args: AppArgs) -> dict[str, dict]:
    """The ``user_config`` (the models) of each deployment that has one, by deployment name."""
    if args.layout == "fused":
        return {
            "ingress": {"coarse": {arm: spec.coarse for arm, spec in args.arms.items()}, "fine": args.fine}
        }
    return {coarse_name(arm): {"coarse": spec.coarse} for arm, spec in args.arms.items()} | {
        "fine": {"fine": args.fine}
    }


def build_app(args: AppArgs | dict) -> serve.Application:
    """The app: an ingress bound to the recall, per-arm coarse and fine deployments (layout
    "split"), or one ingress running them all (layout "fused"). Serve passes the config file's
    ``args`` table; it is validated as ``AppArgs`` here."""
    args = app_args(args)
    config = args.world_config
    batching = Batching(args.max_batch_size, args.batch_wait_timeout_s)
    common: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": args.cpus_per_replica},
        "max_ongoing_requests": args.max_ongoing_requests,
        "graceful_shutdown_wait_loop_s": 0.5,
        "graceful_shutdown_timeout_s": 2.0,
        "health_check_period_s": HEALTH_CHECK_PERIOD_S,
        "logging_config": {"enable_access_log": args.access_log},
    }
    models = user_configs(args)
    assignment = args.experiment()
    experiment = Experiment(
        arms=tuple(args.arms),
        shares=assignment.shares if assignment else (1.0,),
        sizes=tuple(args.coarse_size(a) for a in args.arms),
        assignment=assignment,
    )
    ingress = {"name": "ingress", "max_queued_requests": args.max_queued_requests, **common}
    if args.layout == "fused":
        sizes = {arm: args.coarse_size(arm) for arm in args.arms}
        scores = {arm: spec.coarse_score for arm, spec in args.arms.items()}
        deployment = ingress_deployment(config, experiment, FusedBackend)
        return deployment.options(user_config=models["ingress"], **ingress).bind(
            config, sizes, scores, batching, args.torch_threads
        )
    recall = RecallServer.options(name="recall", **common).bind(config, batching)
    coarse = {
        arm: CoarseServer.options(name=coarse_name(arm), user_config=models[coarse_name(arm)], **common).bind(
            recall, arm, args.coarse_size(arm), spec.coarse_score, batching, args.torch_threads
        )
        for arm, spec in args.arms.items()
    }
    fine = FineServer.options(name="fine", user_config=models["fine"], **common).bind(
        recall, batching, args.torch_threads
    )
    return ingress_deployment(config, experiment, SplitBackend).options(**ingress).bind(recall, coarse, fine)


class ServeError(RuntimeError):
    """The app failed to deploy or update."""


@dataclasses.dataclass
class ServedCascade:
    """A running app: its handle, URL and the means to swap models and stop it."""

    name: str
    args: AppArgs
    route_prefix: str
    handle: DeploymentHandle
    url: str
    owns_serve: bool = False
    owns_ray: bool = False

    def ranker(
        self, arm: str | None = None, chunk: int = 64, max_in_flight: int = 8, **options
    ) -> ServeRanker:
        """A ``PageRanker`` driving this app (``arm`` forces an arm; None = the assignment);
        ``options``: ``ServeRanker``'s (``log``, ``retry_timeout_s``)."""
        return ServeRanker(self.handle, arm=arm, chunk=chunk, max_in_flight=max_in_flight, **options)

    def rank(self, requests: PageRequests) -> PageResults:
        return self.handle.rank_batch.remote(requests).result()

    def versions(self) -> dict:
        """``GET /version``: per arm the coarse version and spec, the fine version."""
        return self.handle.version.remote().result().model_dump()

    def swap(self, arm: str, coarse: str, timeout_s: float = 120.0) -> None:
        """Serve arm ``arm``'s coarse stage from ``coarse`` (a baseline or checkpoint path),
        in place: the replicas' ``reconfigure`` loads it and swaps it in atomically. Returns
        once the app serves it; a checkpoint that does not load fails here, before any
        replica sees it. The arm keeps its ``coarse_score``, so it takes a checkpoint only."""
        if arm not in self.args.arms:
            raise ValueError(f"unknown arm {arm!r}; arms: {list(self.args.arms)}")
        spec = self._checked(coarse, "coarse")
        score = self.args.arms[arm].coarse_score
        if score and is_ranker_name(spec):
            raise ValueError(f"arm {arm!r} ranks by coarse_score {score!r}: {spec!r} is not a checkpoint")
        if self.args.layout == "fused":
            self._update("ingress", lambda models: models | {"coarse": models["coarse"] | {arm: spec}})
        else:
            self._update(coarse_name(arm), lambda _: {"coarse": spec})
        _wait(self.name, timeout_s, lambda: self.versions()["arms"][arm]["spec"] == spec)

    def swap_fine(self, fine: str, timeout_s: float = 120.0) -> None:
        spec = self._checked(fine, "fine")
        if self.args.layout == "fused":
            self._update("ingress", lambda models: models | {"fine": spec})
        else:
            self._update("fine", lambda _: {"fine": spec})
        _wait(self.name, timeout_s, lambda: self.versions()["fine"]["spec"] == spec)

    def _checked(self, spec: str, kind: str) -> str:
        """The spec of a scorer that loads: fail here, not in the replicas (the old model keeps
        serving)."""
        spec = scorer_spec(spec)
        if spec not in BASELINES:
            loaded = load_checkpoint(spec, kind=kind)
            if loaded.model.vocab != vocab_of(self.args.world_config):
                raise CheckpointError(f"{spec} was trained on another world: vocab {loaded.model.vocab}")
        return spec

    def _update(self, deployment: str, change: Callable[[dict], dict]) -> None:
        """Deploy the app again with ``change(user_config)`` as that deployment's user_config."""
        current = _deployed_apps().get(self.name) or _app_schema(self.name, self.route_prefix, self.args)
        for options in current.deployments:
            if options.name == deployment:
                options.user_config = change(options.user_config)
        _apply(current)

    def stop(self) -> None:
        """Delete the app; shut Serve and Ray down if ``start`` started them."""
        serve.delete(self.name)
        if self.owns_serve:
            serve.shutdown()
        if self.owns_ray:
            ray.shutdown()

    def __enter__(self) -> ServedCascade:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _app_schema(name: str, route_prefix: str, args: AppArgs) -> ServeApplicationSchema:
    """The app's declarative config. It names every model deployment's ``user_config``: Serve
    merges a listed deployment's options with the code's (runtime_env included) before hashing
    them, so a deployment first listed by a swap would hash differently and restart."""
    return ServeApplicationSchema(
        name=name,
        import_path=IMPORT_PATH,
        route_prefix=route_prefix,
        args=to_plain(args),
        deployments=[DeploymentSchema(name=n, user_config=c) for n, c in user_configs(args).items()],
    )


def _deployed_apps() -> dict[str, ServeApplicationSchema]:
    """The apps deployed declaratively, by name (a new config replaces them all)."""
    details = _get_global_client().get_serve_details()
    return {
        name: ServeApplicationSchema.model_validate(app["deployed_app_config"])
        for name, app in details.get("applications", {}).items()
        if app.get("deployed_app_config")
    }


def _apply(app: ServeApplicationSchema) -> None:
    """Deploy ``app`` next to the other declaratively deployed apps."""
    apps = _deployed_apps() | {app.name: app}
    _get_global_client().deploy_apps(ServeDeploySchema(applications=list(apps.values())))


def _wait(name: str, timeout_s: float, ready=lambda: True) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        status = serve.status().applications.get(name)
        if status is not None and status.status == "DEPLOY_FAILED":
            raise ServeError(f"app {name} failed to deploy: {status.message}")
        if status is not None and status.status == "RUNNING" and ready():
            return
        if time.monotonic() > deadline:
            state = status.status if status else "missing"
            raise ServeError(f"app {name} not ready after {timeout_s} s (status {state})")
        time.sleep(0.1)


def start(
    args: AppArgs | dict | None = None,
    name: str = "cascade",
    route_prefix: str = "/",
    timeout_s: float = 300.0,
) -> ServedCascade:
    """Deploy the app and wait until it serves; starts Ray (``init_ray``) and Serve (HTTP on
    ``args.host:args.port``) if they are not running, and ``stop`` then shuts them down."""
    args = app_args(args)
    owns_ray = init_ray()
    owns_serve = _get_global_client(raise_if_no_controller_running=False) is None
    if owns_serve:
        serve.start(http_options={"host": args.host, "port": args.port})
    _apply(_app_schema(name, route_prefix, args))
    _wait(name, timeout_s)
    http = _get_global_client().get_serve_details().get("http_options", {})
    url = f"http://{http.get('host', args.host)}:{http.get('port', args.port)}{route_prefix.rstrip('/')}"
    handle = serve.get_app_handle(name)
    return ServedCascade(name, args, route_prefix, handle, url, owns_serve, owns_ray)


def connect(name: str = "cascade") -> DeploymentHandle:
    """The ingress handle of a running app (for ``ServeRanker``)."""
    return serve.get_app_handle(name)
