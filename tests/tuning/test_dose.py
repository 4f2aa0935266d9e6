"""The dose-response sweep: its worlds, its rungs, and the command end to end on a tiny world."""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from common.config import dumps_toml
from policies.config import read_raw
from policies.train import parse_config
from simulator.config import PHENOMENON_KNOBS, SMALL, WorldConfig
from tuning import dose_cli
from tuning.dose import (
    TECHNIQUE_NAMES,
    TECHNIQUES,
    level_world,
    plot_points,
    proposed_strengths,
    seed_summary,
    sweep_worlds,
    world_runs,
)
from tuning.ladder import ladder_configs

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "models"
BY_NAME = {t.name: t for t in TECHNIQUES}


def test_off_is_the_base_world_and_each_level_moves_only_its_knob():
    proposed = proposed_strengths()
    for knob in {k for t in TECHNIQUES for k in t.knobs}:
        assert level_world(SMALL, knob, "off", proposed) == SMALL
        for level, multiple in (("default", 1), ("strong", 2)):
            world = level_world(SMALL, knob, level, proposed)
            changed = {
                f.name
                for f in dataclasses.fields(WorldConfig)
                if getattr(world, f.name) != getattr(SMALL, f.name)
            }
            assert changed == {knob}
            assert getattr(world, knob) == multiple * proposed[knob]


def test_proposed_strengths_are_the_feed_worlds_knobs():
    proposed = proposed_strengths()
    assert set(proposed) == set(PHENOMENON_KNOBS)
    feed = WorldConfig.from_toml(ROOT / "configs" / "world_feed.toml")
    assert all(getattr(feed, knob) == proposed[knob] for knob in PHENOMENON_KNOBS)


def test_sweep_measures_every_technique_on_every_default_world_and_only_its_own_strong_ones():
    worlds = sweep_worlds(TECHNIQUES)
    assert worlds[0].name == "off" and worlds[0].techniques == TECHNIQUES
    n_knobs = len({knob for t in TECHNIQUES for knob in t.knobs})
    assert n_knobs == 5
    assert len({w.name for w in worlds}) == len(worlds) == 1 + 2 * n_knobs
    for world in worlds[1:]:
        if world.level == "default":
            assert world.techniques == TECHNIQUES
        else:
            assert world.level == "strong"
            assert world.techniques == tuple(t for t in TECHNIQUES if world.knob in t.knobs)


def test_each_technique_rung_is_the_rung_before_plus_the_technique():
    base = tomllib.loads((CONFIGS / "coarse_dssm.toml").read_text())
    ladder = ladder_configs(base, "fine.toml", Path("out"))
    name, mlp = BY_NAME["mlp"].rung_configs(ladder, SMALL)
    assert name == "fm+mlp"
    assert {**mlp, "out": ""} == {**ladder["+mlp"], "out": ""}  # the ladder's own +mlp rung
    assert mlp["out"] == str(Path("out") / "fm+mlp.pt")
    for logs_dwell, buckets in ((SMALL, None), (SMALL.replace(history_dwell_separation=1.5), 8)):
        _, nova = BY_NAME["nova"].rung_configs(ladder, logs_dwell)
        assert nova["model"] == {**ladder["+mlp"]["model"], "nova": True} | (
            {"dwell_buckets": buckets} if buckets else {}
        )
    assert "distill" not in ladder["+mlp"]  # the pairs need no teacher outputs


def test_the_command_offers_the_techniques_of_the_module():
    assert dose_cli.TECHNIQUES == TECHNIQUE_NAMES


TINY_WORLD = """[world]
n_items = 600
n_users = 200
n_categories = 5
brands_per_category = 4
recall_size = 100
logging_coarse_size = 30
i2i_neighbors = 10
"""


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """The command on a 200-user world with dim-8 one-epoch models, twice in the same folder."""
    folder = tmp_path_factory.mktemp("dose")
    (folder / "world.toml").write_text(TINY_WORLD)
    for name in ("coarse_dssm", "fine"):
        raw = read_raw(CONFIGS / f"{name}.toml")
        raw["model"]["dim"] = 8
        raw["train"]["epochs"] = 1
        (folder / f"{name}.toml").write_text(dumps_toml(raw))
    argv = [
        "--world", str(folder / "world.toml"), "--base", str(folder / "coarse_dssm.toml"),
        "--fine", str(folder / "fine.toml"), "--out", str(folder / "out"), "--users", "200",
        "--eval-sessions", "10", "--techniques", "nova", "senet_bilinear",
    ]  # fmt: skip
    return folder / "out", argv


@pytest.mark.slow  # seven worlds logged and trained end to end: ~1.5 min
def test_the_command_writes_one_row_per_technique_and_world_and_reuses_its_files(tiny_sweep, capsys):
    out, argv = tiny_sweep
    assert dose_cli.main(argv) == 0
    first = capsys.readouterr()
    table = pd.read_csv(out / "dose.csv")
    rows = list(zip(table["technique"], table["knob"], table["level"], table["own"], strict=True))
    assert rows == [
        ("nova", "none", "off", True),
        ("nova", "history_dwell_separation", "default", True),
        ("nova", "history_dwell_separation", "strong", True),
        ("nova", "history_noise_popular", "default", True),
        ("nova", "history_noise_popular", "strong", True),
        ("nova", "field_interaction_std", "default", False),
        ("senet_bilinear", "none", "off", True),
        ("senet_bilinear", "field_interaction_std", "default", True),
        ("senet_bilinear", "field_interaction_std", "strong", True),
        ("senet_bilinear", "history_dwell_separation", "default", False),
        ("senet_bilinear", "history_noise_popular", "default", False),
    ]
    separation = proposed_strengths()["history_dwell_separation"]
    assert table.loc[2, "strength"] == 2 * table.loc[1, "strength"] == 2 * separation
    assert (table["Δexact_clicks ±95%"] > 0).all() and (table["ΔGAUC ±95% ‰"] > 0).all()
    assert "training coarse model" in first.err and "[7/7] world field_interaction_std-strong" in first.err
    assert (out / "dose.md").read_text().count("\n| ") == 1 + len(rows)  # header and rows
    assert (out / "dose.png").stat().st_size > 10_000

    assert dose_cli.main(argv) == 0  # again: every log folder and checkpoint reused, same table
    assert "training" not in capsys.readouterr().err
    pd.testing.assert_frame_equal(pd.read_csv(out / "dose.csv"), table)

    # Replicates: seed 0 (the base config's) reproduces the rows above, seed 7 trains others
    # on the same logs and bench; the summary and the figure are over the seeds
    senet = [*argv[: argv.index("--techniques")], "--techniques", "senet_bilinear", "--train-seeds", "0", "7"]
    assert dose_cli.main(senet) == 0
    replicates = pd.read_csv(out / "dose.csv")
    assert list(replicates["train_seed"]) == [0, 7] * 3  # off, its knob at default and strong
    same = table[(table["technique"] == "senet_bilinear") & table["own"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(replicates.iloc[::2].reset_index(drop=True), same)
    assert (replicates["gauc_before"].iloc[::2].to_numpy() != replicates["gauc_before"].iloc[1::2]).all()
    text = (out / "dose.md").read_text()
    assert "training seeds 0, 7" in text and "Per training seed:" in text
    assert text.count("\n| ") == 2 + 3 + 6  # two headers, 3 sweep points, 6 seed rows


def test_the_seed_summary_is_the_mean_and_range_over_seeds_and_counts_resolved_gains():
    point = {"technique": "mlp", "knob": "none", "level": "off", "own": True, "strength": 0.0}
    rows = [
        point | {"train_seed": seed, "ΔGAUC ‰": gauc, "Δexact_clicks": clicks, "Δexact_clicks ±95%": 0.01}
        for seed, gauc, clicks in ((0, 1.0, 0.05), (1, -2.0, -0.03), (2, 4.0, 0.005))
    ]
    other = point | {"knob": "budget_penalty", "level": "default", "own": False}
    rows.append(other | {"train_seed": 0, "ΔGAUC ‰": 3.0, "Δexact_clicks": 0.0, "Δexact_clicks ±95%": 0.01})
    table = pd.DataFrame(rows)
    summary = seed_summary(table).set_index("knob")
    off = summary.loc["none"]
    assert (off["seeds"], off["gauc_mean"], off["gauc_min"], off["gauc_max"]) == (3, 1.0, -2.0, 4.0)
    assert off["clicks_mean"] == pytest.approx(0.025 / 3)
    assert (off["seeds_up"], off["seeds_down"]) == (1, 1)  # 0.005 +- 0.01 resolves neither way
    assert summary.loc["budget_penalty", "seeds"] == 1
    points = plot_points(table).set_index("knob").loc["none"]
    assert points["gauc_lo"] == 3.0 and points["gauc_hi"] == 3.0  # mean 1 in [-2, 4]
    single = plot_points(table.iloc[:1])
    assert single["clicks_lo"].iloc[0] == single["clicks_hi"].iloc[0] == 0.01
    assert single["gauc_lo"].iloc[0] == 0.0  # a table from before the offline interval
    single = plot_points(table.iloc[:1].assign(**{"ΔGAUC ±95% ‰": 2.5}))
    assert single["gauc_lo"].iloc[0] == single["gauc_hi"].iloc[0] == 2.5


def test_every_world_trains_the_same_fine_ranker_and_nova_reads_dwell_only_where_logged(tmp_path):
    args = argparse.Namespace(
        fine=str(ROOT / "configs" / "models" / "fine.toml"),
        base=str(ROOT / "configs" / "models" / "coarse_dssm.toml"),
        users=200,
        epochs=None,
    )
    for separation in (0.0, 1.5):
        world = SMALL.replace(history_dwell_separation=separation)
        fine, rungs = world_runs(args, world, tmp_path / str(separation), TECHNIQUES)
        assert "dwell_buckets" not in fine.get("model", {})  # the feed config's fine ranker reads dwell
        parse_config(fine)
        nova = rungs["mlp+nova"]["model"]
        assert nova.get("dwell_buckets") == (None if separation == 0 else 8)
