"""The training config: one TOML file names the logs, the model, the optimisation and, for a
coarse model, the distillation (``configs/models/*.toml``).

A training config has a top-level ``kind = "fine" | "coarse"`` and ``out`` (the checkpoint
path) and the tables ``[data]`` (``DataConfig``), ``[model]`` (``FineConfig`` or
``CoarseConfig``), ``[train]`` (``TrainConfig``) and, for coarse models, ``[distill]``
(``DistillConfig``). Every field is documented where it is declared; unknown keys are errors;
relative paths in a file are relative to that file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from common.config import (
    ConfigError,
    config,
    from_mapping,
    load_toml,
    read_toml,
    relative_paths,
    resolve_paths,
    setting,
    to_plain,
)
from policies.data import SampleSpace, Split
from policies.losses import DistillLoss, ListLoss, TaskWeights
from policies.models import CoarseConfig, FineConfig
from policies.tasks import HEADS, Task
from simulator.config import WORLD_NAMES, WorldConfig


@config
class DataConfig:
    logs: str = setting("data/logs/default", path=True)
    """Log folder written by ``python -m simulator logs``; created if missing (see below)."""
    world: str = setting("default", path=True, keep=WORLD_NAMES)
    """World of the logs: "default", "small" or a TOML file with a [world] table."""
    users: int = setting(20_000, ge=1)
    """Users (ids 0..users-1) logged when the folder has to be created."""
    days: int = setting(1, ge=1)
    """Days logged when the folder has to be created."""
    split: Split = setting(Split.USER, omitted_at_default=True)
    """Offline protocol: "user" holds users out of training; "day" trains on every logged
    user's days before the last logged day and evaluates on the last one (needs ``days`` >= 2
    of logs; what production teams do)."""
    held_out_share: float = setting(0.2, ge=0, lt=1)
    """Split "user": share of users held out of training for offline evaluation."""
    split_seed: int = 0
    """Split "user": seed of the user split (a hash of (seed, user id))."""
    validation_share: float = setting(0.0, ge=0, lt=1, omitted_at_default=True)
    """Share of the training users kept out of training to choose the epoch (a hash of
    (split_seed, user id) on a stream of its own): the checkpoint holds the weights of the
    epoch of the lowest loss on their lists (the last epoch's objective), as early stopping
    would. 0: every training user trains and the last epoch is kept."""
    unexposed: bool = True
    """Coarse ranker lists include the M unexposed coarse survivors per request."""
    dropped: bool = True
    """... the L recall items the coarse stage dropped."""
    random: bool = True
    """... random negatives from the pool (if the logs have any)."""
    out_of_scene: bool = True
    """... out-of-scene purchases as extra positives (seed 002)."""

    @property
    def space(self) -> SampleSpace:
        return SampleSpace(self.unexposed, self.dropped, self.random, self.out_of_scene)


@config
class TrainConfig:
    epochs: int = setting(2, ge=1)
    """Passes over the training lists."""
    batch_size: int = setting(256, ge=1)
    """Request lists per step."""
    lr: float = setting(3e-3, gt=0)
    """Adam learning rate."""
    weight_decay: float = setting(0.0, ge=0)
    """Adam weight decay."""
    seed: int = 0
    """Seeds the model's initial weights and the shuffling."""
    loss: ListLoss = ListLoss.MULTI_POSITIVE_SOFTMAX
    """Coarse ranker: the per-task list loss (bce, softmax, multi_positive_softmax)."""
    task_weights: TaskWeights = setting(default_factory=TaskWeights)
    """Coarse ranker: weights of the exposure, click and purchase tasks."""
    score_task: Task = Task.CLICK
    """Coarse ranker: the task whose logit ranks candidates when serving (exposure, click,
    purchase; gmv is a ranker setting, an arm's ``coarse_score``, not a training one)."""
    eval_lists: int = setting(20_000, ge=0)
    """Held-out request lists scored after every epoch (0 = skip)."""

    def __post_init__(self) -> None:
        if self.lr == float("inf"):
            raise ConfigError("must be finite", key="lr")
        if self.score_task not in HEADS:
            raise ConfigError(
                f"must be one of {[str(t) for t in HEADS]} (a task with a logit of its own; "
                f"{str(self.score_task)!r} is a ranker setting: an arm's coarse_score)",
                key="score_task",
            )


@config
class DistillConfig:
    teacher: str = setting("", path=True)
    """Fine ranker to distil from: a checkpoint, or its training config (.toml, trained if
    needed); empty = no distillation."""
    soft_only_epochs: int = setting(1, ge=0)
    """Stage 1: epochs trained on soft labels only; later epochs add the hard labels."""
    soft_weight: float = setting(1.0, ge=0)
    """Weight of the soft-label loss in stage 2."""
    label_smoothing_scale: float = setting(0.1, ge=0, le=1)
    """Soft label of a non-exposed sample = teacher pCTR x this (seed 002; << 1)."""
    loss: DistillLoss = DistillLoss.LISTWISE
    """"listwise": the student's softmax over each list against the soft labels' distribution
    over it (the teacher's order alone, like the listwise hard losses); "bce": each soft label's
    probability, pointwise (its level too). On feed world revision 6 listwise distillation
    gains held-out GAUC where BCE loses it (docs/ladder.md)."""

    @property
    def enabled(self) -> bool:
        return bool(self.teacher)


MODELS: dict[str, type] = {"fine": FineConfig, "coarse": CoarseConfig}
"""The [model] table of each kind."""


@config
class RunConfig:
    """A whole training config file."""

    kind: Literal["fine", "coarse"]
    """"fine" (the teacher and fine ranker) or "coarse"."""
    out: str = setting(path=True)
    """The checkpoint path (a checkpoint of exactly this config there is reused)."""
    data: DataConfig
    model: FineConfig | CoarseConfig
    """The model's architecture (``FineConfig`` or ``CoarseConfig`` by ``kind``)."""
    train: TrainConfig
    distill: DistillConfig

    def __post_init__(self) -> None:
        if not self.out:
            raise ConfigError("(the checkpoint path) must be a non-empty string", key="out")
        if not isinstance(self.model, MODELS[self.kind]):
            raise ConfigError(f"is not a {self.kind} model config", table="model")
        if self.kind == "fine" and self.distill != DistillConfig():
            raise ConfigError("applies to coarse models only", table="distill")

    def to_dict(self) -> dict[str, Any]:
        """The plain config (``to_plain``; settings added later, e.g. ``[data] split``, are left
        out at their defaults, so configs and checkpoints from before them stay equal to it)."""
        return to_plain(self)

    def portable(self) -> dict[str, Any]:
        """``to_dict`` with paths relative to the checkpoint's folder: what a checkpoint stores
        and is reused by, so a checkout that moves as a whole keeps its checkpoints."""
        return relative_paths(RunConfig, self.to_dict(), Path(self.out).parent)


def build_run(cls: type[RunConfig], raw: Mapping[str, Any]) -> RunConfig:
    """A RunConfig from its mapping; the [model] table is read as the model of ``kind``, absent
    tables take their defaults."""
    kind = raw.get("kind")
    if kind not in MODELS:
        raise ConfigError(f'must be "fine" or "coarse", got {kind!r}', key="kind")
    model = raw.get("model", {})
    if isinstance(model, Mapping):
        try:
            model = from_mapping(MODELS[kind], model)
        except ConfigError as err:
            raise err.inside("model") from None
    tables = {"data": {}, "train": {}, "distill": {}}  # absent tables take their defaults
    return from_mapping(cls, {**tables, **raw, "model": model})


DWELL_BUCKETS = 8
"""NOVA's dwell buckets (log2 seconds) on worlds that log dwell."""


def dwell_buckets(world: WorldConfig) -> int | None:
    """What NOVA's ``[model] dwell_buckets`` is on ``world``: the logged dwell is side
    information where the world logs it (``history_dwell_separation`` > 0), else none."""
    return DWELL_BUCKETS if world.history_dwell_separation > 0 else None


def parse_config(raw: Mapping[str, Any], source: str | Path | None = None) -> RunConfig:
    """Validate a parsed training config (a dict); errors name ``source``."""
    try:
        return build_run(RunConfig, raw)
    except ConfigError as err:
        raise (err.in_file(source) if source is not None else err) from None


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Read and validate a training config file, with ``overrides`` ("table.key" -> value)."""
    return load_toml(path, RunConfig, overrides=overrides, build=build_run)


def check_model_spec(spec: str | Mapping[str, Any], kind: str) -> None:
    """Validate the training configs a model spec names (a .toml file, or an inline table of
    ``kind``), and the teacher's they name in turn, without training anything: a bad config
    then fails before a run writes any file."""
    if isinstance(spec, Mapping):
        run = parse_config({"kind": kind, **spec})
    elif spec.endswith(".toml"):
        run = load_config(spec)
    else:
        return
    if run.distill.enabled:
        check_model_spec(run.distill.teacher, "fine")


def read_raw(path: str | Path) -> dict[str, Any]:
    """A training config file as a plain dict, its relative paths resolved against the file
    (for callers that change it before parsing, e.g. the ladder's rungs)."""
    return resolve_paths(RunConfig, read_toml(path), Path(path).parent)
