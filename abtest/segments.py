"""The segment labels of an experiment's users, computed once per experiment by the engine.

``experiment_segments`` labels users 0..users-1 with ``simulator.segments.user_segments``:

- ``activity`` from the logged days before ``[traffic] first_day`` of the ``[pre_period] logs``
  folder when ``source = "logs"`` (the experiment's logs, which the models usually come from);
  with another pre-period source there are no activity labels;
- ``mindful`` and ``arrival_day`` from the world;
- ``warm``: "warm" if the user's logs trained *every* trained model the arms run (coarse and
  fine checkpoints: ``trained_users``), "cold" otherwise - held out of at least one of them,
  unlogged, or arrived after the logged days. Models trained on different users thus leave as
  warm only the users they all learnt from. Without a trained model (baselines, your own
  rankers) there is no warm / cold breakdown, and ``unavailable`` says so.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from abtest.arms import ArmSpec
from abtest.config import ExperimentConfig, PreSource
from common.rng import Stream, uniform
from policies.checkpoint import load_checkpoint
from policies.data import split_validation
from simulator.config import ConfigError
from simulator.segments import user_segments
from simulator.world import World


def checkpoint_training_users(path: str | Path) -> np.ndarray | None:
    """The users whose logs trained the checkpoint at ``path``, sorted: users with samples in
    its logs folder and not held out (``policies.data.split_by_user``'s rule: a hash of
    (split_seed, user id) below held_out_share), or with a time split (``[data] split = "day"``)
    the users with samples before the last logged day; None when the checkpoint records no
    training run (not written by ``policies.train``). Users that chose the epoch
    (``[data] validation_share``) did not train and are not among them."""
    path = Path(path)
    meta = load_checkpoint(path).metadata
    run = meta.get("run")
    if not isinstance(run, dict) or "held_out_share" not in meta:
        return None
    logs = path.parent / run["data"]["logs"]  # portable: relative to the checkpoint's folder
    table = pq.read_table(logs / "samples.parquet", columns=["user_id", "day"])
    logged, day = (table[c].to_numpy().astype(np.int64) for c in ("user_id", "day"))
    seed = int(meta["split_seed"])
    if run["data"].get("split", "user") == "day":  # policies.data.split_logs: days before the last train
        users = np.unique(logged[day < day.max()])
    else:
        users = np.unique(logged)
        users = users[uniform(seed, Stream.SPLIT, users) >= float(meta["held_out_share"])]
    return split_validation(users, float(meta.get("validation_share", 0.0)), seed)[0]


def trained_users(arms: Mapping[str, ArmSpec]) -> tuple[np.ndarray | None, str]:
    """(the users whose logs trained every trained model of ``arms``, why None): None when no
    arm runs a trained model or a checkpoint records no training run."""
    checkpoints = sorted({s for arm in arms.values() for s in (arm.coarse, arm.fine) if s.endswith(".pt")})
    if not checkpoints:
        return None, "no arm runs a trained model (baselines or your own rankers): no warm / cold users"
    warm = None
    for path in checkpoints:
        users = checkpoint_training_users(path)
        if users is None:
            return None, f"checkpoint {path} records no training run: its training users are unknown"
        warm = users if warm is None else np.intersect1d(warm, users)
    return warm, ""


def logged_pages(logs: str | Path, world: World, first_day: int) -> pd.DataFrame:
    """The exposed samples (user_id, day, session, page) of the logged days before
    ``first_day``; logs of another world: ConfigError."""
    folder = Path(logs)
    stored = json.loads((folder / "world.json").read_text())
    if stored != json.loads(json.dumps(world.config.to_dict())):
        raise ConfigError(f"logs {folder} come from another world than the experiment's")
    table = pq.read_table(
        folder / "samples.parquet",
        columns=["user_id", "day", "session", "page"],
        filters=[("sample_type", "=", 0), ("day", "<", first_day)],
    )
    return table.to_pandas()


def experiment_segments(
    config: ExperimentConfig, world: Callable[[], World], arms: Mapping[str, ArmSpec]
) -> tuple[pd.DataFrame, dict[str, str]]:
    """(labels of users 0..users-1 in the configured dimensions, one row per user with column
    ``user``; why a configured dimension is unavailable). ``world`` builds the world on call."""
    dimensions = config.segments.dimensions
    users = np.arange(config.traffic.users, dtype=np.int64)
    if not dimensions:
        return pd.DataFrame({"user": users}), {}
    unavailable = {}
    trained = None
    if "warm" in dimensions:
        trained, why = trained_users(arms)
        if trained is None:
            unavailable["warm"] = why
    built = world()
    samples = None
    if config.pre_period.source is PreSource.LOGS:
        samples = logged_pages(config.pre_period.logs, built, config.traffic.first_day)
    elif "activity" in dimensions:
        unavailable["activity"] = f'needs [pre_period] source = "logs", not "{config.pre_period.source}"'
    labels = user_segments(built, users, samples, trained).rename(columns={"user_id": "user"})
    kept = [d for d in dimensions if d in labels.columns and d not in unavailable]
    return labels[["user", *kept]], unavailable
