"""Experiment configs: shipped files load, round-trip through TOML, and bad ones fail clearly."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from abtest.config import STANDARD_METRICS, ExperimentConfig, load_config, parse_config
from abtest.stats import Mean, Ratio
from common.config import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
EXPERIMENTS = [
    CONFIGS / name
    for name in ("default.toml", "aa.toml", "oracle_vs_random.toml", "quick.toml", "gmv_vs_clicks.toml")
]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_shipped_experiment_configs_load_and_round_trip(path: Path) -> None:
    config = load_config(path)
    assert parse_config(tomllib.loads(config.to_toml())) == config


def test_a_run_folders_config_toml_reloads_to_the_same_config(tmp_path: Path) -> None:
    config = load_config(CONFIGS / "default.toml").replace(
        description='two lines\nwith "quotes", a \\ backslash, tabs\tand unicode: Δclicks ≥ 0 ✓'
    )
    path = tmp_path / "run" / "config.toml"
    path.parent.mkdir()
    path.write_text(config.to_toml(), encoding="utf-8")
    assert load_config(path) == config  # paths are absolute, so the folder does not matter


def test_relative_paths_are_relative_to_the_experiment_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "exp.toml").write_text(
        'name = "x"\nworld = "small"\n[arms.a]\ncoarse = "m/c.toml"\nfine = "oracle"\n'
        '[arms.b]\ncoarse = "random"\nfine = "/abs/f.pt"\n[pre_period]\nlogs = "../logs"\n'
    )
    config = load_config(tmp_path / "sub" / "exp.toml")
    assert config.arms["a"].coarse == str(tmp_path / "sub" / "m" / "c.toml")
    assert (config.arms["a"].fine, config.arms["b"].coarse) == ("oracle", "random")  # names, not paths
    assert config.arms["b"].fine == "/abs/f.pt"
    assert config.pre_period.logs == str(tmp_path / "logs")
    assert config.world == "small"


def test_default_config_compares_the_dssm_baseline_with_the_full_model() -> None:
    config = load_config(CONFIGS / "default.toml")
    assert config.control == "control"
    assert config.arms["control"].coarse == str(CONFIGS / "models" / "coarse_dssm.toml")
    assert config.arms["treatment"].coarse == str(CONFIGS / "models" / "coarse_full.toml")
    assert config.metrics == STANDARD_METRICS


def test_default_config_documents_every_setting() -> None:
    text = (CONFIGS / "default.toml").read_text()
    config = load_config(CONFIGS / "default.toml")
    for table, values in config.to_dict().items():
        if isinstance(values, dict) and table not in ("arms", "metrics"):
            for key in values:
                assert f"\n{key} = " in text, f"[{table}] {key} is not in configs/default.toml"


def test_defaults_fill_missing_tables(tiny_config: ExperimentConfig) -> None:
    minimal = parse_config({"name": "m", "arms": {"a": {"coarse": "random"}, "b": {"coarse": "oracle"}}})
    assert minimal.control == "a"
    assert minimal.shares == (0.5, 0.5)
    assert minimal.traffic_shares == minimal.shares
    assert minimal.experiment_days == [1]
    assert tiny_config.pre_days == [0]


def test_metric_specs_attach_existing_pre_period_covariates() -> None:
    config = parse_config({"name": "m", "arms": {"a": {"coarse": "random"}, "b": {"coarse": "oracle"}}})
    specs = config.metric_specs({"pre_clicks", "pre_pages", "pre_clicked"})
    assert specs["clicks"] == Mean("clicks", covariate="pre_clicks")
    assert specs["pctr"] == Ratio("clicks", "pages", covariate=("pre_clicks", "pre_pages"))
    assert specs["gmv"] == Mean("gmv")  # no pre_gmv column: no CUPED
    assert specs["global_hitrate"] == Ratio("global_hits", "global_purchases")


def test_replace_changes_tables_by_key(tiny_config: ExperimentConfig) -> None:
    changed = tiny_config.replace(traffic={"users": 50}, name="other")
    assert changed.traffic.users == 50 and changed.name == "other"
    assert changed.traffic.days == tiny_config.traffic.days


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"colour": "red"}, r"^bad\.toml colour: unknown key; known: \["),
        ({"descripton": "x"}, r"descripton: unknown key; did you mean 'description'\?"),
        ({"traffic": {"user": 5}}, r"^bad\.toml \[traffic\] user: unknown key; did you mean 'users'\?"),
        ({"arms": {"a": {"coarse": "random", "size": 5}, "b": {"coarse": "random"}}}, r"\[arms\.a\] size"),
        ({"stats": {"alpha": 1.5}}, r"\[stats\] alpha: must be > 0 and < 1, got 1\.5"),
        (
            {"stats": {"correction": "bonferroni"}},
            r"\[stats\] correction: must be one of \['holm', 'bh', 'none'\]",
        ),
        ({"traffic": {"through": "http"}}, r"must be one of \['inprocess', 'serve'\]"),
        ({"traffic": {"users": 0}}, r"\[traffic\] users: must be >= 4, got 0"),
        ({"traffic": {"users": True}}, r"\[traffic\] users: must be an integer, got True"),
        ({"traffic": {"users": 2.5}}, r"\[traffic\] users: must be an integer, got 2\.5"),
        ({"assignment": {"aa": "false"}}, r"\[assignment\] aa: must be true or false \(a TOML boolean\)"),
        ({"stats": {"cuped": "no"}}, r"\[stats\] cuped: must be true or false"),
        ({"stats": {"sequential": "off"}}, r"\[stats\] sequential: must be true or false"),
        ({"description": 5}, r"description: must be a string, got 5"),
        ({"world": 3}, r"world: must be a string"),
        ({"arms": {"a": {"coarse": "random"}}}, r"at least 2 arms"),
        ({"arms": {"a": "random", "b": {"coarse": "random"}}}, r"\[arms\] a: must be a table"),
        (
            {"arms": {"a": {"coarse": "best"}, "b": {"coarse": "random"}}},
            r"\[arms\.a\] coarse: 'best' is neither",
        ),
        ({"assignment": {"shares": [0.5, 0.3, 0.2]}}, r"\[assignment\] shares: has 3 entries for 2 arms"),
        ({"assignment": {"shares": [0.7, 0.7]}}, r"\[assignment\] shares: must sum to 1"),
        ({"assignment": {"shares": [1.2, -0.2]}}, r"\[assignment\] shares: must be > 0"),
        ({"assignment": {"control": "nobody"}}, r"\[assignment\] control: 'nobody' is not an arm"),
        ({"metrics": {"ctr": "click"}}, r"\[metrics\] ctr: unknown per-user column 'click'"),
        ({"metrics": {"ctr": ["a", "b", "c"]}}, r"\[metrics\] ctr: must be one of"),
        ({"metrics": {"ctr": 5}}, r"\[metrics\] ctr: must be one of"),
        ({"pre_period": {"source": "simulate", "days": 3}}, r"must fit before \[traffic\] first_day = 1"),
        (
            {"world": "no/such/world.toml"},
            r"world: .*neither \"default\", \"small\" nor an existing TOML file",
        ),
        ({"name": "a/b"}, r"name: must be letters, digits"),
    ],
)
def test_invalid_configs_fail_with_a_clear_message(change: dict, match: str) -> None:
    raw = {"name": "bad", "arms": {"a": {"coarse": "random"}, "b": {"coarse": "oracle"}}} | change
    with pytest.raises(ConfigError, match=match):
        parse_config(raw, "bad.toml")


def test_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "exp.toml"
    path.write_text(
        'name = "x"\n[arms.a]\ncoarse = "random"\n[arms.b]\ncoarse = "random"\n[traffic]\nusers = "many"\n'
    )
    with pytest.raises(ConfigError, match=r"exp\.toml \[traffic\] users: must be an integer, got 'many'"):
        load_config(path)
    path.write_text("name = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
