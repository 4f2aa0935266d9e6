"""Day-0 logs from a logging cascade, with seed 002's sample construction, as Parquet.

Logs only exist for what the logging cascade did (sample-space bias): per request the
exposed items carry labels, M unexposed coarse survivors and L recall items dropped by the
coarse stage are sampled as negatives, optional random negatives come from the pool, and
each user's out-of-scene purchases of the day are added as extra positives.

Schema of ``samples.parquet`` (one row per sample):

| column      | type  | meaning                                                           |
|-------------|-------|-------------------------------------------------------------------|
| user_id     | int64 | user                                                              |
| day         | int32 | day index                                                         |
| session     | int32 | session index within the day                                      |
| page        | int16 | page (request) index within the session; -1 for out-of-scene rows |
| item_id     | int64 | item                                                              |
| sample_type | int8  | index into SAMPLE_TYPES                                           |
| position    | int16 | position on the page for exposed rows, else -1                    |
| channel     | int8  | recall channel (index into recall.CHANNELS), -1 if not recalled   |
| exposure    | int8  | 1 if shown                                                        |
| click       | int8  | 1 if clicked                                                      |
| purchase    | int8  | 1 if bought (in scene for exposed rows, out of scene for type 4)  |

``items.parquet`` holds the item features a model may see (`World.item_table`);
``users.parquet`` holds each user's logged behaviour sequence (accidental clicks included)
and, when ``history_dwell_separation > 0``, the logged dwell seconds of each behaviour
(``dwell``); users who arrive on a later day (``new_user_share_per_day``) have no samples
before their day;
``world.json`` holds the world config the logs came from.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from common.rng import Stream, gumbel, uniform
from simulator.oracle import expected_value
from simulator.recall import SessionKeys
from simulator.session import SessionBatch, Simulator, page_order, page_slots
from simulator.world import World

SAMPLE_TYPES = ("exposed", "unexposed", "dropped", "random", "out_of_scene")

SAMPLE_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("day", pa.int32()),
        ("session", pa.int32()),
        ("page", pa.int16()),
        ("item_id", pa.int64()),
        ("sample_type", pa.int8()),
        ("position", pa.int16()),
        ("channel", pa.int8()),
        ("exposure", pa.int8()),
        ("click", pa.int8()),
        ("purchase", pa.int8()),
    ]
)

_MAX_OUT_OF_SCENE = 20


class LoggingCascade:
    """The production cascade that produced the logs: a popularity coarse stage and a
    fine stage that sees the true click logit through noise."""

    def __init__(self, world: World) -> None:
        self.world = world

    def rank(self, batch: SessionBatch) -> tuple[np.ndarray, np.ndarray]:
        """Returns (coarse survivors, fine order): both (B, C) recall slots; the fine order
        lists the survivors best first, and page p shows its entries pK..pK+K-1."""
        w, c = self.world, self.world.config
        items = batch.recall.items
        cols = batch.keys.column()
        coarse_score = np.log(w.item_popularity[items]) + c.logging_coarse_noise * gumbel(
            c.seed, Stream.LOGGING_COARSE, *cols, items
        )
        coarse = page_order(coarse_score, c.logging_coarse_size)
        survivors = np.take_along_axis(items, coarse, axis=1)
        fine_score = w.click_logits(
            batch.keys.user, survivors, batch.keys.day
        ) + c.logging_fine_noise * gumbel(c.seed, Stream.LOGGING_FINE, *cols, survivors)
        return coarse, np.take_along_axis(coarse, page_order(fine_score, coarse.shape[1]), axis=1)


def out_of_scene_purchases(world: World, users: np.ndarray, day: int) -> tuple[np.ndarray, np.ndarray]:
    """Purchases each user makes outside the scene on ``day``: (users, items) row pairs.

    The count is Poisson(out_of_scene_rate); each item is a softmax draw, by true purchase
    propensity, among candidates of a category drawn from the user's category preference.
    """
    c = world.config
    users = np.asarray(users, dtype=np.int64)
    k = np.arange(_MAX_OUT_OF_SCENE + 1)
    log_pmf = (
        k * np.log(max(c.out_of_scene_rate, 1e-300))
        - c.out_of_scene_rate
        - np.cumsum(np.log(np.maximum(k, 1)))
    )
    cdf = np.cumsum(np.exp(log_pmf))
    u = uniform(c.seed, Stream.OUT_OF_SCENE_COUNT, users, day)
    counts = np.minimum(np.searchsorted(cdf, u, side="right"), _MAX_OUT_OF_SCENE)
    buyer = np.repeat(users, counts)
    if buyer.size == 0:
        return buyer, buyer.copy()
    j = np.arange(buyer.size) - np.repeat(np.cumsum(counts) - counts, counts)  # purchase index
    u_cat = uniform(c.seed, Stream.OUT_OF_SCENE_CATEGORY, buyer, day, j)
    cats = world.sample_categories(buyer, u_cat[:, None])[:, 0]
    m = np.arange(c.out_of_scene_candidates)
    cols = (buyer[:, None], day, j[:, None])
    u_item = uniform(c.seed, Stream.OUT_OF_SCENE_ITEM, *cols, m)
    size = world.cat_end[cats] - world.cat_start[cats]
    candidates = world.cat_start[cats][:, None] + (u_item * size[:, None]).astype(np.int64)
    utility = np.log(expected_value(world, buyer, candidates, "purchases", day)) + gumbel(
        c.seed, Stream.OUT_OF_SCENE_ITEM, *cols, m + c.out_of_scene_candidates
    )
    if world.items_arrive:  # items that have not arrived yet cannot be bought
        utility = np.where(world.item_arrival_day[candidates] <= day, utility, -np.inf)
    return buyer, np.take_along_axis(candidates, utility.argmax(1)[:, None], 1)[:, 0]


def _sample_masked(
    seed: int, stream: Stream, cols: tuple, allowed: np.ndarray, n: int, slots: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Up to n uniformly random allowed positions per row, without replacement; the draw of a
    position is keyed by its recall slot (``slots[b, j]`` of column j, default j). Returns
    (positions (B, n), ok (B, n)) where ok is False past a row's allowed count."""
    if n == 0:
        empty = np.zeros((allowed.shape[0], 0), dtype=np.int64)
        return empty, empty.astype(bool)
    slots = np.arange(allowed.shape[1]) if slots is None else slots
    score = np.where(allowed, uniform(seed, stream, *cols, slots), -1.0)
    pos = page_order(score, n)
    return pos, np.take_along_axis(score, pos, axis=1) >= 0


def _negatives(
    seed: int, stream: Stream, cols: tuple, allowed: np.ndarray, n: int, rows: np.ndarray, slots=None
) -> tuple[np.ndarray, np.ndarray]:
    """``_sample_masked`` computed for ``rows`` only (the others: none allowed); with ``slots``
    (B, C) the candidates are those recall slots, and positions are recall slots."""
    pos = np.zeros((allowed.shape[0], n), dtype=np.int64)
    ok = np.zeros((allowed.shape[0], n), dtype=bool)
    sub = slots[rows] if slots is not None else None
    p, k = _sample_masked(seed, stream, tuple(c[rows] for c in cols[:-1]) + cols[-1:], allowed[rows], n, sub)
    pos[rows] = p if sub is None else np.take_along_axis(sub, p, axis=1)
    ok[rows] = k
    return pos, ok


def _request_rows(batch: SessionBatch, page: int, **columns: np.ndarray) -> dict[str, np.ndarray]:
    """Flatten (B, n) column arrays over the rows where ``columns['keep']`` is set."""
    keep = columns.pop("keep")
    rows = np.nonzero(keep)[0]
    out = {
        "user_id": batch.keys.user[rows],
        "day": batch.keys.day[rows],
        "session": batch.keys.session[rows],
        "page": np.full(rows.size, page),
    }
    out.update({name: (np.broadcast_to(v, keep.shape)[keep]) for name, v in columns.items()})
    return out


def simulate_logs(world: World, keys: SessionKeys) -> dict[str, np.ndarray]:
    """Run the logging cascade on sessions ``keys`` and build their samples (columns)."""
    c = world.config
    sim = Simulator(world)
    cascade = LoggingCascade(world)
    batch = sim.start(keys)
    coarse, fine_order = cascade.rank(batch)
    in_coarse = np.zeros(batch.shown.shape, dtype=bool)
    np.put_along_axis(in_coarse, coarse, True, axis=1)
    chunks = []
    rows_b = np.arange(len(keys))[:, None]
    viewed_pages = []  # viewed[b] per page
    # the logging feed ends when its coarse survivors are exhausted
    n_pages = min(c.max_pages, -(-coarse.shape[1] // c.page_size))
    for page in range(n_pages):
        if not batch.active.any():
            break
        slots = page_slots(fine_order, page, c.page_size)
        out = sim.show(batch, slots)
        viewed_pages.append(out.viewed)
        chunks.append(
            _request_rows(
                batch,
                page,
                keep=out.items >= 0,
                item_id=out.items,
                sample_type=0,
                position=np.arange(c.page_size),
                channel=batch.recall.channels[rows_b, np.maximum(slots, 0)],
                exposure=1,
                click=out.clicks,
                purchase=out.purchases,
            )
        )
    # negatives are drawn once the sessions are over, so an "unexposed" survivor is one the
    # session never showed, not merely one not shown yet
    # (drawn for the rows that viewed the page only: the others keep none; an unexposed
    # survivor is drawn among the coarse slots, with the key of its recall slot)
    unexposed = np.take_along_axis(~batch.shown, coarse, axis=1)
    for page, viewed in enumerate(viewed_pages):
        cols = (*batch.keys.column(), page)
        rows = np.flatnonzero(viewed)
        for stream, allowed, n, sample_type, slots in (
            (Stream.SAMPLE_UNEXPOSED, unexposed, c.sample_unexposed, 1, coarse),
            (Stream.SAMPLE_DROPPED, ~in_coarse, c.sample_dropped, 2, None),
        ):
            pos, ok = _negatives(c.seed, stream, cols, allowed, n, rows, slots)
            chunks.append(
                _request_rows(
                    batch,
                    page,
                    keep=ok & viewed[:, None],
                    item_id=np.take_along_axis(batch.recall.items, pos, 1),
                    sample_type=sample_type,
                    position=-1,
                    channel=np.take_along_axis(batch.recall.channels, pos, 1),
                    exposure=0,
                    click=0,
                    purchase=0,
                )
            )
        if c.sample_random:
            u = uniform(c.seed, Stream.SAMPLE_RANDOM, *cols, np.arange(c.sample_random))
            chunks.append(
                _request_rows(
                    batch,
                    page,
                    keep=np.broadcast_to(viewed[:, None], u.shape),
                    item_id=(u * c.n_items).astype(np.int64),
                    sample_type=3,
                    position=-1,
                    channel=-1,
                    exposure=0,
                    click=0,
                    purchase=0,
                )
            )
    for day in np.unique(keys.day):
        first = (keys.day == day) & (keys.session == 0)
        buyer, item = out_of_scene_purchases(world, keys.user[first], int(day))
        n = buyer.size
        chunks.append(
            {
                "user_id": buyer,
                "day": np.full(n, day),
                "session": np.zeros(n),
                "page": np.full(n, -1),
                "item_id": item,
                "sample_type": np.full(n, 4),
                "position": np.full(n, -1),
                "channel": np.full(n, -1),
                "exposure": np.zeros(n),
                "click": np.zeros(n),
                "purchase": np.ones(n),
            }
        )
    return {
        f.name: np.concatenate([ch[f.name] for ch in chunks]).astype(f.type.to_pandas_dtype())
        for f in SAMPLE_SCHEMA
    }


def write_logs(
    world: World,
    out_dir: str | Path,
    n_users: int | None = None,
    days: int = 1,
    batch_size: int = 512,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Simulate day-0.. logs for the first ``n_users`` users (default: all) and write the
    Parquet files atomically: a half-written folder never appears under ``out_dir``."""
    c = world.config
    out = Path(out_dir)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass force=True (--force) to overwrite it")
    n_users = c.n_users if n_users is None else n_users
    if not 1 <= n_users <= c.n_users:
        raise ValueError(f"n_users must be in [1, {c.n_users}], got {n_users}")
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with pq.ParquetWriter(tmp / "samples.parquet", SAMPLE_SCHEMA) as writer:
            bar = tqdm(total=n_users * days, unit="session", desc="logging", disable=not progress)
            for day in range(days):
                for lo in range(0, n_users, batch_size):
                    users = np.arange(lo, min(lo + batch_size, n_users))
                    bar.update(len(users))
                    users = users[world.user_arrival_day[users] <= day]  # no logs before arrival
                    if users.size:
                        cols = simulate_logs(world, SessionKeys.of(users, day=day))
                        writer.write_table(pa.table(cols, schema=SAMPLE_SCHEMA))
            bar.close()
        pq.write_table(pa.table(world.item_table()), tmp / "items.parquet")
        history = pa.FixedSizeListArray.from_arrays(pa.array(world.history[:n_users].ravel()), c.history_len)
        user_columns = {"user_id": np.arange(n_users), "history": history}
        if world.history_dwell is not None:
            user_columns["dwell"] = pa.FixedSizeListArray.from_arrays(
                pa.array(world.history_dwell[:n_users].ravel()), c.history_len
            )
        pq.write_table(pa.table(user_columns), tmp / "users.parquet")
        (tmp / "world.json").write_text(json.dumps(c.to_dict(), indent=2))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
