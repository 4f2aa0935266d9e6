"""Run a simulated online A/B experiment and write its report.

    python run_ab.py --config configs/default.toml      # installed as: cascade-ab-run --config ...

The config (TOML, validated; see configs/default.toml for every key) names the world, the
arms (coarse ranker checkpoint or training config, stage sizes), the traffic, the
assignment, the metrics and the statistics. Results go to runs/ab/<name>/ (config.toml,
results.json, per_user.parquet, user_days.parquet, daily.parquet, report.md, report.html,
plots), each file written atomically. --train-seeds 0 1 2 runs it once per training seed of the
arms' coarse rankers and lines the lifts up (runs/ab/<name>-train-seeds/replicates.md).

Exit status: 0 success; 1 the sample-ratio-mismatch gate failed (unless --ignore-srm);
2 bad input (config, world or model files, arguments), reported before anything is written;
3 the run folder exists (use --force or --resume); 4 internal error (one line on stderr, the
traceback in the run folder's error.log, or on stderr before the folder exists);
130 interrupted (finished shards are kept: rerun with --resume).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

from common.config import ConfigError, add_set_argument, overrides
from common.version import add_version_argument, command_name, run_metadata, utc_now

EXIT_OK, EXIT_SRM, EXIT_CONFIG, EXIT_EXISTS, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=command_name("run_ab.py"),
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", required=True, help="experiment TOML file, e.g. configs/default.toml (required)"
    )
    parser.add_argument(
        "--name", help="run name, i.e. the folder runs/ab/<name> (default: the config's name)"
    )
    add_set_argument(parser)
    parser.add_argument(
        "--runs-dir", default="runs/ab", help="parent folder of run folders (default: %(default)s)"
    )
    parser.add_argument(
        "--through",
        choices=["serve", "inprocess"],
        help="serve: batched calls to the cascade on Ray Serve; inprocess: the same cascade code in "
        "this process or on Ray tasks (default: the config's [traffic] through)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="in-process traffic: Ray tasks sharing the shards, 1 = this process only; results do not "
        "depend on it (default: the config's [traffic] workers)",
    )
    parser.add_argument("--users", type=int, help="override [traffic] users (ids 0..users-1)")
    parser.add_argument("--days", type=int, help="override [traffic] days")
    parser.add_argument(
        "--aa", action="store_true", help="A/A mode: every arm runs the control's cascade (pipeline check)"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--force", action="store_true", help="delete an existing run folder and start over")
    mode.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in the existing folder: finished shards are reused; the "
        "config must be the one stored in the folder (except --through / --workers)",
    )
    parser.add_argument(
        "--ignore-srm",
        action="store_true",
        help="exit 0 and print the results even when the sample-ratio-mismatch gate fails",
    )
    parser.add_argument(
        "--train-seeds",
        type=int,
        nargs="+",
        metavar="SEED",
        help="run the experiment once per training seed of the arms' coarse training configs, "
        "each in <runs-dir>/<name>-train-seeds/seed<SEED>/ (the config's own seed reuses its "
        "checkpoints), and write replicates.md / replicates.csv there: each seed's lifts, their mean and a t "
        "interval over the seeds, and a figure of them, replicates.png (abtest/replicates.py)",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (on a terminal) or progress lines (otherwise: a line per stage and shard)",
    )
    add_version_argument(parser)
    return parser


class _Exit(Exception):
    """Stop with an error message and an exit status."""

    def __init__(self, message: str, code: int = EXIT_CONFIG) -> None:
        super().__init__(message)
        self.code = code


def _config(args: argparse.Namespace):
    """The experiment config with the command-line overrides applied (the convenience flags
    are shorthands for ``--set``)."""
    from abtest.config import load_config  # noqa: PLC0415

    flags = {f"traffic.{key}": getattr(args, key) for key in ("users", "days", "through", "workers")}
    flags |= {"name": args.name or None, "assignment.aa": True if args.aa else None}
    config = load_config(args.config, overrides(args.set, flags))
    _check_arms(config)
    return config


def _check_arms(config) -> None:
    """What the arms name, checked before any file is written: the coarse cut against the
    world's recall size, checkpoints that must exist, the training configs (and their
    teachers') that would be trained, and custom rankers (imported and probed on the world)."""
    from abtest.arms import check_coarse_sizes, check_custom_rankers, used_arms  # noqa: PLC0415
    from common.config import ConfigError  # noqa: PLC0415
    from policies.config import check_model_spec  # noqa: PLC0415
    from policies.custom import is_ranker_name  # noqa: PLC0415
    from simulator.config import load_world_config  # noqa: PLC0415

    check_coarse_sizes(config, load_world_config(config.world))
    arms = used_arms(config).values()
    specs = {(arm.coarse, "coarse") for arm in arms} | {(arm.fine, "fine") for arm in arms}
    for spec, kind in sorted(specs):
        if is_ranker_name(spec):
            continue
        if spec.endswith(".toml"):
            check_model_spec(spec, kind)
        elif not Path(spec).is_file():
            raise ConfigError(f"{kind} checkpoint {spec} does not exist")
    check_custom_rankers(config)


def _results_config(config) -> dict:
    """The config without the settings results do not depend on (how traffic is run), so a
    run may resume in process what it started through Serve, or on another worker count."""
    plain = config.to_dict()
    for key in ("through", "workers"):
        plain["traffic"].pop(key)
    return plain


def _run_dir(args: argparse.Namespace, config, runs_dir: Path) -> Path:
    """The run folder, created (``--force``: emptied first). An existing folder is only
    reused by ``--resume`` and only for the very config stored in it."""
    from abtest.config import load_config  # noqa: PLC0415
    from abtest.store import write_text_atomic  # noqa: PLC0415

    run_dir = runs_dir / config.name
    if run_dir.exists() and args.force:
        shutil.rmtree(run_dir)
    elif run_dir.exists() and args.resume:
        try:
            stored = load_config(run_dir / "config.toml")
        except ConfigError as err:
            raise _Exit(f"cannot resume {run_dir}: {err}") from None
        if _results_config(stored) != _results_config(config):
            raise _Exit(f"cannot resume {run_dir}: its config.toml differs from this config (use --force)")
    elif run_dir.exists():
        raise _Exit(
            f"run folder {run_dir} exists; pass --resume to continue it or --force to overwrite", EXIT_EXISTS
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.toml", config.to_toml())
    return run_dir


class _LogFile(io.TextIOBase):
    """A text file opened (for appending, line-buffered) on the first write: no empty file when
    nothing is written."""

    def __init__(self, path: Path) -> None:
        self.path, self.file = path, None

    def write(self, text: str) -> int:
        if self.file is None:
            self.file = self.path.open("a", buffering=1)
        return self.file.write(text)

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()

    def close(self) -> None:
        super().close()  # flushes first
        if self.file is not None:
            self.file.close()


@contextlib.contextmanager
def _ray_output_to(path: Path, ray_used: bool, serve: bool) -> Iterator[None]:
    """Ray's and Serve's output in this process goes to ``path`` (appended; created only if
    they write) while the run lasts: their loggers ("Started a local Ray instance", Serve's
    deploy and delete lines) and what Ray's threads print on stdout (the raylet's errors, e.g.
    "Task ServeController.graceful_shutdown failed ... killed by ray.kill" at shutdown). The
    workers' output stays in Ray's session logs (``log_to_driver`` is off). A run without Ray
    (``ray_used`` false) changes nothing."""
    if not ray_used:
        yield
        return
    import importlib  # noqa: PLC0415

    importlib.import_module("ray")  # configures Ray's logger on import (the run imports it anyway)
    if serve:
        importlib.import_module("ray.serve")  # configures Serve's driver logger on import

    with _LogFile(path) as out:
        handler = logging.StreamHandler(out)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        names = [n for n in logging.root.manager.loggerDict if n == "ray" or n.startswith("ray.")]
        loggers = [logger for logger in map(logging.getLogger, names) if logger.handlers]
        saved = [logger.handlers for logger in loggers]
        stdout, sys.stdout = sys.stdout, out
        for logger in loggers:
            logger.handlers = [handler]
        try:
            yield
        finally:
            sys.stdout = stdout
            for logger, handlers in zip(loggers, saved, strict=True):
                logger.handlers = handlers


def _shard_lines(config, run_dir: Path, resume: bool, say: Callable[[str], None]) -> Callable:
    """``on_shard`` for run_experiment: a line per finished shard, counting those a resumed
    run reuses, e.g. "shard 3/10 done, 1,000 user-days, 12 s" (the user-days with a session:
    the shard's users who have arrived by its day; seconds since the traffic stage began, its
    set-up of Ray actors or the Serve app included)."""
    import numpy as np  # noqa: PLC0415

    from abtest.store import ShardStore  # noqa: PLC0415
    from abtest.traffic import plan_shards  # noqa: PLC0415
    from simulator.config import load_world_config  # noqa: PLC0415
    from simulator.world import user_arrival_days  # noqa: PLC0415

    shards, store = plan_shards(config), ShardStore(run_dir / "shards")
    world = load_world_config(config.world)
    done = sum(store.path(s.key).is_file() for s in shards) if resume else 0
    start = time.perf_counter()
    say(f"traffic: {len(shards) - done} of {len(shards)} shards to run")

    def on_shard(shard) -> None:
        nonlocal done
        done += 1
        seconds = time.perf_counter() - start
        arrived = int((user_arrival_days(world, np.arange(shard.lo, shard.hi)) <= shard.day).sum())
        say(f"shard {done}/{len(shards)} done, {arrived:,} user-days, {seconds:.0f} s")

    return on_shard


def _internal_error(err: Exception, run_dir: Path | None) -> int:
    """One line on stderr; the traceback in ``run_dir/error.log`` (stderr without a folder)."""
    trace = "".join(traceback.format_exception(err))
    if run_dir is not None:
        (run_dir / "error.log").write_text(trace)
        where = f"traceback in {run_dir / 'error.log'}"
    else:
        print(trace, file=sys.stderr, end="")
        where = "traceback above"
    print(f"internal error: {type(err).__name__}: {err}".splitlines()[0] + f" ({where})", file=sys.stderr)
    return EXIT_INTERNAL


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # imports after argument parsing, and the heavy ones (torch, Ray) after the config is
    # validated: --help and a bad config answer at once
    console = sys.stdout  # progress, the SRM gate and the results; Ray's output goes to ray.log
    if not console.isatty() and hasattr(console, "reconfigure"):
        console.reconfigure(line_buffering=True)  # a log file follows every line as it comes
    try:
        config = _config(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as err:  # a bug, not the user's input (e.g. a custom ranker's probe)
        return _internal_error(err, None)
    if not args.train_seeds:
        return _run(args, config, Path(args.runs_dir), console)
    return _replicates(args, config, console)


def _replicates(args: argparse.Namespace, config, console) -> int:
    """The experiment once per ``--train-seeds`` seed (``abtest.replicates.reseeded``), then
    the replicate table of their results beside the seeds' run folders."""
    import json  # noqa: PLC0415

    from abtest.replicates import plot_replicates, replicate_markdown, replicate_table, reseeded  # noqa: PLC0415
    from abtest.store import write_text_atomic  # noqa: PLC0415

    seeds = list(dict.fromkeys(args.train_seeds))
    folder = Path(args.runs_dir) / f"{config.name}-train-seeds"
    records, status = {}, EXIT_OK
    for number, seed in enumerate(seeds, 1):
        print(f"== training seed {seed} ({number} of {len(seeds)}) ==", file=console)
        try:
            seeded = reseeded(config, seed, folder / "models").replace(name=f"seed{seed}")
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_CONFIG
        code = _run(args, seeded, folder, console)
        if code not in (EXIT_OK, EXIT_SRM):
            return code
        status = max(status, code)  # a seed whose SRM gate failed fails the whole command
        records[seed] = json.loads((folder / seeded.name / "results.json").read_text())["records"]
    table = replicate_table(records)
    text = replicate_markdown(table)
    write_text_atomic(folder / "replicates.md", text)
    write_text_atomic(folder / "replicates.csv", table.to_csv(index=False))
    plot_replicates(table, folder / "replicates.png")
    print(f"\n{text}\nreplicates: {folder / 'replicates.md'} (also replicates.csv, .png)", file=console)
    return status


def _run(args: argparse.Namespace, config, runs_dir: Path, console) -> int:
    """One experiment of ``config`` in ``runs_dir/<name>``: models, traffic, statistics, the
    report and the exit status."""
    t0, started = time.perf_counter(), utc_now()
    log = lambda m: print(m, file=console)  # noqa: E731
    run_dir = None
    try:
        run_dir = _run_dir(args, config, runs_dir)
        from abtest.arms import resolve_arms  # noqa: PLC0415
        from abtest.experiment import run_experiment  # noqa: PLC0415
        from abtest.report import terminal_report, write_run  # noqa: PLC0415
        from simulator.config import load_world_config  # noqa: PLC0415

        bar = not args.no_progress and console.isatty() and sys.stderr.isatty()
        say = (lambda m: None) if args.no_progress or bar else log  # stage and shard lines
        say("models: training the missing ones (their logs simulated first if missing)")
        t_models = time.perf_counter()
        resolved = resolve_arms(config, load_world_config(config.world), progress=bar, log=log)
        t_models = time.perf_counter() - t_models
        say(f"models ready, {t_models:.0f} s")
        serve = config.traffic.through == "serve"
        with _ray_output_to(run_dir / "ray.log", serve or config.traffic.workers > 1, serve):
            result = run_experiment(
                resolved,
                through=None,  # the config's, after --through
                workers=None,  # the config's, after --workers
                run_dir=run_dir,
                resume=args.resume,
                progress=bar,
                log=log,
                on_shard=_shard_lines(config, run_dir, args.resume, say),
            )
        result.timings = {"models": t_models, **result.timings}
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except _Exit as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        if run_dir is not None:
            print(
                f"\ninterrupted: finished shards are kept in {run_dir}/shards; rerun with --resume",
                file=sys.stderr,
            )
        return EXIT_INTERRUPTED
    except Exception as err:  # a bug or a lost cluster, not the user's input
        return _internal_error(err, run_dir)

    say("statistics done; writing the report")
    t_report = time.perf_counter()
    images = write_run(result, run_dir, run=run_metadata(started))
    result.timings["report"] = time.perf_counter() - t_report
    result.timings["total"] = time.perf_counter() - t0
    write_run(result, run_dir, images, run=run_metadata(started))  # with the report's own wall time
    show = result.srm_passed or args.ignore_srm
    print(terminal_report(result, show_results=show), file=console)
    if not show:
        print("results withheld because the SRM gate failed (pass --ignore-srm to print them)", file=console)
    times = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
    print(
        f"\nwall time: {times}\nreport: {run_dir / 'report.md'} (also report.html, results.json)",
        file=console,
    )
    return EXIT_OK if show else EXIT_SRM


if __name__ == "__main__":
    sys.exit(main())
