"""The paired and interleaved designs end to end: what each compares, that the truth agrees
with the estimates where they measure the same thing, and that an oracle beats popularity.

The tiny experiment's arms (popularity vs oracle coarse ranker, oracle fine ranker) differ a
lot, so the designs' verdicts are not borderline at these sizes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from abtest.analysis import ExperimentResult
from abtest.experiment import run_experiment
from abtest.interleave import CREDIT_METRICS
from abtest.stats import Ratio, analyse_paired, interleave_test
from abtest.traffic import interleave_seed

SIZE = {"users": 120, "days": 1, "shard_users": 60}


@pytest.fixture(scope="module")
def paired(make_config, small_world) -> ExperimentResult:
    config = make_config(design={"kind": "paired"}, traffic=SIZE, pre_period={"source": "none"})
    return run_experiment(config, world=small_world)


@pytest.fixture(scope="module")
def split_all_truth(make_config, small_world) -> ExperimentResult:
    """The split design with every user in the truth sample: every user under every arm."""
    config = make_config(
        design={"kind": "split", "truth_users": SIZE["users"]}, traffic=SIZE, pre_period={"source": "none"}
    )
    return run_experiment(config, world=small_world)


@pytest.fixture(scope="module")
def interleaved(make_config, small_world) -> ExperimentResult:
    config = make_config(
        design={"kind": "interleave", "truth_users": 60}, traffic=SIZE, pre_period={"source": "none"}
    )
    return run_experiment(config, world=small_world)


def test_paired_runs_every_user_under_every_arm(paired: ExperimentResult) -> None:
    users = paired.users
    assert paired.srm is None and paired.srm_passed
    for arm in paired.config.arm_names:
        assert users.loc[users["arm"] == arm, "user"].tolist() == list(range(SIZE["users"]))
    r = paired.record("clicks")
    assert r.n_control == r.n_treatment == SIZE["users"] and not r.cuped


def test_the_split_truth_is_the_paired_estimate_of_the_exact_metric(paired, split_all_truth) -> None:
    """Both are every user under every arm on the same random numbers: the split design's true
    effect on clicks (measured on exact clicks) is the paired estimate of exact clicks."""
    truth = split_all_truth.truth.set_index(["metric", "treatment"])
    for metric, expected in (("clicks", "exact_clicks"), ("uctr", "exact_uctr")):
        estimate = paired.record(expected)
        assert truth.loc[(metric, "treatment"), "true_effect"] == pytest.approx(estimate.effect, rel=1e-9)
        assert truth.loc[(metric, "treatment"), "truth_users"] == SIZE["users"]
    pd.testing.assert_frame_equal(
        split_all_truth.truth_users.drop(columns=["days"]).reset_index(drop=True),
        paired.users.drop(columns=["days"]).reset_index(drop=True),
        check_like=True,
    )


def test_paired_truth_is_covered_and_the_oracle_wins_clicks(paired: ExperimentResult) -> None:
    truth = paired.truth.set_index(["metric", "treatment"])
    assert paired.record("exact_clicks").significant and paired.record("exact_clicks").rel_effect > 0
    # the exact metric's truth is its own estimate: its interval must cover it
    assert truth.loc[("exact_clicks", "treatment"), "covered"]
    assert truth.loc[("exact_clicks", "treatment"), "true_effect"] == paired.record("exact_clicks").effect


def test_identical_arms_have_a_true_effect_of_zero(make_config, small_world) -> None:
    """A/A paired: both arms are one cascade on the same random numbers, so every user's
    difference is 0 - the estimate, its interval and the truth are exactly 0, p = 1."""
    config = make_config(
        design={"kind": "paired"},
        traffic={"users": 60, "days": 1, "shard_users": 60},
        pre_period={"source": "none"},
        assignment={"aa": True},
    )
    result = run_experiment(config, world=small_world)
    for r in result.results.records:
        assert (r.effect, r.effect_ci_lower, r.effect_ci_upper) == (0.0, 0.0, 0.0), r.metric
        assert r.pvalue == 1.0 and not r.significant
    assert (result.truth["true_effect"] == 0).all()


@pytest.mark.parametrize("runs", [100, pytest.param(400, marks=pytest.mark.slow)])
def test_paired_ratio_intervals_cover_at_their_level(runs: int) -> None:
    """The paired delta method for a ratio (clicks per page): over ``runs`` simulated
    experiments of 300 users whose two arms share the user's level, the 95 % interval of the
    effect covers the population's true effect at 0.95 +- 3 sigma, sigma = sqrt(0.95 * 0.05 /
    runs) (0.011 at 400 runs; a correct interval fails this with probability ~0.3 %)."""
    rng = np.random.default_rng(5)
    true_c, true_t, covered = 0.2, 0.21, 0
    truth = true_t - true_c  # E[p level pages] / E[pages] = p E[level], E[level] = 1, level < 1 / p
    for _ in range(runs):
        pages = rng.integers(1, 12, 300)
        level = rng.gamma(4.0, 0.25, 300)  # users differ, arms share it
        clicks_c = rng.binomial(pages, np.minimum(true_c * level, 1))
        clicks_t = rng.binomial(pages, np.minimum(true_t * level, 1))
        data = pd.DataFrame(
            {
                "user": np.tile(np.arange(300), 2),
                "arm": np.repeat(["c", "t"], 300),
                "clicks": np.concatenate([clicks_c, clicks_t]).astype(float),
                "pages": np.tile(pages, 2).astype(float),
            }
        )
        r = analyse_paired(data, "arm", "user", "c", {"pctr": Ratio("clicks", "pages")}).records[0]
        covered += r.effect_ci_lower <= truth <= r.effect_ci_upper
    sigma = math.sqrt(0.95 * 0.05 / runs)
    assert 0.95 - 3 * sigma <= covered / runs <= min(1.0, 0.95 + 3 * sigma)


def test_interleaving_has_one_credit_row_per_user_and_arm(interleaved: ExperimentResult) -> None:
    days = interleaved.user_days
    assert list(days.columns) == ["user", "day", "arm", *CREDIT_METRICS]
    assert len(days) == SIZE["users"] * SIZE["days"] * 2
    per_arm = days.groupby("arm")["impressions"].sum()
    pages = days.groupby(["user", "day"])["impressions"].sum()
    page_size = 10
    assert (pages % page_size == 0).mean() > 0.9  # the teams fill whole pages between them
    assert per_arm.min() / per_arm.sum() > 0.4  # team-draft: the teams' shares are near half
    assert interleaved.srm is None
    assert {"uctr", "pctr", "depth"} <= set(interleaved.skipped)


def test_interleaving_prefers_the_oracle_and_points_like_the_truth(interleaved: ExperimentResult) -> None:
    r = interleaved.record("expected_clicks")
    assert r.significant and r.effect > 0
    pref = interleaved.preferences.set_index("metric").loc["clicks"]
    assert pref["share_lo"] > 0.5
    users = interleaved.users.sort_values(["arm", "user"])
    credit = {a: users.loc[users["arm"] == a, "clicks"].to_numpy() for a in ("control", "treatment")}
    expected = interleave_test(credit["treatment"], credit["control"])
    assert interleaved.record("clicks").pvalue == pytest.approx(expected.sign_pvalue)
    truth = interleaved.truth.set_index("metric")
    assert truth.loc["clicks", "truth_users"] == 60 and truth.loc["clicks", "true_rel_effect"] > 0
    assert truth["same_sign"].all() and truth["covered"].isna().all()


def test_interleaving_results_do_not_depend_on_the_shards(interleaved, make_config, small_world) -> None:
    config = make_config(
        design={"kind": "interleave", "truth_users": 60},
        traffic=SIZE | {"shard_users": 50},
        pre_period={"source": "none"},
    )
    again = run_experiment(config, world=small_world)
    pd.testing.assert_frame_equal(again.users, interleaved.users)
    pd.testing.assert_frame_equal(again.truth_users, interleaved.truth_users)
    pd.testing.assert_frame_equal(again.to_pandas(), interleaved.to_pandas())


def test_the_interleaving_seed_follows_the_salt(make_config) -> None:
    a = make_config(assignment={"salt": "one"})
    b = make_config(assignment={"salt": "two"})
    assert interleave_seed(a) == interleave_seed(make_config(assignment={"salt": "one"}))
    assert interleave_seed(a) != interleave_seed(b)
