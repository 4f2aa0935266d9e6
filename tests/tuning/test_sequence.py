"""What the behaviour sequence is worth: the history alterations and the command end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from common.config import dumps_toml
from policies.config import read_raw
from policies.data import load_logs
from policies.features import FeatureStore, vocab_of
from policies.models import CoarseConfig, CoarseRanker
from simulator import SMALL, World
from simulator.logs import write_logs
from tuning import sequence_cli
from tuning.sequence import altered, attention_on_accidental, denoising_source

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "models"
NOISY = SMALL.replace(n_users=200, history_noise=0.3, history_dwell_separation=2.0)


@settings(max_examples=200, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 6), st.integers(1, 9))))
def test_denoising_replaces_each_accidental_slot_by_the_latest_clean_one_before_it(clean):
    source = denoising_source(clean)
    rows, slots = np.indices(clean.shape)
    has_clean = clean.any(axis=1)
    assert (source[clean] == slots[clean]).all()  # clean behaviours stay
    assert (source[~has_clean] == slots[~has_clean]).all()  # nothing to copy from
    taken = clean[rows, source]
    assert taken[has_clean].all()  # only clean behaviours remain
    for u, j in zip(*np.nonzero(~clean & has_clean[:, None]), strict=True):
        before = np.flatnonzero(clean[u, :j])
        assert source[u, j] == (before[-1] if len(before) else np.flatnonzero(clean[u])[0])


@pytest.fixture(scope="module")
def noisy_logs(tmp_path_factory):
    world = World(NOISY)
    return world, load_logs(write_logs(world, tmp_path_factory.mktemp("noisy") / "logs", progress=False))


def _pairs(history: torch.Tensor, dwell: torch.Tensor) -> set[tuple[int, float]]:
    return set(zip(history.flatten().tolist(), dwell.flatten().tolist(), strict=True))


def test_denoised_histories_keep_every_clean_behaviour_and_its_dwell_and_only_those(noisy_logs):
    world, data = noisy_logs
    clean = world.history_clean[: data.history.shape[0]]
    denoised = altered(data, clean, "denoised")
    mask = torch.as_tensor(clean)
    assert torch.equal(denoised.history[mask], data.history[mask])
    assert torch.equal(denoised.history_dwell[mask], data.history_dwell[mask])
    assert (denoised.history != data.history).float().mean() > 0.2  # most accidental ones change
    for u in range(0, len(clean), 17):  # each user's (item, dwell) pairs are its own clean ones
        own = _pairs(data.history[u][mask[u]], data.history_dwell[u][mask[u]])
        assert _pairs(denoised.history[u], denoised.history_dwell[u]) <= own
    assert data.samples is denoised.samples  # the evaluation rows do not move


def test_shuffled_histories_are_other_users_whole_histories(noisy_logs):
    world, data = noisy_logs
    shuffled = altered(data, world.history_clean, "shuffled", seed=3)
    history, dwell = data.history.tolist(), data.history_dwell.tolist()
    original = {tuple(row): d for row, d in zip(history, dwell, strict=True)}
    moved = 0
    rows = zip(shuffled.history.tolist(), shuffled.history_dwell.tolist(), strict=True)
    for u, (row, d) in enumerate(rows):
        assert original[tuple(row)] == d  # a whole history, with its own dwell
        moved += row != history[u]
    assert moved > 0.9 * len(original)
    assert torch.equal(altered(data, world.history_clean, "shuffled", seed=3).history, shuffled.history)
    with pytest.raises(ValueError, match="denoised, shuffled"):
        altered(data, world.history_clean, "reversed")


def test_the_command_compares_each_rung_with_itself_on_altered_histories(tmp_path, capsys):
    (tmp_path / "world.toml").write_text(dumps_toml({"world": NOISY.to_dict()}))
    for name in ("coarse_dssm", "fine"):
        raw = read_raw(CONFIGS / f"{name}.toml")
        raw["model"] = {k: v for k, v in raw["model"].items() if k not in ("fine_signal", "dwell_buckets")}
        raw["model"]["dim"] = 8
        raw["train"]["epochs"] = 1
        raw["data"].update(world=str(tmp_path / "world.toml"), logs=str(tmp_path / "logs"), users=200)
        raw["out"] = str(tmp_path / f"{name}.pt")
        (tmp_path / f"{name}.toml").write_text(dumps_toml(raw))
    common = [
        "--base", str(tmp_path / "coarse_dssm.toml"), "--fine", str(tmp_path / "fine.toml"),
        "--out", str(tmp_path / "out"), "--eval-sessions", "10",
    ]  # fmt: skip
    assert sequence_cli.main([*common, "--rungs", "dssm", "+nova"]) == 0
    first = capsys.readouterr()
    table = pd.read_csv(tmp_path / "out" / "sequence.csv")
    assert list(zip(table["rung"], table["histories"], strict=True)) == [
        (rung, histories) for rung in ("dssm", "+nova") for histories in ("logged", "denoised", "shuffled")
    ]
    for rung, rows in table.groupby("rung"):
        logged = rows[rows["histories"] == "logged"].iloc[0]
        altered_rows = rows[rows["histories"] != "logged"]
        # the paired difference is the difference of the GAUCs on the same rows
        np.testing.assert_allclose(
            altered_rows["ΔGAUC ‰ vs logged"], 1000 * (altered_rows["gauc"] - logged["gauc"]), atol=1e-9
        )
        assert (altered_rows["ΔGAUC ±95% ‰"] > 0).all(), rung
    attention = table.set_index(["rung", "histories"])["NOVA attention accidental / clean"]
    assert np.isnan(attention["dssm"]).all() and attention["+nova"].isna().tolist() == [False, True, True]
    assert 0.2 < attention["+nova", "logged"] < 5  # a ratio of attention weights, one epoch trained
    for name in ("dssm", "dssm-denoised", "dssm-shuffled", "nova-denoised", "nova-shuffled"):
        assert (tmp_path / "out" / f"{name}.pt").is_file()
    assert (tmp_path / "out" / "sequence.md").read_text().count("\n| ") == 1 + len(table)

    assert sequence_cli.main([*common, "--rungs", "dssm", "--histories", "shuffled"]) == 0
    again = capsys.readouterr().err
    assert f"training coarse model -> {tmp_path / 'out' / 'dssm.pt'}" not in again  # reused
    assert "dssm on shuffled histories" in again  # an altered rung is always trained afresh
    assert "training" in first.err


def test_attention_on_accidental_is_one_when_uniform_and_falls_when_short_dwell_is_shunned(noisy_logs):
    world, _ = noisy_logs
    features = FeatureStore.from_world(world)
    config = CoarseConfig(dim=8, nova=True, dwell_buckets=8)
    model = CoarseRanker(config, vocab_of(world.config), seed=0).eval()
    users = np.arange(0, NOISY.n_users, 3)
    without_nova = CoarseRanker(CoarseConfig(dim=8), vocab_of(world.config))
    assert np.isnan(attention_on_accidental(without_nova, features, world.history_clean, users))
    with torch.no_grad():
        model.nova.query.weight.zero_()  # every logit 0: uniform attention
        assert attention_on_accidental(model, features, world.history_clean, users) == pytest.approx(1.0)
        # every query reads coordinate 1 (the same +20 for every behaviour), every key
        # coordinate 0 (-20 under 8 s of dwell, mostly accidental behaviours, +20 above): all
        # queries attend to the long-dwell behaviours
        weight = torch.zeros(8, 8)
        weight[0, 1] = 1.0
        model.nova.query.weight.copy_(weight)
        model.nova.key.weight.copy_(torch.eye(8))
        model.dwell.table.weight.zero_()
        model.dwell.table.weight[:, 1] = 20.0
        model.dwell.table.weight[:3, 0] = -20.0
        model.dwell.table.weight[3:, 0] = 20.0
        assert attention_on_accidental(model, features, world.history_clean, users) < 0.5
