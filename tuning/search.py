"""Run a search: shared inputs built once, Ray Tune trials, the results table.

    from tuning.config import load_config
    from tuning.search import run_search

    outcome = run_search(load_config("configs/tune_default.toml"), "runs/tune/default")
    outcome.table          # one row per trial: settings, offline and online metrics, timings

Before the search (``prepare``), once: the logs (``ensure_logs``), the fine ranker and the
control's checkpoint (``ensure_trained``), the world, the held-out evaluation set, the online
A/B's users and their recall sets, the fine scores of those recall sets and the control's
online outcomes. They go into the Ray object store once (``Shared``); trials read them from
there.

The search is a Ray Tune ``Tuner``: the ``tuning.trial.run_trial`` function with
``[trial] cpus`` CPUs per trial, at most ``[search] max_concurrent`` at once, actors reused,
the searcher (Optuna TPE or random, seeded), ASHA on epochs (or FIFO), failed trials retried
``max_failures`` times and then reported as failed while the search goes on, an optional time
budget. Tune's state lives in ``<run>/tune``; ``resume=True`` restores an interrupted search
there (``Tuner.restore``): finished trials are kept, unfinished and failed ones rerun from
scratch (trials are deterministic, so a rerun gives what the interrupted one would have).

Determinism: every trial is seeded (the base config's [train] seed) and runs one torch thread
per CPU, so equal settings give equal results. The random searcher's configs depend on the
seed only. Optuna's are seeded too but, past its random start-up trials, depend on which
results have arrived, and ASHA's stops depend on the order trials reach a rung: with
``max_concurrent = 1`` both are reproducible, with 2 they may vary with timing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from common.ray_env import init_ray
from policies.cascade import Cascade, CascadeSizes
from policies.checkpoint import load_checkpoint
from policies.custom import is_custom_spec
from policies.data import load_logs, split_logs, users_logs
from policies.evaluate import ALL_SAMPLES, EvalSet, evaluate_coarse, teacher_labels
from policies.features import FeatureStore
from policies.rankers import load_scorer
from policies.train import ensure_checkpoint, ensure_logs, parse_config
from simulator.config import ConfigError, load_world_config
from simulator.recall import SessionKeys
from simulator.session import Simulator
from simulator.world import World
from tuning.config import Scheduler, SearchConfig, Searcher, native, template_raw_config
from tuning.online import TableScorer, session_outcomes
from tuning.trial import Shared, SharedHandle, run_trial

OBJECT_STORE_BYTES = 1024 * 2**20
"""Object store of a Ray started here: it holds one search's shared inputs (~0.5 GB for the
default world)."""


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch with ``n`` intra-op threads (trials use one per CPU: the control is trained
    the same way, so a trial with the base settings reproduces it exactly)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def base_control_path(template: dict[str, Any], run_dir: Path) -> Path:
    """Where a "base" control's checkpoint lives: beside the run folders, named by a hash of
    its training config, so that searches from the same base (and reruns with --force)
    share it instead of training it again."""
    config = json.dumps({k: v for k, v in template.items() if k != "out"}, sort_keys=True)
    return run_dir.parent / "_controls" / f"{hashlib.sha256(config.encode()).hexdigest()[:16]}.pt"


@dataclasses.dataclass
class Prepared:
    shared: Shared
    fine: str  # fine checkpoint
    control: str  # control checkpoint
    control_offline: dict[str, float]  # the control's offline metrics (the reference row)
    timings: dict[str, float]


def prepare(
    config: SearchConfig, run_dir: Path, progress: bool = False, log: Callable[[str], None] = print
) -> Prepared:
    """Everything the trials share, built once (see the module doc)."""
    timings: dict[str, float] = {}
    run_dir = run_dir.resolve()
    trials_dir = run_dir / "trials"
    trials_dir.mkdir(parents=True, exist_ok=True)
    threads = max(1, int(config.trial.cpus))

    t0 = time.perf_counter()
    fine = ensure_checkpoint(config.control.fine, "fine", progress, log)
    template = template_raw_config(config, teacher=fine)
    base = parse_config({**template, "out": str(trials_dir / "base.pt")}, "[trial] base")
    logs = ensure_logs(base.data, progress=progress).resolve()
    template["data"]["logs"] = str(logs)
    if config.control.coarse == "base":
        control_raw = {**template, "out": str(base_control_path(template, run_dir))}
        with torch_threads(threads):
            control = ensure_checkpoint(control_raw, "coarse", progress, log)
    elif is_custom_spec(config.control.coarse):
        control = config.control.coarse
    else:
        control = ensure_checkpoint(config.control.coarse, "coarse", progress, log)
    timings["models"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    data = load_logs(logs)
    world = World(load_world_config(base.data.world))
    features = FeatureStore.from_world(world)
    timings["world_and_logs"] = time.perf_counter() - t0

    if base.distill.enabled or any(d.key == "distill.teacher" for d in config.space):
        t0 = time.perf_counter()  # the soft labels of every sample, once: distilling trials gather them
        teacher = load_checkpoint(fine, kind="fine")
        with torch_threads(threads):
            teacher_labels(data, ALL_SAMPLES, teacher.model, teacher.version)
        timings["teacher_labels"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    sizes = CascadeSizes(coarse=config.control.coarse_size, page=world.config.page_size)
    fine_scorer = load_scorer(fine, world, features, "fine")
    control_scorer = load_scorer(control, world, features, "coarse")
    # the trials' own split ([data] split): held-out users, or every user's last logged day
    split = split_logs(data, base.data.split, base.data.held_out_share, base.data.split_seed)
    held_out = split.eval_users
    if len(held_out) < config.objective.users:
        raise ConfigError(
            f"[objective] users = {config.objective.users} but the logs hold only {len(held_out)} "
            "held-out users; log more users or lower it"
        )
    held_data = users_logs(data, held_out)  # eval needs only these
    with torch_threads(threads):
        eval_set = EvalSet.build(
            world,
            held_data,
            held_out,
            fine_scorer,
            sizes,
            config.offline.sessions,
            config.offline.lists,
            day=split.eval_day,
        )
    eval_set = dataclasses.replace(
        eval_set,
        teacher=TableScorer(
            eval_set.keys.user, eval_set.recall, eval_set.teacher_recall_scores, fine_scorer.version
        ),
    )
    timings["eval_set"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    sim = Simulator(world)
    day = int(data.samples["day"].max()) + 1  # a fresh day: no logged session
    keys = SessionKeys.of(held_out[: config.objective.users], day=day)
    recall = sim.recall(keys).items
    with torch_threads(threads):
        fine_table = TableScorer.precompute(fine_scorer, keys.user, recall, day)
        control_table = TableScorer.precompute(control_scorer, keys.user, recall, day)
    timings["fine_table"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    control_outcome = session_outcomes(sim, Cascade(control_table, fine_table, sizes), keys)
    timings["control_online"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch_threads(threads):
        control_offline = evaluate_coarse(control_scorer, eval_set)
    timings["control_offline"] = time.perf_counter() - t0

    shared = Shared(
        world=world,
        features=features,
        data=data,
        eval_set=eval_set,
        keys=keys,
        fine_table=fine_table,
        control=control_outcome,
        sizes=sizes,
        template=template,
        teacher=fine,
        trials_dir=str(trials_dir),
        epochs=config.trial.epochs,
        threads=threads,
        objective=config.objective.metric,
        alpha=config.objective.alpha,
    )
    return Prepared(shared, fine, control, control_offline, timings)


def _searcher(config: SearchConfig) -> Any:
    from ray.tune.search.basic_variant import BasicVariantGenerator  # noqa: PLC0415

    if config.search.searcher is Searcher.RANDOM:
        return BasicVariantGenerator(
            random_state=config.search.seed, max_concurrent=config.search.max_concurrent
        )
    from ray.tune.search.optuna import OptunaSearch  # noqa: PLC0415

    class FinalObjectiveOptuna(OptunaSearch):
        """Optuna sees each trial's objective once, with its last result: per-epoch results
        carry it as NaN (Tune insists every result has the searcher's metric); a trial ASHA
        stops has no score and counts as pruned."""

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if math.isfinite(result.get(self.metric, math.nan)):
                super().on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            if result and not math.isfinite(result.get(self.metric, math.nan)):
                result = {k: v for k, v in result.items() if k != self.metric}  # no score: pruned
            super().on_trial_complete(trial_id, result, error)

    return FinalObjectiveOptuna(metric="objective", mode="max", seed=config.search.seed)


def _scheduler(config: SearchConfig) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler  # noqa: PLC0415

    if config.scheduler.kind is Scheduler.FIFO:
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="training_iteration",  # one result per epoch
        metric=config.scheduler.metric,
        mode="max",
        max_t=config.trial.epochs,
        grace_period=config.scheduler.grace_period,
        reduction_factor=config.scheduler.reduction_factor,
    )


def _trial_dirname(trial: Any) -> str:
    """<start index>_<trial id>: Tune's experiment tag starts with the trial's counter."""
    head = str(trial.experiment_tag).split("_", 1)[0]
    return f"{int(head):03d}_{trial.trial_id}" if head.isdigit() else trial.trial_id


def _progress_callback(config: SearchConfig) -> Any:
    from ray import tune  # noqa: PLC0415

    class Progress(tune.Callback):
        """One line per finished, stopped, failed or retried trial."""

        def __init__(self, total: int, objective: str) -> None:
            self.total, self.objective, self.done = total, objective, 0

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.done += 1
            r = trial.last_result or {}
            head = f"[{self.done}/{self.total}] trial {trial.trial_id}"
            if math.isfinite(r.get("objective", math.nan)):
                print(
                    f"{head}: {self.objective} lift {r['objective']:+.2%} "
                    f"[{r['objective_lo']:+.2%}, {r['objective_hi']:+.2%}] in {r['time/total_s']:.0f} s",
                    flush=True,
                )
            else:
                print(f"{head}: stopped after epoch {r.get('training_iteration', 0)}", flush=True)

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            print(f"trial {trial.trial_id} failed (failure {trial.num_failures}); retrying", flush=True)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.done += 1
            print(
                f"[{self.done}/{self.total}] trial {trial.trial_id} FAILED after "
                f"{trial.num_failures} attempt(s); the search goes on",
                flush=True,
            )

    return Progress(config.search.num_samples, config.objective.metric)


def build_tuner(
    config: SearchConfig, run_dir: Path, handle: SharedHandle, resume: bool, callbacks: Sequence[Any] = ()
) -> Any:
    """A new Tuner, or the interrupted one under ``run_dir/tune`` restored."""
    from ray import tune  # noqa: PLC0415

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, handle=handle), {"cpu": config.trial.cpus}
    )
    experiment = run_dir.resolve() / "tune"
    if resume:
        if not tune.Tuner.can_restore(str(experiment)):
            raise FileNotFoundError(f"no search to resume in {experiment}")
        return tune.Tuner.restore(str(experiment), trainable, resume_unfinished=True, restart_errored=True)
    return tune.Tuner(
        trainable,
        param_space=config.param_space,
        tune_config=tune.TuneConfig(
            search_alg=_searcher(config),
            scheduler=_scheduler(config),
            num_samples=config.search.num_samples,
            # the random searcher limits its own concurrency (Tune ignores this for it)
            max_concurrent_trials=config.search.max_concurrent
            if config.search.searcher is Searcher.OPTUNA
            else None,
            reuse_actors=True,
            time_budget_s=config.search.time_budget_s or None,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=str(run_dir.resolve()),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=config.search.max_failures),
            callbacks=[_progress_callback(config), *callbacks],
        ),
    )


@dataclasses.dataclass
class SearchOutcome:
    """A finished (or interrupted) search."""

    table: pd.DataFrame  # one row per trial
    epochs: pd.DataFrame  # one row per trial and epoch
    control_offline: dict[str, float]
    fine: str
    control: str
    interrupted: bool
    timings: dict[str, float]  # setup steps, "search" (Tune wall time), "total"


def run_search(
    config: SearchConfig,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = False,
    log: Callable[[str], None] = print,
    callbacks: Sequence[Any] = (),
) -> SearchOutcome:
    """Prepare the shared inputs, run (or resume) the Tune search and collect its table.
    ``callbacks`` are extra Tune callbacks (they must pickle: Tune stores them for resume)."""
    start = time.perf_counter()
    run_dir = Path(run_dir).resolve()
    t0 = time.perf_counter()
    started_ray = init_ray(object_store_memory=OBJECT_STORE_BYTES)
    import ray  # noqa: PLC0415

    ray_start = time.perf_counter() - t0
    try:
        log(f"preparing the shared inputs of search {config.name!r}...")
        prepared = prepare(config, run_dir, progress=progress, log=log)
        timings = {"ray_init": ray_start, **prepared.timings}
        t0 = time.perf_counter()
        handle = SharedHandle(ray.put(prepared.shared))
        timings["object_store_put"] = time.perf_counter() - t0
        log(
            f"setup done in {time.perf_counter() - start:.0f} s; running {config.search.num_samples} trials "
            f"({config.search.searcher}, {config.scheduler.kind}, {config.search.max_concurrent} at a time)"
        )
        t0 = time.perf_counter()
        tuner = build_tuner(config, run_dir, handle, resume, callbacks)
        grid = tuner.fit()
        timings["search"] = time.perf_counter() - t0
    finally:
        if started_ray:
            ray.shutdown()
    table, epochs = results_table(grid, run_dir)
    budget = config.search.time_budget_s
    unfinished = len(table) < config.search.num_samples and not (budget and timings["search"] >= budget)
    interrupted = unfinished or bool((table["status"] == "running").any())
    timings["total"] = time.perf_counter() - start
    return SearchOutcome(
        table, epochs, prepared.control_offline, prepared.fine, prepared.control, interrupted, timings
    )


def _attempts(trials_dir: Path) -> dict[str, int]:
    path = trials_dir / "attempts.jsonl"
    counts: dict[str, int] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                trial_id = json.loads(line)["trial_id"]
                counts[trial_id] = counts.get(trial_id, 0) + 1
    return counts


def results_table(grid: Any, run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per trial, one row per trial and epoch) from a Tune ``ResultGrid``.

    Trial columns: ``trial_id``, ``status`` ("finished": scored online; "stopped": ended
    early by ASHA or the time budget; "failed"; "running": interrupted), ``attempts``,
    ``epochs`` (reported), the searched settings (``model.dim``, ...), the last ``epoch/*``,
    ``offline/*``, ``online/*``, ``objective`` (with ``objective_lo``/``_hi``), ``time/*``,
    ``checkpoint`` and ``error``."""
    from ray.tune import ExperimentAnalysis  # noqa: PLC0415

    attempts = _attempts(run_dir / "trials")
    terminated = {
        t.trial_id: t.status == "TERMINATED" for t in ExperimentAnalysis(str(run_dir / "tune")).trials
    }
    rows, epoch_frames = [], []
    for result in grid:
        index, _, trial_id = Path(result.path).name.partition("_")
        metrics = dict(result.metrics or {})
        objective = metrics.get("objective", math.nan)
        if result.error is not None:
            status = "failed"
        elif isinstance(objective, float) and math.isfinite(objective):
            status = "finished"
        elif metrics.get("done") or terminated.get(trial_id, False):
            status = "stopped"
        else:
            status = "running"
        row: dict[str, Any] = {
            "index": int(index) if index.isdigit() else -1,
            "trial_id": trial_id,
            "status": status,
            "attempts": attempts.get(trial_id, 0),
            "epochs": int(metrics.get("training_iteration", 0) or 0),
        }
        row |= {key: native(value) for key, value in sorted((result.config or {}).items())}
        row |= {
            k: v
            for k, v in metrics.items()
            if k.startswith(("epoch/", "offline/", "online/", "objective", "time/"))
            or k in ("checkpoint", "version")
        }
        row["error"] = "" if result.error is None else str(result.error).strip().splitlines()[-1][:300]
        rows.append(row)
        frame = result.metrics_dataframe
        if frame is not None and len(frame):
            cols = [c for c in frame.columns if c.startswith("epoch/") or c == "training_iteration"]
            epoch_frames.append(frame[cols].assign(trial_id=trial_id))
    table = pd.DataFrame(rows)
    if len(table):
        table = table.sort_values(["index", "trial_id"], kind="stable").reset_index(drop=True)
    epochs = pd.concat(epoch_frames, ignore_index=True) if epoch_frames else pd.DataFrame()
    if len(epochs):
        epochs = epochs.rename(columns={"training_iteration": "epoch"})
        epochs = epochs[["trial_id", "epoch", *[c for c in epochs.columns if c.startswith("epoch/")]]]
    return table, epochs
