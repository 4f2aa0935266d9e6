"""The run folder's reports: every file, the SRM gate first, a failed gate flagged."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from abtest.analysis import ExperimentResult
from abtest.experiment import run_experiment
from abtest.report import markdown_report, terminal_report, write_run
from abtest.stats import SRMResult


def test_write_run_writes_every_output(tiny_result: ExperimentResult, tmp_path: Path) -> None:
    images = write_run(tiny_result, tmp_path)
    assert set(images) == {"lifts.png", "daily.png", "funnel.png"}
    for name in (
        "results.json",
        "per_user.parquet",
        "user_days.parquet",
        "daily.parquet",
        "report.md",
        "report.html",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    summary = json.loads((tmp_path / "results.json").read_text())
    records = pd.DataFrame(summary["records"])
    estimates = pd.DataFrame(json.loads(tiny_result.to_pandas().to_json(orient="records")))
    assert records[list(estimates.columns)].equals(estimates)
    truth = {"true_effect", "true_rel_effect", "covered", "rel_covered"}
    assert truth <= set(records.columns) or tiny_result.truth.empty
    assert summary["skipped_metrics"] == tiny_result.skipped
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "per_user.parquet"), tiny_result.users)
    html = (tmp_path / "report.html").read_text()
    assert html.startswith("<!doctype html>") and '<img src="lifts.png"' in html


def test_reports_show_the_gate_before_the_results_and_name_skipped_metrics(tiny_result) -> None:
    text = terminal_report(tiny_result)
    assert text.index("SRM gate") < text.index("pctr")
    assert "skipped purchases:" in text
    md = markdown_report(tiny_result, [])
    assert md.index("## Sample-ratio mismatch gate") < md.index("## Results") < md.index("## Skipped metrics")


def test_a_failed_gate_is_flagged_and_results_can_be_withheld(tiny_result) -> None:
    failed = dataclasses.replace(
        tiny_result, srm=SRMResult(chi2=30.0, pvalue=1e-7, passed=False, threshold=0.001)
    )
    text = terminal_report(failed, show_results=False)
    assert "FAILED" in text and "pctr" not in text
    assert "**SRM gate FAILED**" in markdown_report(failed, [])


def _pct(x: float) -> str:
    return f"{100 * x:+.2f}%"


def test_terminal_report_has_a_line_per_segment_metric_and_the_skipped_dimensions(tiny_result) -> None:
    """After the main results: a header saying the results are exploratory, one aligned row per
    segment value, metric and treatment (lift, interval, true lift, covers), then the reasons."""
    seg = tiny_result.segments
    assert set(seg["dimension"]) == {"mindful"} and len(seg) > 1
    block = terminal_report(tiny_result).split("\nsegments (")[1].splitlines()
    assert block[0].startswith("exploratory: no multiple-testing correction across segments")
    rows, skipped = block[2 : 2 + len(seg)], block[2 + len(seg) :]
    assert len({len(row) for row in rows}) == 1  # aligned
    for row, r in zip(rows, seg.itertuples(index=False), strict=True):
        covers = "yes" if r.rel_covered else "NO"
        expected = (
            f"{r.dimension} = {r.segment} {r.users} {r.metric} {r.treatment} {_pct(r.rel_effect)} "
            f"[{_pct(r.rel_ci_lower)}, {_pct(r.rel_ci_upper)}] {_pct(r.true_rel_effect)} {covers}"
        )
        assert row.split() == expected.split()
    assert {"warm", "activity"} <= set(tiny_result.segments_skipped)  # baselines; simulated pre-period
    assert skipped == [f"skipped segment {k}: {v}" for k, v in tiny_result.segments_skipped.items()]


def test_interleaved_segment_lines_are_labelled_as_the_main_table(make_config, small_world) -> None:
    config = make_config(design={"kind": "interleave", "truth_users": 100}, traffic={"users": 200, "days": 1})
    result = run_experiment(config, world=small_world)
    text = terminal_report(result)
    main_header = next(line for line in text.splitlines() if line.split()[:2] == ["metric", "treatment"])
    segment_header = text.split("\nsegments (")[1].splitlines()[1]
    for label in ("credit ratio", "true A/B lift", "same sign"):
        assert label in main_header and label in segment_header, label


def test_the_calibration_table_agrees_with_the_per_user_arm_table(tiny_result) -> None:
    cal = tiny_result.calibration.set_index(["day", "arm"])
    arms = tiny_result.arms.set_index("arm")
    assert sorted(cal.index.get_level_values("day").unique()) == list(tiny_result.config.experiment_days)
    for arm, row in arms.iterrows():
        mine = cal.xs(arm, level="arm")
        assert (mine["users"] == row["users"]).all()  # every SMALL user has arrived on both days
        assert mine["clicks_per_session"].sum() == pytest.approx(row["clicks"])  # per user over the days
        assert mine["pages_per_session"].sum() == pytest.approx(row["depth"])
        clicks = (mine["clicks_per_session"] * mine["users"]).sum()
        assert clicks / (mine["pages_per_session"] * mine["users"]).sum() == pytest.approx(row["pctr"])
    uctr = cal["uctr"].unstack("arm")
    assert (uctr["treatment"] > uctr["control"]).all()  # the oracle coarse ranker against popularity
    assert "Per day and arm" in markdown_report(tiny_result, [])
