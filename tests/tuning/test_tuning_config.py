"""The search config: shipped files parse, errors name the setting, the trial config is the
base plus overrides plus sampled settings, and the Tune space matches the config."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from common.config import ConfigError
from policies.config import DWELL_BUCKETS
from policies.train import parse_config as parse_training_config
from tuning.config import (
    Distribution,
    Searcher,
    load_config,
    parse_config,
    template_raw_config,
    trial_raw_config,
)

ROOT = Path(__file__).resolve().parents[2]
SMALL_CONFIG = ROOT / "configs" / "tune_small.toml"


@pytest.mark.parametrize("name", ["tune_default.toml", "tune_small.toml"])
def test_shipped_configs_parse_and_round_trip(name):
    config = load_config(ROOT / "configs" / name)
    assert parse_config(config.to_dict()) == config


def test_default_config_searches_the_issue_settings():
    keys = {d.key for d in load_config(ROOT / "configs" / "tune_default.toml").space}
    wanted = {"model.mlp_scorer", "model.fm_cross", "model.nova", "model.senet_bilinear", "model.dim"}
    wanted |= {"train.lr", "train.loss", "distill.label_smoothing_scale", "distill.teacher"}
    wanted |= {"distill.soft_weight", "distill.soft_only_epochs", "distill.loss"}
    wanted |= {"data.unexposed", "data.dropped"}
    wanted |= {"data.out_of_scene", "model.temperature"}
    assert wanted <= keys


def _raw(**changes) -> dict:
    raw = tomllib.loads(SMALL_CONFIG.read_text())
    raw.update(changes)
    return raw


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"model.depth": [1, 2]}, "not a training-config setting"),
        ({"train.seed": [0, 1]}, "shared by every trial"),
        ({"data.logs": ["a", "b"]}, "shared by every trial"),
        ({"train.lr": {"log_uniform": [0.0, 0.1]}}, "low > 0"),
        ({"train.lr": {"uniform": [0.1, 0.01]}}, "low < high"),
        ({"model.dim": {"int_range": [8.5, 16]}}, "integers"),
        ({"train.lr": {"normal": [0.0, 1.0]}}, "list of choices"),
        ({"distill.teacher": ["fine.pt"]}, "booleans"),
        ({}, "nothing to search"),
    ],
)
def test_bad_space_is_rejected_with_its_setting(space, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(_raw(space=space))


@pytest.mark.parametrize(
    ("table", "values", "message"),
    [
        ("objective", {"metric": "revenue"}, r"^\[objective\] metric: must be one of \['uctr'"),
        ("scheduler", {"metric": "epoch/loss"}, r"^\[scheduler\] metric: must be one of"),
        ("search", {"searcher": "hyperopt"}, r"^\[search\] searcher: must be one of \['optuna', 'random'\]"),
        ("search", {"num_samples": 0}, r"^\[search\] num_samples: must be >= 1, got 0"),
        ("search", {"num_samples": True}, r"^\[search\] num_samples: must be an integer, got True"),
        ("objective", {"alpha": "0.05"}, r"^\[objective\] alpha: must be a number"),
        ("trial", {"train": {"epochs": 3}}, r"^\[trial\.train\] epochs: set \[trial\] epochs instead"),
        ("trial", {"data": {"userz": 3}}, r"^\[trial\.data\] userz: unknown key; did you mean 'users'\?"),
        ("control", {"fine": "fine.json"}, r"^\[control\] fine: must be a checkpoint"),
        ("search", {"budget": 1}, r"^\[search\] budget: unknown key"),
    ],
)
def test_bad_settings_are_rejected(table, values, message):
    raw = _raw()
    raw[table] = {**raw.get(table, {}), **values}
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_unknown_top_level_key_is_rejected():
    with pytest.raises(ConfigError, match=r"^spaces: unknown key; did you mean 'space'\?"):
        parse_config(_raw(spaces={}))


def test_description_must_be_a_string():
    with pytest.raises(ConfigError, match=r"^description: must be a string, got 5"):
        parse_config(_raw(description=5))


def test_a_run_folders_config_toml_reloads_to_the_same_config(tmp_path):
    from common.config import dumps_toml  # noqa: PLC0415

    config = parse_config(_raw(description="line one\nline two: Δ ≥ 0"))
    stored = tmp_path / "config.toml"
    stored.write_text(dumps_toml(config.to_dict()), encoding="utf-8")
    assert load_config(stored) == config


def test_relative_paths_are_relative_to_the_search_file():
    config = load_config(SMALL_CONFIG)
    assert config.trial.base["out"] == str(ROOT / "runs" / "models" / "tune_small_base.pt")
    assert config.control.fine["data"]["logs"] == str(ROOT / "data" / "logs" / "tune-small")
    default = load_config(ROOT / "configs" / "tune_default.toml")
    assert default.trial.base == str(ROOT / "configs" / "models" / "coarse_dssm.toml")
    assert default.trial.data["logs"] == str(ROOT / "data" / "logs" / "tune-default-5k")


def test_param_space_has_one_tune_domain_per_setting():
    from ray import tune  # noqa: PLC0415

    config = load_config(ROOT / "configs" / "tune_default.toml")
    space = config.param_space
    assert set(space) == {d.key for d in config.space}
    assert isinstance(space["model.dim"], tune.search.sample.Categorical)
    assert space["model.dim"].categories == [16, 32, 64]
    lr = next(d for d in config.space if d.key == "train.lr")
    assert lr.distribution is Distribution.LOG_UNIFORM
    assert (space["train.lr"].lower, space["train.lr"].upper) == lr.values


def test_trial_config_is_base_then_overrides_then_settings():
    config = load_config(ROOT / "configs" / "tune_default.toml")
    template = template_raw_config(config, teacher="/models/fine.pt", logs="/logs/tune")
    assert template["data"]["logs"] == "/logs/tune"
    assert template["train"]["epochs"] == config.trial.epochs
    assert template["train"]["loss"] == "softmax"  # from configs/models/coarse_dssm.toml
    params = {"model.dim": 16, "train.loss": "bce", "distill.teacher": True, "data.dropped": False}
    raw = trial_raw_config(template, params, "/trials/t.pt", "/models/fine.pt")
    run = parse_training_config(raw)
    assert run.out == "/trials/t.pt"
    assert (run.model.dim, str(run.train.loss), run.data.dropped) == (16, "bce", False)
    assert run.distill.teacher == "/models/fine.pt"
    no_teacher = trial_raw_config(template, {"distill.teacher": False}, "/t.pt", "/models/fine.pt")
    assert not parse_training_config(no_teacher).distill.enabled


def test_a_nova_trial_reads_the_dwell_where_its_world_logs_it():
    feed = template_raw_config(load_config(ROOT / "configs" / "tune_default.toml"), teacher="/f.pt")
    small = template_raw_config(load_config(ROOT / "configs" / "tune_small.toml"), teacher="/f.pt")

    def dwell(template, params):
        return parse_training_config(trial_raw_config(template, params, "/t.pt", "/f.pt")).model.dwell_buckets

    assert dwell(feed, {"model.nova": True}) == DWELL_BUCKETS  # the feed world logs dwell
    assert dwell(feed, {"model.nova": False}) is None
    assert dwell(small, {"model.nova": True}) is None  # the small world does not


def test_numpy_samples_become_plain_values():
    import numpy as np  # noqa: PLC0415

    template = template_raw_config(load_config(SMALL_CONFIG), teacher="f.pt")
    raw = trial_raw_config(
        template, {"model.dim": np.int64(16), "train.lr": np.float64(0.01)}, "t.pt", "f.pt"
    )
    assert type(raw["model"]["dim"]) is int and type(raw["train"]["lr"]) is float
    assert parse_training_config(raw).model.dim == 16


def test_searcher_names():
    assert parse_config(_raw(search={"searcher": "random"})).search.searcher is Searcher.RANDOM


def test_a_time_split_base_is_the_trials_split():
    """A day split base trains every trial on the days before the last and (tuning.search)
    evaluates on the last; the template keeps it."""
    raw = _raw()
    raw["trial"] = {**raw["trial"], "data": {"split": "day", "days": 2}}
    template = template_raw_config(parse_config(raw), teacher="f.pt")
    assert (template["data"]["split"], template["data"]["days"]) == ("day", 2)
