"""Multi-channel recall: valid distinct candidates, batch-independent, imperfect."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import CHANNELS, SMALL, SessionKeys, Simulator, World, WorldConfig
from simulator.oracle import best_in_pool, funnel_loss
from simulator.recall import I2I_SEEDS, Recall

SHARES = [
    (0.35, 0.35, 0.2, 0.1),
    (0.25, 0.25, 0.25, 0.25),
    (1.0, 0.0, 0.0, 0.0),
    (0.0, 1.0, 0.0, 0.0),
    (0.0, 0.0, 1.0, 0.0),
    (0.0, 0.0, 0.0, 1.0),
]


@st.composite
def small_configs(draw) -> WorldConfig:
    """Tiny valid worlds (built in a few ms) spanning the recall knobs."""
    n_categories = draw(st.integers(2, 8))
    brands = draw(st.integers(1, 4))
    n_items = draw(st.integers(max(60, n_categories * brands), 1_500))
    recall_size = draw(st.sampled_from([10, 37, n_items // 2, n_items]))
    i2i, taste, popular, new = draw(st.sampled_from(SHARES))
    return WorldConfig(
        seed=draw(st.integers(0, 2**32)),
        n_items=n_items,
        n_users=60,
        n_categories=n_categories,
        brands_per_category=brands,
        dim=8,
        recall_size=recall_size,
        logging_coarse_size=10,
        i2i_neighbors=draw(st.integers(1, min(40, n_items - 1))),
        new_item_share=draw(st.sampled_from([0.0, 0.05, 0.3])),
        recall_taste_categories=draw(st.integers(1, 10)),
        recall_taste_noise=draw(st.sampled_from([0.0, 1.0])),
        recall_share_i2i=i2i,
        recall_share_taste=taste,
        recall_share_popular=popular,
        recall_share_new=new,
    )


def batches(n_users: int = SMALL.n_users) -> st.SearchStrategy[SessionKeys]:
    """Sessions of distinct (user, day, session) keys."""
    key = st.tuples(st.integers(0, n_users - 1), st.integers(0, 3), st.integers(0, 2**31 - 1))
    return st.lists(key, min_size=1, max_size=12, unique=True).map(
        lambda rows: SessionKeys.of(*map(np.array, zip(*rows, strict=True)))
    )


@settings(deadline=None, max_examples=25)
@given(small_configs(), batches(60))
def test_recall_rows_hold_recall_size_distinct_valid_items(config: WorldConfig, keys: SessionKeys) -> None:
    items = Recall(World(config))(keys).items
    assert items.shape == (len(keys), config.recall_size)
    assert ((items >= 0) & (items < config.n_items)).all()
    for row in items:
        assert len(np.unique(row)) == config.recall_size


@settings(deadline=None, max_examples=25)
@given(small_configs(), batches(60))
def test_recall_channels_are_indices_into_channels(config: WorldConfig, keys: SessionKeys) -> None:
    channels = Recall(World(config))(keys).channels
    assert channels.shape == (len(keys), config.recall_size)
    assert ((channels >= 0) & (channels < len(CHANNELS))).all()


@settings(deadline=None, max_examples=25)
@given(small_configs(), batches(60))
def test_recall_channel_names_the_source_that_found_the_item(config: WorldConfig, keys: SessionKeys) -> None:
    """i2i items are neighbours of the recent history; new-channel items are new items."""
    world = World(config)
    recall = Recall(world)
    result = recall(keys)
    for b, user in enumerate(keys.user):
        channel = result.channels[b]
        seeds = world.history[user, -min(I2I_SEEDS, config.history_len) :]
        neighbours = set(world.i2i[seeds, : recall.i2i_per_seed].ravel().tolist()) - {-1}
        assert set(result.items[b, channel == CHANNELS.index("i2i")].tolist()) <= neighbours
        assert world.item_is_new[result.items[b, channel == CHANNELS.index("new")]].all()


@settings(deadline=None, max_examples=30)
@given(batches(), st.randoms(use_true_random=False))
def test_recall_of_a_session_does_not_depend_on_its_batch(small_sim: Simulator, keys, random) -> None:
    together = small_sim.recall(keys)
    perm = list(range(len(keys)))
    random.shuffle(perm)
    shuffled = small_sim.recall(keys.take(np.array(perm)))
    np.testing.assert_array_equal(shuffled.items, together.items[perm])
    np.testing.assert_array_equal(shuffled.channels, together.channels[perm])
    b = random.randrange(len(keys))
    alone = small_sim.recall(keys.take(slice(b, b + 1)))
    np.testing.assert_array_equal(alone.items[0], together.items[b])
    np.testing.assert_array_equal(alone.channels[0], together.channels[b])


@settings(deadline=None, max_examples=10)
@given(st.integers(0, 2**32), batches(60))
def test_recall_of_the_whole_pool_is_every_item_once(seed: int, keys: SessionKeys) -> None:
    """recall_size == n_items: the explore filler must top every row up to the full pool."""
    config = WorldConfig(
        seed=seed,
        n_items=400,
        n_users=60,
        n_categories=4,
        brands_per_category=2,
        dim=8,
        recall_size=400,
        logging_coarse_size=10,
        i2i_neighbors=20,
    )
    items = Recall(World(config))(keys).items
    np.testing.assert_array_equal(np.sort(items, axis=1), np.broadcast_to(np.arange(400), items.shape))


def test_recall_varies_across_sessions_of_a_user(small_sim: Simulator) -> None:
    recall = small_sim.recall(SessionKeys.of(np.full(4, 5), day=[0, 0, 1, 1], session=[0, 1, 0, 1]))
    sets = [frozenset(row.tolist()) for row in recall.items]
    assert len(set(sets)) == 4


def test_recall_channels_stay_within_their_quotas(small_sim: Simulator, some_keys: SessionKeys) -> None:
    """Quotas bound each channel (duplicates are dropped); explore only tops up."""
    recall = small_sim.recall
    channels = recall(some_keys).channels
    counts = np.bincount(channels.ravel(), minlength=len(CHANNELS)) / len(some_keys)
    quotas = [
        recall.i2i_seeds * recall.i2i_per_seed,
        recall.taste_quota,
        recall.popular_quota,
        recall.new_quota,
    ]
    assert (counts > 0).all()
    assert (counts[:4] <= quotas).all()


def test_recall_misses_some_of_the_truly_best_items(small_world: World, small_sim: Simulator) -> None:
    keys = SessionKeys.of(np.arange(100))
    best = best_in_pool(small_world, keys.user, 10)
    loss = funnel_loss(best, [small_sim.recall(keys).items])
    assert 0 < loss["recall"] < 1


@settings(deadline=None, max_examples=25)
@given(small_configs(), st.sampled_from([0.0, 0.2, 0.5]), batches(60))
def test_recall_does_not_depend_on_the_short_filler(config: WorldConfig, arriving: float, keys) -> None:
    """The short explore filler is a prefix of the full walk, so its length (the speed-up where
    items arrive late) cannot change a recall set: no filler, the default and the full walk agree."""
    if arriving:
        config = config.replace(new_item_share=0.3, arrival_days=2, new_item_share_per_day=arriving)
    recall = Recall(World(config))
    default = recall(keys)
    for length in (0, recall._explore_length):
        recall.short_filler = length
        other = recall(keys)
        np.testing.assert_array_equal(other.items, default.items)
        np.testing.assert_array_equal(other.channels, default.channels)
