"""The ablation ladder's rungs and the offline evaluation behind its table."""

from __future__ import annotations

import itertools
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from policies.cascade import CascadeSizes
from policies.evaluate import EvalSet, evaluate_coarse
from policies.features import FeatureStore
from policies.rankers import OracleScorer, RandomScorer, load_scorer
from policies.train import parse_config
from tuning.ladder import STEPS, _paired, format_table, ladder_configs, plot_ladder

CONFIGS = Path(__file__).parents[2] / "configs" / "models"


def test_the_last_rung_is_the_full_model_config():
    base = tomllib.loads((CONFIGS / "coarse_dssm.toml").read_text())
    full = tomllib.loads((CONFIGS / "coarse_full.toml").read_text())
    rungs = ladder_configs(base, full["distill"]["teacher"], Path("runs/ladder"))
    assert list(rungs) == [name for name, _ in STEPS]
    last = parse_config({**rungs["full"], "out": full["out"]})
    assert last == parse_config(full)


def test_each_rung_adds_exactly_its_step():
    base = tomllib.loads((CONFIGS / "coarse_dssm.toml").read_text())
    rungs = list(ladder_configs(base, "fine.toml", Path("out")).values())
    for before, after in itertools.pairwise(rungs):
        changed = {
            (table, key)
            for table in set(before) | set(after)
            if isinstance(after.get(table), dict)
            for key in set(before.get(table, {})) | set(after[table])
            if before.get(table, {}).get(key) != after[table].get(key)
        }
        assert 1 <= len(changed) <= 4, changed  # distillation brings its settings along


@pytest.fixture(scope="module")
def eval_set(small_world, small_data, small_fine):
    teacher = load_scorer(str(small_fine.path), small_world, FeatureStore.from_world(small_world), "fine")
    sizes = CascadeSizes(coarse=50, page=10)
    return EvalSet.build(small_world, small_data, small_fine.held_out_users, teacher, sizes, 150, 2000)


def test_oracle_beats_random_on_every_simulator_metric(small_world, eval_set):
    oracle = evaluate_coarse(OracleScorer(small_world), eval_set)
    random = evaluate_coarse(RandomScorer(0), eval_set)
    assert "gauc" not in oracle  # baselines have no logged-list metrics
    for key in ("hitrate_out@50", "hitrate_global@50", "funnel_kept"):
        assert oracle[key] > random[key], key
    assert oracle["funnel_coarse"] < random["funnel_coarse"]
    # recall loss does not depend on the coarse ranker
    assert oracle["funnel_recall"] == random["funnel_recall"]


def test_model_metrics_are_complete_and_funnel_shares_sum_to_one(small_world, small_coarse, eval_set):
    scorer = load_scorer(str(small_coarse.path), small_world, FeatureStore.from_world(small_world), "coarse")
    result = evaluate_coarse(scorer, eval_set)
    for key in ("auc", "gauc", "ndcg@10", "kendall_tau", "recall@10@30", "recall@10@50"):
        assert 0.0 <= result[key] <= 1.0 or key == "kendall_tau", key
    funnel = sum(result[f"funnel_{s}"] for s in ("recall", "coarse", "fine", "kept"))
    assert funnel == pytest.approx(1.0)
    assert np.isfinite(result["hitrate_global@50"])


def test_table_formats_every_row():
    rows = [{"model": "a", "x": 0.123456, "version": "v"}, {"model": "b", "x": np.nan}]
    text = format_table(pd.DataFrame(rows))
    assert text.splitlines() == ["| model | x |", "|---|---|", "| a | 0.1235 |", "| b |  |"]


def test_paired_interval_is_the_normal_95_percent_half_width():
    diff = np.random.default_rng(0).normal(0.3, 2.0, 400)
    mean, half = _paired(diff)
    assert mean == pytest.approx(diff.mean())
    assert half == pytest.approx(1.96 * diff.std(ddof=1) / 20)


def test_plot_draws_every_trained_rung_and_the_oracle(tmp_path):
    import matplotlib.image  # noqa: PLC0415

    rows = [{"model": "oracle", "auc": np.nan, "gauc": np.nan, "Δclicks vs dssm": 1.0, "Δclicks ±95%": 0.2}]
    for i, name in enumerate(["dssm", "+fm", "full"]):
        rows.append({"model": name, "auc": 0.6 + i / 100, "gauc": 0.55 + i / 100})
        rows[-1] |= {"Δclicks vs dssm": i / 10, "Δclicks ±95%": 0.1}
    plot_ladder(pd.DataFrame(rows), tmp_path / "ladder.png")
    image = matplotlib.image.imread(tmp_path / "ladder.png")
    assert image.shape[:2] == (440, 1210)  # 11 x 4 inches at 110 dpi
    assert image[..., :3].std() > 0.05  # something was drawn
