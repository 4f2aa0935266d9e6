"""Offline evaluation over held-out lists: list selection, teacher outputs, list metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies.checkpoint import load_checkpoint
from policies.data import split_by_user
from policies.evaluate import EVAL_SPACE, held_out_list_ids, list_metrics, teacher_outputs


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
