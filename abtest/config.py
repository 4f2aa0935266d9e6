"""The experiment config: one TOML file names the world, arms, traffic, assignment, metrics
and statistics of a simulated online A/B test (``configs/default.toml`` documents every key).

Every table maps onto a frozen dataclass below (each field documented where it is declared);
unknown keys, ill-typed values and inconsistent settings raise ``ConfigError`` naming the
table and the known keys. ``ExperimentConfig.to_dict`` is the inverse of ``parse_config``, so a
run folder's ``config.toml`` rebuilds the exact experiment.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from abtest.outcomes import USER_COLUMNS
from abtest.stats import Mean, Metric, Ratio
from simulator.config import ConfigError, from_mapping, load_world_config, to_plain

BASELINES = ("random", "popularity", "oracle")
"""Ranker specs that need no model: uniform random, item popularity, the simulator's truth."""

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _check_name(value: str, what: str) -> None:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigError(f"{what} must be a name of letters, digits, '_', '-' or '.', got {value!r}")


def _check_int(section: str, name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{section} {name} must be an integer >= {low}, got {value!r}")


def _check_ranker(section: str, name: str, spec: Any) -> None:
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"{section} {name} must be a non-empty string, got {spec!r}")
    if spec not in BASELINES and not spec.endswith((".pt", ".toml")):
        raise ConfigError(
            f"{section} {name} = {spec!r} is neither a baseline {list(BASELINES)}, "
            "a checkpoint (.pt) nor a training config (.toml)"
        )


@dataclasses.dataclass(frozen=True)
class ArmConfig:
    """One arm: a cascade whose stages are named by spec."""

    coarse: str
    """Coarse ranker: "random" | "popularity" | "oracle", a checkpoint (.pt), or a training
    config (.toml) whose checkpoint is trained first if missing (``policies.train``)."""
    fine: str = "configs/models/fine.toml"
    """Fine ranker, the same kinds of spec; usually shared by every arm."""
    coarse_size: int = 600
    """Candidates the coarse stage passes to the fine stage (the page size is the world's)."""

    def __post_init__(self) -> None:
        _check_ranker("[arms]", "coarse", self.coarse)
        _check_ranker("[arms]", "fine", self.fine)
        _check_int("[arms]", "coarse_size", self.coarse_size, 1)


class Through(enum.StrEnum):
    """How the cascade is reached."""

    INPROCESS = "inprocess"
    """The same ``policies.cascade.Cascade`` code called directly (optionally on Ray tasks)."""
    SERVE = "serve"
    """Batched calls to the cascade hosted on Ray Serve (``serving``)."""


@dataclasses.dataclass(frozen=True)
class TrafficConfig:
    users: int = 20_000
    """Experiment users, ids 0..users-1 (the logged users, whose ids the models know)."""
    days: int = 1
    """Experiment days; each user has one session per day."""
    first_day: int = 1
    """Index of the first experiment day; days before it are the logs / the pre-period, so
    experiment sessions are fresh draws."""
    through: Through = Through.SERVE
    """"serve" (the default of run_ab.py) or "inprocess"; ``--through`` overrides it."""
    workers: int = 2
    """In-process only: Ray tasks sharing the traffic (1 = run in this process). Results do
    not depend on it."""
    shard_users: int = 2_000
    """Users per shard: the unit of work, of checkpointing (``--resume``) and of progress."""

    def __post_init__(self) -> None:
        for name in ("users", "days", "workers", "shard_users"):
            _check_int("[traffic]", name, getattr(self, name), 1)
        _check_int("[traffic]", "first_day", self.first_day, 0)
        if self.users < 4:
            raise ConfigError(f"[traffic] users must be >= 4 (2 per arm at least), got {self.users}")


class PreSource(enum.StrEnum):
    LOGS = "logs"
    """The logged days (before first_day) of samples.parquet: free, and the real-world choice."""
    SIMULATE = "simulate"
    """Simulate ``days`` pre-period days through the control arm's cascade for every user."""
    NONE = "none"
    """No pre-period: CUPED is off."""


@dataclasses.dataclass(frozen=True)
class PrePeriodConfig:
    source: PreSource = PreSource.LOGS
    """Where the CUPED covariates come from: "logs", "simulate" or "none"."""
    logs: str = "data/logs/default"
    """source = "logs": the log folder (``python -m simulator logs``) of the same world; it must
    cover users 0..users-1. Simulated on first use if missing."""
    days: int = 1
    """source = "simulate": days simulated before first_day (first_day - days .. first_day - 1).
    source = "logs": days logged when the folder has to be created."""

    def __post_init__(self) -> None:
        _check_int("[pre_period]", "days", self.days, 1)


@dataclasses.dataclass(frozen=True)
class AssignmentConfig:
    salt: str = "cascade-ab"
    """Names the experiment: the hash of (layer, salt, user id) picks the arm."""
    layer: str = "default"
    """Experiments in different layers are orthogonal."""
    shares: tuple[float, ...] = ()
    """Designed share of users per arm, in [arms] order; empty = equal shares."""
    control: str = ""
    """Name of the control arm; empty = the first arm."""
    aa: bool = False
    """A/A mode: every arm runs the control's cascade (a check of the whole pipeline)."""
    traffic_shares: tuple[float, ...] = ()
    """Shares actually used to route users; empty = ``shares``. Set it differently only to
    inject a sample-ratio mismatch, which the SRM gate must then catch."""

    def __post_init__(self) -> None:
        if not isinstance(self.salt, str) or not self.salt:
            raise ConfigError("[assignment] salt must be a non-empty string")
        for name in ("shares", "traffic_shares"):
            shares = getattr(self, name)
            if shares and (min(shares) <= 0 or abs(sum(shares) - 1) > 1e-9):
                raise ConfigError(f"[assignment] {name} must be > 0 and sum to 1, got {list(shares)}")


class Correction(enum.StrEnum):
    HOLM = "holm"
    BH = "bh"
    NONE = "none"


class LiftCI(enum.StrEnum):
    DELTA = "delta"
    FIELLER = "fieller"


@dataclasses.dataclass(frozen=True)
class StatsConfig:
    alpha: float = 0.05
    """Significance level of every test and confidence interval."""
    power: float = 0.8
    """Power for the minimum detectable effects and users-needed figures."""
    correction: Correction = Correction.HOLM
    """Multiple-testing correction over metrics x treatments: "holm", "bh" or "none"."""
    lift_ci: LiftCI = LiftCI.DELTA
    """Relative-lift interval: "delta" (includes the control's variance) or "fieller"."""
    cuped: bool = True
    """CUPED with the pre-period column pre_<column> of each metric column, where present."""
    srm_threshold: float = 0.001
    """The SRM chi-squared gate fails below this p-value."""
    sequential: bool = True
    """Always-valid intervals for the daily looks (days > 1)."""
    min_effective_users: int = 5
    """A metric is analysed only if its variance rests on at least this many users (Kish's
    effective number of its influence values); else it is skipped with the reason."""
    funnel_users: int = 500
    """Funnel loss: users 0..funnel_users-1 on the first day (about funnel_users / arms per arm)."""
    funnel_k: int = 10
    """Funnel loss: the k truly best items of the pool per user (expected clicks)."""

    def __post_init__(self) -> None:
        for name in ("alpha", "power", "srm_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
                raise ConfigError(f"[stats] {name} must be a number in (0, 1), got {value!r}")
        _check_int("[stats]", "funnel_users", self.funnel_users, 0)
        _check_int("[stats]", "min_effective_users", self.min_effective_users, 1)
        _check_int("[stats]", "funnel_k", self.funnel_k, 1)


STANDARD_METRICS: dict[str, str | tuple[str, str]] = {
    "uctr": "clicked",
    "pctr": ("clicks", "pages"),
    "depth": "pages",
    "clicks": "clicks",
    "purchases": "purchases",
    "gmv": "gmv",
    "global_hitrate": ("global_hits", "global_purchases"),
    "inscene_hitrate": ("inscene_hits", "inscene_purchases"),
}
"""The default [metrics]: a string is the mean of a per-user column, a pair a ratio of means."""


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment file (see ``configs/default.toml``)."""

    name: str
    """Run folder name: runs/ab/<name>."""
    arms: dict[str, ArmConfig]
    """Arms by name, in file order."""
    world: str = "default"
    """The world: "default", "small" or a TOML file with a [world] table."""
    description: str = ""
    traffic: TrafficConfig = TrafficConfig()
    pre_period: PrePeriodConfig = PrePeriodConfig()
    assignment: AssignmentConfig = AssignmentConfig()
    stats: StatsConfig = StatsConfig()
    metrics: dict[str, str | tuple[str, str]] = dataclasses.field(
        default_factory=lambda: dict(STANDARD_METRICS)
    )
    """Metric name -> per-user column (a mean) or [numerator, denominator] (a ratio of means)."""

    def __post_init__(self) -> None:
        _check_name(self.name, "name")
        if len(self.arms) < 2:
            raise ConfigError(f"[arms] needs at least 2 arms, got {list(self.arms)}")
        for arm in self.arms:
            _check_name(arm, "an arm name")
        a = self.assignment
        for name in ("shares", "traffic_shares"):
            if getattr(a, name) and len(getattr(a, name)) != len(self.arms):
                raise ConfigError(
                    f"[assignment] {name} has {len(getattr(a, name))} entries for {len(self.arms)} arms"
                )
        if a.control and a.control not in self.arms:
            raise ConfigError(f"[assignment] control {a.control!r} is not an arm; arms: {list(self.arms)}")
        if self.pre_period.source is PreSource.SIMULATE and self.pre_period.days > self.traffic.first_day:
            raise ConfigError(
                f"[pre_period] days = {self.pre_period.days} simulated days must fit before "
                f"[traffic] first_day = {self.traffic.first_day}"
            )
        if self.pre_period.source is PreSource.LOGS and self.traffic.first_day < 1:
            raise ConfigError('[pre_period] source = "logs" needs [traffic] first_day >= 1 (after the logs)')
        if not self.metrics:
            raise ConfigError("[metrics] is empty")
        for metric, spec in self.metrics.items():
            columns = (spec,) if isinstance(spec, str) else spec
            if not isinstance(columns, tuple) or len(columns) not in (1, 2):
                raise ConfigError(
                    f"[metrics] {metric} must be a column name or a [numerator, denominator] pair, "
                    f"got {spec!r}"
                )
            for column in columns:
                if column not in USER_COLUMNS:
                    raise ConfigError(
                        f"[metrics] {metric}: unknown per-user column {column!r}; known: {list(USER_COLUMNS)}"
                    )

    @property
    def arm_names(self) -> tuple[str, ...]:
        return tuple(self.arms)

    @property
    def control(self) -> str:
        return self.assignment.control or self.arm_names[0]

    @property
    def shares(self) -> tuple[float, ...]:
        """Designed shares (what the SRM gate tests against)."""
        n = len(self.arms)
        return self.assignment.shares or tuple(1 / n for _ in range(n))

    @property
    def traffic_shares(self) -> tuple[float, ...]:
        return self.assignment.traffic_shares or self.shares

    @property
    def experiment_days(self) -> list[int]:
        return list(range(self.traffic.first_day, self.traffic.first_day + self.traffic.days))

    @property
    def pre_days(self) -> list[int]:
        """Days simulated as the pre-period (source = "simulate"), else []."""
        if self.pre_period.source is not PreSource.SIMULATE:
            return []
        return list(range(self.traffic.first_day - self.pre_period.days, self.traffic.first_day))

    def metric_specs(self, columns: set[str] | None = None) -> dict[str, Metric]:
        """The metrics as ``abtest.stats`` objects; CUPED covariates pre_<column> are attached
        when ``columns`` (the per-user table's columns) holds all of them."""
        out: dict[str, Metric] = {}
        for name, spec in self.metrics.items():
            if isinstance(spec, str):
                cov = f"pre_{spec}"
                out[name] = Mean(spec, covariate=cov if columns and cov in columns else None)
            else:
                pair = (f"pre_{spec[0]}", f"pre_{spec[1]}")
                has = columns is not None and set(pair) <= columns
                out[name] = Ratio(spec[0], spec[1], covariate=pair if has else None)
        return out

    def to_dict(self) -> dict[str, Any]:
        plain = to_plain(self)
        plain["arms"] = {name: to_plain(arm) for name, arm in self.arms.items()}
        plain["metrics"] = {k: v if isinstance(v, str) else list(v) for k, v in self.metrics.items()}
        return plain

    def to_toml(self) -> str:
        return dumps_toml(self.to_dict())

    def replace(self, **sections: Any) -> ExperimentConfig:
        """A copy with some tables replaced by dataclasses or by dicts of changed keys, e.g.
        ``config.replace(traffic={"users": 2000}, name="quick")``."""
        changes = {}
        for key, value in sections.items():
            current = getattr(self, key)
            is_table = isinstance(value, Mapping) and dataclasses.is_dataclass(current)
            changes[key] = dataclasses.replace(current, **value) if is_table else value
        return dataclasses.replace(self, **changes)


_TOP = {f.name for f in dataclasses.fields(ExperimentConfig)}


def parse_config(raw: Mapping[str, Any], source: str = "config") -> ExperimentConfig:
    """Validate a parsed experiment TOML (a dict); errors name ``source`` and the table."""
    unknown = sorted(set(raw) - _TOP)
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {unknown}; known: {sorted(_TOP)}")
    if "name" not in raw:
        raise ConfigError(f"{source}: missing top-level key name (the run folder runs/ab/<name>)")
    arms_raw = raw.get("arms")
    if not isinstance(arms_raw, Mapping) or not arms_raw:
        raise ConfigError(f"{source}: needs an [arms.<name>] table per arm (at least 2)")
    if not isinstance(raw.get("world", "default"), str):
        raise ConfigError(f"{source}: world must be a string")
    metrics = raw.get("metrics", STANDARD_METRICS)
    if not isinstance(metrics, Mapping):
        raise ConfigError(f"{source}: [metrics] must be a table of name = column or [num, den]")
    try:
        if any(not isinstance(v, Mapping) for v in arms_raw.values()):
            raise ConfigError("[arms] must hold one table per arm, e.g. [arms.control]")
        load_world_config(raw.get("world", "default"))  # a missing world file fails here
        return ExperimentConfig(
            name=raw["name"],
            description=raw.get("description", ""),
            world=raw.get("world", "default"),
            arms={name: from_mapping(ArmConfig, table, f"[arms.{name}]") for name, table in arms_raw.items()},
            traffic=from_mapping(TrafficConfig, raw.get("traffic", {}), "[traffic]"),
            pre_period=from_mapping(PrePeriodConfig, raw.get("pre_period", {}), "[pre_period]"),
            assignment=from_mapping(AssignmentConfig, raw.get("assignment", {}), "[assignment]"),
            stats=from_mapping(StatsConfig, raw.get("stats", {}), "[stats]"),
            metrics={k: v if isinstance(v, str) else tuple(v) for k, v in metrics.items()},
        )
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    except TypeError as err:  # e.g. a metric given as a number
        raise ConfigError(f"{source}: {err}") from None


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment TOML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment config {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None
    return parse_config(raw, str(path))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dumps_toml(data: Mapping[str, Any]) -> str:
    """A small TOML writer for nested dicts of scalars and lists (what ``to_dict`` returns)."""
    lines: list[str] = []

    def table(prefix: str, values: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in values.items() if not isinstance(v, Mapping)}
        tables = {k: v for k, v in values.items() if isinstance(v, Mapping)}
        if prefix and (scalars or not tables):
            lines.append(f"\n[{prefix}]")
        for key, value in scalars.items():
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
        for key, value in tables.items():
            table(f"{prefix}.{_toml_key(key)}" if prefix else _toml_key(key), value)

    table("", data)
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)
