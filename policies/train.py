"""Training of the fine ranker (teacher) and the coarse rankers, from simulator logs.

    python -m policies.train --config configs/coarse_full.toml

A training config (TOML) has a top-level ``kind = "fine" | "coarse"`` and ``out`` (the
checkpoint path) and the tables ``[data]`` (``DataConfig``), ``[model]`` (``FineConfig`` or
``CoarseConfig``), ``[train]`` (``TrainConfig``) and, for coarse models, ``[distill]``
(``DistillConfig``). Every field is documented where it is declared; unknown keys are errors.

Fine ranker: BCE on exposed samples for clicks, and for purchases given a click.

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
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from common.config import ConfigError, add_set_argument, overrides
from policies import metrics
from policies.batch import ListBatch
from policies.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from policies.config import DataConfig, RunConfig, check_model_spec, load_config, parse_config
from policies.data import (
    EXPOSED,
    LogData,
    SampleSpace,
    iterate_list_ids,
    load_logs,
    make_batch,
    split_by_user,
)
from policies.features import vocab_of
from policies.losses import (
    TaskLogits,
    bce_loss,
    distillation_loss,
    label_smoothed_soft_labels,
    multi_task_loss,
)
from policies.models import CoarseRanker, FineRanker
from policies.rankers import Task
from simulator.config import WorldConfig, load_world_config
from simulator.logs import write_logs
from simulator.world import World

# ---------------------------------------------------------------------------------------------
# Evaluation on held-out lists


def _pad(x: torch.Tensor, width: int, fill: float | bool) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=fill)


@torch.no_grad()
def list_metrics(
    data: LogData,
    space: SampleSpace,
    list_ids: np.ndarray,
    score: Callable[[ListBatch], torch.Tensor],
    teacher_pctr: torch.Tensor | None = None,
    batch_size: int = 256,
) -> dict[str, float]:
    """Offline metrics of ``score(batch) -> (B, L)`` over lists ``list_ids``: click AUC and
    GAUC on exposed samples and, given the teacher's pCTR per list entry (E,), NDCG@10, Kendall
    tau and recall@10@30 against the teacher within each list (all its samples)."""
    lists = data.lists(space)
    width = int((lists.offsets[1:] - lists.offsets[:-1])[list_ids].max()) if len(list_ids) else 1
    users, labels, scores, ref, student, masks = [], [], [], [], [], []
    for lo in range(0, len(list_ids), batch_size):
        ids = list_ids[lo : lo + batch_size]
        batch = make_batch(data, lists, ids)
        s = score(batch).float()  # (B, L)
        exposed = (batch.sample_type == EXPOSED) & batch.mask
        users.append(batch.user.user_id[:, None].expand_as(exposed)[exposed])
        labels.append(batch.click[exposed])
        scores.append(s[exposed])
        if teacher_pctr is not None:
            entry, mask = lists.entries(ids)
            ref.append(_pad(torch.where(mask, teacher_pctr[entry], 0.0), width, 0.0))
            student.append(_pad(torch.where(mask, s, 0.0), width, 0.0))
            masks.append(_pad(mask, width, False))
    u, y, s = (torch.cat(x).numpy() for x in (users, labels, scores))
    out = {"auc": metrics.auc(y, s), "gauc": metrics.gauc(u, y, s)}
    if teacher_pctr is not None:
        r, st, m = (torch.cat(x).numpy() for x in (ref, student, masks))
        out["ndcg@10"] = metrics.ndcg_at_k(r, st, 10, m)
        out["kendall_tau"] = metrics.kendall_tau(r, st, m)
        out["recall@10@30"] = metrics.recall_at_k_at_m(r, st, 10, 30, m)
    return out


@torch.no_grad()
def teacher_outputs(
    data: LogData,
    space: SampleSpace,
    teacher: FineRanker,
    batch_size: int = 512,
    progress: bool = False,
    list_ids: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's (pCTR, pCTCVR) for every list entry of ``space``, each (E,); only the
    entries of ``list_ids`` are computed if given (the others stay 0)."""
    teacher.eval()
    lists = data.lists(space)
    pctr = torch.zeros(len(lists.item_id))
    pctcvr = torch.zeros(len(lists.item_id))
    ids_all = np.arange(len(lists)) if list_ids is None else np.asarray(list_ids)
    for lo in tqdm(
        range(0, len(ids_all), batch_size), desc="teacher labels", disable=not progress, leave=False
    ):
        ids = ids_all[lo : lo + batch_size]
        batch = make_batch(data, lists, ids)
        out = teacher(batch.user, batch.items)
        entry, mask = lists.entries(ids)
        pctr[entry[mask]] = out.pctr[mask]
        pctcvr[entry[mask]] = out.pctcvr[mask]
    return pctr, pctcvr


# ---------------------------------------------------------------------------------------------
# Training loops


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


def _fine_loss(model: FineRanker, batch: ListBatch) -> torch.Tensor:
    out = model(batch.user, batch.items)
    clicked = batch.mask & (batch.click > 0)
    return bce_loss(out.click_logit, batch.click, batch.mask) + bce_loss(
        out.purchase_logit, batch.purchase, clicked
    )


def _coarse_loss(
    model: CoarseRanker,
    batch: ListBatch,
    run: RunConfig,
    soft: tuple[torch.Tensor, torch.Tensor] | None,
    stage: int,
) -> torch.Tensor:
    logits = model(batch.user, batch.items)  # (B, L, 3)
    loss = torch.zeros(())
    if stage != 1:
        hard = multi_task_loss(
            TaskLogits(logits[..., Task.EXPOSURE.index], batch.exposure),
            TaskLogits(logits[..., Task.CLICK.index], batch.click),
            TaskLogits(logits[..., Task.PURCHASE.index], batch.purchase),
            batch.mask,
            run.train.task_weights,
            run.train.loss,
        )
        loss = loss + hard.total
    if soft is not None:
        exposed = batch.sample_type == EXPOSED
        scale = run.distill.label_smoothing_scale
        soft_click = label_smoothed_soft_labels(soft[0], exposed, scale)
        soft_buy = label_smoothed_soft_labels(soft[1], exposed, scale)
        soft_loss = distillation_loss(
            logits[..., Task.CLICK.index], soft_click, batch.mask
        ) + distillation_loss(logits[..., Task.PURCHASE.index], soft_buy, batch.mask)
        loss = loss + (soft_loss if stage == 1 else run.distill.soft_weight * soft_loss)
    return loss


def train(
    run: RunConfig,
    data: LogData | None = None,
    progress: bool = True,
    log=print,
    on_epoch: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train the model of ``run`` on its logs (or ``data``) and write its checkpoint.
    ``on_epoch`` is called with each epoch's record (as stored in ``history``) when the epoch
    ends, e.g. to report it to Ray Tune."""
    data = data if data is not None else load_logs(run.data.logs)
    world = WorldConfig.from_dict(data.world)
    vocab = vocab_of(world)
    train_users, held_out = split_by_user(data, run.data.held_out_share, run.data.split_seed)
    space = SampleSpace(False, False, False, False) if run.kind == "fine" else run.data.space
    torch.manual_seed(run.train.seed)
    model: FineRanker | CoarseRanker = (
        FineRanker(run.model, vocab) if run.kind == "fine" else CoarseRanker(run.model, vocab)
    )
    teacher, soft_all = None, None
    eval_space = space if run.kind == "fine" else run.data.space
    teacher_version = None
    if run.kind == "coarse" and run.distill.enabled:
        teacher_path = run.distill.teacher
        if teacher_path.endswith(".toml"):  # a training config: train the teacher if needed
            teacher_path = ensure_trained(teacher_path, progress, log)
        loaded = load_checkpoint(teacher_path, kind="fine")
        teacher, teacher_version = loaded.model, loaded.version
        soft_all = teacher_outputs(data, space, teacher, progress=progress)
    lists = data.lists(space)
    generator = torch.Generator().manual_seed(run.train.seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=run.train.lr, weight_decay=run.train.weight_decay)

    eval_ids = _eval_list_ids(data, eval_space, held_out, run.train.eval_lists, run.data.split_seed)
    eval_teacher = None
    if teacher is not None and len(eval_ids):
        eval_teacher = teacher_outputs(data, eval_space, teacher, list_ids=eval_ids)[0]
    history, samples, start = [], 0, time.perf_counter()
    for epoch in range(run.train.epochs):
        stage = 1 if (soft_all is not None and epoch < run.distill.soft_only_epochs) else 2
        model.train()
        batches = list(
            iterate_list_ids(data, space, run.train.batch_size, True, generator, users=train_users)
        )
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{run.train.epochs}", disable=not progress, leave=False)
        total, n = 0.0, 0
        for ids in bar:
            batch = make_batch(data, lists, ids)
            if run.kind == "fine":
                loss = _fine_loss(model, batch)
            else:
                soft = None
                if soft_all is not None:
                    entry, mask = lists.entries(ids)
                    soft = (
                        torch.where(mask, soft_all[0][entry], 0.0),
                        torch.where(mask, soft_all[1][entry], 0.0),
                    )
                loss = _coarse_loss(model, batch, run, soft, stage)
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
            record |= list_metrics(data, eval_space, eval_ids, _scorer(model, run), eval_teacher)
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
        "teacher_version": teacher_version,
    }
    version = save_checkpoint(run.out, model, metadata)
    return TrainResult(model, Path(run.out), version, history, train_users, held_out, seconds, samples)


def _scorer(model: FineRanker | CoarseRanker, run: RunConfig):
    if isinstance(model, FineRanker):
        return lambda batch: model(batch.user, batch.items).click_logit
    return lambda batch: model(batch.user, batch.items)[..., run.train.score_task.index]


def _eval_list_ids(data: LogData, space: SampleSpace, users: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to n held-out list indices, a fixed subset (every user's lists kept together)."""
    if n == 0 or len(users) == 0:
        return np.zeros(0, dtype=np.int64)
    lists = data.lists(space)
    ids = np.flatnonzero(np.isin(lists.user_id, users))
    return ids[:n]


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
    parser.add_argument("--config", required=True, help="training config TOML (see configs/models/*.toml)")
    add_set_argument(parser)
    parser.add_argument("--logs", help="override [data] logs: the log folder (same as --set data.logs=...)")
    parser.add_argument("--out", help="override out: the checkpoint path (same as --set out=...)")
    parser.add_argument("--epochs", type=int, help="override [train] epochs (same as --set train.epochs=N)")
    args = parser.parse_args(argv)
    try:
        flags = {"data.logs": args.logs, "out": args.out, "train.epochs": args.epochs}
        run = load_config(args.config, overrides(args.set, flags))
        check_model_spec(run.distill.teacher, "fine")  # before the logs are simulated
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
