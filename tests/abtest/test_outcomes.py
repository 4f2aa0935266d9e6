"""abtest.outcomes: per-session outcome columns from finished sessions."""

from __future__ import annotations

import numpy as np

from abtest.analysis import (
    ExperimentResult,
)
from abtest.experiment import run_experiment
from simulator import SMALL, World
from simulator.logs import out_of_scene_purchases


def test_out_of_scene_purchases_are_the_simulators(tiny_result: ExperimentResult, small_world: World) -> None:
    for day, rows in tiny_result.user_days.groupby("day"):
        buyers, _ = out_of_scene_purchases(small_world, rows["user"].to_numpy(), int(day))
        expected = np.bincount(buyers, minlength=len(rows))[rows["user"].to_numpy()]
        assert (rows["oos_purchases"].to_numpy() == expected).all()
    assert tiny_result.users["oos_purchases"].sum() > 0  # the check above is not vacuous


def test_inscene_hitrate_is_one_when_the_coarse_stage_keeps_the_whole_recall_set(
    make_config, small_world
) -> None:
    config = make_config(
        arms={
            "control": {"coarse": "random", "fine": "oracle", "coarse_size": SMALL.recall_size},
            "treatment": {"coarse": "popularity", "fine": "oracle", "coarse_size": SMALL.recall_size},
        },
        traffic={"users": 200, "days": 1},
        pre_period={"source": "none"},
        stats={"funnel_users": 0},
    )
    users = run_experiment(config, world=small_world).users
    assert users["inscene_purchases"].sum() > 0
    assert (users["inscene_hits"] == users["inscene_purchases"]).all()
