"""One trial: train a coarse ranker with the sampled settings on the shared logs, report its
held-out metrics every epoch, then score it offline (``policies.evaluate``) and online (a short
paired A/B against the control, ``tuning.online``) and report everything.

Everything a trial needs besides its settings is built once before the search (``Shared``)
and put once in the Ray object store; trials hold a small handle and fetch it on first use
(numpy arrays are read zero-copy; a process that runs several trials fetches it once).
Results are flat Tune metrics: ``epoch/*`` every epoch (``epoch/gauc``, ``epoch/auc``,
``epoch/loss``; NDCG etc. too when the trial distils), and with the last epoch ``offline/*``
(every ``evaluate_coarse`` metric), ``online/*`` (every outcome's lift), ``objective`` and
``time/*`` (seconds spent fetching, training, evaluating, simulating and waiting on Tune).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policies.cascade import Cascade, CascadeSizes
from policies.data import LogData
from policies.evaluate import EvalSet, evaluate_coarse
from policies.features import FeatureStore
from policies.rankers import CoarseModelScorer
from policies.train import parse_config, train
from simulator.recall import SessionKeys
from simulator.session import Simulator
from simulator.world import World
from tuning.config import trial_raw_config
from tuning.online import TableScorer, online_record, session_outcomes


@dataclasses.dataclass
class Shared:
    """What every trial of a search shares, built once (``tuning.search.prepare``)."""

    world: World
    features: FeatureStore
    data: LogData  # the search's logs: trials train on them
    eval_set: EvalSet  # held-out evaluation; its fine stage reads precomputed scores
    keys: SessionKeys  # (U,) the online A/B: held-out users, one session each on a fresh day
    fine_table: TableScorer  # fine scores of those sessions' recall sets
    control: dict[str, np.ndarray]  # per-user outcomes of the control's cascade on ``keys``
    sizes: CascadeSizes
    template: dict[str, Any]  # base training config with [trial]'s overrides (absolute paths)
    teacher: str  # fine checkpoint (absolute): distilling trials' teacher
    trials_dir: str  # absolute: <run>/trials, each trial's config, checkpoint and attempts
    epochs: int
    threads: int  # torch threads per trial (its CPUs)
    objective: str
    alpha: float


_CACHE: dict[str, Shared] = {}


class SharedHandle:
    """A picklable reference to the ``Shared`` object in the object store, fetched (and
    kept) once per process."""

    def __init__(self, ref: Any) -> None:
        self.ref = ref

    def get(self) -> Shared:
        key = self.ref.hex()
        if key not in _CACHE:
            import ray  # noqa: PLC0415

            _CACHE.clear()  # one search per process at a time
            _CACHE[key] = ray.get(self.ref)
        return _CACHE[key]


def _quiet(*_: Any) -> None:
    pass


def run_trial(params: dict[str, Any], handle: SharedHandle) -> None:
    """The Tune function trainable (``tune.with_parameters(run_trial, handle=...)``)."""
    from ray import tune  # noqa: PLC0415

    start = time.perf_counter()
    timings = {"fetch": 0.0, "train": 0.0, "eval": 0.0, "online": 0.0, "report": 0.0, "total": 0.0}
    t0 = time.perf_counter()
    shared = handle.get()
    timings["fetch"] = time.perf_counter() - t0
    torch.set_num_threads(shared.threads)  # as the control was trained: equal settings, equal models

    trial_id = tune.get_context().get_trial_id() or "local"
    trials_dir = Path(shared.trials_dir)
    out = trials_dir / f"{trial_id}.pt"
    with open(trials_dir / "attempts.jsonl", "a") as f:  # one short line per attempt
        f.write(json.dumps({"trial_id": trial_id, "pid": os.getpid(), "time": time.time()}) + "\n")
    raw = trial_raw_config(shared.template, params, str(out), shared.teacher)
    (trials_dir / f"{trial_id}.json").write_text(json.dumps(raw, indent=1))
    run = parse_config(raw, f"trial {trial_id}")

    def report(metrics: dict[str, Any]) -> None:
        t = time.perf_counter()
        tune.report(metrics)
        timings["report"] += time.perf_counter() - t

    last: dict[str, Any] = {}
    train_start = time.perf_counter()

    def on_epoch(record: dict) -> None:
        metrics = {"epoch": record["epoch"]} | {f"epoch/{k}": v for k, v in record.items() if k != "epoch"}
        metrics["objective"] = math.nan  # scored at the end (Tune wants the key in every result)
        timings["train"] = time.perf_counter() - train_start - timings["report"]
        timings["total"] = time.perf_counter() - start
        if record["epoch"] < shared.epochs:  # a trial ASHA stops keeps its timings so far
            report(metrics | {f"time/{k}_s": v for k, v in timings.items()})
        else:  # the last epoch is reported with the final scores
            last.update(metrics)

    result = train(run, shared.data, progress=False, log=_quiet, on_epoch=on_epoch)
    timings["train"] = time.perf_counter() - train_start - timings["report"]

    t0 = time.perf_counter()
    scorer = CoarseModelScorer(result.model, shared.features, run.train.score_task)
    offline = evaluate_coarse(scorer, shared.eval_set)
    timings["eval"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    keys = shared.keys
    coarse_table = TableScorer.precompute(scorer, keys.user, shared.fine_table.recall_of(keys.user))
    cascade = Cascade(coarse_table, shared.fine_table, shared.sizes)
    outcome = session_outcomes(Simulator(shared.world), cascade, keys)
    online = online_record(shared.control, outcome, shared.objective, shared.alpha)
    np.savez(trials_dir / f"{trial_id}.online.npz", users=keys.user, **outcome)  # for paired comparisons
    timings["online"] = time.perf_counter() - t0

    timings["total"] = time.perf_counter() - start
    final = last | {f"offline/{k}": v for k, v in offline.items()} | online
    final |= {f"time/{k}_s": v for k, v in timings.items()}
    final |= {"checkpoint": str(out), "version": result.version}
    tune.report(final)
