"""The served app's arguments: one typed (pydantic) model, validated when the app is built.

The same model is the ``args:`` table of ``configs/serve.yaml`` (``serve run`` / ``serve
deploy`` validate it through the typed app builder ``serving.app:build_app``), the argument of
``serving.start`` and what ``python -m serving`` assembles from its flags.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from abtest.assignment import Assignment
from policies.baselines import BASELINES
from policies.cascade import CascadeSizes
from simulator.config import SMALL, ConfigError, WorldConfig

WORLDS = {"small": SMALL, "default": WorldConfig()}
"""World specs by name; any other spec is the path of a TOML file with a ``[world]`` table."""

_ARM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


def world_config(spec: str) -> WorldConfig:
    """``"small"``, ``"default"`` or the path of a world TOML file."""
    if spec in WORLDS:
        return WORLDS[spec]
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"world must be one of {sorted(WORLDS)} or a TOML file; {spec!r} is neither")
    try:
        return WorldConfig.from_toml(path)
    except (ConfigError, ValueError) as err:
        raise ValueError(f"world file {spec}: {err}") from err


def scorer_spec(spec: str) -> str:
    """A baseline name, or a checkpoint path made absolute (replicas may run elsewhere)."""
    if spec in BASELINES:
        return spec
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"a scorer is one of {list(BASELINES)} or a checkpoint file; {spec!r} is neither")
    return str(path.resolve())


ScorerSpec = Annotated[str, AfterValidator(scorer_spec)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArmArgs(_Strict):
    coarse: ScorerSpec = "popularity"
    """The arm's coarse scorer: "random" | "popularity" | "oracle" | a coarse checkpoint path."""
    coarse_size: int | None = Field(default=None, ge=1)
    """Candidates the coarse stage passes to the fine stage; None = the world's
    ``logging_coarse_size`` (600 in the default world, 100 in the small one)."""


class AssignmentArgs(_Strict):
    salt: str = "serving"
    """Names the experiment (``abtest.assignment.Assignment``)."""
    layer: str = "default"
    """Experiments in different layers are orthogonal."""
    shares: dict[str, float] | None = None
    """Share of users per arm; None = equal shares."""


class AppArgs(_Strict):
    world: str = "small"
    """"small", "default" or the path of a world TOML file (``[world]`` table)."""
    arms: dict[str, ArmArgs] = Field(default_factory=lambda: {"control": ArmArgs()})
    """Arms by name (letters, digits, _ and -); the first is conventionally the control."""
    fine: ScorerSpec = "oracle"
    """The fine scorer shared by every arm: a baseline name or a fine checkpoint path."""
    assignment: AssignmentArgs = Field(default_factory=AssignmentArgs)
    host: str = "127.0.0.1"
    """HTTP host of Serve's proxy (used when ``serving.start`` / the CLI starts Serve;
    under ``serve run``, the config file's ``http_options`` decide)."""
    port: int = Field(default=8000, ge=0, le=65535)
    """HTTP port of Serve's proxy (as ``host``)."""
    max_batch_size: int = Field(default=32, ge=1)
    """Most calls one ``@serve.batch`` invocation of a stage takes."""
    batch_wait_timeout_s: float = Field(default=0.0, ge=0.0)
    """How long a stage waits for a batch to fill; 0 = take what is queued (no added latency
    at low load; batches still form while the previous one computes)."""
    max_ongoing_requests: int = Field(default=128, ge=1)
    """Per replica, every deployment; keep it >= the clients' concurrency (Serve's default,
    5, stalls routing under bursts)."""
    cpus_per_replica: float = Field(default=0.1, ge=0.0)
    """Logical CPUs each replica reserves (the stages are light; torch uses ``torch_threads``)."""
    torch_threads: int = Field(default=1, ge=1)
    """Intra-op threads of the model stages (1: many small processes share few cores)."""
    access_log: bool = False
    """Log every call of every deployment (Serve's access log; costs latency)."""

    @field_validator("world")
    @classmethod
    def _world(cls, spec: str) -> str:
        world_config(spec)
        return spec if spec in WORLDS else str(Path(spec).resolve())

    @field_validator("arms")
    @classmethod
    def _arm_names(cls, arms: dict[str, ArmArgs]) -> dict[str, ArmArgs]:
        if not arms:
            raise ValueError("at least one arm is needed")
        for name in arms:
            if not _ARM_NAME.match(name):
                raise ValueError(f"arm name {name!r} must be 1-40 letters, digits, '_' or '-'")
        return arms

    @model_validator(mode="after")
    def _consistent(self) -> AppArgs:
        config = self.world_config
        for name in self.arms:
            size = self.coarse_size(name)
            try:
                CascadeSizes(coarse=size, page=config.page_size)
            except ValueError as err:
                raise ValueError(f"arm {name}: {err}") from err
            if size > config.recall_size:
                raise ValueError(
                    f"arm {name}: coarse_size {size} exceeds the recall size {config.recall_size}"
                )
        shares = self.assignment.shares
        if shares is not None and set(shares) != set(self.arms):
            raise ValueError(
                f"assignment shares name arms {sorted(shares)}, the arms are {sorted(self.arms)}"
            )
        self.experiment()  # Assignment validates the shares
        return self

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
