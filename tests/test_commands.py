"""The installed commands (``[project.scripts]``): each entry point answers ``--help`` and
``--version`` in a fresh interpreter, with the command's name and the package version."""

from __future__ import annotations

import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from common.version import package_version

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
LAUNCH = "import sys; from {module} import {func}; sys.argv[0] = {name!r}; sys.exit({func}())"


def run_command(name: str, *args: str) -> subprocess.CompletedProcess:
    """The entry point ``name`` as the installed script runs it, timed (the times are printed)."""
    module, func = SCRIPTS[name].split(":")
    code = LAUNCH.format(module=module, func=func, name=name)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, check=False
    )
    print(f"{name} {' '.join(args)}: {time.perf_counter() - start:.2f} s")
    return done


def test_the_main_entry_points_are_installed_commands() -> None:
    assert set(SCRIPTS) == {
        f"cascade-ab-{c}" for c in ("run", "sim", "train", "ladder", "dose", "sequence", "serve", "tune")
    }


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_names_the_command_and_its_options(name: str) -> None:
    done = run_command(name, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {name}")
    assert "--version" in done.stdout


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_version_names_the_package_version_and_the_commit(name: str) -> None:
    done = run_command(name, "--version")
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith(f"{name} {package_version()}")
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    if commit.returncode == 0:
        assert f"(git {commit.stdout.strip()}" in line


def test_help_does_not_import_the_heavy_libraries() -> None:
    """What keeps --help under a second: torch, Ray and pandas are imported after parsing."""
    for name, target in SCRIPTS.items():
        module, func = target.split(":")
        code = (
            f"import sys; from {module} import {func}; sys.argv[0] = {name!r}\n"
            f"try:\n    {func}()\nexcept SystemExit:\n    pass\n"
            "print(sorted({'torch', 'ray', 'pandas'} & set(sys.modules)))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code, "--help"], cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert done.stdout.strip().splitlines()[-1] == "[]", (name, done.stderr)
