"""Typed batches of model inputs: what a ranker may see (logged features only, never the
world's latent truth)."""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass(frozen=True)
class ItemFeatures:
    """Model-visible item features; all tensors share one shape S, e.g. (N,) or (B, L)."""

    item_id: torch.Tensor  # long
    category: torch.Tensor  # long
    brand: torch.Tensor  # long
    price_bucket: torch.Tensor  # long, 0..9 (deciles of log price)
    is_new: torch.Tensor  # float 0/1

    def index(self, idx) -> ItemFeatures:
        """The rows ``idx`` (anything that indexes a tensor) of every feature."""
        names = [f.name for f in dataclasses.fields(self)]
        return ItemFeatures(**{name: take_rows(getattr(self, name), idx) for name in names})


def take_rows(table: torch.Tensor, idx) -> torch.Tensor:
    """``table[idx]``; for a long tensor of non-negative ids through ``index_select``, which
    gathers the same values several times faster than advanced indexing (the hot path of every
    scorer's feature and embedding lookups)."""
    ids = isinstance(idx, torch.Tensor) and idx.dtype == torch.long
    if ids and (idx.numel() == 0 or int(idx.min()) >= 0):
        return table.index_select(0, idx.reshape(-1)).reshape(idx.shape + table.shape[1:])
    return table[idx]


@dataclasses.dataclass(frozen=True)
class UserFeatures:
    """Model-visible user context for B requests."""

    user_id: torch.Tensor  # (B,) long
    history: ItemFeatures  # (B, H) the logged behaviour sequence (accidental clicks included)
    history_dwell: torch.Tensor | None = None  # (B, H) float logged dwell seconds, if the world logs them


@dataclasses.dataclass(frozen=True)
class ListBatch:
    """B requests, each a padded list of L candidate samples with labels."""

    user: UserFeatures
    items: ItemFeatures  # (B, L)
    mask: torch.Tensor  # (B, L) bool: a real sample, not padding
    sample_type: torch.Tensor  # (B, L) long, index into simulator.logs.SAMPLE_TYPES
    exposure: torch.Tensor  # (B, L) float
    click: torch.Tensor  # (B, L) float
    purchase: torch.Tensor  # (B, L) float
    fine_signal: torch.Tensor | None = None  # (B, L) float, the pair-wise feature, if the world has one
