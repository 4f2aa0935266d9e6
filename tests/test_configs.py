"""Shipped config files load and mean what they say; the paths in them name existing files."""

from pathlib import Path

import pytest
import yaml

from abtest.config import load_config as load_experiment
from policies.config import load_config as load_training
from serving.args import app_args
from simulator.config import WorldConfig
from tuning.config import load_config as load_search

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
EXPERIMENTS = ("default.toml", "aa.toml", "oracle_vs_random.toml", "quick.toml", "gmv_vs_clicks.toml")


def test_world_toml_lists_every_setting_at_its_default():
    text = (CONFIGS / "world.toml").read_text()
    assert WorldConfig.from_toml(CONFIGS / "world.toml") == WorldConfig()
    for name in WorldConfig().to_dict():
        assert f"\n{name} = " in text, f"{name} is not documented in configs/world.toml"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_configs_name_existing_training_configs(name):
    config = load_experiment(CONFIGS / name)
    for arm in config.arms.values():
        for spec in (arm.coarse, arm.fine):
            assert not spec.endswith(".toml") or Path(spec).is_file(), spec
    assert Path(config.pre_period.logs).is_relative_to(ROOT / "data" / "logs")


@pytest.mark.parametrize("path", sorted((CONFIGS / "models").glob("*.toml")), ids=lambda p: p.name)
def test_training_configs_write_their_checkpoints_under_runs(path):
    run = load_training(path)
    assert Path(run.out) == ROOT / "runs" / "models" / f"{path.stem}.pt"
    assert Path(run.data.logs).parent == ROOT / "data" / "logs"
    assert not run.distill.enabled or Path(run.distill.teacher).parent == CONFIGS / "models"


@pytest.mark.parametrize("path", sorted((CONFIGS / "models").glob("*.toml")), ids=lambda p: p.name)
def test_training_configs_of_one_world_share_its_logs(path):
    """Logs are simulated once per world: the default world's in data/logs/default, another's
    in a folder of its own (a folder's world.json must match every config that reads it)."""
    run = load_training(path)
    default_world = run.data.world == "default"
    assert (Path(run.data.logs).name == "default") == default_world, (run.data.logs, run.data.world)


@pytest.mark.parametrize("name", ["tune_default.toml", "tune_small.toml"])
def test_search_configs_load_with_paths_in_the_repository(name):
    config = load_search(CONFIGS / name)
    base = config.trial.base
    assert Path(base).is_file() if isinstance(base, str) else Path(base["out"]).is_relative_to(ROOT / "runs")
    fine = config.control.fine
    assert Path(fine).is_file() if isinstance(fine, str) else Path(fine["out"]).is_relative_to(ROOT / "runs")


def test_serve_yaml_args_are_valid_app_arguments():
    (app,) = yaml.safe_load((CONFIGS / "serve.yaml").read_text())["applications"]
    assert set(app_args(app["args"]).arms) == {"control", "treatment"}
