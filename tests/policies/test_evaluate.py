"""policies.evaluate: held-out list selection, teacher outputs, list metrics, and the offline
metrics of coarse rankers on a held-out evaluation set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies.cascade import CascadeSizes
from policies.checkpoint import load_checkpoint
from policies.data import SampleSpace, Split, load_logs, split_by_user, split_logs
from policies.evaluate import (
    ALL_SAMPLES,
    EVAL_SPACE,
    ClickRows,
    EvalSet,
    evaluate_coarse,
    held_out_list_ids,
    list_metrics,
    teacher_labels,
    teacher_outputs,
)
from policies.features import FeatureStore
from policies.metrics import gauc
from policies.rankers import OracleScorer, RandomScorer, load_scorer
from simulator import SMALL, World
from simulator.oracle import best_in_pool


@pytest.fixture(scope="module")
def teacher(seeded_models):
    return load_checkpoint(seeded_models["fine"], kind="fine").model


@pytest.fixture(scope="module")
def eval_ids(small_data) -> np.ndarray:
    _, held_out = split_by_user(small_data, 0.2, 0)
    return held_out_list_ids(small_data.lists(EVAL_SPACE), held_out, 300)


def test_held_out_lists_belong_to_held_out_users_and_keep_each_users_lists_together(small_data):
    lists = small_data.lists(EVAL_SPACE)
    train_users, held_out = split_by_user(small_data, 0.2, 0)
    ids = held_out_list_ids(lists, held_out, 300)
    assert len(ids) == 300 and np.all(np.diff(ids) > 0)
    assert np.isin(lists.user_id[ids], held_out).all() and not np.isin(lists.user_id[ids], train_users).any()
    every = held_out_list_ids(lists, held_out, len(lists))
    assert np.array_equal(every[:300], ids)  # a prefix: more lists add lists, never swap them
    assert len(held_out_list_ids(lists, held_out, 0)) == 0


def test_teacher_outputs_of_some_lists_equal_those_of_all_lists(small_data, teacher, eval_ids):
    lists = small_data.lists(EVAL_SPACE)
    some_ctr, some_ctcvr = teacher_outputs(small_data, EVAL_SPACE, teacher, list_ids=eval_ids[:40])
    entry, mask = lists.entries(eval_ids[:40])
    chosen = entry[mask]
    all_ctr, all_ctcvr = teacher_outputs(
        small_data, EVAL_SPACE, teacher, list_ids=np.arange(int(eval_ids[:40].max()) + 1)
    )
    torch.testing.assert_close(some_ctr[chosen], all_ctr[chosen])
    torch.testing.assert_close(some_ctcvr[chosen], all_ctcvr[chosen])
    others = torch.ones(len(some_ctr), dtype=torch.bool)
    others[chosen] = False
    assert (some_ctr[others] == 0).all() and (some_ctr[chosen] > 0).all()
    assert (some_ctcvr[chosen] <= some_ctr[chosen]).all()


def test_teacher_labels_are_the_teachers_outputs_kept_per_sample_for_every_space(
    small_log_dir, teacher, seeded_models, monkeypatch
):
    data = load_logs(small_log_dir)  # a fresh LogData: its own cache
    version = load_checkpoint(seeded_models["fine"], kind="fine").version
    full = teacher_outputs(data, ALL_SAMPLES, teacher)
    first = teacher_labels(data, ALL_SAMPLES, teacher, version)
    assert all(torch.equal(a, b) for a, b in zip(first, full, strict=True))  # the same batches
    # a space whose lists hold samples the first one merged away (out-of-scene purchases of
    # items that only the unexposed/dropped negatives held): labelled on demand
    for space in (EVAL_SPACE, SampleSpace(unexposed=False, dropped=False, random=False, out_of_scene=True)):
        labels = teacher_labels(data, space, teacher, version)
        direct = teacher_outputs(data, space, teacher)  # batches of other lists: float rounding only
        torch.testing.assert_close(labels, direct)
        assert (labels[0] > 0).all() and (labels[1] <= labels[0]).all()
    monkeypatch.setattr("policies.evaluate.teacher_outputs", None)  # every sample is labelled now
    again = teacher_labels(data, ALL_SAMPLES, teacher, version)
    assert all(torch.equal(a, b) for a, b in zip(again, first, strict=True))
    teacher_labels(data, EVAL_SPACE, teacher, version)
    assert data._teacher_labels.keys() == {version}


def test_list_metrics_reward_agreement_with_labels_and_teacher(small_data, teacher, eval_ids):
    pctr = teacher_outputs(small_data, EVAL_SPACE, teacher, list_ids=eval_ids)[0]

    def teacher_score(batch):
        return teacher(batch.user, batch.items).pctr

    as_teacher = list_metrics(small_data, EVAL_SPACE, eval_ids, teacher_score, pctr)
    assert as_teacher["ndcg@10"] == pytest.approx(1.0)
    assert as_teacher["recall@10@30"] == pytest.approx(1.0)
    assert as_teacher["kendall_tau"] == pytest.approx(1.0)
    knows = list_metrics(small_data, EVAL_SPACE, eval_ids, lambda b: b.click)  # knows the clicks
    assert knows["auc"] == pytest.approx(1.0) and set(knows) == {"auc", "gauc"}
    reversed_labels = list_metrics(small_data, EVAL_SPACE, eval_ids, lambda b: -b.click)
    assert reversed_labels["auc"] == pytest.approx(0.0)


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


def test_click_rows_keep_each_models_scores_of_the_rows_of_its_gauc(small_world, small_coarse, eval_set):
    scorer = load_scorer(str(small_coarse.path), small_world, FeatureStore.from_world(small_world), "coarse")
    rows = ClickRows(eval_set)
    result = rows.evaluate("model", scorer)
    expected = evaluate_coarse(scorer, eval_set)
    assert result.keys() == expected.keys()
    np.testing.assert_array_equal(list(result.values()), list(expected.values()))  # NaN equal to NaN
    assert gauc(rows.users, rows.clicks, rows.scores["model"]) == pytest.approx(result["gauc"], abs=1e-12)
    users, clicks = rows.users, rows.clicks
    rows.evaluate("oracle", OracleScorer(small_world))  # a baseline scores no logged rows
    assert set(rows.scores) == {"model"} and rows.users is users
    rows.evaluate("again", scorer)  # the same rows, in the same order, for every model
    np.testing.assert_array_equal(rows.users, users)
    np.testing.assert_array_equal(rows.clicks, clicks)
    assert rows.gauc_difference("again", "model") == (0.0, 0.0)
    rows.scores["knows"] = rows.clicks.astype(float)  # knows the clicks
    difference, half = rows.gauc_difference("knows", "model")
    assert difference == pytest.approx(1000 * (1.0 - result["gauc"])) and half > 0
    assert np.isnan(rows.gauc_difference("oracle", "model")[0])


def test_a_time_split_eval_set_holds_the_evaluation_day_only(small_world, two_day_log_dir, seeded_models):
    data = load_logs(two_day_log_dir)
    split = split_logs(data, Split.DAY, 0.2, 0)
    teacher = load_scorer(seeded_models["fine"], small_world, FeatureStore.from_world(small_world), "fine")
    sizes = CascadeSizes(coarse=50, page=10)
    eval_set = EvalSet.build(small_world, data, split.eval_users, teacher, sizes, 40, 500, day=split.eval_day)
    assert len(eval_set.keys) == 40 and (eval_set.keys.day == split.eval_day).all()
    lists = data.lists(EVAL_SPACE)
    assert len(eval_set.list_ids) == 500 and (lists.day[eval_set.list_ids] == split.eval_day).all()
    # without the day, the same users' first sessions are on day 0
    assert (EvalSet.build(small_world, data, split.eval_users, teacher, sizes, 40, 500).keys.day == 0).all()


def test_the_truly_best_items_are_those_of_the_evaluation_day(two_day_log_dir, seeded_models):
    """With tastes that drift, the funnel's truly best items are those of the day evaluated."""
    drifting = World(SMALL.replace(taste_drift=1.0))
    data = load_logs(two_day_log_dir)
    split = split_logs(data, Split.DAY, 0.2, 0)
    teacher = load_scorer(seeded_models["fine"], drifting, FeatureStore.from_world(drifting), "fine")
    sizes = CascadeSizes(coarse=50, page=10)
    eval_set = EvalSet.build(drifting, data, split.eval_users, teacher, sizes, 40, 500, day=split.eval_day)
    users = eval_set.keys.user
    assert (eval_set.best == best_in_pool(drifting, users, 10, day=split.eval_day)).all()
    assert (eval_set.best != best_in_pool(drifting, users, 10, day=0)).any()  # drift moved them


def test_a_gmv_scorer_is_evaluated_by_its_gmv_score(small_world, small_coarse, eval_set):
    features = FeatureStore.from_world(small_world)
    click = evaluate_coarse(load_scorer(str(small_coarse.path), small_world, features, "coarse"), eval_set)
    gmv = evaluate_coarse(
        load_scorer(str(small_coarse.path), small_world, features, "coarse", "gmv"), eval_set
    )
    assert set(gmv) == set(click) and gmv["auc"] != click["auc"]  # another score, another ranking
