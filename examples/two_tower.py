"""A ranker of your own as an arm: a small hand-written PyTorch two-tower model.

    [arms.two_tower]
    coarse = "examples.two_tower:TwoTower"   # or fine = ..., or both

``TwoTower`` is a factory in the sense of ``policies.custom``: ``TwoTower(world, features)``
trains in a few seconds on the logged behaviour sequences (``features.history``: every
user's logged clicks, accidental ones included) and is then a scorer, ``score(users, items)``
and ``version``. Item tower: embeddings of the item id, category, brand and price bucket,
summed. User tower: an MLP over the mean embedding of the user's history. Training: each step
hides one history item per user and asks the user tower to pick it out of the batch's hidden
items (in-batch softmax). Training is seeded and single-threaded, so every process that
builds the scorer (this one, each Ray actor, each Serve replica) gets the same weights; the
version is a hash of them.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from torch import nn

DIM, STEPS, BATCH, LR, TEMPERATURE, SEED = 32, 200, 256, 0.02, 0.1, 7

_TABLES: dict[Any, tuple[np.ndarray, np.ndarray]] = {}
"""Trained (user vectors, item vectors) by world config: one training per world and process."""


class _Towers(nn.Module):
    def __init__(self, n_items: int, n_categories: int, n_brands: int) -> None:
        super().__init__()
        self.item_id, self.history = nn.Embedding(n_items, DIM), nn.Embedding(n_items, DIM)
        self.category, self.brand = nn.Embedding(n_categories, DIM), nn.Embedding(n_brands, DIM)
        self.price = nn.Embedding(10, DIM)
        self.user_mlp = nn.Sequential(nn.Linear(DIM, 2 * DIM), nn.ReLU(), nn.Linear(2 * DIM, DIM))

    def items(self, features, ids: torch.Tensor) -> torch.Tensor:
        """Item vectors (..., DIM) of item ids."""
        f = features.items.index(ids)
        ids_and_fields = self.item_id(f.item_id) + self.category(f.category) + self.brand(f.brand)
        return ids_and_fields + self.price(f.price_bucket)

    def users(self, history: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """User vectors (B, DIM) from histories (B, H), averaging where ``keep`` (B, H)."""
        weights = keep.float() / keep.float().sum(1, keepdim=True).clamp(min=1)
        return self.user_mlp((self.history(history) * weights[..., None]).sum(1))


class TwoTower:
    """A two-tower scorer trained on the world's logged behaviour when built."""

    def __init__(self, world, features) -> None:
        if world.config not in _TABLES:
            _TABLES[world.config] = self._tables(world, features)
        self.user_vectors, self.item_vectors = _TABLES[world.config]
        digest = hashlib.sha256(self.item_vectors.tobytes() + self.user_vectors.tobytes()).hexdigest()
        self.version = f"two-tower-{digest[:12]}"

    @classmethod
    def _tables(cls, world, features) -> tuple[np.ndarray, np.ndarray]:
        """Train, then tabulate every user's and item's vector (float64)."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the same weights in every process
        try:
            with torch.random.fork_rng():
                torch.manual_seed(SEED)
                model = cls._train(world, features)
                with torch.no_grad():
                    items = model.items(features, torch.arange(features.n_items))
                    users = torch.cat(
                        [
                            model.users(chunk, torch.ones_like(chunk, dtype=torch.bool))
                            for chunk in features.history.split(4096)
                        ]
                    )
        finally:
            torch.set_num_threads(threads)
        return users.double().numpy(), items.double().numpy()

    @staticmethod
    def _train(world, features) -> _Towers:
        c = world.config
        model = _Towers(c.n_items, c.n_categories, c.n_categories * c.brands_per_category)
        optimiser = torch.optim.Adam(model.parameters(), lr=LR)
        history = features.history
        for _ in range(STEPS):
            users = torch.randint(len(history), (BATCH,))
            hidden = torch.randint(history.shape[1], (BATCH,))
            rows = history[users]
            keep = torch.ones_like(rows, dtype=torch.bool)
            keep[torch.arange(BATCH), hidden] = False
            user_vecs = model.users(rows, keep)
            item_vecs = model.items(features, rows[torch.arange(BATCH), hidden])
            logits = nn.functional.normalize(user_vecs, dim=1) @ nn.functional.normalize(item_vecs, dim=1).T
            loss = nn.functional.cross_entropy(logits / TEMPERATURE, torch.arange(BATCH))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        return model

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Dot products (B, R) float64; each row's sum runs in the same order whatever the batch."""
        return (self.user_vectors[np.asarray(users)][:, None, :] * self.item_vectors[items]).sum(-1)
