"""Per-segment results: warm / cold labels from the checkpoints' training split, per-segment
estimates that are the main statistics on the segment's users, segments that add up to the
whole, the config's [segments] table and the report's sections."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from abtest.analysis import ExperimentResult, analyse_experiment, segment_metric_names
from abtest.arms import ArmSpec
from abtest.config import ConfigError
from abtest.experiment import run_experiment
from abtest.report import markdown_report, write_run
from abtest.segments import checkpoint_training_users, trained_users
from abtest.stats import Mean, analyse, analyse_paired, metric_value
from policies.checkpoint import save_checkpoint
from policies.data import load_logs, split_by_user, split_logs
from policies.features import vocab_of
from policies.models import CoarseConfig, CoarseRanker
from simulator import SMALL, World
from simulator.logs import write_logs
from simulator.segments import user_segments

LOGGED_USERS = 300
"""Users 0..299 of the SMALL world are logged, the others are not (cold for any model)."""


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory, small_world: World) -> Path:
    return write_logs(
        small_world, tmp_path_factory.mktemp("seg") / "logs", n_users=LOGGED_USERS, progress=False
    )


def _checkpoint(folder: Path, logs: Path, held_out_share: float, split_seed: int, **data) -> str:
    """An (untrained) coarse checkpoint whose metadata names its training data as
    ``policies.train`` writes it (the logs path relative to the checkpoint's folder; ``data``:
    other ``[data]`` settings, e.g. split)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"coarse-{split_seed}.pt"
    metadata = {
        "run": {"data": {"logs": os.path.relpath(logs, folder), **data}},
        "held_out_share": held_out_share,
        "split_seed": split_seed,
    }
    save_checkpoint(path, CoarseRanker(CoarseConfig(dim=4), vocab_of(SMALL)), metadata)
    return str(path)


def test_training_users_are_the_logged_users_the_split_keeps(log_dir: Path, tmp_path: Path) -> None:
    path = _checkpoint(tmp_path / "models", log_dir, 0.3, split_seed=7)
    train, held_out = split_by_user(load_logs(log_dir), 0.3, 7)
    np.testing.assert_array_equal(checkpoint_training_users(path), train)
    assert len(held_out) > 0 and len(train) > 0 and train.max() < LOGGED_USERS


def test_training_users_of_a_time_split_are_those_logged_before_the_last_day(
    small_world: World, tmp_path: Path
) -> None:
    logs = write_logs(small_world, tmp_path / "logs2", n_users=LOGGED_USERS, days=2, progress=False)
    path = _checkpoint(tmp_path / "models", logs, 0.3, split_seed=7, split="day")
    expected = split_logs(load_logs(logs), "day", 0.3, 7).train_users
    np.testing.assert_array_equal(checkpoint_training_users(path), expected)
    assert len(expected) > len(split_by_user(load_logs(logs), 0.3, 7)[0])  # nobody held out


def test_warm_users_are_those_every_trained_model_learnt_from(log_dir: Path, tmp_path: Path) -> None:
    a = _checkpoint(tmp_path / "models", log_dir, 0.3, split_seed=1)
    b = _checkpoint(tmp_path / "models", log_dir, 0.3, split_seed=2)
    data = load_logs(log_dir)
    expected = np.intersect1d(split_by_user(data, 0.3, 1)[0], split_by_user(data, 0.3, 2)[0])
    arms = {"control": ArmSpec(a, "oracle", 50, "small"), "treatment": ArmSpec(b, "oracle", 50, "small")}
    warm, why = trained_users(arms)
    np.testing.assert_array_equal(warm, expected)
    assert why == "" and 0 < len(expected) < len(split_by_user(data, 0.3, 1)[0])
    users = np.arange(SMALL.n_users)
    labels = user_segments(World(SMALL), users, data.samples, warm)
    assert set(labels.loc[labels["warm"] == "warm", "user_id"]) == set(expected)
    assert (labels.loc[users >= LOGGED_USERS, "warm"] == "cold").all()  # unlogged users are cold


def test_baselines_have_no_warm_users() -> None:
    warm, why = trained_users({"a": ArmSpec("popularity", "oracle", 50, "small")})
    assert warm is None and "no arm runs a trained model" in why


@pytest.fixture(scope="module")
def paired_result(make_config, small_world: World) -> ExperimentResult:
    config = make_config(design={"kind": "paired"}, segments={"dimensions": ["mindful", "arrival_day"]})
    return run_experiment(config, world=small_world)


def _subset(users: pd.DataFrame, result: ExperimentResult, dimension: str, segment: str) -> pd.DataFrame:
    labels = result.segment_labels
    ids = labels.loc[labels[dimension].astype(str) == segment, "user"]
    return users[users["user"].isin(ids)]


@pytest.mark.parametrize("design", ["split", "paired"])
def test_segment_estimates_are_the_main_statistics_on_the_segment(design, make_config, small_world) -> None:
    result = run_experiment(make_config(design={"kind": design}), world=small_world)
    seg = result.segments
    assert len(seg) and set(seg["dimension"]) == {"mindful"}
    c = result.config
    for r in seg.itertuples(index=False):
        mine = _subset(result.users, result, r.dimension, r.segment)
        metric = c.metric_specs(set(mine.columns))[r.metric]
        if design == "split":
            direct = analyse(mine, "arm", c.control, {r.metric: metric}, cuped=c.stats.cuped).records[0]
        else:
            direct = analyse_paired(mine, "arm", "user", c.control, {r.metric: metric}).records[0]
        for field in ("control_value", "effect", "std_err", "rel_ci_lower", "rel_ci_upper", "pvalue"):
            assert getattr(r, field) == pytest.approx(getattr(direct, field), rel=1e-12), field
        truth = _subset(result.truth_users, result, r.dimension, r.segment)
        column = {"clicks": "exact_clicks", "uctr": "exact_clicked", "gmv": "exact_gmv"}.get(
            r.metric, c.metrics[r.metric]
        )
        value = {a: metric_value(truth.loc[truth["arm"] == a, column]) for a in (r.control, r.treatment)}
        assert r.true_effect == pytest.approx(value[r.treatment] - value[r.control], rel=1e-12)


def test_segments_add_up_to_every_user(paired_result: ExperimentResult) -> None:
    """Per dimension the segments partition the users, so user counts add up and a mean metric's
    user-weighted segment means are the overall mean (paired: no CUPED, exact)."""
    seg, main = paired_result.segments, paired_result.to_pandas().set_index("metric")
    n_users = paired_result.users["user"].nunique()
    checked = set()
    for dimension, part in seg.groupby("dimension"):
        values = paired_result.segment_labels[dimension].nunique()
        for metric, rows in part.groupby("metric"):
            if len(rows) < values:  # skipped in a segment (too few effective users)
                continue
            checked.add(metric)
            assert rows["users"].sum() == n_users
            if isinstance(paired_result.config.metric_specs()[metric], Mean):
                for side in ("control_value", "treatment_value"):
                    weighted = (rows["users"] * rows[side]).sum() / n_users
                    assert weighted == pytest.approx(main.loc[metric, side], rel=1e-12)
    assert {"clicks", "exact_clicks"} <= checked


def test_a_dimension_with_one_value_is_skipped(paired_result: ExperimentResult) -> None:
    assert "arrival_day" not in set(paired_result.segments["dimension"])
    assert "every user is arrival_day = 0" in paired_result.segments_skipped["arrival_day"]


def test_default_metrics_are_clicks_uctr_gmv_with_their_exact_twins(paired_result: ExperimentResult) -> None:
    names = segment_metric_names(paired_result.config)
    assert names == ["clicks", "exact_clicks", "uctr", "exact_uctr", "gmv", "exact_gmv"]
    assert segment_metric_names(paired_result.config.replace(segments={"metrics": ("pctr",)})) == ["pctr"]
    analysed = set(paired_result.to_pandas()["metric"])  # the main table's usable metrics
    assert set(paired_result.segments["metric"]) == set(names) & analysed


def test_labels_given_to_the_analysis_define_the_segments(paired_result: ExperimentResult) -> None:
    users = paired_result.users["user"].unique()
    labels = pd.DataFrame({"user": users, "warm": np.where(users % 3 == 0, "warm", "cold")})
    user_days, config = paired_result.user_days, paired_result.config
    extra = {"versions": {}, "through": "inprocess", "workers": 1, "timings": {}}
    result = analyse_experiment(config, user_days, None, segment_labels=labels, **extra)
    counts = result.segments.drop_duplicates("segment").set_index("segment")["users"]
    assert counts.to_dict() == {"cold": int((users % 3 != 0).sum()), "warm": int((users % 3 == 0).sum())}


@pytest.mark.parametrize(
    ("segments", "message"),
    [
        ({"dimensions": ["loyal"]}, "unknown dimension"),
        ({"dimensions": ["mindful", "mindful"]}, "twice"),
        ({"metrics": ["revenue"]}, "does not define"),
    ],
)
def test_bad_segment_settings_are_rejected(make_config, segments, message) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config(segments=segments)


def test_reports_show_the_segments_side_by_side(paired_result: ExperimentResult, tmp_path: Path) -> None:
    write_run(paired_result, tmp_path)
    summary = json.loads((tmp_path / "results.json").read_text())["segments"]
    assert summary["dimensions"] == ["mindful", "arrival_day"] and "exploratory" in summary["note"]
    assert len(summary["records"]) == len(paired_result.segments)
    assert summary["skipped"] == paired_result.segments_skipped
    report = markdown_report(paired_result, [])
    side = report.split("## Segments side by side")[1].split("\n## ")[0]
    header = next(line for line in side.splitlines() if line.startswith("| metric"))
    n = paired_result.segments.drop_duplicates("segment").set_index("segment")["users"]
    for value in ("True", "False"):
        assert f"mindful = {value} ({n[value]:,} users)" in header
    assert "no multiple-testing correction" in report
    labels = pd.read_parquet(tmp_path / "segments.parquet")
    pd.testing.assert_frame_equal(labels, paired_result.segment_labels)
    assert not math.isnan(paired_result.segments["true_rel_effect"].iloc[0])


def test_the_engine_labels_warm_and_active_users_of_trained_arms(
    log_dir: Path, tmp_path: Path, make_config, small_world: World
) -> None:
    """Arms on (untrained) checkpoints that record their training split, the pre-period from the
    logs: the engine's labels are user_segments' on those logs and the checkpoints' warm users."""
    a = _checkpoint(tmp_path / "models", log_dir, 0.3, split_seed=1)
    b = _checkpoint(tmp_path / "models", log_dir, 0.3, split_seed=2)
    config = make_config(
        arms={
            "control": {"coarse": a, "fine": "oracle", "coarse_size": 100},
            "treatment": {"coarse": b, "fine": "oracle", "coarse_size": 100},
        },
        design={"kind": "paired"},
        traffic={"users": 200, "days": 1},
        pre_period={"source": "logs", "logs": str(log_dir)},
        segments={"dimensions": ["activity", "warm"]},
    )
    result = run_experiment(config, world=small_world)
    users = np.arange(200)
    warm, _ = trained_users(
        {"a": ArmSpec(a, "oracle", 100, "small"), "b": ArmSpec(b, "oracle", 100, "small")}
    )
    expected = user_segments(small_world, users, load_logs(log_dir).samples, warm)
    labels = result.segment_labels
    np.testing.assert_array_equal(labels["user"], users)
    np.testing.assert_array_equal(labels["warm"], expected["warm"])
    np.testing.assert_array_equal(labels["activity"], expected["activity"])
    assert set(result.segments["segment"]) == {"warm", "cold", "heavy", "light"}
