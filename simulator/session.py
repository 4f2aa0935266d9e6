"""The vectorised session engine: start many sessions, show pages, draw user responses.

Every draw is keyed by (user, day, session, item or page), never by batch position, so a
session's outcome does not depend on which other sessions share its batch. Clicks and
purchases are keyed by *item*: two A/B arms that show the same item to the same user get
the same coin flip (common random numbers), only scaled by a different position bias.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from common.rng import Stream, uniform
from simulator.recall import Recall, RecallSet, SessionKeys
from simulator.world import World, sigmoid


@dataclasses.dataclass
class SessionBatch:
    """Mutable state of B running sessions."""

    keys: SessionKeys
    recall: RecallSet
    shown: np.ndarray  # (B, R) bool: candidate already shown in this session
    pages: np.ndarray  # (B,) int64: pages shown so far
    active: np.ndarray  # (B,) bool: user still browsing

    def __len__(self) -> int:
        return len(self.keys)

    def take(self, index: np.ndarray) -> SessionBatch:
        """A new batch holding copies of the given rows."""
        return SessionBatch(
            keys=self.keys.take(index),
            recall=RecallSet(self.recall.items[index], self.recall.channels[index]),
            shown=self.shown[index],
            pages=self.pages[index],
            active=self.active[index],
        )


@dataclasses.dataclass(frozen=True)
class PageOutcome:
    """What happened on one page for each of B sessions (inactive sessions: all zero)."""

    items: np.ndarray  # (B, K) int64 item shown at each position, -1 = slot left empty
    clicks: np.ndarray  # (B, K) bool
    purchases: np.ndarray  # (B, K) bool
    gmv: np.ndarray  # (B,) float64
    expected_clicks: np.ndarray  # (B,) float64, sum of rho_k * sigma(z) over the page
    p_click: np.ndarray  # (B, K) float64 P(click) of each slot, rho_k * sigma(z) (0 where empty)
    p_purchase: np.ndarray  # (B, K) float64 P(purchase | click) of each slot (0 where empty)
    viewed: np.ndarray  # (B,) bool: the session was active and saw this page
    terminated: np.ndarray  # (B,) bool: the user left after this page
    truncated: np.ndarray  # (B,) bool: max_pages reached


class Simulator:
    """Runs sessions of one world; the only place where user responses are drawn."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.recall = Recall(world)
        self.examination = world.examination(np.arange(world.config.page_size))

    def start(self, keys: SessionKeys) -> SessionBatch:
        """Recall a candidate set for each session."""
        recall = self.recall(keys)
        b, r = recall.items.shape
        return SessionBatch(
            keys=keys,
            recall=recall,
            shown=np.zeros((b, r), dtype=bool),
            pages=np.zeros(b, dtype=np.int64),
            active=np.ones(b, dtype=bool),
        )

    def show(self, batch: SessionBatch, slots: np.ndarray) -> PageOutcome:
        """Show one page: ``slots`` (B, K) index the recall set (-1 = leave empty).

        Slots already shown earlier in the session, or repeated on the page, are left
        empty: an item is never shown twice in a session. Updates ``batch`` in place.
        """
        w, c = self.world, self.world.config
        slots = np.asarray(slots, dtype=np.int64)
        b, r = batch.recall.items.shape
        if slots.shape != (b, c.page_size):
            raise ValueError(f"slots must have shape {(b, c.page_size)}, got {slots.shape}")
        if slots.size and (slots.min() < -1 or slots.max() >= r):
            raise ValueError(f"slots must lie in [-1, {r}), got [{slots.min()}, {slots.max()}]")
        rows = np.arange(b)[:, None]
        valid = (slots >= 0) & batch.active[:, None]
        safe = np.maximum(slots, 0)
        valid &= ~batch.shown[rows, safe]
        k = c.page_size
        repeated = (slots[:, :, None] == slots[:, None, :]) & np.tri(k, k, -1, dtype=bool).T
        valid &= ~repeated.any(axis=1)

        items = np.where(valid, batch.recall.items[rows, safe], -1)
        safe_items = np.maximum(items, 0)
        users = batch.keys.user
        z = w.click_logits(users, safe_items, batch.keys.day)
        p_click = np.where(valid, self.examination * sigmoid(z), 0.0)
        user, day, session = batch.keys.column()
        clicks = uniform(c.seed, Stream.CLICK, user, day, session, safe_items) < p_click
        p_buy = sigmoid(w.purchase_logits(users, safe_items, z))
        p_purchase = np.where(valid, p_buy, 0.0)
        purchases = clicks & (uniform(c.seed, Stream.PURCHASE, user, day, session, safe_items) < p_buy)
        gmv = (purchases * w.item_price[safe_items]).sum(axis=1, dtype=np.float64)
        expected = p_click.sum(axis=1)

        viewed = batch.active.copy()
        shown_rows, shown_pos = np.nonzero(valid)
        batch.shown[shown_rows, safe[shown_rows, shown_pos]] = True
        batch.pages += viewed
        logit = c.continue_intercept + c.continue_slope * expected + c.continue_click_bonus * clicks.sum(1)
        stays = uniform(
            c.seed, Stream.CONTINUE, batch.keys.user, batch.keys.day, batch.keys.session, batch.pages
        ) < sigmoid(logit)
        terminated = viewed & ~stays
        truncated = viewed & stays & (batch.pages >= c.max_pages)
        batch.active &= stays & ~truncated
        return PageOutcome(
            items=items,
            clicks=clicks,
            purchases=purchases,
            gmv=gmv,
            expected_clicks=expected,
            p_click=p_click,
            p_purchase=p_purchase,
            viewed=viewed,
            terminated=terminated,
            truncated=truncated,
        )


ScoreFn = Callable[[SessionBatch], np.ndarray]
"""Scores every recall candidate of every session, (B, R), higher is shown first."""


@dataclasses.dataclass(frozen=True)
class SessionTotals:
    """Per-session totals of a batch of finished sessions (arrays of shape (B,)).

    The expected values are the simulator's, given the pages actually shown: they remove the
    click and purchase coin flips of those pages but keep the policy's effect (and the
    continue/leave draws that decided how many pages were shown). ``exact`` (when
    ``run_pages`` computed it) removes those too.
    """

    pages: np.ndarray
    impressions: np.ndarray
    clicks: np.ndarray
    purchases: np.ndarray
    gmv: np.ndarray
    expected_clicks: np.ndarray
    expected_purchases: np.ndarray
    """Sum over shown items of P(click) * P(purchase | click)."""
    expected_gmv: np.ndarray
    """Sum over shown items of P(click) * P(purchase | click) * price."""
    log_no_click: np.ndarray
    """Sum over shown items of log(1 - P(click)): P(no click in the session) = exp of it."""
    new_impressions: np.ndarray
    """Shown items that are new (``world.item_is_new``)."""
    new_clicks: np.ndarray
    """Clicks on new items."""
    exact: ExactTotals | None = None


@dataclasses.dataclass(frozen=True)
class ExactTotals:
    """Per session, the expectation of its totals over *every* draw - clicks, purchases and the
    continue/leave decisions - given the policy (arrays of shape (B,)).

    A page ranker sees what was shown, never the responses, so a session's p-th page is the
    same whatever the user did before; only whether the user reaches it is random. With
    ``reach_p`` = P(the user sees page p) and ``stay_p`` = P(continue | page p) =
    E_N[sigmoid(a + s E[clicks_p] + b N)], N ~ Poisson-binomial(P(click) of the page's slots)
    (the click coins are independent), ``reach_{p+1} = reach_p stay_p`` (clicks on different
    pages are independent) and E[total] = sum_p reach_p E[total on page p]. P(no click) sums,
    over the page L the user leaves after, P(no click on pages 1..L, stay after 1..L-1, leave
    after L). Rao-Blackwellised session totals: the same means as the realised ones, less
    variance. Sessions whose reach probability falls below ``EXACT_TOLERANCE`` stop (their
    remaining pages change any total by less than that times the page size times max_pages).
    """

    pages: np.ndarray
    impressions: np.ndarray
    clicks: np.ndarray
    purchases: np.ndarray
    gmv: np.ndarray
    new_impressions: np.ndarray
    """Shown items that are new, each weighted by the probability that the user reaches its page."""
    new_clicks: np.ndarray
    """Expected clicks on new items."""
    clicked: np.ndarray
    """P(at least one click in the session)."""


EXACT_TOLERANCE = 1e-9
"""A session's exact totals stop once its reach probability is below this."""


def new_shown(world: World, items: np.ndarray) -> np.ndarray:
    """Whether each slot of ``items`` (B, K; -1 = empty) shows a new item (``world.item_is_new``)."""
    return (items >= 0) & world.item_is_new[np.maximum(items, 0)]


def stay_probability(world: World, p_click: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P(continue after a page) for pages of slot click probabilities ``p_click`` (B, K), and
    P(no click on the page) (both (B,)): the continue logit a + s E[N] + b N averaged over the
    page's click count N ~ Poisson-binomial(p_click)."""
    c = world.config
    b, k = p_click.shape
    dist = np.zeros((b, k + 1))
    dist[:, 0] = 1.0
    for j in range(k):  # add slot j: N -> N + 1 with its click probability
        p = p_click[:, j : j + 1]
        dist[:, 1:] = dist[:, 1:] * (1 - p) + dist[:, :-1] * p
        dist[:, :1] *= 1 - p
    logit = c.continue_intercept + c.continue_slope * p_click.sum(axis=1, keepdims=True)
    logit = logit + c.continue_click_bonus * np.arange(k + 1)
    return (dist * sigmoid(logit)).sum(axis=1), dist[:, 0]


class _Exact:
    """The running sums of ``ExactTotals`` (one row per session of the original batch)."""

    def __init__(self, b: int) -> None:
        self.reach = np.ones(b)  # P(the user sees the next page)
        self.quiet = np.ones(b)  # P(the user sees the next page and has not clicked yet)
        names = ("pages", "impressions", "clicks", "purchases", "gmv", "new_impressions", "new_clicks")
        self.sums = {name: np.zeros(b) for name in names}
        self.no_click = np.zeros(b)

    def add(self, world: World, rows: np.ndarray, out: PageOutcome, last: bool) -> None:
        reach, quiet = self.reach[rows], self.quiet[rows]
        shown = out.items >= 0
        p_buy = out.p_click * out.p_purchase
        price = world.item_price[np.maximum(out.items, 0)]
        new = new_shown(world, out.items)
        page = {
            "pages": np.ones(len(rows)),
            "impressions": shown.sum(axis=1).astype(np.float64),
            "clicks": out.p_click.sum(axis=1),
            "purchases": p_buy.sum(axis=1),
            "gmv": (p_buy * price).sum(axis=1),
            "new_impressions": new.sum(axis=1).astype(np.float64),
            "new_clicks": (out.p_click * new).sum(axis=1),
        }
        for name, value in page.items():
            self.sums[name][rows] += reach * value
        stay, none = stay_probability(world, out.p_click)
        if last:  # truncated after this page: the session ends whatever the user does
            self.no_click[rows] += quiet * none
            self.reach[rows] = 0.0
            self.quiet[rows] = 0.0
            return
        stay_quiet = none * sigmoid(
            world.config.continue_intercept + world.config.continue_slope * page["clicks"]
        )
        self.no_click[rows] += quiet * (none - stay_quiet)  # no click on the page, then leaves
        self.reach[rows] = reach * stay
        self.quiet[rows] = quiet * stay_quiet

    def totals(self) -> ExactTotals:
        return ExactTotals(**self.sums, clicked=1.0 - self.no_click - self.quiet)


def page_order(scores: np.ndarray, n_slots: int) -> np.ndarray:
    """The best ``n_slots`` candidate indices per row, best first: (B, n_slots)."""
    n = min(n_slots, scores.shape[1])
    top = (
        np.argpartition(-scores, n - 1, axis=1)[:, :n]
        if n < scores.shape[1]
        else np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    )
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def page_slots(order: np.ndarray, page: int, page_size: int) -> np.ndarray:
    """Slots of page ``page`` of a fixed order (B, n): its entries pK..pK+K-1, -1 past the end."""
    slots = np.full((order.shape[0], page_size), -1, dtype=np.int64)
    part = order[:, page * page_size : (page + 1) * page_size]
    slots[:, : part.shape[1]] = part
    return slots


PageChooser = Callable[[SessionBatch, int, np.ndarray], np.ndarray]
"""Given the running sessions, the page number and each row's index in the original batch,
the slots (B, K) to show."""


def run_pages(
    sim: Simulator,
    batch: SessionBatch,
    choose: PageChooser,
    observe: Callable[[np.ndarray, PageOutcome], None] | None = None,
    exact: bool = False,
    observe_exact: Callable[[np.ndarray, PageOutcome, np.ndarray], None] | None = None,
) -> SessionTotals:
    """Run started sessions to their end, showing the pages ``choose`` picks; ``observe``
    sees every page's outcome with the original row of each session.

    ``exact``: also the ``ExactTotals``. Every session is then shown its pages beyond where
    the user left (while its reach probability is above ``EXACT_TOLERANCE``): ``choose`` is
    called for those too; the realised totals and what ``observe`` sees stop where the user
    left, so they are the same as without ``exact``. ``observe_exact`` sees every page shown
    for the exact totals, with the probability (B,) that the user reaches it.
    """
    names = [f.name for f in dataclasses.fields(SessionTotals) if f.name != "exact"]
    price = sim.world.item_price
    totals = {name: np.zeros(len(batch)) for name in names}
    rows = np.arange(len(batch))  # original row of each row still in `batch`
    real = np.ones(len(batch), dtype=bool)  # exact: the user is still browsing (by the draws)
    ev = _Exact(len(batch)) if exact else None
    max_pages = sim.world.config.max_pages
    for page in range(max_pages):
        alive = batch.active if ev is None else (ev.reach[rows] >= EXACT_TOLERANCE) | real[rows]
        if not alive.any():
            break
        if alive.mean() < 0.5:  # drop finished sessions so they cost nothing
            live = np.flatnonzero(alive)
            batch, rows = batch.take(live), rows[live]
        out = sim.show(batch, choose(batch, page, rows))
        if ev is not None:
            if observe_exact is not None:
                observe_exact(rows, out, ev.reach[rows].copy())
            ev.add(sim.world, rows, out, last=page == max_pages - 1)
            seen = real[rows]
            real[rows] = seen & ~out.terminated & ~out.truncated
            batch.active[:] = True  # shown the next page whatever the draw said
            out, kept = _realised(out, seen), np.flatnonzero(seen)
        else:
            kept = np.arange(len(rows))
        at = rows[kept]
        totals["pages"][at] += out.viewed[kept]
        totals["impressions"][at] += (out.items[kept] >= 0).sum(1)
        totals["clicks"][at] += out.clicks[kept].sum(1)
        totals["purchases"][at] += out.purchases[kept].sum(1)
        totals["gmv"][at] += out.gmv[kept]
        totals["expected_clicks"][at] += out.expected_clicks[kept]
        p_buy = out.p_click[kept] * out.p_purchase[kept]
        totals["expected_purchases"][at] += p_buy.sum(1)
        totals["expected_gmv"][at] += (p_buy * price[np.maximum(out.items[kept], 0)]).sum(1)
        totals["log_no_click"][at] += np.log1p(-out.p_click[kept]).sum(1)
        new = new_shown(sim.world, out.items[kept])
        totals["new_impressions"][at] += new.sum(1)
        totals["new_clicks"][at] += (out.clicks[kept] & new).sum(1)
        if observe is not None:
            observe(rows, out)
    return SessionTotals(**totals, exact=None if ev is None else ev.totals())


def _realised(out: PageOutcome, seen: np.ndarray) -> PageOutcome:
    """``out`` as the realised sessions saw it: rows whose user had left show nothing."""
    gone = ~seen
    return dataclasses.replace(
        out,
        items=np.where(gone[:, None], -1, out.items),
        clicks=out.clicks & seen[:, None],
        purchases=out.purchases & seen[:, None],
        gmv=np.where(seen, out.gmv, 0.0),
        expected_clicks=np.where(seen, out.expected_clicks, 0.0),
        p_click=np.where(gone[:, None], 0.0, out.p_click),
        p_purchase=np.where(gone[:, None], 0.0, out.p_purchase),
        viewed=out.viewed & seen,
        terminated=out.terminated & seen,
        truncated=out.truncated & seen,
    )


def run_static(sim: Simulator, keys: SessionKeys, score: ScoreFn, exact: bool = False) -> SessionTotals:
    """Run sessions to the end under a ranking fixed at session start (page p shows ranks
    pK..pK+K-1 of the order), the way a feed without re-ranking behaves; ``exact`` as in
    ``run_pages``."""
    batch = sim.start(keys)
    order = page_order(score(batch), sim.world.config.max_pages * sim.world.config.page_size)
    page_size = sim.world.config.page_size
    return run_pages(sim, batch, lambda _, page, rows: page_slots(order[rows], page, page_size), exact=exact)
