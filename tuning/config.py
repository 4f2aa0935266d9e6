"""The search config: one TOML file names what is searched, how each trial is trained and
scored, and how the search runs (``configs/tune_default.toml`` documents every key).

Every table maps onto a frozen dataclass below (each field documented where it is declared);
unknown keys, ill-typed values and inconsistent settings raise ``ConfigError`` naming the
table. ``SearchConfig.to_dict`` is the inverse of ``parse_config``: a run folder's
``config.toml`` rebuilds the search, and ``--resume`` refuses a config that differs from it.

The search space (``[space]``) maps training-config settings, named ``"table.field"`` as in a
training config (``model.dim``, ``train.lr``, ``distill.label_smoothing_scale``...), to a
distribution: a list is a choice among its values; ``{uniform = [lo, hi]}``,
``{log_uniform = [lo, hi]}`` and ``{int_range = [lo, hi]}`` (both ends included) are ranges
(``{choice = [...]}`` is the same as the list: the form a run folder's config.toml uses).
``distill.teacher`` takes booleans: true distils from the search's fine ranker. Settings that
must be the same in every trial (the logs, the split, the seed, the epochs, the held-out
lists) cannot be searched. A trial's training config is the base config, then ``[trial]``'s
overrides, then its sampled settings (``trial_raw_config``).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from common.config import (
    ConfigError,
    apply_overrides,
    config,
    from_mapping,
    load_toml,
    setting,
    to_plain,
    unknown_key,
)
from policies.config import DataConfig, DistillConfig, RunConfig, TrainConfig, dwell_buckets, read_raw
from policies.config import parse_config as parse_run_config
from policies.custom import is_custom_spec
from policies.models import CoarseConfig
from simulator.config import load_world_config

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
        "data.split",
        "data.split_seed",
        "train.epochs",
        "train.seed",
        "train.eval_lists",
    }
)
"""Settings every trial shares: the logs and the split (user or day: its evaluation users, on
its evaluation day, score every trial), the initial weights and shuffling (trials differ by
their settings, not by luck), the epochs (``[trial] epochs``) and the held-out lists of the
per-epoch metrics."""

Objective = Literal["uctr", "clicks", "gmv", "expected_clicks", "exact_uctr", "exact_clicks", "exact_gmv"]
OBJECTIVES = typing.get_args(Objective)
"""Online metrics a search can maximise (relative lift vs the control): uCTR (share of users
with a click), clicks per user, GMV per user, and the simulator's expected clicks per user
(the true click probability of every shown item: what clicks estimate, without the coin
flips; no real system has it)."""

EpochMetric = Literal["epoch/gauc", "epoch/auc"]
EPOCH_METRICS = typing.get_args(EpochMetric)
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

    def to_plain(self) -> dict[str, list]:
        """``{distribution = values}``: a table for every kind (a choice too), so that a TOML
        dump keeps the order of the dimensions (tables are written after plain values)."""
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
        if distribution is not None and isinstance(values, list):
            return Dimension(key, distribution, tuple(values))
    raise ConfigError(
        "must be a list of choices or one of {uniform = [lo, hi]}, {log_uniform = [lo, hi]}, "
        f"{{int_range = [lo, hi]}} ({{choice = [...]}} is the list); got {spec!r}",
        table="space",
        key=key,
    )


def _check_ranker(name: str, value: str | dict) -> None:
    if isinstance(value, str) and not value.endswith((".pt", ".toml")):
        raise ConfigError(
            "must be a checkpoint (.pt), a training config (.toml) or an inline training-config table, "
            f"got {value!r}",
            key=name,
        )


@config
class TrialSettings:
    """[trial]: how every trial is trained."""

    base: str | dict = setting("configs/models/coarse_dssm.toml", path=True, table=RunConfig)
    """The coarse training config every trial starts from: a path (.toml) or an inline table."""
    epochs: int = setting(2, ge=1)
    """Epochs of every trial (ASHA's max_t); replaces the base's [train] epochs."""
    data: dict = setting(default_factory=dict, table=DataConfig)
    """Overrides of the base's [data] table, e.g. the shared log folder of the search."""
    train: dict = setting(default_factory=dict)
    """Overrides of the base's [train] table (settings not searched)."""
    cpus: float = setting(1.0, gt=0)
    """CPUs reserved per trial (``tune.with_resources``); torch runs one thread per CPU."""

    def __post_init__(self) -> None:
        _check_ranker("base", self.base)
        for name, cls in (("data", DataConfig), ("train", TrainConfig)):
            known = {f.name for f in dataclasses.fields(cls)}
            for key in getattr(self, name):
                if key not in known:
                    raise unknown_key(key, known).inside(name)
        if "epochs" in self.train:
            raise ConfigError("set [trial] epochs instead", table="train", key="epochs")


@config
class ControlSettings:
    """[control]: the arm every trial is compared with, and the fine stage of both arms."""

    coarse: str = setting("base", path=True, keep=lambda spec: spec == "base" or is_custom_spec(spec))
    """The control's coarse ranker: "base" (the base config with [trial]'s overrides and
    epochs, trained once before the search), a checkpoint (.pt), a training config (.toml,
    trained first if its checkpoint is missing) or "module:attribute" (a scorer or factory of
    your own, ``policies.custom``)."""
    fine: str | dict = setting("configs/models/fine.toml", path=True, table=RunConfig)
    """The fine ranker of both arms, also the teacher of distilling trials: a checkpoint, a
    training config (trained first if missing) or an inline fine training-config table."""
    coarse_size: int = setting(600, ge=1)
    """Candidates the coarse stage passes to the fine stage, in both arms and in the offline
    hitrates (the page size is the world's)."""

    def __post_init__(self) -> None:
        if self.coarse != "base" and not is_custom_spec(self.coarse):
            _check_ranker("coarse", self.coarse)
        _check_ranker("fine", self.fine)


@config
class SearchSettings:
    """[search]: the Ray Tune run."""

    searcher: Searcher = Searcher.OPTUNA
    """"optuna" (TPE) or "random"; both seeded by ``seed``."""
    num_samples: int = setting(16, ge=1)
    """Trials to run."""
    max_concurrent: int = setting(2, ge=1)
    """Trials running at once (each holds [trial] cpus)."""
    seed: int = setting(0, ge=0)
    """Seeds the searcher and the bootstrap of the agreement study. Every trial is seeded by
    the base config's [train] seed, so equal settings give equal results."""
    time_budget_s: float = setting(0.0, ge=0)
    """Stop the whole search after this many seconds (0 = no limit); trials still running
    then end without an online score."""
    max_failures: int = setting(1, ge=0)
    """Times a failed trial is retried (from scratch) before it is reported as failed."""


@config
class SchedulerSettings:
    """[scheduler]: early stopping on epochs."""

    kind: Scheduler = Scheduler.ASHA
    """"asha" or "fifo" (no early stopping)."""
    metric: EpochMetric = "epoch/gauc"
    """Per-epoch held-out metric ASHA compares trials on (higher is better): "epoch/gauc" or
    "epoch/auc". (The online objective exists only once a trial ends.)"""
    grace_period: int = setting(1, ge=1)
    """Epochs every trial runs before ASHA may stop it."""
    reduction_factor: int = setting(2, ge=2)
    """At each rung ASHA keeps the best 1/reduction_factor of the trials."""


@config
class ObjectiveSettings:
    """[objective]: the short online A/B that scores each trial."""

    metric: Objective = "exact_clicks"
    """Maximised: the relative lift over the control of "uctr", "clicks", "gmv",
    "expected_clicks" or the exact expectations "exact_uctr", "exact_clicks", "exact_gmv" (per
    user; the exact ones measure the same effects with far less variance)."""
    users: int = setting(600, ge=2)
    """Held-out users in the A/B; each runs one session on a fresh day through both arms."""
    alpha: float = setting(0.05, gt=0, lt=1)
    """Level of the lift's confidence interval (and of the agreement study's intervals)."""


@config
class OfflineSettings:
    """[offline]: the held-out evaluation every trial gets at its end
    (``policies.evaluate``)."""

    sessions: int = setting(200, ge=1)
    """Held-out users' first logged sessions for recall@10@C, hitrates and the funnel."""
    lists: int = setting(20_000, ge=1)
    """Held-out logged lists for AUC, GAUC, NDCG@10 and Kendall tau vs the fine ranker."""


@config
class AgreementSettings:
    """[agreement]: offline-online rank correlation across trials."""

    bootstrap: int = setting(2000, ge=10)
    """Bootstrap resamples of the trials for each Kendall tau's interval."""


@config
class SearchConfig:
    """A whole search config file."""

    name: str
    """Run folder name: runs/tune/<name>."""
    space: tuple[Dimension, ...]
    """The searched settings ([space]: "table.field" = distribution)."""
    description: str = ""
    trial: TrialSettings = TrialSettings()
    control: ControlSettings = ControlSettings()
    search: SearchSettings = SearchSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    objective: ObjectiveSettings = ObjectiveSettings()
    offline: OfflineSettings = OfflineSettings()
    agreement: AgreementSettings = AgreementSettings()

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"must be letters, digits, '_', '-' or '.', got {self.name!r}", key="name")
        if not self.space:
            raise ConfigError("is empty: nothing to search", table="space")
        if self.scheduler.kind is Scheduler.ASHA and self.scheduler.grace_period > self.trial.epochs:
            raise ConfigError("cannot exceed [trial] epochs", table="scheduler", key="grace_period")

    def to_dict(self) -> dict[str, Any]:
        out = to_plain(self)
        out["space"] = {d.key: d.to_plain() for d in self.space}
        return out

    @property
    def param_space(self) -> dict[str, Any]:
        """The Ray Tune search space: one flat key per searched setting."""
        return {d.key: d.domain() for d in self.space}

    def base_raw(self) -> dict[str, Any]:
        """The base training config as a plain dict (read from its file if it is a path; its
        relative paths resolved against that file)."""
        base = self.trial.base
        if isinstance(base, Mapping):
            return apply_overrides(base, {})
        try:
            return read_raw(base)
        except ConfigError as err:
            raise ConfigError(str(err), table="trial", key="base") from None


def build_search(cls: type[SearchConfig], raw: Mapping[str, Any]) -> SearchConfig:
    """A SearchConfig from its mapping; [space] maps "table.field" to a distribution."""
    space = raw.get("space", {})
    if not isinstance(space, Mapping):
        raise ConfigError("must be a table of setting = distribution", key="space")
    return from_mapping(cls, {**raw, "space": tuple(parse_dimension(k, v) for k, v in space.items())})


def parse_config(raw: Mapping[str, Any], source: str | Path | None = None) -> SearchConfig:
    """Validate a parsed search TOML (a dict); errors name ``source`` and the table."""
    try:
        return build_search(SearchConfig, raw)
    except ConfigError as err:
        raise (err.in_file(source) if source is not None else err) from None


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> SearchConfig:
    """Read and validate a search TOML file, with ``overrides`` ("table.key" -> value)."""
    return load_toml(path, SearchConfig, overrides=overrides, build=build_search)


def native(value: Any) -> Any:
    """A sampled value as a plain Python scalar (Tune may hand out numpy scalars)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, str) else value


def trial_raw_config(
    template: Mapping[str, Any], params: Mapping[str, Any], out: str, teacher: str
) -> dict[str, Any]:
    """A trial's training config in its plain form (``to_plain`` of the validated config):
    ``template`` (see ``template_raw_config``) with the sampled ``params`` ("table.field" ->
    value) applied, its checkpoint at ``out``; ``distill.teacher = true`` means ``teacher``.
    A trial with NOVA reads the logged dwell where its world logs it (as the ladder's rungs)."""
    changes = {"out": out}
    for key, sampled in params.items():
        value = native(sampled)
        changes[key] = (teacher if value else "") if key == "distill.teacher" else value
    run = parse_run_config(apply_overrides(template, changes))
    if run.model.nova and run.model.dwell_buckets is None and "model.dwell_buckets" not in params:
        buckets = dwell_buckets(load_world_config(run.data.world))
        if buckets is not None:
            run = parse_run_config(apply_overrides(template, changes | {"model.dwell_buckets": buckets}))
    return to_plain(run)


def template_raw_config(config: SearchConfig, teacher: str, logs: str | None = None) -> dict[str, Any]:
    """The base training config with [trial]'s overrides and epochs, in its plain form: what
    every trial (and a "base" control) starts from. A base that distils uses the search's fine
    ranker (``teacher``); ``logs`` (an absolute path) replaces the log folder."""
    raw = config.base_raw()
    kind = raw.setdefault("kind", "coarse")
    if kind != "coarse":
        raise ConfigError(f"must be a coarse training config, got kind = {kind!r}", table="trial", key="base")
    raw.setdefault("out", "unused.pt")
    changes = {f"data.{k}": v for k, v in config.trial.data.items()}
    changes |= {f"train.{k}": v for k, v in config.trial.train.items()}
    changes["train.epochs"] = config.trial.epochs
    if logs is not None:
        changes["data.logs"] = logs
    if raw.get("distill", {}).get("teacher"):
        changes["distill.teacher"] = teacher
    try:
        return to_plain(parse_run_config(apply_overrides(raw, changes)))
    except ConfigError as err:
        base = config.trial.base
        if err.file is None:  # name the base's file, or its table in the search config
            err = err.in_file(base) if isinstance(base, str) else err.inside("trial.base")
        raise err from None
