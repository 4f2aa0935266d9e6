"""The command line and the Serve config file build valid app arguments."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from serving.__main__ import parse_args
from serving.args import app_args

SERVE_YAML = Path(__file__).resolve().parents[2] / "configs" / "serve.yaml"


def test_flags_build_app_args():
    flags = "--arm control=popularity --arm treatment=random@50 --fine popularity --salt s1"
    args, ns = parse_args(
        [*flags.split(), "--share", "control=0.25", "--share", "treatment=0.75", "--port", "9001"]
    )
    assert args.arms["treatment"].coarse == "random" and args.coarse_size("treatment") == 50
    assert args.coarse_size("control") == args.world_config.logging_coarse_size
    assert args.experiment().shares == (0.25, 0.75) and args.experiment().salt == "s1"
    assert (args.fine, args.port, args.host, ns.name) == ("popularity", 9001, "127.0.0.1", "cascade")
    assert args.layout == "split" and parse_args(["--layout", "fused"])[0].layout == "fused"


def test_an_args_file_is_overridden_by_flags(tmp_path):
    path = tmp_path / "app.yaml"
    path.write_text("world: small\narms: {a: {coarse: oracle}, b: {}}\nassignment: {salt: x}\n")
    args, _ = parse_args(["--args", str(path), "--layer", "L"])
    assert args.arms["a"].coarse == "oracle"
    assert (args.assignment.salt, args.assignment.layer) == ("x", "L")


@pytest.mark.parametrize(
    "argv",
    [["--arm", "nameonly"], ["--arm", "a=popularity@big"], ["--world", "nowhere"], ["--arm", "a=missing.pt"]],
)
def test_bad_flags_exit_with_a_message(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("world: small\nacess_log: true\n", r"app\.yaml acess_log: unknown key; did you mean 'access_log'\?"),
        ("access_log: 'no'\n", r"app\.yaml access_log: must be true or false"),
        ("port: true\n", r"app\.yaml port: must be an integer, got True"),
        ("layout: fuse\n", r"app\.yaml layout: must be one of \['split', 'fused'\]"),
        ("max_queued_requests: -2\n", r"app\.yaml max_queued_requests: must be >= -1"),
        ("arms: {a: {coarse_size: 0}}\n", r"app\.yaml \[arms\.a\] coarse_size: must be >= 1"),
        ("world: [1\n", r"app\.yaml: cannot read app arguments"),
    ],
)
def test_a_bad_args_file_is_one_line_naming_file_and_key(tmp_path, capsys, text, message):
    path = tmp_path / "app.yaml"
    path.write_text(text)
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--args", str(path)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert re.search(message, err), err


def test_set_overrides_and_relative_paths_of_an_args_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "w.toml").write_text(
        "[world]\nn_items = 3000\nn_users = 100\nrecall_size = 400\nlogging_coarse_size = 100\n"
    )
    path = tmp_path / "sub" / "app.yaml"
    path.write_text("world: w.toml\narms: {a: {coarse: oracle}}\n")
    args, _ = parse_args(["--args", str(path), "--set", "max_batch_size=8", "--set", "access_log=true"])
    assert args.world == str(tmp_path / "sub" / "w.toml") and args.world_config.n_users == 100
    assert (args.max_batch_size, args.access_log) == (8, True)


def test_app_args_round_trip_through_plain_dicts():
    from common.config import to_plain  # noqa: PLC0415

    args = app_args({"arms": {"a": {"coarse": "random", "coarse_size": 50}, "b": {}}, "port": 9000})
    assert app_args(to_plain(args)) == args


def test_serve_yaml_is_a_valid_local_config():
    config = yaml.safe_load(SERVE_YAML.read_text())
    assert config["http_options"]["host"] == "127.0.0.1"
    (app,) = config["applications"]
    assert app["import_path"] == "serving.app:build_app"
    args = app_args(app["args"])
    assert len(args.arms) == 2 and args.experiment() is not None
