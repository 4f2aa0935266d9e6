"""abtest.store: atomic writes and the checkpointed shards of a run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from abtest.store import ShardStore, write_atomic, write_text_atomic
from simulator.config import ConfigError


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out" / "results.json"
    write_text_atomic(path, "old")

    def half_written(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(path, half_written)
    assert path.read_text() == "old"
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]


def test_shards_round_trip_and_missing_ones_are_none(tmp_path: Path) -> None:
    store = ShardStore(tmp_path / "shards")
    frame = pd.DataFrame({"user": [3, 1], "arm": ["a", "b"], "clicks": [0.0, 2.5]})
    assert store.load("exp-day001-shard0000") is None
    store.save("exp-day001-shard0000", frame)
    pd.testing.assert_frame_equal(store.load("exp-day001-shard0000"), frame)
    assert store.path("exp-day001-shard0000").parent == tmp_path / "shards"


def test_versions_are_recorded_once_then_checked(tmp_path: Path) -> None:
    store = ShardStore(tmp_path)
    versions = {"control": {"coarse": "popularity", "coarse_version": "popularity"}}
    store.check_versions(versions)
    store.check_versions(versions)  # the same models: fine
    other = {"control": {"coarse": "a.pt", "coarse_version": "v2"}}
    with pytest.raises(ConfigError, match="other models"):
        ShardStore(tmp_path).check_versions(other)
