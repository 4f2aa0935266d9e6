"""The pre-period of CUPED (``[pre_period] source``).

By default the logged day(s) of samples.parquet (the logging cascade's clicks, pages,
impressions, purchases and GMV per user): it costs nothing, is what a real team has, and the
arms' models come from those logs anyway. "simulate" instead runs pre-period days through the
control's cascade (the engine's "pre" shards, ``pre_from_shards``), which correlates better
with the experiment (same cascade family, same metrics, hitrates included) at the price of one
more day of traffic.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from abtest.config import ExperimentConfig, PreSource
from simulator.config import ConfigError, WorldConfig
from simulator.logs import write_logs
from simulator.world import World

PRE_COLUMNS = ("pages", "impressions", "clicks", "purchases", "gmv")
"""Pre-period counts (prefixed ``pre_``); ``pre_clicked`` and, when simulated, the hit counts
are added."""


def pre_period_from_logs(
    config: ExperimentConfig,
    world_config: WorldConfig,
    world: Callable[[], World],
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> pd.DataFrame | None:
    """The logged pre-period table when ``source = "logs"`` (the logs simulated first with
    ``world()`` if the folder is missing), else None (simulated with the traffic)."""
    if config.pre_period.source is not PreSource.LOGS:
        return None
    n = config.traffic.users
    logs = Path(config.pre_period.logs)
    if not logs.is_dir():
        log(f"simulating the pre-period logs of {n:,} users into {logs}")
        write_logs(world(), logs, n_users=n, days=config.pre_period.days, progress=progress)
    return logged_pre_period(logs, world_config, n, config.traffic.first_day)


def logged_pre_period(
    logs: str | Path, world: World | WorldConfig, n_users: int, first_day: int
) -> pd.DataFrame:
    """Per-user pre-period counts of the logging cascade on the logged days before
    ``first_day``: pre_pages, pre_impressions, pre_clicks, pre_purchases (in scene), pre_gmv
    (priced from items.parquet)."""
    folder = Path(logs)
    config = world.config if isinstance(world, World) else world
    stored = json.loads((folder / "world.json").read_text())
    if stored != json.loads(json.dumps(config.to_dict())):
        raise ConfigError(f"logs {folder} come from another world than the experiment's")
    logged_users = pq.read_metadata(folder / "users.parquet").num_rows
    if logged_users < n_users:
        raise ConfigError(
            f"logs {folder} cover {logged_users} users but the experiment has {n_users}: "
            'lower [traffic] users or use [pre_period] source = "simulate"'
        )
    price = pq.read_table(folder / "items.parquet", columns=["price"])["price"].to_numpy()
    table = pq.read_table(
        folder / "samples.parquet",
        columns=["user_id", "day", "session", "page", "item_id", "click", "purchase"],
        filters=[("sample_type", "=", 0), ("day", "<", first_day), ("user_id", "<", n_users)],
    )
    df = table.to_pandas()
    df["gmv"] = np.where(df["purchase"] > 0, price[df["item_id"].to_numpy()], 0.0)
    grouped = df.groupby("user_id")
    pages = df[["user_id", "day", "session", "page"]].drop_duplicates().groupby("user_id").size()
    out = pd.DataFrame(
        {
            "pre_pages": pages,
            "pre_impressions": grouped.size(),
            "pre_clicks": grouped["click"].sum(),
            "pre_purchases": grouped["purchase"].sum(),
            "pre_gmv": grouped["gmv"].sum(),
        }
    )
    out = out.reindex(np.arange(n_users), fill_value=0).astype(np.float64)
    out.index.name = "user"
    return out.reset_index()


def pre_from_shards(pre_days: pd.DataFrame, n_users: int) -> pd.DataFrame:
    """Per-user sums of the simulated pre-period days (``pre_`` + PRE_COLUMNS and the hit counts)."""
    cols = [*PRE_COLUMNS, "global_hits", "global_purchases", "inscene_hits", "inscene_purchases"]
    sums = pre_days.groupby("user")[cols].sum().reindex(np.arange(n_users), fill_value=0)
    sums.columns = [f"pre_{c}" for c in cols]
    sums.index.name = "user"
    return sums.reset_index()
