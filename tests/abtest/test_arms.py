"""abtest.arms: specs resolved before the engine, which refuses unresolved ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from abtest.arms import arm_specs, build_cascades, resolve_arms, versions
from abtest.experiment import run_experiment
from abtest.serve_traffic import app_args
from policies.checkpoint import load_checkpoint
from serving.args import AppArgs
from simulator import SMALL
from simulator.config import ConfigError


def test_baselines_stay_and_checkpoints_become_absolute(make_config, seeded_models, monkeypatch) -> None:
    monkeypatch.chdir(Path(seeded_models["fine"]).parent)
    config = make_config(
        arms={
            "control": {"coarse": "popularity", "fine": "fine.pt", "coarse_size": 100},
            "treatment": {"coarse": "coarse_a.pt", "fine": "fine.pt", "coarse_size": 40},
        }
    )
    resolved = resolve_arms(config, SMALL, log=lambda *_: None)
    assert resolved.arms["control"].coarse == "popularity"
    assert resolved.arms["treatment"].coarse == seeded_models["coarse_a"]
    assert resolved.arms["control"].fine == seeded_models["fine"]
    specs = arm_specs(resolved)
    assert specs["treatment"].coarse_size == 40
    found = versions(specs)
    assert found["control"]["coarse_version"] == "popularity"
    assert found["treatment"]["coarse_version"] == load_checkpoint(seeded_models["coarse_a"]).version


def test_the_engine_refuses_a_training_config(make_config) -> None:
    config = make_config(
        arms={
            "control": {"coarse": "popularity", "fine": "oracle", "coarse_size": 100},
            "t": {"coarse": "m.toml", "coarse_size": 100},
        }
    )
    with pytest.raises(ConfigError, match=r"\[arms.t\] coarse = '.*m\.toml' is a training config"):
        run_experiment(config)


def test_a_missing_training_config_fails_resolution_but_not_in_aa_mode(make_config) -> None:
    arms = {
        "control": {"coarse": "popularity", "fine": "oracle", "coarse_size": 100},
        "t": {"coarse": "missing.toml", "coarse_size": 100},
    }
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_arms(make_config(arms=arms), SMALL)
    aa = resolve_arms(make_config(arms=arms, assignment={"aa": True}), SMALL)  # only the control runs
    assert {spec.coarse for spec in arm_specs(aa).values()} == {"popularity"}
    assert aa.arms["t"].coarse.endswith("missing.toml")  # never resolved


def test_a_coarse_size_above_the_recall_size_fails_before_training(make_config) -> None:
    config = make_config(arms={"control": {"coarse": "x.toml", "coarse_size": SMALL.recall_size + 1}})
    with pytest.raises(ConfigError, match="exceeds the world's recall size"):
        resolve_arms(config, SMALL)


def test_arms_with_the_same_rankers_share_one_cascade(make_config, small_world) -> None:
    arms = {name: {"coarse": "oracle", "fine": "oracle", "coarse_size": 100} for name in ("a", "b")}
    arms["c"] = {"coarse": "oracle", "fine": "oracle", "coarse_size": 50}
    cascades = build_cascades(small_world, arm_specs(make_config(arms=arms)))
    assert cascades["a"] is cascades["b"] and cascades["c"] is not cascades["a"]


def test_an_arm_can_score_a_shared_checkpoint_for_gmv(make_config, small_world, seeded_models) -> None:
    coarse = seeded_models["coarse_a"]
    arms = {
        "clicks": {"coarse": coarse, "fine": "oracle", "coarse_size": 100},
        "gmv": {"coarse": coarse, "fine": "oracle", "coarse_size": 100, "coarse_score": "gmv"},
    }
    specs = arm_specs(make_config(arms=arms))
    cascades = build_cascades(small_world, specs)
    assert str(cascades["clicks"].coarse.task) == "click" and str(cascades["gmv"].coarse.task) == "gmv"
    found = versions(specs)
    assert found["gmv"]["coarse_version"] == found["clicks"]["coarse_version"]  # one checkpoint
    assert found["gmv"]["coarse_score"] == "gmv" and "coarse_score" not in found["clicks"]


@pytest.mark.parametrize(
    ("arm", "message"),
    [
        ({"coarse": "x.pt", "coarse_score": "margin"}, "coarse_score: must be one of"),
        ({"coarse": "popularity", "coarse_score": "gmv"}, "coarse_score: applies to a coarse checkpoint"),
    ],
)
def test_a_bad_coarse_score_is_a_config_error(make_config, arm, message) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config(arms={"control": {"coarse": "popularity"}, "t": arm})


def test_serve_traffic_passes_each_arms_coarse_score_to_the_app(make_config, seeded_models) -> None:
    arms = {
        "control": {"coarse": seeded_models["coarse_a"], "fine": "oracle", "coarse_size": 100},
        "treatment": {
            "coarse": seeded_models["coarse_a"],
            "fine": "oracle",
            "coarse_size": 100,
            "coarse_score": "gmv",
        },
    }
    config = make_config(arms=arms)
    served = AppArgs(**app_args(config, arm_specs(config)))
    assert served.arms["control"].coarse_score == "" and served.arms["treatment"].coarse_score == "gmv"
