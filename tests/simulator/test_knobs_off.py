"""With every issue-13 knob off, the world is byte for byte the world of the code before them.

The reference is computed, not stored: ``world_fingerprint.py`` runs once on this tree and
once on the source of REFERENCE_COMMIT (the last commit before the knobs, taken from git), and
every part (world arrays, click and purchase logits, recall sets, sessions under three rankings
on two days, out-of-scene purchases, the bytes of two days of logs) must be equal.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from simulator import SMALL, WorldConfig
from simulator.config import PHENOMENON_KNOBS

REFERENCE_COMMIT = "2898e807fb7e686740a4265117862539551a162c"
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("world_fingerprint.py")


def _fingerprint(source: Path, out: Path) -> dict[str, str]:
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(source), "OPENBLAS_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(out)], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(run.stdout)


def _reference_tree(dest: Path) -> Path:
    """The simulator and common packages of REFERENCE_COMMIT, extracted from git."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", REFERENCE_COMMIT, "simulator", "common"],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"git history with commit {REFERENCE_COMMIT[:10]} is not available (shallow clone?)")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest


@pytest.mark.slow
def test_knobs_off_reproduce_the_reference_code_byte_for_byte(tmp_path: Path) -> None:
    reference = _fingerprint(_reference_tree(tmp_path / "reference"), tmp_path / "ref_out")
    current = _fingerprint(ROOT, tmp_path / "cur_out")
    assert current.keys() == reference.keys()
    differ = [part for part in reference if current[part] != reference[part]]
    assert not differ, f"parts that differ from {REFERENCE_COMMIT[:10]}: {differ}"


def test_every_knob_is_documented_off_in_the_world_toml() -> None:
    text = (ROOT / "configs" / "world.toml").read_text()
    for name in PHENOMENON_KNOBS:
        assert f"\n{name} = 0" in text, name
    assert WorldConfig.from_toml(ROOT / "configs" / "world.toml") == WorldConfig()


def test_every_knob_is_off_by_default_and_stored_only_when_on() -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(WorldConfig)}
    assert all(defaults[name] == 0 for name in PHENOMENON_KNOBS)
    assert not set(PHENOMENON_KNOBS) & set(SMALL.to_dict())
    on = SMALL.replace(taste_drift=0.3)
    assert on.to_dict()["taste_drift"] == 0.3
    assert WorldConfig.from_dict(on.to_dict()) == on
    assert WorldConfig.from_dict(SMALL.to_dict()) == SMALL


def test_the_feed_world_is_the_default_sizes_with_every_knob_on() -> None:
    feed = WorldConfig.from_toml(ROOT / "configs" / "world_feed.toml")
    assert all(getattr(feed, name) > 0 for name in PHENOMENON_KNOBS)
    assert (feed.n_items, feed.n_users, feed.recall_size) == (
        WorldConfig().n_items,
        WorldConfig().n_users,
        WorldConfig().recall_size,
    )
