"""Team-draft interleaving: the draft's invariants (hypothesis), and the page ranker over real
cascades: pages from the arms' rankings, deterministic, batch-independent, scored once."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.cascade import Cascade, CascadeSizes, run_sessions
from policies.interleave import TeamDraft, team_draft
from policies.rankers import OracleScorer, PopularityScorer, RandomScorer
from simulator import SessionKeys


@st.composite
def drafts(draw, full: bool):
    """Arms' lists over a small pool (so they overlap), priorities, and the page size."""
    n_arms, rows, width = draw(st.integers(2, 4)), draw(st.integers(1, 5)), draw(st.integers(1, 8))
    pool = draw(st.integers(width, 2 * width + 2))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    lists = np.full((n_arms, rows, width), -1, dtype=np.int64)
    for a in range(n_arms):
        for b in range(rows):
            n = width if full else int(rng.integers(0, width + 1))
            lists[a, b, :n] = rng.choice(pool, n, replace=False)
    return lists, rng.random((rows, width, n_arms)), width


def _check_draft(lists, priority, size):
    page, teams, source = team_draft(lists, priority, size)
    for b in range(page.shape[0]):
        shown = page[b][page[b] >= 0]
        n = len(shown)
        assert np.all(page[b, n:] == -1) and np.all(teams[b, n:] == -1)
        assert len(set(shown.tolist())) == n  # no duplicates
        candidates = {int(x) for x in lists[:, b].ravel() if x >= 0}
        assert n == min(size, len(candidates))  # the page is filled while any arm has an item
        for j in range(n):
            arm = lists[teams[b, j], b]
            assert arm[source[b, j]] == page[b, j]  # the item comes from its team's ranking
            # and it is that arm's best item not yet on the page when it picked
            assert set(arm[: source[b, j]].tolist()) <= set(page[b, :j].tolist())
        for a in range(lists.shape[0]):
            assert np.all(np.diff(source[b, :n][teams[b, :n] == a]) > 0)  # each team keeps its order
    return page, teams


@settings(max_examples=200, deadline=None)
@given(drafts(full=False))
def test_team_draft_picks_each_arms_best_remaining_item(draft):
    _check_draft(*draft)


@settings(max_examples=200, deadline=None)
@given(drafts(full=True))
def test_team_sizes_differ_by_at_most_one_when_no_arm_runs_out(draft):
    lists, priority, size = draft
    page, teams = _check_draft(lists, priority, size)
    assert np.all(page >= 0)
    sizes = np.stack([(teams == a).sum(axis=1) for a in range(lists.shape[0])], axis=1)
    assert np.all(sizes.max(axis=1) - sizes.min(axis=1) <= 1)


@pytest.fixture(scope="module")
def arms(small_world) -> list[Cascade]:
    sizes = CascadeSizes(coarse=50, page=small_world.config.page_size)
    oracle = OracleScorer(small_world)
    return [
        Cascade(PopularityScorer(small_world), oracle, sizes),
        Cascade(oracle, oracle, sizes),
        Cascade(RandomScorer(5), oracle, sizes),
    ]


@pytest.fixture(scope="module")
def batch(small_sim):
    batch = small_sim.start(SessionKeys.of(np.arange(60), day=2))
    rng = np.random.default_rng(0)
    batch.shown |= rng.random(batch.shown.shape) < 0.3  # as if pages had been shown
    batch.pages[:] = rng.integers(0, 4, len(batch))
    return batch


@pytest.mark.parametrize("n_arms", [2, 3])
def test_pages_come_from_the_arms_pages_and_record_their_teams(arms, batch, n_arms):
    ranked = TeamDraft(arms[:n_arms], seed=3)(batch)
    own = [arm(batch) for arm in arms[:n_arms]]
    k = ranked.slots.shape[1]
    assert np.all(ranked.slots >= 0) and np.all(ranked.teams >= 0)
    for b in range(len(batch)):
        assert len(set(ranked.slots[b].tolist())) == k
        assert not batch.shown[b, ranked.slots[b]].any()  # what was shown stays excluded
        for j in range(k):
            team = own[ranked.teams[b, j]]
            assert ranked.slots[b, j] in team.slots[b]
            assert ranked.page_scores[b, j] == team.page_scores[b][team.slots[b] == ranked.slots[b, j]][0]
        np.testing.assert_array_equal(batch.recall.items[b, ranked.slots[b]], ranked.page[b])
        union = set().union(*(r.coarse_items[b].tolist() for r in own)) - {-1}
        coarse = ranked.coarse_items[b][ranked.coarse_items[b] >= 0]
        assert len(coarse) == len(union) and set(coarse.tolist()) == union


def test_pages_are_deterministic_and_do_not_depend_on_the_batch(arms, batch):
    whole = TeamDraft(arms, seed=11)(batch)
    again = TeamDraft(arms, seed=11)(batch)
    np.testing.assert_array_equal(whole.slots, again.slots)
    np.testing.assert_array_equal(whole.teams, again.teams)
    rows = np.array([41, 3, 17])  # a subset, in another order
    part = TeamDraft(arms, seed=11)(batch.take(rows))
    np.testing.assert_array_equal(part.slots, whole.slots[rows])
    np.testing.assert_array_equal(part.teams, whole.teams[rows])
    other = TeamDraft(arms, seed=12)(batch)
    assert not np.array_equal(other.teams, whole.teams)  # the seed draws the order


def test_the_first_pick_is_a_fair_coin(arms, small_sim):
    """Over n sessions the first slot's team is arm 0 with probability 1/2: within 3 sigma."""
    n = 2000
    batch = small_sim.start(SessionKeys.of(np.arange(n)))
    teams = TeamDraft(arms[:2], seed=0)(batch).teams
    assert abs((teams[:, 0] == 0).sum() - n / 2) < 3 * np.sqrt(n / 4)


def test_an_arm_interleaved_with_itself_shows_its_own_pages(arms, small_sim):
    keys = SessionKeys.of(np.arange(80))
    alone = run_sessions(small_sim, arms[0], keys)
    twice = run_sessions(small_sim, TeamDraft([arms[0], arms[0]], seed=1), keys)
    for name in ("pages", "impressions", "clicks", "purchases"):
        np.testing.assert_array_equal(getattr(alone.totals, name), getattr(twice.totals, name))


class _Counting:
    """A scorer wrapper counting the rows it scores."""

    def __init__(self, scorer) -> None:
        self.scorer, self.version, self.rows = scorer, scorer.version, 0

    def score(self, users, items):
        self.rows += len(users)
        return self.scorer.score(users, items)


def test_each_arm_scores_a_session_once_per_coarse_stage(small_world, small_sim):
    sizes = CascadeSizes(coarse=50, page=small_world.config.page_size)
    counters = [_Counting(PopularityScorer(small_world)), _Counting(OracleScorer(small_world))]
    cascades = [Cascade(c, OracleScorer(small_world), sizes) for c in counters]
    keys = SessionKeys.of(np.arange(50))
    out = run_sessions(small_sim, TeamDraft(cascades, seed=2), keys)
    assert out.totals.pages.max() > 1  # later pages were ranked from the cache
    assert [c.rows for c in counters] == [len(keys), len(keys)]


def test_needs_two_arms(arms):
    with pytest.raises(ValueError, match="at least 2"):
        TeamDraft(arms[:1], seed=0)
