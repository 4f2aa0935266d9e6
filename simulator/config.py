"""The world's configuration: one frozen dataclass, validated on construction.

Every phenomenon of docs/design.md's world table has a knob here with a documented default.
Defaults are calibrated (`python -m simulator describe`, seed 0, 2,000 sessions) so that
ranking the recall set by popularity gives 2.4 % CTR per exposure, 1.1 % of clicks
purchase and 2.95 pages per session; random ranking 2.3 % CTR; the oracle 21 % CTR, 4 % of
clicks purchase and 8.2 pages (an upper bound). Recall misses ~50 % of each user's ten
truly best items of the pool.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from common.config import ConfigError, config, from_mapping, load_toml, setting


@config
class WorldConfig:
    """Ground truth of the simulated e-commerce world."""

    seed: int = 0
    """Fixes the world (items, users, histories) and every draw in every session."""

    # --- size -------------------------------------------------------------------
    n_items: int = setting(100_000, ge=1)
    """Items in the pool."""
    n_users: int = setting(50_000, ge=1)
    """Users; user ids are 0..n_users-1."""
    n_categories: int = setting(100, ge=1)
    """Item categories; items of a category share a taste centre and a price level."""
    brands_per_category: int = setting(20, ge=1)
    """Brands nest in categories; a brand shifts the quality of its items."""
    dim: int = setting(32, ge=1)
    """Dimension of the latent taste vectors w_u and v_i."""

    # --- latent taste -------------------------------------------------------------
    taste_scale: float = setting(0.8, ge=0)
    """Std of <w_u, v_i> across random (user, item) pairs, in logits."""
    item_spread: float = setting(0.6, ge=0)
    """Within-category spread of item vectors relative to the category centre."""
    user_focus: float = setting(1.5, ge=0)
    """How strongly a user's taste points at one favourite category (0 = isotropic)."""

    # --- quality, popularity, price, new products ------------------------------------
    quality_std: float = setting(0.4, ge=0)
    """Std of the item-level part of the quality term q_i, in logits."""
    brand_std: float = setting(0.3, ge=0)
    """Std of the brand-level part of q_i (shared by a brand's items)."""
    popularity_exponent: float = setting(1.0, ge=0)
    """Zipf exponent of popularity: weight of the r-th most popular item is r^-exponent."""
    popularity_quality_corr: float = setting(0.5, ge=0, le=1)
    """How much popularity rank follows quality (0 = independent, 1 = fully)."""
    price_log_mean: float = 3.5
    """Mean over categories of the category's mean log price (exp(3.5) ~ 33)."""
    price_category_std: float = setting(0.8, ge=0)
    """Std of the category mean log price."""
    price_item_std: float = setting(0.5, ge=0)
    """Std of log price within a category."""
    price_sensitivity_mean: float = setting(0.6, ge=0)
    """Mean of the user's price sensitivity beta_u (gamma distributed)."""
    price_sensitivity_std: float = setting(0.3, ge=0)
    """Std of beta_u."""
    new_item_share: float = setting(0.05, ge=0, le=1)
    """Share of items that are new: content features only, bottom of popularity."""
    new_item_effect_std: float = setting(0.5, ge=0)
    """Std of the user's affinity nu_u for new items (the new-item logit term)."""

    # --- behaviour sequences ------------------------------------------------------------
    history_len: int = setting(50, ge=1)
    """Length of every user's logged behaviour sequence (most recent last)."""
    history_noise: float = setting(0.2, ge=0, le=1)
    """Share epsilon of the sequence that is accidental clicks on random items."""
    history_candidates: int = setting(4, ge=1)
    """A clean behaviour is the taste-best of this many popularity draws in a category."""
    seq_window: int = setting(10, ge=1)
    """Recent clean behaviours that enter the sequence x target term."""
    seq_gamma: float = setting(1.0, ge=0)
    """gamma: weight of max_j cos(v_j, v_i) over recent clean behaviour, in logits."""

    # --- response -------------------------------------------------------------------------
    click_intercept: float = -5.0
    """a: click-logit intercept."""
    purchase_intercept: float = -4.8
    """b: purchase-logit intercept (given a click)."""
    purchase_slope: float = 0.5
    """c: weight of the click logit z_ui in the purchase logit."""
    page_size: int = setting(10, ge=1)
    """Items per page (one page = one request)."""
    position_decay: float = setting(0.6, ge=0)
    """Position bias (PBM): examination rho_k = (k + 1)^-decay at position k = 0, 1, ..."""
    continue_intercept: float = 0.5
    """Continue-to-next-page logit when the page satisfies no one."""
    continue_slope: float = setting(0.5, ge=0)
    """Continue logit rises by this much per expected click on the page (satisfaction)."""
    continue_click_bonus: float = setting(0.3, ge=0)
    """Continue logit rises by this much per actual click on the page."""
    max_pages: int = setting(30, ge=1)
    """A session is truncated after this many pages."""

    # --- out-of-scene purchases ------------------------------------------------------------
    out_of_scene_rate: float = setting(0.3, ge=0)
    """Mean purchases per user per day outside the scene (Poisson)."""
    out_of_scene_candidates: int = setting(64, ge=1)
    """An out-of-scene purchase is a softmax draw among this many items of a preferred category."""

    # --- recall -----------------------------------------------------------------------------
    recall_size: int = setting(5_000, ge=1)
    """Candidates per request after merging and de-duplicating the channels."""
    recall_share_i2i: float = setting(0.35, ge=0, le=1)
    """Share of recall quota for item-to-item neighbours of the behaviour sequence."""
    recall_share_taste: float = setting(0.35, ge=0, le=1)
    """Share for taste-based recall (noisy user vector, top categories)."""
    recall_share_popular: float = setting(0.2, ge=0, le=1)
    """Share for popularity recall."""
    recall_share_new: float = setting(0.1, ge=0, le=1)
    """Share for new-product recall."""
    i2i_neighbors: int = setting(100, ge=1)
    """Neighbours stored per item for item-to-item recall."""
    i2i_noise: float = setting(0.3, ge=0)
    """Noise added to item vectors before computing i2i neighbours (co-occurrence is noisy)."""
    recall_taste_noise: float = setting(1.0, ge=0)
    """Gumbel temperature of the taste channel (0 = exact top by true taste)."""
    recall_taste_categories: int = setting(6, ge=1)
    """Categories the taste channel samples from (the user's noisy top categories)."""

    # --- logging cascade and samples (seed 002) -------------------------------------------
    logging_coarse_size: int = setting(600, ge=1)
    """Coarse survivors of the logging cascade (fine ranker input)."""
    logging_coarse_noise: float = setting(1.0, ge=0)
    """Gumbel temperature on log-popularity in the logging coarse stage."""
    logging_fine_noise: float = setting(1.0, ge=0)
    """Std of the Gaussian-like noise on the true logit in the logging fine stage."""
    sample_unexposed: int = setting(10, ge=0)
    """M: unexposed coarse survivors sampled per request."""
    sample_dropped: int = setting(40, ge=0)
    """L: recall items dropped by the coarse stage sampled per request."""
    sample_random: int = setting(0, ge=0)
    """Random negatives from the whole pool per request."""

    # --- phenomena for the seeds' techniques (issue 13); every one is off at 0 ----------------
    field_interaction_std: float = setting(0.0, ge=0)
    """Std, in logits, of a part of q_i that is a cross of item fields (category x price level
    and brand x price level): id embeddings of sparsely logged and new items cannot learn it,
    field crosses can (SENET + bilinear)."""
    taste_saturation: float = setting(0.0, ge=0)
    """lambda: the taste term t = <w_u, v_i> becomes t / (1 + lambda |t|), so strong matches
    saturate against quality and price (an MLP scorer can follow it, a dot product cannot)."""
    budget_penalty: float = setting(0.0, ge=0)
    """kappa: the click logit loses kappa * max(0, log p_i - log budget_u), a price threshold
    per user (budget falls with price sensitivity); not a dot product (MLP scorer)."""
    history_dwell_separation: float = setting(0.0, ge=0)
    """Each behaviour gets a logged dwell time whose log is N(0, 1) around log 20 s for clean
    behaviours and this many stds shorter for accidental ones (0 = no dwell feature): noise that
    side information identifies (NOVA)."""
    history_noise_popular: float = setting(0.0, ge=0, le=1)
    """Share of the accidental behaviours that land on an item drawn by popularity (what a feed
    shows most, where a stray tap lands) instead of uniformly over the pool: noise with trained
    embeddings that pulls every profile towards the same items, which a mean over the history
    cannot shrug off and attention that reads dwell can (NOVA)."""
    history_noise_spread: float = setting(0.0, ge=0, le=0.5)
    """Std across users of their accidental share (Beta with mean history_noise, 0 = every
    user history_noise): "mindful" users with few accidental clicks exist (segments)."""
    conversion_std: float = setting(0.0, ge=0)
    """Std, in logits, of an item's conversion propensity in the purchase logit (half shared by
    its category, half its own), independent of click appeal: a GMV-aware score wins GMV and
    loses a little on clicks (multi-task heads, seed 002's GMV result)."""
    conversion_price_lift: float = setting(0.0, ge=0)
    """The purchase logit gains this times (log p_i - ref): dearer items convert less badly than
    they click, so expected GMV and expected clicks rank items differently (seed 002's GMV)."""
    taste_drift: float = setting(0.0, ge=0)
    """Std, in logits, of the day-to-day change of <w_u, v_i> over random pairs: tastes take a
    random walk from day 0, keyed by (user, day), so memorised user vectors go stale."""
    arrival_days: int = setting(0, ge=0)
    """Days 1..arrival_days on which new users and new items arrive (0 = everyone is there on
    day 0)."""
    new_user_share_per_day: float = setting(0.0, ge=0, le=1)
    """Share of users arriving on each of days 1..arrival_days: they have no logs before their
    day (cold users for models trained on earlier days)."""
    new_item_share_per_day: float = setting(0.0, ge=0, le=1)
    """Share of the new items arriving on each of days 1..arrival_days: before their day they
    are neither recalled nor bought."""
    fine_signal_std: float = setting(0.0, ge=0)
    """Std, in logits, of a user x item affinity that only a pair-wise feature reveals (the fine
    ranker's ``fine_signal``: production's real-time and user x item cross features, which a
    two-tower coarse ranker cannot afford): the fine stage is then much stronger than the
    coarse one, the premise of distillation and of coarse-fine consistency."""

    def __post_init__(self) -> None:
        shares = (
            self.recall_share_i2i
            + self.recall_share_taste
            + self.recall_share_popular
            + self.recall_share_new
        )
        _check(abs(shares - 1.0) < 1e-6, f"recall_share_* must sum to 1, got {shares:.6f}")
        _check(
            self.n_items >= self.n_categories * self.brands_per_category,
            "n_items must be >= n_categories * brands_per_category",
        )
        _check(
            self.recall_size <= self.n_items,
            f"recall_size ({self.recall_size}) cannot exceed the pool (n_items={self.n_items})",
        )
        _check(
            self.page_size <= self.logging_coarse_size <= self.recall_size,
            "need page_size <= logging_coarse_size <= recall_size",
        )
        _check(self.seq_window <= self.history_len, "seq_window must be <= history_len")
        _check(self.i2i_neighbors < self.n_items, "i2i_neighbors must be < n_items")
        for share in ("new_user_share_per_day", "new_item_share_per_day"):
            _check(
                getattr(self, share) * self.arrival_days <= 1.0,
                f"{share} * arrival_days must be <= 1, got {getattr(self, share) * self.arrival_days:g}",
            )
        _check(
            round(self.new_item_share * self.n_items) < self.n_items,
            "new_item_share leaves no established items",
        )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> WorldConfig:
        """Build from a plain mapping (e.g. a log folder's world.json), strictly typed."""
        return from_mapping(cls, values)

    @classmethod
    def from_toml(cls, path: str | Path, table: str | None = "world") -> WorldConfig:
        """Load from a TOML file; settings live in the ``[world]`` table by default."""
        return load_toml(path, cls, table)

    def replace(self, **changes: Any) -> WorldConfig:
        """A copy with some settings changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every setting, except issue 13's knobs left off: a world without them stores (in
        world.json, checkpoints) exactly what it stored before they existed."""
        values = dataclasses.asdict(self)
        for name in PHENOMENON_KNOBS:
            if values[name] == 0:
                del values[name]
        return values


PHENOMENON_KNOBS = (
    "field_interaction_std",
    "taste_saturation",
    "budget_penalty",
    "history_dwell_separation",
    "history_noise_popular",
    "history_noise_spread",
    "conversion_std",
    "conversion_price_lift",
    "taste_drift",
    "arrival_days",
    "new_user_share_per_day",
    "new_item_share_per_day",
    "fine_signal_std",
)
"""Issue 13's phenomena; each is off at 0, its default, and the world is then exactly the
world from before they existed."""

WORLD_NAMES = ("", "default", "small")
"""World specs that name a built-in world; any other spec is a TOML file with a [world] table."""


def load_world_config(spec: str) -> WorldConfig:
    """A world config from a spec: "default" (or ""), "small", or a TOML file with [world]."""
    if spec in ("", "default"):
        return WorldConfig()
    if spec == "small":
        return SMALL
    if not Path(spec).is_file():
        raise ConfigError(f'world {spec!r} is neither "default", "small" nor an existing TOML file')
    return WorldConfig.from_toml(spec)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


SMALL = WorldConfig(
    n_items=5_000,
    n_users=2_000,
    n_categories=20,
    brands_per_category=10,
    recall_size=500,
    logging_coarse_size=100,
    i2i_neighbors=30,
)
"""A small world for tests and quick demos (same phenomena, smaller sizes)."""
