"""The search config: one TOML file names what is searched, how each trial is trained and
scored, and how the search runs (``configs/tune_default.toml`` documents every key).

Every table maps onto a frozen dataclass below (each field documented where it is declared);
unknown keys, ill-typed values and inconsistent settings raise ``ConfigError`` naming the
table. ``SearchConfig.to_dict`` is the inverse of ``parse_config``: a run folder's
``config.toml`` rebuilds the search, and ``--resume`` refuses a config that differs from it.

The search space (``[space]``) maps training-config settings, named ``"table.field"`` as in a
training config (``model.dim``, ``train.lr``, ``distill.label_smoothing_scale``...), to a
distribution: a list is a choice among its values; ``{uniform = [lo, hi]}``,
``{log_uniform = [lo, hi]}`` and ``{int_range = [lo, hi]}`` (both ends included) are ranges.
``distill.teacher`` takes booleans: true distils from the search's fine ranker. Settings that
must be the same in every trial (the logs, the user split, the seed, the epochs, the held-out
lists) cannot be searched. A trial's training config is the base config, then ``[trial]``'s
overrides, then its sampled settings (``trial_raw_config``).
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from policies.models import CoarseConfig
from policies.train import DataConfig, DistillConfig, TrainConfig
from simulator.config import ConfigError, from_mapping, to_plain

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

SPACE_TABLES: dict[str, type] = {
    "data": DataConfig,
    "model": CoarseConfig,
    "train": TrainConfig,
    "distill": DistillConfig,
}
"""Training-config tables whose fields a search may set."""

FIXED_SETTINGS = frozenset(
    {
        "data.logs",
        "data.world",
        "data.users",
        "data.days",
        "data.held_out_share",
        "data.split_seed",
        "train.epochs",
        "train.seed",
        "train.eval_lists",
    }
)
"""Settings every trial shares: the logs and the user split (the held-out users score every
trial), the initial weights and shuffling (trials differ by their settings, not by luck), the
epochs (``[trial] epochs``) and the held-out lists of the per-epoch metrics."""

OBJECTIVES = ("uctr", "clicks", "gmv", "expected_clicks")
"""Online metrics a search can maximise (relative lift vs the control): uCTR (share of users
with a click), clicks per user, GMV per user, and the simulator's expected clicks per user
(the true click probability of every shown item: what clicks estimate, without the coin
flips; no real system has it)."""

EPOCH_METRICS = ("epoch/gauc", "epoch/auc")
"""Per-epoch held-out metrics every trial reports (``policies.train`` evaluates each epoch);
ASHA compares trials on one of them."""


class Searcher(enum.StrEnum):
    OPTUNA = "optuna"
    """Optuna's TPE sampler (seeded): random for its first 10 trials, then model-based."""
    RANDOM = "random"
    """Tune's random search (seeded): the trial configs depend on the seed only."""


class Scheduler(enum.StrEnum):
    ASHA = "asha"
    """Asynchronous successive halving on epochs: weak trials stop at the rungs."""
    FIFO = "fifo"
    """Every trial runs all its epochs."""


class Distribution(enum.StrEnum):
    CHOICE = "choice"
    UNIFORM = "uniform"
    LOG_UNIFORM = "log_uniform"
    INT_RANGE = "int_range"


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One searched setting: ``key`` ("table.field"), a distribution and its values (the
    choices, or the range's (low, high), both included)."""

    key: str
    distribution: Distribution
    values: tuple

    def __post_init__(self) -> None:
        table, _, field = self.key.partition(".")
        if table not in SPACE_TABLES or field not in {
            f.name for f in dataclasses.fields(SPACE_TABLES[table])
        }:
            known = sorted(
                f"{t}.{f.name}" for t, cls in SPACE_TABLES.items() for f in dataclasses.fields(cls)
            )
            raise ConfigError(f"[space] {self.key!r} is not a training-config setting; known: {known}")
        if self.key in FIXED_SETTINGS:
            raise ConfigError(f"[space] {self.key} is shared by every trial and cannot be searched")
        if self.distribution is Distribution.CHOICE:
            if not self.values:
                raise ConfigError(f"[space] {self.key}: a choice needs at least one value")
            for value in self.values:
                if not isinstance(value, bool | int | float | str):
                    raise ConfigError(f"[space] {self.key}: choices must be scalars, got {value!r}")
            if self.key == "distill.teacher" and not all(isinstance(v, bool) for v in self.values):
                raise ConfigError(
                    "[space] distill.teacher takes booleans (true = distil from the fine ranker)"
                )
            return
        if len(self.values) != 2 or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in self.values
        ):
            raise ConfigError(
                f"[space] {self.key}: {self.distribution} needs [low, high], got {list(self.values)}"
            )
        low, high = self.values
        if not low < high:
            raise ConfigError(
                f"[space] {self.key}: {self.distribution} needs low < high, got {list(self.values)}"
            )
        if self.distribution is Distribution.LOG_UNIFORM and low <= 0:
            raise ConfigError(f"[space] {self.key}: log_uniform needs low > 0, got {low}")
        if self.distribution is Distribution.INT_RANGE and not all(isinstance(v, int) for v in self.values):
            raise ConfigError(f"[space] {self.key}: int_range needs integers, got {list(self.values)}")

    def domain(self) -> Any:
        """The Ray Tune search domain (imported here: parsing a config needs no Ray)."""
        from ray import tune  # noqa: PLC0415

        if self.distribution is Distribution.CHOICE:
            return tune.choice(list(self.values))
        low, high = self.values
        if self.distribution is Distribution.UNIFORM:
            return tune.uniform(low, high)
        if self.distribution is Distribution.LOG_UNIFORM:
            return tune.loguniform(low, high)
        return tune.randint(low, high + 1)  # Tune's upper bound is exclusive

    def to_plain(self) -> Any:
        if self.distribution is Distribution.CHOICE:
            return list(self.values)
        return {str(self.distribution): list(self.values)}


def parse_dimension(key: str, spec: Any) -> Dimension:
    if isinstance(spec, list):
        return Dimension(key, Distribution.CHOICE, tuple(spec))
    if isinstance(spec, Mapping) and len(spec) == 1:
        (kind, values), *_ = spec.items()
        try:
            distribution = Distribution(kind)
        except ValueError:
            distribution = None
        if distribution is not None and distribution is not Distribution.CHOICE and isinstance(values, list):
            return Dimension(key, distribution, tuple(values))
    raise ConfigError(
        f"[space] {key} must be a list of choices or one of {{uniform = [lo, hi]}}, "
        f"{{log_uniform = [lo, hi]}}, {{int_range = [lo, hi]}}; got {spec!r}"
    )


def _check_int(section: str, name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{section} {name} must be an integer >= {low}, got {value!r}")


def _check_ranker(section: str, name: str, value: Any) -> None:
    if isinstance(value, Mapping):
        return
    if not isinstance(value, str) or not value.endswith((".pt", ".toml")):
        raise ConfigError(
            f"{section} {name} must be a checkpoint (.pt), a training config (.toml) or an inline "
            f"training-config table, got {value!r}"
        )


@dataclasses.dataclass(frozen=True)
class TrialSettings:
    """[trial]: how every trial is trained."""

    base: Any = "configs/models/coarse_dssm.toml"
    """The coarse training config every trial starts from: a path (.toml) or an inline table."""
    epochs: int = 2
    """Epochs of every trial (ASHA's max_t); replaces the base's [train] epochs."""
    data: dict = dataclasses.field(default_factory=dict)
    """Overrides of the base's [data] table, e.g. the shared log folder of the search."""
    train: dict = dataclasses.field(default_factory=dict)
    """Overrides of the base's [train] table (settings not searched)."""
    cpus: float = 1.0
    """CPUs reserved per trial (``tune.with_resources``); torch runs one thread per CPU."""

    def __post_init__(self) -> None:
        _check_ranker("[trial]", "base", self.base)
        _check_int("[trial]", "epochs", self.epochs, 1)
        for name in ("data", "train"):
            if not isinstance(getattr(self, name), Mapping):
                raise ConfigError(f"[trial] {name} must be a table of overrides")
        if "epochs" in self.train:
            raise ConfigError("[trial] train.epochs: set [trial] epochs instead")
        if not (isinstance(self.cpus, int | float) and not isinstance(self.cpus, bool) and self.cpus > 0):
            raise ConfigError(f"[trial] cpus must be > 0, got {self.cpus!r}")


@dataclasses.dataclass(frozen=True)
class ControlSettings:
    """[control]: the arm every trial is compared with, and the fine stage of both arms."""

    coarse: Any = "base"
    """The control's coarse ranker: "base" (the base config with [trial]'s overrides and
    epochs, trained once before the search), a checkpoint (.pt) or a training config (.toml,
    trained first if its checkpoint is missing)."""
    fine: Any = "configs/models/fine.toml"
    """The fine ranker of both arms, also the teacher of distilling trials: a checkpoint, a
    training config (trained first if missing) or an inline fine training-config table."""
    coarse_size: int = 600
    """Candidates the coarse stage passes to the fine stage, in both arms and in the offline
    hitrates (the page size is the world's)."""

    def __post_init__(self) -> None:
        if self.coarse != "base":
            _check_ranker("[control]", "coarse", self.coarse)
        _check_ranker("[control]", "fine", self.fine)
        _check_int("[control]", "coarse_size", self.coarse_size, 1)


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """[search]: the Ray Tune run."""

    searcher: Searcher = Searcher.OPTUNA
    """"optuna" (TPE) or "random"; both seeded by ``seed``."""
    num_samples: int = 16
    """Trials to run."""
    max_concurrent: int = 2
    """Trials running at once (each holds [trial] cpus)."""
    seed: int = 0
    """Seeds the searcher and the bootstrap of the agreement study. Every trial is seeded by
    the base config's [train] seed, so equal settings give equal results."""
    time_budget_s: float = 0.0
    """Stop the whole search after this many seconds (0 = no limit); trials still running
    then end without an online score."""
    max_failures: int = 1
    """Times a failed trial is retried (from scratch) before it is reported as failed."""

    def __post_init__(self) -> None:
        _check_int("[search]", "num_samples", self.num_samples, 1)
        _check_int("[search]", "max_concurrent", self.max_concurrent, 1)
        _check_int("[search]", "seed", self.seed, 0)
        _check_int("[search]", "max_failures", self.max_failures, 0)
        if not (isinstance(self.time_budget_s, int | float) and self.time_budget_s >= 0):
            raise ConfigError(f"[search] time_budget_s must be >= 0, got {self.time_budget_s!r}")


@dataclasses.dataclass(frozen=True)
class SchedulerSettings:
    """[scheduler]: early stopping on epochs."""

    kind: Scheduler = Scheduler.ASHA
    """"asha" or "fifo" (no early stopping)."""
    metric: str = "epoch/gauc"
    """Per-epoch held-out metric ASHA compares trials on (higher is better): "epoch/gauc" or
    "epoch/auc". (The online objective exists only once a trial ends.)"""
    grace_period: int = 1
    """Epochs every trial runs before ASHA may stop it."""
    reduction_factor: int = 2
    """At each rung ASHA keeps the best 1/reduction_factor of the trials."""

    def __post_init__(self) -> None:
        if self.metric not in EPOCH_METRICS:
            raise ConfigError(f"[scheduler] metric must be one of {list(EPOCH_METRICS)}, got {self.metric!r}")
        _check_int("[scheduler]", "grace_period", self.grace_period, 1)
        _check_int("[scheduler]", "reduction_factor", self.reduction_factor, 2)


@dataclasses.dataclass(frozen=True)
class ObjectiveSettings:
    """[objective]: the short online A/B that scores each trial."""

    metric: str = "clicks"
    """Maximised: the relative lift over the control of "uctr", "clicks", "gmv" or
    "expected_clicks" (per user)."""
    users: int = 600
    """Held-out users in the A/B; each runs one session on a fresh day through both arms."""
    alpha: float = 0.05
    """Level of the lift's confidence interval (and of the agreement study's intervals)."""

    def __post_init__(self) -> None:
        if self.metric not in OBJECTIVES:
            raise ConfigError(f"[objective] metric must be one of {list(OBJECTIVES)}, got {self.metric!r}")
        _check_int("[objective]", "users", self.users, 2)
        if not (isinstance(self.alpha, float) and 0 < self.alpha < 1):
            raise ConfigError(f"[objective] alpha must be in (0, 1), got {self.alpha!r}")


@dataclasses.dataclass(frozen=True)
class OfflineSettings:
    """[offline]: the held-out evaluation every trial gets at its end
    (``policies.evaluate``)."""

    sessions: int = 200
    """Held-out users' first logged sessions for recall@10@C, hitrates and the funnel."""
    lists: int = 20_000
    """Held-out logged lists for AUC, GAUC, NDCG@10 and Kendall tau vs the fine ranker."""

    def __post_init__(self) -> None:
        _check_int("[offline]", "sessions", self.sessions, 1)
        _check_int("[offline]", "lists", self.lists, 1)


@dataclasses.dataclass(frozen=True)
class AgreementSettings:
    """[agreement]: offline-online rank correlation across trials."""

    bootstrap: int = 2000
    """Bootstrap resamples of the trials for each Kendall tau's interval."""

    def __post_init__(self) -> None:
        _check_int("[agreement]", "bootstrap", self.bootstrap, 10)


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """A whole search config file."""

    name: str
    description: str
    trial: TrialSettings
    control: ControlSettings
    search: SearchSettings
    scheduler: SchedulerSettings
    objective: ObjectiveSettings
    offline: OfflineSettings
    agreement: AgreementSettings
    space: tuple[Dimension, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(f"name must be letters, digits, '_', '-' or '.', got {self.name!r}")
        if not self.space:
            raise ConfigError("[space] is empty: nothing to search")
        if self.scheduler.kind is Scheduler.ASHA and self.scheduler.grace_period > self.trial.epochs:
            raise ConfigError("[scheduler] grace_period cannot exceed [trial] epochs")

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: to_plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "space"}
        out["space"] = {d.key: d.to_plain() for d in self.space}
        return out

    @property
    def param_space(self) -> dict[str, Any]:
        """The Ray Tune search space: one flat key per searched setting."""
        return {d.key: d.domain() for d in self.space}

    def base_raw(self) -> dict[str, Any]:
        """The base training config as a raw dict (read from its file if it is a path)."""
        base = self.trial.base
        if isinstance(base, Mapping):
            return copy.deepcopy(dict(base))
        path = Path(base)
        if not path.is_file():
            raise ConfigError(f"[trial] base: training config {path} does not exist")
        try:
            return tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"[trial] base: {path} is not valid TOML: {err}") from None


_TOP = {
    "name",
    "description",
    "trial",
    "control",
    "search",
    "scheduler",
    "objective",
    "offline",
    "agreement",
    "space",
}


def parse_config(raw: Mapping[str, Any], source: str = "config") -> SearchConfig:
    """Validate a parsed search TOML (a dict); errors name ``source`` and the table."""
    unknown = sorted(set(raw) - _TOP)
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {unknown}; known: {sorted(_TOP)}")
    if "name" not in raw:
        raise ConfigError(f"{source}: missing top-level key name (the run folder runs/tune/<name>)")
    space = raw.get("space", {})
    if not isinstance(space, Mapping):
        raise ConfigError(f"{source}: [space] must be a table of setting = distribution")
    try:
        return SearchConfig(
            name=raw["name"],
            description=str(raw.get("description", "")),
            trial=from_mapping(TrialSettings, dict(raw.get("trial", {})), "[trial]"),
            control=from_mapping(ControlSettings, dict(raw.get("control", {})), "[control]"),
            search=from_mapping(SearchSettings, dict(raw.get("search", {})), "[search]"),
            scheduler=from_mapping(SchedulerSettings, dict(raw.get("scheduler", {})), "[scheduler]"),
            objective=from_mapping(ObjectiveSettings, dict(raw.get("objective", {})), "[objective]"),
            offline=from_mapping(OfflineSettings, dict(raw.get("offline", {})), "[offline]"),
            agreement=from_mapping(AgreementSettings, dict(raw.get("agreement", {})), "[agreement]"),
            space=tuple(parse_dimension(key, spec) for key, spec in space.items()),
        )
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def load_config(path: str | Path) -> SearchConfig:
    """Read and validate a search TOML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search config {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None
    return parse_config(raw, str(path))


def native(value: Any) -> Any:
    """A sampled value as a plain Python scalar (Tune may hand out numpy scalars)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, str) else value


def trial_raw_config(
    template: Mapping[str, Any], params: Mapping[str, Any], out: str, teacher: str
) -> dict[str, Any]:
    """A trial's raw training config: ``template`` (the base with [trial]'s overrides, see
    ``template_raw_config``) with the sampled ``params`` ("table.field" -> value) applied, its
    checkpoint at ``out``; ``distill.teacher = true`` means ``teacher``."""
    raw = copy.deepcopy(dict(template))
    raw["out"] = out
    for key, sampled in params.items():
        table, _, field = key.partition(".")
        value = native(sampled)
        if key == "distill.teacher":
            value = teacher if value else ""
        raw.setdefault(table, {})[field] = value
    return raw


def template_raw_config(config: SearchConfig, teacher: str, logs: str | None = None) -> dict[str, Any]:
    """The base training config with [trial]'s overrides and epochs: what every trial (and a
    "base" control) starts from. A base that distils uses the search's fine ranker
    (``teacher``); ``logs`` (an absolute path) replaces the log folder."""
    raw = config.base_raw()
    kind = raw.setdefault("kind", "coarse")
    if kind != "coarse":
        raise ConfigError(f"[trial] base must be a coarse training config, got kind = {kind!r}")
    raw.setdefault("out", "unused.pt")
    for table in ("data", "train"):
        raw[table] = {**raw.get(table, {}), **getattr(config.trial, table)}
    raw["train"]["epochs"] = config.trial.epochs
    if logs is not None:
        raw["data"]["logs"] = logs
    if raw.get("distill", {}).get("teacher"):
        raw["distill"]["teacher"] = teacher
    return raw
