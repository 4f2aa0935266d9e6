"""The feature store: model-visible item features and logged behaviour sequences, looked up
by id. Training reads it from the logs (``LogData``); serving and simulation build it from the
world (``from_world``); both hold the same values (``users.parquet`` is ``world.history``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from policies.batch import ItemFeatures, UserFeatures, take_rows
from policies.data import fine_signal_of
from policies.models import Vocab
from simulator.config import WorldConfig
from simulator.world import World


def vocab_of(config: WorldConfig) -> Vocab:
    """Embedding table sizes for a world."""
    return Vocab(
        n_items=config.n_items,
        n_users=config.n_users,
        n_categories=config.n_categories,
        n_brands=config.n_categories * config.brands_per_category,
    )


@dataclasses.dataclass(frozen=True)
class FeatureStore:
    items: ItemFeatures  # (N,) indexed by item id
    history: torch.Tensor  # (U, H) long, logged behaviour sequence, indexed by user id
    history_dwell: torch.Tensor | None = None  # (U, H) float logged dwell seconds, if the world logs them
    item_price: np.ndarray | None = None  # (N,) float64 price by item id (catalogue data; GMV scores)
    world: dict = dataclasses.field(default_factory=dict)  # the world config (fine_signal reads it)

    @classmethod
    def from_world(cls, world: World) -> FeatureStore:
        table = world.item_table()
        items = ItemFeatures(
            item_id=torch.as_tensor(table["item_id"], dtype=torch.long),
            category=torch.as_tensor(table["category"], dtype=torch.long),
            brand=torch.as_tensor(table["brand"], dtype=torch.long),
            price_bucket=torch.as_tensor(table["price_bucket"], dtype=torch.long),
            is_new=torch.as_tensor(table["is_new"], dtype=torch.float32),
        )
        dwell = None if world.history_dwell is None else torch.as_tensor(world.history_dwell)
        history = torch.as_tensor(world.history, dtype=torch.long)
        prices = np.asarray(table["price"], dtype=np.float64)
        return cls(items, history, dwell, prices, world.config.to_dict())

    @property
    def n_items(self) -> int:
        return int(self.items.item_id.shape[0])

    @property
    def n_users(self) -> int:
        return int(self.history.shape[0])

    def users(self, user_ids: np.ndarray | torch.Tensor) -> UserFeatures:
        """Features of users ``user_ids`` (B,); unknown ids raise IndexError."""
        ids = torch.tensor(np.asarray(user_ids), dtype=torch.long)
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= self.n_users):
            raise IndexError(f"user ids must be in [0, {self.n_users}), got {ids.min()}..{ids.max()}")
        dwell = None if self.history_dwell is None else take_rows(self.history_dwell, ids)
        history = self.items.index(take_rows(self.history, ids))
        return UserFeatures(user_id=ids, history=history, history_dwell=dwell)

    def item_features(self, item_ids: np.ndarray | torch.Tensor) -> ItemFeatures:
        """Features of items ``item_ids`` (any shape)."""
        return self.items.index(torch.as_tensor(np.asarray(item_ids), dtype=torch.long))

    def fine_signal(self, user_ids: np.ndarray, item_ids: np.ndarray) -> torch.Tensor | None:
        """The fine ranker's pair-wise feature for users (B,) and items (B, R), as training reads
        it (``policies.data.fine_signal_of``); None when the world has none."""
        return fine_signal_of(self.world, user_ids, item_ids)
