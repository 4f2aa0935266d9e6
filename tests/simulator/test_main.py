"""The command line, in-process at SMALL size, and end to end at the default size (slow)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simulator import SessionKeys, World, WorldConfig
from simulator.__main__ import main
from simulator.recall import Recall


def test_describe_json_reports_all_baselines(capsys: pytest.CaptureFixture) -> None:
    assert main(["describe", "--small", "--sessions", "60", "--oracle-users", "10", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert set(figures["policies"]) == {"random", "popularity", "noisy_oracle", "oracle", "oracle_gmv"}
    assert figures["sample"] == {"sessions": 120, "days": 2, "oracle_users": 10}  # 60 users x 2 days


def test_config_file_overrides_the_defaults(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "world.toml"
    small = WorldConfig(
        n_items=3_000,
        n_users=500,
        n_categories=10,
        brands_per_category=5,
        recall_size=300,
        logging_coarse_size=50,
        i2i_neighbors=20,
    )
    path.write_text("[world]\n" + "\n".join(f"{k} = {v!r}" for k, v in small.to_dict().items()) + "\n")
    main(["describe", "--config", str(path), "--sessions", "20", "--oracle-users", "5", "--json"])
    assert json.loads(capsys.readouterr().out)["world"]["items"] == 3_000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[world]\nhistory_noise = 1.5\n", r"world\.toml \[world\] history_noise: must be >= 0 and <= 1"),
        ("[world]\nn_items = \n", r"world\.toml: is not valid TOML: .*line 2"),
        ("[world]\nn_itemz = 5\n", r"\[world\] n_itemz: unknown key; did you mean 'n_items'\?"),
    ],
)
def test_bad_config_file_is_one_line_and_exit_2(tmp_path: Path, capsys, text: str, message: str) -> None:
    path = tmp_path / "world.toml"
    path.write_text(text)
    assert main(["describe", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err


def test_set_overrides_a_world_setting(capsys) -> None:
    args = [
        "describe",
        "--small",
        "--set",
        "n_items=3000",
        "--sessions",
        "5",
        "--oracle-users",
        "2",
        "--json",
    ]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["world"]["items"] == 3_000


def test_logs_command_refuses_an_existing_folder_without_force(tmp_path: Path) -> None:
    out = tmp_path / "logs"
    assert main(["logs", str(out), "--small", "--users", "5"]) == 0
    assert len(pd.read_parquet(out / "samples.parquet")) > 0
    with pytest.raises(SystemExit) as exit_info:
        main(["logs", str(out), "--small", "--users", "5"])
    assert exit_info.value.code == 2
    assert main(["logs", str(out), "--small", "--users", "5", "--force"]) == 0


@pytest.mark.slow
def test_default_world_recall_and_describe_end_to_end() -> None:
    config = WorldConfig()
    world = World(config)
    items = Recall(world)(SessionKeys.of(np.arange(0, config.n_users, config.n_users // 64)[:64])).items
    assert items.shape == (64, config.recall_size)
    assert ((items >= 0) & (items < config.n_items)).all()
    assert all(len(np.unique(row)) == config.recall_size for row in items)

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulator",
            "describe",
            "--small",
            "--sessions",
            "200",
            "--oracle-users",
            "50",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "ctr" in done.stdout
