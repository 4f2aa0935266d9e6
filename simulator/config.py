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
import enum
import tomllib
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is out of its allowed range or unknown."""


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """Ground truth of the simulated e-commerce world."""

    seed: int = 0
    """Fixes the world (items, users, histories) and every draw in every session."""

    # --- size -------------------------------------------------------------------
    n_items: int = 100_000
    """Items in the pool."""
    n_users: int = 50_000
    """Users; user ids are 0..n_users-1."""
    n_categories: int = 100
    """Item categories; items of a category share a taste centre and a price level."""
    brands_per_category: int = 20
    """Brands nest in categories; a brand shifts the quality of its items."""
    dim: int = 32
    """Dimension of the latent taste vectors w_u and v_i."""

    # --- latent taste -------------------------------------------------------------
    taste_scale: float = 0.8
    """Std of <w_u, v_i> across random (user, item) pairs, in logits."""
    item_spread: float = 0.6
    """Within-category spread of item vectors relative to the category centre."""
    user_focus: float = 1.5
    """How strongly a user's taste points at one favourite category (0 = isotropic)."""

    # --- quality, popularity, price, new products ------------------------------------
    quality_std: float = 0.4
    """Std of the item-level part of the quality term q_i, in logits."""
    brand_std: float = 0.3
    """Std of the brand-level part of q_i (shared by a brand's items)."""
    popularity_exponent: float = 1.0
    """Zipf exponent of popularity: weight of the r-th most popular item is r^-exponent."""
    popularity_quality_corr: float = 0.5
    """How much popularity rank follows quality (0 = independent, 1 = fully)."""
    price_log_mean: float = 3.5
    """Mean over categories of the category's mean log price (exp(3.5) ~ 33)."""
    price_category_std: float = 0.8
    """Std of the category mean log price."""
    price_item_std: float = 0.5
    """Std of log price within a category."""
    price_sensitivity_mean: float = 0.6
    """Mean of the user's price sensitivity beta_u (gamma distributed)."""
    price_sensitivity_std: float = 0.3
    """Std of beta_u."""
    new_item_share: float = 0.05
    """Share of items that are new: content features only, bottom of popularity."""
    new_item_effect_std: float = 0.5
    """Std of the user's affinity nu_u for new items (the new-item logit term)."""

    # --- behaviour sequences ------------------------------------------------------------
    history_len: int = 50
    """Length of every user's logged behaviour sequence (most recent last)."""
    history_noise: float = 0.2
    """Share epsilon of the sequence that is accidental clicks on random items."""
    history_candidates: int = 4
    """A clean behaviour is the taste-best of this many popularity draws in a category."""
    seq_window: int = 10
    """Recent clean behaviours that enter the sequence x target term."""
    seq_gamma: float = 1.0
    """gamma: weight of max_j cos(v_j, v_i) over recent clean behaviour, in logits."""

    # --- response -------------------------------------------------------------------------
    click_intercept: float = -5.0
    """a: click-logit intercept."""
    purchase_intercept: float = -4.8
    """b: purchase-logit intercept (given a click)."""
    purchase_slope: float = 0.5
    """c: weight of the click logit z_ui in the purchase logit."""
    page_size: int = 10
    """Items per page (one page = one request)."""
    position_decay: float = 0.6
    """Position bias (PBM): examination rho_k = (k + 1)^-decay at position k = 0, 1, ..."""
    continue_intercept: float = 0.5
    """Continue-to-next-page logit when the page satisfies no one."""
    continue_slope: float = 0.5
    """Continue logit rises by this much per expected click on the page (satisfaction)."""
    continue_click_bonus: float = 0.3
    """Continue logit rises by this much per actual click on the page."""
    max_pages: int = 30
    """A session is truncated after this many pages."""

    # --- out-of-scene purchases ------------------------------------------------------------
    out_of_scene_rate: float = 0.3
    """Mean purchases per user per day outside the scene (Poisson)."""
    out_of_scene_candidates: int = 64
    """An out-of-scene purchase is a softmax draw among this many items of a preferred category."""

    # --- recall -----------------------------------------------------------------------------
    recall_size: int = 5_000
    """Candidates per request after merging and de-duplicating the channels."""
    recall_share_i2i: float = 0.35
    """Share of recall quota for item-to-item neighbours of the behaviour sequence."""
    recall_share_taste: float = 0.35
    """Share for taste-based recall (noisy user vector, top categories)."""
    recall_share_popular: float = 0.2
    """Share for popularity recall."""
    recall_share_new: float = 0.1
    """Share for new-product recall."""
    i2i_neighbors: int = 100
    """Neighbours stored per item for item-to-item recall."""
    i2i_noise: float = 0.3
    """Noise added to item vectors before computing i2i neighbours (co-occurrence is noisy)."""
    recall_taste_noise: float = 1.0
    """Gumbel temperature of the taste channel (0 = exact top by true taste)."""
    recall_taste_categories: int = 6
    """Categories the taste channel samples from (the user's noisy top categories)."""

    # --- logging cascade and samples (seed 002) -------------------------------------------
    logging_coarse_size: int = 600
    """Coarse survivors of the logging cascade (fine ranker input)."""
    logging_coarse_noise: float = 1.0
    """Gumbel temperature on log-popularity in the logging coarse stage."""
    logging_fine_noise: float = 1.0
    """Std of the Gaussian-like noise on the true logit in the logging fine stage."""
    sample_unexposed: int = 10
    """M: unexposed coarse survivors sampled per request."""
    sample_dropped: int = 40
    """L: recall items dropped by the coarse stage sampled per request."""
    sample_random: int = 0
    """Random negatives from the whole pool per request."""

    def __post_init__(self) -> None:
        for name in (
            "n_items",
            "n_users",
            "n_categories",
            "brands_per_category",
            "dim",
            "history_len",
            "history_candidates",
            "seq_window",
            "page_size",
            "max_pages",
            "out_of_scene_candidates",
            "recall_size",
            "i2i_neighbors",
            "recall_taste_categories",
            "logging_coarse_size",
        ):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("sample_unexposed", "sample_dropped", "sample_random"):
            _check(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        for name in (
            "taste_scale",
            "item_spread",
            "user_focus",
            "quality_std",
            "brand_std",
            "popularity_exponent",
            "price_category_std",
            "price_item_std",
            "price_sensitivity_mean",
            "price_sensitivity_std",
            "new_item_effect_std",
            "seq_gamma",
            "position_decay",
            "continue_slope",
            "continue_click_bonus",
            "out_of_scene_rate",
            "i2i_noise",
            "recall_taste_noise",
            "logging_coarse_noise",
            "logging_fine_noise",
        ):
            _check(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        for name in (
            "popularity_quality_corr",
            "new_item_share",
            "history_noise",
            "recall_share_i2i",
            "recall_share_taste",
            "recall_share_popular",
            "recall_share_new",
        ):
            value = getattr(self, name)
            _check(0.0 <= value <= 1.0, f"{name} is a probability/share in [0, 1], got {value}")
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
        _check(
            round(self.new_item_share * self.n_items) < self.n_items,
            "new_item_share leaves no established items",
        )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> WorldConfig:
        """Build from a mapping, rejecting unknown keys with the list of known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown world setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_toml(cls, path: str | Path, table: str | None = "world") -> WorldConfig:
        """Load from a TOML file; settings live in the ``[world]`` table by default."""
        data = tomllib.loads(Path(path).read_text())
        if table is not None:
            if table not in data:
                raise ConfigError(f"{path} has no [{table}] table")
            data = data[table]
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> WorldConfig:
        """A copy with some settings changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_world_config(spec: str) -> WorldConfig:
    """A world config from a spec: "default" (or ""), "small", or a TOML file with [world]."""
    if spec in ("", "default"):
        return WorldConfig()
    if spec == "small":
        return SMALL
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f'world {spec!r} is neither "default", "small" nor an existing TOML file')
    return WorldConfig.from_toml(path)


def from_mapping(cls: type[T], values: Any, section: str) -> T:
    """Build the frozen dataclass ``cls`` from a TOML-like mapping, recursing into fields that
    are dataclasses and converting enums and tuples. Unknown keys and ill-typed values raise
    ConfigError naming ``section`` (e.g. ``"[train]"``) and the known keys."""
    if not isinstance(values, dict):
        raise ConfigError(f"{section} must be a table, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown} in {section}; known: {sorted(known)}")
    kwargs = {}
    for name, raw in values.items():
        hint = hints[name]
        where = f"{section[:-1]}.{name}]" if section.endswith("]") else f"{section}.{name}"
        value = raw
        if dataclasses.is_dataclass(hint):
            value = from_mapping(hint, raw, where)
        elif isinstance(hint, type) and issubclass(hint, enum.Enum):
            try:
                value = hint(raw)
            except ValueError:
                raise ConfigError(f"{where}: {raw!r} is not one of {[m.value for m in hint]}") from None
        elif typing.get_origin(hint) is tuple and isinstance(raw, list):
            value = tuple(raw)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{section}: {err}") from err


def to_plain(value: Any) -> Any:
    """A dataclass / enum / tuple tree as plain dicts, strings, numbers and lists (for TOML,
    JSON and checkpoints); the inverse of ``from_mapping``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [to_plain(v) for v in value]
    return value


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
