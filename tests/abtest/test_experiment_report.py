"""The run folder's reports: every file, the SRM gate first, a failed gate flagged."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd

from abtest.analysis import ExperimentResult
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
