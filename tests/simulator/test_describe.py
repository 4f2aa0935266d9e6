"""The calibration report: baselines order as documented, shares are consistent."""

from __future__ import annotations

import numpy as np
import pytest

from simulator import CHANNELS, SMALL, World
from simulator.describe import describe, format_report


@pytest.fixture(scope="module")
def figures(small_world: World) -> dict:
    return describe(small_world, n_sessions=300, n_oracle_users=30)


def test_oracle_beats_random_and_popularity(figures: dict) -> None:
    p = figures["policies"]
    for metric in ("ctr", "clicks_per_session", "pages_per_session"):
        assert p["oracle"][metric] > max(p["random"][metric], p["popularity"][metric]), metric


def test_recall_channel_shares_sum_to_one(figures: dict) -> None:
    shares = figures["recall"]["channel_share"]
    assert list(shares) == list(CHANNELS)
    assert np.isclose(sum(shares.values()), 1.0)


def test_world_figures_reflect_the_config(figures: dict) -> None:
    world = figures["world"]
    assert world["items"] == SMALL.n_items
    assert world["new_item_share"] == pytest.approx(SMALL.new_item_share)
    assert world["popularity_top1pct_share"] < world["popularity_top20pct_share"] < 1


def test_report_names_every_policy_and_metric(figures: dict) -> None:
    report = format_report(figures)
    header = next(line for line in report.splitlines() if "random" in line)
    assert header.split() == ["random", "popularity", "oracle"]
    for metric in figures["policies"]["oracle"]:
        assert f"  {metric} " in report
