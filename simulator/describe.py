"""The calibration a user needs to trust the world, computed on a sample of sessions."""

from __future__ import annotations

import dataclasses

import numpy as np

from common.rng import Stream, uniform
from simulator.logs import out_of_scene_purchases
from simulator.oracle import Objective, best_in_pool, funnel_loss, oracle_scores
from simulator.recall import CHANNELS, SessionKeys
from simulator.session import ScoreFn, SessionBatch, Simulator, run_static
from simulator.world import World


def baseline_scores(world: World) -> dict[str, ScoreFn]:
    """Reference rankings of the recall set: random, popularity, the oracle (expected clicks)
    and ``oracle_gmv`` (expected GMV: the click-vs-GMV trade-off)."""

    def random(batch: SessionBatch) -> np.ndarray:
        return uniform(
            world.config.seed, Stream.POLICY, *batch.keys.column(), np.arange(batch.recall.items.shape[1])
        )

    def popularity(batch: SessionBatch) -> np.ndarray:
        return world.item_popularity[batch.recall.items]

    def oracle(batch: SessionBatch) -> np.ndarray:
        return oracle_scores(world, batch.keys, batch.recall.items)

    def oracle_gmv(batch: SessionBatch) -> np.ndarray:
        return oracle_scores(world, batch.keys, batch.recall.items, Objective.GMV)

    return {"random": random, "popularity": popularity, "oracle": oracle, "oracle_gmv": oracle_gmv}


@dataclasses.dataclass(frozen=True)
class PolicyFigures:
    ctr: float  # clicks per impression
    purchase_per_click: float
    pages_per_session: float
    clicks_per_session: float
    uctr: float  # per-day uCTR: share of user-days (one session each) with >= 1 click
    gmv_per_user: float  # per user-day (one session per user-day)


def session_totals(sim: Simulator, keys: SessionKeys, score: ScoreFn, batch_size: int = 256) -> dict:
    """Per-session pages, impressions, clicks, purchases and GMV (arrays in the order of ``keys``)."""
    totals = [
        run_static(sim, keys.take(slice(lo, lo + batch_size)), score)
        for lo in range(0, len(keys), batch_size)
    ]
    return {
        f: np.concatenate([getattr(t, f) for t in totals])
        for f in ("pages", "impressions", "clicks", "purchases", "gmv")
    }


def _figures(cat: dict) -> PolicyFigures:
    return PolicyFigures(
        ctr=cat["clicks"].sum() / max(cat["impressions"].sum(), 1),
        purchase_per_click=cat["purchases"].sum() / max(cat["clicks"].sum(), 1),
        pages_per_session=cat["pages"].mean(),
        clicks_per_session=cat["clicks"].mean(),
        uctr=(cat["clicks"] > 0).mean(),
        gmv_per_user=cat["gmv"].mean(),
    )


def describe(world: World, n_sessions: int = 2_000, n_oracle_users: int = 300, days: int = 1) -> dict:
    """Key figures of the world: every sampled user who has arrived gets one session on each of
    days 0..days-1; each policy's figures pool the user-days, ``uctr_day<d>`` is day d's uCTR."""
    c = world.config
    sim = Simulator(world)
    users = np.sort(
        np.random.default_rng(c.seed).choice(c.n_users, min(n_sessions, c.n_users), replace=False)
    )
    keys = SessionKeys.of(users)
    arrived = [users[world.user_arrival_day[users] <= d] for d in range(days)]
    all_days = SessionKeys.of(
        np.concatenate(arrived), day=np.repeat(np.arange(days), [len(a) for a in arrived])
    )
    policies = {}
    for name, fn in baseline_scores(world).items():
        cat = session_totals(sim, all_days, fn)
        policies[name] = dataclasses.asdict(_figures(cat))
        for d in range(days):
            policies[name][f"uctr_day{d}"] = float((cat["clicks"][all_days.day == d] > 0).mean())

    sorted_pop = np.sort(world.item_popularity)[::-1]
    n = c.n_items
    probe = keys.take(slice(0, min(n_oracle_users, len(keys))))
    recall = sim.recall(probe)
    best = best_in_pool(world, probe.user, c.page_size)
    miss = funnel_loss(best, [recall.items])["recall"]
    best1_missing = funnel_loss(best[:, :1], [recall.items])["recall"]
    channel_share = np.bincount(recall.channels.ravel(), minlength=len(CHANNELS)) / recall.channels.size
    oos_users = np.arange(min(c.n_users, 5_000))
    oos = out_of_scene_purchases(world, oos_users, day=0)
    return {
        "world": {
            "items": n,
            "users": c.n_users,
            "categories": c.n_categories,
            "new_item_share": float(world.item_is_new.mean()),
            "popularity_top1pct_share": float(sorted_pop[: max(1, n // 100)].sum()),
            "popularity_top20pct_share": float(sorted_pop[: max(1, n // 5)].sum()),
            "history_accidental_share": float(1 - world.history_clean.mean()),
            "mean_price": float(world.item_price.mean()),
            "out_of_scene_purchases_per_user_day": len(oos[0]) / len(oos_users),
        },
        "recall": {
            "size": c.recall_size,
            "channel_share": dict(zip(CHANNELS, map(float, channel_share), strict=True)),
            f"oracle_top{c.page_size}_missing_share": miss,
            "oracle_top1_missing_share": best1_missing,
        },
        "policies": policies,
        "sample": {"sessions": len(all_days), "days": days, "oracle_users": len(probe)},
    }


def format_report(figures: dict) -> str:
    lines = ["World"]
    lines += [f"  {k:<40} {_fmt(v)}" for k, v in figures["world"].items()]
    lines.append("Recall")
    for k, v in figures["recall"].items():
        text = ", ".join(f"{n} {share:.1%}" for n, share in v.items()) if isinstance(v, dict) else _fmt(v)
        lines.append(f"  {k:<40} {text}")
    names = list(figures["policies"])
    lines.append(f"Ranking the recall set ({figures['sample']['sessions']} sessions)")
    lines.append(f"  {'':<22}" + "".join(f"{n:>12}" for n in names))
    for metric in next(iter(figures["policies"].values())):
        lines.append(
            f"  {metric:<22}" + "".join(f"{_fmt(figures['policies'][n][metric]):>12}" for n in names)
        )
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
