"""Interleaved traffic: every user's sessions run on team-draft pages of all arms, and each
click, purchase and GMV is credited to the arm that contributed the item.

    from abtest.interleave import preferences, run_interleaved, user_credit
    from abtest.stats import interleave_test

    sessions = run_interleaved(sim, {"control": cascade_a, "treatment": cascade_b}, keys, seed=7)
    users = user_credit(sessions)                                  # one row per user
    pref = preferences(users, "control", "treatment", "clicks")    # sign and difference
    interleave_test(users["clicks_treatment"], users["clicks_control"])

One design, one place: the team-draft page is ``policies.interleave.TeamDraft``; the
statistics live in ``abtest.stats`` (``interleave_test``). The engine's design switch calls
``run_interleaved`` per shard instead of the split's per-arm ``run_sessions``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from policies.cascade import PageRanker, session_scores
from policies.interleave import Interleaved, TeamDraft
from simulator.recall import SessionKeys
from simulator.session import PageOutcome, SessionBatch, Simulator, run_pages

CREDIT_METRICS = ("clicks", "purchases", "gmv")
"""What is credited to the arm that contributed the item: ``<metric>_<arm>`` columns."""

SESSION_TOTALS = ("pages", "impressions", "clicks", "purchases", "gmv")
"""The interleaved sessions' own totals (whatever arm contributed), kept beside the credit."""


def run_interleaved(
    sim: Simulator, rankers: Mapping[str, PageRanker], keys: SessionKeys, seed: int
) -> pd.DataFrame:
    """Run sessions ``keys`` to their end on team-draft pages of ``rankers`` (arm name -> page
    ranker, in team order); one row per session: user, day, session, ``SESSION_TOTALS`` and the
    credit ``<metric>_<arm>`` of every arm. ``seed`` draws the picking order (``TeamDraft``)."""
    arms = list(rankers)
    interleave = TeamDraft([rankers[a] for a in arms], seed)
    b, n_arms = len(keys), len(arms)
    credit = {m: np.zeros((b, n_arms)) for m in CREDIT_METRICS}
    teams: np.ndarray | None = None
    price = sim.world.item_price

    def choose(batch: SessionBatch, page: int, rows: np.ndarray) -> np.ndarray:
        nonlocal teams
        ranked: Interleaved = interleave(batch)
        teams = ranked.teams
        return ranked.slots

    def observe(rows: np.ndarray, out: PageOutcome) -> None:
        shown = out.items >= 0  # a slot the simulator left empty earns no arm anything
        gain = {
            "clicks": out.clicks,
            "purchases": out.purchases,
            "gmv": out.purchases * price[np.maximum(out.items, 0)].astype(np.float64),
        }
        for metric, values in gain.items():
            r, k = np.nonzero(shown & (values != 0))
            np.add.at(credit[metric], (rows[r], teams[r, k]), values[r, k].astype(np.float64))

    with session_scores():
        totals = run_pages(sim, sim.start(keys), choose, observe)
    frame = {"user": keys.user, "day": keys.day, "session": keys.session}
    frame |= {name: getattr(totals, name) for name in SESSION_TOTALS}
    for metric in CREDIT_METRICS:
        for j, arm in enumerate(arms):
            frame[f"{metric}_{arm}"] = credit[metric][:, j]
    return pd.DataFrame(frame)


def user_credit(sessions: pd.DataFrame) -> pd.DataFrame:
    """Per user (the randomisation unit of the preference test): ``run_interleaved``'s rows
    summed over the user's sessions and days, with ``days`` the number of sessions."""
    summed = sessions.drop(columns=["day", "session"]).groupby("user", sort=True).sum()
    summed.insert(0, "days", sessions.groupby("user", sort=True).size())
    return summed.reset_index()


def preferences(users: pd.DataFrame, control: str, treatment: str, metric: str = "clicks") -> pd.DataFrame:
    """Per user: the credit difference ``treatment - control`` on ``metric`` and its sign
    (+1 prefers the treatment, -1 the control, 0 a tie)."""
    diff = users[f"{metric}_{treatment}"].to_numpy() - users[f"{metric}_{control}"].to_numpy()
    return pd.DataFrame({"user": users["user"].to_numpy(), "difference": diff, "preference": np.sign(diff)})
