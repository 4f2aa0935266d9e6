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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from abtest.outcomes import USER_COLUMNS
from abtest.stats import Mean, Metric, Ratio
from common.config import ConfigError, config, dumps_toml, from_mapping, load_toml, setting, to_plain
from policies.baselines import BASELINES
from policies.custom import check_coarse_score, is_ranker_name
from simulator.config import WORLD_NAMES, load_world_config
from simulator.segments import DIMENSIONS

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _check_name(value: str, key: str, table: str | None = None) -> None:
    if not _NAME.match(value):
        raise ConfigError(f"must be letters, digits, '_', '-' or '.', got {value!r}", key=key, table=table)


def _check_ranker(name: str, spec: str) -> None:
    if not spec:
        raise ConfigError("must be a non-empty string", key=name)
    if not is_ranker_name(spec) and not spec.endswith((".pt", ".toml")):
        raise ConfigError(
            f"{spec!r} is neither a baseline {list(BASELINES)}, a checkpoint (.pt), a training "
            "config (.toml) nor a Python object (module:attribute)",
            key=name,
        )


@config
class ArmConfig:
    """One arm: a cascade whose stages are named by spec."""

    coarse: str = setting(path=True, keep=is_ranker_name)
    """Coarse ranker: "random" | "popularity" | "oracle", a checkpoint (.pt), a training
    config (.toml) whose checkpoint is trained first if missing (``policies.train``), or
    "module:attribute" naming your own scorer or a factory ``f(world, features)`` of one
    (``policies.custom``)."""
    fine: str = setting("configs/models/fine.toml", path=True, keep=is_ranker_name)
    """Fine ranker, the same kinds of spec; usually shared by every arm."""
    coarse_size: int = setting(600, ge=1)
    """Candidates the coarse stage passes to the fine stage (the page size is the world's)."""
    coarse_score: str = ""
    """What the coarse model ranks by: "" = its checkpoint's ``[train] score_task``, else
    "exposure" | "click" | "purchase" | "gmv" (expected GMV: the purchase head and the price),
    so arms can share one checkpoint scored two ways (in process and through Serve)."""

    def __post_init__(self) -> None:
        _check_ranker("coarse", self.coarse)
        _check_ranker("fine", self.fine)
        check_coarse_score(self.coarse_score, self.coarse)


class Through(enum.StrEnum):
    """How the cascade is reached."""

    INPROCESS = "inprocess"
    """The same ``policies.cascade.Cascade`` code called directly (optionally on Ray tasks)."""
    SERVE = "serve"
    """Batched calls to the cascade hosted on Ray Serve (``serving``)."""


@config
class TrafficConfig:
    users: int = setting(20_000, ge=4)
    """Experiment users, ids 0..users-1 (the logged users, whose ids the models know); at
    least 4 (2 per arm)."""
    days: int = setting(1, ge=1)
    """Experiment days; each user has one session per day."""
    first_day: int = setting(1, ge=0)
    """Index of the first experiment day; days before it are the logs / the pre-period, so
    experiment sessions are fresh draws."""
    through: Through = Through.SERVE
    """"serve" (the default of run_ab.py) or "inprocess"; ``--through`` overrides it."""
    workers: int = setting(2, ge=1)
    """In-process only: Ray tasks sharing the traffic (1 = run in this process). Results do
    not depend on it."""
    shard_users: int = setting(2_000, ge=1)
    """Users per shard: the unit of work, of checkpointing (``--resume``) and of progress."""


class DesignKind(enum.StrEnum):
    """How users meet the arms (``abtest.analysis`` dispatches the statistics on it)."""

    SPLIT = "split"
    """Each user sees one arm, by the assignment hash: the production A/B test (Welch, delta
    method, CUPED, SRM gate)."""
    PAIRED = "paired"
    """Every user runs through every arm on the same random numbers (the counterfactual only
    a simulator owns): paired per-user differences; no SRM gate (nothing is split) and no
    CUPED (a covariate common to both arms of a user cancels in the difference)."""
    INTERLEAVE = "interleave"
    """Every user's sessions run on team-draft pages of all arms (multileaving for more than
    two); each click, purchase and GMV (and their expected values) is credited to the arm that
    contributed the item, and the per-user credit difference is tested by the sign test
    (``abtest.stats.analyse_interleaved``). Only credited metrics apply; no SRM gate, no CUPED."""


@config
class DesignConfig:
    kind: DesignKind = DesignKind.SPLIT
    """"split" (the default: what production can do), "paired" or "interleave"."""
    truth_users: int = setting(2_000, ge=0)
    """split and interleave: users (a hash-chosen sample of 0..users-1, all if fewer) also run
    through every arm on its own (split: the arms they were not assigned), for the true effect
    in the report; 0 = no truth. paired: unused, the truth comes from the same runs on every
    user."""


class PreSource(enum.StrEnum):
    LOGS = "logs"
    """The logged days (before first_day) of samples.parquet: free, and the real-world choice."""
    SIMULATE = "simulate"
    """Simulate ``days`` pre-period days through the control arm's cascade for every user."""
    NONE = "none"
    """No pre-period: CUPED is off."""


@config
class PrePeriodConfig:
    source: PreSource = PreSource.LOGS
    """Where the CUPED covariates come from: "logs", "simulate" or "none"."""
    logs: str = setting("data/logs/default", path=True)
    """source = "logs": the log folder (``python -m simulator logs``) of the same world; it must
    cover users 0..users-1. Simulated on first use if missing."""
    days: int = setting(1, ge=1)
    """source = "simulate": days simulated before first_day (first_day - days .. first_day - 1).
    source = "logs": days logged when the folder has to be created."""


@config
class AssignmentConfig:
    salt: str = "cascade-ab"
    """Names the experiment: the hash of (layer, salt, user id) picks the arm."""
    layer: str = "default"
    """Experiments in different layers are orthogonal."""
    shares: tuple[float, ...] = setting((), gt=0)
    """Designed share of users per arm, in [arms] order; empty = equal shares."""
    control: str = ""
    """Name of the control arm; empty = the first arm."""
    aa: bool = False
    """A/A mode: every arm runs the control's cascade (a check of the whole pipeline)."""
    traffic_shares: tuple[float, ...] = setting((), gt=0)
    """Shares actually used to route users; empty = ``shares``. Set it differently only to
    inject a sample-ratio mismatch, which the SRM gate must then catch."""

    def __post_init__(self) -> None:
        if not self.salt:
            raise ConfigError("must be a non-empty string", key="salt")
        for name in ("shares", "traffic_shares"):
            shares = getattr(self, name)
            if shares and abs(sum(shares) - 1) > 1e-9:
                raise ConfigError(f"must sum to 1, got {list(shares)}", key=name)


class Correction(enum.StrEnum):
    HOLM = "holm"
    BH = "bh"
    NONE = "none"


class LiftCI(enum.StrEnum):
    DELTA = "delta"
    FIELLER = "fieller"


@config
class StatsConfig:
    alpha: float = setting(0.05, gt=0, lt=1)
    """Significance level of every test and confidence interval."""
    power: float = setting(0.8, gt=0, lt=1)
    """Power for the minimum detectable effects and users-needed figures."""
    correction: Correction = Correction.HOLM
    """Multiple-testing correction over metrics x treatments: "holm", "bh" or "none"."""
    lift_ci: LiftCI = LiftCI.DELTA
    """Relative-lift interval: "delta" (includes the control's variance) or "fieller"."""
    cuped: bool = True
    """CUPED with the pre-period column pre_<column> of each metric column, where present."""
    srm_threshold: float = setting(0.001, gt=0, lt=1)
    """The SRM chi-squared gate fails below this p-value."""
    sequential: bool = True
    """Always-valid intervals for the daily looks (days > 1)."""
    min_effective_users: int = setting(5, ge=1)
    """A metric is analysed only if its variance rests on at least this many users (Kish's
    effective number of its influence values); else it is skipped with the reason."""
    funnel_users: int = setting(500, ge=0)
    """Funnel loss: users 0..funnel_users-1 on the first day (about funnel_users / arms per arm)."""
    funnel_k: int = setting(10, ge=1)
    """Funnel loss: the k truly best items of the pool per user (expected clicks)."""


SEGMENT_METRICS = ("clicks", "uctr", "gmv")
"""The metrics broken down by segment by default (those of them in [metrics])."""


@config
class SegmentsConfig:
    """Per-segment results (exploratory: no multiple-testing correction across segments)."""

    dimensions: tuple[str, ...] = ("activity", "mindful", "warm")
    """Label columns of ``simulator.segments.user_segments`` to break the results down by:
    "activity" (heavy / light / unlogged), "mindful", "arrival_day", "warm" (warm / cold: the
    users whose logs trained every trained model of the arms); empty = no breakdown."""
    metrics: tuple[str, ...] = ()
    """Names in [metrics] analysed per segment, each with its exact twin when [metrics] has it
    (e.g. exact_clicks of clicks); empty = those of clicks, uctr and gmv in [metrics]."""

    def __post_init__(self) -> None:
        for key, values in (("dimensions", self.dimensions), ("metrics", self.metrics)):
            if len(set(values)) != len(values):
                raise ConfigError(f"lists a name twice: {list(values)}", key=key)
        unknown = [d for d in self.dimensions if d not in DIMENSIONS]
        if unknown:
            raise ConfigError(f"unknown dimension(s) {unknown}; known: {list(DIMENSIONS)}", key="dimensions")


STANDARD_METRICS: dict[str, str | tuple[str, str]] = {
    "uctr": "clicked",
    "daily_uctr": ("clicked_days", "days"),
    "pctr": ("clicks", "pages"),
    "depth": "pages",
    "clicks": "clicks",
    "purchases": "purchases",
    "gmv": "gmv",
    "global_hitrate": ("global_hits", "global_purchases"),
    "inscene_hitrate": ("inscene_hits", "inscene_purchases"),
    "expected_uctr": "expected_clicked",
    "expected_clicks": "expected_clicks",
    "expected_purchases": "expected_purchases",
    "expected_gmv": "expected_gmv",
    "exact_uctr": "exact_clicked",
    "exact_daily_uctr": ("exact_clicked_days", "days"),
    "exact_clicks": "exact_clicks",
    "exact_purchases": "exact_purchases",
    "exact_gmv": "exact_gmv",
    "new_item_share": ("new_impressions", "impressions"),
    "new_item_clicks": "new_clicks",
    "exact_new_item_share": ("exact_new_impressions", "exact_impressions"),
    "exact_new_item_clicks": "exact_new_clicks",
    "new_item_hitrate": ("new_global_hits", "new_global_purchases"),
}
"""The default [metrics]: a string is the mean of a per-user column, a pair a ratio of means.
``uctr`` is the share of users with a click on any experiment day, ``daily_uctr`` the share of
user-days with a click (the usual daily figure; the two differ when the experiment has several days).
``new_item_share`` is the share of impressions that show new items (``world.item_is_new``),
``new_item_clicks`` the clicks on new items per user (seed 000's new-product metric),
``new_item_hitrate`` the global hitrate of the purchases of new items.
The expected_* metrics are the simulator's expected values given the pages shown
(``abtest.outcomes.EXPECTED_TWINS``), the exact_* ones the expectations over every draw given
the policy (``abtest.outcomes.EXACT_TWINS``): the same effects as uctr, clicks, purchases and
GMV with less variance."""


@config
class ExperimentConfig:
    """A whole experiment file (see ``configs/default.toml``)."""

    name: str
    """Run folder name: runs/ab/<name>."""
    arms: dict[str, ArmConfig]
    """Arms by name, in file order."""
    world: str = setting("default", path=True, keep=WORLD_NAMES)
    """The world: "default", "small" or a TOML file with a [world] table."""
    description: str = ""
    """Free text for the report (any characters, several lines allowed)."""
    design: DesignConfig = DesignConfig()
    traffic: TrafficConfig = TrafficConfig()
    pre_period: PrePeriodConfig = PrePeriodConfig()
    assignment: AssignmentConfig = AssignmentConfig()
    stats: StatsConfig = StatsConfig()
    metrics: dict[str, str | tuple[str, str]] = dataclasses.field(
        default_factory=lambda: dict(STANDARD_METRICS)
    )
    """Metric name -> per-user column (a mean) or [numerator, denominator] (a ratio of means)."""
    segments: SegmentsConfig = SegmentsConfig()

    def __post_init__(self) -> None:
        _check_name(self.name, "name")
        if len(self.arms) < 2:
            raise ConfigError(
                f"needs at least 2 arms ([arms.<name>] tables), got {list(self.arms)}", table="arms"
            )
        for arm in self.arms:
            _check_name(arm, arm, table="arms")
        try:
            load_world_config(self.world)  # a missing or invalid world file fails here
        except ConfigError as err:
            raise ConfigError(str(err), key="world") from None
        a = self.assignment
        for name in ("shares", "traffic_shares"):
            if getattr(a, name) and len(getattr(a, name)) != len(self.arms):
                raise ConfigError(
                    f"has {len(getattr(a, name))} entries for {len(self.arms)} arms",
                    table="assignment",
                    key=name,
                )
        if a.control and a.control not in self.arms:
            raise ConfigError(
                f"{a.control!r} is not an arm; arms: {list(self.arms)}", table="assignment", key="control"
            )
        if self.pre_period.source is PreSource.SIMULATE and self.pre_period.days > self.traffic.first_day:
            raise ConfigError(
                f"{self.pre_period.days} simulated days must fit before [traffic] first_day = "
                f"{self.traffic.first_day}",
                table="pre_period",
                key="days",
            )
        if self.pre_period.source is PreSource.LOGS and self.traffic.first_day < 1:
            raise ConfigError(
                'source = "logs" needs [traffic] first_day >= 1 (after the logs)',
                table="pre_period",
                key="source",
            )
        if not self.metrics:
            raise ConfigError("is empty", table="metrics")
        for metric, spec in self.metrics.items():
            for column in (spec,) if isinstance(spec, str) else spec:
                if column not in USER_COLUMNS:
                    raise ConfigError(
                        f"unknown per-user column {column!r}; known: {list(USER_COLUMNS)}",
                        table="metrics",
                        key=metric,
                    )
        missing = [m for m in self.segments.metrics if m not in self.metrics]
        if missing:
            raise ConfigError(
                f"names metric(s) {missing} that [metrics] does not define; defined: {list(self.metrics)}",
                table="segments",
                key="metrics",
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
    def paired(self) -> bool:
        return self.design.kind is DesignKind.PAIRED

    @property
    def split(self) -> bool:
        """Users are split between the arms (the only design with an SRM gate and CUPED)."""
        return self.design.kind is DesignKind.SPLIT

    @property
    def interleave(self) -> bool:
        return self.design.kind is DesignKind.INTERLEAVE

    @property
    def pre_days(self) -> list[int]:
        """Days simulated as the pre-period (source = "simulate", split design), else []."""
        if self.pre_period.source is not PreSource.SIMULATE or not self.split:
            return []
        return list(range(self.traffic.first_day - self.pre_period.days, self.traffic.first_day))

    def metric_specs(self, columns: set[str] | None = None) -> dict[str, Metric]:
        """The metrics as ``abtest.stats`` objects; CUPED covariates pre_<column> are attached
        when ``columns`` (the per-user table's columns) holds all of them (only in a split
        design: there is no CUPED in the others)."""
        if not self.split:
            columns = None
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
        return to_plain(self)

    def to_toml(self) -> str:
        return dumps_toml(self)

    def replace(self, **sections: Any) -> ExperimentConfig:
        """A copy with some tables replaced by dataclasses or by dicts of changed keys, e.g.
        ``config.replace(traffic={"users": 2000}, name="quick")``."""
        changes = {}
        for key, value in sections.items():
            current = getattr(self, key)
            is_table = isinstance(value, Mapping) and dataclasses.is_dataclass(current)
            changes[key] = dataclasses.replace(current, **value) if is_table else value
        return dataclasses.replace(self, **changes)


def parse_config(raw: Mapping[str, Any], source: str | Path | None = None) -> ExperimentConfig:
    """Validate a parsed experiment TOML (a dict); errors name ``source`` and the table."""
    try:
        return from_mapping(ExperimentConfig, raw)
    except ConfigError as err:
        raise (err.in_file(source) if source is not None else err) from None


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """Read and validate an experiment TOML file (relative paths in it are relative to it),
    with ``overrides`` ("table.key" -> value) applied."""
    return load_toml(path, ExperimentConfig, overrides=overrides)
