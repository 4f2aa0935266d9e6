import collections
import dataclasses
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.data import (
    LOG_FILES,
    OUT_OF_SCENE,
    REQUEST_KEYS,
    LogData,
    SampleSpace,
    Split,
    iterate_list_ids,
    iterate_lists,
    load_logs,
    split_by_user,
    split_logs,
    split_validation,
    users_logs,
)
from simulator import SMALL, World
from simulator.logs import write_logs

SPACES = st.builds(SampleSpace, st.booleans(), st.booleans(), st.booleans(), st.booleans())


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory):
    """Two days of logs for 200 users of a SMALL world with random negatives."""
    world = World(dataclasses.replace(SMALL, sample_random=5))
    return write_logs(world, tmp_path_factory.mktemp("data") / "logs", n_users=200, days=2, progress=False)


@pytest.fixture(scope="module")
def data(log_dir) -> LogData:
    return load_logs(log_dir)


def expected_entries(samples: pd.DataFrame, space: SampleSpace) -> pd.DataFrame:
    """Reference in pandas: the included samples keyed by the request whose list holds them
    (out-of-scene rows moved to the user's first request of the day, merged ones dropped)."""
    kept = samples[samples.sample_type.isin(space.sample_types())]
    scene = kept[kept.sample_type != OUT_OF_SCENE]
    oos = kept[kept.sample_type == OUT_OF_SCENE].drop(columns=["session", "page"])
    first = scene.sort_values(list(REQUEST_KEYS)).groupby(["user_id", "day"], as_index=False).first()
    oos = oos.merge(first[list(REQUEST_KEYS)], on=["user_id", "day"], how="left")
    oos = oos.fillna({"session": 0, "page": -1}).drop_duplicates([*REQUEST_KEYS, "item_id"])
    present = scene[[*REQUEST_KEYS, "item_id"]].drop_duplicates().assign(present=True)
    oos = oos.merge(present, on=[*REQUEST_KEYS, "item_id"], how="left")
    oos = oos[oos.present.isna()].drop(columns="present")
    return pd.concat([scene, oos])[[*REQUEST_KEYS, "item_id", "sample_type"]].astype("int64")


def pass_entries(data: LogData, space: SampleSpace, batch_size: int = 64, **kw) -> pd.DataFrame:
    """Every real entry of a full pass, keyed by its list's request."""
    lists = data.lists(space)
    frames = []
    batches = zip(
        iterate_list_ids(data, space, batch_size, False, None, **kw),
        iterate_lists(data, space, batch_size, False, None, **kw),
        strict=True,
    )
    for ids, batch in batches:
        assert torch.equal(batch.user.user_id, torch.as_tensor(lists.user_id[ids]))
        b = np.nonzero(batch.mask.numpy())[0]
        frame = {c: getattr(lists, c)[ids][b] for c in REQUEST_KEYS}
        frame["item_id"] = batch.items.item_id[batch.mask].numpy()
        frame["sample_type"] = batch.sample_type[batch.mask].numpy()
        for c in ("exposure", "click", "purchase"):
            frame[c] = getattr(batch, c)[batch.mask].numpy()
        frames.append(pd.DataFrame(frame))
    return pd.concat(frames, ignore_index=True)


def multiset(frame: pd.DataFrame, columns) -> collections.Counter:
    return collections.Counter(map(tuple, frame[list(columns)].to_numpy().tolist()))


@pytest.mark.parametrize("space", [SampleSpace(), SampleSpace(out_of_scene=True), SampleSpace(False, False)])
def test_full_pass_yields_every_included_sample_exactly_once(data, space):
    columns = [*REQUEST_KEYS, "item_id", "sample_type"]
    got = multiset(pass_entries(data, space), columns)
    assert got == multiset(expected_entries(data.samples, space), columns)


def test_each_list_holds_one_request_and_masks_mark_padding(data):
    space = SampleSpace(out_of_scene=True)
    lists = data.lists(space)
    samples = data.samples
    seen = set()
    for ids, batch in zip(
        iterate_list_ids(data, space, 16, True, torch.Generator().manual_seed(1)),
        iterate_lists(data, space, 16, True, torch.Generator().manual_seed(1)),
        strict=True,
    ):
        entry, mask = lists.entries(ids)
        lengths = (lists.offsets[ids + 1] - lists.offsets[ids]).numpy()
        assert torch.equal(batch.mask, torch.arange(batch.mask.shape[1]) < torch.as_tensor(lengths)[:, None])
        assert batch.mask.shape[1] == lengths.max()  # padded to the longest list
        rows = samples.iloc[lists.row[entry[mask]].numpy()]
        same_user_day = (rows.user_id.to_numpy() == np.repeat(lists.user_id[ids], lengths)) & (
            rows.day.to_numpy() == np.repeat(lists.day[ids], lengths)
        )
        assert same_user_day.all()
        in_scene = rows.sample_type.to_numpy() != OUT_OF_SCENE
        for c in ("session", "page"):
            assert (
                rows[c].to_numpy()[in_scene] == np.repeat(getattr(lists, c)[ids], lengths)[in_scene]
            ).all()
        seen.update(zip(*(getattr(lists, c)[ids].tolist() for c in REQUEST_KEYS), strict=True))
    assert len(seen) == len(lists)  # requests are distinct lists


def test_padded_entries_have_zero_labels_and_zero_ids(data):
    batch = next(iterate_lists(data, SampleSpace(), 64, True, torch.Generator().manual_seed(2)))
    pad = ~batch.mask
    assert pad.any()
    for t in (batch.exposure, batch.click, batch.purchase, batch.sample_type, batch.items.item_id):
        assert (t[pad] == 0).all()


@settings(max_examples=40, deadline=None)
@given(space=SPACES)
def test_sample_space_switches_select_exactly_their_types(data, space):
    got = pass_entries(data, space, batch_size=512).sample_type.value_counts()
    want = data.samples.sample_type.value_counts()
    switch = dict(enumerate((True, space.unexposed, space.dropped, space.random, space.out_of_scene)))
    for t in range(OUT_OF_SCENE):  # in-scene types: all or nothing
        assert got.get(t, 0) == (want[t] if switch[t] else 0)
    assert (got.get(OUT_OF_SCENE, 0) > 0) == space.out_of_scene


def test_all_sample_types_are_present_in_the_fixture(data):
    # guards the switch test: a type absent from the logs would make its switch untestable
    assert set(data.samples.sample_type.unique()) == {0, 1, 2, 3, 4}


def test_sample_space_rejects_non_bools():
    with pytest.raises(TypeError, match="unexposed"):
        SampleSpace(unexposed=1)


# --- out-of-scene positives on a constructed case ----------------------------------------------


def tiny_data() -> LogData:
    """User 0 on day 0: session 0 pages 0-1 and session 1 page 0; out-of-scene purchases of
    item 2 (exposed on the first page), item 5 twice (never logged) and item 4 (logged on
    a later request). User 1 on day 0 only buys item 7 out of scene."""
    rows = [  # user, day, session, page, item, type, exposure, click, purchase
        (0, 0, 0, 0, 1, 0, 1, 1, 0),
        (0, 0, 0, 0, 2, 0, 1, 0, 0),
        (0, 0, 0, 0, 9, 2, 0, 0, 0),
        (0, 0, 0, 1, 3, 0, 1, 0, 0),
        (0, 0, 1, 0, 4, 0, 1, 1, 1),
        (0, 0, 0, -1, 2, 4, 0, 0, 1),
        (0, 0, 0, -1, 5, 4, 0, 0, 1),
        (0, 0, 0, -1, 5, 4, 0, 0, 1),
        (0, 0, 0, -1, 4, 4, 0, 0, 1),
        (1, 0, 0, -1, 7, 4, 0, 0, 1),
    ]
    cols = [*REQUEST_KEYS, "item_id", "sample_type", "exposure", "click", "purchase"]
    samples = pd.DataFrame(rows, columns=cols).assign(position=-1, channel=-1)
    items = pd.DataFrame(
        {"item_id": range(10), "category": 0, "brand": 0, "price_bucket": 0, "is_new": False}
    )
    users = pd.DataFrame({"user_id": [0, 1], "history": [np.arange(3), np.arange(3)]})
    return LogData.from_frames(samples, items, users, {})


def tiny_lists(space: SampleSpace) -> list[tuple]:
    """Per list in order: (request key, [(item, type, exposure, click, purchase), ...])."""
    data = tiny_data()
    lists = data.lists(space)
    out = []
    for ids, batch in zip(
        iterate_list_ids(data, space, 8, False, None), iterate_lists(data, space, 8, False, None), strict=True
    ):
        for k, i in enumerate(ids):
            m = batch.mask[k]
            entries = zip(
                *(t[k][m].int().tolist() for t in (batch.items.item_id, batch.sample_type)),
                *(t[k][m].int().tolist() for t in (batch.exposure, batch.click, batch.purchase)),
                strict=True,
            )
            out.append((tuple(int(getattr(lists, c)[i]) for c in REQUEST_KEYS), list(entries)))
    return out


def test_out_of_scene_purchases_attach_to_first_request_of_the_day_as_positives():
    first = dict(tiny_lists(SampleSpace(out_of_scene=True)))[(0, 0, 0, 0)]
    assert (5, OUT_OF_SCENE, 1, 1, 1) in first
    assert (4, OUT_OF_SCENE, 1, 1, 1) in first  # logged on a later request only


def test_out_of_scene_purchase_already_in_the_list_corrects_its_label_without_duplicate():
    first = dict(tiny_lists(SampleSpace(out_of_scene=True)))[(0, 0, 0, 0)]
    assert [e for e in first if e[0] == 2] == [(2, 0, 1, 0, 1)]
    assert [e[0] for e in first].count(5) == 1  # bought twice, one entry


def test_out_of_scene_purchases_without_a_request_form_their_own_list():
    got = tiny_lists(SampleSpace(out_of_scene=True))
    assert [key for key, _ in got] == [(0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 1, 0), (1, 0, 0, -1)]
    assert got[-1][1] == [(7, OUT_OF_SCENE, 1, 1, 1)]


def test_out_of_scene_off_leaves_labels_untouched():
    got = dict(tiny_lists(SampleSpace()))
    assert got[(0, 0, 0, 0)] == [(1, 0, 1, 1, 0), (2, 0, 1, 0, 0), (9, 2, 0, 0, 0)]
    assert (1, 0, 0, -1) not in got


# --- order and determinism -------------------------------------------------------------------


def batches(data, seed, shuffle=True, batch_size=32):
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return list(iterate_lists(data, SampleSpace(), batch_size, shuffle, gen))


def flat(batch) -> list[torch.Tensor]:
    return [batch.user.user_id, batch.items.item_id, batch.mask, batch.sample_type, batch.click]


def test_same_generator_seed_gives_identical_batches(data):
    a, b = batches(data, 5), batches(data, 5)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert all(torch.equal(s, t) for s, t in zip(flat(x), flat(y), strict=True))


def test_different_seeds_give_different_orders(data):
    space = SampleSpace()
    a = np.concatenate(list(iterate_list_ids(data, space, 32, True, torch.Generator().manual_seed(5))))
    b = np.concatenate(list(iterate_list_ids(data, space, 32, True, torch.Generator().manual_seed(6))))
    assert sorted(a) == sorted(b)
    assert not np.array_equal(a, b)


def test_unshuffled_order_is_sorted_request_order(data):
    space = SampleSpace()
    lists = data.lists(space)
    ids = np.concatenate(list(iterate_list_ids(data, space, 32, False, None)))
    np.testing.assert_array_equal(ids, np.arange(len(lists)))
    keys = list(zip(*(getattr(lists, c).tolist() for c in REQUEST_KEYS), strict=True))
    assert keys == sorted(set(keys))


def test_shuffle_without_a_generator_is_refused(data):
    with pytest.raises(ValueError, match="Generator"):
        next(iterate_lists(data, SampleSpace(), 8, True, None))


def test_lists_do_not_depend_on_batch_size(data):
    def lists_of(batch_size):
        out = collections.Counter()
        for batch in iterate_lists(data, SampleSpace(), batch_size, True, torch.Generator().manual_seed(0)):
            for k in range(batch.mask.shape[0]):
                m = batch.mask[k]
                out[(int(batch.user.user_id[k]), *batch.items.item_id[k][m].tolist())] += 1
        return out

    assert lists_of(1) == lists_of(7) == lists_of(64)


def test_users_argument_keeps_only_their_lists(data):
    users = np.array([3, 17, 42])
    got = pass_entries(data, SampleSpace(), users=users)
    want = expected_entries(data.samples[data.samples.user_id.isin(users)], SampleSpace())
    columns = [*REQUEST_KEYS, "item_id", "sample_type"]
    assert multiset(got, columns) == multiset(want, columns)


# --- split by user ---------------------------------------------------------------------------


def test_split_by_user_is_deterministic_disjoint_and_covering(data):
    train, held = split_by_user(data, 0.3, seed=7)
    train2, held2 = split_by_user(data, 0.3, seed=7)
    np.testing.assert_array_equal(train, train2)
    np.testing.assert_array_equal(held, held2)
    assert not set(train) & set(held)
    assert sorted({*train, *held}) == data.user_ids.tolist()


def test_split_by_user_does_not_depend_on_the_user_population(data):
    fewer = dataclasses.replace(data, history=data.history[:50])
    _, held = split_by_user(data, 0.3, seed=7)
    _, held_fewer = split_by_user(fewer, 0.3, seed=7)
    np.testing.assert_array_equal(held_fewer, held[held < 50])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("share", [0.1, 0.5])
def test_split_by_user_held_out_share_is_near_requested(data, seed, share):
    n = 20_000
    many = dataclasses.replace(data, history=torch.zeros(n, 1, dtype=torch.long))
    _, held = split_by_user(many, share, seed)
    # If the hash is uniform, the held-out count is Binomial(n, share): mean n·share, sd
    # sqrt(n·share·(1-share)) (42 at share 0.1, 71 at 0.5). A 5-sd band fails by chance with
    # probability < 6e-7 per case, so a failure means a biased split, not bad luck.
    assert abs(len(held) - n * share) <= 5 * math.sqrt(n * share * (1 - share))


def test_split_by_user_rejects_a_share_outside_0_1(data):
    with pytest.raises(ValueError, match="held_out_share"):
        split_by_user(data, 1.5, seed=0)


# --- split by day (time split) ------------------------------------------------------------------


def test_the_day_split_trains_on_earlier_days_of_every_user_and_evaluates_on_the_last(data):
    day, user = data.samples["day"].to_numpy(), data.samples["user_id"].to_numpy()
    last = day.max()
    split = split_logs(data, Split.DAY, held_out_share=0.3, seed=7)
    assert split.eval_day == last > 0
    np.testing.assert_array_equal(split.train_users, np.unique(user[day < last]))  # every earlier user
    np.testing.assert_array_equal(split.eval_users, np.unique(user[day == last]))
    space = SampleSpace(out_of_scene=True)
    lists = data.lists(space)
    trained = np.concatenate(list(iterate_list_ids(data, space, 16, False, None, split.train_users, last)))
    assert (lists.day[trained] < last).all()  # never a list of the last day
    earlier = np.flatnonzero(lists.day < last)
    np.testing.assert_array_equal(np.sort(trained), earlier)  # and every list of the days before


def test_the_user_split_is_split_by_user(data):
    split = split_logs(data, Split.USER, held_out_share=0.3, seed=7)
    train, held = split_by_user(data, 0.3, seed=7)
    np.testing.assert_array_equal(split.train_users, train)
    np.testing.assert_array_equal(split.eval_users, held)
    assert split.eval_day is None


def test_a_day_split_of_one_day_of_logs_is_a_clear_error(data):
    one_day = dataclasses.replace(data, samples=data.samples[data.samples["day"] == 0])
    with pytest.raises(ValueError, match=r'split = "day" needs logs of at least 2 days, these have 1'):
        split_logs(one_day, Split.DAY, 0.2, 0)


# --- features --------------------------------------------------------------------------------


def test_item_features_equal_items_parquet(data, log_dir):
    items = pd.read_parquet(log_dir / "items.parquet").set_index("item_id")
    batch = next(iterate_lists(data, SampleSpace(), 64, True, torch.Generator().manual_seed(3)))
    ids = batch.items.item_id[batch.mask].numpy()
    rows = items.loc[ids]
    for c in ("category", "brand", "price_bucket", "is_new"):
        np.testing.assert_array_equal(getattr(batch.items, c)[batch.mask].numpy(), rows[c].to_numpy())


def test_histories_equal_users_parquet(data, log_dir):
    users = pd.read_parquet(log_dir / "users.parquet").set_index("user_id")
    items = pd.read_parquet(log_dir / "items.parquet").set_index("item_id")
    batch = next(iterate_lists(data, SampleSpace(), 64, True, torch.Generator().manual_seed(4)))
    want = np.stack(users.loc[batch.user.user_id.numpy(), "history"].to_numpy())  # (B, H)
    np.testing.assert_array_equal(batch.user.history.item_id.numpy(), want)
    np.testing.assert_array_equal(
        batch.user.history.category.numpy(),
        items.loc[want.ravel(), "category"].to_numpy().reshape(want.shape),
    )


# --- bad folders -----------------------------------------------------------------------------


@pytest.mark.parametrize("missing", LOG_FILES)
def test_folder_without_a_log_file_names_it(log_dir, tmp_path, missing):
    folder = tmp_path / "logs"
    shutil.copytree(log_dir, folder)
    (folder / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing):
        load_logs(folder)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_logs(tmp_path / "nowhere")


def test_samples_without_a_schema_column_name_it(log_dir, tmp_path):
    folder = tmp_path / "logs"
    shutil.copytree(log_dir, folder)
    pd.read_parquet(folder / "samples.parquet").drop(columns="click").to_parquet(folder / "samples.parquet")
    with pytest.raises(ValueError, match=r"samples\.parquet.*click"):
        load_logs(folder)


def test_users_logs_keeps_only_their_samples_and_every_feature_table(small_data):
    users = np.unique(small_data.samples["user_id"].to_numpy())[::3]
    dwell = torch.rand(small_data.history.shape)
    data = dataclasses.replace(small_data, history_dwell=dwell)
    mine = users_logs(data, users)
    assert set(mine.samples["user_id"]) == set(users)
    assert len(mine.samples) == data.samples["user_id"].isin(users).sum()
    assert mine.history_dwell is dwell and mine.history is data.history and mine.items is data.items


@settings(max_examples=50, deadline=None)
@given(
    users=st.lists(st.integers(0, 10**9), min_size=1, max_size=200, unique=True),
    share=st.floats(0.0, 0.99),
    seed=st.integers(0, 2**31),
)
def test_a_users_validation_side_depends_on_nothing_but_the_user(users, share, seed):
    users = np.asarray(users, np.int64)
    fit, validation = split_validation(users, share, seed)
    assert len(np.intersect1d(fit, validation)) == 0 and len(fit) + len(validation) == len(users)
    alone = [len(split_validation(users[i : i + 1], share, seed)[1]) == 1 for i in range(len(users))]
    np.testing.assert_array_equal(np.sort(validation), np.sort(users[alone]))  # no other user decides
    assert len(split_validation(users, 0.0, seed)[1]) == 0


def test_a_validation_share_of_one_fails_clearly():
    with pytest.raises(ValueError, match=r"validation share must be in \[0, 1\), got 1.0"):
        split_validation(np.arange(5), 1.0, 0)
