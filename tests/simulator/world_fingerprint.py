"""Prints a JSON fingerprint (sha256 per part) of the SMALL world, its sessions and its logs.

Run with PYTHONPATH set to a source tree; it uses only the API that existed before issue 13's
knobs, so the same script fingerprints the code before and after them
(tests/simulator/test_knobs_off.py).

    python world_fingerprint.py OUT_DIR
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from simulator import SMALL, SessionKeys, Simulator, World
from simulator.describe import baseline_scores
from simulator.logs import out_of_scene_purchases, write_logs
from simulator.oracle import best_in_pool
from simulator.session import run_static

WORLD_ARRAYS = (
    "item_vec",
    "item_quality",
    "item_log_price",
    "item_price",
    "item_popularity",
    "item_is_new",
    "user_vec",
    "user_price_sensitivity",
    "user_new_affinity",
    "user_category_cdf",
    "history",
    "history_clean",
    "recent_clean",
    "i2i",
)


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for array in map(np.ascontiguousarray, arrays):
        h.update(str((array.dtype, array.shape)).encode())
        h.update(array.tobytes())
    return h.hexdigest()


def fingerprint(out_dir: Path) -> dict[str, str]:
    world = World(SMALL)
    sim = Simulator(world)
    parts = {name: _digest(getattr(world, name)) for name in WORLD_ARRAYS}
    parts["item_table"] = _digest(*world.item_table().values())
    users = np.arange(0, SMALL.n_users, 7)
    items = np.arange(0, SMALL.n_items, 3)
    z = world.click_logits(users, items)
    parts["click_logits"] = _digest(z, world.purchase_logits(users, items, z))
    for day in (0, 1):
        keys = SessionKeys.of(users, day=day)
        recall = sim.recall(keys)
        parts[f"recall_day{day}"] = _digest(recall.items, recall.channels)
        for name, score in baseline_scores(world).items():
            if name in ("random", "popularity", "oracle"):
                totals = run_static(sim, keys, score)
                newer = ("exact", "new_impressions", "new_clicks")  # newer than the reference
                realised = [v for k, v in vars(totals).items() if k not in newer]
                parts[f"sessions_{name}_day{day}"] = _digest(*realised)
        parts[f"out_of_scene_day{day}"] = _digest(*out_of_scene_purchases(world, users, day))
    parts["best_in_pool"] = _digest(best_in_pool(world, users[:40], 10))
    logs = write_logs(world, out_dir / "logs", n_users=300, days=2, progress=False)
    for path in sorted(logs.iterdir()):
        parts[f"logs/{path.name}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return parts


if __name__ == "__main__":
    print(json.dumps(fingerprint(Path(sys.argv[1]))))
