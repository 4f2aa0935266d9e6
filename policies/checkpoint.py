"""Checkpoints: a model's weights with the config that rebuilds it and a version id.

A checkpoint is a plain dict of tensors, strings, numbers and lists, so it loads with
``torch.load(weights_only=True)`` (no pickled code runs on load)::

    {"format": 1, "kind": "fine" | "coarse", "version": "<12 hex>",
     "config": {...model config...}, "vocab": {...}, "state_dict": {...},
     "metadata": {...training config, metrics, score task...}}

The version is a content hash of (kind, config, vocab, weights): the same seed and data give
the same version, and any change of weights gives a new one. Item-tower embeddings are
exported as ``ItemEmbeddings`` carrying that version, so serving can refuse to pair a user
tower with embeddings of another model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from common.config import ConfigError, from_mapping, to_plain
from policies.batch import ItemFeatures
from policies.models import CoarseConfig, CoarseRanker, FineConfig, FineRanker, Vocab

FORMAT = 1
KINDS = ("fine", "coarse")
_KEYS = ("format", "kind", "version", "config", "vocab", "state_dict", "metadata")


class CheckpointError(ValueError):
    """A checkpoint file is malformed, of the wrong kind, or of an unexpected version."""


def config_from_dict(kind: str, raw: dict[str, Any]) -> FineConfig | CoarseConfig:
    """Rebuild a model config; unknown or ill-typed fields raise CheckpointError."""
    cls = FineConfig if kind == "fine" else CoarseConfig
    try:
        return from_mapping(cls, raw)
    except ConfigError as err:
        raise CheckpointError(f"{kind} model config: {err}") from err


def _version(kind: str, config: dict, vocab: dict, state_dict: dict[str, torch.Tensor]) -> str:
    h = hashlib.blake2b(digest_size=6)
    h.update(json.dumps([kind, config, vocab], sort_keys=True).encode())
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().contiguous().cpu()
        h.update(name.encode())
        h.update(str(tensor.dtype).encode() + str(tuple(tensor.shape)).encode())
        h.update(tensor.numpy().tobytes())
    return h.hexdigest()


def kind_of(model: FineRanker | CoarseRanker) -> str:
    if isinstance(model, FineRanker):
        return "fine"
    if isinstance(model, CoarseRanker):
        return "coarse"
    raise TypeError(f"not a ranking model: {type(model).__name__}")


def model_version(model: FineRanker | CoarseRanker) -> str:
    """The version id a checkpoint of ``model`` would carry."""
    kind = kind_of(model)
    return _version(kind, to_plain(model.config), dataclasses.asdict(model.vocab), model.state_dict())


def save_checkpoint(path: str | Path, model: FineRanker | CoarseRanker, metadata: dict | None = None) -> str:
    """Write ``model`` to ``path`` atomically (a temp file then rename); returns its version."""
    kind = kind_of(model)
    config, vocab = to_plain(model.config), dataclasses.asdict(model.vocab)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    version = _version(kind, config, vocab, state)
    payload = {
        "format": FORMAT,
        "kind": kind,
        "version": version,
        "config": config,
        "vocab": vocab,
        "state_dict": state,
        "metadata": dict(metadata or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return version


@dataclasses.dataclass(frozen=True)
class Loaded:
    model: FineRanker | CoarseRanker
    version: str
    metadata: dict


def load_checkpoint(path: str | Path, kind: str | None = None, version: str | None = None) -> Loaded:
    """Load and verify a checkpoint (in eval mode). ``kind`` / ``version``, if given, must
    match; the stored version must match the weights (a corrupted or edited file fails)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path} is not a readable checkpoint: {err}") from err
    if not isinstance(payload, dict) or set(payload) != set(_KEYS):
        keys = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} is not a checkpoint: expected keys {sorted(_KEYS)}, got {keys}")
    if payload["format"] != FORMAT:
        raise CheckpointError(f"{path} has format {payload['format']!r}; this code reads format {FORMAT}")
    found = payload["kind"]
    if found not in KINDS:
        raise CheckpointError(f"{path} has unknown kind {found!r}")
    if kind is not None and found != kind:
        raise CheckpointError(f"{path} holds a {found} model, expected a {kind} model")
    if version is not None and payload["version"] != version:
        raise CheckpointError(f"{path} has version {payload['version']}, expected {version}")
    config = config_from_dict(found, payload["config"])
    try:
        vocab = Vocab(**payload["vocab"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path} has an invalid vocab: {err}") from err
    model = FineRanker(config, vocab) if found == "fine" else CoarseRanker(config, vocab)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the stored config: {err}") from err
    actual = _version(found, payload["config"], payload["vocab"], payload["state_dict"])
    if actual != payload["version"]:
        raise CheckpointError(
            f"{path}: stored version {payload['version']} does not match its weights ({actual})"
        )
    model.eval()
    return Loaded(model, payload["version"], payload["metadata"])


@dataclasses.dataclass(frozen=True)
class ItemEmbeddings:
    """The item side of a coarse model for every item, tagged with the model's version."""

    version: str
    vectors: torch.Tensor  # (N, item_dim) float32, row = item id


@torch.no_grad()
def export_item_embeddings(model: CoarseRanker, items: ItemFeatures, chunk: int = 16_384) -> ItemEmbeddings:
    """Run the item tower once over ``items`` (N,), in chunks so memory stays bounded."""
    model.eval()
    n = items.item_id.shape[0]
    parts = [model.encode_items(items.index(slice(lo, lo + chunk))) for lo in range(0, n, chunk)]
    vectors = torch.cat(parts) if parts else torch.zeros(0, model.item_dim)
    return ItemEmbeddings(model_version(model), vectors.contiguous())


def save_item_embeddings(path: str | Path, embeddings: ItemEmbeddings) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({"version": embeddings.version, "vectors": embeddings.vectors}, tmp)
    os.replace(tmp, path)


def load_item_embeddings(path: str | Path, version: str | None = None) -> ItemEmbeddings:
    """Load exported embeddings; ``version``, if given, must match the stored one."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or set(payload) != {"version", "vectors"}:
        raise CheckpointError(f"{path} is not an item-embedding export")
    if version is not None and payload["version"] != version:
        raise CheckpointError(
            f"{path} holds item embeddings of model version {payload['version']}, expected {version}"
        )
    return ItemEmbeddings(payload["version"], payload["vectors"])
