"""The served stages as plain code (no Ray): they are ``Cascade.rank`` split in two, batching
does not change a page, and bad requests or app arguments are refused with a message."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.config import ConfigError
from policies.rankers import PopularityScorer, RandomScorer
from serving.args import AppArgs, app_args
from serving.pipeline import (
    PageRequests,
    RecallStage,
    assign_arms,
    exclusion_mask,
    gather_results,
    pad_rows,
    recall_slots,
)
from serving.stages import CoarseStage, FineStage
from simulator import SMALL, SessionKeys
from simulator.recall import Recall


@pytest.fixture(scope="module")
def recall_stage(small_world) -> RecallStage:
    return RecallStage(small_world)


def _split(n: int, cuts: list[int]) -> list[slice]:
    edges = [0, *sorted({c % (n + 1) for c in cuts}), n]
    return [slice(a, b) for a, b in itertools.pairwise(edges) if b > a]


@settings(deadline=None, max_examples=12)
@given(
    users=st.lists(st.integers(0, SMALL.n_users - 1), min_size=1, max_size=6),
    share=st.floats(0.0, 1.0),
    arm=st.sampled_from(["control", "treatment"]),
    seed=st.integers(0, 2**16),
)
def test_stages_are_cascade_rank(reference, recall_stage, users, share, arm, seed):
    """Coarse then fine stage, with exclusions given as item ids, is ``Cascade.rank`` with
    the same exclusions given as a recall-set mask."""
    cascade = reference[arm]
    users = np.array(users)
    recall = recall_stage.run(users, np.zeros_like(users), np.zeros_like(users))
    mask = np.random.default_rng(seed).random(recall.shape) < share
    exclude = pad_rows([row[m] for row, m in zip(recall, mask, strict=True)])
    expected = cascade.rank(users, recall, mask)

    coarse = CoarseStage(cascade.coarse, cascade.sizes.coarse).run(users, recall, exclude)
    fine = FineStage(cascade.fine, cascade.sizes.page).run(users, coarse)
    np.testing.assert_array_equal(coarse.items, expected.coarse_items)
    np.testing.assert_array_equal(coarse.slots, expected.coarse_slots)
    np.testing.assert_array_equal(fine.items, expected.page)
    np.testing.assert_array_equal(fine.slots, expected.slots)
    np.testing.assert_array_equal(fine.scores, expected.page_scores)
    assert (coarse.version, fine.fine_version) == (cascade.coarse.version, cascade.fine.version)


@settings(deadline=None, max_examples=10)
@given(
    users=st.lists(st.integers(0, SMALL.n_users - 1), min_size=1, max_size=8),
    cuts=st.lists(st.integers(0, 8), max_size=3),
    n_excluded=st.integers(0, 30),
)
def test_batched_calls_equal_single_calls(reference, recall_stage, users, cuts, n_excluded):
    """What ``@serve.batch`` runs (``run_many`` over several calls) equals each call alone,
    for recall, coarse and fine, with calls of different coarse widths mixed in one batch."""
    users = np.array(users)
    zeros = np.zeros_like(users)
    parts = _split(len(users), cuts)
    recall = recall_stage.run(users, zeros, zeros)
    many = recall_stage.run_many(
        [users[p] for p in parts], [zeros[p] for p in parts], [zeros[p] for p in parts]
    )
    np.testing.assert_array_equal(np.concatenate(many), recall)

    exclude = recall[:, :n_excluded]
    coarse_by_arm = {
        arm: CoarseStage(c.coarse, c.sizes.coarse).run_many(
            [users[p] for p in parts],
            [zeros[p] for p in parts],
            [zeros[p] for p in parts],
            [recall[p] for p in parts],
            [exclude[p] for p in parts],
        )
        for arm, c in reference.items()
    }
    fine = FineStage(reference["control"].fine, SMALL.page_size)
    calls = [(arm, i) for i in range(len(parts)) for arm in reference]  # widths 100 and 40 interleaved
    outs = fine.run_many(
        [users[parts[i]] for _, i in calls],
        [zeros[parts[i]] for _, i in calls],
        [zeros[parts[i]] for _, i in calls],
        [coarse_by_arm[a][i] for a, i in calls],
    )
    for (arm, i), out in zip(calls, outs, strict=True):
        alone = fine.run(
            users[parts[i]],
            CoarseStage(reference[arm].coarse, reference[arm].sizes.coarse).run(
                users[parts[i]], recall[parts[i]], exclude[parts[i]]
            ),
        )
        np.testing.assert_array_equal(out.items, alone.items)
        np.testing.assert_array_equal(out.scores, alone.scores)
        assert out.coarse_version == reference[arm].coarse.version


@settings(deadline=None, max_examples=8)
@given(
    users=st.lists(st.integers(0, SMALL.n_users - 1), min_size=1, max_size=5, unique=True),
    arm=st.sampled_from(["control", "treatment"]),
    pages=st.integers(1, 12),
    lost=st.integers(0, 12),
)
def test_cached_stages_over_a_session_equal_rescoring(reference, recall_stage, users, arm, pages, lost):
    """Page after page of the same sessions, the stages' session caches give the pages of
    ``Cascade.rank``; at page ``lost`` the requests land on fresh replicas (empty caches)."""
    cascade = reference[arm]
    users = np.array(users)
    days, sessions = np.full_like(users, 2), np.zeros_like(users)
    recall = recall_stage.run(users, days, sessions)
    coarse, fine = CoarseStage(cascade.coarse, cascade.sizes.coarse), FineStage(cascade.fine, SMALL.page_size)
    shown = np.zeros(recall.shape, dtype=bool)
    for page in range(pages):
        if page == lost:
            coarse, fine = (
                CoarseStage(cascade.coarse, cascade.sizes.coarse),
                FineStage(cascade.fine, SMALL.page_size),
            )
        exclude = pad_rows([row[m] for row, m in zip(recall, shown, strict=True)])
        window = coarse.run(users, recall, exclude, days, sessions)
        out = fine.run(users, window, days, sessions)
        expected = cascade.rank(users, recall, shown)
        np.testing.assert_array_equal(out.items, expected.page)
        np.testing.assert_array_equal(out.scores, expected.page_scores)
        np.testing.assert_array_equal(window.items, expected.coarse_items)
        rows, cols = np.nonzero(out.slots >= 0)
        shown[rows, out.slots[rows, cols]] = True


def test_swap_is_one_reference(small_world):
    """A call reads the scorer once: a swap changes the version of the next call only."""
    stage = CoarseStage(PopularityScorer(small_world), 20)
    users = np.arange(3)
    recall = Recall(small_world)(SessionKeys.of(users)).items
    none = np.full((3, 0), -1)
    assert stage.run(users, recall, none).version == "popularity"
    stage.swap(RandomScorer(7))
    assert stage.run(users, recall, none).version == "random-7"


def test_exclusion_mask_and_slots(small_world):
    recall = Recall(small_world)(SessionKeys.of([1, 2])).items
    exclude = np.array([[recall[0, 3], recall[0, 0], -1], [recall[1, 5], 999_999, recall[0, 3]]])
    mask = exclusion_mask(recall, exclude)
    assert mask.sum() == 3 + (recall[0, 3] in recall[1])
    assert mask[0, 3] and mask[0, 0] and mask[1, 5]
    items = np.array([[recall[0, 7], -1], [recall[1, 2], recall[1, 0]]])
    np.testing.assert_array_equal(recall_slots(recall, items), [[7, -1], [2, 0]])
    foreign = np.setdiff1d(np.arange(SMALL.n_items), recall[0])[:1]
    with pytest.raises(ValueError, match="not in the recall set"):
        recall_slots(recall[:1], foreign[None, :])


def test_assignment_is_the_ab_engines(app_args):
    users = np.arange(SMALL.n_users)
    experiment = app_args.experiment()
    arms = tuple(app_args.arms)
    got = assign_arms(PageRequests.of(users), arms, experiment)
    np.testing.assert_array_equal(got, experiment.assign(users))
    assert {experiment.arm_of(int(u)) for u in users[got == 1]} == {"treatment"}
    forced = assign_arms(PageRequests.of(users, arm="treatment"), arms, experiment)
    assert (forced == 1).all()
    assert (assign_arms(PageRequests.of(users), ("only",), None) == 0).all()


def test_gather_restores_request_order(reference, recall_stage):
    users = np.array([5, 6, 7, 8])
    recall = recall_stage.run(users, 0 * users, 0 * users)
    rows = {"control": np.array([0, 3]), "treatment": np.array([1, 2])}
    groups = []
    for arm, r in rows.items():
        c = reference[arm]
        coarse = CoarseStage(c.coarse, c.sizes.coarse).run(users[r], recall[r], np.full((2, 0), -1))
        groups.append((r, arm, FineStage(c.fine, c.sizes.page).run(users[r], coarse)))
    res = gather_results(4, groups, [recall[r] for r in rows.values()])
    assert res.arms.tolist() == ["control", "treatment", "treatment", "control"]
    np.testing.assert_array_equal(res.recall, recall)
    assert res.coarse_items.shape == (4, 100)
    assert (res.coarse_items[[1, 2], 40:] == -1).all()
    np.testing.assert_array_equal(res.items[[1, 2]], groups[1][2].items)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"users": np.array([SMALL.n_users])}, "user ids"),
        ({"users": np.array([-1])}, "user ids"),
        ({"pages": np.array([-1])}, "pages must be >= 0"),
        ({"days": np.array([-2])}, "days must be >= 0"),
        ({"exclude": np.array([[SMALL.n_items]])}, "excluded item ids"),
        ({"exclude": np.full((1, SMALL.recall_size + 1), 3)}, "at most"),
        ({"arm": "nope"}, "unknown arm"),
        ({"sessions": np.array([0, 0])}, "rows for 1 users"),
        ({"pages": np.array([0.5])}, "integer array"),
    ],
)
def test_page_requests_are_validated(changes, message):
    requests = dataclasses.replace(PageRequests.of([3]), **changes)
    with pytest.raises(ValueError, match=message):
        requests.validate(SMALL, ("control", "treatment"))


def test_page_requests_of_rejects_non_integers():
    with pytest.raises(ValueError, match="integer"):
        PageRequests.of([1.5])
    with pytest.raises(ValueError, match="rows"):
        PageRequests.of([1, 2], exclude=[[1]])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"world": "nowhere.toml"}, "world: must be one of"),
        ({"fine": "missing.pt"}, "checkpoint file"),
        ({"arms": {}}, "at least one arm"),
        ({"arms": {"a b": {}}}, "arm name"),
        ({"arms": {"a": {"coarse": "popularity", "size": 3}}}, "unknown key"),
        ({"arms": {"a": {"coarse_size": 5}}}, "page size"),
        ({"arms": {"a": {"coarse_size": SMALL.recall_size + 1}}}, "exceeds the recall size"),
        ({"arms": {"a": {"coarse_score": "margin"}}}, "coarse_score: must be one of"),
        ({"arms": {"a": {"coarse": "oracle", "coarse_score": "gmv"}}}, "applies to a coarse checkpoint"),
        ({"arms": {"a": {}, "b": {}}, "assignment": {"shares": {"a": 1.0}}}, "shares: name arms"),
        ({"arms": {"a": {}, "b": {}}, "assignment": {"shares": {"a": 0.7, "b": 0.7}}}, "sum to 1"),
        ({"colour": "red"}, "unknown key"),
    ],
)
def test_app_args_are_validated(changes, message):
    with pytest.raises(ConfigError, match=message):
        app_args(changes)


def test_app_args_resolve(tmp_path, seeded_models):
    (tmp_path / "w.toml").write_text(
        "[world]\nn_items = 3000\nn_users = 100\nrecall_size = 400\nlogging_coarse_size = 100\n"
    )
    args = AppArgs(world=str(tmp_path / "w.toml"), arms={"a": {}, "b": {"coarse": seeded_models["coarse_a"]}})
    assert args.world_config.n_users == 100
    assert args.coarse_size("a") == args.world_config.logging_coarse_size
    assert args.experiment().shares == (0.5, 0.5)
    assert AppArgs().experiment() is None
