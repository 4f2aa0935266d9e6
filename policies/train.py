"""Training of the fine ranker (teacher) and the coarse rankers, from simulator logs.

    python -m policies.train --config configs/coarse_full.toml

A training config (TOML) has a top-level ``kind = "fine" | "coarse"`` and ``out`` (the
checkpoint path) and the tables ``[data]`` (``DataConfig``), ``[model]`` (``FineConfig`` or
``CoarseConfig``), ``[train]`` (``TrainConfig``) and, for coarse models, ``[distill]``
(``DistillConfig``). Every field is documented where it is declared; unknown keys are errors.

Both kinds share one loop (``train``: epochs, batches, Adam, held-out metrics per epoch, the
``on_epoch`` callback, the checkpoint). What differs (the model, the sample space, the loss of a
batch, the score evaluated) is a task object, ``FineTask`` or ``CoarseTask``, chosen once from
``kind`` (``TASKS``). The initial weights come from the model's ``seed`` argument and the
shuffling from a generator of the same seed ``[train] seed``; torch's global generator is
neither read nor changed.

Fine ranker: BCE on exposed samples for clicks, and for purchases given a click; it serves
pCTR (``score_task = "click"``) or pCTCVR (``"purchase"``).

Coarse ranker: the multi-task (exposure, click, purchase) list loss over the sample space of
``[data]``; with a teacher, distillation from the fine ranker in two stages (seed 002):
stage 1 (the first ``soft_only_epochs`` epochs) fits soft labels only, stage 2 fits hard
labels + ``soft_weight`` x soft labels. The soft click label is the teacher's pCTR for
exposed samples and pCTR x ``label_smoothing_scale`` otherwise; the soft purchase label is
pCTCVR treated the same way. Teacher outputs are computed once per list entry and cached.

Held-out users (``split_by_user``) never enter training; offline metrics on them are printed
after every epoch and stored in the checkpoint's metadata.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm import tqdm

from policies.batch import ListBatch
from policies.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from policies.data import (
    EXPOSED,
    Lists,
    LogData,
    SampleSpace,
    iterate_list_ids,
    load_logs,
    make_batch,
    split_by_user,
)
from policies.evaluate import held_out_list_ids, list_metrics, teacher_outputs
from policies.features import vocab_of
from policies.losses import (
    ListLoss,
    TaskLogits,
    TaskWeights,
    bce_loss,
    distillation_loss,
    label_smoothed_soft_labels,
    multi_task_loss,
)
from policies.models import CoarseConfig, CoarseRanker, FineConfig, FineRanker, Vocab
from policies.rankers import FINE_TASKS, Task
from simulator.config import ConfigError, WorldConfig, from_mapping, load_world_config, to_plain
from simulator.logs import write_logs
from simulator.world import World


@dataclasses.dataclass(frozen=True)
class DataConfig:
    logs: str = "data/logs/default"
    """Log folder written by ``python -m simulator logs``; created if missing (see below)."""
    world: str = "default"
    """World of the logs: "default", "small" or a TOML file with a [world] table."""
    users: int = 20_000
    """Users (ids 0..users-1) logged when the folder has to be created."""
    days: int = 1
    """Days logged when the folder has to be created."""
    held_out_share: float = 0.2
    """Share of users held out of training for offline evaluation."""
    split_seed: int = 0
    """Seed of the user split (a hash of (seed, user id))."""
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

    def __post_init__(self) -> None:
        for name in ("users", "days"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"[data] {name} must be an integer >= 1, got {value!r}")
        if not 0.0 <= self.held_out_share < 1.0:
            raise ConfigError(f"[data] held_out_share must be in [0, 1), got {self.held_out_share!r}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 2
    """Passes over the training lists."""
    batch_size: int = 256
    """Request lists per step."""
    lr: float = 3e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Adam weight decay."""
    seed: int = 0
    """Seeds the model's initial weights and the shuffling."""
    loss: ListLoss = ListLoss.MULTI_POSITIVE_SOFTMAX
    """Coarse ranker: the per-task list loss (bce, softmax, multi_positive_softmax)."""
    task_weights: TaskWeights = dataclasses.field(default_factory=TaskWeights)
    """Coarse ranker: weights of the exposure, click and purchase tasks."""
    score_task: Task = Task.CLICK
    """Coarse ranker: the task whose logit ranks candidates when serving."""
    eval_lists: int = 20_000
    """Held-out request lists scored after every epoch (0 = skip)."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"[train] {name} must be an integer >= 1, got {value!r}")
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"[train] lr must be > 0, got {self.lr!r}")
        if not (isinstance(self.weight_decay, int | float) and self.weight_decay >= 0):
            raise ConfigError(f"[train] weight_decay must be >= 0, got {self.weight_decay!r}")
        if isinstance(self.eval_lists, bool) or not isinstance(self.eval_lists, int) or self.eval_lists < 0:
            raise ConfigError(f"[train] eval_lists must be an integer >= 0, got {self.eval_lists!r}")


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    teacher: str = ""
    """Fine ranker to distil from: a checkpoint, or its training config (.toml, trained if
    needed); empty = no distillation."""
    soft_only_epochs: int = 1
    """Stage 1: epochs trained on soft labels only; later epochs add the hard labels."""
    soft_weight: float = 1.0
    """Weight of the soft-label loss in stage 2."""
    label_smoothing_scale: float = 0.1
    """Soft label of a non-exposed sample = teacher pCTR x this (seed 002; << 1)."""

    def __post_init__(self) -> None:
        if isinstance(self.soft_only_epochs, bool) or not isinstance(self.soft_only_epochs, int):
            raise ConfigError(f"[distill] soft_only_epochs must be an integer, got {self.soft_only_epochs!r}")
        if self.soft_only_epochs < 0:
            raise ConfigError(f"[distill] soft_only_epochs must be >= 0, got {self.soft_only_epochs}")
        if not (isinstance(self.soft_weight, int | float) and self.soft_weight >= 0):
            raise ConfigError(f"[distill] soft_weight must be >= 0, got {self.soft_weight!r}")
        scale = self.label_smoothing_scale
        if not (isinstance(scale, int | float) and 0.0 <= scale <= 1.0):
            raise ConfigError(f"[distill] label_smoothing_scale must be in [0, 1], got {scale!r}")

    @property
    def enabled(self) -> bool:
        return bool(self.teacher)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A whole training config file."""

    kind: str
    out: str
    data: DataConfig
    model: FineConfig | CoarseConfig
    train: TrainConfig
    distill: DistillConfig

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)


def parse_config(raw: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a parsed TOML training config."""
    known = {"kind", "out", "data", "model", "train", "distill"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {unknown}; known: {sorted(known)}")
    kind = raw.get("kind")
    if kind not in ("fine", "coarse"):
        raise ConfigError(f'{source}: kind must be "fine" or "coarse", got {kind!r}')
    if not isinstance(raw.get("out"), str) or not raw["out"]:
        raise ConfigError(f"{source}: out (the checkpoint path) must be a non-empty string")
    if kind == "fine" and raw.get("distill"):
        raise ConfigError(f"{source}: [distill] applies to coarse models only")
    return RunConfig(
        kind=kind,
        out=raw["out"],
        data=from_mapping(DataConfig, raw.get("data", {}), "[data]"),
        model=from_mapping(FineConfig if kind == "fine" else CoarseConfig, raw.get("model", {}), "[model]"),
        train=from_mapping(TrainConfig, raw.get("train", {}), "[train]"),
        distill=from_mapping(DistillConfig, raw.get("distill", {}), "[distill]"),
    )


def load_config(path: str | Path) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from err
    return parse_config(raw, str(path))


# ---------------------------------------------------------------------------------------------
# What each kind of model trains: its model, sample space, loss of a batch and evaluation


@dataclasses.dataclass(frozen=True)
class FineTask:
    """The fine ranker: BCE on exposed samples for clicks, and for purchases given a click;
    evaluated by its click logit."""

    config: FineConfig
    teacher: ClassVar[None] = None  # the fine ranker is the teacher
    teacher_version: ClassVar[None] = None

    @classmethod
    def of(cls, run: RunConfig, data: LogData, progress: bool, log: Callable[..., None]) -> FineTask:
        if run.train.score_task not in FINE_TASKS:
            raise ConfigError(
                f"[train] score_task of a fine ranker must be one of {[str(t) for t in FINE_TASKS]}, "
                f"got {str(run.train.score_task)!r}"
            )
        return cls(run.model)

    @property
    def space(self) -> SampleSpace:
        """Logged exposures only."""
        return SampleSpace(False, False, False, False)

    def model(self, vocab: Vocab, seed: int) -> FineRanker:
        return FineRanker(self.config, vocab, seed=seed)

    def stage(self, epoch: int) -> int:
        """Always 2 (hard labels), as for a coarse ranker without a teacher."""
        return 2

    def loss(self, model: FineRanker, batch: ListBatch, ids: np.ndarray, stage: int) -> torch.Tensor:
        out = model(batch.user, batch.items)
        clicked = batch.mask & (batch.click > 0)
        return bce_loss(out.click_logit, batch.click, batch.mask) + bce_loss(
            out.purchase_logit, batch.purchase, clicked
        )

    def score(self, model: FineRanker) -> Callable[[ListBatch], torch.Tensor]:
        return lambda batch: model(batch.user, batch.items).click_logit


@dataclasses.dataclass(frozen=True)
class CoarseTask:
    """A coarse ranker: the multi-task list loss over the sample space of ``[data]`` and, with a
    teacher, distillation in two stages (see the module doc); evaluated by its ``score_task``
    logit and, with a teacher, against the teacher's pCTR."""

    run: RunConfig
    lists: Lists  # the training lists of ``space``
    teacher: FineRanker | None = None
    teacher_version: str | None = None
    soft: tuple[torch.Tensor, torch.Tensor] | None = None  # the teacher's (pCTR, pCTCVR) per entry

    @classmethod
    def of(cls, run: RunConfig, data: LogData, progress: bool, log: Callable[..., None]) -> CoarseTask:
        lists = data.lists(run.data.space)
        if not run.distill.enabled:
            return cls(run, lists)
        teacher_path = run.distill.teacher
        if teacher_path.endswith(".toml"):  # a training config: train the teacher if needed
            teacher_path = ensure_trained(teacher_path, progress, log)
        loaded = load_checkpoint(teacher_path, kind="fine")
        soft = teacher_outputs(data, run.data.space, loaded.model, progress=progress)
        return cls(run, lists, loaded.model, loaded.version, soft)

    @property
    def space(self) -> SampleSpace:
        return self.run.data.space

    def model(self, vocab: Vocab, seed: int) -> CoarseRanker:
        return CoarseRanker(self.run.model, vocab, seed=seed)

    def stage(self, epoch: int) -> int:
        """1 (soft labels only) in the first ``soft_only_epochs`` epochs of a distillation, else 2."""
        return 1 if self.soft is not None and epoch < self.run.distill.soft_only_epochs else 2

    def loss(self, model: CoarseRanker, batch: ListBatch, ids: np.ndarray, stage: int) -> torch.Tensor:
        soft = None
        if self.soft is not None:
            entry, mask = self.lists.entries(ids)
            soft = (torch.where(mask, self.soft[0][entry], 0.0), torch.where(mask, self.soft[1][entry], 0.0))
        return self.batch_loss(model, batch, soft, stage)

    def batch_loss(
        self,
        model: CoarseRanker,
        batch: ListBatch,
        soft: tuple[torch.Tensor, torch.Tensor] | None,
        stage: int,
    ) -> torch.Tensor:
        """Hard labels (not in stage 1) plus, given soft labels (B, L) each, the distillation loss."""
        logits = model(batch.user, batch.items)  # (B, L, 3)
        loss = torch.zeros(())
        if stage != 1:
            hard = multi_task_loss(
                TaskLogits(logits[..., Task.EXPOSURE.index], batch.exposure),
                TaskLogits(logits[..., Task.CLICK.index], batch.click),
                TaskLogits(logits[..., Task.PURCHASE.index], batch.purchase),
                batch.mask,
                self.run.train.task_weights,
                self.run.train.loss,
            )
            loss = loss + hard.total
        if soft is not None:
            exposed = batch.sample_type == EXPOSED
            scale = self.run.distill.label_smoothing_scale
            soft_click = label_smoothed_soft_labels(soft[0], exposed, scale)
            soft_buy = label_smoothed_soft_labels(soft[1], exposed, scale)
            soft_loss = distillation_loss(
                logits[..., Task.CLICK.index], soft_click, batch.mask
            ) + distillation_loss(logits[..., Task.PURCHASE.index], soft_buy, batch.mask)
            loss = loss + (soft_loss if stage == 1 else self.run.distill.soft_weight * soft_loss)
        return loss

    def score(self, model: CoarseRanker) -> Callable[[ListBatch], torch.Tensor]:
        task = self.run.train.score_task.index
        return lambda batch: model(batch.user, batch.items)[..., task]


TASKS: dict[str, Callable[..., FineTask | CoarseTask]] = {"fine": FineTask.of, "coarse": CoarseTask.of}
"""The training task of each ``kind``, built from the config (and the logs, for soft labels)."""


# ---------------------------------------------------------------------------------------------
# The training loop, shared by every kind


@dataclasses.dataclass
class TrainResult:
    model: FineRanker | CoarseRanker
    path: Path  # the checkpoint written
    version: str
    history: list[dict[str, float]]  # one record per epoch
    train_users: np.ndarray
    held_out_users: np.ndarray
    seconds: float
    samples: int  # list entries processed


def train(
    run: RunConfig,
    data: LogData | None = None,
    progress: bool = True,
    log=print,
    on_epoch: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train the model of ``run`` on its logs (or ``data``) and write its checkpoint.
    ``on_epoch`` is called with each epoch's record (as stored in ``history``) when the epoch
    ends, e.g. to report it to Ray Tune. The seed ``[train] seed`` draws the initial weights
    and, from a second generator of the same seed, the shuffling; torch's global generator is
    neither used nor changed."""
    data = data if data is not None else load_logs(run.data.logs)
    train_users, held_out = split_by_user(data, run.data.held_out_share, run.data.split_seed)
    task = TASKS[run.kind](run, data, progress, log)
    model = task.model(vocab_of(WorldConfig.from_dict(data.world)), run.train.seed)
    lists = data.lists(task.space)
    shuffle = torch.Generator().manual_seed(run.train.seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=run.train.lr, weight_decay=run.train.weight_decay)
    eval_ids = held_out_list_ids(lists, held_out, run.train.eval_lists)
    reference = None  # the teacher's pCTR of the held-out entries
    if task.teacher is not None and len(eval_ids):
        reference = teacher_outputs(data, task.space, task.teacher, list_ids=eval_ids)[0]
    history, samples, start = [], 0, time.perf_counter()
    for epoch in range(run.train.epochs):
        stage = task.stage(epoch)
        model.train()
        batches = list(
            iterate_list_ids(data, task.space, run.train.batch_size, True, shuffle, users=train_users)
        )
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{run.train.epochs}", disable=not progress, leave=False)
        total, n = 0.0, 0
        for ids in bar:
            batch = make_batch(data, lists, ids)
            loss = task.loss(model, batch, ids, stage)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach())
            n += 1
            samples += int(batch.mask.sum())
            if n % 20 == 0:
                bar.set_postfix(loss=f"{total / n:.4f}")
        record = {"epoch": epoch + 1, "stage": stage, "loss": total / max(n, 1)}
        if len(eval_ids):
            model.eval()
            record |= list_metrics(data, task.space, eval_ids, task.score(model), reference)
        history.append(record)
        log("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
        if on_epoch is not None:
            on_epoch(dict(record))
    seconds = time.perf_counter() - start
    model.eval()
    metadata = {
        "run": run.to_dict(),
        "history": history,
        "train_seconds": seconds,
        "train_samples": samples,
        "held_out_share": run.data.held_out_share,
        "split_seed": run.data.split_seed,
        "score_task": str(run.train.score_task),
        "teacher_version": task.teacher_version,
    }
    version = save_checkpoint(run.out, model, metadata)
    return TrainResult(model, Path(run.out), version, history, train_users, held_out, seconds, samples)


def ensure_logs(data: DataConfig, progress: bool = True) -> Path:
    """The log folder of ``data``, simulated first if it does not exist. An existing folder
    must come from the same world (its world.json), else ConfigError."""
    config = load_world_config(data.world)
    path = Path(data.logs)
    if path.is_dir():
        stored = json.loads((path / "world.json").read_text()) if (path / "world.json").is_file() else None
        if stored != json.loads(json.dumps(config.to_dict())):
            raise ConfigError(
                f"logs {path} were not simulated from world {data.world!r}; delete them or fix [data]"
            )
        return path
    if progress:
        print(f"simulating logs of {data.users:,} users x {data.days} day(s) into {path}", file=sys.stderr)
    return write_logs(
        World(config), path, n_users=min(data.users, config.n_users), days=data.days, progress=progress
    )


def ensure_trained(config: str | Path | RunConfig, progress: bool = True, log=print) -> Path:
    """The checkpoint of a training config, trained first unless a checkpoint of exactly this
    config already exists. A distillation teacher given as a training config (.toml) is
    ensured the same way. Returns the checkpoint path."""
    run = config if isinstance(config, RunConfig) else load_config(config)
    out = Path(run.out)
    if out.is_file():
        try:
            if load_checkpoint(out, kind=run.kind).metadata.get("run") == run.to_dict():
                return out
        except (CheckpointError, FileNotFoundError):
            pass
    ensure_logs(run.data, progress)
    log(f"training {run.kind} model -> {out}")
    train(run, progress=progress, log=log)
    return out


def ensure_checkpoint(spec: str | dict, kind: str, progress: bool = False, log=print) -> str:
    """The absolute checkpoint path of a model spec: a checkpoint file, a training config file
    (.toml) or an inline training-config table of ``kind``; configs are trained first if needed
    (``ensure_trained``)."""
    if isinstance(spec, dict):
        run = parse_config({"kind": kind, **spec}, f"inline {kind} config")
        return str(ensure_trained(run, progress=progress, log=log).resolve())
    if not Path(spec).is_file():
        what = "training config" if spec.endswith(".toml") else "checkpoint"
        raise ConfigError(f"{what} {spec} does not exist")
    if spec.endswith(".toml"):
        return str(ensure_trained(spec, progress=progress, log=log).resolve())
    return str(Path(spec).resolve())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m policies.train",
        description="Train a fine ranker (teacher) or a coarse ranker from simulator logs and write "
        "its checkpoint (config + version id + per-epoch held-out metrics).",
    )
    parser.add_argument("--config", required=True, help="training config TOML (see configs/*.toml)")
    parser.add_argument("--logs", help="override [data] logs: the log folder")
    parser.add_argument("--out", help="override out: the checkpoint path")
    parser.add_argument("--epochs", type=int, help="override [train] epochs")
    args = parser.parse_args(argv)
    try:
        run = load_config(args.config)
        if args.logs:
            run = dataclasses.replace(run, data=dataclasses.replace(run.data, logs=args.logs))
        if args.out:
            run = dataclasses.replace(run, out=args.out)
        if args.epochs is not None:
            run = dataclasses.replace(run, train=dataclasses.replace(run.train, epochs=args.epochs))
        progress = sys.stderr.isatty()
        result = train(run, data=load_logs(ensure_logs(run.data, progress)), progress=progress)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rate = result.samples / max(result.seconds, 1e-9)
    print(
        f"wrote {run.out} (version {result.version}): {result.seconds:.1f} s, "
        f"{result.samples:,} samples, {rate:,.0f} samples/s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
