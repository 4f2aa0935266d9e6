"""Checkpoints round-trip exactly; malformed files and mismatched versions fail clearly."""

from __future__ import annotations

import pytest
import torch

from policies.batch import ItemFeatures
from policies.checkpoint import (
    CheckpointError,
    export_item_embeddings,
    load_checkpoint,
    load_item_embeddings,
    model_version,
    save_checkpoint,
    save_item_embeddings,
)
from policies.models import CoarseConfig, CoarseRanker, FineConfig, FineRanker, Similarity, Vocab

VOCAB = Vocab(n_items=50, n_users=10, n_categories=5, n_brands=10)
FULL = CoarseConfig(
    dim=8, similarity=Similarity.COSINE, mlp_scorer=True, fm_cross=True, nova=True, senet_bilinear=True
)


def _coarse(seed: int = 0, config: CoarseConfig = FULL) -> CoarseRanker:
    return CoarseRanker(config, VOCAB, seed=seed)


def _catalogue() -> ItemFeatures:
    ids = torch.arange(VOCAB.n_items)
    return ItemFeatures(ids, ids % 5, ids % 10, ids % 10, (ids % 7 == 0).float())


@pytest.mark.parametrize(
    "model", [_coarse(), FineRanker(FineConfig(dim=8, hidden=(16,)), VOCAB)], ids=["coarse", "fine"]
)
def test_round_trip_is_exact(tmp_path, model):
    version = save_checkpoint(tmp_path / "m.pt", model, {"note": "x", "history": [{"auc": 0.5}]})
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.version == version == model_version(model)
    assert loaded.model.config == model.config and loaded.model.vocab == model.vocab
    assert loaded.metadata == {"note": "x", "history": [{"auc": 0.5}]}
    original, restored = model.state_dict(), loaded.model.state_dict()
    assert original.keys() == restored.keys()
    for name, tensor in original.items():
        assert torch.equal(tensor, restored[name]), name
    assert not loaded.model.training


def test_version_is_a_content_hash():
    assert model_version(_coarse(0)) == model_version(_coarse(0))
    assert model_version(_coarse(0)) != model_version(_coarse(1))
    model = _coarse(0)
    before = model_version(model)
    with torch.no_grad():
        model.task_bias[0] += 1e-6
    assert model_version(model) != before


def test_save_leaves_no_temporary_files(tmp_path):
    save_checkpoint(tmp_path / "m.pt", _coarse())
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def _payload(tmp_path):
    save_checkpoint(tmp_path / "m.pt", _coarse())
    return torch.load(tmp_path / "m.pt", weights_only=True)


def _write(tmp_path, payload):
    torch.save(payload, tmp_path / "bad.pt")
    return tmp_path / "bad.pt"


def test_missing_file_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_garbage_file_is_not_a_checkpoint(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"definitely not a zip archive")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")


class _Evil:
    def __reduce__(self):
        return (print, ("code ran on load",))


def test_pickled_code_is_refused(tmp_path):
    torch.save({"x": _Evil()}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")


def test_a_bare_state_dict_is_not_a_checkpoint(tmp_path):
    path = _write(tmp_path, _coarse().state_dict())
    with pytest.raises(CheckpointError, match="expected keys"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.update(format=99), "format 99"),
        (lambda p: p.update(kind="teacher"), "unknown kind"),
        (lambda p: p["config"].update(depth=3), r"model config: depth: unknown key"),
        (lambda p: p["config"].update(dim=0), "dim"),
        (lambda p: p["vocab"].update(n_items=-1), "invalid vocab"),
        (lambda p: p["state_dict"].pop("task_bias"), "do not fit"),
        (lambda p: p["state_dict"]["task_bias"].add_(1.0), "does not match its weights"),
    ],
    ids=["format", "kind", "unknown-field", "bad-config", "bad-vocab", "missing-weight", "tampered"],
)
def test_malformed_checkpoints_fail_clearly(tmp_path, change, message):
    payload = _payload(tmp_path)
    change(payload)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(_write(tmp_path, payload))


def test_expected_kind_and_version_are_enforced(tmp_path):
    version = save_checkpoint(tmp_path / "m.pt", _coarse())
    with pytest.raises(CheckpointError, match="holds a coarse model, expected a fine model"):
        load_checkpoint(tmp_path / "m.pt", kind="fine")
    with pytest.raises(CheckpointError, match=f"has version {version}, expected 000000000000"):
        load_checkpoint(tmp_path / "m.pt", version="000000000000")
    assert load_checkpoint(tmp_path / "m.pt", kind="coarse", version=version).version == version


def test_item_embeddings_carry_the_model_version(tmp_path):
    model = _coarse()
    emb = export_item_embeddings(model, _catalogue(), chunk=7)  # chunks must not change values
    assert emb.version == model_version(model)
    with torch.no_grad():
        torch.testing.assert_close(emb.vectors, model.encode_items(_catalogue()))
    save_item_embeddings(tmp_path / "e.pt", emb)
    again = load_item_embeddings(tmp_path / "e.pt", version=emb.version)
    assert torch.equal(again.vectors, emb.vectors)
    with pytest.raises(CheckpointError, match="expected 000000000000"):
        load_item_embeddings(tmp_path / "e.pt", version="000000000000")
