"""policies.evaluate: offline metrics of coarse rankers on a held-out evaluation set."""

from __future__ import annotations

import numpy as np
import pytest

from policies.cascade import CascadeSizes
from policies.evaluate import EvalSet, evaluate_coarse
from policies.features import FeatureStore
from policies.rankers import OracleScorer, RandomScorer, load_scorer


@pytest.fixture(scope="module")
def eval_set(small_world, small_data, small_fine):
    teacher = load_scorer(str(small_fine.path), small_world, FeatureStore.from_world(small_world), "fine")
    sizes = CascadeSizes(coarse=50, page=10)
    return EvalSet.build(small_world, small_data, small_fine.held_out_users, teacher, sizes, 150, 2000)


def test_oracle_beats_random_on_every_simulator_metric(small_world, eval_set):
    oracle = evaluate_coarse(OracleScorer(small_world), eval_set)
    random = evaluate_coarse(RandomScorer(0), eval_set)
    assert "gauc" not in oracle  # baselines have no logged-list metrics
    for key in ("hitrate_out@50", "hitrate_global@50", "funnel_kept"):
        assert oracle[key] > random[key], key
    assert oracle["funnel_coarse"] < random["funnel_coarse"]
    # recall loss does not depend on the coarse ranker
    assert oracle["funnel_recall"] == random["funnel_recall"]


def test_model_metrics_are_complete_and_funnel_shares_sum_to_one(small_world, small_coarse, eval_set):
    scorer = load_scorer(str(small_coarse.path), small_world, FeatureStore.from_world(small_world), "coarse")
    result = evaluate_coarse(scorer, eval_set)
    for key in ("auc", "gauc", "ndcg@10", "kendall_tau", "recall@10@30", "recall@10@50"):
        assert 0.0 <= result[key] <= 1.0 or key == "kendall_tau", key
    funnel = sum(result[f"funnel_{s}"] for s in ("recall", "coarse", "fine", "kept"))
    assert funnel == pytest.approx(1.0)
    assert np.isfinite(result["hitrate_global@50"])
