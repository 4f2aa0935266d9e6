"""The command line and the Serve config file build valid app arguments."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from serving.__main__ import parse_args
from serving.args import AppArgs

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


def test_serve_yaml_is_a_valid_local_config():
    config = yaml.safe_load(SERVE_YAML.read_text())
    assert config["http_options"]["host"] == "127.0.0.1"
    (app,) = config["applications"]
    assert app["import_path"] == "serving.app:build_app"
    args = AppArgs.model_validate(app["args"])
    assert len(args.arms) == 2 and args.experiment() is not None
