"""Logging-cascade logs: seed 002's sample construction, labels, Parquet output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import simulator.logs
from simulator import SMALL, SessionKeys, Simulator, World, WorldConfig
from simulator.logs import SAMPLE_SCHEMA, SAMPLE_TYPES, LoggingCascade, out_of_scene_purchases, simulate_logs

K, M, L = SMALL.page_size, SMALL.sample_unexposed, SMALL.sample_dropped
C, R = SMALL.logging_coarse_size, SMALL.recall_size
EXPOSED, UNEXPOSED, DROPPED, RANDOM, OUT_OF_SCENE = range(len(SAMPLE_TYPES))
REQUEST = ["user_id", "day", "session", "page"]
SESSION = ["user_id", "day", "session"]

# 200 users on day 0, 50 of them with a second session on day 0 and a session on day 1
KEYS = SessionKeys.of(
    np.concatenate([np.arange(200), np.arange(50), np.arange(50)]),
    day=np.concatenate([np.zeros(250, int), np.ones(50, int)]),
    session=np.concatenate([np.zeros(200, int), np.ones(50, int), np.zeros(50, int)]),
)


@pytest.fixture(scope="module")
def logs(small_world: World) -> pd.DataFrame:
    return pd.DataFrame(simulate_logs(small_world, KEYS))


@pytest.fixture(scope="module")
def replay(small_world: World) -> dict:
    """The logged sessions re-run with the session engine: recall, coarse set, shown pages."""
    sim = Simulator(small_world)
    batch = sim.start(KEYS)
    coarse, fine = LoggingCascade(small_world).rank(batch)
    shown = []
    for page in range(min(SMALL.max_pages, -(-C // K))):  # the feed ends with the survivors
        slots = np.full((len(KEYS), K), -1)
        part = fine[:, page * K : (page + 1) * K]
        slots[:, : part.shape[1]] = part
        out = sim.show(batch, slots)
        for b in np.flatnonzero(out.viewed):
            key = (int(KEYS.user[b]), int(KEYS.day[b]), int(KEYS.session[b]), page)
            shown.append((key, out.items[b], out.clicks[b], out.purchases[b]))
    return {
        "items": batch.recall.items,
        "channels": batch.recall.channels,
        "coarse": np.take_along_axis(batch.recall.items, coarse, axis=1),
        "shown": shown,
        "row": {_session(KEYS, b): b for b in range(len(KEYS))},
    }


def _session(keys: SessionKeys, b: int) -> tuple[int, int, int]:
    return int(keys.user[b]), int(keys.day[b]), int(keys.session[b])


def _in_scene(logs: pd.DataFrame, sample_type: int) -> pd.DataFrame:
    return logs[logs.sample_type == sample_type]


def _session_exposures(logs: pd.DataFrame) -> dict[tuple, set[int]]:
    exposed = _in_scene(logs, EXPOSED)
    return {key: set(g.item_id) for key, g in exposed.groupby(SESSION)}


def test_columns_match_the_schema(logs: pd.DataFrame) -> None:
    assert list(logs.columns) == SAMPLE_SCHEMA.names
    for field in SAMPLE_SCHEMA:
        assert logs[field.name].dtype == field.type.to_pandas_dtype(), field.name


def test_each_request_logs_exactly_the_exposures_of_its_page(logs: pd.DataFrame, replay: dict) -> None:
    exposed = {key: g for key, g in _in_scene(logs, EXPOSED).groupby(REQUEST)}
    for key, items, clicks, purchases in replay["shown"]:
        on_page = items >= 0
        assert on_page.any(), f"request {key} showed nothing"
        rows = exposed.pop(key).sort_values("position")
        np.testing.assert_array_equal(rows.position, np.flatnonzero(on_page))
        np.testing.assert_array_equal(rows.item_id, items[on_page])
        np.testing.assert_array_equal(rows.click, clicks[on_page])
        np.testing.assert_array_equal(rows.purchase, purchases[on_page])
    assert not exposed  # no exposures for pages the user never saw


def test_requests_are_the_viewed_pages(logs: pd.DataFrame, replay: dict) -> None:
    logged = set(logs[logs.page >= 0][REQUEST].drop_duplicates().itertuples(index=False, name=None))
    assert logged == {key for key, *_ in replay["shown"]}


def _counts(logs: pd.DataFrame, replay: dict, sample_type: int) -> pd.Series:
    """Rows of a sample type per viewed request (0 where none)."""
    requests = pd.MultiIndex.from_tuples([key for key, *_ in replay["shown"]], names=REQUEST)
    return _in_scene(logs, sample_type).groupby(REQUEST).size().reindex(requests, fill_value=0)


def test_unexposed_rows_per_request_are_m_when_enough_survivors(logs: pd.DataFrame, replay: dict) -> None:
    counts = _counts(logs, replay, UNEXPOSED)
    assert (counts <= M).all()
    exposures = {key: len(v) for key, v in _session_exposures(logs).items()}
    enough = np.array([C - exposures.get(key[:3], 0) >= M for key in counts.index])
    assert enough.any() and (counts[enough] == M).all()


def test_unexposed_rows_are_coarse_survivors_not_yet_exposed(logs: pd.DataFrame, replay: dict) -> None:
    exposed = dict(list(_in_scene(logs, EXPOSED).groupby(SESSION)))
    for key, rows in _in_scene(logs, UNEXPOSED).groupby(REQUEST):
        b = replay["row"][key[:3]]
        assert set(rows.item_id) <= set(replay["coarse"][b].tolist())
        session = exposed.get(key[:3], logs.iloc[:0])
        assert not set(rows.item_id) & set(session.item_id[session.page <= key[3]])


def test_unexposed_rows_are_never_exposed_in_their_session(logs: pd.DataFrame) -> None:
    exposures = _session_exposures(logs)
    for key, rows in _in_scene(logs, UNEXPOSED).groupby(SESSION):
        assert not set(rows.item_id) & exposures.get(key, set()), key


def test_dropped_rows_per_request_are_l(logs: pd.DataFrame, replay: dict) -> None:
    assert (_counts(logs, replay, DROPPED) == min(L, R - C)).all()


def test_dropped_rows_are_recalled_but_not_coarse_survivors(logs: pd.DataFrame, replay: dict) -> None:
    for key, rows in _in_scene(logs, DROPPED).groupby(SESSION):
        b = replay["row"][key]
        assert set(rows.item_id) <= set(replay["items"][b].tolist())
        assert not set(rows.item_id) & set(replay["coarse"][b].tolist())


def test_dropped_rows_are_never_exposed(logs: pd.DataFrame) -> None:
    exposures = _session_exposures(logs)
    for key, rows in _in_scene(logs, DROPPED).groupby(SESSION):
        assert not set(rows.item_id) & exposures.get(key, set())


def test_sampled_rows_are_distinct_within_a_request(logs: pd.DataFrame) -> None:
    in_scene = logs[logs.sample_type.isin([EXPOSED, UNEXPOSED, DROPPED])]
    assert not in_scene.duplicated([*REQUEST, "item_id"]).any()


def test_channel_column_is_the_recall_channel_of_the_item(logs: pd.DataFrame, replay: dict) -> None:
    in_scene = logs[logs.sample_type.isin([EXPOSED, UNEXPOSED, DROPPED])]
    for key, rows in in_scene.groupby(SESSION):
        b = replay["row"][key]
        channel_of = dict(zip(replay["items"][b].tolist(), replay["channels"][b].tolist(), strict=True))
        assert rows.channel.tolist() == [channel_of[i] for i in rows.item_id]


def test_random_rows_per_request_are_sample_random(small_world: World) -> None:
    world = World(SMALL.replace(sample_random=3))
    logs = pd.DataFrame(simulate_logs(world, KEYS.take(slice(0, 60))))
    in_scene = logs[logs.page >= 0]
    per_request = in_scene.groupby(REQUEST).sample_type.apply(lambda t: (t == RANDOM).sum())
    assert (per_request == 3).all()
    random = _in_scene(logs, RANDOM)
    assert random.item_id.between(0, SMALL.n_items - 1).all()
    assert (random.channel == -1).all() and (random.exposure == 0).all() and (random.position == -1).all()


def test_clicks_imply_exposure_and_purchases_imply_clicks_in_scene(logs: pd.DataFrame) -> None:
    in_scene = logs[logs.page >= 0]
    assert (in_scene.exposure >= in_scene.click).all()
    assert (in_scene.click >= in_scene.purchase).all()
    assert ((in_scene.exposure == 1) == (in_scene.sample_type == EXPOSED)).all()
    assert in_scene.purchase.sum() > 0  # the implications are not vacuous


def test_out_of_scene_rows_are_purchases_without_a_page(logs: pd.DataFrame) -> None:
    assert ((logs.page == -1) == (logs.sample_type == OUT_OF_SCENE)).all()
    oos = _in_scene(logs, OUT_OF_SCENE)
    assert len(oos) > 0
    assert (oos.purchase == 1).all() and (oos.exposure == 0).all() and (oos.click == 0).all()
    assert (oos.position == -1).all() and (oos.channel == -1).all()


def test_out_of_scene_rows_are_logged_once_per_user_day(small_world: World, logs: pd.DataFrame) -> None:
    oos = _in_scene(logs, OUT_OF_SCENE)
    assert (oos.session == 0).all()
    for day, users in ((0, np.arange(200)), (1, np.arange(50))):
        buyers, items = out_of_scene_purchases(small_world, users, day)
        rows = oos[oos.day == day]
        assert sorted(zip(rows.user_id, rows.item_id, strict=True)) == sorted(
            zip(buyers.tolist(), items.tolist(), strict=True)
        )


def test_out_of_scene_purchases_per_user_day_match_the_rate(small_world: World) -> None:
    """Poisson(rate) counts: the mean over n user-days is within 5 sigma = 5 sqrt(rate / n)."""
    users = np.arange(SMALL.n_users)
    counts = sum(len(out_of_scene_purchases(small_world, users, day)[0]) for day in range(3))
    n = 3 * len(users)
    assert abs(counts / n - SMALL.out_of_scene_rate) < 5 * np.sqrt(SMALL.out_of_scene_rate / n)


def test_logs_of_sharded_sessions_equal_one_batch(small_world: World, logs: pd.DataFrame) -> None:
    perm = np.random.default_rng(0).permutation(len(KEYS))
    shards = [pd.DataFrame(simulate_logs(small_world, KEYS.take(part))) for part in np.array_split(perm, 3)]
    together = logs.sort_values(list(logs.columns)).reset_index(drop=True)
    sharded = pd.concat(shards).sort_values(list(logs.columns)).reset_index(drop=True)
    pd.testing.assert_frame_equal(sharded, together)


# ---------------------------------------------------------------- write_logs
def test_write_logs_writes_readable_parquet_with_the_schema(small_world: World, tmp_path: Path) -> None:
    out = simulator.logs.write_logs(small_world, tmp_path / "logs", n_users=40, batch_size=16, progress=False)
    samples = pd.read_parquet(out / "samples.parquet")
    assert pq.read_schema(out / "samples.parquet").remove_metadata() == SAMPLE_SCHEMA
    assert sorted(samples.user_id.unique()) == list(range(40))
    expected = pd.DataFrame(simulate_logs(small_world, SessionKeys.of(np.arange(40))))
    assert len(samples) == len(expected)
    items = pd.read_parquet(out / "items.parquet")
    assert len(items) == SMALL.n_items
    users = pd.read_parquet(out / "users.parquet")
    np.testing.assert_array_equal(np.stack(users.history), small_world.history[:40])
    assert WorldConfig.from_dict(json.loads((out / "world.json").read_text())) == SMALL


def test_write_logs_refuses_to_overwrite_without_force(small_world: World, tmp_path: Path) -> None:
    out = tmp_path / "logs"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError):
        simulator.logs.write_logs(small_world, out, n_users=5, progress=False)
    assert (out / "keep.txt").read_text() == "precious"


def test_write_logs_overwrites_with_force(small_world: World, tmp_path: Path) -> None:
    out = tmp_path / "logs"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    simulator.logs.write_logs(small_world, out, n_users=5, force=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "items.parquet",
        "samples.parquet",
        "users.parquet",
        "world.json",
    ]


def test_write_logs_leaves_no_temporary_folder(small_world: World, tmp_path: Path) -> None:
    simulator.logs.write_logs(small_world, tmp_path / "logs", n_users=5, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["logs"]


def test_failed_write_leaves_neither_output_nor_temporary_folder(
    small_world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(world, keys):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(simulator.logs, "simulate_logs", broken)
    with pytest.raises(RuntimeError, match="simulated crash"):
        simulator.logs.write_logs(small_world, tmp_path / "logs", n_users=5, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("n_users", [0, SMALL.n_users + 1])
def test_write_logs_rejects_a_user_count_outside_the_world(
    small_world: World, tmp_path: Path, n_users: int
) -> None:
    with pytest.raises(ValueError, match="n_users"):
        simulator.logs.write_logs(small_world, tmp_path / "logs", n_users=n_users, progress=False)
    assert list(tmp_path.iterdir()) == []
