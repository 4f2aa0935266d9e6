"""Scorers: baselines, checkpoint scorers, per-request independence, version checks, load_scorer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies.checkpoint import (
    CheckpointError,
    ItemEmbeddings,
    export_item_embeddings,
    load_checkpoint,
    save_checkpoint,
)
from policies.features import FeatureStore
from policies.models import FineConfig, FineRanker, Vocab
from policies.rankers import (
    CoarseModelScorer,
    FineModelScorer,
    OracleScorer,
    PopularityScorer,
    RandomScorer,
    Task,
    load_scorer,
)
from simulator import SMALL
from simulator.oracle import Objective, expected_value

SCORERS = ("random", "popularity", "oracle", "coarse", "coarse_gmv", "fine")


@pytest.fixture(scope="module")
def features(small_world) -> FeatureStore:
    return FeatureStore.from_world(small_world)


@pytest.fixture(scope="module")
def requests() -> tuple[np.ndarray, np.ndarray]:
    """Six users with twelve distinct candidates each."""
    rng = np.random.default_rng(0)
    users = rng.choice(SMALL.n_users, 6, replace=False)
    items = np.stack([rng.choice(SMALL.n_items, 12, replace=False) for _ in users])
    return users, items


@pytest.fixture(scope="module")
def scorers(small_world, features, seeded_models) -> dict:
    return {
        "random": load_scorer("random", small_world, features, "coarse"),
        "popularity": load_scorer("popularity", small_world, features, "coarse"),
        "oracle": load_scorer("oracle", small_world, features, "fine"),
        "coarse": load_scorer(seeded_models["coarse_a"], small_world, features, "coarse"),
        "coarse_gmv": load_scorer(seeded_models["coarse_a"], small_world, features, "coarse", "gmv"),
        "fine": load_scorer(seeded_models["fine"], small_world, features, "fine"),
    }


@pytest.mark.parametrize("name", SCORERS)
def test_a_requests_scores_do_not_depend_on_its_batch(name, scorers, requests):
    users, items = requests
    scorer = scorers[name]
    together = scorer.score(users, items)
    assert together.shape == items.shape and together.dtype == np.float64
    for b in range(len(users)):
        assert np.array_equal(scorer.score(users[b : b + 1], items[b : b + 1])[0], together[b])
    order = np.arange(len(users))[::-1]
    assert np.array_equal(scorer.score(users[order], items[order]), together[order])
    assert len(np.unique(together)) > 1  # not a constant: the comparisons above mean something


def test_baselines_by_name(small_world, scorers):
    assert isinstance(scorers["random"], RandomScorer) and scorers["random"].seed == small_world.config.seed
    assert isinstance(scorers["popularity"], PopularityScorer)
    assert isinstance(scorers["oracle"], OracleScorer) and scorers["oracle"].objective is Objective.CLICKS


def test_random_scores_are_a_fixed_order_per_seed(requests):
    users, items = requests
    a, again, other = RandomScorer(3), RandomScorer(3), RandomScorer(4)
    assert np.array_equal(a.score(users, items), again.score(users, items))
    assert not np.array_equal(a.score(users, items), other.score(users, items))
    assert a.version != other.version
    scores = a.score(users, items)
    assert ((scores >= 0) & (scores < 1)).all()


def test_popularity_ranks_by_the_worlds_item_popularity(small_world, requests):
    users, items = requests
    scores = PopularityScorer(small_world).score(users, items)
    assert np.array_equal(np.argsort(scores, axis=1), np.argsort(small_world.item_popularity[items], axis=1))
    assert np.array_equal(scores[0], PopularityScorer(small_world).score(users[1:2], items[:1])[0])  # no user


@pytest.mark.parametrize("objective", list(Objective))
def test_the_oracle_scores_the_simulators_expected_value(small_world, requests, objective):
    users, items = requests
    scorer = OracleScorer(small_world, objective)
    assert np.array_equal(scorer.score(users, items), expected_value(small_world, users, items, objective))
    assert str(objective) in scorer.version


def test_checkpoint_scorers_carry_the_checkpoint_version_and_score_like_the_model(
    scorers, seeded_models, features, requests
):
    users, items = requests
    coarse, fine = scorers["coarse"], scorers["fine"]
    assert coarse.version == load_checkpoint(seeded_models["coarse_a"]).version
    assert fine.version == load_checkpoint(seeded_models["fine"]).version
    with torch.no_grad():  # the cached item tower gives what the whole model computes
        direct = coarse.model(features.users(users), features.item_features(items))[..., Task.CLICK.index]
        pctr = fine.model(features.users(users), features.item_features(items)).pctr
    np.testing.assert_allclose(coarse.score(users, items), direct.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fine.score(users, items), pctr.numpy(), rtol=1e-5, atol=1e-6)


def test_a_fine_scorer_keeping_users_scores_as_the_whole_model_does_per_request(
    small_world, features, seeded_models, requests
):
    users, items = requests
    model = load_checkpoint(seeded_models["fine"]).model
    scorer = FineModelScorer(model, features)
    order = np.arange(len(users))[::-1]
    scorer.score(users[order], np.roll(items, 3, axis=1)[order])  # users kept from other calls
    kept = scorer.score(users, items)
    with torch.no_grad():
        for b in range(len(users)):
            direct = model(features.users(users[b : b + 1]), features.item_features(items[b : b + 1]))
            assert np.array_equal(kept[b], direct.pctr.double().numpy()[0])
    assert scorer._user.cache_info().hits >= len(users)  # the second call used the kept users


def test_two_coarse_models_differ_in_version_and_scores(small_world, features, seeded_models, requests):
    users, items = requests
    a = load_scorer(seeded_models["coarse_a"], small_world, features, "coarse")
    b = load_scorer(seeded_models["coarse_b"], small_world, features, "coarse")
    assert a.version != b.version
    assert not np.array_equal(a.score(users, items), b.score(users, items))


def test_item_embeddings_of_another_version_or_shape_are_refused(seeded_models, features):
    model_a = load_checkpoint(seeded_models["coarse_a"]).model
    model_b = load_checkpoint(seeded_models["coarse_b"]).model
    other = export_item_embeddings(model_b, features.items)
    with pytest.raises(CheckpointError, match="cannot be used with user tower version"):
        CoarseModelScorer(model_a, features, embeddings=other)
    own = export_item_embeddings(model_a, features.items)
    truncated = ItemEmbeddings(own.version, own.vectors[:-1])
    with pytest.raises(ValueError, match="item embeddings have shape"):
        CoarseModelScorer(model_a, features, embeddings=truncated)


@pytest.mark.parametrize(("task", "output"), [("click", "pctr"), ("purchase", "pctcvr")])
def test_a_fine_checkpoint_serves_the_task_of_its_training_config(
    task, output, small_world, features, seeded_models, requests, tmp_path
):
    users, items = requests
    model = load_checkpoint(seeded_models["fine"]).model
    path = tmp_path / "fine.pt"
    save_checkpoint(path, model, {"score_task": task})
    scorer = load_scorer(str(path), small_world, features, "fine")
    assert scorer.task is Task(task)
    with torch.no_grad():
        expected = getattr(model(features.users(users), features.item_features(items)), output)
    np.testing.assert_allclose(scorer.score(users, items), expected.numpy(), rtol=1e-5, atol=1e-7)


def test_a_coarse_checkpoint_serves_the_task_of_its_training_config(
    small_world, features, seeded_models, tmp_path
):
    model = load_checkpoint(seeded_models["coarse_a"]).model
    save_checkpoint(tmp_path / "c.pt", model, {"score_task": "purchase"})
    assert load_scorer(str(tmp_path / "c.pt"), small_world, features, "coarse").task is Task.PURCHASE
    assert load_scorer(seeded_models["coarse_a"], small_world, features, "coarse").task is Task.CLICK


def test_the_gmv_score_is_the_log_of_pctcvr_times_price(small_world, features, seeded_models, requests):
    users, items = requests
    purchase = load_scorer(seeded_models["coarse_a"], small_world, features, "coarse", "purchase")
    gmv = load_scorer(seeded_models["coarse_a"], small_world, features, "coarse", Task.GMV)
    assert gmv.version == purchase.version and gmv.task is Task.GMV
    pctcvr = 1 / (1 + np.exp(-purchase.score(users, items)))  # the purchase head's probability
    expected_gmv = pctcvr * small_world.item_price[items]
    np.testing.assert_allclose(np.exp(gmv.score(users, items)), expected_gmv, rtol=1e-9)
    # prices differ across a request's candidates, so the GMV order is not the purchase order
    assert (np.argsort(-gmv.score(users, items)) != np.argsort(-purchase.score(users, items))).any()


def test_a_score_task_applies_to_checkpoints_only(small_world, features, seeded_models):
    with pytest.raises(ValueError, match="applies to checkpoints, not to 'popularity'"):
        load_scorer("popularity", small_world, features, "coarse", "gmv")
    model = load_checkpoint(seeded_models["coarse_a"]).model
    no_prices = FeatureStore(features.items, features.history)
    with pytest.raises(ValueError, match="task gmv needs the item prices"):
        CoarseModelScorer(model, no_prices, Task.GMV)


def test_a_fine_scorer_refuses_the_exposure_task(seeded_models, features):
    with pytest.raises(ValueError, match="a fine ranker serves"):
        FineModelScorer(load_checkpoint(seeded_models["fine"]).model, features, Task.EXPOSURE)


def test_load_scorer_errors(small_world, features, seeded_models, tmp_path):
    with pytest.raises(ValueError, match='stage must be "coarse" or "fine"'):
        load_scorer("random", small_world, features, "middle")
    with pytest.raises(CheckpointError, match="holds a fine model, expected a coarse model"):
        load_scorer(seeded_models["fine"], small_world, features, "coarse")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_scorer(str(tmp_path / "missing.pt"), small_world, features, "fine")
    elsewhere = Vocab(n_items=50, n_users=10, n_categories=5, n_brands=10)
    save_checkpoint(
        tmp_path / "other.pt", FineRanker(FineConfig(dim=4, attention_hidden=4, hidden=(4,)), elsewhere)
    )
    with pytest.raises(CheckpointError, match="trained on another world"):
        load_scorer(str(tmp_path / "other.pt"), small_world, features, "fine")
