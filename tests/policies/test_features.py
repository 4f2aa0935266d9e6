"""The feature store: the world's and the logs' features agree, lookups by id, the vocab fits."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.batch import take_rows
from policies.features import FeatureStore, vocab_of
from simulator import SMALL, World


@pytest.fixture(scope="module")
def store(small_world) -> FeatureStore:
    return FeatureStore.from_world(small_world)


def test_the_world_and_its_logs_hold_the_same_features(store, small_data):
    for field in dataclasses.fields(store.items):
        assert torch.equal(getattr(store.items, field.name), getattr(small_data.items, field.name)), (
            field.name
        )
    assert torch.equal(store.history, small_data.history)


def test_the_vocab_fits_every_feature_of_the_world(store):
    vocab = vocab_of(SMALL)
    assert (vocab.n_items, vocab.n_users) == (store.n_items, store.n_users)
    assert int(store.items.category.max()) < vocab.n_categories
    assert int(store.items.brand.max()) < vocab.n_brands
    assert int(store.items.price_bucket.max()) < vocab.n_price_buckets
    assert torch.equal(store.items.item_id, torch.arange(store.n_items))  # row = item id


def test_users_are_looked_up_with_their_logged_history(store):
    ids = np.array([5, 0, store.n_users - 1])
    users = store.users(ids)
    assert torch.equal(users.user_id, torch.as_tensor(ids))
    assert torch.equal(users.history.item_id, store.history[ids])
    assert torch.equal(users.history.category, store.items.category[store.history[ids]])
    for bad in (np.array([-1]), np.array([store.n_users])):
        with pytest.raises(IndexError, match="user ids must be in"):
            store.users(bad)


def test_item_features_keep_the_shape_of_the_ids(store):
    ids = np.array([[3, 1, 4], [1, 5, 9]])
    items = store.item_features(ids)
    assert items.item_id.shape == (2, 3) and torch.equal(items.item_id, torch.as_tensor(ids))
    assert torch.equal(items.brand, store.items.brand[torch.as_tensor(ids)])


def test_users_carry_the_logged_dwell_when_the_world_logs_it(store):
    ids = np.array([7, 2, 7])
    assert store.history_dwell is None and store.users(ids).history_dwell is None
    world = World(SMALL.replace(history_dwell_separation=2.0))
    users = FeatureStore.from_world(world).users(ids)
    np.testing.assert_array_equal(users.history_dwell.numpy(), world.history_dwell[ids])


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 30),
    width=st.sampled_from([(), (1,), (4,), (3, 2)]),
    shape=st.lists(st.integers(0, 5), min_size=0, max_size=3),
    negative=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_take_rows_is_indexing(rows, width, shape, negative, seed):
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(rows, *width, generator=g)
    ids = torch.randint(-rows if negative else 0, rows, tuple(shape), generator=g)
    assert torch.equal(take_rows(table, ids), table[ids])
    assert torch.equal(take_rows(table, slice(1, 3)), table[1:3])
