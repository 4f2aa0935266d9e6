"""Training of the fine ranker (teacher) and the coarse rankers, from simulator logs.

    python -m policies.train --config configs/models/coarse_full.toml   # or cascade-ab-train

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
pCTCVR treated the same way; ``[distill] loss`` fits them listwise (their order over each
list, the default) or pointwise (BCE). Teacher outputs are computed once per list entry and cached.

Offline evaluation follows ``[data] split`` (``split_logs``): held-out users (``split =
"user"``) or the last logged day of every user (``"day"``, a time split) never enter training;
offline metrics on them are printed after every epoch and stored in the checkpoint's metadata.
With ``[data] validation_share`` > 0 a share of the training users validates instead of training
(``split_validation``): the checkpoint keeps the epoch of their lowest loss (the last epoch's
objective: for a distillation, stage 2's hard + soft labels), so nothing is chosen on the
evaluation users.
"""

from __future__ import annotations

if __name__ == "__main__":  # the command parses its arguments before torch is imported
    from policies.train_cli import main

    raise SystemExit(main())

import copy
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from common.config import ConfigError
from policies.batch import ListBatch
from policies.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from policies.config import DataConfig, RunConfig, load_config, parse_config
from policies.data import (
    EXPOSED,
    Lists,
    LogData,
    SampleSpace,
    iterate_list_ids,
    load_logs,
    make_batch,
    split_logs,
)
from policies.evaluate import held_out_list_ids, list_metrics, teacher_labels, validation_list_ids
from policies.features import vocab_of
from policies.losses import (
    TaskLogits,
    bce_loss,
    distill_loss,
    label_smoothed_soft_labels,
    multi_task_loss,
)
from policies.models import CoarseRanker, FineConfig, FineRanker, Vocab
from policies.rankers import FINE_TASKS, Task
from simulator.config import WorldConfig, load_world_config
from simulator.logs import write_logs
from simulator.world import World

# ---------------------------------------------------------------------------------------------
# What each kind of model trains: its model, sample space, loss of a batch and evaluation


@dataclasses.dataclass(frozen=True)
class FineTask:
    """The fine ranker: BCE on exposed samples for clicks, and for purchases given a click;
    evaluated by its click logit."""

    config: FineConfig
    teacher: ClassVar[None] = None  # the fine ranker is the teacher
    teacher_version: ClassVar[None] = None
    soft: ClassVar[None] = None

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
        out = model(batch.user, batch.items, batch.fine_signal)
        clicked = batch.mask & (batch.click > 0)
        return bce_loss(out.click_logit, batch.click, batch.mask) + bce_loss(
            out.purchase_logit, batch.purchase, clicked
        )

    def score(self, model: FineRanker) -> Callable[[ListBatch], torch.Tensor]:
        return lambda batch: model(batch.user, batch.items, batch.fine_signal).click_logit


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
        soft = teacher_labels(data, run.data.space, loaded.model, loaded.version, progress=progress)
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
            kind = self.run.distill.loss
            soft_loss = distill_loss(
                kind, logits[..., Task.CLICK.index], soft_click, batch.mask
            ) + distill_loss(kind, logits[..., Task.PURCHASE.index], soft_buy, batch.mask)
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
    held_out_users: np.ndarray  # the users evaluated (split "day": every user of the last day)
    eval_day: int | None  # split "day": the evaluation day, the training days before it
    validation_users: np.ndarray  # the users whose lists chose the epoch (none: the last epoch)
    selected_epoch: int  # the epoch whose weights the checkpoint holds (1-based)
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
    split = split_logs(
        data, run.data.split, run.data.held_out_share, run.data.split_seed, run.data.validation_share
    )
    task = TASKS[run.kind](run, data, progress, log)
    model = task.model(vocab_of(WorldConfig.from_dict(data.world)), run.train.seed)
    lists = data.lists(task.space)
    shuffle = torch.Generator().manual_seed(run.train.seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=run.train.lr, weight_decay=run.train.weight_decay)
    eval_ids = held_out_list_ids(lists, split.eval_users, run.train.eval_lists, split.eval_day)
    validation_ids = validation_list_ids(lists, split, run.train.eval_lists)
    if split.eval_day is not None and len(eval_ids):
        log(f"time split: training on days < {split.eval_day}, offline metrics on day {split.eval_day}")
    reference = task.soft[0] if task.soft is not None else None  # the teacher's pCTR per entry
    history, samples, start = [], 0, time.perf_counter()
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None  # (validation loss, epoch, weights)
    final = task.stage(run.train.epochs - 1)  # the stage whose loss the validation users measure
    for epoch in range(run.train.epochs):
        stage = task.stage(epoch)
        model.train()
        batches = list(
            iterate_list_ids(
                data, task.space, run.train.batch_size, True, shuffle, split.train_users, split.eval_day
            )
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
        model.eval()
        if len(validation_ids):
            record["val_loss"] = validation_loss(
                task, model, data, lists, validation_ids, run.train.batch_size, final
            )
            if best is None or record["val_loss"] < best[0]:
                best = (record["val_loss"], epoch + 1, copy.deepcopy(model.state_dict()))
        if len(eval_ids):
            record |= list_metrics(data, task.space, eval_ids, task.score(model), reference)
        history.append(record)
        log("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
        if on_epoch is not None:
            on_epoch(dict(record))
    seconds = time.perf_counter() - start
    selected_epoch = run.train.epochs
    if best is not None:
        _, selected_epoch, weights = best
        model.load_state_dict(weights)
        log(f"kept epoch {selected_epoch} of {run.train.epochs} (the lowest validation loss)")
    metadata = {
        "run": run.portable(),
        "world": data.world,
        "history": history,
        "train_seconds": seconds,
        "train_samples": samples,
        "held_out_share": run.data.held_out_share,
        "split_seed": run.data.split_seed,
        **({"validation_share": run.data.validation_share, "selected_epoch": selected_epoch} if best else {}),
        **({"split": str(run.data.split), "eval_day": split.eval_day} if split.eval_day is not None else {}),
        "score_task": str(run.train.score_task),
        "teacher_version": task.teacher_version,
    }
    version = save_checkpoint(run.out, model, metadata)
    return TrainResult(
        model,
        Path(run.out),
        version,
        history,
        split.train_users,
        split.eval_users,
        split.eval_day,
        split.validation_users,
        selected_epoch,
        seconds,
        samples,
    )


@torch.no_grad()
def validation_loss(
    task, model, data: LogData, lists: Lists, ids: np.ndarray, batch_size: int, stage: int
) -> float:
    """The mean loss of ``stage`` over lists ``ids`` (the validation users' lists)."""
    total = 0.0
    for lo in range(0, len(ids), batch_size):
        chunk = ids[lo : lo + batch_size]
        total += float(task.loss(model, make_batch(data, lists, chunk), chunk, stage)) * len(chunk)
    return total / len(ids)


def _world_dict(data: DataConfig) -> dict[str, Any]:
    """The world of ``data`` as its logs' world.json stores it."""
    return json.loads(json.dumps(load_world_config(data.world).to_dict()))


def ensure_logs(data: DataConfig, progress: bool = True) -> Path:
    """The log folder of ``data``, simulated first if it does not exist. An existing folder
    must come from the same world (its world.json) and hold at least ``data.users`` users (a
    folder another job wrote for fewer users would silently shrink the training set), else
    ConfigError."""
    config = load_world_config(data.world)
    path = Path(data.logs)
    n_users = min(data.users, config.n_users)
    if path.is_dir():
        stored = json.loads((path / "world.json").read_text()) if (path / "world.json").is_file() else None
        if stored != _world_dict(data):
            raise ConfigError(
                f"logs {path} were not simulated from world {data.world!r}; delete them or fix [data]"
            )
        logged = pq.read_metadata(path / "users.parquet").num_rows
        if logged < n_users:
            raise ConfigError(
                f"logs {path} hold {logged:,} users, [data] users = {data.users:,}; delete them or fix [data]"
            )
        return path
    if progress:
        print(f"simulating logs of {data.users:,} users x {data.days} day(s) into {path}", file=sys.stderr)
    return write_logs(World(config), path, n_users=n_users, days=data.days, progress=progress)


def ensure_trained(config: str | Path | RunConfig, progress: bool = True, log=print) -> Path:
    """The checkpoint of a training config, trained first unless a checkpoint of exactly this
    config, trained on exactly this world (a world TOML's contents, not only its path) and
    distilled from exactly its teacher's current checkpoint, already exists. A distillation
    teacher given as a training config (.toml) is ensured the same way first (an edited teacher
    config retrains the teacher, then its students). Returns the checkpoint path."""
    run = config if isinstance(config, RunConfig) else load_config(config)
    out = Path(run.out)
    if out.is_file():
        try:
            metadata = load_checkpoint(out, kind=run.kind).metadata
            if (
                metadata.get("run") == run.portable()
                and metadata.get("world") == _world_dict(run.data)
                and metadata.get("teacher_version") == _teacher_version(run, progress, log)
            ):
                return out
        except (CheckpointError, FileNotFoundError):
            pass
    ensure_logs(run.data, progress)
    log(f"training {run.kind} model -> {out}")
    train(run, progress=progress, log=log)
    return out


def _teacher_version(run: RunConfig, progress: bool, log) -> str | None:
    """The version of a coarse run's distillation teacher checkpoint (a teacher config is
    ensured first), or None without distillation."""
    if run.kind != "coarse" or not run.distill.enabled:
        return None
    teacher = run.distill.teacher
    if teacher.endswith(".toml"):
        teacher = ensure_trained(teacher, progress, log)
    return load_checkpoint(teacher, kind="fine").version


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
