"""The short online A/B that scores a trial: the same users, the same fresh day, two cascades.

Design (paired, common random numbers). The simulator keys every draw by (user, day,
session, item): recall sets, clicks, purchases and the decision to read on. So when the same
held-out users run one session on the same fresh day through the control's cascade and
through the trial's, the two sessions differ only where the policies differ — an item shown
in both arms gets the same coin flip. Each user is their own control: the per-user
difference removes the between-user variance that dominates an A/B with split traffic (the
usual hashed split is what ``abtest`` and ``run_ab.py`` do; a search can afford the paired
design because both arms are simulated).

Statistics (``abtest.stats.paired_lift``), per metric y with control values c_i and trial
values t_i of the same n users: the relative lift r = t̄ / c̄ − 1 by the delta method, the
absolute effect by the paired t-test. For comparison the search also records
the interval ``abtest.stats.analyse`` gives when the two arms are analysed as independent
groups (Welch, delta method): valid but wider, since it ignores the pairing.

Speed. A cascade scores each request on its own (scores must not depend on the batch), so the
fine ranker — 600 candidates per page — dominates the cost of a session. Both stages score
(user, item) pairs, and each user's candidates all come from one recall set, so the scores of
every recall item are computed once per user (``TableScorer.precompute``) and looked up on
every page: the fine scores once before the search (shared by every trial and the control),
the coarse scores once per trial, all on the A/B's day (a scorer whose scores depend on the
day, ``score_on_day``, is tabled for that day). Coarse scores are bit-identical to scoring page
by page (the same calls); fine scores of a recall set scored at once may differ from scoring
600 at a time in the last float32 bit, equally in both arms.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from abtest.outcomes import session_outcomes as abtest_outcomes
from abtest.stats import paired_lift
from policies.cascade import Cascade, run_sessions, stage_scores
from policies.rankers import Scorer
from simulator.recall import SessionKeys
from simulator.session import Simulator

OUTCOMES = (
    "uctr",
    "clicks",
    "gmv",
    "expected_clicks",
    "pages",
    "purchases",
    "exact_uctr",
    "exact_clicks",
    "exact_gmv",
)
"""Per-user online outcomes of one session: clicked at all (0/1), clicks, GMV, expected
clicks (the simulator's truth), pages viewed (depth), purchases."""


class TableScorer:
    """Scores looked up in a table of (user, recall set) rows computed once.

    ``users`` (U,) are distinct; ``recall`` (U, R) holds each user's candidates and ``scores``
    (U, R) their scores. ``score(users, items)`` answers for items of those recall sets;
    items outside a user's recall set (the cascade asks for item 0 where it pads) score −inf.
    ``day``: the day the scores are of when they depend on it (a scorer with ``score_on_day``,
    e.g. the oracle under taste drift), None when they do not; the cascade calls
    ``score_on_day`` with each request's day, and a table of one day refuses the others.
    """

    def __init__(
        self, users: np.ndarray, recall: np.ndarray, scores: np.ndarray, version: str, day: int | None = None
    ) -> None:
        users, recall = np.asarray(users, dtype=np.int64), np.asarray(recall, dtype=np.int64)
        scores = np.asarray(scores, dtype=np.float64)
        if recall.ndim != 2 or users.shape != recall.shape[:1] or scores.shape != recall.shape:
            raise ValueError(
                f"need users (U,), recall and scores (U, R); got {users.shape}, {recall.shape}, "
                f"{scores.shape}"
            )
        if len(np.unique(users)) != len(users):
            raise ValueError("TableScorer needs distinct users (one recall set each)")
        self.version, self.day = version, day
        by_user = np.argsort(users, kind="stable")
        self.users, self.recall, self.scores = users[by_user], recall[by_user], scores[by_user]
        order = np.argsort(self.recall, axis=1, kind="stable")
        self._span = int(self.recall.max(initial=0)) + 1
        rows = np.arange(len(users))[:, None]
        self._keys = (rows * self._span + np.take_along_axis(self.recall, order, 1)).ravel()  # sorted
        self._sorted_scores = np.take_along_axis(self.scores, order, 1).ravel()

    @classmethod
    def precompute(cls, scorer: Scorer, users: np.ndarray, recall: np.ndarray, day: int = 0) -> TableScorer:
        """The table of ``scorer`` over each user's recall set on ``day`` (one call per user;
        the day matters only to a scorer with ``score_on_day``)."""
        users, recall = np.asarray(users), np.asarray(recall)
        scores = stage_scores(scorer, users, recall, np.full(len(users), day, dtype=np.int64))
        on_day = day if hasattr(scorer, "score_on_day") else None
        return cls(users, recall, scores, f"table:{scorer.version}", on_day)

    def rows(self, users: np.ndarray) -> np.ndarray:
        """Table rows of ``users``; KeyError for a user without a row."""
        users = np.asarray(users, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.users, users), len(self.users) - 1)
        missing = self.users[pos] != users
        if missing.any():
            raise KeyError(f"no precomputed scores for users {users[missing][:5].tolist()}")
        return pos

    def recall_of(self, users: np.ndarray) -> np.ndarray:
        """The recall sets (B, R) of ``users`` (B,)."""
        return self.recall[self.rows(users)]

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        rows = self.rows(users)
        items = np.asarray(items, dtype=np.int64)
        if items.shape == (len(rows), self.recall.shape[1]) and np.array_equal(items, self.recall[rows]):
            return self.scores[rows]  # a fresh copy: the coarse stage writes into it
        query = rows[:, None] * self._span + items
        pos = np.minimum(np.searchsorted(self._keys, query), len(self._keys) - 1)
        found = (self._keys[pos] == query) & (items >= 0) & (items < self._span)
        return np.where(found, self._sorted_scores[pos], -np.inf)

    def score_on_day(self, users: np.ndarray, items: np.ndarray, days: np.ndarray) -> np.ndarray:
        """``score`` for requests on ``days`` (B,); ValueError for a day other than the table's
        when its scores depend on the day."""
        days = np.asarray(days)
        if self.day is not None and (days != self.day).any():
            other = np.unique(days[days != self.day]).tolist()
            raise ValueError(f"scores precomputed for day {self.day}, asked for day(s) {other}")
        return self.score(users, items)


def session_outcomes(sim: Simulator, cascade: Cascade, keys: SessionKeys) -> dict[str, np.ndarray]:
    """Per-user outcomes (``OUTCOMES``) of sessions ``keys`` (one per user, users sorted) run
    through ``cascade`` (``abtest.outcomes.session_outcomes``; uctr = clicked at all)."""
    days = np.unique(keys.day)
    if len(days) != 1:
        raise ValueError(f"sessions of one day only, got days {days.tolist()}")
    sessions = run_sessions(sim, cascade, keys, exact=True)
    columns = abtest_outcomes(sim.world, sessions, keys.user, int(days[0]))
    columns["uctr"] = (columns["clicks"] > 0).astype(np.float64)
    columns["exact_uctr"] = -np.expm1(columns["exact_log_no_click"])
    return {name: columns[name] for name in OUTCOMES}


def unpaired_lift_ci(control: np.ndarray, trial: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """The relative lift's interval when the arms are analysed as independent groups
    (``abtest.stats.analyse``: Welch, delta method, no CUPED): for comparison only."""
    from abtest.stats import Mean, analyse  # noqa: PLC0415 (keeps this module light)

    frame = pd.DataFrame(
        {"arm": ["control"] * len(control) + ["trial"] * len(trial), "y": np.concatenate([control, trial])}
    )
    record = analyse(frame, "arm", "control", {"y": Mean("y")}, alpha=alpha, correction="none").records[0]
    return record.rel_ci_lower, record.rel_ci_upper


def online_record(
    control: dict[str, np.ndarray], trial: dict[str, np.ndarray], objective: str, alpha: float
) -> dict[str, float]:
    """Flat Tune metrics of a trial's A/B: ``online/<metric>_{lift,lift_lo,lift_hi,...}`` for
    every outcome, ``objective`` (the lift of ``objective``) with its interval, and the
    objective's unpaired interval for comparison."""
    out: dict[str, float] = {}
    for name in OUTCOMES:
        lift = paired_lift(control[name], trial[name], alpha)
        for field in ("control", "trial", "lift", "lift_lo", "lift_hi", "pvalue"):
            out[f"online/{name}_{field}"] = getattr(lift, field)
    out["objective"] = out[f"online/{objective}_lift"]
    out["objective_lo"] = out[f"online/{objective}_lift_lo"]
    out["objective_hi"] = out[f"online/{objective}_lift_hi"]
    lo, hi = unpaired_lift_ci(control[objective], trial[objective], alpha)
    out["objective_unpaired_lo"], out["objective_unpaired_hi"] = lo, hi
    return out
