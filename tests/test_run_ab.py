"""run_ab.py end to end, as a subprocess: smoke run, run folder safety, SRM gate, resume."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomli_w
from scipy import stats

from abtest.config import parse_config
from abtest.traffic import plan_shards
from run_ab import _shard_lines, build_parser
from simulator import SMALL, World

ROOT = Path(__file__).resolve().parents[1]

TINY = """
name = "tiny"
world = "small"

[arms.control]
coarse = "popularity"
fine = "oracle"
coarse_size = 100

[arms.treatment]
coarse = "oracle"
fine = "oracle"
coarse_size = 100

[traffic]
users = {users}
days = 2
through = "inprocess"
workers = 1
shard_users = {shard_users}

[pre_period]
source = "simulate"

[stats]
funnel_users = 50
"""


def write_config(folder: Path, users: int = 300, shard_users: int = 100) -> Path:
    path = folder / "tiny.toml"
    path.write_text(TINY.format(users=users, shard_users=shard_users))
    return path


def run_ab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "run_ab.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One tiny run: 300 SMALL-world users, 2 days, baselines, in process (~10 s)."""
    folder = tmp_path_factory.mktemp("run_ab")
    config = write_config(folder)
    return folder, run_ab("--config", str(config), "--runs-dir", "runs", cwd=folder)


def test_help_explains_every_option() -> None:
    parser = build_parser()
    text = parser.format_help()
    for action in parser._actions:
        assert action.help, f"{action.dest} has no help"
        for flag in action.option_strings:
            assert flag in text
    for status in ("0 success", "1 the sample-ratio-mismatch gate failed", "3 the run folder exists", "130"):
        assert status in " ".join(text.split())
    out = subprocess.run(
        [sys.executable, str(ROOT / "run_ab.py"), "--help"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0 and "--resume" in out.stdout


def test_a_tiny_run_writes_the_run_folder(smoke) -> None:
    folder, out = smoke
    assert out.returncode == 0, out.stderr
    run = folder / "runs" / "tiny"
    for name in (
        "config.toml",
        "results.json",
        "per_user.parquet",
        "user_days.parquet",
        "daily.parquet",
        "report.md",
        "report.html",
        "lifts.png",
        "daily.png",
        "funnel.png",
    ):
        assert (run / name).is_file(), name
    assert not list(run.rglob(".*tmp-*")), "a temporary file was left behind"
    assert not (run / "ray.log").exists()  # one worker in process: no Ray, no Ray log
    results = json.loads((run / "results.json").read_text())
    assert results["srm"]["passed"] and results["through"] == "inprocess"
    assert {r["metric"] for r in results["records"]} >= {"pctr", "depth", "clicks"}
    assert set(results["timings"]) >= {"models", "world", "traffic", "statistics", "report", "total"}
    assert len(pd.read_parquet(run / "per_user.parquet")) == 300
    assert len(pd.read_parquet(run / "user_days.parquet")) == 600
    assert parse_config(__import__("tomllib").loads((run / "config.toml").read_text())).name == "tiny"


def test_results_and_report_record_the_code_environment_and_times(smoke) -> None:
    folder, _ = smoke
    run = json.loads((folder / "runs" / "tiny" / "results.json").read_text())["run"]
    git = ["git", "-C", str(ROOT), "rev-parse", "HEAD"]
    head = subprocess.run(git, capture_output=True, text=True, check=False)
    if head.returncode == 0:
        assert run["git_commit"].removesuffix("-dirty") == head.stdout.strip()
    assert run["python"] == platform.python_version() and run["cpu_count"] == os.cpu_count()
    assert run["numpy"] == np.__version__ and run["torch"] and run["ray"]
    started, finished = (datetime.datetime.fromisoformat(run[k]) for k in ("started", "finished"))
    assert started.utcoffset() == datetime.timedelta(0) and started <= finished
    assert finished - started < datetime.timedelta(minutes=10)
    report = (folder / "runs" / "tiny" / "report.md").read_text()
    assert f"started {run['started']}, finished {run['finished']} (UTC)" in report
    assert f"git commit {run['git_commit']}" in report


def test_progress_is_a_line_per_stage_and_shard_when_stdout_is_not_a_terminal(smoke) -> None:
    _, out = smoke
    lines = out.stdout.splitlines()
    shards = [line for line in lines if re.fullmatch(r"shard \d+/9 done, 100 user-days, \d+ s", line)]
    assert [line.split()[1] for line in shards] == [f"{i}/9" for i in range(1, 10)]  # 3 x (1 pre + 2 days)
    assert lines.index("traffic: 9 of 9 shards to run") < lines.index(shards[0])
    assert lines.index(shards[-1]) < lines.index("statistics done; writing the report")
    assert lines.index("statistics done; writing the report") < next(
        i for i, line in enumerate(lines) if line.startswith("SRM gate")
    )


def test_shard_lines_count_only_the_user_days_of_arrived_users(tmp_path: Path) -> None:
    """With arrivals a shard's users who have not arrived by its day have no session: its line
    counts the others (the progress bar's count), checked against the world's arrival days."""
    config = SMALL.replace(arrival_days=3, new_user_share_per_day=0.3)
    world_file = tmp_path / "world.toml"
    world_file.write_text(tomli_w.dumps({"world": config.to_dict()}))
    raw = TINY.format(users=300, shard_users=50).replace('world = "small"', f"world = {str(world_file)!r}")
    experiment = parse_config(tomllib.loads(raw), "tiny")
    lines: list[str] = []
    on_shard = _shard_lines(experiment, tmp_path, False, lines.append)
    shards = plan_shards(experiment)
    for shard in shards:
        on_shard(shard)
    arrival = World(config).user_arrival_day
    expected = [int((arrival[s.lo : s.hi] <= s.day).sum()) for s in shards]
    printed = [int(re.fullmatch(r"shard \d+/18 done, (\d+) user-days, \d+ s", line)[1]) for line in lines[1:]]
    assert printed == expected
    assert 0 < sum(expected) < sum(s.n_users for s in shards)  # the knob leaves some user-days out


@pytest.mark.slow
def test_ray_output_goes_to_the_run_folder_not_the_console(tmp_path: Path) -> None:
    """~20-40 s: the traffic on 2 Ray actors; nothing of Ray reaches stdout or stderr."""
    config = write_config(tmp_path, users=200)
    out = run_ab("--config", str(config), "--runs-dir", "runs", "--workers", "2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    noise = re.compile(r"\bray\b|raylet|\bserve\b|\bINFO\b|\bWARNING\b", re.IGNORECASE)
    assert [line for line in (out.stdout + out.stderr).splitlines() if noise.search(line)] == []
    assert len(re.findall(r"^shard \d+/6 done", out.stdout, re.MULTILINE)) == 6
    assert "Started a local Ray instance" in (tmp_path / "runs" / "tiny" / "ray.log").read_text()


def test_the_srm_gate_is_shown_before_the_results(smoke) -> None:
    folder, out = smoke
    assert out.stdout.index("SRM gate") < out.stdout.index("pctr")
    report = (folder / "runs" / "tiny" / "report.md").read_text()
    assert report.index("Sample-ratio mismatch gate") < report.index("## Results")


def test_an_existing_run_folder_is_not_overwritten_without_force(smoke) -> None:
    folder, _ = smoke
    config = str(folder / "tiny.toml")
    results = folder / "runs" / "tiny" / "results.json"
    before = results.read_bytes(), results.stat().st_mtime_ns
    out = run_ab("--config", config, "--runs-dir", "runs", cwd=folder)
    assert out.returncode == 3 and "exists" in out.stderr and "--force" in out.stderr
    assert (results.read_bytes(), results.stat().st_mtime_ns) == before
    out = run_ab("--config", config, "--runs-dir", "runs", "--resume", "--users", "200", cwd=folder)
    assert out.returncode == 2 and "differs" in out.stderr
    assert (results.read_bytes(), results.stat().st_mtime_ns) == before
    # how the traffic runs is no part of the results: a finished run "resumes" to itself
    out = run_ab("--config", config, "--runs-dir", "runs", "--resume", "--workers", "2", cwd=folder)
    assert out.returncode == 0, out.stderr
    after = json.loads(results.read_text())
    assert after["records"] == json.loads(before[0])["records"] and after["workers"] == 2


def test_force_replaces_a_run_folder(tmp_path: Path) -> None:
    config = str(write_config(tmp_path, users=100))
    stale = tmp_path / "runs" / "tiny" / "stale.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("from an older run")
    out = run_ab("--config", config, "--runs-dir", "runs", "--force", "--days", "1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert not stale.exists() and (tmp_path / "runs" / "tiny" / "results.json").is_file()


@pytest.mark.slow
def test_train_seeds_run_the_experiment_per_seed_and_line_their_lifts_up(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(
        'kind = "coarse"\nout = "c.pt"\n[data]\nlogs = "logs"\nworld = "small"\nusers = 150\n'
        "[model]\ndim = 4\n[train]\nepochs = 1\neval_lists = 0\nseed = 0\n"
    )
    text = write_config(tmp_path, users=100).read_text().replace('coarse = "oracle"', 'coarse = "c.toml"')
    config = tmp_path / "tiny.toml"
    config.write_text(text)
    out = run_ab(
        "--config", str(config), "--runs-dir", "runs", "--days", "1", "--train-seeds", "0", "1", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "runs" / "tiny-train-seeds"
    table = pd.read_csv(folder / "replicates.csv").set_index("metric")
    for seed, model in ((0, tmp_path / "c.pt"), (1, folder / "models" / "seed1" / "c.pt")):
        run = json.loads((folder / f"seed{seed}" / "results.json").read_text())
        assert run["versions"]["treatment"]["coarse"] == str(model.resolve())  # seed 0: the config's own
        clicks = next(r for r in run["records"] if r["metric"] == "clicks")
        assert table.loc["clicks", f"lift seed{seed}"] == pytest.approx(clicks["rel_effect"])
    assert table.loc["clicks", "lift seed0"] != table.loc["clicks", "lift seed1"]  # another model
    assert (folder / "replicates.png").read_bytes().startswith(b"\x89PNG")
    assert (
        "Training-seed replicates" in (folder / "replicates.md").read_text() and "replicates:" in out.stdout
    )
    again = run_ab("--config", str(config), "--runs-dir", "runs", "--train-seeds", "0", cwd=tmp_path)
    assert again.returncode == 3 and "exists" in again.stderr  # a seed's folder is not overwritten


def test_an_invalid_config_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text() + "\n[report]\nstyle = 'fancy'\n")
    out = run_ab("--config", str(path), "--runs-dir", "runs", cwd=tmp_path)
    assert out.returncode == 2
    assert "tiny.toml report: unknown key" in out.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("append", "extra", "message"),
    [  # the tiny config ends in its [stats] table
        ('cuped = "no"\n', (), r"tiny\.toml \[stats\] cuped: must be true or false"),
        ('sequential = "off"\n', (), r"tiny\.toml \[stats\] sequential: must be true or false"),
        ("alpah = 0.1\n", (), r"\[stats\] alpah: unknown key; did you mean 'alpha'\?"),
        ('[assignment]\naa = "false"\n', (), r"tiny\.toml \[assignment\] aa: must be true or false"),
        ("", ("--set", "description=5"), r"tiny\.toml description: must be a string, got 5"),
        ("", ("--set", "traffic.userz=5"), r"\[traffic\] userz: unknown key; did you mean 'users'\?"),
        ("", ("--users", "0"), r"\[traffic\] users: must be >= 4, got 0"),
        ("[traffic\n", (), r"tiny\.toml: is not valid TOML: .*line"),
    ],
)
def test_bad_inputs_are_one_line_and_exit_2_before_any_folder(tmp_path: Path, append, extra, message) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text() + append)
    out = run_ab("--config", str(path), "--runs-dir", "runs", *extra, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and re.search(message, out.stderr), out.stderr
    assert not (tmp_path / "runs").exists()


def test_a_world_file_with_a_syntax_error_exits_2(tmp_path: Path) -> None:
    (tmp_path / "w.toml").write_text("[world]\nn_items = = 1\n")
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('world = "small"', 'world = "w.toml"'))
    out = run_ab("--config", str(path), "--runs-dir", "runs", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1
    assert re.search(r"tiny\.toml world: .*w\.toml: is not valid TOML: .*line 2", out.stderr), out.stderr
    assert not (tmp_path / "runs").exists()


def test_a_run_folders_config_reloads_for_resume(tmp_path: Path, monkeypatch) -> None:
    from run_ab import _config, _run_dir  # noqa: PLC0415

    path = write_config(tmp_path)
    path.write_text('description = """two lines:\nΔ clicks ≥ 0 ✓ "quoted" \\\\ end"""\n' + path.read_text())
    monkeypatch.chdir(tmp_path)
    argv = ["--config", str(path), "--runs-dir", "runs", "--users", "200"]
    args = build_parser().parse_args(argv)
    config = _config(args)
    assert config.description.startswith("two lines:\n") and config.traffic.users == 200
    run_dir = _run_dir(args, config, Path(args.runs_dir))
    resume = build_parser().parse_args(
        ["--config", str(path), "--runs-dir", "runs", "--users", "200", "--resume"]
    )
    assert _run_dir(resume, _config(resume), Path(resume.runs_dir)) == run_dir  # config.toml reloads


# A world with many users and little else: a 51/49 split needs many users to be detectable.
# The χ² statistic of a 51/49 split of N users is noncentral with λ = N·Σ(s'−s)²/s = 0.0004·N;
# the gate (p < 0.001, χ²₁ > 10.83) trips with probability 0.32 at N = 20,000 and 0.95 at
# N = 60,000, so the end-to-end check uses 60,000 users (and with this salt it does trip).
CROWD = """
[world]
n_items = 2000
n_users = 60000
n_categories = 10
brands_per_category = 5
recall_size = 100
logging_coarse_size = 50
i2i_neighbors = 10
history_len = 10
seq_window = 5
max_pages = 3
"""


@pytest.mark.slow
def test_an_injected_51_49_split_trips_the_srm_gate(tmp_path: Path) -> None:
    n = 60_000
    critical = stats.chi2.isf(0.001, 1)
    assert stats.ncx2.sf(critical, 1, 0.0004 * n) > 0.9  # the size makes the check meaningful
    (tmp_path / "crowd.toml").write_text(CROWD)
    (tmp_path / "srm.toml").write_text(
        f"""
name = "srm"
world = "crowd.toml"
[arms.control]
coarse = "random"
fine = "popularity"
coarse_size = 20
[arms.treatment]
coarse = "random"
fine = "popularity"
coarse_size = 20
[traffic]
users = {n}
through = "inprocess"
workers = 1
shard_users = 20000
[pre_period]
source = "none"
[assignment]
shares = [0.5, 0.5]
traffic_shares = [0.51, 0.49]
[stats]
funnel_users = 0
"""
    )
    out = run_ab("--config", "srm.toml", "--runs-dir", "runs", cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert "SRM gate (chi-squared, fails at p < 0.001): FAILED" in out.stdout
    assert "results withheld" in out.stdout and "pctr" not in out.stdout
    results = json.loads((tmp_path / "runs" / "srm" / "results.json").read_text())
    assert not results["srm"]["passed"]
    assert results["srm"]["counts"]["control"] > results["srm"]["counts"]["treatment"]
    assert "SRM gate FAILED" in (tmp_path / "runs" / "srm" / "report.md").read_text()
    # the same folder, analysed again with the override: every shard is reused
    out = run_ab("--config", "srm.toml", "--runs-dir", "runs", "--resume", "--ignore-srm", cwd=tmp_path)
    assert out.returncode == 0 and "pctr" in out.stdout


@pytest.fixture
def sigint_handled():
    """A job started in the background by a non-interactive shell inherits SIGINT ignored, and
    so would the run it starts. With a handler here, the child starts with the default
    disposition (exec resets handled signals), i.e. Python's KeyboardInterrupt."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _start(folder: Path, config: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run_ab.py"), "--config", str(config), "--runs-dir", "runs", *extra],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_shards(process: subprocess.Popen, shards: Path, n: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        found = len(list(shards.glob("*.parquet"))) if shards.is_dir() else 0
        if found >= n:
            return found
        time.sleep(0.02)
    raise AssertionError(f"no {n} shards before the run ended or timed out (status {process.poll()})")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["killed", "ctrl-c"])
def test_an_interrupted_run_resumes_to_the_uninterrupted_results(
    smoke, tmp_path: Path, sig, sigint_handled
) -> None:
    # The smoke run (300 users, shards of 100) is the uninterrupted reference; here the same
    # experiment in shards of 5 users (shard sizes never change results) is interrupted.
    reference_dir = smoke[0] / "runs" / "tiny"
    config = write_config(tmp_path, shard_users=5)
    process = _start(tmp_path, config, "--no-progress")
    shards = tmp_path / "runs" / "tiny" / "shards"
    done = _wait_for_shards(process, shards, 1)  # signal as early as possible: tiny shards are fast
    os.kill(process.pid, sig)
    process.wait(timeout=60)
    if sig == signal.SIGINT:
        assert process.returncode == 130 and "--resume" in process.stderr.read()
    assert done < 180  # 60 shards per day x (1 pre-period + 2 days)
    assert not (shards.parent / "results.json").exists()  # the run was cut short
    out = run_ab("--config", str(config), "--runs-dir", "runs", "--resume", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run = tmp_path / "runs" / "tiny"
    for name in ("per_user.parquet", "user_days.parquet", "daily.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(run / name), pd.read_parquet(reference_dir / name))
    ours, reference = (json.loads((d / "results.json").read_text()) for d in (run, reference_dir))
    assert ours["records"] == reference["records"] and ours["funnel"] == reference["funnel"]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        pytest.param(
            'coarse = "popularity"',
            'coarse = "missing.pt"',
            r"missing\.pt",
        ),
        ('coarse = "popularity"', 'coarse = "popularty"', r"popularty"),
        pytest.param(
            "coarse_size = 100\n\n[arms.treatment]",
            "coarse_size = 5001\n\n[arms.treatment]",
            r"coarse_size",
        ),
        ('world = "small"', 'world = "nowhere.toml"', r"nowhere\.toml"),
    ],
    ids=["missing-checkpoint", "unknown-spec", "coarse-above-recall", "missing-world"],
)
def test_bad_specs_and_sizes_exit_2_before_any_folder(tmp_path: Path, old, new, message) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace(old, new, 1))
    out = run_ab("--config", str(path), "--runs-dir", "runs", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and re.search(message, out.stderr), out.stderr
    assert not (tmp_path / "runs").exists()


def test_a_missing_config_file_exits_2(tmp_path: Path) -> None:
    out = run_ab("--config", str(tmp_path / "none.toml"), "--runs-dir", "runs", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "none.toml" in out.stderr, out.stderr


def test_an_internal_error_exits_4_with_one_line_and_the_traceback_in_the_run_folder(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    import abtest.experiment  # noqa: PLC0415
    import run_ab as cli  # noqa: PLC0415

    def broken(*args, **kwargs):
        raise RuntimeError("lost the cluster\nsecond line")

    monkeypatch.setattr(abtest.experiment, "run_experiment", broken)
    code = cli.main(["--config", str(write_config(tmp_path)), "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    log = tmp_path / "runs" / "tiny" / "error.log"
    assert code == cli.EXIT_INTERNAL == 4
    assert err.count("\n") == 1 and "RuntimeError: lost the cluster" in err and str(log) in err, err
    assert "Traceback" in log.read_text() and "def broken" not in err
