"""The calibration a user needs to trust the world, computed on a sample of sessions."""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats

from common.rng import Stream, gumbel, uniform
from simulator.logs import out_of_scene_purchases
from simulator.oracle import Objective, best_in_pool, funnel_loss, oracle_scores
from simulator.recall import CHANNELS, SessionKeys
from simulator.segments import SHORT_DWELL_S
from simulator.session import ScoreFn, SessionBatch, Simulator, run_static
from simulator.world import World, fine_signal


def baseline_scores(world: World) -> dict[str, ScoreFn]:
    """Reference rankings of the recall set: random, popularity, ``noisy_oracle`` (the true click
    logit plus the logging fine stage's Gumbel noise: a stand-in for a learned ranker), the oracle
    (expected clicks) and ``oracle_gmv`` (expected GMV: the click-vs-GMV trade-off)."""

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

    return {
        "random": random,
        "popularity": popularity,
        "noisy_oracle": noisy_oracle(world),
        "oracle": oracle,
        "oracle_gmv": oracle_gmv,
    }


def noisy_oracle(world: World, noise_scale: float = 1.0) -> ScoreFn:
    """The true click logit plus ``noise_scale`` times the logging fine stage's Gumbel noise."""
    c = world.config

    def score(batch: SessionBatch) -> np.ndarray:
        items = batch.recall.items
        z = world.click_logits(batch.keys.user, items, batch.keys.day)
        noise = gumbel(c.seed, Stream.POLICY, *batch.keys.column(), items)
        return z + noise_scale * c.logging_fine_noise * noise

    return score


@dataclasses.dataclass(frozen=True)
class PolicyFigures:
    ctr: float  # clicks per impression
    purchase_per_click: float
    pages_per_session: float
    clicks_per_session: float
    uctr: float  # per-day uCTR: share of user-days (one session each) with >= 1 click
    gmv_per_user: float  # per user-day (one session per user-day)


def session_totals(
    sim: Simulator, keys: SessionKeys, score: ScoreFn, batch_size: int = 256, exact: bool = False
) -> dict:
    """Per-session pages, impressions, clicks, purchases and GMV (arrays in the order of ``keys``);
    with ``exact``, their exact twins instead and ``clicked``, P(>= 1 click)."""
    totals = [
        run_static(sim, keys.take(slice(lo, lo + batch_size)), score, exact=exact)
        for lo in range(0, len(keys), batch_size)
    ]
    if exact:
        totals = [t.exact for t in totals]
    fields = ("pages", "impressions", "clicks", "purchases", "gmv") + (("clicked",) if exact else ())
    return {f: np.concatenate([getattr(t, f) for t in totals]) for f in fields}


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
            "logit_variance_within_recall": logit_variance_shares(world, probe.user, recall.items),
        },
        "policies": policies,
        "phenomena": phenomena_figures(world),
        "response": response_figures(world, sim, all_days),
        "sample": {"sessions": len(all_days), "days": days, "oracle_users": len(probe)},
    }


def logit_parts(world: World, users: np.ndarray, items: np.ndarray) -> dict[str, np.ndarray]:
    """The click logit of ``World.click_logits`` on day 0 for items (B, R) per user, split into
    its terms (float64, (B, R) each; they sum to it minus the intercept): ``taste`` (saturated),
    ``sequence`` (gamma * seqsim over the recent clean behaviours), ``item`` (quality and the
    new-item affinity), ``price`` (sensitivity and budget), ``fine_signal``."""
    c, w = world.config, world
    vec = w.item_vec[items].astype(np.float64)  # (B, R, D)
    taste = np.einsum("brd,bd->br", vec, w.user_vec[users])
    if c.taste_saturation > 0:
        taste = taste / (1.0 + c.taste_saturation * np.abs(taste))
    sims = np.matmul(vec, w.recent_clean_unit[users]).max(axis=-1) / w.item_norm[items]
    price = -w.user_price_sensitivity[users][:, None] * (w.item_log_price[items] - w.log_price_ref)
    if c.budget_penalty > 0:
        price = price - c.budget_penalty * np.maximum(
            w.item_log_price[items] - w.user_log_budget[users][:, None], 0
        )
    new = w.user_new_affinity[users][:, None] * w.item_is_new[items]
    return {
        "taste": taste,
        "sequence": c.seq_gamma * np.maximum(sims, 0.0),
        "item": (w.item_quality[items] + new).astype(np.float64),
        "price": price.astype(np.float64),
        "fine_signal": c.fine_signal_std * fine_signal(c.seed, users, items).astype(np.float64),
    }


def logit_variance_shares(world: World, users: np.ndarray, items: np.ndarray) -> dict[str, float]:
    """Each term's share of the click logit's within-user variance over items (B, R) per user,
    e.g. each user's recall set (what the coarse stage ranks): the part a behaviour sequence
    can reveal is taste + sequence. The shares need not sum to 1 (the terms covary)."""
    parts = logit_parts(world, users, items)
    total = sum(parts.values()).var(axis=1).mean()
    return {f"{name}_share": float(part.var(axis=1).mean() / total) for name, part in parts.items()}


def response_figures(
    world: World,
    sim: Simulator,
    keys: SessionKeys,
    base_scale: float = 0.5,
    better: float = 0.85,
    max_sessions: int = 512,
) -> dict[str, float]:
    """How depth and uCTR follow clicks when the ranking improves a little: ``noisy_oracle`` at
    ``base_scale`` of its noise (at 0.5 a stand-in for the default experiment's learned arms: their
    pages, clicks and uCTR per session on the feed world) against the same ranker with ``better``
    times that noise, in exact expectation on the first ``max_sessions`` sessions (paired and
    exact: little noise); elasticity = log(lift of depth, resp. uCTR) / log(lift of clicks). Depth
    moves only through the continue logit's click terms (0 without them)."""
    keys = keys.take(slice(0, max_sessions))
    base, improved = (
        session_totals(sim, keys, noisy_oracle(world, scale), exact=True)
        for scale in (base_scale, base_scale * better)
    )
    lift = {f: float(np.log(improved[f].mean() / base[f].mean())) for f in ("pages", "clicks", "clicked")}
    return {
        "base_pages_per_session": float(base["pages"].mean()),
        "base_clicks_per_session": float(base["clicks"].mean()),
        "base_uctr": float(base["clicked"].mean()),
        "better_ranker_clicks_lift": float(np.expm1(lift["clicks"])),
        "depth_click_elasticity": lift["pages"] / lift["clicks"],
        "uctr_click_elasticity": lift["clicked"] / lift["clicks"],
    }


def phenomena_figures(world: World, n_pairs: int = 20_000) -> dict[str, float]:
    """Effect sizes of the issue-13 knobs that are on (empty when all are off). For the taste
    saturation and the budget threshold also how much of each user's pair order the best
    dot-product stand-in keeps (``*_within_user_tau``: the taste rescaled, resp. a per-user
    linear price term; 1 = a two-tower model loses nothing on GAUC, which sees only that); for
    the fine signal its share of the click logit's within-user variance (what no coarse ranker
    can learn)."""
    c, w = world.config, world
    rng = np.random.default_rng(c.seed)
    users, items = rng.integers(0, c.n_users, n_pairs), rng.integers(0, c.n_items, n_pairs)
    taste = np.einsum("nd,nd->n", w.user_vec[users], w.item_vec[items])
    out: dict[str, float] = {}
    if c.field_interaction_std > 0:
        effect = w.item_field_effect.astype(np.float64)
        out["field_part_std"] = float(effect.std())
        fields = (w.item_category, w.item_brand, w.item_price_bucket)
        out["field_part_not_additive_share"] = _additive_residual_share(effect, fields)
    if c.taste_saturation > 0 or c.budget_penalty > 0 or c.fine_signal_std > 0:
        grid_users, grid_items = (
            rng.choice(c.n_users, 200, replace=False),
            rng.choice(c.n_items, 500, replace=False),
        )
        z = w.click_logits(grid_users, grid_items).astype(np.float64)  # (200, 500)
        grid_taste = w.user_vec[grid_users] @ w.item_vec[grid_items].T
    if c.taste_saturation > 0:
        saturated = taste / (1 + c.taste_saturation * np.abs(taste))
        out["saturation_taste_change_std"] = float((saturated - taste).std())
        rest = z - grid_taste / (1 + c.taste_saturation * np.abs(grid_taste))
        out["saturation_best_dot_within_user_tau"] = max(
            _within_user_tau(z, rest + scale * grid_taste) for scale in np.linspace(0.1, 1.0, 10)
        )
    if c.budget_penalty > 0:
        over = np.maximum(w.item_log_price[items] - w.user_log_budget[users], 0.0)
        out["budget_pairs_over_share"] = float((over > 0).mean())
        out["budget_penalty_mean_when_over"] = float(c.budget_penalty * over[over > 0].mean())
        price = w.item_log_price[grid_items].astype(np.float64)
        hinge = c.budget_penalty * np.maximum(price[None, :] - w.user_log_budget[grid_users][:, None], 0.0)
        design = np.stack([np.ones_like(price), price], axis=1)  # (500, 2)
        slopes = np.linalg.lstsq(design, -hinge.T, rcond=None)[0]  # (2, 200): per-user linear price term
        out["budget_best_linear_price_within_user_tau"] = _within_user_tau(z, z + hinge + (design @ slopes).T)
    if c.fine_signal_std > 0:
        part = c.fine_signal_std * fine_signal(c.seed, grid_users, grid_items).astype(np.float64)
        out["fine_signal_within_user_variance_share"] = float(part.var(axis=1).mean() / z.var(axis=1).mean())
    if w.history_dwell is not None:
        short = w.history_dwell < SHORT_DWELL_S
        out["short_dwell_share_accidental"] = float(short[~w.history_clean].mean())
        out["short_dwell_share_clean"] = float(short[w.history_clean].mean())
    if c.history_noise_popular > 0:  # uniform slips: 1 % of them land on the top 1 %
        top = w.popularity_rank < max(1, c.n_items // 100)
        out["accidental_share_on_top1pct_items"] = float(top[w.history[~w.history_clean]].mean())
    if c.history_noise_spread > 0:
        out["user_accidental_share_std"] = float(w.user_noise_share.std())
    if c.conversion_std > 0:
        out["conversion_term_std"] = float(w.item_conversion.std())
    if c.taste_drift > 0:
        day1 = np.einsum("nd,nd->n", w.taste_vectors(users, 1), w.item_vec[items])
        out["taste_day1_minus_day0_std"] = float((day1 - taste).std())
    for d in range(1, c.arrival_days + 1):
        out[f"arrivals_day{d}_users"] = int((w.user_arrival_day == d).sum())
        out[f"arrivals_day{d}_items"] = int((w.item_arrival_day == d).sum())
    return out


def _within_user_tau(truth: np.ndarray, stand_in: np.ndarray) -> float:
    """Mean over rows (users) of Kendall's tau-b between two (users, items) score grids: how
    much of each user's pair order a stand-in score keeps (GAUC sees nothing else)."""
    return float(np.mean([stats.kendalltau(a, b).statistic for a, b in zip(truth, stand_in, strict=True)]))


def _additive_residual_share(y: np.ndarray, factors: tuple[np.ndarray, ...], sweeps: int = 30) -> float:
    """Share of y's variance left by the best additive model in the factors (backfitting)."""
    residual = y - y.mean()
    for _ in range(sweeps):
        for f in factors:
            residual = residual - (np.bincount(f, residual) / np.maximum(np.bincount(f), 1))[f]
    return float(residual.var() / y.var())


def format_report(figures: dict) -> str:
    lines = ["World"]
    lines += [f"  {k:<40} {_fmt(v)}" for k, v in figures["world"].items()]
    lines.append("Recall")
    for k, v in figures["recall"].items():
        text = ", ".join(f"{n} {share:.1%}" for n, share in v.items()) if isinstance(v, dict) else _fmt(v)
        lines.append(f"  {k:<40} {text}")
    if figures["phenomena"]:
        lines.append("Phenomena (issue 13 knobs that are on)")
        lines += [f"  {k:<40} {_fmt(v)}" for k, v in figures["phenomena"].items()]
    lines.append("Response to a better ranking (noisy_oracle at half its noise, then 0.85 of that; exact)")
    lines += [f"  {k:<40} {_fmt(v)}" for k, v in figures["response"].items()]
    names = list(figures["policies"])
    lines.append(f"Ranking the recall set ({figures['sample']['sessions']} sessions)")
    lines.append(f"  {'':<22}" + "".join(f"{n:>13}" for n in names))
    for metric in next(iter(figures["policies"].values())):
        lines.append(
            f"  {metric:<22}" + "".join(f"{_fmt(figures['policies'][n][metric]):>13}" for n in names)
        )
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
