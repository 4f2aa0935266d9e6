"""Ray Tune search over coarse-ranker settings, scored by a simulated online A/B.

    python -m tuning --config configs/tune_default.toml     # or: cascade-ab-tune --config ...

The config (TOML, validated; configs/tune_default.toml documents every key) names the base
training config, the searched settings, the control and fine rankers, the online objective
and the Tune settings. Outputs go to runs/tune/<name>/: results.csv/.parquet (one row per
trial), epochs.csv/.parquet, agreement.csv/.txt, objective.png, offline_vs_online.png,
agreement.png, epochs.png, best.toml (a run_ab.py arm) and summary.json. Ray starts locally
(2 CPUs here) unless RAY_ADDRESS names a running cluster.

Exit status: 0 success; 2 invalid config or arguments; 3 the run folder exists (use --force
or --resume); 130 interrupted (finished trials are kept: rerun with --resume).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from common.config import ConfigError, add_set_argument, dumps_toml, overrides
from common.version import add_version_argument, command_name

EXIT_OK, EXIT_CONFIG, EXIT_EXISTS, EXIT_INTERRUPTED = 0, 2, 3, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=command_name("python -m tuning"),
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="search TOML file, e.g. configs/tune_default.toml")
    parser.add_argument(
        "--name", help="run name, i.e. the folder <runs-dir>/<name> (default: the config's name)"
    )
    parser.add_argument(
        "--runs-dir", default="runs/tune", help="parent folder of run folders (default: %(default)s)"
    )
    add_set_argument(parser, example="search.num_samples=8")
    parser.add_argument("--num-samples", type=int, help="override [search] num_samples")
    parser.add_argument("--searcher", help='override [search] searcher: "optuna" or "random"')
    parser.add_argument("--time-budget", type=float, help="override [search] time_budget_s (0 = none)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--resume", action="store_true", help="resume the interrupted search in the run folder"
    )
    group.add_argument("--force", action="store_true", help="delete an existing run folder first")
    add_version_argument(parser)
    return parser


class _Exit(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _config(args: argparse.Namespace):
    """The search config with the command-line overrides (the flags are shorthands for
    ``--set``), validated."""
    from policies.config import check_model_spec  # noqa: PLC0415 (imports after --help stay fast)
    from tuning.config import load_config, template_raw_config  # noqa: PLC0415

    flags = {
        "search.num_samples": args.num_samples,
        "search.searcher": args.searcher,
        "search.time_budget_s": args.time_budget,
        "name": args.name or None,
    }
    try:
        config = load_config(args.config, overrides(args.set, flags))
        template_raw_config(config, teacher="")  # the base training config, before any folder
        for spec, kind in ((config.control.coarse, "coarse"), (config.control.fine, "fine")):
            check_model_spec(spec, kind)
        return config
    except ConfigError as err:
        raise _Exit(EXIT_CONFIG, f"error: {err}") from None


def _run_dir(args: argparse.Namespace, config) -> Path:
    """The run folder, checked (resume) or created (new search, --force replaces)."""
    from tuning.config import load_config  # noqa: PLC0415

    run_dir = Path(args.runs_dir) / config.name
    stored = run_dir / "config.toml"
    if args.resume:
        if not stored.is_file():
            raise _Exit(EXIT_CONFIG, f"error: nothing to resume in {run_dir}")
        try:
            previous = load_config(stored)
        except ConfigError as err:
            raise _Exit(EXIT_CONFIG, f"error: cannot resume {run_dir}: {err}") from None
        if previous != config:
            raise _Exit(
                EXIT_CONFIG, f"error: {args.config} differs from the config of the search in {run_dir}"
            )
        return run_dir
    if run_dir.exists():
        if not args.force:
            raise _Exit(
                EXIT_EXISTS, f"error: {run_dir} exists; use --resume to continue it or --force to replace it"
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    stored.write_text(dumps_toml(config.to_dict()), encoding="utf-8")
    return run_dir


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = _config(args)
        run_dir = _run_dir(args, config)
    except _Exit as exit_:
        print(exit_, file=sys.stderr)
        return exit_.code

    from policies.checkpoint import CheckpointError  # noqa: PLC0415
    from tuning.report import format_table, write_outputs  # noqa: PLC0415
    from tuning.search import run_search  # noqa: PLC0415

    try:
        outcome = run_search(config, run_dir, resume=args.resume, progress=sys.stderr.isatty())
    except (ConfigError, CheckpointError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    summary = write_outputs(config, outcome, run_dir)
    print()
    print(format_table(config, outcome.table))
    print()
    print((run_dir / "agreement.txt").read_text().rstrip())
    print()
    t, n = outcome.timings, len(outcome.table)
    scored = int((outcome.table["status"] == "finished").sum()) if n else 0
    print(
        f"{n} trials ({scored} scored online) in {t['search']:.0f} s of search + "
        f"{t['total'] - t['search']:.0f} s of setup: {3600 * n / max(t['search'], 1e-9):.0f} trials/hour"
    )
    if summary["best"] is not None:
        print(f"best trial {summary['best']['trial_id']}: {run_dir / 'best.toml'}")
    print(f"outputs in {run_dir}/")
    if outcome.interrupted:
        print(f"interrupted: resume with python -m tuning --config {args.config} --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
