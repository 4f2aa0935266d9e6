"""The run folder of an experiment and its reports.

``write_run(result, folder)`` writes, each file atomically (temporary file, then rename)::

    config.toml        the experiment config (written first by run_ab.py, rebuilds the run)
    results.json       SRM gate, records (each with its true effect), arm values, power,
                       expected-value metrics, funnel, daily looks, versions, timings
    per_user.parquet   one row per user and arm it ran under (column arm; split: one row per
                       user, paired: one per user and arm): metric columns, pre-period columns
    truth_users.parquet  split: the truth users under every arm (what the true effect rests on)
    segments.parquet   one row per user: its segment labels ([segments] dimensions)
    user_days.parquet  one row per user-day: the experiment's logs (+ funnel counts)
    daily.parquet      cumulative records after each day, with always-valid intervals
    report.md / report.html, lifts.png, daily.png (days > 1), funnel.png

``terminal_report`` is the table printed by run_ab.py; the SRM gate comes before the results,
the per-segment lines (exploratory) after them.
"""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from abtest.analysis import SEGMENTS_NOTE, ExperimentResult
from abtest.store import write_atomic, write_parquet_atomic, write_text_atomic


def _fmt(value: float, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.{digits}g}"


def _pct(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "–" if value is None or math.isnan(value) else ("+∞" if value > 0 else "-∞")
    return f"{100 * value:+.2f}%"


def _pvalue(p: float) -> str:
    if p is None or math.isnan(p):
        return "–"
    return f"{p:.2e}" if p < 1e-4 else f"{p:.4f}"


def srm_lines(result: ExperimentResult) -> list[str]:
    s, c = result.srm, result.config
    if s is None:
        n = ", ".join(f"{arm} {count:,}" for arm, count in result.arm_counts.items())
        how = "interleaved pages of every arm" if c.interleave else "every arm"
        return [f"SRM gate: not applicable ({c.design.kind} design: every user saw {how}; users: {n})"]
    total = sum(result.arm_counts.values())
    parts = [
        f"{arm} {result.arm_counts[arm]:,} (expected {share * total:,.0f})"
        for arm, share in zip(c.arm_names, c.shares, strict=True)
    ]
    verdict = "PASSED" if s.passed else "FAILED: the split is broken, the results below are not trustworthy"
    return [
        f"SRM gate (chi-squared, fails at p < {s.threshold:g}): {verdict}",
        f"  users: {', '.join(parts)}; chi2 = {s.chi2:.3f}, p = {_pvalue(s.pvalue)}",
    ]


def results_table(result: ExperimentResult) -> pd.DataFrame:
    """The records as display strings, one row per metric x treatment."""
    ci = f"{100 * (1 - result.config.stats.alpha):g}% CI"
    truth = result.truth.set_index(["metric", "treatment"]) if len(result.truth) else None
    rows = []
    for r in result.results.records:
        row = {}
        if truth is not None and result.config.interleave:  # credits: only the direction compares
            t = truth.loc[(r.metric, r.treatment)]
            same = {True: "yes", False: "NO"}.get(t["same_sign"], "–")
            row = {"true A/B lift": _pct(t["true_rel_effect"]), "same sign": same}
        elif truth is not None:
            t = truth.loc[(r.metric, r.treatment)]
            covered = {True: "yes", False: "NO"}.get(t["rel_covered"], "–")
            row = {"true lift": _pct(t["true_rel_effect"]), "covers": covered}
        rows.append(
            {
                "metric": r.metric,
                "treatment": r.treatment,
                "control": _fmt(r.control_value),
                "treat.": _fmt(r.treatment_value),
                ("credit ratio" if result.config.interleave else "lift"): _pct(r.rel_effect),
                ci: f"[{_pct(r.rel_ci_lower)}, {_pct(r.rel_ci_upper)}]",
                **row,
                "p": _pvalue(r.pvalue),
                "p adj.": _pvalue(r.pvalue_adjusted),
                "sig.": "yes" if r.significant else "no",
                "CUPED": f"-{100 * r.variance_reduction:.0f}% var" if r.cuped else "off",
            }
        )
    frame = pd.DataFrame(rows)
    if not result.config.split and len(frame):
        frame = frame.drop(columns="CUPED")  # none in a paired or interleaved design
    return frame


def segments_side_by_side(result: ExperimentResult) -> pd.DataFrame:
    """One row per segment metric x treatment, one column per segment value (e.g. "mindful =
    True (412 users)"): its lift with the interval, and the true lift where there is one."""
    seg = result.segments
    if not len(seg):
        return pd.DataFrame()
    has_truth = "true_rel_effect" in seg.columns
    table: dict[tuple[str, str], dict[str, str]] = {}
    for r in seg.itertuples(index=False):
        cell = f"{_pct(r.rel_effect)} [{_pct(r.rel_ci_lower)}, {_pct(r.rel_ci_upper)}]"
        if has_truth:
            cell += f" (true {_pct(r.true_rel_effect)})"
        column = f"{r.dimension} = {r.segment} ({r.users:,} users)"
        table.setdefault((r.metric, r.treatment), {})[column] = cell
    rows = [{"metric": m, "treatment": t} | cells for (m, t), cells in table.items()]
    return pd.DataFrame(rows).fillna("–")


def segment_details(result: ExperimentResult) -> pd.DataFrame:
    """The per-segment records as display strings, labelled as in the main table."""
    seg, interleave = result.segments, result.config.interleave
    ci = f"{100 * (1 - result.config.stats.alpha):g}% CI"
    rows = []
    for r in seg.to_dict("records"):
        truth = {}
        if "true_rel_effect" in r:  # interleaving: credits, only the direction compares
            check = "same sign" if interleave else "covers"
            verdict = r["same_sign"] if interleave else r["rel_covered"]
            truth = {
                ("true A/B lift" if interleave else "true lift"): _pct(r["true_rel_effect"]),
                check: {True: "yes", False: "NO"}.get(verdict, "–"),
            }
        rows.append(
            {
                "dimension": r["dimension"],
                "segment": r["segment"],
                "users": r["users"],
                "metric": r["metric"],
                "treatment": r["treatment"],
                "control": _fmt(r["control_value"]),
                "treat.": _fmt(r["treatment_value"]),
                ("credit ratio" if interleave else "lift"): _pct(r["rel_effect"]),
                ci: f"[{_pct(r['rel_ci_lower'])}, {_pct(r['rel_ci_upper'])}]",
                **truth,
                "p (uncorrected)": _pvalue(r["pvalue"]),
            }
        )
    return pd.DataFrame(rows)


def segment_sections(result: ExperimentResult) -> list[tuple[str, str | pd.DataFrame]]:
    """The report's segment sections: the note, the side-by-side lifts, the details."""
    dims = [c for c in result.segment_labels.columns if c != "user"]
    skipped = [f"- {k}: {v}" for k, v in result.segments_skipped.items()]
    if not len(result.segments):
        if not dims and not skipped:
            return []
        return [("Segments", "\n".join(["no per-segment results", *skipped]))]
    text = f"Dimensions: {', '.join(dims)}; {SEGMENTS_NOTE}. Segment definitions: docs/world.md (Segments)."
    return [
        ("Segments (exploratory)", "\n".join([text, *skipped])),
        ("Segments side by side: lift [CI] (true lift)", segments_side_by_side(result)),
        ("Segments: every comparison", segment_details(result)),
    ]


def segment_lines(result: ExperimentResult) -> list[str]:
    """The terminal's segment block: one aligned line per segment value, metric and treatment
    (lift, interval and true lift as in the main table), then why a dimension, segment or
    metric was skipped."""
    skipped = [f"skipped segment {k}: {v}" for k, v in result.segments_skipped.items()]
    if not len(result.segments):
        return ["segments: no per-segment results", *skipped] if skipped else []
    table = segment_details(result)
    table["segment"] = table["dimension"] + " = " + table["segment"]
    table = table.drop(columns=["dimension", "control", "treat.", "p (uncorrected)"])
    note = "exploratory: no multiple-testing correction across segments; every comparison in report.md"
    return [f"segments ({note}):", table.to_string(index=False), *skipped]


def truth_line(result: ExperimentResult) -> str:
    """What the true effect is and how many of the lift intervals cover it."""
    t, c = result.truth, result.config
    if not len(t):
        return "true effect: not computed ([design] truth_users = 0)"
    n = int(t["truth_users"].max())
    if c.paired:
        arrived = (
            f" with a session (of {c.traffic.users:,}; the rest arrive later)" if n < c.traffic.users else ""
        )
        who = f"all {n:,} users{arrived} under every arm (the paired runs themselves)"
    else:
        who = (
            f"a random sample of {n:,} of the {c.traffic.users:,} users, "
            + ("each also run under every arm on its own" if c.interleave else "each also run under the arms")
            + ("" if c.interleave else " it was not assigned")
        )
    if c.interleave:
        agree = t["same_sign"].dropna()
        return (
            f"true A/B lift: the effect on {who}, same days and random numbers, in exact expectation "
            "over every draw; "
            f"the interleaving estimate (credit difference) points the same way in {int(agree.sum())} "
            f"of {len(agree)} comparisons"
        )
    covered = t["rel_covered"].dropna()
    return (
        f"true lift: the effect on {who}, same days and random numbers, in exact expectation over "
        "every click, purchase and continue/leave draw (clicks, purchases, GMV, uCTR, depth by their "
        f"exact twins); the lift interval covers it in "
        f"{int(covered.sum())} of {len(covered)} comparisons"
    )


def decision_lines(result: ExperimentResult) -> list[str]:
    """Per treatment: the MDE on clicks (and on its exact twin) at this size and the users a
    production split test would need to detect the measured click lift."""
    power = result.power
    if not len(power):
        return []
    power = power.set_index(["metric", "treatment"])
    lines = []
    for (metric, treatment), row in power.iterrows():
        if metric != "clicks":
            continue
        if result.config.interleave:
            lines.append(
                f"clicks credit ({treatment}): MDE {_pct(row['mde_rel'])} of the control's credit "
                f"at this size (power {result.config.stats.power:g}; the sign test is the decision)"
            )
            continue
        exact = row["lift_from"]
        mde = f"MDE {_pct(row['mde_rel'])}"
        if exact != metric:
            mde += f" ({exact}: {_pct(power.loc[(exact, treatment), 'mde_rel'])})"
        needed = row["split_users_for_lift"]
        measured = result.record(exact, treatment).rel_effect
        lines.append(
            f"clicks ({treatment}): {mde} at this size (power {result.config.stats.power:g}); "
            "a production split test would need "
            + (f"{needed:,.0f} users" if math.isfinite(needed) else "– users (no measurable lift)")
            + f" to detect the measured lift of {_pct(measured)} ({exact})"
        )
    return lines


def terminal_report(result: ExperimentResult, show_results: bool = True) -> str:
    c = result.config
    lines = [
        f"experiment {c.name} ({c.design.kind} design): {' vs '.join(c.arm_names)} (control {c.control})"
    ]
    lines += srm_lines(result)
    if show_results:
        table = results_table(result)
        lines.append("")
        lines.append(table.to_string(index=False) if len(table) else "(no metric could be analysed)")
        for name, why in result.skipped.items():
            lines.append(f"skipped {name}: {why}")
        lines.append(
            f"design: {c.design.kind}; correction: {c.stats.correction} over "
            f"{len(result.results.records)} comparisons; lift CI: {c.stats.lift_ci}"
        )
        lines.append(truth_line(result))
        lines += decision_lines(result)
        segments = segment_lines(result)
        lines += ["", *segments] if segments else []
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Plots


def save_png(fig, path: Path) -> None:
    """Write a matplotlib figure to ``path`` as PNG (atomically) and close it."""
    import matplotlib.pyplot as plt  # noqa: PLC0415 (only when plotting)

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_atomic(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))


def interval_bars(ax, x: np.ndarray, y: np.ndarray, lo: np.ndarray, hi: np.ndarray, color: str) -> None:
    """Horizontal interval bars [lo, hi] around ``x`` at heights ``y`` (rows without a finite
    interval get none)."""
    finite = np.isfinite(lo) & np.isfinite(hi)
    ax.errorbar(
        x[finite],
        y[finite],
        xerr=[x[finite] - lo[finite], hi[finite] - x[finite]],
        fmt="none",
        ecolor=color,
        capsize=3,
    )


def _plots(result: ExperimentResult, folder: Path) -> list[str]:
    import matplotlib  # noqa: PLC0415 (only when plotting)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    written = []

    def save(fig, name: str) -> None:
        save_png(fig, folder / name)
        written.append(name)

    records = result.to_pandas()
    if len(records):
        fig, ax = plt.subplots(figsize=(7, 0.45 * len(records) + 1.2))
        y = np.arange(len(records))[::-1]
        lift = 100 * records["rel_effect"].to_numpy()
        lo = 100 * records["rel_ci_lower"].to_numpy()
        hi = 100 * records["rel_ci_upper"].to_numpy()
        colors = np.where(records["significant"], "tab:red", "tab:blue")
        interval_bars(ax, lift, y, lo, hi, "gray")
        ax.scatter(lift, y, c=colors, zorder=3)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y, [f"{m} ({t})" for m, t in zip(records["metric"], records["treatment"], strict=True)])
        ax.set_xlabel(
            f"relative lift vs {result.config.control}, % ({100 * (1 - result.config.stats.alpha):g}% CI)"
        )
        ax.set_title("Lifts (red: significant after correction)")
        save(fig, "lifts.png")

    daily = result.daily
    if len(result.config.experiment_days) > 1 and len(daily):
        metrics = list(dict.fromkeys(daily["metric"]))
        fig, axes = plt.subplots(len(metrics), 2, figsize=(10, 2.3 * len(metrics)), squeeze=False)
        for i, metric in enumerate(metrics):
            rows = daily[daily["metric"] == metric]
            left, right = axes[i]
            first = rows.drop_duplicates("day")
            left.plot(first["day"], first["control_value"], marker="o", label=result.config.control)
            for treatment, part in rows.groupby("treatment", sort=False):
                left.plot(part["day"], part["treatment_value"], marker="o", label=treatment)
                right.plot(part["day"], 100 * part["rel_effect"], marker="o", label=treatment)
                base = part["control_value"].abs().replace(0, np.nan)
                right.fill_between(
                    part["day"],
                    100 * part["rel_ci_lower"],
                    100 * part["rel_ci_upper"],
                    alpha=0.25,
                    label="CI (fixed horizon)",
                )
                if part["av_ci_lower"].notna().any():
                    label = "always valid (effect / control)"
                    right.plot(part["day"], 100 * part["av_ci_lower"] / base, "k--", lw=0.8, label=label)
                    right.plot(part["day"], 100 * part["av_ci_upper"] / base, "k--", lw=0.8)
            left.set_ylabel(metric)
            right.axhline(0, color="black", lw=0.8)
            right.set_ylabel("lift %")
            if i == 0:
                left.legend(fontsize=7)
                right.legend(fontsize=7)
                left.set_title("cumulative value per arm")
                right.set_title("cumulative lift (effect / control)")
        for ax in axes.ravel():
            ax.set_xticks(result.config.experiment_days)
        for ax in axes[-1]:
            ax.set_xlabel("day")
        fig.tight_layout()
        save(fig, "daily.png")

    funnel = result.funnel
    if len(funnel) and funnel["users"].max() > 0:
        stages = list(dict.fromkeys(funnel["stage"]))
        arms = list(dict.fromkeys(funnel["arm"]))
        fig, ax = plt.subplots(figsize=(7, 0.6 * len(arms) + 1.5))
        left = np.zeros(len(arms))
        for stage in stages:
            share = (
                funnel[funnel["stage"] == stage].set_index("arm").reindex(arms)["share"].fillna(0).to_numpy()
            )
            ax.barh(arms, share, left=left, label=f"lost at {stage}" if stage != "kept" else "on the page")
            left += share
        ax.set_xlabel(
            f"share of each user's {result.config.stats.funnel_k} truly best items (expected clicks)"
        )
        ax.set_title("Funnel loss per stage")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        save(fig, "funnel.png")
    return written


# ---------------------------------------------------------------------------------------------
# Markdown and HTML


def run_lines(run: Mapping[str, Any]) -> str:
    """The run's code version, environment and times (``common.version.run_metadata``)."""
    libraries = ", ".join(f"{name} {run.get(name) or 'not installed'}" for name in ("torch", "ray", "numpy"))
    return "\n".join(
        [
            f"- code: {run['package']}, git commit {run['git_commit'] or 'unknown (not a git checkout)'}",
            f"- Python {run['python']}, {libraries}; {run['cpu_count']} CPUs",
            f"- started {run['started']}, finished {run['finished']} (UTC)",
        ]
    )


def _sections(
    result: ExperimentResult, run: Mapping[str, Any] | None = None
) -> list[tuple[str, str | pd.DataFrame]]:
    """(title, text or table) pairs shared by the Markdown and HTML reports; ``run``: the
    run's metadata, a section of its own."""
    c = result.config
    arms = pd.DataFrame(
        [
            {
                "arm": arm,
                "coarse": v["coarse"],
                "coarse version": v["coarse_version"],
                "fine": v["fine"],
                "fine version": v["fine_version"],
                "coarse size": v["coarse_size"],
                "users": result.arm_counts[arm],
            }
            for arm, v in result.versions.items()
        ]
    )
    t = c.traffic
    setup = (
        f"World `{c.world}`; design `{c.design.kind}`"
        + (" (every user under every arm, same random numbers; paired differences)" if c.paired else "")
        + (" (team-draft pages of every arm; credit per arm, sign tests)" if c.interleave else "")
        + f"; users 0..{t.users - 1}, {t.days} day(s) from day {t.first_day}, one session "
        f"per user-day; traffic {result.through}"
        + (f" on {result.workers} worker(s)" if result.through == "inprocess" else "")
        + f"; assignment salt `{c.assignment.salt}`, layer `{c.assignment.layer}`"
        + (" (A/A mode: every arm runs the control's cascade)" if c.assignment.aa else "")
        + f"; pre-period: {c.pre_period.source}; alpha {c.stats.alpha}, correction {c.stats.correction}, "
        f"lift CI {c.stats.lift_ci}, CUPED {'on' if c.stats.cuped else 'off'}."
    )
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
    sections: list[tuple[str, str | pd.DataFrame]] = [
        ("Set-up", setup + (f"\n\n{c.description}" if c.description else "")),
        ("Arms", arms),
        ("Sample-ratio mismatch gate", "\n".join(srm_lines(result))),
        ("Results", results_table(result)),
        ("True effect", "\n".join([truth_line(result), *decision_lines(result)])),
    ]
    if len(result.truth):
        sections.append(("True effect per comparison", result.truth.round(6)))
    sections += segment_sections(result)
    if len(result.preferences):
        sections.append(
            (
                "Interleaving preferences (per user: wins = more credit to the treatment; sign test)",
                result.preferences.round(5),
            )
        )
    if len(result.expected):
        sections.append(
            (
                "Expected-value metrics: variance reduction against the realised twin "
                "(1 - SE²(expected) / SE²(realised))",
                result.expected.round(5),
            )
        )
    if result.skipped:
        sections.append(("Skipped metrics", "\n".join(f"- {k}: {v}" for k, v in result.skipped.items())))
    sections.append(("Raw values per arm", result.arms.round(5)))
    power = result.power.copy()
    if len(power):
        power["mde_rel"] = power["mde_rel"].map(_pct)
        sections.append(
            (
                f"Power (alpha {c.stats.alpha}, power {c.stats.power}): minimum detectable effect at this "
                "size, users needed for a +1 % lift",
                power.round(5),
            )
        )
    if len(result.funnel):
        sections.append(
            (
                f"Funnel loss (users 0..{c.stats.funnel_users - 1} on day {t.first_day}: where each user's "
                f"{c.stats.funnel_k} truly best items of the pool were lost)",
                result.funnel.round(4),
            )
        )
    if len(result.calibration):
        sections.append(
            (
                "Per day and arm (realised; a feed's ranges: docs/world.md, Calibration)",
                result.calibration.round(4),
            )
        )
    if len(c.experiment_days) > 1 and len(result.daily):
        cols = ["day", "metric", "treatment", "effect", "effect_ci_lower", "effect_ci_upper"]
        cols += ["av_ci_lower", "av_ci_upper", "pvalue"]
        sections.append(("Daily looks (cumulative; always-valid intervals)", result.daily[cols].round(5)))
    sections.append(("Wall time", timings))
    if run is not None:
        sections.append(("Run", run_lines(run)))
    return sections


def markdown_table(frame: pd.DataFrame, digits: int = 6, missing: str = "–") -> str:
    """A GitHub-flavoured Markdown table (no extra dependency): numbers to ``digits``
    significant digits, NaN as ``missing``."""

    def cell(value) -> str:
        if isinstance(value, float) and math.isnan(value):
            return missing
        text = _fmt(value, digits) if isinstance(value, float) else str(value)
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def markdown_report(result: ExperimentResult, images: list[str], run: Mapping[str, Any] | None = None) -> str:
    c = result.config
    out = [f"# A/B experiment `{c.name}`", ""]
    if not result.srm_passed:
        out += ["> **SRM gate FAILED**: the users per arm do not match the designed split.", ""]
    for title, body in _sections(result, run):
        out.append(f"## {title}\n")
        out.append(markdown_table(body) if isinstance(body, pd.DataFrame) else body)
        out.append("")
    for image in images:
        out += [f"![{image}]({image})", ""]
    return "\n".join(out)


def html_report(result: ExperimentResult, images: list[str], run: Mapping[str, Any] | None = None) -> str:
    c = result.config
    body = [f"<h1>A/B experiment <code>{html.escape(c.name)}</code></h1>"]
    if not result.srm_passed:
        body.append('<p class="srm"><b>SRM gate FAILED</b>: the users per arm do not match the split.</p>')
    for title, content in _sections(result, run):
        body.append(f"<h2>{html.escape(title)}</h2>")
        if isinstance(content, pd.DataFrame):
            body.append(content.to_html(index=False, border=0, classes="t"))
        else:
            body.append("<pre>" + html.escape(content) + "</pre>")
    for image in images:
        body.append(f'<p><img src="{html.escape(image)}" alt="{html.escape(image)}"></p>')
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table.t{border-collapse:collapse;font-size:13px}table.t td,table.t th{padding:2px 8px;"
        "border-bottom:1px solid #ddd;text-align:right}.srm{color:#b00;font-size:1.2em}"
        "pre{white-space:pre-wrap}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(c.name)}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )


def write_run(
    result: ExperimentResult,
    folder: str | Path,
    images: list[str] | None = None,
    run: Mapping[str, Any] | None = None,
) -> list[str]:
    """Write every output of a finished experiment into ``folder``; returns the plot names.
    With ``images`` (the names a previous call returned) only the texts are rewritten: that is
    how run_ab.py adds the report's own wall time. ``run``: the run's metadata (code version,
    environment, start and end times: ``common.version.run_metadata``), recorded as
    results.json's ``run`` and the reports' last section."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    summary = result.summary() | ({"run": dict(run)} if run is not None else {})
    write_text_atomic(folder / "results.json", json.dumps(summary, indent=2, allow_nan=True) + "\n")
    if images is None:
        write_parquet_atomic(folder / "per_user.parquet", result.users)
        if not result.config.paired and len(result.truth_users):  # split, interleave
            write_parquet_atomic(folder / "truth_users.parquet", result.truth_users)
        write_parquet_atomic(folder / "user_days.parquet", result.user_days)
        write_parquet_atomic(folder / "segments.parquet", result.segment_labels)
        write_parquet_atomic(folder / "daily.parquet", result.daily)
        images = _plots(result, folder)
    write_text_atomic(folder / "report.md", markdown_report(result, images, run))
    write_text_atomic(folder / "report.html", html_report(result, images, run))
    return images
