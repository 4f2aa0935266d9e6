"""What code and environment a command or a run comes from: the package version, the git
commit of the checkout (when it is one) and the versions of the main libraries.

Everything here is cheap (no torch or Ray import: library versions come from the installed
packages' metadata), so ``--version`` answers at once and every run can record it (``run_metadata``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGE = "cascade-ab"
ROOT = Path(__file__).resolve().parents[1]
"""The checkout (or installed tree) the code runs from."""

LIBRARIES = ("torch", "ray", "numpy")
"""The libraries whose versions a run records."""


def package_version() -> str:
    """The installed version of this project, ``"unknown"`` when it is not installed."""
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "unknown"


def git_commit() -> str | None:
    """The commit of the checkout the code runs from, with ``-dirty`` when tracked files have
    uncommitted changes; None outside a git checkout or without git."""
    try:
        commit = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10, check=True
    )
    return done.stdout.strip()


def version_text(prog: str) -> str:
    """The ``--version`` line: ``<prog> <version> (git <commit>)``."""
    commit = git_commit()
    return f"{prog} {package_version()}" + (f" (git {commit})" if commit else "")


class _VersionAction(argparse.Action):
    """Like argparse's ``version`` action, but the text (a git call) is made only when asked."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text(parser.prog))
        parser.exit()


def add_version_argument(parser: argparse.ArgumentParser) -> None:
    """Give a command ``--version``: the package version and the git commit when available."""
    parser.add_argument(
        "--version", action=_VersionAction, help="print the version (and git commit) and exit"
    )


def library_version(name: str) -> str | None:
    """The installed version of a distribution, None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """The code version and the environment a run records: package version, git commit,
    Python, torch, Ray and numpy versions, the machine's CPU count."""
    return {
        "package": package_version(),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        **{name: library_version(name) for name in LIBRARIES},
        "cpu_count": os.cpu_count(),
    }


def utc_now() -> str:
    """The time now, UTC, ISO 8601 to the second (``2026-12-01T23:17:23+00:00``)."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def run_metadata(started: str) -> dict[str, Any]:
    """What a run records about itself: ``environment()`` with its start (given) and end (now)
    times, UTC ISO 8601."""
    return {"started": started, "finished": utc_now(), **environment()}


def command_name(default: str) -> str:
    """The name a command was started by: the installed script's name (``cascade-ab-*``), else
    ``default`` (e.g. ``"python -m serving"``)."""
    invoked = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return invoked if invoked.startswith(PACKAGE) else default
