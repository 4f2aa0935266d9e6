"""The seeds-side-by-side table: each seed figure is matched with the right rung pair, metric and
segment of this world's ladder and A/B results."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tuning.ladder import ABLATIONS, STEPS
from tuning.seeds import SEED_FIGURES, main, reported_value, seeds_table

RUNGS = [name for name, _ in STEPS]
LADDER_METRICS = ("gauc", "hitrate_in@600", "hitrate_out@600", "hitrate_global@600", "funnel_fine")


def ladder_with(rung: str, metric: str, step: float) -> pd.DataFrame:
    """A ladder whose only technique with an effect is ``rung``'s: ``metric`` is ``step`` higher
    from that rung on (rungs are cumulative)."""
    rows = [{"model": name} | {m: 0.5 for m in LADDER_METRICS} for name in ["oracle", *RUNGS]]
    for row in rows[1 + RUNGS.index(rung) :]:
        row[metric] += step
    return pd.DataFrame(rows)


def record(metric: str, truth: float, low: float, high: float, **extra) -> dict:
    return {"metric": metric, "true_rel_effect": truth, "rel_ci_lower": low, "rel_ci_upper": high} | extra


RESULTS = {
    "records": [
        record("clicks", 0.030, -0.01, 0.07, n_control=1000),
        record("exact_clicks", 0.030, 0.025, 0.035, n_control=1000),
        record("uctr", 0.006, -0.01, 0.02, n_control=1000),
        record("pctr", 0.021, 0.004, 0.038, n_control=1000),
    ],
    "segments": {
        "records": [
            record("clicks", 0.040, 0.0, 0.08, dimension="warm", segment="warm", users=700),
            record("exact_clicks", 0.040, 0.035, 0.045, dimension="warm", segment="warm", users=700),
            record("clicks", -0.020, -0.05, 0.01, dimension="mindful", segment=True, users=300),
        ]
    },
}


def values(table: pd.DataFrame) -> dict[str, float]:
    return dict(zip(table["comparison"], table["this world"], strict=True))


def test_a_rungs_gauc_step_shows_in_the_rows_that_span_it_and_no_other():
    table = values(seeds_table([ladder_with("+fm", "gauc", 0.004)], [], [RESULTS]))
    moved = {name for name, v in table.items() if "GAUC" in name and v != 0}
    assert moved == {
        "offline GAUC, + MLP + FM + distillation over the DSSM (‰)",
        "offline GAUC, + FM cross (‰)",
    }
    assert table["offline GAUC, + FM cross (‰)"] == pytest.approx(4.0)  # per mille
    table = values(seeds_table([ladder_with("+nova", "gauc", 0.002)], [], [RESULTS]))
    assert table["offline GAUC, + NOVA (‰)"] == pytest.approx(2.0)
    assert table["offline GAUC, + SENET/bilinear (‰)"] == 0  # measured against +nova
    assert table["offline GAUC, + NOVA + SENET/bilinear on top (‰)"] == pytest.approx(2.0)


def test_hitrates_are_points_between_the_full_model_and_its_ablations():
    """An ablation that lowers a hitrate by x shows as +x points in the rows comparing the full
    model with it, and in no other row."""
    losses = {
        "full-unexposed-random": ("hitrate_out@600", 0.055),
        "full-label_smoothing": ("hitrate_in@600", 0.0065),
    }
    rows = []
    for name, _ in ABLATIONS:
        rows.append({"model": name} | {m: 0.5 for m in LADDER_METRICS})
        if name in losses:
            rows[-1][losses[name][0]] -= losses[name][1]
    ladder = pd.concat([ladder_with("full", "gauc", 0.0), pd.DataFrame(rows)], ignore_index=True)
    table = values(seeds_table([ladder], [], [RESULTS]))
    assert table["out-of-scene hitrate, + unexposed and random negatives (pt)"] == pytest.approx(5.5)
    assert table["in-scene hitrate, + label smoothing for unexposed items (pt)"] == pytest.approx(0.65)
    assert table["out-of-scene hitrate, + label smoothing for unexposed items (pt)"] == 0
    assert table["out-of-scene hitrate, + out-of-scene positives (pt)"] == 0
    table = values(seeds_table([ladder_with("full", "hitrate_out@600", 0.006)], [], [RESULTS]))
    assert np.isnan(table["out-of-scene hitrate, + out-of-scene positives (pt)"])  # no ablation rows
    assert table["global hitrate, full vs DSSM (pt)"] == 0  # another metric


def test_online_rows_are_the_true_lift_on_all_users_or_the_segment_with_the_exact_twins_interval():
    table = seeds_table([ladder_with("full", "gauc", 0.0)], [], [RESULTS]).set_index("comparison")
    clicks = table.loc["online clicks, full vs DSSM (%)"]
    assert clicks["this world"] == pytest.approx(3.0)
    assert (
        "[+2.50, +3.50] (exact_clicks)" in clicks["how measured"] and "1,000 users" in clicks["how measured"]
    )
    warm = table.loc["online clicks, warm users (%)"]
    assert warm["this world"] == pytest.approx(4.0) and "700 users" in warm["how measured"]
    assert table.loc["online clicks, mindful users (%)", "this world"] == pytest.approx(-2.0)
    pctr = table.loc["online pCTR, full vs DSSM (%)"]  # no exact twin: its own interval
    assert pctr["this world"] == pytest.approx(2.1) and "(pctr)" in pctr["how measured"]
    missing = table.loc["online depth, mindful users (%)"]
    assert np.isnan(missing["this world"]) and "not in" in missing["how measured"]
    assert np.isnan(table.loc["ladder online exact clicks, full vs DSSM, held-out users (%)", "this world"])


def test_every_figure_has_a_row_and_the_command_writes_the_table_and_figure(tmp_path, capsys):
    import matplotlib.image  # noqa: PLC0415

    ladder, ab = tmp_path / "ladder", tmp_path / "ab"
    ladder.mkdir()
    ab.mkdir()
    assert main(["--ladder", str(ladder), "--ab", str(ab)]) == 2
    assert "results.json is missing" in capsys.readouterr().err
    (ab / "results.json").write_text(json.dumps(RESULTS))
    assert main(["--ladder", str(ladder), "--ab", str(ab)]) == 0  # without a ladder: its rows n/a
    out = capsys.readouterr()
    assert "ladder.csv is missing" in out.err
    gauc = next(line for line in out.out.splitlines() if "+ FM cross" in line)
    assert "n/a" in gauc and "no ladder.csv" in gauc
    ladder_with("full", "gauc", 0.01).to_csv(ladder / "ladder.csv", index=False)
    test = {"rung": "full", "reference": "dssm", "Δexact_clicks": 0.2, "±95%": 0.05, "lift %": 2.0}
    pd.DataFrame([test | {"p Holm": 1e-5}]).to_csv(ladder / "ladder_tests.csv", index=False)
    figure = tmp_path / "seeds.png"
    assert main(["--ladder", str(ladder), "--ab", str(ab), "--plot", str(figure)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + len(SEED_FIGURES)
    online = next(line for line in lines if "ladder online exact clicks" in line)
    assert "+2.00" in online and "±0.50" in online  # 0.05 clicks of a 10-click reference
    assert matplotlib.image.imread(figure)[..., :3].std() > 0.05  # something was drawn


def test_replicates_give_each_value_as_their_mean_and_list_every_seed(tmp_path, capsys):
    """Two ladders (training seeds) and a --train-seeds A/B folder: each row is the mean of its
    replicates, each seed's value listed; the A/B folder's seeds are read in seed order."""
    table = seeds_table(
        [ladder_with("+fm", "gauc", 0.004), ladder_with("+fm", "gauc", 0.001)], [], [RESULTS]
    ).set_index("comparison")
    fm = table.loc["offline GAUC, + FM cross (‰)"]
    assert fm["this world"] == pytest.approx(2.5) and "2 training seeds: +4.00 / +1.00" in fm["how measured"]
    folder = tmp_path / "default-train-seeds"
    for seed, truth in ((10, 0.01), (2, 0.05)):  # seed 2 before seed 10
        (folder / f"seed{seed}").mkdir(parents=True)
        records = [record("exact_clicks", truth, 0.0, 0.1, n_control=1000), record("clicks", truth, 0, 0.1)]
        (folder / f"seed{seed}" / "results.json").write_text(json.dumps({"records": records}))
    ladder = tmp_path / "ladder"
    ladder.mkdir()
    ladder_with("+fm", "gauc", 0.004).to_csv(ladder / "ladder.csv", index=False)
    assert main(["--ladder", str(ladder), "--ab", str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    clicks = next(line for line in lines if "online clicks, full vs DSSM" in line)
    assert "| +3.00 |" in clicks and "2 training seeds: +5.00 / +1.00" in clicks


def test_a_seeds_figure_is_read_as_its_one_number():
    assert reported_value("+1.86") == 1.86 and reported_value("(production: +3.48)") == 3.48
    assert reported_value("about +1.0") == 1.0
    assert np.isnan(reported_value("+10 to +13")) and np.isnan(reported_value("rises"))
