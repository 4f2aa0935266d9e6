"""The ground-truth world: items, users, behaviour sequences and the true response model.

Models never see this object; they learn from logs. The click model is

    P(click | item i shown at position k) = rho_k * sigma(z_ui)
    z_ui = a + <w_u, v_i> + gamma * seqsim(u, i) + q_i - beta_u * (log p_i - ref) + nu_u * new_i
    seqsim(u, i) = max(0, max_j cos(v_j, v_i)) over the user's recent *clean* behaviours
    P(purchase | click) = sigma(b + c * z_ui - beta_u * (log p_i - ref))

The knobs of issue 13's phenomena (all off by default, which is exactly the model above) add:
a field-cross part of q_i; t / (1 + lambda |t|) for the taste term t; -kappa * max(0, log p_i -
log budget_u); an item conversion term pi_i and lift * (log p_i - ref) in the purchase logit;
a per-day random walk of w_u; users and items arriving on later days; logged dwell times of
behaviours and per-user accidental shares; sigma_f * f_ui, a user x item affinity only the fine
ranker's pair-wise feature reveals (``fine_signal``).

Items are stored contiguously by category (category k owns ids ``cat_start[k]:cat_end[k]``),
which makes "draw an item of category k" an index computation.
"""

from __future__ import annotations

import numpy as np

from common.rng import Stream, uniform
from simulator.config import WorldConfig

CLEAN_DWELL_S = 20.0
"""Median logged dwell of a clean behaviour, in seconds (history_dwell_separation > 0)."""


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def arrival_days(config: WorldConfig, stream: Stream, ids: np.ndarray, share_per_day: float) -> np.ndarray:
    """Arrival day of ``ids``: day d in 1..arrival_days with probability share_per_day each,
    else 0; a hash of the id, so it needs no world."""
    ids = np.asarray(ids, dtype=np.int64)
    days = np.zeros(ids.shape, dtype=np.int64)
    if config.arrival_days and share_per_day > 0:
        u = uniform(config.seed, stream, ids)
        later = u < share_per_day * config.arrival_days
        days[later] = 1 + np.minimum((u[later] / share_per_day).astype(np.int64), config.arrival_days - 1)
    return days


def fine_signal(seed: int, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """f_ui for users (B,) and items (B, R), or (R,) shared by all: a standardised logistic
    variate keyed by (seed, user, item), float32 (B, R). What the fine ranker's pair-wise feature
    reads; the click logit gains fine_signal_std times it."""
    u = uniform(seed, Stream.FINE_SIGNAL, np.asarray(users)[:, None], items)
    return (np.log(u + 2.0**-54) - np.log1p(-u)).astype(np.float32) * np.float32(np.sqrt(3.0) / np.pi)


def user_arrival_days(config: WorldConfig, users: np.ndarray) -> np.ndarray:
    """``World(config).user_arrival_day[users]`` without building the world."""
    return arrival_days(config, Stream.USER_ARRIVAL, users, config.new_user_share_per_day)


class AliasTable:
    """Walker's alias method: O(1) draws from a fixed discrete distribution."""

    def __init__(self, probabilities: np.ndarray) -> None:
        n = len(probabilities)
        scaled = probabilities * n / probabilities.sum()
        self.accept = np.ones(n)
        self.alias = np.arange(n)
        small = list(np.flatnonzero(scaled < 1.0))
        large = list(np.flatnonzero(scaled >= 1.0))
        while small and large:
            s, g = small.pop(), large.pop()
            self.accept[s], self.alias[s] = scaled[s], g
            scaled[g] -= 1.0 - scaled[s]
            (small if scaled[g] < 1.0 else large).append(g)

    def sample(self, u_slot: np.ndarray, u_accept: np.ndarray) -> np.ndarray:
        """One draw per pair of independent uniforms."""
        slot = np.minimum((u_slot * len(self.accept)).astype(np.int64), len(self.accept) - 1)
        return np.where(u_accept < self.accept[slot], slot, self.alias[slot])


class World:
    """All latent truth of one simulated world, built deterministically from its config."""

    def __init__(self, config: WorldConfig) -> None:
        self.config = config
        c = config
        streams = np.random.SeedSequence(c.seed).spawn(6)
        self._build_items(np.random.default_rng(streams[0]))
        self._build_users(np.random.default_rng(streams[1]))
        self._build_phenomena(np.random.default_rng(streams[4]))
        self._build_histories(np.random.default_rng(streams[2]), np.random.default_rng(streams[5]))
        self._build_i2i(np.random.default_rng(streams[3]))

    # ------------------------------------------------------------------ construction
    def _build_items(self, rng: np.random.Generator) -> None:
        c = self.config
        size_weights = rng.lognormal(0.0, 0.5, c.n_categories)
        extra = rng.multinomial(
            c.n_items - c.n_categories * c.brands_per_category, size_weights / size_weights.sum()
        )
        sizes = extra + c.brands_per_category
        self.cat_end = np.cumsum(sizes)
        self.cat_start = self.cat_end - sizes
        self.item_category = np.repeat(np.arange(c.n_categories), sizes)

        centres = rng.standard_normal((c.n_categories, c.dim))
        self.category_centre = centres / np.linalg.norm(centres, axis=1, keepdims=True)
        noise = rng.standard_normal((c.n_items, c.dim)) / np.sqrt(c.dim)
        self.item_vec = (self.category_centre[self.item_category] + c.item_spread * noise).astype(
            np.float32
        )  # (N, D)
        self.item_norm = np.linalg.norm(self.item_vec, axis=1)
        self.item_unit = self.item_vec / self.item_norm[:, None]

        # every brand of a category owns at least one item
        within = np.arange(c.n_items) - self.cat_start[self.item_category]
        brand_in_cat = np.where(
            within < c.brands_per_category,
            within,
            rng.integers(0, c.brands_per_category, c.n_items),
        )
        self.item_brand = self.item_category * c.brands_per_category + brand_in_cat
        brand_effect = rng.normal(0.0, c.brand_std, c.n_categories * c.brands_per_category)
        self.item_quality = (
            brand_effect[self.item_brand] + rng.normal(0.0, c.quality_std, c.n_items)
        ).astype(np.float32)

        cat_log_price = rng.normal(c.price_log_mean, c.price_category_std, c.n_categories)
        self.item_log_price = (
            cat_log_price[self.item_category] + rng.normal(0.0, c.price_item_std, c.n_items)
        ).astype(np.float32)
        self.item_price = np.exp(self.item_log_price).astype(np.float32)
        self.log_price_ref = np.float32(c.price_log_mean)
        edges = np.quantile(self.item_log_price, np.linspace(0, 1, 11)[1:-1])
        self.item_price_bucket = np.searchsorted(edges, self.item_log_price).astype(np.int8)  # deciles

        n_new = round(c.new_item_share * c.n_items)
        self.item_is_new = np.zeros(c.n_items, dtype=bool)
        self.item_is_new[rng.choice(c.n_items, n_new, replace=False)] = True
        self.new_items = np.flatnonzero(self.item_is_new)

        # popularity: Zipf over a rank that partly follows quality; new items rank last
        q = (self.item_quality - self.item_quality.mean()) / (self.item_quality.std() + 1e-12)
        rho = c.popularity_quality_corr
        latent = rho * q + np.sqrt(1.0 - rho**2) * rng.standard_normal(c.n_items)
        latent[self.item_is_new] = -np.inf
        rank = np.empty(c.n_items, dtype=np.int64)
        rank[np.argsort(-latent, kind="stable")] = np.arange(c.n_items)
        weight = (rank + 1.0) ** -c.popularity_exponent
        self.item_popularity = weight / weight.sum()
        self.popularity_rank = rank
        self.popularity_alias = AliasTable(self.item_popularity)
        # within-category popularity CDF offset by the category id: searchsorted(k + u)
        cat_mass = np.bincount(self.item_category, weights=self.item_popularity)
        within_cum = np.cumsum(self.item_popularity) - np.repeat(
            np.concatenate([[0.0], np.cumsum(cat_mass)[:-1]]), sizes
        )
        self.category_popularity_cdf = self.item_category + within_cum / cat_mass[self.item_category]
        self.category_popularity_cdf[self.cat_end - 1] = np.arange(1, c.n_categories + 1)
        self.category_mass = cat_mass

    def _build_users(self, rng: np.random.Generator) -> None:
        c = self.config
        favourite = rng.choice(c.n_categories, c.n_users, p=self.category_mass)
        raw = c.user_focus * self.category_centre[favourite] + rng.standard_normal(
            (c.n_users, c.dim)
        ) / np.sqrt(c.dim)
        # rescale so that <w_u, v_i> over random pairs has std taste_scale
        probe_u = rng.integers(0, c.n_users, 20_000)
        probe_i = rng.integers(0, c.n_items, 20_000)
        spread = np.einsum("nd,nd->n", raw[probe_u], self.item_vec[probe_i]).std()
        self.user_vec = (raw * (c.taste_scale / spread)).astype(np.float32)  # (U, D)

        if c.price_sensitivity_std > 0:
            shape = (c.price_sensitivity_mean / c.price_sensitivity_std) ** 2
            scale = c.price_sensitivity_std**2 / c.price_sensitivity_mean
            self.user_price_sensitivity = rng.gamma(shape, scale, c.n_users).astype(np.float32)
        else:
            self.user_price_sensitivity = np.full(c.n_users, c.price_sensitivity_mean, np.float32)
        self.user_new_affinity = rng.normal(0.0, c.new_item_effect_std, c.n_users).astype(np.float32)

        # category preference: taste towards the category centre plus the category's mass
        logits = (
            self.user_vec @ self.category_centre.T.astype(np.float32) + np.log(self.category_mass)[None, :]
        )
        logits -= logits.max(axis=1, keepdims=True)
        prob = np.exp(logits)
        prob /= prob.sum(axis=1, keepdims=True)
        self.user_category_logits = logits.astype(np.float32)  # (U, C)
        cdf = np.cumsum(prob, axis=1)
        cdf[:, -1] = 1.0
        self.user_category_cdf = cdf  # (U, C) float64

    def _build_phenomena(self, rng: np.random.Generator) -> None:
        """Issue 13's item and user terms and arrival days; nothing here changes when all are off."""
        c = self.config
        n_brands = c.n_categories * c.brands_per_category
        cross_cat = rng.standard_normal((c.n_categories, 10))
        cross_brand = rng.standard_normal((n_brands, 10))
        budget_noise = rng.standard_normal(c.n_users)
        conversion_cat = rng.standard_normal(c.n_categories)
        conversion_item = rng.standard_normal(c.n_items)
        bucket = self.item_price_bucket
        cross = cross_cat[self.item_category, bucket] + cross_brand[self.item_brand, bucket]
        self.item_field_effect = (c.field_interaction_std / np.sqrt(2) * cross).astype(np.float32)
        if c.field_interaction_std > 0:  # q_i gains the field part after popularity is drawn
            self.item_quality = (self.item_quality + self.item_field_effect).astype(np.float32)
        # budget: log price above which a user's clicks fall away; lower for price-sensitive users
        beta = self.user_price_sensitivity
        z_beta = (beta - beta.mean()) / (beta.std() + 1e-12)
        self.user_log_budget = (
            c.price_log_mean + c.price_category_std * (0.5 - 0.5 * z_beta + np.sqrt(0.75) * budget_noise)
        ).astype(np.float32)
        self.item_conversion = (
            c.conversion_std * (conversion_cat[self.item_category] + conversion_item) / np.sqrt(2)
        ).astype(np.float32)
        # taste drift: N(0, I) steps scaled so <step, v_i> has unit std over random items
        self.drift_scale = np.float32(1.0 / np.sqrt(np.mean(self.item_norm**2)))
        self.user_arrival_day = user_arrival_days(c, np.arange(c.n_users))
        item_arrival = arrival_days(c, Stream.ITEM_ARRIVAL, np.arange(c.n_items), c.new_item_share_per_day)
        self.item_arrival_day = np.where(self.item_is_new, item_arrival, 0)
        self.items_arrive = bool(self.item_arrival_day.max(initial=0) > 0)

    def _build_histories(self, rng: np.random.Generator, side_rng: np.random.Generator) -> None:
        c = self.config
        history = np.empty((c.n_users, c.history_len), dtype=np.int64)
        chunk = 1024
        for lo in range(0, c.n_users, chunk):
            users = np.arange(lo, min(lo + chunk, c.n_users))
            cats = self.sample_categories(users, rng.random((len(users), c.history_len)))
            draws = self.sample_in_category(
                cats[..., None], rng.random((len(users), c.history_len, c.history_candidates))
            )
            flat = draws.reshape(len(users), -1)  # (b, H * m)
            utility = np.matmul(self.item_vec[flat], self.user_vec[users][:, :, None])[..., 0]
            utility += self.item_quality[flat] + rng.gumbel(size=flat.shape)
            best = utility.reshape(draws.shape).argmax(-1)
            history[users] = np.take_along_axis(draws, best[..., None], -1)[..., 0]
        self.user_noise_share = np.full(c.n_users, c.history_noise)
        if c.history_noise_spread > 0 and 0 < c.history_noise < 1:
            # Beta(a, b) with mean history_noise and std history_noise_spread (capped to stay valid)
            m, var = (
                c.history_noise,
                min(c.history_noise_spread**2, 0.99 * c.history_noise * (1 - c.history_noise)),
            )
            strength = m * (1 - m) / var - 1
            self.user_noise_share = side_rng.beta(m * strength, (1 - m) * strength, c.n_users)
        accidental = rng.random(history.shape) < (
            self.user_noise_share[:, None] if c.history_noise_spread > 0 else c.history_noise
        )
        history[accidental] = rng.integers(0, c.n_items, int(accidental.sum()))
        if c.history_noise_popular > 0:  # keyed by (user, position): no other draw moves
            users, positions = np.nonzero(accidental)
            keys = (users[:, None], positions[:, None], np.arange(3))
            u = uniform(c.seed, Stream.HISTORY_NOISE_POPULAR, *keys)  # (n, 3)
            popular = self.popularity_alias.sample(u[:, 0], u[:, 1])
            slips = history[users, positions]
            history[users, positions] = np.where(u[:, 2] < c.history_noise_popular, popular, slips)
        self.history = history  # (U, H) observed behaviour sequence, oldest first
        self.history_clean = ~accidental  # (U, H) known only to the world
        self.history_dwell = None  # (U, H) float32 logged dwell seconds, if the knob is on
        if c.history_dwell_separation > 0:
            log_dwell = side_rng.standard_normal(history.shape) - c.history_dwell_separation * accidental
            self.history_dwell = (CLEAN_DWELL_S * np.exp(log_dwell)).astype(np.float32)

        pos = np.where(self.history_clean, np.arange(c.history_len), -1)
        recent_pos = np.sort(pos, axis=1)[:, -c.seq_window :]  # (U, W) ascending, -1 = none
        recent = np.take_along_axis(history, np.maximum(recent_pos, 0), axis=1)
        self.recent_clean = np.where(recent_pos >= 0, recent, -1)
        unit = self.item_unit[np.maximum(self.recent_clean, 0)]
        unit[self.recent_clean < 0] = 0.0
        self.recent_clean_unit = np.ascontiguousarray(unit.transpose(0, 2, 1))  # (U, D, W)

    def _build_i2i(self, rng: np.random.Generator) -> None:
        """Noisy nearest neighbours inside each category (co-occurrence-like similarity)."""
        c = self.config
        k = c.i2i_neighbors
        table = np.full((c.n_items, k), -1, dtype=np.int64)
        for cat in range(c.n_categories):
            lo, hi = self.cat_start[cat], self.cat_end[cat]
            noisy = self.item_unit[lo:hi] + c.i2i_noise * rng.standard_normal(
                (hi - lo, c.dim), dtype=np.float32
            )
            noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
            sim = noisy @ noisy.T
            np.fill_diagonal(sim, -np.inf)
            kk = min(k, hi - lo - 1)
            if kk <= 0:
                continue
            top = np.argpartition(-sim, kk - 1, axis=1)[:, :kk]
            order = np.argsort(-np.take_along_axis(sim, top, axis=1), axis=1, kind="stable")
            table[lo:hi, :kk] = lo + np.take_along_axis(top, order, axis=1)
        self.i2i = table  # (N, K) neighbour ids, best first, -1 = none

    # ------------------------------------------------------------------ sampling helpers
    def sample_categories(self, users: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Categories drawn from each user's preference: users (B,), uniforms (B, n) -> (B, n)."""
        n_cat = self.config.n_categories
        offset = np.arange(len(users))[:, None]
        flat_cdf = (self.user_category_cdf[users] + offset).ravel()
        idx = np.searchsorted(flat_cdf, u + offset, side="right") - offset * n_cat
        return np.minimum(idx, n_cat - 1)

    def sample_in_category(self, categories: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Items drawn by popularity inside the given categories by inverse CDF."""
        idx = np.searchsorted(self.category_popularity_cdf, categories + u, side="right")
        return np.clip(idx, self.cat_start[categories], self.cat_end[categories] - 1)

    # ------------------------------------------------------------------ ground truth
    def taste_vectors(self, users: np.ndarray, day: np.ndarray | int = 0) -> np.ndarray:
        """w_u on ``day`` (scalar or per user): day-0 taste plus taste_drift's random walk, (B, D)."""
        c = self.config
        vec = self.user_vec[users]
        if c.taste_drift == 0:
            return vec
        day = np.broadcast_to(np.asarray(day, dtype=np.int64), np.shape(users))
        n_days = int(day.max(initial=0))
        if n_days == 0:
            return vec
        steps = np.arange(1, n_days + 1)[None, :, None]
        u = uniform(c.seed, Stream.TASTE_DRIFT, users[:, None, None], steps, np.arange(2 * c.dim))
        normal = np.sqrt(-2.0 * np.log1p(-u[..., : c.dim])) * np.cos(2.0 * np.pi * u[..., c.dim :])
        walk = (normal * (steps <= day[:, None, None])).sum(axis=1)  # (B, D): steps 1..day of each user
        return (vec + (c.taste_drift * self.drift_scale) * walk).astype(np.float32)

    def click_logits(self, users: np.ndarray, items: np.ndarray, day: np.ndarray | int = 0) -> np.ndarray:
        """z_ui (float32) for users (B,) and items (B, R) per user, or (R,) shared by all, on
        ``day`` (scalar or (B,); only taste drift depends on it).

        The shared form uses dense matrix products (the whole pool at once); both forms
        compute the same formula.
        """
        c = self.config
        user_vec = self.taste_vectors(users, day)
        if items.ndim == 1:
            vec = self.item_vec[items]  # (R, D)
            taste = user_vec @ vec.T  # (B, R)
            sims = (vec @ self.recent_clean_unit[users]).max(axis=-1)  # (B, R, W) -> (B, R)
            items_2d = items[None, :]
        else:
            vec = self.item_vec[items]  # (B, R, D)
            taste = np.einsum("brd,bd->br", vec, user_vec)
            sims = np.matmul(vec, self.recent_clean_unit[users]).max(axis=-1)  # (B, R)
            items_2d = items
        if c.taste_saturation > 0:
            taste = taste / (1.0 + c.taste_saturation * np.abs(taste))
        seqsim = np.maximum(sims / self.item_norm[items_2d], 0.0)
        beta = self.user_price_sensitivity[users][:, None]
        z = (
            c.click_intercept
            + taste
            + c.seq_gamma * seqsim
            + self.item_quality[items_2d]
            - beta * (self.item_log_price[items_2d] - self.log_price_ref)
            + self.user_new_affinity[users][:, None] * self.item_is_new[items_2d]
        )
        if c.budget_penalty > 0:
            over = self.item_log_price[items_2d] - self.user_log_budget[users][:, None]
            z = z - c.budget_penalty * np.maximum(over, 0.0)
        if c.fine_signal_std > 0:
            z = z + np.float32(c.fine_signal_std) * fine_signal(c.seed, users, items)
        return z.astype(np.float32)

    def purchase_logits(self, users: np.ndarray, items: np.ndarray, click_logits: np.ndarray) -> np.ndarray:
        """The true purchase-given-click logit; items (B, R) or (R,) as in `click_logits`."""
        c = self.config
        beta = self.user_price_sensitivity[users][:, None]
        y = (
            c.purchase_intercept
            + c.purchase_slope * click_logits
            - beta * (self.item_log_price[items] - self.log_price_ref)
        )
        if c.conversion_std > 0:
            y = y + self.item_conversion[items]
        if c.conversion_price_lift > 0:
            y = y + c.conversion_price_lift * (self.item_log_price[items] - self.log_price_ref)
        return y.astype(np.float32)

    def available(self, items: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Whether ``items`` (B, R) have arrived by each row's ``day`` (B,)."""
        return self.item_arrival_day[items] <= np.asarray(day)[:, None]

    def examination(self, positions: np.ndarray) -> np.ndarray:
        """Position bias rho_k (PBM) for 0-based positions."""
        return (positions + 1.0) ** -self.config.position_decay

    def item_table(self) -> dict[str, np.ndarray]:
        """The item features a model may see (no latent truth)."""
        c = self.config
        return {
            "item_id": np.arange(c.n_items, dtype=np.int64),
            "category": self.item_category.astype(np.int32),
            "brand": self.item_brand.astype(np.int32),
            "price": self.item_price,
            "price_bucket": self.item_price_bucket,
            "is_new": self.item_is_new,
        }
