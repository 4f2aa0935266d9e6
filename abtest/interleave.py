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

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from policies.cascade import PageRanker, session_scores
from policies.interleave import Interleaved, TeamDraft
from simulator.recall import SessionKeys
from simulator.session import PageOutcome, SessionBatch, Simulator, run_pages

EXACT_CREDIT = ("exact_clicks", "exact_purchases", "exact_gmv")
"""The credits ``run_interleaved(..., exact=True)`` adds (the engine's)."""

CREDIT_METRICS = (
    "impressions",
    "clicks",
    "purchases",
    "gmv",
    "expected_clicks",
    "expected_purchases",
    "expected_gmv",
    *EXACT_CREDIT,
)
"""What is credited to the arm that contributed the item (``<metric>_<arm>`` columns): the
slots it filled, their clicks, purchases and GMV, and the simulator's expected values of
these given the page (P(click), P(click) P(purchase | click), times the price), which remove
the coin flips as ``abtest.outcomes``' expected_* columns do, and their exact expectations over
every draw (each page's expected credit weighted by the probability that the user reaches it,
``simulator.session.ExactTotals``), which also remove the session's length."""


def run_interleaved(
    sim: Simulator, rankers: Mapping[str, PageRanker], keys: SessionKeys, seed: int, exact: bool = False
) -> pd.DataFrame:
    """Run sessions ``keys`` to their end on team-draft pages of ``rankers`` (arm name -> page
    ranker, in team order); one row per session: user, day, session, the session's own totals
    (pages and every credited metric, whatever arm contributed) and the credit ``<metric>_<arm>``
    of every arm. ``seed`` draws the picking order (``TeamDraft``). ``exact``: also the
    ``EXACT_CREDIT`` (every session is then ranked to max_pages, ``run_pages``)."""
    arms = list(rankers)
    interleave = TeamDraft([rankers[a] for a in arms], seed)
    b, n_arms = len(keys), len(arms)
    metrics = CREDIT_METRICS if exact else tuple(m for m in CREDIT_METRICS if m not in EXACT_CREDIT)
    credit = {m: np.zeros((b, n_arms)) for m in metrics}
    teams: np.ndarray | None = None
    price = sim.world.item_price

    def choose(batch: SessionBatch, page: int, rows: np.ndarray) -> np.ndarray:
        nonlocal teams
        ranked: Interleaved = interleave(batch)
        teams = ranked.teams
        return ranked.slots

    def observe(rows: np.ndarray, out: PageOutcome) -> None:
        shown = out.items >= 0  # a slot the simulator left empty earns no arm anything
        item_price = price[np.maximum(out.items, 0)].astype(np.float64)
        p_buy = out.p_click * out.p_purchase
        gain = {
            "impressions": shown,
            "clicks": out.clicks,
            "purchases": out.purchases,
            "gmv": out.purchases * item_price,
            "expected_clicks": out.p_click,
            "expected_purchases": p_buy,
            "expected_gmv": p_buy * item_price,
        }
        for metric, values in gain.items():
            r, k = np.nonzero(shown & (values != 0))
            np.add.at(credit[metric], (rows[r], teams[r, k]), values[r, k].astype(np.float64))

    def observe_exact(rows: np.ndarray, out: PageOutcome, reach: np.ndarray) -> None:
        shown = out.items >= 0
        p_buy = out.p_click * out.p_purchase
        item_price = price[np.maximum(out.items, 0)].astype(np.float64)
        gain = {"exact_clicks": out.p_click, "exact_purchases": p_buy, "exact_gmv": p_buy * item_price}
        for metric, values in gain.items():
            r, k = np.nonzero(shown & (values != 0))
            np.add.at(credit[metric], (rows[r], teams[r, k]), reach[r] * values[r, k])

    with session_scores():
        totals = run_pages(sim, sim.start(keys), choose, observe, exact, observe_exact if exact else None)
    if exact:
        exact_totals = {"exact_clicks": totals.exact.clicks, "exact_purchases": totals.exact.purchases}
        exact_totals["exact_gmv"] = totals.exact.gmv
    else:
        exact_totals = {}
    frame = {"user": keys.user, "day": keys.day, "session": keys.session}
    frame |= {
        name: exact_totals[name] if name in exact_totals else getattr(totals, name)
        for name in ("pages", *metrics)
    }
    for metric in metrics:
        for j, arm in enumerate(arms):
            frame[f"{metric}_{arm}"] = credit[metric][:, j]
    return pd.DataFrame(frame)


def credit_by_arm(sessions: pd.DataFrame, arms: Sequence[str]) -> pd.DataFrame:
    """``run_interleaved``'s rows in the engine's long form: one row per session and arm
    (by session, then arm) with columns user, day, arm and ``CREDIT_METRICS`` (that arm's
    credit), so a per-user table of them is analysed like a paired one."""
    n = len(sessions)
    frame = {
        "user": np.repeat(sessions["user"].to_numpy(), len(arms)),
        "day": np.repeat(sessions["day"].to_numpy(), len(arms)),
        "arm": np.tile(np.asarray(arms, dtype=object), n),
    }
    for metric in CREDIT_METRICS:
        frame[metric] = np.column_stack([sessions[f"{metric}_{a}"].to_numpy() for a in arms]).ravel()
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
