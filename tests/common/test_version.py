"""Code version and environment records: the commit when in a checkout, None outside one."""

from __future__ import annotations

import platform
from pathlib import Path

from common import version


def test_outside_a_git_checkout_there_is_no_commit(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(version, "ROOT", tmp_path)
    assert version.git_commit() is None
    assert version.version_text("cmd") == f"cmd {version.package_version()}"


def test_the_environment_names_the_code_and_the_libraries() -> None:
    env = version.environment()
    assert env["python"] == platform.python_version()
    assert env["numpy"] == __import__("numpy").__version__
    assert set(version.LIBRARIES) <= set(env)
    assert env["cpu_count"] >= 1
