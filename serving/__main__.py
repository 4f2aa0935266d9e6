"""Start the served cascade from checkpoints, baselines or your own rankers (trains nothing) and block
(installed as ``cascade-ab-serve``).

    python -m serving --world small --arm control=popularity --arm treatment=random@50 \\
        --fine oracle --port 8000
    python -m serving --args my_app.yaml          # the ``args`` table of configs/serve.yaml

Ctrl-C deletes the app and stops the Ray instance it started (with ``RAY_ADDRESS`` set it
joins that cluster instead of starting one).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

import yaml

from common.config import (
    ConfigError,
    add_set_argument,
    apply_overrides,
    from_mapping,
    overrides,
    resolve_paths,
)
from common.version import add_version_argument, command_name
from serving.args import AppArgs


def _arm(text: str) -> tuple[str, dict]:
    """``NAME=SPEC`` or ``NAME=SPEC@COARSE_SIZE``."""
    name, sep, spec = text.partition("=")
    if not sep or not name or not spec:
        raise argparse.ArgumentTypeError(f"--arm takes NAME=SPEC[@COARSE_SIZE], got {text!r}")
    spec, at, size = spec.rpartition("@") if "@" in spec else (spec, "", "")
    if at and not size.isdigit():
        raise argparse.ArgumentTypeError(f"coarse size must be an integer, got {size!r}")
    return name, {"coarse": spec, **({"coarse_size": int(size)} if at else {})}


def _share(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        return name, float(value) if sep else float("nan")
    except ValueError:
        raise argparse.ArgumentTypeError(f"--share takes NAME=SHARE, got {text!r}") from None


def parse_args(argv: list[str] | None = None) -> tuple[AppArgs, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog=command_name("python -m serving"),
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--args", type=Path, help="YAML or JSON file of app arguments (flags override it)")
    parser.add_argument("--world", help='"small" (default), "default" or a world TOML file')
    parser.add_argument(
        "--arm",
        type=_arm,
        action="append",
        metavar="NAME=SPEC[@SIZE]",
        help='an arm: its coarse scorer ("random", "popularity", "oracle", a checkpoint, or\n'
        '"module:attribute" naming your own scorer or factory, see policies/custom.py) and\n'
        "optionally its coarse size; repeat per arm (default: control=popularity)",
    )
    parser.add_argument(
        "--fine", help='the fine scorer shared by all arms, same forms as --arm\'s (default "oracle")'
    )
    parser.add_argument(
        "--layout",
        choices=["split", "fused"],
        help='"split" (default): a deployment per stage; "fused": the ingress runs every stage',
    )
    parser.add_argument("--salt", help="the experiment's assignment salt")
    parser.add_argument("--layer", help="the experiment's assignment layer")
    parser.add_argument("--share", type=_share, action="append", metavar="NAME=SHARE", help="an arm's share")
    parser.add_argument("--host", help="HTTP host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP port (default 8000)")
    parser.add_argument("--name", default="cascade", help="Serve application name")
    parser.add_argument("--route-prefix", default="/", help="HTTP route prefix of the app")
    add_set_argument(parser, example="cpus_per_replica=0.5")
    add_version_argument(parser)
    ns = parser.parse_args(argv)
    flags = {key: getattr(ns, key) for key in ("world", "fine", "layout", "host", "port")}
    flags |= {"assignment.salt": ns.salt, "assignment.layer": ns.layer}
    flags |= {
        "arms": dict(ns.arm) if ns.arm else None,
        "assignment.shares": dict(ns.share) if ns.share else None,
    }
    try:
        raw = _read_args(ns.args) if ns.args else {}
        return from_mapping(AppArgs, apply_overrides(raw, overrides(ns.set, flags))), ns
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _read_args(path: Path) -> dict:
    """An app-arguments file (YAML or JSON), validated, its relative paths resolved against its
    folder (flags then override it)."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text) or {}
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read app arguments: {err}", file=path) from None
    if not isinstance(raw, dict):
        raise ConfigError("must be a table of app arguments", file=path)
    try:
        raw = resolve_paths(AppArgs, raw, path.parent)
        from_mapping(AppArgs, raw)  # the file on its own, so that its errors name it
    except ConfigError as err:
        raise err.in_file(path) from None
    return raw


def main(argv: list[str] | None = None) -> None:
    args, ns = parse_args(argv)
    from serving.app import start  # noqa: PLC0415 (Ray and torch after parsing: --help answers at once)

    app = start(args, name=ns.name, route_prefix=ns.route_prefix)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"serving {ns.name!r} at {app.url}  (Ctrl-C stops it)")
    print(json.dumps(app.versions(), indent=2))
    print(f"try: curl -s -X POST {app.url}/rank -H 'content-type: application/json' -d '{{\"user_id\": 7}}'")
    sys.stdout.flush()
    stop.wait()
    print("stopping ...")
    app.stop()


if __name__ == "__main__":
    main()
