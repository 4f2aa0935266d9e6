"""Code version and environment records: the commit when in a checkout, None outside one."""

from __future__ import annotations

import datetime
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


def test_run_metadata_adds_utc_start_and_end_times_to_the_environment() -> None:
    started = version.utc_now()
    run = version.run_metadata(started)
    assert run["started"] == started and set(version.environment()) <= set(run)
    start, end = (datetime.datetime.fromisoformat(run[k]) for k in ("started", "finished"))
    assert start.utcoffset() == end.utcoffset() == datetime.timedelta(0)
    assert datetime.timedelta(0) <= end - start < datetime.timedelta(seconds=60)
