"""The ablation ladder: its rungs, its table and figure, its paired online differences."""

from __future__ import annotations

import dataclasses
import itertools
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from abtest.stats import holm
from policies.config import DWELL_BUCKETS, dwell_buckets, read_raw
from policies.evaluate import ClickRows
from policies.metrics import gauc_difference
from policies.train import parse_config
from simulator.config import SMALL, load_world_config
from tuning.ladder import (
    ABLATIONS,
    LEAVE_ONE_OUT,
    STEPS,
    ablation_configs,
    format_table,
    ladder_configs,
    offline_online_agreement,
    override_training,
    paired_vs_reference,
    plot_ladder,
    replicate_table,
    rung_tests,
)

CONFIGS = Path(__file__).parents[2] / "configs" / "models"


def test_the_last_rung_is_the_full_model_config():
    base = tomllib.loads((CONFIGS / "coarse_dssm.toml").read_text())
    full = tomllib.loads((CONFIGS / "coarse_full.toml").read_text())
    world = load_world_config(parse_config(read_raw(CONFIGS / "coarse_dssm.toml")).data.world)
    rungs = ladder_configs(base, full["distill"]["teacher"], Path("runs/ladder"), dwell_buckets(world))
    assert list(rungs) == [name for name, _ in STEPS]
    last = parse_config({**rungs["full"], "out": full["out"]})
    assert last == parse_config(full)


def test_each_rung_adds_exactly_its_step():
    base = tomllib.loads((CONFIGS / "coarse_dssm.toml").read_text())
    rungs = list(ladder_configs(base, "fine.toml", Path("out")).values())
    for before, after in itertools.pairwise(rungs):
        changed = {
            (table, key)
            for table in set(before) | set(after)
            if isinstance(after.get(table), dict)
            for key in set(before.get(table, {})) | set(after[table])
            if before.get(table, {}).get(key) != after[table].get(key)
        }
        assert 1 <= len(changed) <= 4, changed  # distillation brings its settings along


def test_each_ablation_takes_exactly_its_technique_from_the_full_rung():
    base = tomllib.loads((CONFIGS / "coarse_dssm.toml").read_text())
    full = ladder_configs(base, "fine.toml", Path("out"), dwell=8)["full"]
    ablations = ablation_configs(full, Path("out"))
    assert list(ablations) == [name for name, _ in ABLATIONS]
    spaces = {name: dataclasses.astuple(parse_config(raw).data.space) for name, raw in ablations.items()}
    full_run = parse_config(full)
    assert dataclasses.astuple(full_run.data.space) == (
        True,
        True,
        True,
        True,
    )  # unexposed, dropped, random, out of scene
    assert spaces["full-unexposed-random"] == (False, True, False, True)
    assert spaces["full-out_of_scene"] == (True, True, True, False)
    smoothing = parse_config(ablations["full-label_smoothing"])
    assert spaces["full-label_smoothing"] == (True, True, True, True)
    assert (full_run.distill.label_smoothing_scale, smoothing.distill.label_smoothing_scale) == (0.1, 0.0)
    for name, raw in ablations.items():  # nothing else moves, and each has its own checkpoint
        assert {k: v for k, v in raw.items() if k not in ("data", "distill", "out")} == {
            k: v for k, v in full.items() if k not in ("data", "distill", "out")
        }
        assert raw["out"] == str(Path("out") / f"{name}.pt")
    assert "data" not in dict(ABLATIONS)["full-label_smoothing"]  # full itself is not changed
    assert full["data"]["unexposed"] and full["distill"]["label_smoothing_scale"] == 0.1


def test_each_leave_one_out_row_is_the_full_model_without_exactly_its_technique():
    base = tomllib.loads((CONFIGS / "coarse_dssm.toml").read_text())
    full = ladder_configs(base, "fine.toml", Path("out"), dwell=8)["full"]
    rows = ablation_configs(full, Path("out"), LEAVE_ONE_OUT)
    full_run = parse_config(full)
    switches = ("fm_cross", "mlp_scorer", "nova", "senet_bilinear")
    assert all(getattr(full_run.model, s) for s in switches) and full_run.distill.enabled
    for name, raw in rows.items():
        run = parse_config(raw)
        off = {s for s in switches if not getattr(run.model, s)} | (
            {"distill"} if not run.distill.enabled else set()
        )
        technique = {"fm": "fm_cross", "mlp": "mlp_scorer", "senet_bilinear": "senet_bilinear"}
        assert off == {technique.get(name.removeprefix("full-"), name.removeprefix("full-"))}
        assert run.data == full_run.data and run.train == full_run.train
        assert raw["out"] == str(Path("out") / f"{name}.pt")
    assert parse_config(rows["full-nova"]).model.dwell_buckets is None  # dwell is NOVA's input
    assert "dwell_buckets" not in rows["full-nova"]["model"]
    assert parse_config(rows["full-fm"]).model.dwell_buckets == 8


def test_training_overrides_reach_every_rung_and_leave_distillation_a_hard_label_epoch():
    base = tomllib.loads((CONFIGS / "coarse_dssm.toml").read_text())
    configs = ladder_configs(base, "fine.toml", Path("out"), dwell=8)
    configs |= ablation_configs(configs["full"], Path("out"))
    untouched = {name: parse_config(raw).train for name, raw in configs.items()}
    override_training(configs, epochs=None, seed=None)
    assert {name: parse_config(raw).train for name, raw in configs.items()} == untouched
    override_training(configs, epochs=1, seed=7)
    for name, raw in configs.items():
        run = parse_config(raw)
        assert (run.train.epochs, run.train.seed) == (1, 7), name
        assert run.train.lr == untouched[name].lr, name  # nothing else moves
        if "distill" in raw:
            assert run.distill.soft_only_epochs == 0, name
    assert sum("distill" in raw for raw in configs.values()) >= 5  # distill .. full and its ablations


def test_nova_reads_the_dwell_only_where_the_world_logs_it():
    assert dwell_buckets(SMALL) is None
    assert dwell_buckets(SMALL.replace(history_dwell_separation=1.5)) == DWELL_BUCKETS
    base = tomllib.loads((CONFIGS / "coarse_dssm.toml").read_text())
    without = ladder_configs(base, "fine.toml", Path("out")).values()
    assert all("dwell_buckets" not in raw.get("model", {}) for raw in without)
    rungs = ladder_configs(base, "fine.toml", Path("out"), dwell=8)
    reads = {name: rungs[name]["model"].get("dwell_buckets") for name in rungs}
    nova_on = [name for name, raw in rungs.items() if raw["model"].get("nova")]
    assert nova_on and all(reads[n] == 8 for n in nova_on)
    assert all(reads[n] is None for n in rungs if n not in nova_on)
    parse_config(rungs["full"])  # a valid config: dwell with NOVA


def test_table_formats_every_row():
    rows = [{"model": "a", "x": 0.123456, "version": "v"}, {"model": "b", "x": np.nan}]
    text = format_table(pd.DataFrame(rows))
    assert text.splitlines() == ["| model | x |", "|---|---|", "| a | 0.1235 |", "| b |  |"]


def test_paired_differences_cover_the_true_difference_at_95_percent():
    """Few users, each with their own level shared by both rows: the half-width must use the
    paired differences (not the rows' own spread, which would over-cover) and Student's t
    (a normal 1.96 covers ~91 % with 8 users)."""
    rng = np.random.default_rng(0)
    reps, covered = 4000, 0
    for _ in range(reps):
        level = rng.gamma(2.0, 3.0, 8)
        outcomes = {
            "dssm": {"clicks": level + rng.normal(0, 1, 8)},
            "+fm": {"clicks": level + 0.5 + rng.normal(0, 1, 8)},
        }
        paired = paired_vs_reference(outcomes, "dssm", ("clicks",))
        delta, half = paired["+fm"]["Δclicks vs dssm"], paired["+fm"]["Δclicks ±95%"]
        covered += abs(delta - 0.5) <= half
    assert paired["dssm"] == {"Δclicks vs dssm": 0.0, "Δclicks ±95%": 0.0}
    assert 0.94 <= covered / reps <= 0.96


def test_rung_tests_compare_each_rung_with_the_dssm_and_its_neighbour_and_adjust_by_family():
    """Rungs with known steps (0, +1, 0 over the previous) on 400 users: the neighbour family
    finds the one real step and not the null ones, the DSSM family carries the cumulative step;
    p values are scipy's paired t, Holm's are its step-down adjustment within each family."""
    rng = np.random.default_rng(1)
    level = rng.gamma(2.0, 3.0, 400)
    means = {"dssm": 0.0, "+mlp": 0.0, "+fm": 1.0, "+distill": 1.0}
    outcomes = {name: {"exact_clicks": level + m + rng.normal(0, 1, 400)} for name, m in means.items()}
    outcomes["oracle"] = {"exact_clicks": level + 3 + rng.normal(0, 1, 400)}
    outcomes["full-x"] = {"exact_clicks": level + 1 + rng.normal(0, 1, 400)}  # the last rung's twin
    outcomes["full-y"] = {"exact_clicks": level + rng.normal(0, 1, 400)}  # loses the last rung's step
    tests = rung_tests(outcomes, list(means), "exact_clicks", ["full-x", "full-y"])
    ablation = tests[tests["family"] == "full vs ablation"].set_index("reference")
    assert list(ablation["rung"]) == ["+distill", "+distill"]
    assert ablation.loc["full-y", "p Holm"] < 1e-6
    assert ablation.loc["full-x", "p Holm"] > 0.01
    assert np.allclose(ablation["p Holm"], holm(ablation["p"].to_numpy()))
    tests = tests.set_index(["family", "rung"])
    neighbours = tests.loc["vs the rung before"]
    assert list(neighbours["reference"]) == ["dssm", "+mlp", "+fm"]
    assert neighbours.loc["+fm", "p Holm"] < 1e-6
    assert (neighbours.loc[["+mlp", "+distill"], "p Holm"] > 0.01).all()
    assert abs(tests.loc[("vs dssm", "+distill"), "Δexact_clicks"] - 1.0) < 4 * 0.1  # SE ~ 0.07
    for (_, rung), row in tests.iterrows():
        t = stats.ttest_rel(outcomes[rung]["exact_clicks"], outcomes[row["reference"]]["exact_clicks"])
        assert row["p"] == pytest.approx(t.pvalue, rel=1e-9)
    for family in ("vs dssm", "vs the rung before"):
        p = tests.loc[family, "p"].to_numpy()
        assert np.allclose(tests.loc[family, "p Holm"], holm(p))
        assert (tests.loc[family, "p Holm"] >= p).all()
    assert np.isnan(tests.loc[("oracle vs dssm", "oracle"), "p Holm"])


def test_rung_tests_give_each_trained_comparison_its_paired_gauc_difference():
    rng = np.random.default_rng(2)
    users = np.repeat(np.arange(300), 8)
    clicks = rng.random(len(users)) < 0.3
    signal = clicks + rng.normal(0, 1, len(users))
    scores = {"dssm": signal + rng.normal(0, 2, len(users)), "+fm": signal + rng.normal(0, 1, len(users))}
    outcomes = {name: {"exact_clicks": rng.normal(0, 1, 300)} for name in (*scores, "oracle")}
    tests = rung_tests(
        outcomes, ["dssm", "+fm"], "exact_clicks", offline=ClickRows(None, users, clicks, scores)
    )
    tests = tests.set_index(["family", "rung"])
    difference, se = gauc_difference(users, clicks, scores["+fm"], scores["dssm"])
    row = tests.loc[("vs dssm", "+fm")]
    assert row["ΔGAUC ‰"] == pytest.approx(1000 * difference) and row["ΔGAUC ±95% ‰"] == pytest.approx(
        1960 * se
    )
    assert row["ΔGAUC ‰"] > row["ΔGAUC ±95% ‰"] > 0  # the less noisy scorer wins, clearly
    assert np.isnan(tests.loc[("oracle vs dssm", "oracle"), "ΔGAUC ‰"])  # a baseline has no logged scores


@pytest.mark.parametrize(
    "columns", [("Δclicks",), ("Δclicks", "Δexact_clicks"), ("Δclicks", "Δexact_clicks", "ΔGAUC ‰")]
)
def test_plot_draws_every_trained_rung_and_the_oracle(tmp_path, columns):
    import matplotlib.image  # noqa: PLC0415

    def differences(value: float, width: float) -> dict[str, float]:
        row = {f"{c} vs dssm": value for c in columns if c != "ΔGAUC ‰"}
        row |= {f"{c} ±95%": width for c in columns if c != "ΔGAUC ‰"}
        if "ΔGAUC ‰" in columns:  # the offline panel's paired differences
            row |= {"ΔGAUC ‰ vs dssm": 10 * value, "ΔGAUC ±95% ‰": 10 * width}
        return row

    rows = [{"model": "oracle", "auc": np.nan, "gauc": np.nan} | differences(1.0, 0.2)]
    for i, name in enumerate(["dssm", "+fm", "full"]):
        rows.append({"model": name, "auc": 0.6 + i / 100, "gauc": 0.55 + i / 100} | differences(i / 10, 0.1))
    plot_ladder(pd.DataFrame(rows), tmp_path / "ladder.png")
    image = matplotlib.image.imread(tmp_path / "ladder.png")
    assert image.shape[:2] == (440, 1210)  # 11 x 4 inches at 110 dpi
    assert image[..., :3].std() > 0.05  # something was drawn


def test_agreement_ranks_offline_metrics_over_the_trained_rows_then_with_the_baselines():
    online = [-1.5, -0.9, 0.0, 0.01, -0.1, 0.07, 0.17]  # random, popularity, dssm, rungs, oracle
    table = pd.DataFrame(
        {
            "model": ["random", "popularity", "dssm", "+mlp", "+fm", "full", "oracle"],
            "train_s": [np.nan, np.nan, 40.0, 20.0, 25.0, 70.0, np.nan],
            "gauc": [np.nan, np.nan, 0.68, 0.67, 0.69, 0.66, np.nan],  # against online on the trained rows
            "hitrate_global@600": [0.03, 0.06, 0.15, 0.16, 0.14, 0.19, 0.21],  # with online everywhere
            "Δexact_clicks vs dssm": online,
        }
    )
    agreement = offline_online_agreement(table, 600, "Δexact_clicks vs dssm").set_index(["rows", "metric"])
    assert agreement.loc[("trained", "gauc"), "trials"] == 4
    assert agreement.loc[("trained", "gauc"), "tau"] == pytest.approx(-1.0)
    assert agreement.loc[("all", "gauc"), "trials"] == 4  # the baselines have no GAUC
    assert agreement.loc[("trained", "hitrate_global@600"), "tau"] == pytest.approx(1.0)
    assert agreement.loc[("all", "hitrate_global@600"), "trials"] == 7
    assert agreement.loc[("all", "hitrate_global@600"), "pick"] == "oracle"
    assert agreement.loc[("trained", "hitrate_global@600"), "pick"] == "full"
    assert ("trained", "auc") not in agreement.index  # a metric the table lacks is left out


def test_replicates_line_up_comparisons_and_agree_only_on_shared_signs():
    def replicate(gauc: dict[str, float], lifts: dict[tuple[str, str], tuple[float, float]]):
        table = pd.DataFrame({"model": list(gauc), "gauc": list(gauc.values())})
        tests = pd.DataFrame(
            [
                {"family": "vs the rung before", "rung": r, "reference": ref, "lift %": lift, "p Holm": p}
                for (r, ref), (lift, p) in lifts.items()
            ]
            + [{"family": "oracle vs dssm", "rung": "oracle", "reference": "dssm", "lift %": 5, "p Holm": 0}]
        )
        return table, tests

    a = replicate(
        {"dssm": 0.680, "+mlp": 0.685, "+fm": 0.690},
        {("+mlp", "dssm"): (-2.0, 1e-9), ("+fm", "+mlp"): (1.0, 1e-5)},
    )
    b = replicate(
        {"dssm": 0.675, "+mlp": 0.671, "+fm": 0.686},  # +mlp loses offline here
        {("+mlp", "dssm"): (-1.0, 1e-4), ("+fm", "+mlp"): (0.5, 0.2)},  # +fm not significant
    )
    table = replicate_table({"s0": a, "s1": b}).set_index("rung")
    assert list(table.index) == ["+mlp", "+fm"]  # the oracle row is no rung comparison
    assert table.loc["+mlp", "ΔGAUC ‰ s0"] == pytest.approx(5.0)
    assert table.loc["+mlp", "ΔGAUC ‰ s1"] == pytest.approx(-4.0)
    assert table.loc["+fm", "lift % s1"] == 0.5
    assert not table.loc["+mlp", "offline sign agrees"] and table.loc["+fm", "offline sign agrees"]
    assert table.loc["+mlp", "online agrees"]  # same sign, both significant
    assert not table.loc["+fm", "online agrees"]  # same sign, one not significant
    assert "offline agrees" not in table  # ladders from before the offline intervals
    with_intervals = {}
    for label, (ladder, tests) in {"s0": a, "s1": b}.items():
        widths = {"+mlp": 1.0, "+fm": 5.0 if label == "s1" else 1.0}  # s1's +fm: 15 ‰ ± 5 ‰, clear
        with_intervals[label] = (ladder, tests.assign(**{"ΔGAUC ±95% ‰": tests["rung"].map(widths)}))
    with_intervals["s2"] = (a[0], a[1].assign(**{"ΔGAUC ±95% ‰": 20.0}))  # +fm 5 ‰ ± 20 ‰: not clear
    table = replicate_table(with_intervals).set_index("rung")
    assert table.loc["+fm", "±95% s1"] == 5.0 and table.loc["+fm", "offline sign agrees"]
    assert not table.loc["+fm", "offline agrees"]  # s2's interval covers 0
    assert (
        not replicate_table({"s0": with_intervals["s0"], "s1": with_intervals["s1"]})
        .set_index("rung")
        .loc["+mlp", "offline agrees"]
    )  # opposite signs
    assert (
        replicate_table({"s0": with_intervals["s0"], "s1": with_intervals["s1"]})
        .set_index("rung")
        .loc["+fm", "offline agrees"]
    )
