"""Tiny searches on Ray Tune (SMALL world): outputs, best.toml as a run_ab.py arm, failed
trials, determinism, resume after an interruption, the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ray import tune

from policies.data import split_by_user
from policies.train import ensure_trained, load_config
from simulator.config import ConfigError
from tuning.__main__ import EXIT_CONFIG, EXIT_EXISTS, main
from tuning.config import parse_config as parse_search_config
from tuning.search import prepare, run_search

ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = (
    "results.csv",
    "results.parquet",
    "epochs.csv",
    "epochs.parquet",
    "agreement.csv",
    "agreement.txt",
    "objective.png",
    "offline_vs_online.png",
    "agreement.png",
    "epochs.png",
    "best.toml",
    "summary.json",
)


def test_tiny_search_runs_on_ray_tune_and_writes_its_outputs(optuna_search):
    _, run_dir, config = optuna_search
    for name in OUTPUTS:
        assert (run_dir / name).is_file(), name
    table = pd.read_parquet(run_dir / "results.parquet")
    assert len(table) == config.search.num_samples == len(pd.read_csv(run_dir / "results.csv"))
    assert set(table["status"]) <= {"finished", "stopped"}
    finished = table[table["status"] == "finished"]
    assert len(finished) >= 1 and (finished["epochs"] == config.trial.epochs).all()
    assert (finished["objective_lo"] <= finished["objective"]).all()
    assert (finished["objective"] <= finished["objective_hi"]).all()
    assert finished["objective"].equals(finished["online/clicks_lift"])
    for column in ("offline/gauc", "offline/ndcg@10", "offline/hitrate_in@100", "offline/hitrate_global@100"):
        assert finished[column].between(0, 1).all(), column
    epochs = pd.read_parquet(run_dir / "epochs.parquet")
    assert set(epochs.loc[epochs["epoch"] == 1, "trial_id"]) == set(table["trial_id"])  # what ASHA saw
    agreement = pd.read_csv(run_dir / "agreement.csv")
    assert {"gauc", "ndcg@10", "hitrate_in@100", "hitrate_global@100"} <= set(agreement["metric"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["best"]["trial_id"] == finished.loc[finished["objective"].idxmax(), "trial_id"]


def test_best_toml_is_the_best_trials_config_and_reuses_its_checkpoint(optuna_search):
    outcome, run_dir, _ = optuna_search
    table = outcome.table
    best = table.loc[table["objective"].astype(float).idxmax()]
    run = load_config(run_dir / "best.toml")
    assert run.out == best["checkpoint"]
    before = Path(run.out).stat().st_mtime_ns
    assert Path(ensure_trained(run_dir / "best.toml", progress=False, log=lambda *_: None)) == Path(run.out)
    assert Path(run.out).stat().st_mtime_ns == before  # not retrained
    assert run.model.dim == best["model.dim"] and str(run.train.loss) == best["train.loss"]


def test_best_toml_runs_as_a_run_ab_arm(optuna_search, small_world):
    from abtest.arms import resolve_arms  # noqa: PLC0415
    from abtest.config import parse_config  # noqa: PLC0415
    from abtest.experiment import run_experiment  # noqa: PLC0415

    outcome, run_dir, _ = optuna_search
    arms = {
        "control": {"coarse": outcome.control, "fine": outcome.fine, "coarse_size": 100},
        "tuned": {"coarse": str(run_dir / "best.toml"), "fine": outcome.fine, "coarse_size": 100},
    }
    config = parse_config(
        {
            "name": "tuned-arm",
            "world": "small",
            "arms": arms,
            "traffic": {"users": 200, "days": 1, "through": "inprocess", "workers": 1, "shard_users": 100},
            "pre_period": {"source": "none"},
            "stats": {"funnel_users": 20},
        }
    )
    with pytest.raises(ConfigError, match="training config"):
        run_experiment(config, through="inprocess", workers=1, world=small_world)  # the engine never trains
    resolved = resolve_arms(config, small_world.config, log=lambda *_: None)
    result = run_experiment(resolved, through="inprocess", workers=1, world=small_world, log=lambda *_: None)
    assert set(result.to_pandas()["treatment"]) == {"tuned"}


def _by_index(table: pd.DataFrame) -> pd.DataFrame:
    return table.set_index("index").sort_index()


def test_a_failing_trial_is_retried_and_reported_while_the_search_goes_on(random_search):
    table = _by_index(random_search[0].table)
    failed = table[table["train.batch_size"] == 0]
    assert len(failed) >= 1
    assert (failed["status"] == "failed").all()
    assert (failed["attempts"] == 2).all()  # the first run and max_failures = 1 retry
    assert failed["error"].str.contains("batch_size").all()
    assert (table.loc[table["train.batch_size"] > 0, "status"] == "finished").all()


def test_a_trial_with_the_base_settings_reproduces_the_control(random_search):
    table = random_search[0].table
    base = table[(table["train.batch_size"] == 128) & ~table["model.fm_cross"].astype(bool)]
    assert len(base) >= 1
    assert (base[["objective", "objective_lo", "objective_hi"]].to_numpy() == 0.0).all()
    lifts = base.filter(regex=r"^online/.*_lift(_lo|_hi)?$").to_numpy()
    assert (lifts[np.isfinite(lifts)] == 0.0).all()  # same model, users and random numbers
    assert (base["online/clicks_trial"] == base["online/clicks_control"]).all()


SETTINGS = ["train.batch_size", "model.fm_cross", "status"]


def _results(table: pd.DataFrame) -> pd.DataFrame:
    columns = SETTINGS + [c for c in table.columns if c.startswith(("offline/", "online/", "objective"))]
    return _by_index(table)[columns]


def test_the_same_seed_gives_the_same_trials_and_results(random_search, random_search_again):
    first, again = _results(random_search[0].table), _results(random_search_again[0].table)
    pd.testing.assert_frame_equal(first, again)
    assert first["status"].eq("finished").sum() >= 2


class InterruptOnce(tune.Callback):
    """Sends this process SIGINT (Ctrl+C) when the first trial ends, once: ``marker``
    remembers it, since Tune restores a search's callbacks when it resumes."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        if not Path(self.marker).exists():
            Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGINT)


def test_an_interrupted_search_resumes_to_the_same_results(
    ray_session, random_config, random_search, tmp_path
):
    run_dir = tmp_path / "tiny-random"
    quiet = {"log": lambda *_: None}
    interrupted = run_search(
        random_config, run_dir, callbacks=[InterruptOnce(str(tmp_path / "sent"))], **quiet
    )
    assert interrupted.interrupted
    assert (interrupted.table["status"] == "finished").sum() < random_config.search.num_samples
    resumed = run_search(random_config, run_dir, resume=True, **quiet)
    assert not resumed.interrupted
    pd.testing.assert_frame_equal(_results(resumed.table), _results(random_search[0].table))


def test_cli_help_lists_the_options():
    out = subprocess.run(
        [sys.executable, "-m", "tuning", "--help"], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    for option in ("--config", "--resume", "--force", "--num-samples", "--searcher", "--runs-dir"):
        assert option in out


def test_cli_refuses_a_bad_config_and_an_existing_run(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "missing.toml")]) == EXIT_CONFIG
    (tmp_path / "small").mkdir()
    config = str(ROOT / "configs" / "tune_small.toml")
    assert main(["--config", config, "--runs-dir", str(tmp_path)]) == EXIT_EXISTS
    assert main(["--config", config, "--runs-dir", str(tmp_path), "--resume"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "--force" in err and "nothing to resume" in err


def test_results_table_reads_back_without_ray(optuna_search):
    outcome, run_dir, _ = optuna_search
    analysis = tune.ExperimentAnalysis(str(run_dir / "tune"))
    frame = analysis.dataframe()
    assert len(frame) == len(outcome.table)
    assert np.isin(outcome.table["trial_id"], frame["trial_id"]).all()


def test_a_day_split_search_evaluates_every_users_last_logged_day(tiny_raw, tmp_path):
    """[data] split = "day" (the time split): the shared offline evaluation is on the last logged
    day and the online A/B on the day after, for users logged on that last day."""
    raw = tiny_raw(name="tiny-day")
    data = raw["trial"]["base"]["data"]
    raw["trial"]["base"]["data"] = {
        **data,
        "logs": str(tmp_path / "logs"),
        "users": 300,
        "days": 2,
        "split": "day",
    }
    raw["objective"]["users"] = 40
    shared = prepare(parse_search_config(raw, "day split"), tmp_path / "run", log=lambda *_: None).shared
    samples = shared.data.samples
    last_day_users = np.unique(samples.loc[samples["day"] == 1, "user_id"])
    assert (shared.eval_set.keys.day == 1).all()
    assert np.isin(shared.eval_set.keys.user, last_day_users).all()
    assert (shared.keys.day == 2).all() and np.isin(shared.keys.user, last_day_users).all()
    share, seed = shared.template["data"]["held_out_share"], shared.template["data"]["split_seed"]
    held_out_by_user = split_by_user(shared.data, share, seed)[1]  # what a user split would evaluate
    assert not np.isin(shared.keys.user, held_out_by_user).all()
