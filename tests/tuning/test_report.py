"""tuning.report: the best trial, the trial table and best.toml (without running a search)."""

from __future__ import annotations

import json
import math

import pandas as pd

from policies.train import load_config as load_training_config
from policies.train import parse_config as parse_training_config
from tuning.config import parse_config
from tuning.report import best_trial, format_table, offline_columns, write_best_toml


def trials_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "trial_id": ["a", "b", "c", "d"],
            "status": ["finished", "error", "finished", "stopped"],
            "epochs": [2, 1, 2, 1],
            "objective": [0.01, 0.50, 0.03, math.nan],
            "objective_lo": [-0.01, 0.4, 0.01, math.nan],
            "objective_hi": [0.03, 0.6, 0.05, math.nan],
            "offline/gauc": [0.61, 0.7, 0.64, math.nan],
        }
    )


def test_the_best_trial_is_the_finished_one_with_the_highest_objective() -> None:
    table = trials_table()
    assert best_trial(table)["trial_id"] == "c"  # b is higher but failed
    assert best_trial(table[table["status"] != "finished"]) is None
    assert best_trial(table.iloc[:0]) is None


def test_the_table_lists_trials_best_first_with_their_intervals(tiny_raw) -> None:
    config = parse_config(tiny_raw(), "tiny")
    lines = format_table(config, trials_table()).splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["b", "c", "a", "d"]  # nan objective last
    assert "+3.00% [+1.00%, +5.00%]" in lines[2] and "0.6400" in lines[2]
    assert format_table(config, trials_table().iloc[:0]) == "no trials"
    c = config.control.coarse_size
    assert f"offline/hitrate_global@{c}" in offline_columns(config)


def test_best_toml_reloads_to_the_trials_training_config(tiny_raw, tmp_path, small_log_dir) -> None:
    config = parse_config(tiny_raw(), "tiny")
    raw = {
        "kind": "coarse",
        "out": str(tmp_path / "c.pt"),
        "data": {"logs": str(small_log_dir), "world": "small"},
        "model": {"dim": 8, "fm_cross": True},
        "train": {"epochs": 1, "loss": "bce"},
    }
    (tmp_path / "c.json").write_text(json.dumps(raw))
    best = pd.Series({"trial_id": "c", "objective": 0.03, "objective_lo": 0.01, "objective_hi": 0.05})
    write_best_toml(config, best, tmp_path, tmp_path / "best.toml")
    text = (tmp_path / "best.toml").read_text()
    assert text.startswith("# Best trial c of search") and "+3.00% [+1.00%, +5.00%]" in text
    assert load_training_config(tmp_path / "best.toml") == parse_training_config(raw)
