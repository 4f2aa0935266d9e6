"""Models trained once per test session on the SMALL world's logs (a few seconds each)."""

from __future__ import annotations

import pytest

from policies.data import LogData, load_logs
from policies.train import TrainResult, parse_config, train
from simulator.logs import write_logs


@pytest.fixture(scope="session")
def small_data(small_log_dir) -> LogData:
    return load_logs(small_log_dir)


@pytest.fixture(scope="session")
def two_day_log_dir(tmp_path_factory, small_world):
    """Two days of logs of 300 users of the SMALL world (the time split needs >= 2)."""
    out = tmp_path_factory.mktemp("two-days") / "logs"
    return write_logs(small_world, out, n_users=300, days=2, progress=False)


def _train(small_log_dir, small_data, out, kind: str, **tables) -> TrainResult:
    raw = {"kind": kind, "out": str(out), "data": {"logs": str(small_log_dir), "world": "small"}, **tables}
    return train(parse_config(raw), small_data, progress=False, log=lambda *_: None)


@pytest.fixture(scope="session")
def small_fine(tmp_path_factory, small_log_dir, small_data) -> TrainResult:
    out = tmp_path_factory.mktemp("models") / "fine.pt"
    return _train(small_log_dir, small_data, out, "fine", train={"epochs": 3, "eval_lists": 0})


@pytest.fixture(scope="session")
def small_coarse(tmp_path_factory, small_log_dir, small_data, small_fine) -> TrainResult:
    """A distilled coarse model with every switch on (stage 1 then stage 2)."""
    out = tmp_path_factory.mktemp("models") / "coarse.pt"
    return _train(
        small_log_dir,
        small_data,
        out,
        "coarse",
        model={"mlp_scorer": True, "fm_cross": True, "nova": True, "senet_bilinear": True},
        train={"epochs": 2, "eval_lists": 2000},
        distill={"teacher": str(small_fine.path), "soft_only_epochs": 1},
    )
