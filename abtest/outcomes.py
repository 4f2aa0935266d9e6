"""Per-user outcomes of finished sessions: the one place that turns ``run_sessions`` output
into metric columns, used by the A/B engine, the tuning trials and the ablation ladder.

Per session (one user on one day): pages (depth), impressions, clicks, purchases, GMV, the
impressions and clicks of new items (``world.item_is_new``: seed 000's new-product metric), the
simulator's expected values of the pages shown (clicks, purchases, GMV, and log P(no click),
from which a user's expected uCTR ``expected_clicked = 1 - exp(sum of log_no_click)`` =
1 - prod(1 - P(click)) over every item shown to the user), and the hitrate counts of seed 002 - the
user-day's purchases contained in the coarse stage's output on the session's first page, for
in-scene purchases (trivially high: a bought item was shown, hence passed the coarse stage on
its page) and for all purchases including the out-of-scene ones of
``simulator.logs.out_of_scene_purchases`` (global hitrate, the real test of a coarse ranker),
and the global counts again for the purchases of new items only (``new_global_hits``,
``new_global_purchases``: does the coarse stage keep the new items the user buys?).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # abtest.config imports the column names: keep this module light
    from policies.cascade import CascadeSessions
    from simulator.world import World

SESSION_COLUMNS = (
    "pages",
    "impressions",
    "clicks",
    "purchases",
    "gmv",
    "expected_clicks",
    "inscene_hits",
    "inscene_purchases",
    "oos_purchases",
    "global_hits",
    "global_purchases",
    "expected_purchases",
    "expected_gmv",
    "log_no_click",
    "new_impressions",
    "new_clicks",
    "new_global_hits",
    "new_global_purchases",
)
"""The columns of ``session_outcomes``: per-session counts, summed per user over days."""

EXACT_COLUMNS = (
    "exact_pages",
    "exact_impressions",
    "exact_clicks",
    "exact_purchases",
    "exact_gmv",
    "exact_log_no_click",
    "exact_new_impressions",
    "exact_new_clicks",
)
"""The sessions' totals in exact expectation over every draw - clicks, purchases and the
continue/leave decisions - given the policy (``simulator.session.ExactTotals``):
Rao-Blackwellised twins of pages, impressions, clicks, purchases, GMV and the new items'
impressions and clicks, with the same means and less variance; ``exact_log_no_click`` = log P(no
click in the session)."""

USER_COLUMNS = (
    "days",
    *SESSION_COLUMNS,
    *EXACT_COLUMNS,
    "clicked",
    "expected_clicked",
    "exact_clicked",
    "clicked_days",
    "exact_clicked_days",
)
"""Per-user metric columns: SESSION_COLUMNS and EXACT_COLUMNS summed over the experiment days,
days, ``clicked`` = clicks > 0, ``expected_clicked`` = 1 - exp(log_no_click), its expected
value given the pages shown, and ``exact_clicked`` = 1 - exp(exact_log_no_click), P(>= 1
click on any day) over every draw; ``clicked_days`` = the days with a click, ``exact_clicked_days``
= the sum over the user's days of P(>= 1 click that day) (per-day uCTR = clicked_days / days)."""

EXPECTED_TWINS = {
    "clicks": "expected_clicks",
    "clicked": "expected_clicked",
    "purchases": "expected_purchases",
    "gmv": "expected_gmv",
}
"""Realised per-user column -> the simulator's expected value of it given the pages shown."""

EXACT_TWINS = {
    "pages": "exact_pages",
    "impressions": "exact_impressions",
    "clicks": "exact_clicks",
    "clicked": "exact_clicked",
    "clicked_days": "exact_clicked_days",
    "purchases": "exact_purchases",
    "gmv": "exact_gmv",
    "new_impressions": "exact_new_impressions",
    "new_clicks": "exact_new_clicks",
}
"""Realised per-user column -> its exact expectation over every draw given the policy (the
true effect is measured on these)."""


def _contains(sets: np.ndarray, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """out[p] = items[p] in sets[rows[p]], for sets (B, C) padded with -1."""
    if rows.size == 0 or sets.shape[1] == 0:
        return np.zeros(rows.shape, dtype=bool)
    return (sets[rows] == items[:, None]).any(axis=1)


def session_outcomes(
    world: World, sessions: CascadeSessions, users: np.ndarray, day: int
) -> dict[str, np.ndarray]:
    """``SESSION_COLUMNS`` and ``EXACT_COLUMNS`` of the sessions of ``users`` (distinct, one
    session each) on ``day``, as run by ``policies.cascade.run_sessions(..., exact=True)``."""
    from simulator.logs import out_of_scene_purchases  # noqa: PLC0415 (pyarrow: only when simulating)

    t, coarse, b = sessions.totals, sessions.first_coarse_items, len(users)
    if t.exact is None:
        raise ValueError("session_outcomes needs the exact totals: run_sessions(..., exact=True)")
    counts = np.array([len(p) for p in sessions.purchased], dtype=np.int64)
    ins_rows = np.repeat(np.arange(b), counts)
    ins_items = np.concatenate(sessions.purchased) if b else np.empty(0, np.int64)
    buyer, oos_items = out_of_scene_purchases(world, users, day)
    by_user = np.argsort(users, kind="stable")
    oos_rows = by_user[np.searchsorted(users, buyer, sorter=by_user)]
    rows, items = np.concatenate([ins_rows, oos_rows]), np.concatenate([ins_items, oos_items])
    hit, new = _contains(coarse, rows, items), world.item_is_new[items]
    inscene_hits = np.bincount(ins_rows, hit[: len(ins_rows)], minlength=b)
    oos_count = np.bincount(oos_rows, minlength=b)
    return {
        "pages": t.pages,
        "impressions": t.impressions,
        "clicks": t.clicks,
        "purchases": t.purchases,
        "gmv": t.gmv,
        "expected_clicks": t.expected_clicks,
        "inscene_hits": inscene_hits.astype(np.float64),
        "inscene_purchases": counts.astype(np.float64),
        "oos_purchases": oos_count.astype(np.float64),
        "global_hits": np.bincount(rows, hit, minlength=b).astype(np.float64),
        "global_purchases": (counts + oos_count).astype(np.float64),
        "expected_purchases": t.expected_purchases,
        "expected_gmv": t.expected_gmv,
        "log_no_click": t.log_no_click,
        "new_impressions": t.new_impressions,
        "new_clicks": t.new_clicks,
        "new_global_hits": np.bincount(rows, hit & new, minlength=b).astype(np.float64),
        "new_global_purchases": np.bincount(rows, new, minlength=b).astype(np.float64),
        "exact_pages": t.exact.pages,
        "exact_impressions": t.exact.impressions,
        "exact_clicks": t.exact.clicks,
        "exact_purchases": t.exact.purchases,
        "exact_gmv": t.exact.gmv,
        "exact_log_no_click": np.log1p(-np.minimum(t.exact.clicked, 1.0)),
        "exact_new_impressions": t.exact.new_impressions,
        "exact_new_clicks": t.exact.new_clicks,
    }
