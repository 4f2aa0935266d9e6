"""Logged samples as padded per-request lists for training and offline evaluation.

``load_logs(path)`` reads a folder written by ``simulator.logs.write_logs`` into a
``LogData``: the item feature table as tensors (an ``ItemFeatures`` indexable by item id),
users' logged behaviour sequences, the world config and the samples DataFrame.

A *request* is one (user_id, day, session, page); its *list* holds that request's samples
whose sample type the ``SampleSpace`` includes (exposed samples always are), ordered as in
``samples.parquet``. Lists are sorted by (user_id, day, session, page).

Out-of-scene purchases (sample_type 4, page -1) follow seed 002. With
``SampleSpace(out_of_scene=True)`` each is attached to the user's first request of that day
(same user_id and day, lowest (session, page) among the requests with included samples):

* if the item already appears in that list, the existing entry's purchase label is set to 1
  ("correction" of the original samples; its exposure and click labels are kept) and no
  entry is added;
* otherwise it is appended to the list as a sample of type 4 labelled exposure = click =
  purchase = 1 ("positive examples of the exposure, click and transaction tasks at the
  same time"); repeated purchases of one item by one user on one day add one entry;
* a user-day with no in-scene request gets a list of its own, keyed (user, day, 0, -1).

``iterate_lists`` yields ``ListBatch``es padded to the longest list of each batch; padding
entries hold item 0, sample type 0, zero labels and ``mask`` False. The list structure is
built once per ``SampleSpace`` (numpy sorts, no Python loop over rows) and cached on the
``LogData``; a batch is then a handful of tensor gathers.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from common.rng import Stream, uniform
from policies.batch import ItemFeatures, ListBatch, UserFeatures
from simulator.logs import SAMPLE_SCHEMA, SAMPLE_TYPES
from simulator.world import fine_signal

LOG_FILES = ("samples.parquet", "items.parquet", "users.parquet", "world.json")
SAMPLE_COLUMNS = tuple(SAMPLE_SCHEMA.names)
ITEM_COLUMNS = ("item_id", "category", "brand", "price_bucket", "is_new")
USER_COLUMNS = ("user_id", "history")
REQUEST_KEYS = ("user_id", "day", "session", "page")

EXPOSED, UNEXPOSED, DROPPED, RANDOM, OUT_OF_SCENE = range(len(SAMPLE_TYPES))


@dataclasses.dataclass(frozen=True)
class SampleSpace:
    """Which logged samples a list holds besides the exposed ones (always included)."""

    unexposed: bool = True  # the M coarse survivors the session never showed
    dropped: bool = True  # the L recall items the coarse stage dropped
    random: bool = True  # random negatives from the item pool, if the logs have any
    out_of_scene: bool = False  # out-of-scene purchases as extra positives (see module doc)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if not isinstance(getattr(self, f.name), bool):
                raise TypeError(f"SampleSpace.{f.name} must be a bool, got {getattr(self, f.name)!r}")

    def sample_types(self) -> tuple[int, ...]:
        """Indices into SAMPLE_TYPES of the included types."""
        switches = (True, self.unexposed, self.dropped, self.random, self.out_of_scene)
        return tuple(t for t, on in enumerate(switches) if on)


@dataclasses.dataclass(frozen=True)
class Lists:
    """The requests of a ``SampleSpace`` as lists in CSR form: list r holds entries
    ``offsets[r]:offsets[r + 1]``. Request keys are numpy (R,); entries are tensors (E,)."""

    user_id: np.ndarray  # (R,) int64
    day: np.ndarray  # (R,) int64
    session: np.ndarray  # (R,) int64
    page: np.ndarray  # (R,) int64, -1 for a list of out-of-scene purchases only
    offsets: torch.Tensor  # (R + 1,) long
    row: torch.Tensor  # (E,) long, row of the entry in LogData.samples
    item_id: torch.Tensor  # (E,) long
    sample_type: torch.Tensor  # (E,) long
    exposure: torch.Tensor  # (E,) float
    click: torch.Tensor  # (E,) float
    purchase: torch.Tensor  # (E,) float

    def __len__(self) -> int:
        return len(self.user_id)

    def entries(self, ids: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded entry indices (B, L) of lists ``ids`` and the mask of real entries."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        start = self.offsets[ids]
        length = self.offsets[ids + 1] - start
        width = int(length.max()) if len(ids) else 0
        ar = torch.arange(width)
        mask = ar < length[:, None]  # (B, L)
        return torch.where(mask, start[:, None] + ar, 0), mask


@dataclasses.dataclass(frozen=True)
class LogData:
    """Logged samples with the model-visible features they refer to."""

    samples: pd.DataFrame  # one row per sample, columns SAMPLE_COLUMNS
    items: ItemFeatures  # (N,) indexed by item id
    history: torch.Tensor  # (U, H) long, logged behaviour sequence, indexed by user id
    world: dict  # the world config the logs came from
    history_dwell: torch.Tensor | None = None  # (U, H) float logged dwell seconds, if the world logs them
    _lists: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)
    _teacher_labels: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)
    """``policies.evaluate.teacher_labels``' cache: teacher version -> per-sample (pCTR, pCTCVR)."""

    @classmethod
    def from_frames(
        cls, samples: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame, world: dict, source: str = ""
    ) -> LogData:
        """Validate and convert tables shaped like the Parquet files (``source`` names them
        in errors). Item ids must be 0..N-1 and user ids 0..U-1, each row once."""
        where = f" in {source}" if source else ""
        for name, frame, columns in (
            ("samples.parquet", samples, SAMPLE_COLUMNS),
            ("items.parquet", items, ITEM_COLUMNS),
            ("users.parquet", users, USER_COLUMNS),
        ):
            missing = [c for c in columns if c not in frame.columns]
            if missing:
                raise ValueError(f"{name}{where} lacks columns {missing}")
        if not np.array_equal(items["item_id"].to_numpy(), np.arange(len(items))):
            raise ValueError(f"items.parquet{where}: item_id must be 0..{len(items) - 1} in order")
        if not np.array_equal(users["user_id"].to_numpy(), np.arange(len(users))):
            raise ValueError(f"users.parquet{where}: user_id must be 0..{len(users) - 1} in order")
        samples = samples.reset_index(drop=True)
        bad_items = ~samples["item_id"].between(0, len(items) - 1)
        if bad_items.any():
            raise ValueError(f"samples.parquet{where}: {int(bad_items.sum())} rows have unknown item ids")
        bad_users = ~samples["user_id"].between(0, len(users) - 1)
        if bad_users.any():
            raise ValueError(
                f"samples.parquet{where}: {int(bad_users.sum())} rows have users without history"
            )
        item_features = ItemFeatures(
            item_id=torch.tensor(items["item_id"].to_numpy(np.int64)),
            category=torch.tensor(items["category"].to_numpy(np.int64)),
            brand=torch.tensor(items["brand"].to_numpy(np.int64)),
            price_bucket=torch.tensor(items["price_bucket"].to_numpy(np.int64)),
            is_new=torch.tensor(items["is_new"].to_numpy(np.float32)),
        )
        history = np.stack(users["history"].to_numpy()).astype(np.int64) if len(users) else np.zeros((0, 0))
        dwell = None
        if "dwell" in users.columns and len(users):
            dwell = torch.as_tensor(np.stack(users["dwell"].to_numpy()).astype(np.float32))
        return cls(samples, item_features, torch.as_tensor(history, dtype=torch.long), dict(world), dwell)

    def lists(self, space: SampleSpace) -> Lists:
        """The lists of ``space``, built on first use and cached."""
        if space not in self._lists:
            self._lists[space] = build_lists(self, space)
        return self._lists[space]

    @property
    def user_ids(self) -> np.ndarray:
        """All users with a logged history."""
        return np.arange(self.history.shape[0])


def load_logs(path: str | Path) -> LogData:
    """Read a log folder written by ``simulator.logs.write_logs``."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"log folder {path} does not exist")
    missing = [name for name in LOG_FILES if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(f"log folder {path} lacks {', '.join(missing)}")
    samples = pd.read_parquet(path / "samples.parquet")
    items = pd.read_parquet(path / "items.parquet")
    users = pq.read_table(path / "users.parquet")
    if "history" in users.column_names:
        flat = users.column("history").combine_chunks().flatten().to_numpy()
        history = flat.reshape(users.num_rows, -1) if users.num_rows else flat.reshape(0, 0)
        users_df = pd.DataFrame({"user_id": users.column("user_id").to_numpy(), "history": list(history)})
        if "dwell" in users.column_names:
            dwell = users.column("dwell").combine_chunks().flatten().to_numpy().reshape(history.shape)
            users_df["dwell"] = list(dwell)
    else:
        users_df = users.to_pandas()
    world = json.loads((path / "world.json").read_text())
    return LogData.from_frames(samples, items, users_df, world, source=str(path))


def build_lists(data: LogData, space: SampleSpace) -> Lists:
    """Group the samples ``space`` includes into per-request lists (see the module doc)."""
    s = {c: data.samples[c].to_numpy() for c in (*REQUEST_KEYS, "item_id", "sample_type")}
    kind = s["sample_type"].astype(np.int64)
    keep = np.isin(kind, space.sample_types())
    in_scene = np.flatnonzero(keep & (kind != OUT_OF_SCENE))
    key = {c: s[c].astype(np.int64) for c in REQUEST_KEYS}
    labels = {c: data.samples[c].to_numpy(np.float32).copy() for c in ("exposure", "click", "purchase")}

    # in-scene entries, sorted by request then row
    order = in_scene[np.lexsort(tuple(key[c][in_scene] for c in reversed(REQUEST_KEYS)))]
    new_request = _changes([key[c][order] for c in REQUEST_KEYS])
    list_of = np.cumsum(new_request) - 1  # (E_in,) list index of each in-scene entry
    first = order[new_request]  # a row of each in-scene request

    rows = [order]
    session, page = key["session"].copy(), key["page"].copy()
    tail = np.zeros(len(data.samples), dtype=bool)  # out-of-scene entries sort after a list's own
    if space.out_of_scene:
        oos = np.flatnonzero(kind == OUT_OF_SCENE)
        # the first request of each (user, day) is the first request of that pair in sort order
        n_days = int(key["day"].max()) + 1 if len(key["day"]) else 1
        req_ud = key["user_id"][first] * n_days + key["day"][first]
        oos_ud = key["user_id"][oos] * n_days + key["day"][oos]
        pos = np.searchsorted(req_ud, oos_ud)
        found = pos < len(req_ud)
        found[found] = req_ud[pos[found]] == oos_ud[found]
        target = np.where(found, pos, -1)  # list index, -1: no in-scene request that day
        n_items = data.items.item_id.shape[0]
        # one entry per (user, day, item); -1 targets stay keyed by user-day
        dedup_key = np.where(found, target, -1 - oos_ud) * n_items + s["item_id"][oos]
        _, uniq = np.unique(dedup_key, return_index=True)
        oos, target, found, dedup_key = oos[uniq], target[uniq], found[uniq], dedup_key[uniq]
        entry_key = list_of * n_items + s["item_id"][order]
        corrected = np.isin(entry_key, dedup_key[found])
        labels["purchase"][order[corrected]] = 1.0
        added = ~np.isin(dedup_key, entry_key)
        oos, target, found = oos[added], target[added], found[added]
        session[oos[found]] = key["session"][first[target[found]]]
        page[oos[found]] = key["page"][first[target[found]]]
        for label in labels.values():
            label[oos] = 1.0
        tail[oos] = True
        rows.append(oos)

    rows = np.concatenate(rows)
    rows = rows[
        np.lexsort((rows, tail[rows], page[rows], session[rows], key["day"][rows], key["user_id"][rows]))
    ]
    req_cols = [key["user_id"][rows], key["day"][rows], session[rows], page[rows]]
    starts = np.flatnonzero(_changes(req_cols))
    offsets = np.append(starts, len(rows))

    def t(x: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(x)).to(dtype)

    return Lists(
        user_id=req_cols[0][starts],
        day=req_cols[1][starts],
        session=req_cols[2][starts],
        page=req_cols[3][starts],
        offsets=t(offsets, torch.long),
        row=t(rows, torch.long),
        item_id=t(s["item_id"][rows], torch.long),
        sample_type=t(kind[rows], torch.long),
        exposure=t(labels["exposure"][rows], torch.float32),
        click=t(labels["click"][rows], torch.float32),
        purchase=t(labels["purchase"][rows], torch.float32),
    )


def _changes(columns: Sequence[np.ndarray]) -> np.ndarray:
    """True where a row's key differs from the previous row's (and at row 0)."""
    n = len(columns[0])
    change = np.zeros(n, dtype=bool)
    if n:
        change[0] = True
        for col in columns:
            change[1:] |= col[1:] != col[:-1]
    return change


class Split(enum.StrEnum):
    """How logged requests divide into training and offline evaluation."""

    USER = "user"
    """Held-out users (a hash of (seed, user id)): each user's every day on one side."""
    DAY = "day"
    """A time split, what production teams do: every logged user's days before the last logged
    day train, the last day evaluates (needs >= 2 logged days)."""


@dataclasses.dataclass(frozen=True)
class LogSplit:
    """Which logged requests train a model, which choose its epoch and which evaluate it: those
    of ``train_users`` and ``validation_users`` (before ``eval_day``, for a time split) and
    those of ``eval_users`` (on ``eval_day``)."""

    train_users: np.ndarray  # (U_train,) sorted user ids
    eval_users: np.ndarray  # (U_eval,) sorted user ids
    eval_day: int | None = None  # the time split's evaluation day; None: users split, every day
    validation_users: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0, np.int64))


def split_logs(
    data: LogData, split: Split, held_out_share: float, seed: int, validation_share: float = 0.0
) -> LogSplit:
    """The training / evaluation split of ``data``: by user (``split_by_user`` with
    ``held_out_share`` and ``seed``) or by day (the last logged day evaluates; the share is not
    used), the training users then split by ``split_validation`` with ``validation_share`` and
    ``seed``. A day split of logs with fewer than two days is a ValueError."""
    if Split(split) is Split.USER:
        train, held_out = split_by_user(data, held_out_share, seed)
        eval_day = None
    else:
        day = data.samples["day"].to_numpy(np.int64)
        days = np.unique(day)
        if len(days) < 2:
            raise ValueError(
                f'split = "day" needs logs of at least 2 days, these have {len(days)} '
                f"(day(s) {days.tolist()}); log more days ([data] days) or split by user"
            )
        user = data.samples["user_id"].to_numpy(np.int64)
        eval_day = int(days[-1])
        train, held_out = np.unique(user[day < eval_day]), np.unique(user[day == eval_day])
    fit, validation = split_validation(train, validation_share, seed)
    return LogSplit(fit, held_out, eval_day, validation)


def users_logs(data: LogData, users: np.ndarray) -> LogData:
    """The samples of ``users`` only, with every feature table (items, histories, dwell) kept."""
    return dataclasses.replace(
        data, samples=data.samples[data.samples["user_id"].isin(users)].reset_index(drop=True)
    )


def split_by_user(data: LogData, held_out_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train users, held-out users): a user is held out when a hash of (seed, user id) falls
    below ``held_out_share``, so the split does not depend on user order or the user count."""
    if not 0.0 <= held_out_share <= 1.0:
        raise ValueError(f"held_out_share must be in [0, 1], got {held_out_share}")
    users = data.user_ids
    held_out = uniform(seed, Stream.SPLIT, users) < held_out_share
    return users[~held_out], users[held_out]


def split_validation(train_users: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(users that train, users that choose the epoch) of ``train_users``: a user validates when
    a hash of (seed, user id) on the validation stream falls below ``share``."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"validation share must be in [0, 1), got {share}")
    validates = uniform(seed, Stream.VALIDATION, train_users) < share
    return train_users[~validates], train_users[validates]


def iterate_list_ids(
    data: LogData,
    space: SampleSpace,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None,
    users: np.ndarray | None = None,
    before_day: int | None = None,
) -> Iterator[np.ndarray]:
    """The list indices (into ``data.lists(space)``) of each batch ``iterate_lists`` yields."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if shuffle and generator is None:
        raise ValueError("shuffle=True needs a seeded torch.Generator")
    lists = data.lists(space)
    ids = np.arange(len(lists))
    if users is not None:
        ids = ids[np.isin(lists.user_id, np.asarray(users))]
    if before_day is not None:
        ids = ids[lists.day[ids] < before_day]
    if shuffle:
        ids = ids[torch.randperm(len(ids), generator=generator).numpy()]
    for lo in range(0, len(ids), batch_size):
        yield ids[lo : lo + batch_size]


def iterate_lists(
    data: LogData,
    space: SampleSpace,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None,
    users: np.ndarray | None = None,
    before_day: int | None = None,
) -> Iterator[ListBatch]:
    """Batches of ``batch_size`` request lists (of ``users`` only and of days before
    ``before_day`` only, if given); shuffled by ``generator`` or in sorted request order. A full
    pass holds every included sample once."""
    lists = data.lists(space)
    for ids in iterate_list_ids(data, space, batch_size, shuffle, generator, users, before_day):
        yield make_batch(data, lists, ids)


def fine_signal_of(
    world: dict, users: np.ndarray | torch.Tensor, items: np.ndarray | torch.Tensor
) -> torch.Tensor | None:
    """The fine ranker's pair-wise feature for users (B,) and items (B, L) of a world (its config
    as a dict), or None when the world has none (``fine_signal_std`` off)."""
    if not world.get("fine_signal_std", 0):
        return None
    return torch.from_numpy(fine_signal(int(world["seed"]), np.asarray(users), np.asarray(items)))


def make_batch(data: LogData, lists: Lists, ids: np.ndarray | torch.Tensor) -> ListBatch:
    """The ``ListBatch`` of lists ``ids`` (B,), padded to the longest of them."""
    entry, mask = lists.entries(ids)  # (B, L)
    maskf = mask.float()
    user_id = torch.as_tensor(lists.user_id[np.asarray(ids)], dtype=torch.long)  # (B,)
    items = data.items.index(torch.where(mask, lists.item_id[entry], 0))
    return ListBatch(
        user=UserFeatures(
            user_id=user_id,
            history=data.items.index(data.history[user_id]),
            history_dwell=None if data.history_dwell is None else data.history_dwell[user_id],
        ),
        items=items,
        mask=mask,
        sample_type=torch.where(mask, lists.sample_type[entry], 0),
        exposure=lists.exposure[entry] * maskf,
        click=lists.click[entry] * maskf,
        purchase=lists.purchase[entry] * maskf,
        fine_signal=fine_signal_of(data.world, user_id, items.item_id),
    )
