"""Tuning fixtures: tiny searches on the SMALL world run once and shared by the tests that read
their outputs (on the session's Ray, tests/conftest.py).

The searches are sized for seconds: 1-2 epoch trials of dim-8 models on the SMALL world's
logs, a 60-user online A/B, 30 held-out sessions. ``tiny_raw`` starts from
``configs/tune_small.toml`` with the paths moved to temporary folders."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import pytest

from tuning.config import SearchConfig, parse_config
from tuning.report import write_outputs
from tuning.search import SearchOutcome, run_search

ROOT = Path(__file__).resolve().parents[2]
SMALL_CONFIG = ROOT / "configs" / "tune_small.toml"


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory, small_log_dir):
    """``tiny_raw(**tables)``: configs/tune_small.toml shrunk for tests, its logs the session's
    SMALL logs and its models in a temporary folder, with some tables updated."""
    models = tmp_path_factory.mktemp("tuning-models")
    raw = tomllib.loads(SMALL_CONFIG.read_text())
    raw["trial"]["base"]["data"]["logs"] = str(small_log_dir)
    raw["trial"]["base"]["out"] = str(models / "base.pt")
    raw["control"]["fine"]["data"]["logs"] = str(small_log_dir)
    raw["control"]["fine"]["out"] = str(models / "fine.pt")
    raw["control"]["fine"]["train"]["epochs"] = 1
    raw["trial"]["epochs"] = 1
    raw["search"].update(num_samples=3, time_budget_s=150)
    raw["scheduler"] = {"kind": "fifo"}
    raw["objective"]["users"] = 60
    raw["offline"] = {"sessions": 30, "lists": 2000}
    raw["agreement"] = {"bootstrap": 50}

    def make(**tables) -> dict:
        out = copy.deepcopy(raw)
        for key, value in tables.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "space":
                out[key] = {**out[key], **value}
            else:
                out[key] = value
        return out

    return make


def search(config: SearchConfig, run_dir: Path, **kwargs) -> SearchOutcome:
    outcome = run_search(config, run_dir, log=lambda *_: None, **kwargs)
    write_outputs(config, outcome, run_dir)
    return outcome


RANDOM_SPACE = {"train.batch_size": [0, 128], "model.fm_cross": [False, True]}
"""batch_size 0 is invalid: such a trial raises (twice: one retry) and is reported as failed.
batch_size 128 without the FM cross is the base config: that trial reproduces the control."""


@pytest.fixture(scope="session")
def random_config(tiny_raw) -> SearchConfig:
    """Random search, FIFO, 3 one-epoch trials: with seed 11 they are one failing, one equal to
    the control and one other (tests check this mix)."""
    raw = tiny_raw(name="tiny-random", space=RANDOM_SPACE)
    raw["search"].update(searcher="random", num_samples=3, seed=11)
    return parse_config(raw, "tiny random search")


@pytest.fixture(scope="session")
def random_search(ray_session, random_config, tmp_path_factory) -> tuple[SearchOutcome, Path]:
    run_dir = tmp_path_factory.mktemp("tune") / "tiny-random"
    return search(random_config, run_dir), run_dir


@pytest.fixture(scope="session")
def random_search_again(ray_session, random_config, tmp_path_factory) -> tuple[SearchOutcome, Path]:
    """The same search (same seed) in another folder."""
    run_dir = tmp_path_factory.mktemp("tune-again") / "tiny-random"
    return search(random_config, run_dir), run_dir


@pytest.fixture(scope="session")
def optuna_search(ray_session, tiny_raw, tmp_path_factory) -> tuple[SearchOutcome, Path, SearchConfig]:
    """The shipped small search's searcher and scheduler: Optuna, ASHA on 2 epochs."""
    raw = tiny_raw(name="tiny-optuna")
    raw["trial"]["epochs"] = 2
    raw["scheduler"] = {"kind": "asha", "metric": "epoch/gauc", "grace_period": 1, "reduction_factor": 2}
    raw["search"].update(searcher="optuna", num_samples=3)
    config = parse_config(raw, "tiny optuna search")
    run_dir = tmp_path_factory.mktemp("tune-optuna") / "tiny-optuna"
    return search(config, run_dir), run_dir, config
