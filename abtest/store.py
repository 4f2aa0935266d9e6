"""Atomic files and the checkpointed shards of a run (no torch, no Ray: cheap to import).

Every output is written to a temporary file in the same folder and renamed into place, so a
reader (or a resumed run after a crash) never sees half a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from simulator.config import ConfigError


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text))


def write_parquet_atomic(path: str | Path, frame: pd.DataFrame) -> None:
    write_atomic(path, lambda tmp: pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp))


class ShardStore:
    """Finished shards as Parquet files ``<key>.parquet`` under ``folder``, plus the model
    versions they were simulated with, so a resumed run never mixes two models."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.parquet"

    def load(self, key: str) -> pd.DataFrame | None:
        path = self.path(key)
        return pd.read_parquet(path) if path.is_file() else None

    def save(self, key: str, frame: pd.DataFrame) -> None:
        write_parquet_atomic(self.path(key), frame)

    def check_versions(self, versions: dict[str, Any]) -> None:
        """Record the rankers' versions, or check them against those already recorded."""
        path = self.folder / "versions.json"
        if path.is_file():
            stored = json.loads(path.read_text())
            if stored != versions:
                raise ConfigError(
                    f"the shards in {self.folder} were simulated with other models ({stored}); "
                    f"now {versions}: rerun with --force"
                )
        else:
            write_text_atomic(path, json.dumps(versions, indent=2, sort_keys=True))
