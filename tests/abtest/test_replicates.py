"""Training-seed replicates: reseeded arms and the table over seeds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from abtest.config import load_config
from abtest.replicates import replicate_markdown, replicate_table, reseeded
from common.config import ConfigError
from policies.config import load_config as load_training_config


def _records(lifts: dict[str, float], significant: dict[str, bool] | None = None, truth: bool = True):
    significant = significant or {}
    out = []
    for metric, lift in lifts.items():
        record = {"metric": metric, "treatment": "treatment", "rel_effect": lift}
        record["significant"] = significant.get(metric, False)
        if truth:
            record["true_rel_effect"] = lift / 2
        out.append(record)
    return out


def test_the_mean_lifts_interval_is_the_t_interval_over_the_seeds() -> None:
    clicks = {0: 0.0196, 1: 0.0030, 2: 0.0057}
    runs = {
        seed: _records({"clicks": lift, "gmv": -lift}, {"clicks": seed != 1, "gmv": seed == 0})
        for seed, lift in clicks.items()
    }
    table = replicate_table(runs).set_index("metric")
    reference = stats.ttest_1samp(list(clicks.values()), 0.0).confidence_interval(0.95)
    row = table.loc["clicks"]
    assert row["mean lift"] == pytest.approx(np.mean(list(clicks.values())))
    assert (row["ci_lower"], row["ci_upper"]) == pytest.approx((reference.low, reference.high))
    assert row["mean true lift"] == pytest.approx(row["mean lift"] / 2)
    assert [row[f"lift seed{s}"] for s in clicks] == pytest.approx(list(clicks.values()))
    assert (row["seeds up"], row["seeds down"]) == (2, 0)
    assert (table.loc["gmv", "seeds up"], table.loc["gmv", "seeds down"]) == (0, 1)


def test_only_comparisons_every_seed_measured_are_lined_up() -> None:
    runs = {0: _records({"clicks": 0.01, "gmv": 0.02}), 3: _records({"clicks": 0.03}, truth=False)}
    table = replicate_table(runs)
    assert list(table["metric"]) == ["clicks"]
    assert np.isnan(table.loc[0, "true seed3"]) and table.loc[0, "true seed0"] == pytest.approx(0.005)
    single = replicate_table({0: _records({"clicks": 0.01})})
    assert np.isnan(single.loc[0, "ci_lower"]) and np.isnan(single.loc[0, "ci_upper"])
    text = replicate_markdown(table)
    assert "| clicks | treatment | +1.00% | +3.00% |" in text
    with pytest.raises(ValueError, match="no replicates"):
        replicate_table({})


def _experiment(tmp_path, coarse: str):
    (tmp_path / "c.toml").write_text(
        f'kind = "coarse"\nout = "{tmp_path / "c.pt"}"\n[data]\nlogs = "{tmp_path / "logs"}"\n'
        'world = "small"\n[model]\ndim = 4\n[train]\nseed = 0\n'
    )
    path = tmp_path / "e.toml"
    path.write_text(
        f'name = "e"\nworld = "small"\n[arms.control]\ncoarse = "popularity"\nfine = "oracle"\n'
        f'[arms.treatment]\ncoarse = "{coarse}"\nfine = "oracle"\n'
    )
    return load_config(path)


def test_reseeded_arms_train_a_copy_of_their_config_with_the_seed(tmp_path) -> None:
    config = _experiment(tmp_path, str(tmp_path / "c.toml"))
    assert reseeded(config, 0, tmp_path / "models") == config  # its own seed: its own checkpoint
    seeded = reseeded(config, 2, tmp_path / "models")
    copy = tmp_path / "models" / "seed2" / "c.toml"
    assert seeded.arms["treatment"].coarse == str(copy.resolve())
    assert seeded.arms["control"] == config.arms["control"]  # a baseline has no training seed
    run, original = load_training_config(copy), load_training_config(tmp_path / "c.toml")
    assert run.train.seed == 2 and run.out == str((tmp_path / "models" / "seed2" / "c.pt").resolve())
    assert run.data == original.data and run.model == original.model  # only the seed and out differ
    with pytest.raises(ConfigError, match="training config"):
        reseeded(_experiment(tmp_path, "oracle"), 1, tmp_path / "models")
