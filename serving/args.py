"""The served app's arguments: one typed config (``common.config``), validated when built.

The same config is the ``args:`` table of ``configs/serve.yaml`` (``serve run`` / ``serve
deploy`` hand it as a plain dict to the app builder ``serving.app:build_app``, which builds it
with ``app_args``), the argument of ``serving.start`` and what ``python -m serving`` assembles
from its flags. From Python, ``AppArgs(arms={"control": {"coarse": "popularity"}})`` works too:
nested tables may be given as dicts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from common.assignment import Assignment
from common.config import ConfigError, config, from_mapping, setting
from policies.baselines import BASELINES
from policies.cascade import CascadeSizes
from policies.custom import check_coarse_score, import_custom, is_custom_spec, is_ranker_name
from simulator.config import SMALL, WorldConfig

WORLDS = {"small": SMALL, "default": WorldConfig()}
"""World specs by name; any other spec is the path of a TOML file with a ``[world]`` table."""

_ARM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


def world_config(spec: str) -> WorldConfig:
    """``"small"``, ``"default"`` or the path of a world TOML file."""
    if spec in WORLDS:
        return WORLDS[spec]
    if not Path(spec).is_file():
        raise ConfigError(f"must be one of {sorted(WORLDS)} or a TOML file; {spec!r} is neither")
    return WorldConfig.from_toml(spec)


def scorer_spec(spec: str) -> str:
    """A baseline name, a "module:attribute" ranker of your own (its module and attribute must
    exist; each replica imports it) or a checkpoint path made absolute (replicas may run
    elsewhere)."""
    if spec in BASELINES:
        return spec
    if is_custom_spec(spec):
        import_custom(spec)
        return spec
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(
            f"a scorer is one of {list(BASELINES)}, a checkpoint file or module:attribute; {spec!r} is none"
        )
    return str(path.resolve())


def _check_scorer(name: str, spec: str) -> None:
    try:
        scorer_spec(spec)
    except ConfigError as err:
        raise ConfigError(err.message, key=name) from None


@config
class ArmArgs:
    coarse: str = setting("popularity", path=True, keep=is_ranker_name)
    """The arm's coarse scorer: "random" | "popularity" | "oracle" | a coarse checkpoint path |
    "module:attribute" (a scorer or factory of your own, ``policies.custom``)."""
    coarse_size: int | None = setting(None, ge=1)
    """Candidates the coarse stage passes to the fine stage; None = the world's
    ``logging_coarse_size`` (600 in the default world, 100 in the small one)."""
    coarse_score: str = ""
    """What a coarse checkpoint ranks by: "" = its ``[train] score_task``, else "exposure" |
    "click" | "purchase" | "gmv" (expected GMV), as an experiment arm's ``coarse_score``."""

    def __post_init__(self) -> None:
        _check_scorer("coarse", self.coarse)
        check_coarse_score(self.coarse_score, self.coarse)


@config
class AssignmentArgs:
    salt: str = "serving"
    """Names the experiment (``abtest.assignment.Assignment``)."""
    layer: str = "default"
    """Experiments in different layers are orthogonal."""
    shares: dict[str, float] | None = None
    """Share of users per arm; None = equal shares."""


@config
class AppArgs:
    world: str = setting("small", path=True, keep=WORLDS)
    """"small", "default" or the path of a world TOML file (``[world]`` table)."""
    arms: dict[str, ArmArgs] = setting(default_factory=lambda: {"control": ArmArgs()})
    """Arms by name (letters, digits, _ and -); the first is conventionally the control."""
    fine: str = setting("oracle", path=True, keep=is_ranker_name)
    """The fine scorer shared by every arm: a baseline name, a fine checkpoint path or
    "module:attribute"."""
    assignment: AssignmentArgs = AssignmentArgs()
    host: str = "127.0.0.1"
    """HTTP host of Serve's proxy (used when ``serving.start`` / the CLI starts Serve;
    under ``serve run``, the config file's ``http_options`` decide)."""
    port: int = setting(8000, ge=0, le=65535)
    """HTTP port of Serve's proxy (as ``host``)."""
    layout: Literal["split", "fused"] = "split"
    """"split": recall, each arm's coarse stage and the fine stage are deployments of their own
    (four hops per page; each stage scales and swaps on its own). "fused": the ingress runs
    every stage in its process (one hop: the lower latency; models swap in place too)."""
    max_batch_size: int = setting(32, ge=1)
    """Most calls one ``@serve.batch`` invocation of a stage takes."""
    batch_wait_timeout_s: float = setting(0.0, ge=0)
    """How long a stage waits for a batch to fill; 0 = take what is queued (no added latency
    at low load; batches still form while the previous one computes)."""
    max_ongoing_requests: int = setting(128, ge=1)
    """Per replica, every deployment; keep it >= the clients' concurrency (Serve's default,
    5, stalls routing under bursts)."""
    max_queued_requests: int = setting(-1, ge=-1)
    """Requests waiting for an ingress replica beyond its ``max_ongoing_requests``, per caller
    (Serve's proxy, a handle), before the next is refused: HTTP 503 with ``Retry-After``, a
    handle's ``BackPressureError``. -1 = unbounded (overload then shows as latency)."""
    cpus_per_replica: float = setting(0.1, ge=0)
    """Logical CPUs each replica reserves (the stages are light; torch uses ``torch_threads``)."""
    torch_threads: int = setting(1, ge=1)
    """Intra-op threads of the model stages (1: many small processes share few cores)."""
    access_log: bool = False
    """Log every call of every deployment (Serve's access log; costs latency)."""

    def __post_init__(self) -> None:
        try:
            config = world_config(self.world)
        except ConfigError as err:
            raise ConfigError(str(err), key="world") from None
        _check_scorer("fine", self.fine)
        if not self.arms:
            raise ConfigError("at least one arm is needed", key="arms")
        for name in self.arms:
            if not _ARM_NAME.match(name):
                raise ConfigError(f"arm name {name!r} must be 1-40 letters, digits, '_' or '-'", key="arms")
            size = self.arms[name].coarse_size or config.logging_coarse_size
            try:
                CascadeSizes(coarse=size, page=config.page_size)
            except ValueError as err:
                raise ConfigError(str(err), table=f"arms.{name}", key="coarse_size") from None
            if size > config.recall_size:
                raise ConfigError(
                    f"{size} exceeds the recall size {config.recall_size}",
                    table=f"arms.{name}",
                    key="coarse_size",
                )
        shares = self.assignment.shares
        if shares is not None and set(shares) != set(self.arms):
            raise ConfigError(
                f"name arms {sorted(shares)}, the arms are {sorted(self.arms)}",
                table="assignment",
                key="shares",
            )
        try:
            self.experiment()  # Assignment validates the shares
        except ValueError as err:
            raise ConfigError(str(err), table="assignment", key="shares") from None

    @property
    def world_config(self) -> WorldConfig:
        return world_config(self.world)

    def coarse_size(self, arm: str) -> int:
        size = self.arms[arm].coarse_size
        return self.world_config.logging_coarse_size if size is None else size

    def experiment(self) -> Assignment | None:
        """The arms' assignment; None with a single arm (everyone is in it)."""
        if len(self.arms) < 2:
            return None
        names = tuple(self.arms)
        shares = self.assignment.shares
        values = tuple(shares[a] for a in names) if shares else tuple(1 / len(names) for _ in names)
        return Assignment(self.assignment.salt, names, values, self.assignment.layer)


def app_args(args: AppArgs | Mapping[str, Any] | None) -> AppArgs:
    """The typed arguments from what an app builder is handed: AppArgs, a plain dict (the
    ``args:`` table of a Serve config) or None (the defaults)."""
    if isinstance(args, AppArgs):
        return args
    return from_mapping(AppArgs, args or {})
