"""``python -m tuning``: a bad search config, or a bad training config it names, is one line on
stderr and exit 2 before the run folder exists."""

from __future__ import annotations

import re

import pytest

from tuning.__main__ import EXIT_CONFIG, main

SEARCH = """
name = "s"
[trial]
base = "base.toml"
epochs = 1
[control]
fine = "fine.pt"
[space]
"model.dim" = [4, 8]
"""


@pytest.mark.parametrize(
    ("search", "base", "argv", "message"),
    [
        (
            SEARCH.replace("epochs = 1", 'epochs = "1"'),
            "",
            (),
            r"s\.toml \[trial\] epochs: must be an integer",
        ),
        ("description = 5\n" + SEARCH, "", (), r"s\.toml description: must be a string, got 5"),
        (
            SEARCH,
            'kind = "coarse"\nout = "b.pt"\n[model]\nnova = "yes"\n',
            (),
            r"base\.toml \[model\] nova: must be true or false",
        ),
        (SEARCH, "kind = \n", (), r"base\.toml: is not valid TOML"),
        (SEARCH, "", ("--set", "search.num_samples=0"), r"\[search\] num_samples: must be >= 1, got 0"),
        (SEARCH, "", ("--searcher", "grid"), r"\[search\] searcher: must be one of \['optuna', 'random'\]"),
    ],
)
def test_bad_configs_are_one_line_and_exit_2(tmp_path, capsys, search, base, argv, message):
    (tmp_path / "s.toml").write_text(search)
    (tmp_path / "base.toml").write_text(base or 'kind = "coarse"\nout = "b.pt"\n')
    (tmp_path / "fine.pt").write_bytes(b"")
    runs = tmp_path / "runs"
    assert main(["--config", str(tmp_path / "s.toml"), "--runs-dir", str(runs), *argv]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err
    assert not runs.exists()
