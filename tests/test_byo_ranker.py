"""Bring your own ranker: "module:attribute" specs in configs, the engine, Ray actors, serving
and run_ab.py, with one-line errors for every way a ranker can be wrong."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from abtest.arms import arm_specs, build_cascades, versions
from abtest.config import load_config, parse_config
from abtest.experiment import run_experiment
from common.config import ConfigError
from policies.custom import custom_version, is_custom_spec
from policies.features import FeatureStore
from policies.rankers import load_scorer
from serving.args import AppArgs
from tuning.config import ControlSettings

ROOT = Path(__file__).resolve().parents[1]
TWO_TOWER = "examples.two_tower:TwoTower"

RANKERS = '''
import numpy as np


class Fixed:
    """A plain scorer object: scores by item id."""

    version = "fixed-1"

    def score(self, users, items):
        return np.asarray(items, dtype=np.float64)


fixed = Fixed()


class NoVersion:
    def score(self, users, items):
        return np.zeros(np.shape(items))


no_version = NoVersion()


class Flat:
    version = "flat"

    def score(self, users, items):
        return np.zeros(len(users))


flat = Flat()


class Single:
    version = "single"

    def score(self, users, items):
        return np.zeros(np.shape(items), dtype=np.float32)


single = Single()


def broken_factory(world, features):
    raise RuntimeError("no weights here")


def raising_factory(world, features):
    return Raising()


class Raising:
    version = "raising"

    def score(self, users, items):
        raise IndexError("item out of range")


answer = 42
'''


@pytest.fixture(scope="module")
def rankers_module(tmp_path_factory) -> str:
    """A module of good and bad rankers on sys.path; returns its name."""
    folder = tmp_path_factory.mktemp("byo")
    (folder / "byo_test_rankers.py").write_text(RANKERS)
    sys.path.insert(0, str(folder))
    yield "byo_test_rankers"
    sys.path.remove(str(folder))
    sys.modules.pop("byo_test_rankers", None)


@pytest.fixture(scope="module")
def features(small_world) -> FeatureStore:
    return FeatureStore.from_world(small_world)


def experiment(**traffic):
    """SMALL world, paired: popularity (control) against the two-tower coarse ranker."""
    return parse_config(
        {
            "name": "byo",
            "world": "small",
            "design": {"kind": "paired"},
            "arms": {
                "control": {"coarse": "popularity", "fine": "oracle", "coarse_size": 100},
                "two_tower": {"coarse": TWO_TOWER, "fine": "oracle", "coarse_size": 100},
            },
            "traffic": {"users": 200, "days": 1, "through": "inprocess", "shard_users": 100} | traffic,
            "pre_period": {"source": "none"},
            "stats": {"funnel_users": 20},
        },
        "byo",
    )


def test_a_module_attribute_spec_is_a_name_not_a_path(tmp_path: Path) -> None:
    path = tmp_path / "exp.toml"
    path.write_text(
        f'name = "x"\nworld = "small"\n[arms.control]\ncoarse = "popularity"\nfine = "oracle"\n'
        f'[arms.mine]\ncoarse = "{TWO_TOWER}"\nfine = "{TWO_TOWER}"\n'
    )
    config = load_config(path)
    assert (config.arms["mine"].coarse, config.arms["mine"].fine) == (TWO_TOWER, TWO_TOWER)
    (tmp_path / "again.toml").write_text(config.to_toml())
    assert load_config(tmp_path / "again.toml").arms == config.arms
    assert AppArgs(arms={"a": {"coarse": TWO_TOWER}}, fine=TWO_TOWER).arms["a"].coarse == TWO_TOWER
    assert ControlSettings(coarse=TWO_TOWER).coarse == TWO_TOWER  # a search's control
    assert not is_custom_spec("models/coarse.pt") and not is_custom_spec("c:/x.toml")


def test_a_plain_scorer_object_ranks_and_reports_its_version(rankers_module, small_world, features) -> None:
    spec = f"{rankers_module}:fixed"
    scorer = load_scorer(spec, small_world, features, "coarse")
    items = np.array([[3, 1, 2]])
    np.testing.assert_array_equal(scorer.score(np.array([0]), items), [[3.0, 1.0, 2.0]])
    assert custom_version(spec) == "fixed-1"
    assert custom_version(TWO_TOWER) is None  # a factory: its version needs the world


@pytest.mark.parametrize(
    ("attribute", "message"),
    [
        ("missing", "has no attribute 'missing'"),
        ("Fixed.nested", "has no attribute 'nested'"),
        ("no_version", "lacks a str version"),
        ("answer", "int object lacks a method score(users, items) and a str version"),
        ("flat", "returned ndarray of shape (2,) and dtype float64; expected a numpy array of shape (2, 3)"),
        ("single", "dtype float32; expected a numpy array of shape (2, 3) and dtype float64"),
        ("broken_factory", "the factory failed: RuntimeError: no weights here"),
        ("raising_factory", "the probe call score(users (2,), items (2, 3)) failed: IndexError"),
    ],
)
def test_a_wrong_ranker_is_one_config_error_line(
    rankers_module, small_world, features, attribute: str, message: str
) -> None:
    spec = f"{rankers_module}:{attribute}"
    with pytest.raises(ConfigError) as caught:
        load_scorer(spec, small_world, features, "coarse")
    assert message in str(caught.value) and spec in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_missing_module_is_a_config_error_everywhere(small_world, features) -> None:
    spec = "no_such_team.rankers:TwoTower"
    with pytest.raises(ConfigError, match="no module named 'no_such_team'"):
        load_scorer(spec, small_world, features, "fine")
    with pytest.raises(ConfigError, match="no module named 'no_such_team'"):
        AppArgs(arms={"a": {"coarse": spec}})


@pytest.mark.slow
def test_the_engine_builds_and_versions_the_two_tower_from_its_spec(small_world) -> None:
    """~5-15 s: trains the two-tower once."""
    config = experiment()
    arms = arm_specs(config)
    assert versions(arms)["two_tower"]["coarse_version"].startswith("two-tower-")
    cascade = build_cascades(small_world, arms)["two_tower"]
    again = load_scorer(TWO_TOWER, small_world, FeatureStore.from_world(small_world), "coarse")
    assert cascade.coarse.version == again.version == versions(arms)["two_tower"]["coarse_version"]


@pytest.mark.slow
def test_a_custom_arm_runs_in_process_and_on_ray_actors_with_identical_pages(
    ray_session, small_world
) -> None:
    """~20-40 s: every process (this one, two Ray actors) trains the two-tower itself."""
    config = experiment()
    here = run_experiment(config, through="inprocess", workers=1, world=small_world)
    actors = run_experiment(config, through="inprocess", workers=2, world=small_world)
    pd.testing.assert_frame_equal(here.user_days, actors.user_days)
    assert here.versions == actors.versions
    record = here.record("expected_clicks")
    assert record.effect > 0 and record.pvalue < 0.05  # the trained towers beat popularity


@pytest.mark.slow
def test_run_ab_exits_2_with_one_line_for_a_bad_ranker(tmp_path: Path) -> None:
    """~10-20 s (imports, the world). The module is found in the working directory (as python
    -m would); nothing is written."""
    (tmp_path / "my_rankers.py").write_text(RANKERS)
    (tmp_path / "exp.toml").write_text(
        textwrap.dedent(
            """
            name = "bad"
            world = "small"
            [arms.control]
            coarse = "popularity"
            fine = "oracle"
            coarse_size = 100
            [arms.mine]
            coarse = "my_rankers:flat"
            fine = "oracle"
            coarse_size = 100
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(ROOT / "run_ab.py"), "--config", "exp.toml", "--runs-dir", "runs"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: ranker my_rankers:flat: the probe call score(users (2,), items (2, 3)) returned ndarray of "
        "shape (2,) and dtype float64; expected a numpy array of shape (2, 3) and dtype float64"
    ]
    assert not (tmp_path / "runs").exists()
